"""keras_kd under `mixed_float16` and `mixed_bfloat16`.

Checks that with float16/bfloat16 student logits as large as 1e4 and temperatures
from 1 to 100 the losses are computed in float32 (their values match a float64 NumPy
reference on the same rounded logits), the loss and its gradients are finite, the
Distiller scales the loss under `mixed_float16` (one SGD step equals the NumPy
update: a missing or doubled loss scale would be off by 2^15), and a float32 teacher
distils into a mixed-precision student. conftest.py restores the global policy after
every test; `policy` below also does, so this file stands alone.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_kd
from keras_kd import losses
from _numpy_reference import distillation_loss as _np_distillation
from _numpy_reference import log_softmax as _np_log_softmax

POLICIES = ["mixed_float16", "mixed_bfloat16"]
TEMPERATURES = [1.0, 4.0, 20.0, 100.0]
NUM_FEATURES = 5
NUM_CLASSES = 4
LOGIT_SCALE = 1e4


@pytest.fixture
def policy(request):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(request.param)
    yield request.param
    keras.config.set_dtype_policy(previous)


def _compute_dtype(policy_name):
    return "float16" if policy_name == "mixed_float16" else "bfloat16"


def _extreme_logits(dtype, seed, n=8):
    """Logits spread over [-1e4, 1e4], with exact +-1e4 entries, rounded to `dtype`."""
    rng = np.random.default_rng(seed)
    logits = rng.uniform(-LOGIT_SCALE, LOGIT_SCALE, size=(n, NUM_CLASSES))
    logits[0] = [LOGIT_SCALE, -LOGIT_SCALE, 0.0, LOGIT_SCALE / 2]
    logits[1] = [-LOGIT_SCALE, LOGIT_SCALE, LOGIT_SCALE, -LOGIT_SCALE]
    return tf.cast(tf.constant(logits, "float32"), dtype)


# ---------------------------------------------------------------------------
# The loss functions: float32 arithmetic, finite values and gradients
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_distillation_loss_is_float32_and_exact_on_extreme_low_precision_logits(
    dtype, temperature
):
    teacher = _extreme_logits(dtype, seed=0)
    student = tf.Variable(_extreme_logits(dtype, seed=1))
    with tf.GradientTape() as tape:
        per_example = losses.distillation_loss(teacher, student, temperature)
        loss = tf.reduce_mean(per_example)
    gradient = tape.gradient(loss, student)

    assert per_example.dtype == tf.float32
    assert losses.tempered_log_softmax(student, temperature).dtype == tf.float32
    # The reference sees the same rounded logits; float16 arithmetic inside the loss
    # would be off by ~1e-3 relative (and overflow exp at T = 1).
    teacher_values = teacher.numpy().astype(np.float64)
    student_values = student.numpy().astype(np.float64)
    expected = _np_distillation(teacher_values, student_values, temperature)
    np.testing.assert_allclose(per_example.numpy(), expected, rtol=2e-5, atol=1e-3)
    assert np.all(np.isfinite(per_example.numpy()))

    assert gradient.dtype == student.dtype
    gradient = tf.cast(gradient, tf.float64).numpy()
    assert np.all(np.isfinite(gradient))
    p_student = np.exp(_np_log_softmax(student_values / temperature))
    p_teacher = np.exp(_np_log_softmax(teacher_values / temperature))
    expected_gradient = temperature * (p_student - p_teacher) / len(student_values)
    # Rounded back to the variable's dtype (8 significant bits for bfloat16).
    np.testing.assert_allclose(gradient, expected_gradient, rtol=1e-2, atol=1e-2 * temperature)


@pytest.mark.parametrize(
    "loss",
    [
        keras_kd.LabelSmoothingLoss(0.1, from_logits=True),
        keras_kd.VirtualTeacherLoss(0.9, temperature=20.0, mode="paper"),
        keras_kd.VirtualTeacherLoss(0.9, temperature=20.0, mode="reference"),
        keras_kd.DistillationLoss(temperature=100.0),
        keras_kd.LogitMatchingLoss(),
    ],
    ids=lambda loss: f"{type(loss).__name__}-{getattr(loss, 'mode', '')}",
)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_every_loss_class_is_finite_float32_on_extreme_low_precision_logits(dtype, loss):
    student = tf.Variable(_extreme_logits(dtype, seed=1))
    if isinstance(loss, (keras_kd.DistillationLoss, keras_kd.LogitMatchingLoss)):
        targets = _extreme_logits(dtype, seed=0)
    else:
        targets = tf.constant([0, 1, 2, 3, 0, 1, 2, 3])
    with tf.GradientTape() as tape:
        value = loss(targets, student)
    gradient = tape.gradient(value, student)
    assert value.dtype == tf.float32
    assert np.isfinite(value.numpy())
    assert np.all(np.isfinite(tf.cast(gradient, tf.float32).numpy()))


# ---------------------------------------------------------------------------
# The Distiller under a mixed policy
# ---------------------------------------------------------------------------


def _scaled_linear(scale, seed, num_features=NUM_FEATURES, dtype=None):
    """A linear classifier whose kernel is `scale` times a fixed random matrix."""
    layer_kwargs = {} if dtype is None else {"dtype": dtype}
    model = keras.Sequential(
        [keras.Input((num_features,)), keras.layers.Dense(NUM_CLASSES, **layer_kwargs)]
    )
    rng = np.random.default_rng(seed)
    kernel = scale * rng.uniform(-1.0, 1.0, size=(num_features, NUM_CLASSES))
    model.set_weights([kernel.astype("float32"), np.zeros(NUM_CLASSES, "float32")])
    return model


def _inputs(n=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, size=(n, NUM_FEATURES)).astype("float32")
    return x, rng.integers(0, NUM_CLASSES, size=n).astype("int32")


def _float32_teacher_and_mixed_student(policy_name, teacher_scale, student_scale):
    keras.config.set_dtype_policy("float32")
    teacher = _scaled_linear(teacher_scale, seed=1)
    keras.config.set_dtype_policy(policy_name)
    student = _scaled_linear(student_scale, seed=2)
    return teacher, student


@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("policy", POLICIES, indirect=True)
def test_distiller_objective_and_gradients_are_finite_with_extreme_logits(policy, temperature):
    # Kernels of 1e4 / NUM_FEATURES give logits up to ~1e4 on inputs in [-1, 1].
    scale = LOGIT_SCALE / NUM_FEATURES
    teacher, student = _float32_teacher_and_mixed_student(policy, scale, scale)
    distiller = keras_kd.Distiller(teacher, student, temperature=temperature, alpha=0.5)
    distiller.compile(
        optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    x, labels = _inputs()
    with tf.GradientTape() as tape:
        student_logits = distiller(x, training=True)
        loss = distiller.compute_loss(x, labels, student_logits, training=True)
    gradients = tape.gradient(loss, distiller.trainable_weights)

    assert student_logits.dtype == _compute_dtype(policy)
    assert np.abs(student_logits.numpy().astype(np.float32)).max() > 0.3 * LOGIT_SCALE
    assert loss.dtype == tf.float32 and np.isfinite(loss.numpy())
    assert len(gradients) == 2  # the student's kernel and bias only; the teacher is frozen
    for gradient in gradients:
        assert np.all(np.isfinite(gradient.numpy()))


@pytest.mark.parametrize("policy", POLICIES, indirect=True)
def test_fit_with_a_float32_teacher_and_mixed_student(policy):
    scale = LOGIT_SCALE / NUM_FEATURES
    teacher, student = _float32_teacher_and_mixed_student(policy, scale, 1.0)
    teacher_weights = [w.copy() for w in teacher.get_weights()]
    distiller = keras_kd.Distiller(teacher, student, temperature=20.0, alpha=0.9)
    distiller.compile(
        optimizer=keras.optimizers.SGD(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    if policy == "mixed_float16":
        assert isinstance(distiller.optimizer, keras.optimizers.LossScaleOptimizer)
    x, labels = _inputs(32)
    history = distiller.fit(x, labels, batch_size=8, epochs=2, verbose=0)

    assert teacher.compute_dtype == "float32" and student.compute_dtype == _compute_dtype(policy)
    for key in ("loss", "student_loss", "distillation_loss"):
        assert np.all(np.isfinite(history.history[key])), key
    # The soft term falls: the student learns from the teacher's 1e4-scale logits.
    assert history.history["distillation_loss"][-1] < history.history["distillation_loss"][0]
    for weight in student.weights:
        assert weight.dtype == "float32"  # mixed precision keeps float32 variables
        assert np.all(np.isfinite(weight.numpy()))
    for before, after in zip(teacher_weights, teacher.get_weights()):
        np.testing.assert_array_equal(before, after)


@pytest.mark.parametrize("policy", ["mixed_float16"], indirect=True)
def test_one_step_under_loss_scaling_equals_the_numpy_update(policy):
    """SGD step of a linear student against the float64 gradient of the objective."""
    temperature, alpha, learning_rate = 4.0, 0.7, 0.5
    teacher, student = _float32_teacher_and_mixed_student(policy, 3.0, 2.0)
    distiller = keras_kd.Distiller(teacher, student, temperature=temperature, alpha=alpha)
    distiller.compile(
        optimizer=keras.optimizers.SGD(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    optimizer = distiller.optimizer
    assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    kernel, bias = (w.astype(np.float64) for w in student.get_weights())
    teacher_kernel, _ = (w.astype(np.float64) for w in teacher.get_weights())
    x, labels = _inputs(16)
    distiller.fit(x, labels, batch_size=16, epochs=1, shuffle=False, verbose=0)

    # The step was applied (not skipped for overflow) at the initial scale 2^15.
    assert int(optimizer.iterations) == 1
    assert float(optimizer.dynamic_scale.numpy()) == 2.0**15
    n = len(x)
    student_logits = x @ kernel + bias
    teacher_logits = x @ teacher_kernel
    p = np.exp(_np_log_softmax(student_logits))
    p_s = np.exp(_np_log_softmax(student_logits / temperature))
    p_t = np.exp(_np_log_softmax(teacher_logits / temperature))
    hard_gradient = p - np.eye(NUM_CLASSES)[labels]
    d_logits = ((1 - alpha) * hard_gradient + alpha * temperature * (p_s - p_t)) / n
    expected_kernel = kernel - learning_rate * x.T @ d_logits
    expected_bias = bias - learning_rate * d_logits.sum(axis=0)
    new_kernel, new_bias = student.get_weights()
    # float16 forward and backward: about 3 significant digits.
    step = np.abs(expected_kernel - kernel).max()
    np.testing.assert_allclose(new_kernel, expected_kernel, atol=2e-2 * step)
    np.testing.assert_allclose(new_bias, expected_bias, atol=2e-2 * step)


def test_distiller_follows_a_float16_student_not_the_global_policy(tmp_path):
    """A student built under mixed_float16 keeps its loss scaling after a policy reset."""
    keras.config.set_dtype_policy("mixed_float16")
    student = _scaled_linear(1.0, seed=2)
    keras.config.set_dtype_policy("float32")
    teacher = _scaled_linear(1.0, seed=1)
    distiller = keras_kd.Distiller(teacher, student)
    distiller.compile(
        optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    assert distiller.dtype_policy.name == "mixed_float16"
    assert isinstance(distiller.optimizer, keras.optimizers.LossScaleOptimizer)

    x, labels = _inputs(8)
    distiller.fit(x, labels, epochs=1, verbose=0)
    path = str(tmp_path / "distiller.keras")
    distiller.save(path)
    reloaded = keras.saving.load_model(path)
    assert isinstance(reloaded.optimizer, keras.optimizers.LossScaleOptimizer)

    # A float32 student under a float32 policy gets no loss scaling, as in Keras.
    plain = keras_kd.Distiller(_scaled_linear(1.0, seed=1), _scaled_linear(1.0, seed=2))
    plain.compile(
        optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    assert not isinstance(plain.optimizer, keras.optimizers.LossScaleOptimizer)
