"""Binary and multi-label (independent sigmoid) forms of the distillation losses.

A binary classifier's single logit `z` is the two-class softmax over `[0, z]`
(`softmax([0, z])_1 = sigmoid(z)`), so every softmax formula has an exact binary twin:
the tempered distribution is `sigmoid(z / T)` and a KL between two such is the
Bernoulli KL. A multi-label model with L independent sigmoid outputs is L binary
problems side by side; each loss here takes the **mean over labels**, as Keras'
`BinaryCrossentropy` does, so `alpha` balances hard and soft terms the same way for
any number of labels (multiply by L for the sum, the KL of the joint distribution).

Which form applies is never guessed from values: `output="sigmoid"` says so, and a
last axis of size 1 is binary under either `output` (a softmax over one class is
always 1, so it carries nothing to distil).

Everything is float32 and in log space: `log sigmoid(x)` and `log(1 - sigmoid(x)) =
log sigmoid(-x)`, never `log(sigmoid(x))`, so logits of +-1e4 and `-inf` masks give
finite values and gradients.
"""

from __future__ import annotations

from typing import Sequence

import keras
from keras import ops

from keras_kd import _validation
from keras_kd._types import TensorLike

OUTPUTS = ("softmax", "sigmoid")


def check_output(output: str) -> str:
    """Returns `output` after checking it is "softmax" or "sigmoid"."""
    if output not in OUTPUTS:
        raise ValueError(
            f"`output` must be 'softmax' (one distribution over K classes) or 'sigmoid' "
            f"(independent binary labels; a single logit is binary either way), got {output!r}."
        )
    return output


def is_binary_form(predictions: TensorLike, output: str) -> bool:
    """True when `predictions` (..., K) are sigmoid logits: `output="sigmoid"` or K = 1."""
    return check_output(output) == "sigmoid" or predictions.shape[-1] == 1


def tempered_log_sigmoids(logits: TensorLike, temperature: float = 1.0) -> TensorLike:
    """`(log sigmoid(z / T), log(1 - sigmoid(z / T)))`, both float32, elementwise."""
    scaled = ops.cast(logits, "float32") / temperature
    return ops.log_sigmoid(scaled), ops.log_sigmoid(-scaled)


def _weighted_log(probs, log_probs):
    """`p * log q` with 0 where p = 0, so a -inf log (a masked logit) adds 0, not nan."""
    return ops.where(probs > 0, probs * log_probs, 0.0)


def bernoulli_kl_from_logits(
    teacher_logits: TensorLike,
    student_logits: TensorLike,
    temperature: float = 1.0,
) -> TensorLike:
    """Per-label `KL(Bern(s_t) || Bern(s_s))` with `s = sigmoid(z / T)`, shape (..., L).

    `s_t (log s_t - log s_s) + (1 - s_t)(log(1 - s_t) - log(1 - s_s))`, from
    `log_sigmoid`; a teacher probability of exactly 0 or 1 contributes its limit 0.
    """
    teacher_log_pos, teacher_log_neg = tempered_log_sigmoids(teacher_logits, temperature)
    student_log_pos, student_log_neg = tempered_log_sigmoids(student_logits, temperature)
    teacher_pos, teacher_neg = ops.exp(teacher_log_pos), ops.exp(teacher_log_neg)
    return ops.where(
        teacher_pos > 0, teacher_pos * (teacher_log_pos - student_log_pos), 0.0
    ) + ops.where(teacher_neg > 0, teacher_neg * (teacher_log_neg - student_log_neg), 0.0)


def binary_distillation_loss(
    teacher_logits: TensorLike,
    student_logits: TensorLike,
    temperature: float = 4.0,
    divergence: str = "kl",
    beta: float = 0.5,
) -> TensorLike:
    """`T^2 * mean_l D(Bern(sigmoid(t_l / T)) || Bern(sigmoid(s_l / T)))`, shape (...,).

    The binary (L = 1) and multi-label twin of Hinton's soft-target loss; with the
    forward KL its gradient with respect to each student logit is
    `T * (sigmoid(s / T) - sigmoid(t / T)) / L`. The other divergences ("reverse_kl",
    "jsd") are taken on the exact two-class form of each label, the softmax over
    `[0, z]`, whose tempered distribution is `[sigmoid(-z / T), sigmoid(z / T)]`.
    """
    if divergence == "kl":
        per_label = bernoulli_kl_from_logits(teacher_logits, student_logits, temperature)
    else:
        # Imported here: `_divergences` sits beside this module in the losses package.
        from keras_kd.losses._divergences import divergence_from_logits

        per_label = divergence_from_logits(
            two_class_logits(teacher_logits),
            two_class_logits(student_logits),
            temperature,
            divergence,
            beta,
        )
    return (temperature**2) * ops.mean(per_label, axis=-1)


def two_class_logits(logits: TensorLike) -> TensorLike:
    """`[0, z]` for each logit z, shape (..., L, 2): the binary logit as a 2-class softmax."""
    logits = ops.cast(logits, "float32")
    return ops.stack([ops.zeros_like(logits), logits], axis=-1)


def binary_logit_matching_loss(
    teacher_logits: TensorLike,
    student_logits: TensorLike,
) -> TensorLike:
    """`mean_l (s_l - t_l)^2 / 8`, the high-temperature limit of the binary KD loss.

    A binary logit is already the difference of the two-class logits `[0, z]`, so no
    centring is needed: the centred pair is `[-z/2, z/2]` and the multi-class formula
    `0.5 * mean_k (centred difference)^2` over its two entries gives `(s - t)^2 / 8`,
    which is also the limit of `T^2 * KL` as T -> inf.
    """
    teacher_logits = ops.cast(teacher_logits, "float32")
    student_logits = ops.cast(student_logits, "float32")
    return ops.mean(ops.square(student_logits - teacher_logits), axis=-1) / 8.0


def binary_cross_entropy(
    targets: TensorLike,
    y_pred: TensorLike,
    from_logits: bool = True,
) -> TensorLike:
    """`-mean_l [q log p + (1 - q) log(1 - p)]` per example, as Keras' `binary_crossentropy`.

    From logits in log space; from probabilities clipped to [1e-7, 1 - 1e-7] exactly
    as Keras does. `targets` must already have `y_pred`'s shape.
    """
    targets = ops.cast(targets, "float32")
    if from_logits:
        log_pos, log_neg = tempered_log_sigmoids(y_pred)
    else:
        epsilon = keras.config.epsilon()
        probs = ops.clip(ops.cast(y_pred, "float32"), epsilon, 1.0 - epsilon)
        log_pos, log_neg = ops.log(probs), ops.log(1.0 - probs)
    per_label = _weighted_log(targets, log_pos) + _weighted_log(1.0 - targets, log_neg)
    return -ops.mean(per_label, axis=-1)


def binary_label_smoothing_loss(
    targets: TensorLike,
    y_pred: TensorLike,
    smoothing: float = 0.1,
    from_logits: bool = True,
) -> TensorLike:
    """Binary cross-entropy against `q (1 - eps) + eps / 2`, per example (mean over labels).

    Equals Keras' `BinaryCrossentropy(label_smoothing=eps, from_logits=...)`.
    """
    smoothed = ops.cast(targets, "float32") * (1.0 - smoothing) + 0.5 * smoothing
    return binary_cross_entropy(smoothed, y_pred, from_logits)


def binary_ensemble_logits(
    teacher_logits_list: Sequence[TensorLike],
    temperature: float,
) -> TensorLike:
    """Logits whose `sigmoid(. / T)` is the mean of the members' `sigmoid(z_m / T)`.

    `T * (log mean_m sigmoid(z_m / T) - log mean_m (1 - sigmoid(z_m / T)))`, both means
    by `logsumexp` of `log_sigmoid` (the `log M` cancels).
    """
    pairs = [tempered_log_sigmoids(logits, temperature) for logits in teacher_logits_list]
    log_pos = ops.logsumexp(ops.stack([pos for pos, _ in pairs], axis=0), axis=0)
    log_neg = ops.logsumexp(ops.stack([neg for _, neg in pairs], axis=0), axis=0)
    return temperature * (log_pos - log_neg)


def binary_targets(y_true: TensorLike, y_pred: TensorLike) -> TensorLike:
    """Labels as float32 targets of `y_pred`'s shape (..., L), values in [0, 1].

    `y_true` may have `y_pred`'s shape, or for one output (L = 1) lack its trailing axis.
    Eager values outside [0, 1] (or non-finite) are rejected: they are no probability of
    a positive label.
    """
    label_shape, prediction_shape = tuple(y_true.shape), tuple(y_pred.shape)
    if len(label_shape) == len(prediction_shape) - 1 and prediction_shape[-1] == 1:
        y_true = ops.expand_dims(y_true, -1)
        label_shape = tuple(y_true.shape)
    if len(label_shape) != len(prediction_shape) or any(
        a is not None and b is not None and a != b for a, b in zip(label_shape, prediction_shape)
    ):
        raise ValueError(
            f"Binary/multi-label `y_true` must have the predictions' shape "
            f"{prediction_shape} (or {prediction_shape[:-1]} for one output), got labels "
            f"of shape {label_shape}. Labels are 0/1 per output (multi-hot), not class indices."
        )
    _validation.check_unit_interval_values(y_true, "y_true", "binary/multi-label targets")
    return ops.cast(y_true, "float32")
