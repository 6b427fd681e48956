"""Hinton's soft-target loss, ensembles of teachers, and logit matching."""

import math

import keras
from keras import ops

from keras_kd import _validation
from keras_kd.losses._core import PACKAGE
from keras_kd.losses._core import check_same_shape
from keras_kd.losses._core import tempered_log_softmax
from keras_kd.losses._divergences import check_beta
from keras_kd.losses._divergences import check_divergence
from keras_kd.losses._divergences import divergence_from_logits


def distillation_loss(teacher_logits, student_logits, temperature=4.0, divergence="kl", beta=0.5):
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
        Agarwal et al. On-Policy Distillation of Language Models (GKD). ICLR 2024.
        Gu et al. MiniLLM: Knowledge Distillation of Large Language Models. ICLR 2024.
    """
    check_same_shape(teacher_logits, student_logits, "teacher_logits", "student_logits")
    kl = divergence_from_logits(teacher_logits, student_logits, temperature, divergence, beta)
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
class DistillationLoss(keras.losses.Loss):
    """`T^2 * KL(softmax(t / T) || softmax(s / T))` with teacher logits as `y_true`.

    Computed from `log_softmax` in float32 with no clipping (see
    `keras_kd.losses.distillation_loss`). Makes offline distillation a one-line
    compile: precompute the teacher's logits and fit on them.

    Args:
        temperature: float > 0, default 4.0.
        reduction, name, dtype: as for any `keras.losses.Loss`. With logits of shape
            (batch, sequence, K) and a padding mask of shape (batch, sequence) as
            `sample_weight`, `reduction="mean_with_sample_weight"` gives the mean over
            real tokens.
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
        temperature=4.0,
        reduction="sum_over_batch_size",
        name="distillation_loss",
        dtype=None,
        divergence="kl",
        beta=0.5,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.temperature = _validation.check_temperature(temperature)
        self.divergence = check_divergence(divergence)
        self.beta = check_beta(beta)

    def call(self, y_true, y_pred):
        return distillation_loss(y_true, y_pred, self.temperature, self.divergence, self.beta)

    def get_config(self):
        return {
            **super().get_config(),
            "temperature": self.temperature,
            "divergence": self.divergence,
            "beta": self.beta,
        }


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
