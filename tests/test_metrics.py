"""Tests for keras_kd.metrics.ExpectedCalibrationError."""

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from keras import ops

from keras_kd import calibration
from keras_kd import metrics


def _result(metric):
    return float(ops.convert_to_numpy(metric.result()))


def _ece(y_true, y_pred, sample_weight=None, **kwargs):
    metric = metrics.ExpectedCalibrationError(**kwargs)
    metric.update_state(y_true, y_pred, sample_weight=sample_weight)
    return _result(metric)


def _random_case(seed, n=120, num_classes=5):
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=3.0, size=(n, num_classes)).astype("float32")
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs = (probs / probs.sum(axis=1, keepdims=True)).astype("float32")
    labels = rng.integers(0, num_classes, size=n)
    weights = rng.uniform(0.0, 3.0, size=n).astype("float32")
    return logits, probs, labels, weights


def test_public_vectors():
    top_bin = dict(y_true=np.array([1, 0]), y_pred=np.array([[0.05, 0.95], [0.0, 1.0]]))
    assert _ece(**top_bin, num_bins=10) == pytest.approx(0.475, abs=1e-6)
    assert _ece(**top_bin, num_bins=10, norm="max") == pytest.approx(0.475, abs=1e-6)
    same_bin = np.array([[0.6, 0.4], [0.35, 0.65]], "float32")
    assert _ece(np.array([1, 1]), same_bin, num_bins=10) == pytest.approx(0.125, abs=1e-6)
    p = np.array([0.51, 0.45, 0.39, 0.66, 0.68, 0.29, 0.81, 0.85], "float32")
    labels = np.array([0, 0, 0, 1, 0, 1, 1, 1])
    assert _ece(labels, np.stack([1 - p, p], 1), num_bins=10) == pytest.approx(0.145, abs=1e-6)
    assert _ece(labels, p[:, None], num_bins=10) == pytest.approx(0.145, abs=1e-6)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("num_bins", [1, 10, 15])
@pytest.mark.parametrize("norm", ["l1", "l2", "max"])
def test_random_cases_match_reference(seed, num_bins, norm, reference_calibration_error):
    _, probs, labels, weights = _random_case(seed)
    expected = reference_calibration_error(probs, labels, num_bins, norm, weights)
    actual = _ece(labels, probs, weights, num_bins=num_bins, norm=norm)
    assert actual == pytest.approx(expected, abs=2e-6)


def test_streaming_over_batches_equals_one_shot_and_the_array_function():
    logits, _, labels, weights = _random_case(0, n=300)
    metric = metrics.ExpectedCalibrationError(from_logits=True)
    for start in range(0, 300, 64):  # last batch is partial
        stop = start + 64
        metric.update_state(labels[start:stop], logits[start:stop], weights[start:stop])
    one_shot = _ece(labels, logits, weights, from_logits=True)
    assert _result(metric) == pytest.approx(one_shot, abs=1e-6)
    assert one_shot == pytest.approx(
        calibration.expected_calibration_error(
            logits, labels, from_logits=True, sample_weight=weights
        ),
        abs=1e-7,
    )


def test_sparse_column_and_one_hot_labels_agree():
    _, probs, labels, _ = _random_case(1)
    sparse = _ece(labels, probs)
    assert _ece(labels[:, None], probs) == pytest.approx(sparse, abs=1e-7)
    assert _ece(np.eye(5, dtype="float32")[labels], probs) == pytest.approx(sparse, abs=1e-7)


def test_from_logits_equals_softmax_probabilities():
    logits, probs, labels, _ = _random_case(2)
    assert _ece(labels, logits, from_logits=True) == pytest.approx(_ece(labels, probs), abs=1e-6)


def test_integer_sample_weights_equal_repeating_examples():
    _, probs, labels, _ = _random_case(3, n=50)
    counts = np.random.default_rng(3).integers(0, 4, size=50)
    repeated = _ece(np.repeat(labels, counts), np.repeat(probs, counts, axis=0))
    assert _ece(labels, probs, counts.astype("float32")) == pytest.approx(repeated, abs=1e-6)


def test_reset_state_forgets_everything():
    metric = metrics.ExpectedCalibrationError(num_bins=10)
    metric.update_state(np.array([1, 0]), np.array([[0.05, 0.95], [0.0, 1.0]]))
    metric.reset_state()
    assert _result(metric) == 0.0
    metric.update_state(np.array([1, 1]), np.array([[0.6, 0.4], [0.35, 0.65]]))
    assert _result(metric) == pytest.approx(0.125, abs=1e-6)


def test_state_is_three_summed_bin_vectors():
    metric = metrics.ExpectedCalibrationError(num_bins=7)
    assert len(metric.variables) == 3
    for variable in metric.variables:
        assert tuple(variable.shape) == (7,)
        assert variable.dtype == "float32"
        assert variable.aggregation == "sum"


def test_get_config_round_trip():
    metric = metrics.ExpectedCalibrationError(num_bins=20, from_logits=True, norm="max",
                                              name="mce")
    config = metric.get_config()
    assert config["num_bins"] == 20 and config["from_logits"] and config["norm"] == "max"
    clone = metrics.ExpectedCalibrationError.from_config(config)
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(metric))
    assert isinstance(restored, metrics.ExpectedCalibrationError)
    assert restored.get_config() == config


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_bins=0), "num_bins"),
        (dict(num_bins=2.5), "num_bins"),
        (dict(num_bins=True), "num_bins"),
        (dict(norm="l3"), "norm"),
        (dict(from_logits="yes"), "from_logits"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        metrics.ExpectedCalibrationError(**kwargs)


def test_label_prediction_batch_mismatch_raises():
    metric = metrics.ExpectedCalibrationError()
    with pytest.raises(ValueError, match="same number of examples"):
        metric.update_state(np.array([0, 1, 1]), np.full((2, 3), 1 / 3, "float32"))


def _tiny_classifier(num_classes=3):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(num_classes)])
    return model


def _tiny_data(n=128):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int32") + (x[:, 1] > 1).astype("int32")
    return x, y


@pytest.mark.parametrize("jit_compile", [False, True])
def test_evaluate_reports_the_same_value_as_the_array_function(jit_compile):
    x, y = _tiny_data()
    model = _tiny_classifier()
    model.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[metrics.ExpectedCalibrationError(from_logits=True)],
        jit_compile=jit_compile,
    )
    logs = model.evaluate(x, y, batch_size=50, verbose=0, return_dict=True)
    expected = calibration.expected_calibration_error(
        model.predict(x, verbose=0), y, from_logits=True
    )
    assert logs["ece"] == pytest.approx(expected, abs=1e-6)


def test_early_stopping_auto_mode_minimises_ece():
    x, y = _tiny_data()
    model = _tiny_classifier()
    model.compile(
        "sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[metrics.ExpectedCalibrationError(from_logits=True)],
    )
    stopper = keras.callbacks.EarlyStopping(monitor="val_ece", mode="auto", patience=5)
    model.fit(x, y, validation_data=(x, y), epochs=2, verbose=0, callbacks=[stopper])
    assert stopper.monitor_op is ops.less
    assert metrics.ExpectedCalibrationError()._direction == "down"


_probability_rows = st.integers(min_value=1, max_value=40).flatmap(
    lambda n: st.tuples(
        st.lists(
            st.lists(st.floats(0.0, 1.0, width=32), min_size=3, max_size=3),
            min_size=n, max_size=n,
        ),
        st.lists(st.integers(0, 2), min_size=n, max_size=n),
        st.integers(1, 4),
    )
)


@settings(max_examples=25, deadline=None)
@given(case=_probability_rows, num_bins=st.integers(1, 20))
def test_property_streaming_equals_one_shot(case, num_bins):
    rows, labels, num_batches = case
    scores = np.asarray(rows, "float32") + 1e-3
    probs = scores / scores.sum(axis=1, keepdims=True)
    labels = np.asarray(labels)
    metric = metrics.ExpectedCalibrationError(num_bins=num_bins)
    for chunk in np.array_split(np.arange(len(labels)), num_batches):
        if len(chunk):
            metric.update_state(labels[chunk], probs[chunk])
    streamed = _result(metric)
    assert streamed == pytest.approx(_ece(labels, probs, num_bins=num_bins), abs=1e-6)
    assert 0.0 <= streamed <= 1.0


# -- Issue 15: classwise, equal-mass, Brier, NLL, binary ---------------------------------


def test_classwise_streaming_equals_the_array_function_and_shards():
    logits, probs, labels, weights = _random_case(4, n=400, num_classes=5)
    metric = metrics.ExpectedCalibrationError(from_logits=True, classwise=True, num_classes=5)
    for start in range(0, 400, 96):
        metric.update_state(labels[start:start + 96], logits[start:start + 96],
                            sample_weight=weights[start:start + 96])
    expected = calibration.expected_calibration_error(logits, labels, from_logits=True,
                                                      classwise=True, sample_weight=weights)
    assert _result(metric) == pytest.approx(expected, abs=1e-5)
    assert tuple(metric.bin_counts.shape) == (5, 15)


@pytest.mark.parametrize("num_bins", [5, 15])
def test_streamed_equal_mass_ece_is_within_its_stated_bound_of_the_exact_one(num_bins):
    from keras_kd import _binning

    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3.0, size=(3000, 10)).astype("float32")
    labels = rng.integers(0, 10, size=3000)
    labels[:1500] = logits[:1500].argmax(1)  # confident and often right
    exact = calibration.expected_calibration_error(logits, labels, num_bins,
                                                   binning="equal_mass", from_logits=True)
    metric = metrics.ExpectedCalibrationError(num_bins, from_logits=True, binning="equal_mass",
                                              num_fine_bins=1000)
    for start in range(0, 3000, 500):
        metric.update_state(labels[start:start + 500], logits[start:start + 500])
    bound = float(ops.convert_to_numpy(_binning.equal_mass_error_bound(metric.bin_counts,
                                                                        num_bins)))
    assert abs(_result(metric) - exact) <= bound + 1e-6
    assert bound < 0.1  # a worst case; the actual difference is far smaller
    assert abs(_result(metric) - exact) < 0.01


def test_brier_metric_equals_the_array_function_for_each_output_form():
    logits, probs, labels, weights = _random_case(5)
    metric = metrics.BrierScore(from_logits=True)
    metric.update_state(labels[:60], logits[:60], sample_weight=weights[:60])
    metric.update_state(labels[60:], logits[60:], sample_weight=weights[60:])
    expected = calibration.brier_score(logits, labels, from_logits=True, sample_weight=weights)
    assert _result(metric) == pytest.approx(expected, rel=1e-5)
    binary = probs[:, 0] / (probs[:, 0] + probs[:, 1])
    binary_labels = labels % 2
    for shape in (binary, binary[:, None]):
        metric = metrics.BrierScore(from_logits=False)
        metric.update_state(binary_labels, shape)
        assert _result(metric) == pytest.approx(
            float(np.mean(2 * (binary.astype(np.float64) - binary_labels) ** 2)), rel=1e-5)


def test_keras_cross_entropy_metric_is_the_nll():
    logits, _, labels, weights = _random_case(6)
    keras_nll = keras.metrics.SparseCategoricalCrossentropy(from_logits=True)
    keras_nll.update_state(labels, logits, sample_weight=weights)
    expected = calibration.negative_log_likelihood(logits, labels, from_logits=True,
                                                   sample_weight=weights)
    assert _result(keras_nll) == pytest.approx(expected, rel=1e-5)


def test_one_dimensional_binary_predictions_are_n_examples():
    p = np.array([0.51, 0.45, 0.39, 0.66, 0.68, 0.29, 0.81, 0.85], "float32")
    labels = np.array([0, 0, 0, 1, 0, 1, 1, 1])
    assert _ece(labels, p, num_bins=10, from_logits=False) == pytest.approx(0.145, abs=1e-6)


def test_every_measure_compiles_and_is_order_free(tmp_path):
    keras.utils.set_random_seed(0)
    logits, _, labels, _ = _random_case(7, n=256, num_classes=3)
    x = logits + np.random.default_rng(0).normal(size=logits.shape).astype("float32")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(3)])
    model.compile("adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[
                      metrics.ExpectedCalibrationError(from_logits=True),
                      metrics.ExpectedCalibrationError(from_logits=True, norm="max", name="mce"),
                      metrics.ExpectedCalibrationError(from_logits=True, norm="l2", name="rmsce"),
                      metrics.ExpectedCalibrationError(from_logits=True, classwise=True,
                                                       num_classes=3, name="classwise_ece"),
                      metrics.ExpectedCalibrationError(from_logits=True, binning="equal_mass",
                                                       name="ace"),
                      metrics.BrierScore(from_logits=True),
                      keras.metrics.SparseCategoricalCrossentropy(from_logits=True, name="nll"),
                  ])
    stopper = keras.callbacks.EarlyStopping(monitor="val_classwise_ece", patience=5)
    history = model.fit(x, labels, validation_data=(x, labels), epochs=2, verbose=0,
                        callbacks=[stopper])
    predictions = model.predict(x, verbose=0)
    common = dict(from_logits=True)
    expected = {
        "val_ece": calibration.expected_calibration_error(predictions, labels, **common),
        "val_mce": calibration.expected_calibration_error(predictions, labels, norm="max",
                                                          **common),
        "val_rmsce": calibration.expected_calibration_error(predictions, labels, norm="l2",
                                                            **common),
        "val_classwise_ece": calibration.expected_calibration_error(predictions, labels,
                                                                    classwise=True, **common),
        "val_brier": calibration.brier_score(predictions, labels, **common),
        "val_nll": calibration.negative_log_likelihood(predictions, labels, **common),
    }
    for key, value in expected.items():
        assert history.history[key][-1] == pytest.approx(value, abs=2e-5), key
    assert stopper.monitor_op is ops.less
