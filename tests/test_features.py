"""Tests for keras_kd.features and the Distiller's feature terms (hints).

References are NumPy written here, independently of keras_kd: the losses' formulas
(Romero et al. 2015; Zagoruyko & Komodakis 2017 and their `at_loss` code), and the
features of small Dense networks recomputed from their weights.
"""

import numpy as np
import pytest
import tensorflow as tf

import keras
import keras_kd
from keras_kd import distiller as distiller_module
from keras_kd import features
from keras_kd.features import FeaturePair

NUM_CLASSES = 3
HARD_LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


# --- models -------------------------------------------------------------------------


def _mlp(hidden_units, name, depth=1, input_dim=5, activation="relu"):
    inputs = keras.Input((input_dim,))
    hidden = inputs
    for index in range(depth):
        layer_name = "hidden" if index == depth - 1 else f"hidden_{index}"
        hidden = keras.layers.Dense(hidden_units, activation=activation, name=layer_name)(hidden)
    outputs = keras.layers.Dense(NUM_CLASSES, name="logits")(hidden)
    return keras.Model(inputs, outputs, name=name)


def _convnet(channels, name, batch_norm=False):
    inputs = keras.Input((6, 6, 2))
    conv = keras.layers.Conv2D(channels, 3, padding="same", activation="relu", name="conv")
    hidden = conv(inputs)
    if batch_norm:
        hidden = keras.layers.BatchNormalization(name="bn")(hidden)
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(hidden)
    outputs = keras.layers.Dense(NUM_CLASSES, name="logits")(pooled)
    return keras.Model(inputs, outputs, name=name)


def _data(num_examples=16, shape=(5,), seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num_examples, *shape)).astype("float32")
    y = rng.integers(0, NUM_CLASSES, size=num_examples)
    return x, y


def _compiled(distiller, learning_rate=0.0, **kwargs):
    # learning_rate=0: the logged losses are those of the initial weights, so they can
    # be recomputed from the weights in NumPy.
    distiller.compile(
        optimizer=keras.optimizers.SGD(learning_rate=learning_rate),
        loss=HARD_LOSS,
        jit_compile=False,
        **kwargs,
    )
    return distiller


def _hidden_pair():
    return [FeaturePair("hidden", "hidden")]


def _mlp_distiller(student=None, pairs=None):
    student = _mlp(4, "student") if student is None else student
    pairs = _hidden_pair() if pairs is None else pairs
    return keras_kd.Distiller(_mlp(6, "teacher"), student, feature_pairs=pairs)


def _relu_dense(x, layer):
    kernel, bias = (weight.numpy() for weight in layer.weights)
    return np.maximum(x @ kernel + bias, 0.0)


def _unit(a):
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


# --- the loss functions against NumPy ----------------------------------------------


def test_feature_mse_matches_numpy():
    rng = np.random.default_rng(1)
    teacher, student = rng.normal(size=(2, 4, 3, 5))
    expected = ((student - teacher) ** 2).reshape(4, -1).mean(axis=1)
    np.testing.assert_allclose(features.feature_mse(teacher, student), expected, rtol=1e-5)


def test_feature_cosine_distance_matches_numpy():
    rng = np.random.default_rng(2)
    teacher, student = rng.normal(size=(2, 4, 6, 2))
    t, s = teacher.reshape(4, -1), student.reshape(4, -1)
    expected = 1.0 - (t * s).sum(1) / (np.linalg.norm(t, axis=1) * np.linalg.norm(s, axis=1))
    np.testing.assert_allclose(
        features.feature_cosine_distance(teacher, student), expected, rtol=1e-5, atol=1e-6
    )
    # Scale-invariant, and an all-zero feature gives 1 rather than NaN.
    np.testing.assert_allclose(
        features.feature_cosine_distance(teacher, 7.0 * teacher), np.zeros(4), atol=1e-6
    )
    np.testing.assert_allclose(
        features.feature_cosine_distance(teacher, np.zeros_like(teacher)), np.ones(4)
    )


@pytest.mark.parametrize("p", [2.0, 3.0])
def test_attention_transfer_matches_numpy(p):
    rng = np.random.default_rng(3)
    teacher = rng.normal(size=(4, 5, 3, 7))
    student = rng.normal(size=(4, 5, 3, 2))  # channel counts may differ
    a_t = (np.abs(teacher) ** p).mean(axis=-1).reshape(4, -1)
    a_s = (np.abs(student) ** p).mean(axis=-1).reshape(4, -1)
    expected = ((_unit(a_s) - _unit(a_t)) ** 2).sum(axis=1)
    loss = features.attention_transfer_loss(teacher, student, p=p)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    np.testing.assert_allclose(features.attention_map(teacher, p=p), a_t, rtol=1e-5)


def test_attention_transfer_is_reference_code_times_positions():
    # szagoruyko/attention-transfer utils.py, channels-first:
    #   at(x) = F.normalize(x.pow(2).mean(1).view(x.size(0), -1))
    #   at_loss(x, y) = (at(x) - at(y)).pow(2).mean()
    rng = np.random.default_rng(4)
    teacher_nchw = rng.normal(size=(3, 6, 4, 5))
    student_nchw = rng.normal(size=(3, 2, 4, 5))

    def at(x):
        return _unit((x**2).mean(axis=1).reshape(x.shape[0], -1))

    reference = ((at(student_nchw) - at(teacher_nchw)) ** 2).mean()
    ours = features.attention_transfer_loss(
        np.transpose(teacher_nchw, (0, 2, 3, 1)), np.transpose(student_nchw, (0, 2, 3, 1))
    )
    np.testing.assert_allclose(np.mean(ours) / (4 * 5), reference, rtol=1e-5)


def test_losses_have_finite_gradients_at_zero_and_at_a_match():
    teacher = tf.constant(np.random.default_rng(5).normal(size=(2, 3, 3, 4)), tf.float32)
    for student in (tf.Variable(tf.identity(teacher)), tf.Variable(tf.zeros_like(teacher))):
        for loss in features.FEATURE_LOSSES.values():
            with tf.GradientTape() as tape:
                value = tf.reduce_sum(loss(teacher, student))
            gradient = tape.gradient(value, student)
            assert np.all(np.isfinite(gradient.numpy())), loss.__name__


def test_loss_shape_errors():
    with pytest.raises(ValueError, match="same shape"):
        features.feature_mse(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="spatial features"):
        features.attention_map(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="attention maps must have the same shape"):
        features.attention_transfer_loss(np.ones((1, 2, 2, 3)), np.ones((1, 3, 3, 3)))


# --- FeaturePair --------------------------------------------------------------------


def test_feature_pair_defaults_config_and_serialization():
    pair = FeaturePair("t_layer", "s_layer")
    assert (pair.loss, pair.weight, pair.name) == ("mse", 1.0, "t_layer_s_layer")
    assert FeaturePair("same", "same").name == "same"
    pair = FeaturePair("t", "s", loss="attention", weight=250, name="at")
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(pair))
    assert isinstance(restored, FeaturePair) and restored == pair
    assert restored.get_config() == {
        "teacher_layer": "t",
        "student_layer": "s",
        "loss": "attention",
        "weight": 250.0,
        "name": "at",
    }


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"loss": "l1"}, r"`loss` must be one of \['attention', 'cosine', 'mse'\], got 'l1'"),
        ({"weight": -1.0}, r"`weight` must be in \[0.0, inf\), got -1.0"),
        ({"weight": float("nan")}, "`weight` must be in"),
        ({"name": ""}, "`name` must be a non-empty string"),
        ({"teacher_layer": 3}, "`teacher_layer` must be a non-empty string, got 3"),
    ],
)
def test_feature_pair_rejects_bad_arguments(kwargs, message):
    arguments = {"teacher_layer": "t", "student_layer": "s", **kwargs}
    with pytest.raises(ValueError, match=message):
        FeaturePair(**arguments)


# --- projections ----------------------------------------------------------------------


def test_dense_projection_shape_and_gradient():
    teacher, student = _mlp(6, "teacher"), _mlp(4, "student")
    distiller = keras_kd.Distiller(
        teacher, student, feature_pairs=[FeaturePair("hidden", "hidden")]
    )
    projection = distiller.feature_projections["hidden"]
    assert isinstance(projection, keras.layers.Dense)
    assert tuple(projection.kernel.shape) == (4, 6)
    x, y = _data()
    with tf.GradientTape() as tape:
        logits = distiller(x, training=True)
        loss = distiller.compute_loss(x, y, logits, training=True)
    gradients = tape.gradient(loss, projection.trainable_weights)
    assert all(g is not None and np.any(g.numpy() != 0.0) for g in gradients)
    trainable_ids = {id(w) for w in distiller.trainable_weights}
    assert {id(w) for w in projection.trainable_weights} <= trainable_ids


def test_conv_projection_shape_and_training():
    teacher, student = _convnet(8, "teacher"), _convnet(3, "student")
    distiller = keras_kd.Distiller(teacher, student, feature_pairs=[FeaturePair("conv", "conv")])
    projection = distiller.feature_projections["conv"]
    assert isinstance(projection, keras.layers.Conv2D)
    assert tuple(projection.kernel.shape) == (1, 1, 3, 8)
    before = [w.numpy() for w in projection.weights]
    x, y = _data(shape=(6, 6, 2))
    _compiled(distiller, learning_rate=0.1).fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert all(np.any(b != a.numpy()) for b, a in zip(before, projection.weights))


def test_no_projection_when_shapes_match_or_for_attention():
    distiller = keras_kd.Distiller(
        _convnet(8, "teacher"),
        _convnet(3, "student"),
        feature_pairs=[
            FeaturePair("conv", "conv", loss="attention"),
            FeaturePair("logits", "logits"),
        ],
    )
    assert distiller.feature_projections == {}


def test_exported_student_has_no_projection_weights(tmp_path):
    teacher, student = _mlp(6, "teacher"), _mlp(4, "student")
    student_weight_ids = [id(w) for w in student.weights]
    distiller = keras_kd.Distiller(teacher, student, feature_pairs=_hidden_pair())
    projection_ids = {id(w) for w in distiller.feature_projections["hidden"].weights}
    assert [id(w) for w in distiller.student.weights] == student_weight_ids
    assert not projection_ids & set(student_weight_ids)
    path = tmp_path / "student.keras"
    distiller.student.save(path)
    reloaded = keras.saving.load_model(path)
    assert len(reloaded.weights) == len(student_weight_ids) == 4
    assert "projection" not in str([w.path for w in reloaded.weights])


# --- the objective ---------------------------------------------------------------------


def test_logged_feature_losses_match_numpy_with_sample_weights():
    teacher, student = _mlp(6, "teacher"), _mlp(4, "student")
    pairs = [
        FeaturePair("hidden", "hidden", weight=0.5, name="fit"),
        FeaturePair("logits", "logits", loss="cosine", weight=2.0),
    ]
    distiller = _compiled(keras_kd.Distiller(teacher, student, alpha=0.9, feature_pairs=pairs))
    x, y = _data(num_examples=12)
    sample_weight = np.linspace(0.0, 2.0, 12).astype("float32")
    history = distiller.fit(
        x, y, sample_weight=sample_weight, batch_size=12, epochs=1, verbose=0
    ).history

    teacher_hidden = _relu_dense(x, teacher.get_layer("hidden"))
    projection = distiller.feature_projections["fit"]
    student_hidden = _relu_dense(x, student.get_layer("hidden"))
    projected = student_hidden @ projection.kernel.numpy() + projection.bias.numpy()
    hint = ((projected - teacher_hidden) ** 2).mean(axis=1)
    # Keras' "sum_over_batch_size": sum_b w_b * loss_b / batch_size, as for the KD term.
    expected_hint = np.sum(sample_weight * hint) / 12
    np.testing.assert_allclose(history["feature_loss_fit"][0], expected_hint, rtol=1e-5)

    t_logits, s_logits = teacher.predict(x, verbose=0), student.predict(x, verbose=0)
    # A student whose 4 ReLUs are all off for an example has zero logits there: its
    # direction is undefined and the documented convention gives a distance of 1.
    norms = np.maximum(np.linalg.norm(t_logits, axis=1), 1e-12) * np.maximum(
        np.linalg.norm(s_logits, axis=1), 1e-12
    )
    cosine = 1 - (t_logits * s_logits).sum(1) / norms
    np.testing.assert_allclose(
        history["feature_loss_logits"][0], np.sum(sample_weight * cosine) / 12, rtol=1e-5
    )
    expected_total = (
        0.1 * history["student_loss"][0]
        + 0.9 * history["distillation_loss"][0]
        + 0.5 * expected_hint
        + 2.0 * history["feature_loss_logits"][0]
    )
    np.testing.assert_allclose(history["loss"][0], expected_total, rtol=1e-5)


def test_logs_name_each_feature_loss_and_evaluate_omits_them():
    distiller = _compiled(
        keras_kd.Distiller(
            _convnet(8, "teacher"),
            _convnet(3, "student"),
            feature_pairs=[
                FeaturePair("conv", "conv", loss="attention"),
                FeaturePair("pool", "pool", loss="cosine", name="pooled"),
            ],
        ),
        metrics=["accuracy"],
    )
    x, y = _data(shape=(6, 6, 2))
    history = distiller.fit(x, y, batch_size=8, epochs=1, verbose=0).history
    assert {"feature_loss_conv", "feature_loss_pooled"} <= set(history)
    assert all(np.isfinite(history[key][0]) for key in history)
    logs = distiller.evaluate(x, y, verbose=0, return_dict=True)
    assert not any(key.startswith("feature_loss_") for key in logs)
    np.testing.assert_allclose(logs["loss"], _student_only_loss(distiller.student, x, y), rtol=1e-5)


def _student_only_loss(student, x, y):
    logits = student.predict(x, verbose=0)
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return -log_probs[np.arange(len(y)), y].mean()


@pytest.mark.parametrize("loss", ["mse", "cosine", "attention"])
def test_hint_loss_is_zero_when_the_student_copies_the_teachers_layer(loss):
    teacher, student = _convnet(4, "teacher"), _convnet(4, "student")
    student.get_layer("conv").set_weights(teacher.get_layer("conv").get_weights())
    distiller = _compiled(
        keras_kd.Distiller(teacher, student, feature_pairs=[FeaturePair("conv", "conv", loss=loss)])
    )
    assert distiller.feature_projections == {}
    x, y = _data(shape=(6, 6, 2))
    history = distiller.fit(x, y, batch_size=16, epochs=1, verbose=0).history
    if loss == "mse":
        assert history["feature_loss_conv"][0] == 0.0
    else:
        assert abs(history["feature_loss_conv"][0]) < 1e-6


class _GenericStepDistiller(keras_kd.Distiller):
    """Keras' own train step: `call` then `compute_loss`, as on JAX and PyTorch."""

    def train_step(self, data):
        return keras.Model.train_step(self, data)


def test_compute_loss_path_matches_the_tensorflow_train_step():
    x, y = _data(num_examples=8)
    logs = []
    for distiller_class in (keras_kd.Distiller, _GenericStepDistiller):
        keras.utils.set_random_seed(7)
        teacher, student = _mlp(6, "teacher"), _mlp(4, "student")
        pairs = [FeaturePair("hidden", "hidden", weight=0.3)]
        distiller = _compiled(distiller_class(teacher, student, feature_pairs=pairs))
        logs.append(distiller.fit(x, y, batch_size=8, epochs=1, verbose=0).history)
    assert logs[0].keys() == logs[1].keys()
    for key in logs[0]:
        np.testing.assert_allclose(logs[0][key], logs[1][key], rtol=1e-6, err_msg=key)


# --- one forward each ---------------------------------------------------------------


def _counted_mlp(call_counter, hidden_units, name):
    inputs = keras.Input((5,))
    counted = call_counter(name="counter")(inputs)
    hidden = keras.layers.Dense(hidden_units, activation="relu", name="hidden")(counted)
    hidden_2 = keras.layers.Dense(hidden_units, activation="relu", name="hidden_2")(hidden)
    outputs = keras.layers.Dense(NUM_CLASSES, name="logits")(hidden_2)
    return keras.Model(inputs, outputs, name=name)


@pytest.mark.parametrize("run_eagerly", [False, True])
def test_one_teacher_and_one_student_forward_per_step(run_eagerly, call_counter):
    teacher = _counted_mlp(call_counter, 6, "teacher")
    student = _counted_mlp(call_counter, 4, "student")
    pairs = [
        FeaturePair("hidden", "hidden"),
        FeaturePair("hidden_2", "hidden_2", loss="cosine"),
        FeaturePair("hidden", "hidden_2", name="cross"),
    ]
    distiller = _compiled(
        keras_kd.Distiller(teacher, student, feature_pairs=pairs), run_eagerly=run_eagerly
    )
    teacher_calls, student_calls = (m.get_layer("counter").calls for m in (teacher, student))
    start = teacher_calls.numpy(), student_calls.numpy()
    x, y = _data(num_examples=20)
    distiller.fit(x, y, batch_size=5, epochs=1, verbose=0)  # 4 steps
    assert teacher_calls.numpy() - start[0] == 4
    assert student_calls.numpy() - start[1] == 4
    distiller.evaluate(x, y, batch_size=5, verbose=0)  # the student alone
    assert teacher_calls.numpy() - start[0] == 4
    assert student_calls.numpy() - start[1] == 8


def test_student_batch_norm_updates_through_the_feature_forward():
    teacher = _convnet(8, "teacher", batch_norm=True)
    student = _convnet(3, "student", batch_norm=True)
    distiller = _compiled(
        keras_kd.Distiller(teacher, student, feature_pairs=[FeaturePair("bn", "bn")]),
        learning_rate=0.01,
    )
    moving_mean = student.get_layer("bn").moving_mean
    teacher_moving_mean = teacher.get_layer("bn").moving_mean.numpy()
    assert np.all(moving_mean.numpy() == 0.0)
    x, y = _data(shape=(6, 6, 2))
    distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert np.all(moving_mean.numpy() != 0.0)
    np.testing.assert_array_equal(teacher.get_layer("bn").moving_mean.numpy(), teacher_moving_mean)
    np.testing.assert_array_equal(distiller.predict(x, verbose=0), student.predict(x, verbose=0))


def test_sequential_teacher_and_student():
    def sequential(units, name):
        return keras.Sequential(
            [
                keras.Input((5,)),
                keras.layers.Dense(units, activation="relu", name="hidden"),
                keras.layers.Dense(NUM_CLASSES, name="logits"),
            ],
            name=name,
        )

    distiller = _compiled(
        keras_kd.Distiller(
            sequential(6, "teacher"),
            sequential(4, "student"),
            feature_pairs=[FeaturePair("hidden", "hidden")],
        )
    )
    x, y = _data()
    history = distiller.fit(x, y, batch_size=8, epochs=1, verbose=0).history
    assert np.isfinite(history["feature_loss_hidden"][0])


# --- saving ---------------------------------------------------------------------------


def test_save_load_round_trip_restores_projections(tmp_path):
    teacher = _convnet(8, "teacher", batch_norm=True)
    student = _convnet(3, "student", batch_norm=True)
    pairs = [FeaturePair("conv", "conv", weight=0.5), FeaturePair("bn", "bn", loss="attention")]
    distiller = _compiled(keras_kd.Distiller(teacher, student, feature_pairs=pairs), 0.05)
    initial_kernel = distiller.feature_projections["conv"].kernel.numpy()
    x, y = _data(shape=(6, 6, 2))
    distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert distiller.get_config()["feature_pairs"] == [
        keras.saving.serialize_keras_object(pair) for pair in pairs
    ]
    path = tmp_path / "distiller.keras"
    distiller.save(path)
    reloaded = keras.saving.load_model(path)
    assert reloaded.feature_pairs == pairs
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), distiller.predict(x, verbose=0))
    original, restored = distiller.feature_projections["conv"], reloaded.feature_projections["conv"]
    assert list(reloaded.feature_projections) == ["conv"]
    for before, after in zip(original.weights, restored.weights):
        np.testing.assert_array_equal(after.numpy(), before.numpy())
    assert np.any(restored.kernel.numpy() != initial_kernel)  # trained, not re-initialised
    # The reloaded Distiller trains on, hints included.
    history = reloaded.fit(x, y, batch_size=8, epochs=1, verbose=0).history
    assert {"feature_loss_conv", "feature_loss_bn"} <= set(history)


# --- errors -----------------------------------------------------------------------------


def test_unknown_layer_lists_the_available_names():
    listed = r"`student_layer`='nope'.*\['input_layer.*'hidden', 'logits'\]"
    with pytest.raises(ValueError, match=listed):
        _mlp_distiller(pairs=[FeaturePair("hidden", "nope")])
    with pytest.raises(ValueError, match=r"`teacher_layer`='nope' is not a layer of the teacher"):
        _mlp_distiller(pairs=[FeaturePair("nope", "hidden")])


class _SubclassedStudent(keras.Model):
    def __init__(self):
        super().__init__(name="subclassed")
        self.hidden = keras.layers.Dense(4, activation="relu", name="hidden")
        self.head = keras.layers.Dense(NUM_CLASSES, name="logits")

    def call(self, inputs):
        return self.head(self.hidden(inputs))


def test_subclassed_model_is_rejected_with_the_workaround():
    student = _SubclassedStudent()
    student(np.zeros((1, 5), "float32"))
    with pytest.raises(ValueError, match="subclassed model.*Wrap it into a Functional model"):
        _mlp_distiller(student)
    # Without feature pairs a subclassed student is fine.
    keras_kd.Distiller(_mlp(6, "teacher"), student)


def test_unbuilt_sequential_is_rejected():
    student = keras.Sequential([keras.layers.Dense(4, name="hidden"), keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="no input shape yet.*keras.Input"):
        _mlp_distiller(student)


def test_ensemble_teacher_is_rejected():
    ensemble = [_mlp(6, "teacher_a"), _mlp(6, "teacher_b")]
    with pytest.raises(ValueError, match="need a single teacher, got an ensemble of 2"):
        keras_kd.Distiller(ensemble, _mlp(4, "student"), feature_pairs=_hidden_pair())


def test_cached_teacher_logits_are_rejected():
    distiller = _compiled(_mlp_distiller())
    x, y = _data()
    targets = {
        distiller_module.LABELS: y,
        distiller_module.TEACHER_LOGITS: np.zeros((len(y), NUM_CLASSES), "float32"),
    }
    with pytest.raises(ValueError, match="cached teacher logits.*not cached"):
        distiller.fit(x, targets, batch_size=8, epochs=1, verbose=0)


@pytest.mark.parametrize(
    "pairs, message",
    [
        (FeaturePair("hidden", "hidden"), "`feature_pairs` must be a list of keras_kd.FeaturePair"),
        ([("hidden", "hidden")], r"`feature_pairs\[0\]` must be a keras_kd.FeaturePair"),
        ([FeaturePair("hidden", "hidden"), FeaturePair("hidden", "hidden", loss="cosine")],
         r"distinct.*\['hidden'\]"),
        ([FeaturePair("hidden", "hidden", loss="attention")], "'attention' needs spatial features"),
        ([FeaturePair("hidden", "conv")], "cannot be matched by a projection"),
    ],
)
def test_bad_feature_pairs_are_rejected(pairs, message):
    student_inputs = keras.Input((5,))
    conv_input = keras.layers.Reshape((5, 1, 1))(student_inputs)
    conv = keras.layers.Conv2D(2, 1, name="conv")(conv_input)
    hidden = keras.layers.Dense(4, name="hidden")(keras.layers.Flatten()(conv))
    student = keras.Model(student_inputs, keras.layers.Dense(NUM_CLASSES)(hidden))
    with pytest.raises(ValueError, match=message):
        keras_kd.Distiller(_mlp(6, "teacher"), student, feature_pairs=pairs)


def test_attention_needs_equal_spatial_sizes():
    inputs = keras.Input((6, 6, 2))
    conv = keras.layers.Conv2D(3, 3, strides=2, padding="same", name="conv")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(conv)
    student = keras.Model(inputs, keras.layers.Dense(NUM_CLASSES)(pooled))
    for loss in ("attention", "mse"):
        with pytest.raises(ValueError, match="spatial size"):
            pairs = [FeaturePair("conv", "conv", loss=loss)]
            keras_kd.Distiller(_convnet(8, "teacher"), student, feature_pairs=pairs)


# --- hints and a thin deep student ------------------------------------------------------


def _task_teacher():
    # The teacher defines the task (labels = its argmax), so its hidden layer is the
    # true representation: 32 ReLUs on 8 inputs, 4 classes (largest class ~31 %).
    keras.utils.set_random_seed(100)
    inputs = keras.Input((8,))
    def normal():  # one initializer per layer: an instance reused repeats its draws
        return keras.initializers.RandomNormal(stddev=0.5)

    hidden = keras.layers.Dense(32, activation="relu", name="hidden", kernel_initializer=normal())(
        inputs
    )
    logits = keras.layers.Dense(4, name="logits", kernel_initializer=normal())(hidden)
    return keras.Model(inputs, logits, name="teacher")


def _thin_deep_student():
    inputs = keras.Input((8,))
    hidden = inputs
    for index in range(4):
        hidden = keras.layers.Dense(16, activation="relu", name=f"hidden_{index}")(hidden)
    return keras.Model(inputs, keras.layers.Dense(4, name="logits")(hidden), name="student")


@pytest.mark.slow
def test_hints_and_kd_train_a_thin_deep_student_at_least_as_well_as_kd_alone():
    # Student: 4 x 16 ReLUs against the teacher's 1 x 32; hint: teacher "hidden" ->
    # student "hidden_0" through a learned Dense(16 -> 32) (FitNets), 48 training
    # points, accuracy on 1024 fresh ones. Measured over student seeds 1-8 the gain of
    # hints is +0.031 +0.028 +0.006 +0.021 -0.032 +0.025 -0.025 -0.017 (mean +0.005):
    # on par with KD here, within seed noise, so the test asserts "not worse" on the
    # mean of two seeds with a 0.03 tolerance, and that the hint is actually learned.
    teacher = _task_teacher()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(48, 8)).astype("float32")
    x_test = rng.normal(size=(1024, 8)).astype("float32")
    y = np.argmax(teacher(x).numpy(), axis=1)
    y_test = np.argmax(teacher(x_test).numpy(), axis=1)
    teacher_hidden = _relu_dense(x_test, teacher.get_layer("hidden"))
    # 60 epochs of 2 steps as one pass over repeated data: no per-epoch overhead.
    x_train, y_train = np.tile(x, (60, 1)), np.tile(y, 60)

    accuracy = {"kd": [], "hints": []}
    for seed in (1, 2):
        for mode in ("kd", "hints"):
            keras.utils.set_random_seed(seed)
            student = _thin_deep_student()
            pairs = [FeaturePair("hidden", "hidden_0", name="hint")] if mode == "hints" else None
            distiller = keras_kd.Distiller(teacher, student, feature_pairs=pairs)
            distiller.compile(keras.optimizers.Adam(1e-2), loss=HARD_LOSS, jit_compile=False)
            if pairs:
                hint_before = _hint_mse(distiller, student, x_test, teacher_hidden)
            distiller.fit(x_train, y_train, batch_size=32, epochs=1, verbose=0)
            predictions = np.argmax(student(x_test).numpy(), axis=1)
            accuracy[mode].append(np.mean(predictions == y_test))
        hint_after = _hint_mse(distiller, student, x_test, teacher_hidden)
        assert hint_after < 0.5 * hint_before, (hint_before, hint_after)
    assert min(accuracy["kd"] + accuracy["hints"]) > 0.6, accuracy  # chance: 0.31
    assert np.mean(accuracy["hints"]) >= np.mean(accuracy["kd"]) - 0.03, accuracy


def _hint_mse(distiller, student, x, teacher_hidden):
    projection = distiller.feature_projections["hint"]
    guided = _relu_dense(x, student.get_layer("hidden_0"))
    projected = guided @ projection.kernel.numpy() + projection.bias.numpy()
    return np.mean((projected - teacher_hidden) ** 2)
