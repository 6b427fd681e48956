"""Tests for keras_kd.calibration: ECE on arrays, NLL, Brier, temperature scaling,
the reliability diagram."""

import sys
import warnings

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from keras_kd import calibration
from keras_kd.calibration import TemperatureScaling
from _numpy_reference import softmax as _softmax

BINARY_P = np.array([0.51, 0.45, 0.39, 0.66, 0.68, 0.29, 0.81, 0.85])
BINARY_LABELS = np.array([0, 0, 0, 1, 0, 1, 1, 1])


def _overconfident_case(temperature, n=20000, num_classes=10, seed=0):
    """Logits z and labels drawn from softmax(z / temperature)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=4.0, size=(n, num_classes))
    cumulative = np.cumsum(_softmax(logits / temperature), axis=1)
    labels = (rng.uniform(size=(n, 1)) > cumulative).sum(axis=1)
    return logits.astype("float32"), np.minimum(labels, num_classes - 1)


def _nll_reference(logits, labels, temperature=1.0):
    log_probs = np.log(_softmax(np.asarray(logits, np.float64) / temperature))
    return -np.mean(log_probs[np.arange(len(labels)), labels])


# -- expected_calibration_error -----------------------------------------------------


def test_public_vectors():
    ece = calibration.expected_calibration_error
    assert ece([[0.05, 0.95], [0.0, 1.0]], [1, 0], 10) == pytest.approx(0.475, abs=1e-6)
    assert ece([[0.05, 0.95], [0.0, 1.0]], [1, 0], 10, "max") == pytest.approx(0.475, abs=1e-6)
    same_bin = np.array([[0.6, 0.4], [0.35, 0.65]], "float32")
    assert ece(same_bin, [1, 1], 10) == pytest.approx(0.125, abs=1e-6)
    two_columns = np.stack([1 - BINARY_P, BINARY_P], axis=1)
    assert ece(two_columns, BINARY_LABELS, 10) == pytest.approx(0.145, abs=1e-6)
    assert ece(BINARY_P[:, None], BINARY_LABELS, 10) == pytest.approx(0.145, abs=1e-6)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("norm", ["l1", "l2", "max"])
def test_random_cases_match_reference(seed, norm, reference_calibration_error):
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(6), size=300).astype("float32")
    labels = rng.integers(0, 6, size=300)
    weights = rng.uniform(0.1, 2.0, size=300)
    expected = reference_calibration_error(probs, labels, 15, norm, weights)
    actual = calibration.expected_calibration_error(probs, labels, norm=norm,
                                                    sample_weight=weights)
    assert isinstance(actual, float)
    assert actual == pytest.approx(expected, abs=2e-6)


def test_equal_mass_hand_computed():
    probs = np.stack([1 - BINARY_P, BINARY_P], axis=1)
    ece = calibration.expected_calibration_error
    # Sorted confidences .51 .55 | .61 .66 | .68 .71 | .81 .85, correct 0 1 | 1 1 | 0 0 | 1 1.
    assert ece(probs, BINARY_LABELS, 4, binning="equal_mass") == pytest.approx(0.315, abs=1e-6)
    # Bins of 3, 3, 2 (larger first): gaps .11, .35, .17.
    assert ece(probs, BINARY_LABELS, 3, binning="equal_mass") == pytest.approx(0.215, abs=1e-6)


@pytest.mark.parametrize("num_bins", [1, 4, 15])
def test_equal_mass_matches_sorted_array_split_reference(num_bins):
    rng = np.random.default_rng(num_bins)
    probs = rng.dirichlet(np.ones(4), size=203)
    labels = rng.integers(0, 4, size=203)
    confidences = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    order = np.argsort(confidences)
    expected = 0.0
    for chunk in np.array_split(order, num_bins):
        expected += len(chunk) / 203 * abs(correct[chunk].mean() - confidences[chunk].mean())
    actual = calibration.expected_calibration_error(probs, labels, num_bins,
                                                    binning="equal_mass")
    assert actual == pytest.approx(expected, abs=2e-6)


def test_logits_one_hot_labels_and_uniform_weights_agree():
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=2.0, size=(100, 3)).astype("float32")
    labels = rng.integers(0, 3, size=100)
    ece = calibration.expected_calibration_error
    base = ece(_softmax(logits), labels)
    assert ece(logits, labels, from_logits=True) == pytest.approx(base, abs=1e-6)
    assert ece(_softmax(logits), np.eye(3)[labels]) == pytest.approx(base, abs=1e-7)
    assert ece(_softmax(logits), labels, sample_weight=np.full(100, 2.0)) == pytest.approx(
        base, abs=1e-6
    )
    equal_mass = ece(_softmax(logits), labels, binning="equal_mass")
    assert ece(
        _softmax(logits), labels, binning="equal_mass", sample_weight=np.full(100, 2.0)
    ) == pytest.approx(equal_mass, abs=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_bins=0), "num_bins"),
        (dict(num_bins=1.5), "num_bins"),
        (dict(norm="l3"), "norm"),
        (dict(binning="quantile"), "binning"),
        (dict(labels=[0, 1, 0]), "same number of examples"),
        (dict(sample_weight=[1.0]), "one weight per example"),
        (dict(sample_weight=[1.0, -1.0]), "non-negative"),
        (dict(sample_weight=[0.0, 0.0]), "positive sum"),
        (dict(probs=np.zeros((0, 2)), labels=np.zeros(0)), "N >= 1"),
        (dict(labels=[0, 5]), "Class indices"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    arguments = dict(probs=[[0.2, 0.8], [0.6, 0.4]], labels=[1, 0])
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=match):
        calibration.expected_calibration_error(**arguments)


_cases = st.integers(min_value=1, max_value=30).flatmap(
    lambda n: st.tuples(
        st.lists(st.lists(st.floats(0.0, 1.0), min_size=3, max_size=3), min_size=n, max_size=n),
        st.lists(st.integers(0, 2), min_size=n, max_size=n),
        st.randoms(use_true_random=False),
    )
)


@settings(max_examples=25, deadline=None)
@given(case=_cases, num_bins=st.integers(1, 20),
       binning=st.sampled_from(["equal_width", "equal_mass"]))
def test_property_ece_in_unit_interval_and_invariant_to_order(case, num_bins, binning):
    rows, labels, random = case
    scores = np.asarray(rows) + 1e-3
    probs = (scores / scores.sum(axis=1, keepdims=True)).astype("float32")
    labels = np.asarray(labels)
    value = calibration.expected_calibration_error(probs, labels, num_bins, binning=binning)
    assert 0.0 <= value <= 1.0
    order = list(range(len(labels)))
    random.shuffle(order)
    shuffled = calibration.expected_calibration_error(
        probs[order], labels[order], num_bins, binning=binning
    )
    assert shuffled == pytest.approx(value, abs=1e-6)


# -- negative_log_likelihood and brier_score ---------------------------------------


def test_negative_log_likelihood_matches_reference_and_keras():
    logits, labels = _overconfident_case(1.0, n=200, num_classes=4)
    nll = calibration.negative_log_likelihood(logits, labels, from_logits=True)
    assert nll == pytest.approx(_nll_reference(logits, labels), rel=1e-6)
    probs = _softmax(logits.astype(np.float64)).astype("float32")
    keras_value = keras.losses.SparseCategoricalCrossentropy()(labels, probs)
    from_probs = calibration.negative_log_likelihood(probs, labels, from_logits=False)
    assert from_probs == pytest.approx(float(keras_value), rel=1e-5)
    assert calibration.negative_log_likelihood([[0.0, 0.0]], [1], True) == pytest.approx(np.log(2))


def test_negative_log_likelihood_weights_and_soft_targets():
    logits = np.array([[2.0, 0.0], [0.0, 1.0]])
    per_example = -np.log(_softmax(logits))[[0, 1], [0, 1]]
    weighted = calibration.negative_log_likelihood(logits, [0, 1], True, sample_weight=[3.0, 1.0])
    assert weighted == pytest.approx((3 * per_example[0] + per_example[1]) / 4)
    soft = np.array([[0.5, 0.5], [0.0, 1.0]])
    expected = np.mean(-(soft * np.log(_softmax(logits))).sum(axis=1))
    assert calibration.negative_log_likelihood(logits, soft, True) == pytest.approx(expected)


def test_brier_score():
    assert calibration.brier_score([[0.5, 0.5]], [1]) == pytest.approx(0.5)
    assert calibration.brier_score([[1.0, 0.0]], [1]) == pytest.approx(2.0)
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), size=50)
    labels = rng.integers(0, 3, size=50)
    expected = np.mean(np.sum((probs - np.eye(3)[labels]) ** 2, axis=1))
    assert calibration.brier_score(probs, labels) == pytest.approx(expected)
    logits = np.log(probs)
    assert calibration.brier_score(logits, labels, from_logits=True) == pytest.approx(expected)
    binary = np.stack([1 - BINARY_P, BINARY_P], axis=1)
    assert calibration.brier_score(BINARY_P[:, None], BINARY_LABELS) == pytest.approx(
        calibration.brier_score(binary, BINARY_LABELS)
    )


# -- TemperatureScaling -------------------------------------------------------------


@pytest.mark.parametrize("true_temperature", [2.0, 0.5])
def test_temperature_scaling_recovers_the_true_temperature(true_temperature):
    logits, labels = _overconfident_case(true_temperature)
    scaler = TemperatureScaling().fit(logits, labels)
    assert scaler.temperature == pytest.approx(true_temperature, rel=0.03)
    # It is the NLL minimiser: nudging T either way is worse.
    best = _nll_reference(logits, labels, scaler.temperature)
    assert best <= _nll_reference(logits, labels, scaler.temperature * 1.01)
    assert best <= _nll_reference(logits, labels, scaler.temperature / 1.01)
    calibrated = scaler.predict_proba(logits)
    np.testing.assert_array_equal(calibrated.argmax(axis=1), logits.argmax(axis=1))
    before = calibration.expected_calibration_error(logits, labels, from_logits=True)
    after = calibration.expected_calibration_error(calibrated, labels)
    assert after < before


def test_probabilities_fit_to_the_same_temperature_and_transform():
    logits, labels = _overconfident_case(1.5, n=3000)
    from_logits = TemperatureScaling().fit(logits, labels)
    probs = _softmax(logits.astype(np.float64))
    from_probs = TemperatureScaling().fit(probs, labels, from_probabilities=True)
    assert from_probs.temperature == pytest.approx(from_logits.temperature, rel=1e-6)
    np.testing.assert_allclose(from_logits.transform(logits), logits / from_logits.temperature,
                               rtol=1e-6)
    np.testing.assert_allclose(
        from_logits.predict_proba(logits),
        _softmax(logits / from_logits.temperature), rtol=1e-5, atol=1e-7,
    )
    np.testing.assert_allclose(
        from_probs.predict_proba(probs, from_probabilities=True),
        from_logits.predict_proba(logits), rtol=1e-5, atol=1e-7,
    )


def test_binary_single_logit_column():
    logits, labels = _overconfident_case(2.0, n=4000, num_classes=2)
    margin = (logits[:, 1] - logits[:, 0])[:, None]
    two_columns = TemperatureScaling().fit(logits, labels).temperature
    one_column = TemperatureScaling().fit(margin, labels)
    assert one_column.temperature == pytest.approx(two_columns, rel=1e-6)
    probs = one_column.predict_proba(margin)
    assert probs.shape == (4000, 1)
    np.testing.assert_allclose(probs[:, 0], 1 / (1 + np.exp(-margin[:, 0] / two_columns)),
                               rtol=1e-5)


def test_probabilities_passed_as_logits_raise():
    logits, labels = _overconfident_case(1.0, n=100)
    with pytest.raises(ValueError, match="`logits` looks like probabilities"):
        TemperatureScaling().fit(_softmax(logits), labels)
    with pytest.raises(ValueError, match="from_probabilities=True"):
        TemperatureScaling().predict_proba(_softmax(logits))


def test_no_finite_temperature_raises():
    logits = np.array([[3.0, 0.0], [0.0, 2.0], [1.0, 0.5]])
    with pytest.raises(ValueError, match="T -> 0"):
        TemperatureScaling().fit(logits, [0, 1, 0])
    with pytest.raises(ValueError, match="T -> infinity"):
        TemperatureScaling().fit(logits, [1, 0, 1])


def test_running_out_of_iterations_warns():
    logits, labels = _overconfident_case(2.0, n=500)
    with pytest.warns(RuntimeWarning, match="did not converge"):
        TemperatureScaling().fit(logits, labels, max_iterations=1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(max_iterations=0), "max_iterations"),
        (dict(tolerance=0.0), "tolerance"),
        (dict(from_probabilities=1), "from_probabilities"),
    ],
)
def test_bad_fit_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TemperatureScaling().fit(np.array([[1.0, 0.0]]), [1], **kwargs)


def test_bad_initial_temperature_raises():
    with pytest.raises(ValueError, match="temperature"):
        TemperatureScaling(temperature=0.0)


def test_wrap_outputs_calibrated_probabilities_and_round_trips(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="logits")])
    x = np.random.default_rng(0).normal(size=(400, 4)).astype("float32")
    logits = model.predict(x, verbose=0)
    rng = np.random.default_rng(1)
    labels = (rng.uniform(size=(400, 1)) > np.cumsum(_softmax(logits / 0.7), axis=1)).sum(1)
    scaler = TemperatureScaling().fit(logits, np.minimum(labels, 2))
    wrapped = scaler.wrap(model)
    expected = scaler.predict_proba(logits)
    np.testing.assert_allclose(wrapped.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)
    path = str(tmp_path / "calibrated.keras")
    wrapped.save(path)
    restored = keras.models.load_model(path)
    np.testing.assert_allclose(restored.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)
    layer = restored.get_layer("temperature_scaling")
    assert isinstance(layer, calibration.TemperatureScalingLayer)
    assert layer.temperature == pytest.approx(scaler.temperature)


def test_temperature_scaling_layer_config_and_probability_inputs():
    layer = calibration.TemperatureScalingLayer(temperature=2.0, from_logits=False)
    clone = calibration.TemperatureScalingLayer.from_config(layer.get_config())
    assert clone.temperature == 2.0 and clone.from_logits is False
    probs = np.array([[0.7, 0.2, 0.1]], "float32")
    expected = _softmax(np.log(probs) / 2.0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(probs)), expected, rtol=1e-5)
    binary = calibration.TemperatureScalingLayer(temperature=2.0)(np.array([[2.0]], "float32"))
    assert float(keras.ops.convert_to_numpy(binary)[0, 0]) == pytest.approx(1 / (1 + np.e**-1))


# -- reliability_diagram ------------------------------------------------------------


def test_reliability_diagram_draws_bars_histogram_and_ece(tmp_path):
    figure = calibration.reliability_diagram([[0.05, 0.95], [0.0, 1.0]], [1, 0], num_bins=10,
                                             title="toy")
    top, histogram = figure.axes
    assert top.get_title() == "toy: ECE = 0.4750 (10 bins)"
    assert [round(bar.get_height(), 6) for bar in top.patches[:10]] == [0.0] * 9 + [0.5]
    assert [bar.get_height() for bar in histogram.patches] == [0.0] * 9 + [2.0]
    path = tmp_path / "diagram.png"
    figure.savefig(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_reliability_diagram_into_given_axes():
    import matplotlib.figure

    figure = matplotlib.figure.Figure()
    ax = figure.add_subplot()
    returned = calibration.reliability_diagram(np.log([[0.2, 0.8]]), [1], ax=ax, from_logits=True)
    assert returned is figure
    assert len(figure.axes) == 2  # the histogram's twin axis
    assert "ECE = 0.2000" in ax.get_title()


def test_reliability_diagram_without_matplotlib_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"pip install keras-kd\[plots\]"):
        calibration.reliability_diagram([[0.2, 0.8]], [1])


def test_no_warnings_on_a_normal_fit():
    logits, labels = _overconfident_case(1.3, n=1000)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        TemperatureScaling().fit(logits, labels)
