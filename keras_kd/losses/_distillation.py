"""Hinton's soft-target loss, ensembles of teachers, and logit matching."""

from __future__ import annotations

import math
import numbers
from typing import Any
from typing import Optional
from typing import Sequence

import keras
from keras import ops

from keras_kd import _validation
from keras_kd.losses import _binary
from keras_kd.losses._core import PACKAGE
from keras_kd.losses._core import CheckedLoss
from keras_kd.losses._core import check_teacher_logits
from keras_kd.losses._core import check_same_shape
from keras_kd.losses._core import tempered_log_softmax
from keras_kd.losses._divergences import check_beta
from keras_kd.losses._divergences import check_divergence
from keras_kd.losses._divergences import divergence_from_logits

from keras_kd.losses._term import DistillationTerm
from keras_kd._types import TensorLike


def standardize_logits(logits: TensorLike) -> TensorLike:
    """Logit standardization, `(z - mean_k z) / (1e-7 + std_k z)` per example, float32.

    The standard deviation is the unbiased one (divisor K - 1), as in the authors'
    code (`torch.std`); `keras.ops.std` would give the population one. Softmax is
    invariant to the shift but not to the scale, so distilling standardized logits
    asks the student to match the teacher's *relative* logits whatever its own
    logit range (Sun et al. 2024).

    Args:
        logits: tensor of shape (..., K), K >= 2.

    Returns:
        float32 tensor of shape (..., K) with zero mean and unit unbiased std per row
        (a constant row becomes all zeros).

    Example:
        >>> standardize_logits([[1.0, 2.0, 3.0]])  # [[-1, 0, 1]]

    References:
        Sun et al. Logit Standardization in Knowledge Distillation. CVPR 2024
        (logit-standardization-KD, `mdistiller/distillers/KD.py::normalize`).
    """
    logits = ops.cast(logits, "float32")
    num_classes = logits.shape[-1]
    if num_classes is not None and num_classes < 2:
        raise ValueError(
            f"`standardize_logits` needs K >= 2 classes on the last axis (the unbiased "
            f"std divides by K - 1), got logits of shape {tuple(logits.shape)}."
        )
    centred = logits - ops.mean(logits, axis=-1, keepdims=True)
    unbiased_variance = ops.sum(ops.square(centred), axis=-1, keepdims=True) / (
        ops.cast(ops.shape(logits)[-1], "float32") - 1.0
    )
    return centred / (1e-7 + ops.sqrt(unbiased_variance))


def distillation_loss(
    teacher_logits: TensorLike,
    student_logits: TensorLike,
    temperature: float = 4.0,
    output: str = "softmax",
    standardize: bool = False,
    divergence: str = "kl",
    beta: float = 0.5,
) -> TensorLike:
    """Hinton's soft-target loss, `T^2 * KL(softmax(t / T) || softmax(s / T))`.

    The `T^2` factor keeps the soft term's gradient, which scales as `1 / T^2`,
    comparable across temperatures; its gradient with respect to the student logits
    is `T * (softmax(s / T) - softmax(t / T))`.

    Precision: in float32 the *value* is accurate to about 1e-4 relative up to T = 100
    (the papers' range); far beyond, the KL itself falls below float32 resolution of
    the log-probabilities (2 % at T = 1e3), while the gradient stays accurate. Use
    `logit_matching_loss`, the exact T -> inf limit, for very high temperatures.

    Args:
        teacher_logits: shape (..., K).
        student_logits: shape (..., K).
        temperature: float > 0, default 4.0.
        output: "softmax" (default; one distribution over the K classes) or
            "sigmoid" (K independent binary labels: `T^2 * mean_k` of Bernoulli KLs
            between `sigmoid(t_k / T)` and `sigmoid(s_k / T)`). K = 1 is binary under
            either, the two-class softmax over `[0, z]`; see `losses._binary`.
        standardize: bool, default False. True applies `standardize_logits` to both
            logits first (Sun et al. 2024: `T^2 KL(softmax(Z(t) / T) || softmax(Z(s) / T))`).
        divergence: "kl" (default, Hinton's forward `KL(p_t || p_s)`), "reverse_kl"
            (`T^2 KL(p_s || p_t)`, MiniLLM) or "jsd" (`T^2 [beta KL(p_t || m) +
            (1 - beta) KL(p_s || m)]`, `m = beta p_t + (1 - beta) p_s`, GKD); see
            `keras_kd.losses._divergences`.
        beta: float in (0, 1), default 0.5: the teacher's weight in the JSD mixture.

    Returns:
        float32 per-example loss, shape (...,). Logits of shape (batch, ..., K), e.g.
        (batch, sequence, vocabulary), give one loss per position, (batch, ...).

    References:
        Hinton, Vinyals, Dean. Distilling the Knowledge in a Neural Network. 2015.
        Sun et al. Logit Standardization in Knowledge Distillation. CVPR 2024.
        Agarwal et al. On-Policy Distillation of Language Models (GKD). ICLR 2024.
        Gu et al. MiniLLM: Knowledge Distillation of Large Language Models. ICLR 2024.
    """
    # Array-likes (lists, NumPy) as tensors: the shape checks below read `.shape`.
    teacher_logits = ops.convert_to_tensor(teacher_logits)
    student_logits = ops.convert_to_tensor(student_logits)
    teacher_logits, student_logits = _maybe_standardize(teacher_logits, student_logits, standardize)
    check_same_shape(teacher_logits, student_logits, "teacher_logits", "student_logits")
    if _binary.is_binary_form(student_logits, output):
        if isinstance(temperature, numbers.Real):
            _validation.check_temperature(temperature)
        return _binary.binary_distillation_loss(
            teacher_logits, student_logits, temperature, divergence, beta
        )
    kl = divergence_from_logits(teacher_logits, student_logits, temperature, divergence, beta)
    return (temperature**2) * kl


def _maybe_standardize(teacher_logits, student_logits, standardize):
    """Both logits standardized when `standardize` is True; as given otherwise."""
    if not _validation.check_bool(standardize, "standardize"):
        return teacher_logits, student_logits
    return standardize_logits(teacher_logits), standardize_logits(student_logits)


def ensemble_logits(
    teacher_logits_list: Sequence[TensorLike],
    temperature: float,
    output: str = "softmax",
) -> TensorLike:
    """Logits whose tempered softmax is the mean of an ensemble's tempered softmaxes.

    `T * log( (1/M) sum_m softmax(z_m / T) )`, computed with `logsumexp`. Feeding the
    result to `distillation_loss` at the same temperature distils the averaged soft
    targets of M teachers (Hinton et al. 2015, "distilling an ensemble"). The result
    is specific to `temperature`.

    Args:
        teacher_logits_list: list of M tensors of shape (..., K).
        temperature: float > 0.
        output: "softmax" (default) or "sigmoid": for sigmoid outputs (and K = 1) the
            members' `sigmoid(z_m / T)` are averaged instead, giving the logit
            `T * (log mean_m sigmoid(z_m / T) - log mean_m sigmoid(-z_m / T))`.

    Returns:
        float32 tensor of shape (..., K).
    """
    if len(teacher_logits_list) == 1:
        return ops.cast(teacher_logits_list[0], "float32")
    if _binary.is_binary_form(teacher_logits_list[0], output):
        return _binary.binary_ensemble_logits(teacher_logits_list, temperature)
    log_probs = ops.stack(
        [tempered_log_softmax(logits, temperature) for logits in teacher_logits_list],
        axis=0,
    )
    mean_log_probs = ops.logsumexp(log_probs, axis=0) - math.log(len(teacher_logits_list))
    return temperature * mean_log_probs


def logit_matching_loss(
    teacher_logits: TensorLike,
    student_logits: TensorLike,
    output: str = "softmax",
) -> TensorLike:
    """Squared error between zero-meaned logits (Ba & Caruana 2014).

    `L = 0.5 * mean_k ((s_k - mean(s)) - (t_k - mean(t)))^2`. The 1/2 makes it the
    exact high-temperature limit of `distillation_loss`: `T^2 KL -> L` as T -> inf
    (Hinton et al. 2015, section 2.1). Classes masked with `-inf` in both teacher and
    student are left out of the means (a class masked in only one gives `inf`).

    With `output="sigmoid"` (or K = 1) each logit is already the centred difference of
    its two-class logits `[0, z]`, and the loss is `mean_k (s_k - t_k)^2 / 8`, the
    high-temperature limit of the binary `distillation_loss`.

    Returns:
        float32 per-example loss, shape (...,).

    References:
        Ba, Caruana. Do Deep Nets Really Need to be Deep? NeurIPS 2014.
    """
    check_same_shape(teacher_logits, student_logits, "teacher_logits", "student_logits")
    if _binary.is_binary_form(student_logits, output):
        return _binary.binary_logit_matching_loss(teacher_logits, student_logits)
    teacher_logits = ops.cast(teacher_logits, "float32")
    student_logits = ops.cast(student_logits, "float32")
    # A class both mask (-inf) carries no logit to match: out of the means and the sum.
    kept = ops.logical_not(ops.isneginf(teacher_logits) & ops.isneginf(student_logits))
    num_kept = ops.sum(ops.cast(kept, "float32"), axis=-1, keepdims=True)
    teacher_logits = ops.where(kept, teacher_logits, 0.0)
    student_logits = ops.where(kept, student_logits, 0.0)
    teacher_centred = teacher_logits - ops.sum(teacher_logits, axis=-1, keepdims=True) / num_kept
    student_centred = student_logits - ops.sum(student_logits, axis=-1, keepdims=True) / num_kept
    squared = ops.where(kept, ops.square(student_centred - teacher_centred), 0.0)
    return 0.5 * ops.sum(squared, axis=-1) / ops.squeeze(num_kept, -1)


@keras.saving.register_keras_serializable(package=PACKAGE)
class DistillationLoss(DistillationTerm):
    """`T^2 * KL(softmax(t / T) || softmax(s / T))` with teacher logits as `y_true`.

    Computed from `log_softmax` in float32 with no clipping (see
    `keras_kd.losses.distillation_loss`). Makes offline distillation a one-line
    compile: precompute the teacher's logits and fit on them. It is also the
    `Distiller`'s default term (a `keras_kd.DistillationTerm`).

    Args:
        temperature: float > 0, default 4.0.
        output: "softmax" (default) or "sigmoid" for binary/multi-label models (a
            single logit is binary either way); see `distillation_loss`.
        reduction, name, dtype: as for any `keras.losses.Loss`. With logits of shape
            (batch, sequence, K) and a padding mask of shape (batch, sequence) as
            `sample_weight`, `reduction="mean_with_sample_weight"` gives the mean over
            real tokens.
        standardize: bool, default False: standardize both logits first
            (`standardize_logits`; Sun et al. 2024, whose default base T is 2).

    `y_true` must be the teacher's *logits*: probabilities (a softmax teacher's
    `predict`) raise, eagerly with a `ValueError`, inside a compiled TensorFlow `fit`
    with an `InvalidArgumentError` (see `losses._core.check_teacher_logits`).
        divergence: "kl" (default), "reverse_kl" or "jsd"; see `distillation_loss`.
        beta: float in (0, 1), default 0.5, the JSD's mixture weight.

    Example:
        >>> student.compile("adam", loss=DistillationLoss(temperature=4.0))
        >>> student.fit(x, teacher.predict(x))  # teacher logits as targets

    References:
        Hinton, Vinyals, Dean. Distilling the Knowledge in a Neural Network. 2015.
    """

    def __init__(
        self,
        temperature: float = 4.0,
        reduction: str = "sum_over_batch_size",
        name: str = "distillation_loss",
        dtype: Any = None,
        standardize: bool = False,
        output: str = "softmax",
        divergence: str = "kl",
        beta: float = 0.5,
    ) -> None:
        super().__init__(temperature=temperature, name=name, reduction=reduction, dtype=dtype)
        self.standardize = _validation.check_bool(standardize, "standardize")
        self.output = _binary.check_output(output)
        self.divergence = check_divergence(divergence)
        self.beta = check_beta(beta)

    def compute(
        self,
        teacher_logits: TensorLike,
        student_logits: TensorLike,
        temperature: TensorLike,
        labels: Optional[TensorLike] = None,
    ) -> TensorLike:
        return distillation_loss(
            teacher_logits,
            student_logits,
            temperature,
            output=self.output,
            standardize=self.standardize,
            divergence=self.divergence,
            beta=self.beta,
        )

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "standardize": self.standardize,
            "output": self.output,
            "divergence": self.divergence,
            "beta": self.beta,
        }


@keras.saving.register_keras_serializable(package=PACKAGE)
class LogitMatchingLoss(CheckedLoss):
    """Squared error between zero-meaned teacher (`y_true`) and student logits.

    `0.5 * mean_k ((s_k - mean(s)) - (t_k - mean(t)))^2`, the high-temperature limit
    of `DistillationLoss` (Hinton et al. 2015; Ba & Caruana 2014). With
    `output="sigmoid"` (or one logit): `mean_k (s_k - t_k)^2 / 8`.

    Example:
        >>> student.compile("adam", loss=LogitMatchingLoss())
        >>> student.fit(x, teacher.predict(x))
    """

    def __init__(
        self,
        reduction: str = "sum_over_batch_size",
        name: str = "logit_matching_loss",
        dtype: Any = None,
        output: str = "softmax",
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.output = _binary.check_output(output)

    def call(self, y_true: TensorLike, y_pred: TensorLike) -> TensorLike:
        y_true = check_teacher_logits(y_true, self.output, name="y_true")
        return logit_matching_loss(y_true, y_pred, self.output)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "output": self.output}
