"""Hinton's soft-target loss, ensembles of teachers, and logit matching."""

import math

import keras
from keras import ops

from keras_kd import _validation
from keras_kd.losses._core import PACKAGE
from keras_kd.losses._core import check_same_shape
from keras_kd.losses._core import kl_divergence_from_log_probs
from keras_kd.losses._core import tempered_log_softmax
from keras_kd.losses._term import DistillationTerm


def standardize_logits(logits):
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
    teacher_logits, student_logits, temperature: float = 4.0, standardize: bool = False
):
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
        standardize: bool, default False. True applies `standardize_logits` to both
            logits first (Sun et al. 2024: `T^2 KL(softmax(Z(t) / T) || softmax(Z(s) / T))`).

    Returns:
        float32 per-example loss, shape (...,).

    References:
        Hinton, Vinyals, Dean. Distilling the Knowledge in a Neural Network. 2015.
        Sun et al. Logit Standardization in Knowledge Distillation. CVPR 2024.
    """
    teacher_logits, student_logits = _maybe_standardize(teacher_logits, student_logits, standardize)
    check_same_shape(teacher_logits, student_logits, "teacher_logits", "student_logits")
    teacher_log_probs = tempered_log_softmax(teacher_logits, temperature)
    student_log_probs = tempered_log_softmax(student_logits, temperature)
    kl = kl_divergence_from_log_probs(teacher_log_probs, student_log_probs)
    return (temperature**2) * kl


def _maybe_standardize(teacher_logits, student_logits, standardize):
    """Both logits standardized when `standardize` is True; as given otherwise."""
    if not _validation.check_bool(standardize, "standardize"):
        return teacher_logits, student_logits
    return standardize_logits(teacher_logits), standardize_logits(student_logits)


def ensemble_logits(teacher_logits_list, temperature):
    """Logits whose tempered softmax is the mean of an ensemble's tempered softmaxes.

    `T * log( (1/M) sum_m softmax(z_m / T) )`, computed with `logsumexp`. Feeding the
    result to `distillation_loss` at the same temperature distils the averaged soft
    targets of M teachers (Hinton et al. 2015, "distilling an ensemble"). The result
    is specific to `temperature`.

    Args:
        teacher_logits_list: list of M tensors of shape (..., K).
        temperature: float > 0.

    Returns:
        float32 tensor of shape (..., K).
    """
    if len(teacher_logits_list) == 1:
        return ops.cast(teacher_logits_list[0], "float32")
    log_probs = ops.stack(
        [tempered_log_softmax(logits, temperature) for logits in teacher_logits_list],
        axis=0,
    )
    mean_log_probs = ops.logsumexp(log_probs, axis=0) - math.log(len(teacher_logits_list))
    return temperature * mean_log_probs


def logit_matching_loss(teacher_logits, student_logits):
    """Squared error between zero-meaned logits (Ba & Caruana 2014).

    `L = 0.5 * mean_k ((s_k - mean(s)) - (t_k - mean(t)))^2`. The 1/2 makes it the
    exact high-temperature limit of `distillation_loss`: `T^2 KL -> L` as T -> inf
    (Hinton et al. 2015, section 2.1).

    Returns:
        float32 per-example loss, shape (...,).

    References:
        Ba, Caruana. Do Deep Nets Really Need to be Deep? NeurIPS 2014.
    """
    check_same_shape(teacher_logits, student_logits, "teacher_logits", "student_logits")
    teacher_logits = ops.cast(teacher_logits, "float32")
    student_logits = ops.cast(student_logits, "float32")
    teacher_centred = teacher_logits - ops.mean(teacher_logits, axis=-1, keepdims=True)
    student_centred = student_logits - ops.mean(student_logits, axis=-1, keepdims=True)
    return 0.5 * ops.mean(ops.square(student_centred - teacher_centred), axis=-1)


@keras.saving.register_keras_serializable(package=PACKAGE)
class DistillationLoss(DistillationTerm):
    """`T^2 * KL(softmax(t / T) || softmax(s / T))` with teacher logits as `y_true`.

    Computed from `log_softmax` in float32 with no clipping (see
    `keras_kd.losses.distillation_loss`). Makes offline distillation a one-line
    compile: precompute the teacher's logits and fit on them. It is also the
    `Distiller`'s default term (a `keras_kd.DistillationTerm`).

    Args:
        temperature: float > 0, default 4.0.
        reduction, name, dtype: as for any `keras.losses.Loss`.
        standardize: bool, default False: standardize both logits first
            (`standardize_logits`; Sun et al. 2024, whose default base T is 2).

    Example:
        >>> student.compile("adam", loss=DistillationLoss(temperature=4.0))
        >>> student.fit(x, teacher.predict(x))  # teacher logits as targets

    References:
        Hinton, Vinyals, Dean. Distilling the Knowledge in a Neural Network. 2015.
    """

    def __init__(
        self,
        temperature=4.0,
        reduction="sum_over_batch_size",
        name="distillation_loss",
        dtype=None,
        standardize=False,
    ):
        super().__init__(temperature=temperature, name=name, reduction=reduction, dtype=dtype)
        self.standardize = _validation.check_bool(standardize, "standardize")

    def compute(self, teacher_logits, student_logits, temperature, labels=None):
        return distillation_loss(
            teacher_logits, student_logits, temperature, standardize=self.standardize
        )

    def get_config(self):
        return {**super().get_config(), "standardize": self.standardize}


@keras.saving.register_keras_serializable(package=PACKAGE)
class LogitMatchingLoss(keras.losses.Loss):
    """Squared error between zero-meaned teacher (`y_true`) and student logits.

    `0.5 * mean_k ((s_k - mean(s)) - (t_k - mean(t)))^2`, the high-temperature limit
    of `DistillationLoss` (Hinton et al. 2015; Ba & Caruana 2014).

    Example:
        >>> student.compile("adam", loss=LogitMatchingLoss())
        >>> student.fit(x, teacher.predict(x))
    """

    def __init__(self, reduction="sum_over_batch_size", name="logit_matching_loss", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        return logit_matching_loss(y_true, y_pred)
