"""Binary (one logit) and multi-label (independent sigmoids) distillation and smoothing.

References: NumPy written here in float64, and Keras' own `BinaryCrossentropy`.
A single logit z is the two-class softmax over [0, z]: the tempered distribution is
sigmoid(z / T) and the soft term is T^2 times the Bernoulli KL (mean over labels).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_kd
from keras_kd import losses


def np_sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.asarray(z, np.float64)))


def np_log_sigmoid(z):
    return -np.logaddexp(0.0, -np.asarray(z, np.float64))


def np_binary_kd(teacher_logits, student_logits, temperature):
    """T^2 * mean over labels of KL(Bern(s_t) || Bern(s_s)), s = sigmoid(z / T).

    In float64 log space (1 - sigmoid(30) is not representable as a difference)."""
    t = np.asarray(teacher_logits, np.float64) / temperature
    s = np.asarray(student_logits, np.float64) / temperature
    log_p, log_not_p = np_log_sigmoid(t), np_log_sigmoid(-t)
    log_q, log_not_q = np_log_sigmoid(s), np_log_sigmoid(-s)
    kl = np.exp(log_p) * (log_p - log_q) + np.exp(log_not_p) * (log_not_p - log_not_q)
    return temperature**2 * kl.mean(axis=-1)


def float32_kl_atol(temperature):
    """Float32 rounding of log-sigmoids of size ~1, a few eps each, scaled by T^2."""
    return 4 * temperature**2 * float(np.finfo(np.float32).eps)


def np_binary_kd_grad(teacher_logits, student_logits, temperature, batch_size):
    """d mean_batch(loss) / d s = T (sigmoid(s / T) - sigmoid(t / T)) / (L * N)."""
    num_labels = np.shape(student_logits)[-1]
    p = np_sigmoid(np.asarray(teacher_logits, np.float64) / temperature)
    q = np_sigmoid(np.asarray(student_logits, np.float64) / temperature)
    return temperature * (q - p) / (num_labels * batch_size)


def value_and_grad(loss, y_true, y_pred, sample_weight=None):
    y_pred = tf.Variable(np.asarray(y_pred, np.float32))
    with tf.GradientTape() as tape:
        value = loss(y_true, y_pred, sample_weight=sample_weight)
    return float(value), tape.gradient(value, y_pred).numpy().astype(np.float64)


def logits(seed, shape, scale=3.0):
    return (np.random.default_rng(seed).normal(size=shape) * scale).astype("float32")


# --- the soft term ----------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(8, 1), (8, 5)], ids=["binary", "multi-label"])
@pytest.mark.parametrize("temperature", [1.0, 4.0, 20.0])
def test_binary_distillation_value_and_gradient_match_numpy(shape, temperature):
    teacher, student = logits(0, shape), logits(1, shape)
    loss = keras_kd.DistillationLoss(temperature=temperature, output="sigmoid")
    value, gradient = value_and_grad(loss, teacher, student)
    expected = np_binary_kd(teacher, student, temperature).mean()
    assert value == pytest.approx(expected, rel=1e-5, abs=float32_kl_atol(temperature))
    np.testing.assert_allclose(
        gradient, np_binary_kd_grad(teacher, student, temperature, shape[0]), rtol=1e-4, atol=1e-7
    )


def test_one_logit_is_binary_under_either_output():
    teacher, student = logits(0, (6, 1)), logits(1, (6, 1))
    expected = np_binary_kd(teacher, student, 4.0)
    for output in ("softmax", "sigmoid"):
        got = losses.distillation_loss(teacher, student, 4.0, output=output)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=float32_kl_atol(4.0))
    # The two-class softmax over [0, z] gives the same number (the identity behind it).
    zeros = np.zeros_like(teacher)
    two_class = losses.distillation_loss(
        np.concatenate([zeros, teacher], -1), np.concatenate([zeros, student], -1), 4.0
    )
    np.testing.assert_allclose(two_class, expected, rtol=1e-4, atol=float32_kl_atol(4.0))


def test_multi_label_softmax_and_sigmoid_forms_differ():
    teacher, student = logits(0, (4, 3)), logits(1, (4, 3))
    sigmoid = losses.distillation_loss(teacher, student, 2.0, output="sigmoid")
    np.testing.assert_allclose(
        sigmoid, np_binary_kd(teacher, student, 2.0), rtol=1e-5, atol=float32_kl_atol(2.0)
    )
    softmax = losses.distillation_loss(teacher, student, 2.0)
    assert not np.allclose(softmax, sigmoid)


def test_binary_distillation_with_sample_weight_and_extreme_logits():
    teacher = np.array([[30.0], [-30.0], [0.5], [1e4]], "float32")
    student = np.array([[-30.0], [30.0], [0.5], [-1e4]], "float32")
    weights = np.array([1.0, 0.5, 2.0, 0.0])
    loss = keras_kd.DistillationLoss(temperature=1.0, output="sigmoid")
    value, gradient = value_and_grad(loss, teacher, student, sample_weight=weights)
    # Log space: sigmoid(30) rounds to 1 in float32, the KL is still ~30 (no clipping).
    per_example = np_binary_kd(teacher[:3], student[:3], 1.0)
    assert per_example[0] == pytest.approx(30.0 - 2 * np.log1p(np.exp(-30.0)), rel=1e-6)
    expected = np.sum(weights[:3] * per_example) / 4
    assert value == pytest.approx(expected, rel=1e-5)
    assert np.all(np.isfinite(gradient))


def test_binary_logit_matching_is_the_high_temperature_limit():
    teacher, student = logits(0, (5, 2), 1.0), logits(1, (5, 2), 1.0)
    got = losses.logit_matching_loss(teacher, student, output="sigmoid")
    expected = np.mean((student.astype(np.float64) - teacher) ** 2, axis=-1) / 8
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    np.testing.assert_allclose(np_binary_kd(teacher, student, 1e3), expected, rtol=2e-3)
    # The class form agrees: one logit means the pair [0, z].
    one_teacher, one_student = teacher[:, :1], student[:, :1]
    zeros = np.zeros_like(one_teacher)
    np.testing.assert_allclose(
        losses.logit_matching_loss(one_teacher, one_student),
        losses.logit_matching_loss(
            np.concatenate([zeros, one_teacher], -1), np.concatenate([zeros, one_student], -1)
        ),
        rtol=1e-6,
    )
    assert float(keras_kd.LogitMatchingLoss(output="sigmoid")(teacher, student)) == pytest.approx(
        expected.mean(), rel=1e-6
    )


def test_binary_ensemble_averages_tempered_sigmoids():
    members = [logits(seed, (6, 3)) for seed in range(3)]
    folded = np.asarray(losses.ensemble_logits(members, 2.0, output="sigmoid"))
    mean = np.mean([np_sigmoid(m / 2.0) for m in members], axis=0)
    np.testing.assert_allclose(np_sigmoid(folded / 2.0), mean, rtol=1e-5)
    # A single logit is binary under the default output too.
    folded_one = np.asarray(losses.ensemble_logits([m[:, :1] for m in members], 2.0))
    np.testing.assert_allclose(np_sigmoid(folded_one / 2.0), mean[:, :1], rtol=1e-5)


# --- label smoothing against Keras' BinaryCrossentropy ----------------------------------


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("from_logits", [True, False])
@pytest.mark.parametrize("shape", [(8, 1), (8, 4)], ids=["binary", "multi-label"])
def test_label_smoothing_equals_keras_binary_crossentropy(smoothing, from_logits, shape):
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 2, shape).astype("float32")
    predictions = logits(1, shape)
    if not from_logits:
        predictions = np_sigmoid(predictions).astype("float32")
    ours = keras_kd.LabelSmoothingLoss(smoothing, from_logits=from_logits, output="sigmoid")
    theirs = keras.losses.BinaryCrossentropy(label_smoothing=smoothing, from_logits=from_logits)
    value, gradient = value_and_grad(ours, targets, predictions)
    keras_value, keras_gradient = value_and_grad(theirs, targets, predictions)
    assert value == pytest.approx(keras_value, rel=1e-5)
    np.testing.assert_allclose(gradient, keras_gradient, rtol=1e-4, atol=1e-7)


def test_binary_label_smoothing_matches_numpy_and_takes_flat_labels():
    labels = np.array([1, 0, 1, 1])
    predictions = logits(2, (4, 1))
    smoothed = labels[:, None] * 0.8 + 0.1
    p = np_sigmoid(predictions)
    expected = -(smoothed * np.log(p) + (1 - smoothed) * np.log(1 - p))[:, 0]
    for label_form in (labels, labels[:, None], labels.astype("float32")):
        got = losses.label_smoothing_loss(label_form, predictions, 0.2)  # K = 1: binary
        np.testing.assert_allclose(got, expected, rtol=1e-5)


# --- masked logits (-inf) -----------------------------------------------------------------


MASKED = np.array([[-np.inf, 2.0, 3.0], [1.0, -np.inf, 0.0]], "float32")
MASKED_LABELS = np.array([1, 0])


def test_masked_logits_cross_entropy_equals_keras_sparse_crossentropy():
    keras_value = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)(
        MASKED_LABELS, MASKED
    )
    np.testing.assert_allclose(losses.cross_entropy(MASKED_LABELS, MASKED), keras_value, rtol=1e-6)
    np.testing.assert_allclose(
        losses.cross_entropy(np.eye(3)[MASKED_LABELS], MASKED), keras_value, rtol=1e-6
    )
    np.testing.assert_allclose(
        losses.label_smoothing_loss(MASKED_LABELS, MASKED, 0.0), keras_value, rtol=1e-6
    )
    # With eps > 0 the smoothed target puts mass on the masked class: infinite, as Keras.
    smoothed = keras.losses.CategoricalCrossentropy(
        from_logits=True, label_smoothing=0.1, reduction=None
    )(np.eye(3)[MASKED_LABELS], MASKED)
    np.testing.assert_array_equal(
        losses.label_smoothing_loss(MASKED_LABELS, MASKED, 0.1), np.asarray(smoothed)
    )


def test_masked_logits_distillation_value_and_gradient_are_finite():
    student = MASKED + np.array([[0.0, 0.5, -1.0], [0.3, 0.0, 0.2]], "float32")
    loss = keras_kd.DistillationLoss(temperature=2.0)
    value, gradient = value_and_grad(loss, MASKED, student)
    # NumPy over the unmasked classes only (a masked class has probability 0 in both).
    expected = []
    for t_row, s_row in zip(MASKED.astype(np.float64), student.astype(np.float64)):
        keep = np.isfinite(t_row)
        t, s = t_row[keep] / 2.0, s_row[keep] / 2.0
        log_p, log_q = t - np.log(np.exp(t).sum()), s - np.log(np.exp(s).sum())
        expected.append(4.0 * np.sum(np.exp(log_p) * (log_p - log_q)))
    assert value == pytest.approx(np.mean(expected), rel=1e-5)
    assert np.all(np.isfinite(gradient))
    assert gradient[0, 0] == 0.0 and gradient[1, 1] == 0.0
    matching = losses.logit_matching_loss(MASKED, student)
    assert np.all(np.isfinite(matching))
    centred = [(s[k] - s[k].mean()) - (t[k] - t[k].mean()) for t, s, k in (
        (MASKED[i], student[i], np.isfinite(MASKED[i])) for i in range(2))]
    np.testing.assert_allclose(matching, [0.5 * np.mean(c**2) for c in centred], rtol=1e-5)


def test_masked_binary_logits_give_the_limit_values():
    teacher = np.array([[-np.inf], [np.inf], [0.5]], "float32")
    student = np.array([[-np.inf], [np.inf], [0.5]], "float32")
    np.testing.assert_array_equal(losses.distillation_loss(teacher, student, 2.0), [0, 0, 0])
    bce = losses.label_smoothing_loss(np.array([0, 1, 1]), student, 0.0)
    np.testing.assert_allclose(bce, [0.0, 0.0, np.log1p(np.exp(-0.5))], rtol=1e-6)


# --- serialization ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "loss",
    [
        keras_kd.DistillationLoss(3.0, output="sigmoid"),
        keras_kd.LogitMatchingLoss(output="sigmoid"),
        keras_kd.LabelSmoothingLoss(0.2, from_logits=True, output="sigmoid"),
    ],
    ids=lambda loss: type(loss).__name__,
)
def test_output_survives_serialization(loss):
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert restored.output == "sigmoid"
    teacher, student = np.array([[0.0, 1.0]], "float32"), logits(3, (1, 2))
    np.testing.assert_allclose(restored(teacher, student), loss(teacher, student), rtol=1e-6)


# --- probabilities are not logits -----------------------------------------------------------


def _softmax_teacher(num_classes=3):
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(num_classes, activation="softmax")]
    )


def test_readme_offline_example_with_a_softmax_teacher_raises_in_compiled_fit():
    # student.fit(x, teacher.predict(x)) with a softmax teacher: targets are
    # probabilities. Eager calls raise ValueError; TensorFlow's compiled fit asserts.
    teacher = _softmax_teacher()
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    probabilities = teacher.predict(x, verbose=0)
    with pytest.raises(ValueError, match="look like probabilities"):
        keras_kd.DistillationLoss()(probabilities, np.zeros((32, 3), "float32"))
    student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    student.compile("sgd", loss=keras_kd.DistillationLoss(), jit_compile=False)
    before = [w.copy() for w in student.get_weights()]
    with pytest.raises(tf.errors.InvalidArgumentError, match="look like probabilities"):
        student.fit(x, probabilities, batch_size=16, epochs=1, verbose=0)
    for old, new in zip(before, student.get_weights()):
        np.testing.assert_array_equal(old, new)
    # The fix the message names: log p, which has the same tempered softmax.
    student.fit(x, np.log(probabilities), batch_size=16, epochs=1, verbose=0)


def _binary_pair(head_activation=None):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    logits_model = keras.Model(inputs, keras.layers.Dense(1)(hidden))
    head = keras.layers.Activation(head_activation)(logits_model.output)
    return logits_model, keras.Model(inputs, head)


@pytest.mark.parametrize("head", ["sigmoid", keras.activations.sigmoid, tf.nn.sigmoid])
def test_sigmoid_teacher_is_converted_exactly(head):
    logits_teacher, sigmoid_teacher = _binary_pair(head)
    x = np.random.default_rng(1).normal(size=(16, 4)).astype("float32")
    from keras_kd import _teacher

    got = _teacher.teacher_logits([sigmoid_teacher], x, 2.0)
    np.testing.assert_allclose(got, logits_teacher.predict(x, verbose=0), rtol=1e-4, atol=1e-5)


def test_sigmoid_student_is_rejected():
    _, sigmoid_student = _binary_pair("sigmoid")
    logits_teacher, _ = _binary_pair()
    with pytest.raises(ValueError, match="ends in a sigmoid"):
        keras_kd.Distiller(teacher=logits_teacher, student=sigmoid_student)


# --- the Distiller learns from a binary teacher ------------------------------------------------

_DIM, _CLUSTERS = 10, 12


def _binary_mixture(num_examples, rng):
    """12 Gaussian clusters in 10-D, alternately labelled 0/1: not linearly separable."""
    centres = np.random.default_rng(1234).normal(size=(_CLUSTERS, _DIM)) * 1.5
    cluster = rng.integers(0, _CLUSTERS, num_examples)
    x = centres[cluster] + rng.normal(size=(num_examples, _DIM))
    return x.astype("float32"), (cluster % 2).astype("float32")


def _binary_mlp(seed, hidden):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((_DIM,))
    features = inputs
    for units in hidden:
        features = keras.layers.Dense(units, activation="relu")(features)
    return keras.Model(inputs, keras.layers.Dense(1)(features))


def _positive(model, x):
    return model.predict(x, verbose=0)[:, 0] > 0.0


def test_binary_distiller_student_learns_from_the_teacher():
    """Transfer set as in Hinton et al.: 40 labels alone vs the teacher's soft targets.

    The distillation term falls over the epochs and the distilled student agrees with
    the teacher on held-out inputs more often than the same student trained on the
    40 labels. Measured (seed 0): teacher accuracy 97.7 %; distillation loss 1.116,
    0.318, 0.114 over the 3 epochs; agreement with the teacher 96.1 % distilled vs
    85.6 % labels-only (10.5 points; we require 3).
    """
    rng = np.random.default_rng(0)
    x_teacher, y_teacher = _binary_mixture(2000, rng)
    x_transfer, _ = _binary_mixture(2000, rng)
    x_labelled, y_labelled = _binary_mixture(40, rng)
    x_test, _ = _binary_mixture(2000, rng)
    bce = keras.losses.BinaryCrossentropy(from_logits=True)

    teacher = _binary_mlp(0, [64, 64])
    teacher.compile(optimizer=keras.optimizers.Adam(3e-3), loss=bce)
    teacher.fit(x_teacher, y_teacher, batch_size=64, epochs=3, verbose=0)

    labels_only = _binary_mlp(100, [16])
    labels_only.compile(optimizer=keras.optimizers.Adam(1e-2), loss=bce)
    labels_only.fit(
        np.tile(x_labelled, (50, 1)), np.tile(y_labelled, 50), batch_size=40, epochs=1, verbose=0
    )

    student = _binary_mlp(100, [16])
    distiller = keras_kd.Distiller(teacher=teacher, student=student, temperature=2.0, alpha=1.0)
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2), loss=None)
    history = distiller.fit(x_transfer, batch_size=64, epochs=3, verbose=0).history

    soft = history["distillation_loss"]
    teacher_says = _positive(teacher, x_test)
    distilled_agreement = float(np.mean(_positive(student, x_test) == teacher_says))
    labels_only_agreement = float(np.mean(_positive(labels_only, x_test) == teacher_says))
    assert soft[-1] < soft[0], soft
    assert distilled_agreement > labels_only_agreement + 0.03, (
        soft,
        distilled_agreement,
        labels_only_agreement,
    )


def test_multi_label_distiller_logs_the_numpy_soft_term_and_saves(tmp_path):
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
    labels = np.random.default_rng(1).integers(0, 2, (16, 3)).astype("float32")
    teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    distiller = keras_kd.Distiller(teacher, student, temperature=3.0, alpha=0.5, output="sigmoid")
    distiller.compile(optimizer="sgd", loss=keras.losses.BinaryCrossentropy(from_logits=True))
    teacher_logits = teacher.predict(x, verbose=0)
    student_logits = student.predict(x, verbose=0)
    logs = distiller.fit(x, labels, batch_size=16, epochs=1, verbose=0).history
    expected = np_binary_kd(teacher_logits, student_logits, 3.0).mean()
    assert logs["distillation_loss"][0] == pytest.approx(expected, rel=1e-5)
    assert distiller.get_config()["output"] == "sigmoid"
    path = tmp_path / "distiller.keras"
    distiller.save(path)
    assert keras.models.load_model(path).get_config()["output"] == "sigmoid"
