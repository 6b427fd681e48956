"""Distillation and label-smoothing losses: pure functions on `keras.ops` and thin
serializable `keras.losses.Loss` wrappers around them.

Every formula lives in exactly one function here; the `Distiller`, the loss classes
and the command line all call these. All arithmetic is in float32 and in log space
(`log_softmax`, never `log(softmax)`), so float16 logits from a mixed-precision model
and logits as large as 1e4 give finite values and gradients. Nothing is clipped:
Keras' `KLDivergence` clips probabilities to [1e-7, 1], which makes the gradient
vanish when the student is confidently wrong.

Conventions: `y_pred` is always the student's *logits* (pre-softmax scores), shape
(..., K). Hard labels may be class indices, shape (...,) or (..., 1), or one-hot /
soft targets, shape (..., K); which one is decided from the static shapes.
"""

import math
import numbers

import keras
from keras import ops

from keras_kd import _labels
from keras_kd import _validation

_PACKAGE = "keras_kd"

# ---------------------------------------------------------------------------
# Functional forms: the single source of truth for each formula.
# ---------------------------------------------------------------------------


def tempered_log_softmax(logits, temperature=1.0):
    """Log of the tempered softmax, `log softmax(z / T)`, in float32.

    `p_i^T = exp(z_i / T) / sum_j exp(z_j / T)`: T = 1 is the ordinary softmax, large
    T tends to uniform, small T to one-hot (Hinton et al. 2015).

    Args:
        logits: tensor of shape (..., K).
        temperature: float > 0, default 1.0.

    Returns:
        float32 tensor of shape (..., K).

    Raises:
        ValueError: a Python/NumPy `temperature` that is not finite and > 0 (a tensor,
            e.g. a scheduled or learned temperature, is not checked).
    """
    if isinstance(temperature, numbers.Real):
        _validation.check_temperature(temperature)
    logits = ops.cast(logits, "float32")
    return ops.log_softmax(logits / temperature, axis=-1)


def kl_divergence_from_log_probs(target_log_probs, log_probs):
    """`KL(p || q) = sum_k p_k (log p_k - log q_k)` over the last axis.

    Takes log-probabilities so that no softmax is ever exponentiated and logged back.
    Classes where the target has probability exactly 0 contribute 0 (the limit of
    `p log p`), so a target with `-inf` log-probabilities is handled exactly.

    Args:
        target_log_probs: `log p`, shape (..., K).
        log_probs: `log q`, shape (..., K).

    Returns:
        float32 tensor of shape (...,).
    """
    target_log_probs = ops.cast(target_log_probs, "float32")
    log_probs = ops.cast(log_probs, "float32")
    target_probs = ops.exp(target_log_probs)
    # `where` keeps -inf - (-inf) = nan out of the sum for zero-probability targets.
    safe_target_log_probs = ops.where(target_probs > 0, target_log_probs, 0.0)
    return ops.sum(target_probs * (safe_target_log_probs - log_probs), axis=-1)


def distillation_loss(teacher_logits, student_logits, temperature=4.0):
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

    Returns:
        float32 per-example loss, shape (...,).

    References:
        Hinton, Vinyals, Dean. Distilling the Knowledge in a Neural Network. 2015.
    """
    _check_same_shape(teacher_logits, student_logits, "teacher_logits", "student_logits")
    teacher_log_probs = tempered_log_softmax(teacher_logits, temperature)
    student_log_probs = tempered_log_softmax(student_logits, temperature)
    kl = kl_divergence_from_log_probs(teacher_log_probs, student_log_probs)
    return (temperature**2) * kl


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


def cross_entropy(y_true, logits):
    """`H(y, softmax(z)) = -sum_k y_k log softmax(z)_k` from logits, float32.

    `y_true` may be class indices or (soft) targets of shape (..., K).
    """
    targets = _labels.to_one_hot(y_true, logits)
    return -ops.sum(targets * tempered_log_softmax(logits), axis=-1)


def label_smoothing_loss(y_true, y_pred, smoothing=0.1, from_logits=True):
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

    Returns:
        float32 per-example loss, shape (...,).
    """
    if isinstance(smoothing, numbers.Real):
        _validation.check_in_range(smoothing, "smoothing", 0.0, 1.0, high_inclusive=False)
    targets = _labels.to_one_hot(y_true, y_pred)
    num_classes = y_pred.shape[-1]
    smoothed = (1.0 - smoothing) * targets + smoothing / num_classes
    return -ops.sum(smoothed * _log_probs(y_pred, from_logits), axis=-1)


def virtual_teacher_probs(y_true, y_pred, correct_prob):
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
    y_true,
    y_pred,
    correct_prob=0.9,
    temperature=20.0,
    alpha=0.5,
    mode="paper",
    multiplier=1.0,
):
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
                f"VirtualTeacherLoss needs at least 2 classes, got predictions of "
                f"shape {tuple(y_pred.shape)}."
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
    return (1.0 - alpha) * hard + alpha * soft


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
    _check_same_shape(teacher_logits, student_logits, "teacher_logits", "student_logits")
    teacher_logits = ops.cast(teacher_logits, "float32")
    student_logits = ops.cast(student_logits, "float32")
    teacher_centred = teacher_logits - ops.mean(teacher_logits, axis=-1, keepdims=True)
    student_centred = student_logits - ops.mean(student_logits, axis=-1, keepdims=True)
    return 0.5 * ops.mean(ops.square(student_centred - teacher_centred), axis=-1)


def _log_probs(y_pred, from_logits):
    if from_logits:
        return tempered_log_softmax(y_pred)
    probs = ops.cast(y_pred, "float32")
    probs = probs / ops.sum(probs, axis=-1, keepdims=True)
    epsilon = keras.config.epsilon()
    return ops.log(ops.clip(probs, epsilon, 1.0 - epsilon))


def _check_same_shape(a, b, name_a, name_b):
    shape_a, shape_b = tuple(a.shape), tuple(b.shape)
    if len(shape_a) != len(shape_b) or any(
        x is not None and y is not None and x != y for x, y in zip(shape_a, shape_b)
    ):
        raise ValueError(
            f"`{name_a}` and `{name_b}` must have the same shape, got {shape_a} and "
            f"{shape_b}. Teacher and student must predict the same classes."
        )


# ---------------------------------------------------------------------------
# Loss classes: configuration, a name and serialization around the functions above.
# ---------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package=_PACKAGE)
class DistillationLoss(keras.losses.Loss):
    """`T^2 * KL(softmax(t / T) || softmax(s / T))` with teacher logits as `y_true`.

    Computed from `log_softmax` in float32 with no clipping (see
    `keras_kd.losses.distillation_loss`). Makes offline distillation a one-line
    compile: precompute the teacher's logits and fit on them.

    Args:
        temperature: float > 0, default 4.0.
        reduction, name, dtype: as for any `keras.losses.Loss`.

    Example:
        >>> student.compile("adam", loss=DistillationLoss(temperature=4.0))
        >>> student.fit(x, teacher.predict(x))  # teacher logits as targets

    References:
        Hinton, Vinyals, Dean. Distilling the Knowledge in a Neural Network. 2015.
    """

    def __init__(
        self, temperature=4.0, reduction="sum_over_batch_size", name="distillation_loss", dtype=None
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.temperature = _validation.check_temperature(temperature)

    def call(self, y_true, y_pred):
        return distillation_loss(y_true, y_pred, self.temperature)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class LabelSmoothingLoss(keras.losses.Loss):
    """Cross-entropy with label smoothing: `(1 - eps) H(q, p) + eps H(u, p)`.

    Unlike Keras' `SparseCategoricalCrossentropy`, it smooths sparse integer labels
    too; on one-hot labels it equals `CategoricalCrossentropy(label_smoothing=eps)`.
    Sparse or one-hot is decided from the label and prediction shapes.

    Args:
        smoothing: eps in [0, 1), default 0.1.
        from_logits: required keyword. True when the model outputs logits (advised;
            needed with a `Distiller`), False for probabilities.
        reduction, name, dtype: as for any `keras.losses.Loss`.

    Example:
        >>> model.compile("adam", loss=LabelSmoothingLoss(0.1, from_logits=True))

    References:
        Szegedy et al. Rethinking the Inception Architecture. CVPR 2016.
        Müller, Kornblith, Hinton. When Does Label Smoothing Help? NeurIPS 2019.
    """

    def __init__(
        self,
        smoothing=0.1,
        *,
        from_logits,
        reduction="sum_over_batch_size",
        name="label_smoothing_loss",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.smoothing = _validation.check_in_range(
            smoothing, "smoothing", 0.0, 1.0, high_inclusive=False
        )
        if not isinstance(from_logits, bool):
            raise ValueError(f"`from_logits` must be True or False, got {from_logits!r}.")
        self.from_logits = from_logits

    def call(self, y_true, y_pred):
        return label_smoothing_loss(y_true, y_pred, self.smoothing, self.from_logits)

    def get_config(self):
        return {
            **super().get_config(),
            "smoothing": self.smoothing,
            "from_logits": self.from_logits,
        }


@keras.saving.register_keras_serializable(package=_PACKAGE)
class VirtualTeacherLoss(keras.losses.Loss):
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
        correct_prob=0.9,
        temperature=20.0,
        alpha=0.5,
        mode="paper",
        multiplier=1.0,
        reduction="sum_over_batch_size",
        name="virtual_teacher_loss",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.correct_prob = _validation.check_in_range(
            correct_prob, "correct_prob", 0.0, 1.0, low_inclusive=False
        )
        self.temperature = _validation.check_temperature(temperature)
        self.alpha = _validation.check_in_range(alpha, "alpha", 0.0, 1.0)
        self.mode = _validation.check_choice(mode, "mode", {"paper", "reference"})
        self.multiplier = _validation.check_in_range(multiplier, "multiplier", 0.0, math.inf)

    def call(self, y_true, y_pred):
        return virtual_teacher_loss(
            y_true,
            y_pred,
            correct_prob=self.correct_prob,
            temperature=self.temperature,
            alpha=self.alpha,
            mode=self.mode,
            multiplier=self.multiplier,
        )

    def get_config(self):
        return {
            **super().get_config(),
            "correct_prob": self.correct_prob,
            "temperature": self.temperature,
            "alpha": self.alpha,
            "mode": self.mode,
            "multiplier": self.multiplier,
        }


@keras.saving.register_keras_serializable(package=_PACKAGE)
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
