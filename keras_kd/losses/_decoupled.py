"""Decoupled knowledge distillation (DKD): target and non-target parts of Hinton's KL."""

from __future__ import annotations

from typing import Any
from typing import Optional

import keras
from keras import ops

from keras_kd import _labels
from keras_kd import _validation
from keras_kd.losses._core import PACKAGE
from keras_kd.losses._core import check_same_shape
from keras_kd.losses._core import kl_divergence_from_log_probs
from keras_kd.losses._distillation import _maybe_standardize
from keras_kd.losses._term import DistillationTerm
from keras_kd.losses._term import check_weight
from keras_kd._types import TensorLike


def decoupled_distillation_loss(
    labels: TensorLike,
    teacher_logits: TensorLike,
    student_logits: TensorLike,
    temperature: float = 4.0,
    alpha: float = 1.0,
    beta: float = 8.0,
    standardize: bool = False,
) -> TensorLike:
    """DKD: `alpha * T^2 * KL(b_t || b_s) + beta * T^2 * KL(p_hat_t || p_hat_s)` per example.

    With `p = softmax(z / T)` and `y` the label, `b = [p_y, 1 - p_y]` is the binary
    target-vs-rest distribution (TCKD) and `p_hat = softmax(z_{k != y} / T)` the
    tempered softmax over the K - 1 non-target classes only (NCKD). Hinton's
    `T^2 KL(p_t || p_s)` equals `TCKD + (1 - p_t,y) * NCKD`; DKD weighs the two parts
    independently, which lets the non-target knowledge through for confident teachers.

    Computed in log space, float32: `log b = [log p_y, logsumexp_{k != y}(z_k / T) -
    logsumexp_k(z_k / T)]` and `log p_hat` is the log-softmax over the non-target
    classes. The authors' code takes `log` of `b_s` (which is `-inf` once `p_y`
    rounds to 1) and removes the target class with `z - 1000 * onehot` (wrong for
    logits beyond ~1000 T); here the target class is masked out exactly, so logits
    of 1e4 and float16 inputs give finite values and gradients. Otherwise this is
    mdistiller's `dkd_loss` per example (the batch mean is the Loss reduction).

    Args:
        labels: class indices, shape (...,) or (..., 1), or one-hot targets (..., K)
            (the target class is their argmax).
        teacher_logits: shape (..., K), K >= 3.
        student_logits: shape (..., K).
        temperature: T, float > 0, default 4.0 (CIFAR; the authors use 1 on ImageNet).
        alpha: TCKD weight, finite float >= 0, default 1.0.
        beta: NCKD weight, finite float >= 0, default 8.0 (CIFAR; 0.5 on ImageNet,
            2 for resnet56/110 students, 6 for VGG/WRN pairs).
        standardize: bool, default False: standardize both logits first
            (`keras_kd.losses.standardize_logits`; Sun et al. 2024 use it with DKD).

    Returns:
        float32 per-example loss, shape (...,).

    Raises:
        ValueError: K < 3 (NCKD over one non-target class is a KL between two point
            masses, always 0: DKD is not defined for two classes; mdistiller issue 60).

    Example:
        >>> decoupled_distillation_loss([0], [[5.0, 1.0, 0.0]], [[1.0, 2.0, 0.0]])

    References:
        Zhao et al. Decoupled Knowledge Distillation. CVPR 2022 (mdistiller,
        `mdistiller/distillers/DKD.py::dkd_loss`).
    """
    # Array-likes (lists, NumPy) as tensors: the shape checks below read `.shape`.
    labels = ops.convert_to_tensor(labels)
    teacher_logits = ops.convert_to_tensor(teacher_logits)
    student_logits = ops.convert_to_tensor(student_logits)
    teacher_logits, student_logits = _maybe_standardize(teacher_logits, student_logits, standardize)
    check_same_shape(teacher_logits, student_logits, "teacher_logits", "student_logits")
    student_logits = ops.cast(student_logits, "float32")
    num_classes = student_logits.shape[-1]
    if num_classes is not None and num_classes < 3:
        raise ValueError(
            f"decoupled_distillation_loss needs K >= 3 classes, got logits of shape "
            f"{tuple(student_logits.shape)}: with K = {num_classes} its non-target term "
            "is undefined (one non-target class). Use keras_kd.DistillationLoss for "
            "binary classifiers."
        )
    target_mask = ops.cast(_labels.to_one_hot(labels, student_logits), "float32")
    target_mask = ops.one_hot(ops.argmax(target_mask, axis=-1), num_classes, dtype="bool")
    teacher_binary, teacher_non_target = _decoupled_log_probs(
        teacher_logits, target_mask, temperature
    )
    student_binary, student_non_target = _decoupled_log_probs(
        student_logits, target_mask, temperature
    )
    target_class_kl = kl_divergence_from_log_probs(teacher_binary, student_binary)
    # The target entry of both non-target distributions is log 0 = -inf; replaced by 0
    # so that its (zero) probability times `-inf - -inf` cannot make a NaN.
    non_target_kl = kl_divergence_from_log_probs(
        ops.where(target_mask, -float("inf"), teacher_non_target),
        ops.where(target_mask, 0.0, student_non_target),
    )
    return (temperature**2) * (alpha * target_class_kl + beta * non_target_kl)


def _decoupled_log_probs(logits, target_mask, temperature):
    """(log [p_y, 1 - p_y] of shape (..., 2), log p_hat of shape (..., K)), float32.

    `log p_hat` is the log-softmax over the non-target classes; its target entry is
    undefined (-inf) and must be masked by the caller.
    """
    scaled = ops.cast(logits, "float32") / temperature
    log_normalizer = ops.logsumexp(scaled, axis=-1)
    masked = ops.where(target_mask, -float("inf"), scaled)
    non_target_log_normalizer = ops.logsumexp(masked, axis=-1)
    target_log_prob = ops.sum(ops.where(target_mask, scaled, 0.0), axis=-1) - log_normalizer
    rest_log_prob = non_target_log_normalizer - log_normalizer
    binary = ops.stack([target_log_prob, rest_log_prob], axis=-1)
    non_target = masked - ops.expand_dims(non_target_log_normalizer, -1)
    return binary, non_target


@keras.saving.register_keras_serializable(package=PACKAGE)
class DecoupledDistillationLoss(DistillationTerm):
    """DKD (Zhao et al. 2022) as a loss and a `Distiller` term; it needs the labels.

    `alpha * T^2 * KL(b_t || b_s) + beta * T^2 * KL(p_hat_t || p_hat_s)` per example
    (see `keras_kd.losses.decoupled_distillation_loss`), reduced as any Keras loss
    (`sample_weight` weighs each example). In a `Distiller` it receives the labels and
    follows the Distiller's temperature. Standalone, `y_true` is the cached-target dict
    `{"labels": labels, "teacher_logits": teacher_logits}`.

    The authors train `CE + min(epoch / 20, 1) * DKD`: in a `Distiller` that is
    `alpha=0.5` (the Distiller's alpha, which also halves CE: the same minimiser) with
    a linear warm-up of the term weight (`keras_kd.schedules.DistillationSchedule`).

    Args:
        temperature: T, float > 0, default 4.0.
        alpha: TCKD weight >= 0, default 1.0.
        beta: NCKD weight >= 0, default 8.0.
        standardize: bool, default False (logit standardization first).
        reduction, name, dtype: as for any `keras.losses.Loss`.

    Example:
        >>> distiller = keras_kd.Distiller(
        ...     teacher, student, distillation_loss=DecoupledDistillationLoss(beta=8.0))

    References:
        Zhao et al. Decoupled Knowledge Distillation. CVPR 2022.
    """

    needs_labels = True

    def __init__(
        self,
        temperature: float = 4.0,
        alpha: float = 1.0,
        beta: float = 8.0,
        standardize: bool = False,
        reduction: str = "sum_over_batch_size",
        name: str = "decoupled_distillation_loss",
        dtype: Any = None,
    ) -> None:
        super().__init__(temperature=temperature, reduction=reduction, name=name, dtype=dtype)
        self.alpha = check_weight(alpha, "alpha")
        self.beta = check_weight(beta, "beta")
        self.standardize = _validation.check_bool(standardize, "standardize")

    def compute(
        self,
        teacher_logits: TensorLike,
        student_logits: TensorLike,
        temperature: TensorLike,
        labels: Optional[TensorLike] = None,
    ) -> TensorLike:
        return decoupled_distillation_loss(
            labels,
            teacher_logits,
            student_logits,
            temperature,
            alpha=self.alpha,
            beta=self.beta,
            standardize=self.standardize,
        )

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "alpha": self.alpha,
            "beta": self.beta,
            "standardize": self.standardize,
        }
