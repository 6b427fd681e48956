"""The building blocks every loss shares: tempered log-softmax, KL from
log-probabilities, cross-entropy, and the shape check between teacher and student.

All arithmetic is float32 and in log space (`log_softmax`, never `log(softmax)`).
"""

from __future__ import annotations

import numbers
from typing import Optional

import keras
from keras import ops

from keras_kd import _labels
from keras_kd import _validation
from keras_kd._types import TensorLike

PACKAGE = "keras_kd"


def tempered_log_softmax(logits: TensorLike, temperature: float = 1.0) -> TensorLike:
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


def kl_divergence_from_log_probs(target_log_probs: TensorLike, log_probs: TensorLike) -> TensorLike:
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
    # `where` over the whole product keeps -inf - (-inf) = nan and 0 * inf = nan out of
    # the sum for zero-probability targets (a class both models mask with -inf).
    return ops.sum(
        ops.where(target_probs > 0, target_probs * (target_log_probs - log_probs), 0.0),
        axis=-1,
    )


def cross_entropy(y_true: TensorLike, logits: TensorLike) -> TensorLike:
    """`H(y, softmax(z)) = -sum_k y_k log softmax(z)_k` from logits, float32.

    `y_true` may be class indices or (soft) targets of shape (..., K).
    """
    targets = _labels.to_one_hot(y_true, logits)
    return -ops.sum(weighted_log_probs(targets, tempered_log_softmax(logits)), axis=-1)


def weighted_log_probs(targets: TensorLike, log_probs: TensorLike) -> TensorLike:
    """`q * log p`, with 0 where q = 0: a masked class (`log p = -inf`) adds 0, not nan.

    Keras' `SparseCategoricalCrossentropy` gives the same finite value on masked logits;
    `CategoricalCrossentropy` gives nan there.
    """
    return ops.where(targets > 0, targets * log_probs, 0.0)


def log_probs(y_pred: TensorLike, from_logits: bool) -> TensorLike:
    """`log p` from logits (`log_softmax`) or from probabilities, as Keras reads them.

    Probabilities are normalised and clipped to [1e-7, 1 - 1e-7] before the log, as
    Keras' categorical cross-entropy does.
    """
    if from_logits:
        return tempered_log_softmax(y_pred)
    probs = ops.cast(y_pred, "float32")
    probs = probs / ops.sum(probs, axis=-1, keepdims=True)
    epsilon = keras.config.epsilon()
    return ops.log(ops.clip(probs, epsilon, 1.0 - epsilon))


def check_same_shape(a: TensorLike, b: TensorLike, name_a: str, name_b: str) -> None:
    shape_a, shape_b = tuple(a.shape), tuple(b.shape)
    if len(shape_a) != len(shape_b) or any(
        x is not None and y is not None and x != y for x, y in zip(shape_a, shape_b)
    ):
        raise ValueError(
            f"`{name_a}` and `{name_b}` must have the same shape, got {shape_a} and "
            f"{shape_b}. Teacher and student must predict the same classes."
        )




class CheckedLoss(keras.losses.Loss):
    """A `keras.losses.Loss` that checks labels and weights before Keras converts them.

    String labels, and NaN, infinite, negative or wrongly shaped `sample_weight`, raise
    a `ValueError` naming the argument; Keras would otherwise fail inside a cast or
    silently weight the loss wrongly. Values are checked when known without a device
    sync (NumPy inputs, eager tensors), shapes always.
    """

    def __call__(
        self,
        y_true: TensorLike,
        y_pred: TensorLike,
        sample_weight: Optional[TensorLike] = None,
    ) -> TensorLike:
        _validation.check_numeric_labels(y_true)
        if hasattr(y_pred, "shape"):
            _validation.check_sample_weight(sample_weight, y_pred)
        return super().__call__(y_true, y_pred, sample_weight=sample_weight)


def check_teacher_logits(
    teacher_logits: TensorLike,
    output: str = "softmax",
    name: str = "teacher_logits",
) -> TensorLike:
    """Returns `teacher_logits`, or raises when they are probabilities, not logits.

    Eager values (NumPy, eager tensors): a `ValueError` saying what was found. Inside
    a compiled TensorFlow `fit` (no XLA), the same test runs in the graph as an
    assertion (`InvalidArgumentError` with this message), at the cost of one pass
    over the (batch, K) targets; under XLA or a JAX `jit` graph it cannot raise and
    is skipped: check `teacher.predict(x)` once, or use the `Distiller`, which checks
    its first batch before training.
    """
    hint = (
        "Pass logits: take `keras.ops.log(p)` of softmax probabilities (exact: it has the "
        "same tempered softmax), `log(p) - log(1 - p)` of sigmoid ones, or build the "
        "teacher's last layer with activation=None."
    )
    values = _validation.eager_values(teacher_logits)
    if values is not None:
        if _validation.is_string_array(values):
            raise ValueError(
                f"`{name}` must be numeric logits, got strings such as {values.flat[0]!r}."
            )
        found = _validation.probability_form(values, output)
        if found:
            raise ValueError(f"`{name}` look like {found}, not logits. {hint}")
        return teacher_logits
    if keras.backend.backend() == "tensorflow":
        message = f"`{name}` look like probabilities, not logits. {hint}"
        return _graph_assert_not_probabilities(teacher_logits, output, message)
    return teacher_logits


def _graph_assert_not_probabilities(logits, output, message):
    """`logits`, made to depend on the assertion so that no update runs before it."""
    import tensorflow as tf

    values = tf.cast(logits, tf.float32)
    in_unit_interval = tf.reduce_all((values >= 0.0) & (values <= 1.0))
    if output == "sigmoid" or values.shape[-1] == 1:
        spread = tf.reduce_max(values) - tf.reduce_min(values)
        looks = in_unit_interval & (tf.size(values) >= 16) & (spread > 0.0)
    else:
        row_sums = tf.reduce_sum(values, axis=-1)
        looks = in_unit_interval & tf.reduce_all(tf.abs(row_sums - 1.0) <= 1e-3)
    with tf.control_dependencies([tf.debugging.Assert(tf.logical_not(looks), [message])]):
        return tf.identity(logits)
