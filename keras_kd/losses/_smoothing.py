"""Label smoothing and teacher-free KD with a virtual teacher (Yuan et al. 2020)."""

from __future__ import annotations

import math
import numbers
from typing import Any

import keras
from keras import ops

from keras_kd import _labels
from keras_kd import _validation
from keras_kd.losses import _binary
from keras_kd.losses._core import PACKAGE
from keras_kd.losses._core import CheckedLoss
from keras_kd.losses._core import cross_entropy
from keras_kd.losses._core import kl_divergence_from_log_probs
from keras_kd.losses._core import log_probs
from keras_kd.losses._core import tempered_log_softmax
from keras_kd.losses._core import weighted_log_probs
from keras_kd.losses._distillation import distillation_loss
from keras_kd._types import TensorLike


def label_smoothing_loss(
    y_true: TensorLike,
    y_pred: TensorLike,
    smoothing: float = 0.1,
    from_logits: bool = True,
    output: str = "softmax",
) -> TensorLike:
    """Cross-entropy against smoothed targets (Szegedy et al. 2016; Müller et al. 2019).

    `L = (1 - eps) * H(q, p) + eps * H(u, p) = H((1 - eps) q + eps / K, p)` with `u`
    uniform over the K classes, so on one-hot labels it equals Keras'
    `CategoricalCrossentropy(label_smoothing=eps)`.

    Args:
        y_true: class indices (..., ) / (..., 1) or one-hot targets (..., K).
        y_pred: logits, or probabilities when `from_logits=False`.
        smoothing: eps in [0, 1), default 0.1.
        from_logits: whether `y_pred` are logits. Probabilities are normalised and
            clipped to [1e-7, 1 - 1e-7] before the log, exactly as Keras'
            cross-entropy does; logits need no clipping and are preferred.
        output: "softmax" (default) or "sigmoid" for binary/multi-label models, where
            `y_true` is 0/1 per output (multi-hot) and the loss is the binary
            cross-entropy against `y (1 - eps) + eps / 2`, averaged over the outputs:
            exactly Keras' `BinaryCrossentropy(label_smoothing=eps)`. A single output
            (K = 1) is binary under either.

    Returns:
        float32 per-example loss, shape (...,).
    """
    if isinstance(smoothing, numbers.Real):
        _validation.check_in_range(smoothing, "smoothing", 0.0, 1.0, high_inclusive=False)
    if _binary.is_binary_form(y_pred, output):
        targets = _binary.binary_targets(y_true, y_pred)
        return _binary.binary_label_smoothing_loss(targets, y_pred, smoothing, from_logits)
    targets = _labels.to_one_hot(y_true, y_pred)
    num_classes = y_pred.shape[-1]
    smoothed = (1.0 - smoothing) * targets + smoothing / num_classes
    return -ops.sum(weighted_log_probs(smoothed, log_probs(y_pred, from_logits)), axis=-1)


def virtual_teacher_probs(
    y_true: TensorLike,
    y_pred: TensorLike,
    correct_prob: float,
) -> TensorLike:
    """Tf-KD_reg's virtual teacher: `a` on the true class, `(1 - a) / (K - 1)` elsewhere.

    Args:
        y_true: class indices or one-hot targets.
        y_pred: the student's logits, shape (..., K) with K >= 2; only the shape is used.
        correct_prob: a in (1/K, 1].

    Returns:
        float32 tensor of shape (..., K).
    """
    num_classes = y_pred.shape[-1]
    indices = _labels.to_indices(y_true, y_pred)
    on_true_class = ops.one_hot(indices, num_classes, dtype="float32")
    off_value = (1.0 - correct_prob) / (num_classes - 1)
    return on_true_class * (correct_prob - off_value) + off_value


def virtual_teacher_loss(
    y_true: TensorLike,
    y_pred: TensorLike,
    correct_prob: float = 0.9,
    temperature: float = 20.0,
    alpha: float = 0.5,
    mode: str = "paper",
    multiplier: float = 1.0,
) -> TensorLike:
    """Teacher-free KD with a virtual teacher, Tf-KD_reg (Yuan et al. CVPR 2020).

    With `p_d` from `virtual_teacher_probs` and student logits `z`:

    - `mode="paper"` (the paper's equation):
      `(1 - alpha) * H(y, softmax(z)) + alpha * T^2 * KL(softmax(log(p_d) / T) || softmax(z / T))`,
      i.e. Hinton's `distillation_loss` with `log(p_d)` as the teacher's logits.
    - `mode="reference"` (the authors' `loss_kd_regularization`, to reproduce their
      numbers): `(1 - alpha) * H(y, softmax(z)) + alpha * multiplier * KL(softmax(p_d / T) || softmax(z)) / K`:
      the temperature is applied to the *probabilities* `p_d`, the student is not
      tempered, there is no `T^2`, and the KL is divided by K as PyTorch's
      `KLDivLoss()` default reduction does.

    Args:
        y_true: class indices or one-hot targets.
        y_pred: student logits, shape (..., K) with K >= 2.
        correct_prob: a in (1/K, 1], default 0.9 (the paper asks for a >= 0.9).
        temperature: T > 0, default 20.0 (the paper asks for T >= 20).
        alpha: weight of the virtual-teacher term in [0, 1], default 0.5.
        mode: "paper" or "reference".
        multiplier: scale of the reference KL term, default 1.0 (ignored in "paper").

    Returns:
        float32 per-example loss, shape (...,).

    References:
        Yuan, Tay, Li, Wang, Feng. Revisiting Knowledge Distillation via Label
        Smoothing Regularization. CVPR 2020.
    """
    num_classes = y_pred.shape[-1]
    if num_classes is not None:
        if num_classes < 2:
            raise ValueError(
                f"VirtualTeacherLoss needs softmax logits over K >= 2 classes, got `y_pred` "
                f"of shape {tuple(y_pred.shape)}: its virtual teacher spreads (1 - a) over "
                "the K - 1 wrong classes, of which a binary model has none beyond the "
                "other label. For a single-logit (sigmoid) model use "
                "LabelSmoothingLoss(eps, from_logits=True), the uniform-teacher form."
            )
        if correct_prob <= 1.0 / num_classes:
            raise ValueError(
                f"`correct_prob` must be in (1/K, 1] = ({1.0 / num_classes:.4g}, 1] "
                f"for K={num_classes} classes, got {correct_prob!r}."
            )
    _validation.check_choice(mode, "mode", {"paper", "reference"})
    hard = cross_entropy(y_true, y_pred)
    teacher_probs = virtual_teacher_probs(y_true, y_pred, correct_prob)
    if mode == "paper":
        soft = distillation_loss(ops.log(teacher_probs), y_pred, temperature)
    else:
        teacher_log_probs = tempered_log_softmax(teacher_probs, temperature)
        student_log_probs = tempered_log_softmax(y_pred)
        soft = multiplier * kl_divergence_from_log_probs(teacher_log_probs, student_log_probs)
        soft = soft / num_classes
    if isinstance(alpha, numbers.Real) and alpha in (0.0, 1.0):
        # A weight of 0 drops its term exactly: 0 * inf (a masked class, to which the
        # virtual teacher gives mass) would be nan.
        return hard if alpha == 0.0 else soft
    return (1.0 - alpha) * hard + alpha * soft


@keras.saving.register_keras_serializable(package=PACKAGE)
class LabelSmoothingLoss(CheckedLoss):
    """Cross-entropy with label smoothing: `(1 - eps) H(q, p) + eps H(u, p)`.

    Unlike Keras' `SparseCategoricalCrossentropy`, it smooths sparse integer labels
    too; on one-hot labels it equals `CategoricalCrossentropy(label_smoothing=eps)`.
    Sparse or one-hot is decided from the label and prediction shapes.

    Args:
        smoothing: eps in [0, 1), default 0.1.
        from_logits: required keyword. True when the model outputs logits (advised;
            needed with a `Distiller`), False for probabilities.
        output: "softmax" (default) or "sigmoid" (binary/multi-label, 0/1 targets per
            output; equals Keras' `BinaryCrossentropy(label_smoothing=eps)`). A
            single output is binary under either.
        reduction, name, dtype: as for any `keras.losses.Loss`.

    Example:
        >>> model.compile("adam", loss=LabelSmoothingLoss(0.1, from_logits=True))

    References:
        Szegedy et al. Rethinking the Inception Architecture. CVPR 2016.
        Müller, Kornblith, Hinton. When Does Label Smoothing Help? NeurIPS 2019.
    """

    def __init__(
        self,
        smoothing: float = 0.1,
        *,
        from_logits: bool,
        reduction: str = "sum_over_batch_size",
        name: str = "label_smoothing_loss",
        dtype: Any = None,
        output: str = "softmax",
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.smoothing = _validation.check_in_range(
            smoothing, "smoothing", 0.0, 1.0, high_inclusive=False
        )
        if not isinstance(from_logits, bool):
            raise ValueError(f"`from_logits` must be True or False, got {from_logits!r}.")
        self.from_logits = from_logits
        self.output = _binary.check_output(output)

    def call(self, y_true: TensorLike, y_pred: TensorLike) -> TensorLike:
        return label_smoothing_loss(
            y_true, y_pred, self.smoothing, self.from_logits, output=self.output
        )

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "smoothing": self.smoothing,
            "from_logits": self.from_logits,
            "output": self.output,
        }


@keras.saving.register_keras_serializable(package=PACKAGE)
class VirtualTeacherLoss(CheckedLoss):
    """Teacher-free KD, Tf-KD_reg: distil from a hand-made virtual teacher.

    The virtual teacher puts `correct_prob` on the true class and spreads the rest
    evenly. `mode="paper"` is the paper's equation with `T^2`; `mode="reference"`
    reproduces the authors' code (see `keras_kd.losses.virtual_teacher_loss` for both
    formulas). `y_pred` must be logits.

    Args:
        correct_prob: a in (1/K, 1], default 0.9.
        temperature: T > 0, default 20.0.
        alpha: weight of the virtual-teacher term in [0, 1], default 0.5.
        mode: "paper" (default) or "reference".
        multiplier: scale of the KL term in "reference" mode, default 1.0. The authors
            used (T, alpha, multiplier) = (40, 0.95, 1) for MobileNetV2,
            (20, 0.1, 100) for ResNet18, (40, 0.1, 50) for GoogLeNet, with
            correct_prob 0.99.
        reduction, name, dtype: as for any `keras.losses.Loss`.

    Example:
        >>> model.compile("adam", loss=VirtualTeacherLoss(correct_prob=0.9, temperature=20.0))

    References:
        Yuan, Tay, Li, Wang, Feng. Revisiting Knowledge Distillation via Label
        Smoothing Regularization. CVPR 2020.
    """

    def __init__(
        self,
        correct_prob: float = 0.9,
        temperature: float = 20.0,
        alpha: float = 0.5,
        mode: str = "paper",
        multiplier: float = 1.0,
        reduction: str = "sum_over_batch_size",
        name: str = "virtual_teacher_loss",
        dtype: Any = None,
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.correct_prob = _validation.check_in_range(
            correct_prob, "correct_prob", 0.0, 1.0, low_inclusive=False
        )
        self.temperature = _validation.check_temperature(temperature)
        self.alpha = _validation.check_in_range(alpha, "alpha", 0.0, 1.0)
        self.mode = _validation.check_choice(mode, "mode", {"paper", "reference"})
        self.multiplier = _validation.check_in_range(multiplier, "multiplier", 0.0, math.inf)

    def call(self, y_true: TensorLike, y_pred: TensorLike) -> TensorLike:
        return virtual_teacher_loss(
            y_true,
            y_pred,
            correct_prob=self.correct_prob,
            temperature=self.temperature,
            alpha=self.alpha,
            mode=self.mode,
            multiplier=self.multiplier,
        )

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "correct_prob": self.correct_prob,
            "temperature": self.temperature,
            "alpha": self.alpha,
            "mode": self.mode,
            "multiplier": self.multiplier,
        }


