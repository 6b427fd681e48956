"""Forward KL, reverse KL and the generalized JSD against float64 NumPy: values,
gradients (central finite differences of the NumPy reference), token-level masks,
serialization and bad arguments.

The references are written from the formulas (GKD, Agarwal et al. ICLR 2024, eq. 6;
MiniLLM, Gu et al. ICLR 2024), never by calling keras_kd.
"""

import keras
import numpy as np
import pytest
from _numpy_reference import log_softmax as np_log_softmax
import tensorflow as tf

from keras_kd import losses
from keras_kd.losses import DistillationLoss

TEMPERATURES = (1.0, 2.0)


def np_kl(p, q):
    """KL(p || q) from probabilities, with 0 log 0 = 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * (np.log(p) - np.log(q)), 0.0)
    return terms.sum(axis=-1)


def np_divergence(teacher_logits, student_logits, temperature, divergence, beta=0.5):
    """T^2 D(p_t, p_s) per position, with plain probabilities in float64."""
    p_t = np.exp(np_log_softmax(np.asarray(teacher_logits, np.float64) / temperature))
    p_s = np.exp(np_log_softmax(np.asarray(student_logits, np.float64) / temperature))
    if divergence == "kl":
        value = np_kl(p_t, p_s)
    elif divergence == "reverse_kl":
        value = np_kl(p_s, p_t)
    else:
        mixture = beta * p_t + (1 - beta) * p_s
        value = beta * np_kl(p_t, mixture) + (1 - beta) * np_kl(p_s, mixture)
    return temperature**2 * value


def np_gradient(function, student_logits, step=1e-6):
    """d sum(function(s)) / d s by central differences, float64."""
    student_logits = np.asarray(student_logits, np.float64)
    gradient = np.zeros_like(student_logits)
    for index in np.ndindex(student_logits.shape):
        up, down = student_logits.copy(), student_logits.copy()
        up[index] += step
        down[index] -= step
        gradient[index] = (function(up).sum() - function(down).sum()) / (2 * step)
    return gradient


def _logits(seed, shape, scale=3.0):
    return (np.random.default_rng(seed).normal(size=shape) * scale).astype("float32")


CASES = [("kl", 0.5), ("reverse_kl", 0.5), ("jsd", 0.5), ("jsd", 0.1), ("jsd", 0.9)]


@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("divergence,beta", CASES)
def test_values_and_gradients_match_numpy(divergence, beta, temperature):
    teacher, student = _logits(0, (2, 3, 7)), _logits(1, (2, 3, 7))
    student_variable = tf.Variable(student)
    with tf.GradientTape() as tape:
        value = losses.distillation_loss(
            teacher, student_variable, temperature, divergence=divergence, beta=beta
        )
        total = tf.reduce_sum(value)
    gradient = tape.gradient(total, student_variable).numpy()

    expected = np_divergence(teacher, student, temperature, divergence, beta)
    np.testing.assert_allclose(value.numpy(), expected, rtol=1e-4, atol=1e-6)
    assert value.shape == (2, 3)  # one value per token
    expected_gradient = np_gradient(
        lambda s: np_divergence(teacher, s, temperature, divergence, beta), student
    )
    np.testing.assert_allclose(gradient, expected_gradient, rtol=1e-3, atol=1e-5)


def test_symmetric_jsd_is_symmetric_and_bounded_by_log_2():
    teacher, student = _logits(2, (5, 9), scale=10.0), _logits(3, (5, 9), scale=10.0)
    forward = losses.distillation_loss(teacher, student, 1.0, divergence="jsd")
    backward = losses.distillation_loss(student, teacher, 1.0, divergence="jsd")
    np.testing.assert_allclose(forward, backward, rtol=1e-5, atol=1e-6)
    assert np.all(np.asarray(forward) <= np.log(2) + 1e-6)


def test_forward_kl_is_the_default_and_unchanged():
    teacher, student = _logits(4, (4, 6)), _logits(5, (4, 6))
    np.testing.assert_allclose(
        losses.distillation_loss(teacher, student, 2.0),
        np_divergence(teacher, student, 2.0, "kl"),
        rtol=1e-5,
    )


def test_jsd_is_finite_against_a_teacher_with_zero_probabilities():
    # A renormalized top-k teacher: -inf logits outside its top classes.
    teacher = np.array([[3.0, 1.0, -np.inf, -np.inf]], np.float32)
    student = _logits(6, (1, 4))
    student_variable = tf.Variable(student)
    with tf.GradientTape() as tape:
        value = losses.distillation_loss(teacher, student_variable, 2.0, divergence="jsd", beta=0.3)
    gradient = tape.gradient(value, student_variable).numpy()
    np.testing.assert_allclose(
        value.numpy(), np_divergence(teacher, student, 2.0, "jsd", 0.3), rtol=1e-5
    )
    assert np.all(np.isfinite(gradient))


@pytest.mark.parametrize("divergence", ["kl", "reverse_kl", "jsd"])
@pytest.mark.parametrize(
    "reduction", ["mean_with_sample_weight", "sum_over_batch_size", "sum", "none"]
)
def test_token_level_masked_reduction_matches_numpy(divergence, reduction):
    # (batch, sequence, vocabulary) logits; the padding mask as sample_weight.
    teacher, student = _logits(7, (3, 5, 11)), _logits(8, (3, 5, 11))
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], np.float32)
    loss = DistillationLoss(temperature=2.0, divergence=divergence, beta=0.4, reduction=reduction)
    value = np.asarray(loss(teacher, student, sample_weight=mask))
    per_token = np_divergence(teacher, student, 2.0, divergence, 0.4) * mask
    expected = {
        "mean_with_sample_weight": per_token.sum() / mask.sum(),  # per real token
        "sum_over_batch_size": per_token.sum() / mask.size,  # per position, padding too
        "sum": per_token.sum(),
        "none": per_token,
    }[reduction]
    np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-6)


def test_distillation_loss_config_round_trip():
    loss = DistillationLoss(temperature=2.0, divergence="jsd", beta=0.25)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert (restored.temperature, restored.divergence, restored.beta) == (2.0, "jsd", 0.25)
    teacher, student = _logits(9, (4, 5)), _logits(10, (4, 5))
    np.testing.assert_allclose(restored(teacher, student), loss(teacher, student))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"divergence": "js"}, "`divergence` must be one of"),
        ({"divergence": "jsd", "beta": 0.0}, r"`beta` must be in \(0.0, 1.0\), got 0.0"),
        ({"divergence": "jsd", "beta": 1.0}, r"`beta` must be in \(0.0, 1.0\), got 1.0"),
        ({"beta": "half"}, "`beta` must be a number"),
    ],
)
def test_bad_divergence_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DistillationLoss(**kwargs)
    with pytest.raises(ValueError, match=message):
        losses.distillation_loss(_logits(0, (1, 3)), _logits(1, (1, 3)), 1.0, **kwargs)
