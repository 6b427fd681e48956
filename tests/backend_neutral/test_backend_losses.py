"""Every loss on the backend of this process: values and autodiff gradients vs NumPy.

Runs under TensorFlow in the ordinary suite and under JAX and PyTorch from
tests/test_backends.py. The gradients come from each backend's own autodiff (a
`tf.GradientTape`, `jax.grad`, `torch.autograd`), which is where the backends differ:
a `where` or a `log` that is fine forwards can give NaN gradients on one of them.
"""

import keras
import numpy as np
import pytest
from keras import ops

import _backend_reference as ref
from keras_kd import losses

TEMPERATURE = ref.TEMPERATURE


def backend_gradient(function, value):
    """d function(value) / d value by the current backend's autodiff, as NumPy."""
    backend = keras.backend.backend()
    value = np.asarray(value, dtype=np.float32)
    if backend == "tensorflow":
        import tensorflow as tf

        variable = tf.Variable(value)
        with tf.GradientTape() as tape:
            result = function(variable)
        return tape.gradient(result, variable).numpy()
    if backend == "jax":
        import jax

        return np.asarray(jax.grad(function)(jax.numpy.asarray(value)))
    if backend == "torch":
        import torch

        tensor = torch.tensor(value, requires_grad=True)
        function(tensor).backward()
        return tensor.grad.cpu().numpy()
    raise NotImplementedError(backend)


def numeric_gradient(function, value, step=1e-6):
    """Central differences of a NumPy float64 function of an array."""
    value = np.asarray(value, dtype=np.float64)
    gradient = np.zeros_like(value)
    for index in np.ndindex(value.shape):
        shift = np.zeros_like(value)
        shift[index] = step
        gradient[index] = (function(value + shift) - function(value - shift)) / (2 * step)
    return gradient


@pytest.fixture(scope="module")
def arrays():
    values = ref.inputs()
    # A few examples keep the central differences cheap.
    return {name: value[:6] for name, value in values.items() if value.ndim and len(value) == 64}


# (keras_kd function of (teacher, labels, student), NumPy reference of the same)
LOSSES = {
    "distillation_loss": (
        lambda t, y, s: losses.distillation_loss(t, s, TEMPERATURE),
        lambda t, y, s: ref.kd_loss(t, s, TEMPERATURE),
    ),
    "label_smoothing_loss": (
        lambda t, y, s: losses.label_smoothing_loss(y, s, 0.1),
        lambda t, y, s: ref.label_smoothing(y, s, 0.1),
    ),
    "virtual_teacher_loss_paper": (
        lambda t, y, s: losses.virtual_teacher_loss(y, s, 0.9, 20.0, alpha=0.5),
        lambda t, y, s: ref.virtual_teacher_paper(y, s, 0.9, 20.0, 0.5),
    ),
    "virtual_teacher_loss_reference": (
        lambda t, y, s: losses.virtual_teacher_loss(
            y, s, 0.99, 20.0, alpha=0.1, mode="reference", multiplier=100.0
        ),
        lambda t, y, s: ref.virtual_teacher_reference(y, s, 0.99, 20.0, 0.1, 100.0),
    ),
    "logit_matching_loss": (
        lambda t, y, s: losses.logit_matching_loss(t, s),
        lambda t, y, s: ref.logit_matching(t, s),
    ),
    "cross_entropy": (
        lambda t, y, s: losses.cross_entropy(y, s),
        lambda t, y, s: ref.cross_entropy(y, s),
    ),
    "decoupled_distillation_loss": (
        lambda t, y, s: losses.decoupled_distillation_loss(y, t, s, TEMPERATURE, 1.0, 8.0),
        lambda t, y, s: ref.dkd_loss(y, t, s, TEMPERATURE, 1.0, 8.0),
    ),
    "dist_loss": (
        lambda t, y, s: losses.dist_loss(t, s, TEMPERATURE, beta=1.0, gamma=2.0),
        lambda t, y, s: ref.dist_loss(t, s, TEMPERATURE, 1.0, 2.0),
    ),
    "distillation_loss_reverse_kl": (
        lambda t, y, s: losses.distillation_loss(t, s, TEMPERATURE, divergence="reverse_kl"),
        lambda t, y, s: ref.divergence_loss(t, s, TEMPERATURE, "reverse_kl"),
    ),
    "distillation_loss_jsd": (
        lambda t, y, s: losses.distillation_loss(t, s, TEMPERATURE, divergence="jsd", beta=0.3),
        lambda t, y, s: ref.divergence_loss(t, s, TEMPERATURE, "jsd", 0.3),
    ),
    "distillation_loss_standardized": (
        lambda t, y, s: losses.distillation_loss(t, s, TEMPERATURE, standardize=True),
        lambda t, y, s: ref.kd_loss(ref.standardize(t), ref.standardize(s), TEMPERATURE),
    ),
}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_value_and_gradient_match_numpy(name, arrays):
    function, reference = LOSSES[name]
    teacher, labels, student = arrays["teacher_logits"], arrays["labels"], arrays["student_logits"]
    value = ops.convert_to_numpy(function(teacher, labels, student))
    assert value.dtype == np.float32
    # At T = 20 the KL is ~1e-3, a difference of float32 log-probabilities, and T^2 =
    # 400 scales its rounding (~1e-7) up to ~4e-5.
    rtol = 5e-4 if name.startswith("virtual_teacher_loss_paper") else 5e-5
    np.testing.assert_allclose(value, reference(teacher, labels, student), rtol=rtol, atol=5e-6)

    gradient = backend_gradient(lambda s: ops.sum(function(teacher, labels, s)), student)
    expected = numeric_gradient(lambda s: np.sum(reference(teacher, labels, s)), student)
    np.testing.assert_allclose(gradient, expected, rtol=1e-4, atol=1e-5)


def test_distillation_gradient_is_t_times_the_softmax_difference(arrays):
    """Hinton et al.'s closed form: d(T^2 KL)/dz_s = T (softmax(z_s/T) - softmax(z_t/T))."""
    teacher, student = arrays["teacher_logits"], arrays["student_logits"]
    gradient = backend_gradient(
        lambda s: ops.sum(losses.distillation_loss(teacher, s, TEMPERATURE)), student
    )
    expected = ref.kd_gradient(teacher, student, TEMPERATURE)
    np.testing.assert_allclose(gradient, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("divergence", ["kl", "reverse_kl", "jsd"])
def test_divergence_gradients_for_both_logits_match_numpy_with_a_masked_class(divergence, arrays):
    """The written-out gradients (`ops.custom_gradient`), teacher side included.

    Class 0 is masked with `-inf` in both logits, as a padded vocabulary entry is: the
    value and both gradients stay finite, and the masked class gets gradient 0.
    """
    teacher = arrays["teacher_logits"].astype(np.float32).copy()
    student = arrays["student_logits"].astype(np.float32).copy()
    teacher[:, 0] = student[:, 0] = -np.inf

    def keras_kd_loss(t, s):
        return losses.distillation_loss(t, s, TEMPERATURE, divergence=divergence, beta=0.3)

    def numpy_loss(t, s):
        return ref.divergence_loss(t, s, TEMPERATURE, divergence, 0.3)

    value = ops.convert_to_numpy(keras_kd_loss(teacher, student))
    np.testing.assert_allclose(value, numpy_loss(teacher, student), rtol=5e-5, atol=5e-6)
    student_gradient = backend_gradient(lambda s: ops.sum(keras_kd_loss(teacher, s)), student)
    teacher_gradient = backend_gradient(lambda t: ops.sum(keras_kd_loss(t, student)), teacher)
    for gradient, expected in (
        (student_gradient, numeric_gradient(lambda s: np.sum(numpy_loss(teacher, s)), student)),
        (teacher_gradient, numeric_gradient(lambda t: np.sum(numpy_loss(t, student)), teacher)),
    ):
        assert np.all(np.isfinite(gradient))
        np.testing.assert_array_equal(gradient[:, 0], 0.0)
        np.testing.assert_allclose(gradient, expected, rtol=1e-4, atol=1e-5)


def test_extreme_and_float16_logits_give_finite_float32_values_and_gradients(arrays):
    """Log-space, unclipped: logits of 1e4 (and float16 inputs) stay finite everywhere."""
    teacher = arrays["teacher_logits"] * 3e3
    student = arrays["student_logits"] * -3e3
    gradient = backend_gradient(
        lambda s: ops.sum(losses.distillation_loss(teacher, s, TEMPERATURE)), student
    )
    assert np.all(np.isfinite(gradient))
    # A confidently wrong student still gets the full-size gradient T * (q - p).
    np.testing.assert_allclose(gradient, ref.kd_gradient(teacher, student, TEMPERATURE), atol=1e-5)

    half_teacher = ops.cast(arrays["teacher_logits"], "float16")
    half_student = ops.cast(arrays["student_logits"], "float16")
    value = losses.distillation_loss(half_teacher, half_student, TEMPERATURE)
    assert ops.convert_to_numpy(value).dtype == np.float32
    expected = ref.kd_loss(
        ops.convert_to_numpy(half_teacher).astype(np.float64),
        ops.convert_to_numpy(half_student).astype(np.float64),
        TEMPERATURE,
    )
    np.testing.assert_allclose(ops.convert_to_numpy(value), expected, rtol=1e-5, atol=1e-6)


def test_decoupled_loss_with_extreme_and_float16_logits_is_finite(arrays):
    """DKD masks the target class exactly: no NaN gradient from a masked -inf on any backend."""
    labels = arrays["labels"]
    teacher, student = arrays["teacher_logits"] * 3e3, arrays["student_logits"] * -3e3
    function = lambda s: ops.sum(  # noqa: E731
        losses.decoupled_distillation_loss(labels, teacher, s, TEMPERATURE)
    )
    gradient = backend_gradient(function, student)
    assert np.all(np.isfinite(gradient))
    value = ops.convert_to_numpy(function(student))
    expected = np.sum(ref.dkd_loss(labels, teacher, student, TEMPERATURE, 1.0, 8.0))
    np.testing.assert_allclose(value, expected, rtol=1e-5)
    half = [ops.cast(arrays[key], "float16") for key in ("teacher_logits", "student_logits")]
    value = losses.decoupled_distillation_loss(labels, *half, TEMPERATURE)
    assert ops.convert_to_numpy(value).dtype == np.float32


def test_ensemble_logits_fold_the_mean_of_tempered_softmaxes(arrays):
    members = [arrays["teacher_logits"], arrays["second_teacher_logits"]]
    folded = ops.convert_to_numpy(losses.ensemble_logits(members, TEMPERATURE))
    np.testing.assert_allclose(
        ref.softmax(folded, TEMPERATURE),
        np.mean([ref.softmax(z, TEMPERATURE) for z in members], axis=0),
        rtol=1e-5,
        atol=1e-7,
    )


def test_a_deserialized_loss_class_applies_sample_weights(arrays):
    """Found by its registered name, as `load_model` finds it; reduced as Keras reduces."""
    loss = keras.losses.get(
        {"class_name": "keras_kd>DistillationLoss", "config": {"temperature": 2.0}}
    )
    teacher, student, weights = (
        arrays["teacher_logits"], arrays["student_logits"], arrays["sample_weight"]
    )
    value = float(ops.convert_to_numpy(loss(teacher, student, weights)))
    expected = ref.weighted_batch_mean(ref.kd_loss(teacher, student, 2.0), weights)
    assert value == pytest.approx(expected, rel=1e-5)
