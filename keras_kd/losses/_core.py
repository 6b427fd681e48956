"""The building blocks every loss shares: tempered log-softmax, KL from
log-probabilities, cross-entropy, and the shape check between teacher and student.

All arithmetic is float32 and in log space (`log_softmax`, never `log(softmax)`).
"""

import numbers

import keras
from keras import ops

from keras_kd import _labels
from keras_kd import _validation

PACKAGE = "keras_kd"


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


def cross_entropy(y_true, logits):
    """`H(y, softmax(z)) = -sum_k y_k log softmax(z)_k` from logits, float32.

    `y_true` may be class indices or (soft) targets of shape (..., K).
    """
    targets = _labels.to_one_hot(y_true, logits)
    return -ops.sum(targets * tempered_log_softmax(logits), axis=-1)


def log_probs(y_pred, from_logits):
    if from_logits:
        return tempered_log_softmax(y_pred)
    probs = ops.cast(y_pred, "float32")
    probs = probs / ops.sum(probs, axis=-1, keepdims=True)
    epsilon = keras.config.epsilon()
    return ops.log(ops.clip(probs, epsilon, 1.0 - epsilon))


def check_same_shape(a, b, name_a, name_b):
    shape_a, shape_b = tuple(a.shape), tuple(b.shape)
    if len(shape_a) != len(shape_b) or any(
        x is not None and y is not None and x != y for x, y in zip(shape_a, shape_b)
    ):
        raise ValueError(
            f"`{name_a}` and `{name_b}` must have the same shape, got {shape_a} and "
            f"{shape_b}. Teacher and student must predict the same classes."
        )


