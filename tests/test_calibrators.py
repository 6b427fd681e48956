"""Calibrators beyond temperature scaling, intervals, the noise floor and the
comparison helper, each against an independent reference (NumPy written here,
scikit-learn, SciPy with numerical gradients, torchmetrics)."""

import functools
import warnings

import keras
import numpy as np
import pytest

from keras_kd import calibration

NUM_CLASSES = 4


def _softmax(logits):
    logits = np.asarray(logits, np.float64)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _case(n=1500, seed=0, num_classes=NUM_CLASSES, temperature=1.7):
    """Logits z and labels drawn from softmax(A z) for a fixed non-diagonal A."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=2.5, size=(n, num_classes))
    mixing = np.eye(num_classes) / temperature + 0.1 * np.roll(np.eye(num_classes), 1, axis=1)
    cumulative = np.cumsum(_softmax(logits @ mixing.T + 0.3 * np.arange(num_classes)), axis=1)
    labels = np.minimum((rng.uniform(size=(n, 1)) > cumulative).sum(1), num_classes - 1)
    return logits.astype("float32"), labels


LOGITS, LABELS = _case()
TEST_LOGITS, TEST_LABELS = _case(seed=1)


def _nll(probs, labels):
    return float(-np.mean(np.log(np.asarray(probs, np.float64)[np.arange(len(labels)), labels])))


# -- Vector and matrix scaling ---------------------------------------------------------


def _unpenalised(logistic_regression, **kwargs):
    # scikit-learn 1.8 deprecates penalty=None for C=inf, which older versions reject.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model = logistic_regression(penalty=None, **kwargs)
    model.fit = _quiet(model.fit)
    return model


def _quiet(function):
    def call(*args, **kwargs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return function(*args, **kwargs)
    return call


def test_vector_scaling_matches_scipy_with_numerical_gradients():
    from scipy import optimize

    def objective(params):
        scale, bias = params[:NUM_CLASSES], params[NUM_CLASSES:]
        return _nll(_softmax(LOGITS.astype(np.float64) * scale + bias), LABELS)

    reference = optimize.minimize(objective, np.r_[np.ones(4), np.zeros(4)], method="Nelder-Mead",
                                  options={"maxiter": 20000, "xatol": 1e-8, "fatol": 1e-12})
    scaler = calibration.VectorScaling().fit(LOGITS, LABELS)
    ours = _nll(scaler.predict_proba(LOGITS), LABELS)
    assert ours <= reference.fun + 1e-6
    expected = _softmax(LOGITS.astype(np.float64) * reference.x[:4] + reference.x[4:])
    np.testing.assert_allclose(scaler.predict_proba(LOGITS), expected, atol=2e-3)


def test_matrix_scaling_without_regularisation_equals_multinomial_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    log_probs = np.log(_softmax(LOGITS))
    reference = _unpenalised(LogisticRegression, max_iter=5000, tol=1e-10).fit(log_probs, LABELS)
    scaler = calibration.MatrixScaling(off_diagonal=0.0, intercept=0.0).fit(LOGITS, LABELS)
    np.testing.assert_allclose(scaler.predict_proba(TEST_LOGITS),
                               reference.predict_proba(np.log(_softmax(TEST_LOGITS))), atol=2e-4)


def test_odir_penalty_shrinks_off_diagonal_weights_and_bias():
    free = calibration.MatrixScaling(off_diagonal=0.0, intercept=0.0).fit(LOGITS, LABELS)
    odir = calibration.MatrixScaling(off_diagonal=1e3, intercept=1e3).fit(LOGITS, LABELS)
    off = 1 - np.eye(NUM_CLASSES)
    assert np.abs(odir.kernel_ * off).max() < 0.2 * np.abs(free.kernel_ * off).max()
    assert np.abs(odir.bias_).max() < 0.2 * np.abs(free.bias_).max()


def test_scaling_reduces_test_nll_below_the_raw_model():
    raw = _nll(_softmax(TEST_LOGITS), TEST_LABELS)
    for calibrator in (calibration.TemperatureScaling(), calibration.VectorScaling(),
                       calibration.MatrixScaling()):
        calibrated = calibrator.fit(LOGITS, LABELS).predict_proba(TEST_LOGITS)
        assert _nll(calibrated, TEST_LABELS) < raw - 0.01, type(calibrator).__name__


def test_binary_vector_scaling_is_platt_scaling():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(3)
    z = rng.normal(scale=3, size=2000)
    y = (rng.uniform(size=2000) < 1 / (1 + np.exp(-(0.5 * z + 0.4)))).astype(int)
    platt = _unpenalised(LogisticRegression, tol=1e-10).fit(z[:, None], y)
    ours = calibration.VectorScaling().fit(z, y).predict_proba(z)
    assert ours.shape == (2000, 1)
    np.testing.assert_allclose(ours[:, 0], platt.predict_proba(z[:, None])[:, 1], atol=1e-4)


# -- Histogram binning and isotonic regression -------------------------------------------


def test_histogram_binning_matches_numpy_reference():
    probs = _softmax(LOGITS)
    num_bins = 10
    mapped = np.empty_like(probs)
    test_probs = _softmax(TEST_LOGITS)
    test_mapped = np.empty_like(test_probs)
    for k in range(NUM_CLASSES):
        edges = np.linspace(0, 1, num_bins + 1)
        values = []
        for b in range(num_bins):
            upper = probs[:, k] < edges[b + 1] if b < num_bins - 1 else probs[:, k] <= 1
            inside = (probs[:, k] >= edges[b]) & upper
            values.append((LABELS[inside] == k).mean() if inside.any() else (b + 0.5) / num_bins)
        index = np.minimum((test_probs[:, k] * num_bins).astype(int), num_bins - 1)
        test_mapped[:, k] = np.asarray(values)[index]
    del mapped
    expected = test_mapped / test_mapped.sum(1, keepdims=True)
    ours = calibration.HistogramBinning(num_bins).fit(LOGITS, LABELS).predict_proba(TEST_LOGITS)
    np.testing.assert_allclose(ours, expected, atol=1e-6)


def test_isotonic_matches_scikit_learn_at_the_fitted_points():
    from sklearn.isotonic import IsotonicRegression

    probs = _softmax(LOGITS)
    weights = np.random.default_rng(5).uniform(0.5, 2.0, size=len(LABELS))
    expected = np.stack([
        IsotonicRegression(out_of_bounds="clip").fit(
            probs[:, k], (LABELS == k).astype(float), sample_weight=weights).predict(probs[:, k])
        for k in range(NUM_CLASSES)
    ], axis=1)
    expected = expected / expected.sum(1, keepdims=True)
    ours = calibration.IsotonicCalibration().fit(LOGITS, LABELS, sample_weight=weights)
    np.testing.assert_allclose(ours.predict_proba(LOGITS), expected, atol=1e-5)


# -- Shared API: wrap, save, load, config ---------------------------------------------------


CALIBRATORS = [
    calibration.TemperatureScaling,
    calibration.VectorScaling,
    calibration.MatrixScaling,
    calibration.HistogramBinning,
    calibration.IsotonicCalibration,
]


@pytest.mark.parametrize("make", CALIBRATORS, ids=lambda c: c.__name__)
def test_wrap_saves_loads_and_matches_predict_proba(make, tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(NUM_CLASSES)])
    x = np.random.default_rng(0).normal(size=(300, 3)).astype("float32")
    logits = model.predict(x, verbose=0) * 3.0
    model.layers[-1].kernel.assign(model.layers[-1].kernel * 3.0)
    model.layers[-1].bias.assign(model.layers[-1].bias * 3.0)
    labels = np.minimum((np.random.default_rng(1).uniform(size=(300, 1))
                         > np.cumsum(_softmax(logits / 2), 1)).sum(1), NUM_CLASSES - 1)
    calibrator = make().fit(logits, labels)
    expected = calibrator.predict_proba(logits)
    wrapped = calibrator.wrap(model)
    np.testing.assert_allclose(wrapped.predict(x, verbose=0), expected, atol=2e-5)
    path = str(tmp_path / "calibrated.keras")
    wrapped.save(path)
    restored = keras.models.load_model(path)
    np.testing.assert_allclose(restored.predict(x, verbose=0), expected, atol=2e-5)
    clone = type(calibrator).from_config(calibrator.get_config())
    np.testing.assert_allclose(clone.predict_proba(logits), expected, atol=1e-6)


@pytest.mark.parametrize("make", CALIBRATORS[2:], ids=lambda c: c.__name__)
def test_probabilities_fit_like_their_logits(make):
    # Not VectorScaling: `w * z + b` on logits is not `w * log p + b` unless w is uniform.
    from_logits = make().fit(LOGITS, LABELS).predict_proba(TEST_LOGITS)
    probs = _softmax(LOGITS).astype("float32")
    from_probs = make().fit(probs, LABELS, from_probabilities=True).predict_proba(
        _softmax(TEST_LOGITS).astype("float32"), from_probabilities=True)
    np.testing.assert_allclose(from_probs, from_logits, atol=5e-3)


def test_wrap_before_fit_raises():
    with pytest.raises(ValueError, match="fit"):
        calibration.VectorScaling().wrap(keras.Sequential([keras.Input((2,))]))


# -- Measures: classwise, intervals, noise floor ------------------------------------------


def _np_classwise_ece(probs, labels, num_bins=15):
    edges = np.linspace(0, 1, num_bins + 1)
    errors = []
    for k in range(probs.shape[1]):
        p, y = probs[:, k], (labels == k).astype(float)
        total = 0.0
        for b in range(num_bins):
            upper = p < edges[b + 1] if b < num_bins - 1 else p <= 1
            inside = (p >= edges[b]) & upper
            if inside.any():
                total += inside.mean() * abs(y[inside].mean() - p[inside].mean())
        errors.append(total)
    return float(np.mean(errors))


def test_classwise_ece_matches_numpy():
    probs = _softmax(TEST_LOGITS).astype("float32")
    ours = calibration.expected_calibration_error(probs, TEST_LABELS, classwise=True)
    assert ours == pytest.approx(_np_classwise_ece(probs.astype(np.float64), TEST_LABELS),
                                 abs=1e-6)
    from_logits = calibration.expected_calibration_error(TEST_LOGITS, TEST_LABELS,
                                                         from_logits=True, classwise=True)
    assert from_logits == pytest.approx(ours, abs=1e-5)


def test_bootstrap_interval_is_seeded_and_matches_a_numpy_bootstrap():
    probs = _softmax(TEST_LOGITS)
    measure = calibration.expected_calibration_error
    interval = calibration.bootstrap_interval(measure, probs, TEST_LABELS, num_resamples=50,
                                              seed=7)
    again = calibration.bootstrap_interval(measure, probs, TEST_LABELS, num_resamples=50, seed=7)
    assert interval == again
    rng = np.random.default_rng(7)
    values = []
    for _ in range(50):
        idx = rng.integers(0, len(probs), size=len(probs))
        values.append(measure(probs[idx], TEST_LABELS[idx]))
    assert interval.low == pytest.approx(np.quantile(values, 0.025))
    assert interval.high == pytest.approx(np.quantile(values, 0.975))
    assert interval.low <= interval.estimate <= interval.high


def test_perfectly_calibrated_ece_matches_simulation_and_shrinks_with_n():
    probs = _softmax(TEST_LOGITS)
    rng = np.random.default_rng(0)
    cumulative = np.cumsum(probs, 1)
    simulated = []
    for _ in range(20):
        labels = np.minimum((rng.uniform(size=(len(probs), 1)) > cumulative).sum(1), 3)
        simulated.append(calibration.expected_calibration_error(probs, labels))
    floor = calibration.perfectly_calibrated_ece(probs, num_draws=20, seed=0)
    assert floor == pytest.approx(np.mean(simulated), rel=1e-9)
    small = calibration.perfectly_calibrated_ece(probs[:150], num_draws=20)
    assert small > floor > 0


# -- Comparison helper ------------------------------------------------------------------------


def test_compare_calibrators_reports_every_row_with_intervals():
    comparison = calibration.compare_calibrators(LOGITS, LABELS, TEST_LOGITS, TEST_LABELS,
                                                 num_resamples=20)
    names = [result.name for result in comparison.results]
    assert names == ["none", "temperature", "vector", "matrix (ODIR)", "histogram binning",
                     "isotonic"]
    raw = comparison.results[0]
    assert raw.nll.estimate == pytest.approx(_nll(_softmax(TEST_LOGITS), TEST_LABELS), rel=1e-6)
    temperature = comparison.results[1]
    assert temperature.accuracy.estimate == raw.accuracy.estimate  # argmax kept
    assert temperature.nll.estimate < raw.nll.estimate
    for result in comparison.results:
        assert result.ece.low < result.ece.high  # a binned ECE's resamples sit higher
        for interval in (result.nll, result.brier, result.accuracy):
            assert interval.low <= interval.estimate <= interval.high
    table = comparison.to_markdown()
    assert table.count("\n| ") == 6 and "matrix (ODIR)" in table
    figure = comparison.figure()
    assert len(figure.axes) == 12  # 2 rows of 3 diagrams, each with its histogram


def test_several_models_in_one_figure_and_weights_that_mask():
    probs = _softmax(TEST_LOGITS)
    figure = calibration.reliability_diagrams({"a": probs, "b": TEST_LOGITS}, TEST_LABELS,
                                              from_logits={"a": False, "b": True})
    titles = [ax.get_title() for ax in figure.axes[:4:2]] + [figure.axes[1].get_title()]
    assert any(title.startswith("a:") for title in titles)
    mask = (np.arange(len(probs)) % 2).astype("float32")
    masked = calibration.reliability_diagram(probs, TEST_LABELS, sample_weight=mask)
    subset = calibration.reliability_diagram(probs[mask > 0], TEST_LABELS[mask > 0])
    assert masked.axes[0].get_title() == subset.axes[0].get_title()
    heights = [[p.get_height() for p in f.axes[1].patches] for f in (masked, subset)]
    assert heights[0] == pytest.approx(heights[1])


# -- torchmetrics ------------------------------------------------------------------------------


@pytest.mark.parametrize("norm", ["l1", "l2", "max"])
@pytest.mark.parametrize("num_bins", [5, 15])
def test_top_label_measures_equal_torchmetrics(norm, num_bins):
    torch = pytest.importorskip("torch")
    from torchmetrics.functional.classification import multiclass_calibration_error

    probs = _softmax(TEST_LOGITS).astype("float32")
    ours = calibration.expected_calibration_error(probs, TEST_LABELS, num_bins, norm)
    theirs = multiclass_calibration_error(torch.tensor(probs), torch.tensor(TEST_LABELS),
                                          num_classes=NUM_CLASSES, n_bins=num_bins, norm=norm)
    assert ours == pytest.approx(float(theirs), abs=1e-6)


def test_confidence_one_bin_convention_against_torchmetrics():
    """torchmetrics puts c = 1.0 in an extra bin (its issue 3510); keras_kd in the last.

    Moving 1.0 to the float32 just below it puts it in torchmetrics' last bin too,
    which must then give keras_kd's number on the original data.
    """
    torch = pytest.importorskip("torch")
    from torchmetrics.functional.classification import multiclass_calibration_error

    probs = np.array([[0.0, 1.0], [0.0, 1.0], [0.05, 0.95], [0.3, 0.7], [0.45, 0.55]],
                     "float32")
    labels = np.array([1, 0, 1, 1, 0])
    ours = calibration.expected_calibration_error(probs, labels, num_bins=10)
    raw = float(multiclass_calibration_error(torch.tensor(probs), torch.tensor(labels),
                                             num_classes=2, n_bins=10))
    nudged = probs.copy()
    nudged[nudged == 1.0] = np.nextafter(np.float32(1.0), np.float32(0.0))
    moved = float(multiclass_calibration_error(torch.tensor(nudged), torch.tensor(labels),
                                               num_classes=2, n_bins=10))
    assert ours == pytest.approx(moved, abs=1e-6)
    assert abs(ours - raw) > 1e-3  # the conventions do differ on these data


def test_bootstrap_of_a_partial_measure():
    ece = functools.partial(calibration.expected_calibration_error, from_logits=True,
                            classwise=True)
    interval = calibration.bootstrap_interval(ece, TEST_LOGITS, TEST_LABELS, num_resamples=10)
    assert interval.estimate == pytest.approx(ece(TEST_LOGITS, TEST_LABELS))
