"""Calibration entry points: every bad input raises clearly, every unusual but valid
input gives the right number (issue 11, sections 1, 2 and 4).

Two tables with the row structure of `tests/test_bad_inputs.py` (argument, bad value,
entry, call, then the error fragment or the expected number), so the docs' bad-input
table is generated from both (`docs/hooks/bad_inputs.py`). Expected
numbers come from NumPy written in this file (float64) or from Keras' own losses.
"""

import math
import re
from typing import Callable
from typing import NamedTuple

import keras
import numpy as np
import pytest

from keras_kd import calibration
from keras_kd import callbacks
from keras_kd import metrics

RNG = np.random.default_rng(0)
LOGITS = RNG.normal(scale=2.0, size=(64, 4)).astype("float32")
PROBS = (np.exp(LOGITS) / np.exp(LOGITS).sum(1, keepdims=True)).astype("float32")
# Drawn from softmax(z / 1.5): the logits are informative and over-confident.
_SOFTER = np.exp(LOGITS / 1.5) / np.exp(LOGITS / 1.5).sum(1, keepdims=True)
LABELS = np.minimum((RNG.uniform(size=(64, 1)) > np.cumsum(_SOFTER, 1)).sum(1), 3)
BINARY_LOGITS = RNG.normal(scale=2.0, size=64).astype("float32")
BINARY_PROBS = (1 / (1 + np.exp(-BINARY_LOGITS.astype(np.float64)))).astype("float32")
BINARY_LABELS = (RNG.uniform(size=64) < BINARY_PROBS).astype("int64")
NAN_LOGITS = np.where(np.arange(64)[:, None] % 7 == 0, np.nan, LOGITS).astype("float32")
MASK = RNG.uniform(size=(64, 4)) < 0.4
MASK[np.arange(64), LABELS] = False  # the label class is never masked
MASKED_LOGITS = np.where(MASK, -np.inf, LOGITS).astype("float32")


# -- NumPy references ------------------------------------------------------------


def _np_softmax(logits):
    logits = np.asarray(logits, np.float64)
    top = np.max(logits, axis=-1, keepdims=True)
    e = np.exp(logits - top)
    return e / e.sum(axis=-1, keepdims=True)


def _np_top_label_ece(confidences, correct, num_bins=15, norm="l1"):
    """Equal-width bins [lo, hi), last closed; written apart from keras_kd."""
    edges = np.linspace(0, 1, num_bins + 1)
    total, gaps = 0.0, []
    for b in range(num_bins):
        upper = confidences < edges[b + 1] if b < num_bins - 1 else confidences <= 1.0
        inside = (confidences >= edges[b]) & upper
        if inside.any():
            gap = abs(correct[inside].mean() - confidences[inside].mean())
            total += inside.sum() / len(confidences) * gap
            gaps.append(gap)
    return max(gaps) if norm == "max" else total


def _np_binary_ece(p, labels, num_bins=15, norm="l1"):
    p = np.asarray(p, np.float64)
    confidences = np.maximum(p, 1 - p)
    correct = ((p > 0.5).astype(int) == labels).astype(float)
    return _np_top_label_ece(confidences, correct, num_bins, norm)


def _np_ece_of_probs(probs, labels, num_bins=15, norm="l1"):
    probs = np.asarray(probs, np.float64)
    correct = (probs.argmax(-1) == labels).astype(float)
    return _np_top_label_ece(probs.max(-1), correct, num_bins, norm)


def _np_masked_nll(logits, labels, temperature=1.0):
    probs = _np_softmax(np.asarray(logits, np.float64) / temperature)
    return float(-np.mean(np.log(probs[np.arange(len(labels)), labels])))


def _np_best_temperature(logits, labels):
    grid = np.exp(np.linspace(np.log(0.05), np.log(20), 4001))
    values = [_np_masked_nll(logits, labels, t) for t in grid]
    return grid[int(np.argmin(values))], grid


def _metric_value(metric, y_true, y_pred, sample_weight=None):
    metric.update_state(y_true, y_pred, sample_weight=sample_weight)
    return float(keras.ops.convert_to_numpy(metric.result()))


def _callback_logs(validation_data, model, **kwargs):
    callback = callbacks.ECECallback(validation_data, batch_size=64, **kwargs)
    callback.set_model(model)
    logs = {}
    callback.on_epoch_end(0, logs)
    return logs


class _Constant(keras.layers.Layer):
    """Outputs fixed predictions, whatever the input: a model with known outputs."""

    def __init__(self, outputs, **kwargs):
        super().__init__(**kwargs)
        self.outputs = np.asarray(outputs, "float32")

    def call(self, inputs):
        rows = keras.ops.shape(inputs)[0]
        return keras.ops.convert_to_tensor(self.outputs)[:rows]


def _model_outputting(outputs):
    return keras.Sequential([keras.Input((1,)), _Constant(outputs)])


X_ONE = np.zeros((64, 1), "float32")


# -- The tables ------------------------------------------------------------------


class BadInput(NamedTuple):
    argument: str
    bad_value: str
    entry: str
    call: Callable[[], object]
    error: str  # a fragment of the message, matched literally


class RightValue(NamedTuple):
    argument: str
    bad_value: str  # the unusual input
    entry: str
    call: Callable[[], object]
    expected: Callable[[], float]  # NumPy (or Keras) reference; NaN means NaN


def _all_entries(predictions, from_logits):
    """Every calibration entry point called with `predictions`, LABELS and from_logits."""
    fit_kwargs = dict(from_probabilities=not from_logits)
    return {
        "expected_calibration_error": lambda: calibration.expected_calibration_error(
            predictions, LABELS, from_logits=from_logits),
        "expected_calibration_error(classwise)": lambda: calibration.expected_calibration_error(
            predictions, LABELS, from_logits=from_logits, classwise=True),
        "negative_log_likelihood": lambda: calibration.negative_log_likelihood(
            predictions, LABELS, from_logits=from_logits),
        "brier_score": lambda: calibration.brier_score(predictions, LABELS,
                                                       from_logits=from_logits),
        "perfectly_calibrated_ece": lambda: calibration.perfectly_calibrated_ece(
            predictions, from_logits=from_logits, num_draws=2),
        "reliability_diagram": lambda: calibration.reliability_diagram(
            predictions, LABELS, from_logits=from_logits),
        "ExpectedCalibrationError": lambda: _metric_value(
            metrics.ExpectedCalibrationError(from_logits=from_logits), LABELS, predictions),
        "BrierScore": lambda: _metric_value(metrics.BrierScore(from_logits=from_logits), LABELS,
                                            predictions),
        "ECECallback": lambda: _callback_logs((X_ONE, LABELS), _model_outputting(predictions),
                                              from_logits=from_logits),
        "TemperatureScaling.fit": lambda: calibration.TemperatureScaling().fit(
            predictions, LABELS, **fit_kwargs),
        "VectorScaling.fit": lambda: calibration.VectorScaling().fit(predictions, LABELS,
                                                                     **fit_kwargs),
        "MatrixScaling.fit": lambda: calibration.MatrixScaling().fit(predictions, LABELS,
                                                                     **fit_kwargs),
        "HistogramBinning.fit": lambda: calibration.HistogramBinning().fit(
            predictions, LABELS, **fit_kwargs),
        "IsotonicCalibration.fit": lambda: calibration.IsotonicCalibration().fit(
            predictions, LABELS, **fit_kwargs),
    }


def _from_logits_rows():
    rows = []
    for entry, call in _all_entries(PROBS, from_logits=True).items():
        argument = "from_probabilities" if entry.endswith(".fit") else "from_logits"
        bad = "False" if argument == "from_probabilities" else "True"
        rows.append(BadInput(argument, f"{bad}, probability rows", entry, call,
                             "looks like probabilities"))
    for entry, call in _all_entries(LOGITS, from_logits=False).items():
        argument = "from_probabilities" if entry.endswith(".fit") else "from_logits"
        bad = "True" if argument == "from_probabilities" else "False"
        rows.append(BadInput(argument, f"{bad}, logits", entry, call, "must be probabilities"))
    unnormalised = PROBS * 0.5
    for entry, call in _all_entries(unnormalised, from_logits=False).items():
        argument = "from_probabilities" if entry.endswith(".fit") else "from_logits"
        bad = "True" if argument == "from_probabilities" else "False"
        rows.append(BadInput(argument, f"{bad}, rows summing to 0.5", entry, call,
                             "rows must sum to 1"))
    return rows


def _weight_rows():
    rows = []
    bad_weights = {
        "inf": np.where(np.arange(64) == 3, np.inf, 1.0),
        "NaN": np.where(np.arange(64) == 3, np.nan, 1.0),
        "negative": np.where(np.arange(64) == 3, -1.0, 1.0),
    }
    for name, weights in bad_weights.items():
        entries = {
            "expected_calibration_error": lambda w=weights: calibration.expected_calibration_error(
                PROBS, LABELS, sample_weight=w),
            "negative_log_likelihood": lambda w=weights: calibration.negative_log_likelihood(
                LOGITS, LABELS, from_logits=True, sample_weight=w),
            "brier_score": lambda w=weights: calibration.brier_score(PROBS, LABELS,
                                                                     sample_weight=w),
            "TemperatureScaling.fit": lambda w=weights: calibration.TemperatureScaling().fit(
                LOGITS, LABELS, sample_weight=w),
            "ExpectedCalibrationError": lambda w=weights: _metric_value(
                metrics.ExpectedCalibrationError(from_logits=False), LABELS, PROBS, w),
            "bootstrap_interval": lambda w=weights: calibration.bootstrap_interval(
                calibration.expected_calibration_error, PROBS, LABELS, sample_weight=w,
                num_resamples=2),
        }
        for entry, call in entries.items():
            rows.append(BadInput("sample_weight", name, entry, call,
                                 "`sample_weight` must be finite and non-negative"))
    wrong_shape = np.ones((64, 2))
    for entry, call in {
        "expected_calibration_error": lambda: calibration.expected_calibration_error(
            PROBS, LABELS, sample_weight=wrong_shape),
        "TemperatureScaling.fit": lambda: calibration.TemperatureScaling().fit(
            LOGITS, LABELS, sample_weight=wrong_shape),
        "VectorScaling.fit": lambda: calibration.VectorScaling().fit(
            LOGITS, LABELS, sample_weight=np.ones(10)),
        "ECECallback": lambda: _callback_logs((X_ONE, LABELS, np.ones((64, 2))),
                                              _model_outputting(LOGITS)),
    }.items():
        rows.append(BadInput("sample_weight", "wrong shape", entry, call,
                             "`sample_weight` must hold one weight per example"))
    return rows


def _label_rows():
    rows = []
    all_zero = np.eye(4)[LABELS]
    all_zero[5] = 0.0
    two_hot = np.eye(4)[LABELS]
    two_hot[5, (LABELS[5] + 1) % 4] = 1.0
    cases = {
        ("labels", "strings"): (np.array(["cat"] * 64), "must hold numbers"),
        ("labels", "an all-zero one-hot row"): (all_zero, "non-negative numbers summing to 1"),
        ("labels", "a one-hot row summing to 2"): (two_hot, "summing to 1"),
        ("labels", "class index 4 of 4 classes"): (np.where(LABELS == 0, 4, LABELS),
                                                   "integers in [0, 3]"),
        ("labels", "class index 0.5"): (np.where(LABELS == 0, 0.5, LABELS),
                                        "integers in [0, 3]"),
    }
    for (argument, bad), (labels, error) in cases.items():
        for entry, call in {
            "expected_calibration_error": lambda y=labels: calibration.expected_calibration_error(
                PROBS, y),
            "negative_log_likelihood": lambda y=labels: calibration.negative_log_likelihood(
                LOGITS, y, from_logits=True),
            "TemperatureScaling.fit": lambda y=labels: calibration.TemperatureScaling().fit(
                LOGITS, y),
            "IsotonicCalibration.fit": lambda y=labels: calibration.IsotonicCalibration().fit(
                LOGITS, y),
            "ExpectedCalibrationError": lambda y=labels: _metric_value(
                metrics.ExpectedCalibrationError(from_logits=False), y, PROBS),
        }.items():
            rows.append(BadInput(argument, bad, entry, call, error))
    binary_two = np.where(BINARY_LABELS == 0, 2, BINARY_LABELS)
    rows.append(BadInput(
        "labels", "label 2 for a binary model", "expected_calibration_error",
        lambda: calibration.expected_calibration_error(BINARY_PROBS, binary_two),
        "integers in [0, 1]"))
    return rows


def _compiled(metric):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile("sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[metric])
    model.evaluate(np.zeros((8, 4), "float32"), np.zeros(8, "int32"), verbose=0)


OTHER_BAD_INPUTS = [
    BadInput("from_logits", "unset in compile", "ExpectedCalibrationError",
             lambda: _compiled(metrics.ExpectedCalibrationError()),
             "needs `from_logits` set explicitly"),
    BadInput("from_logits", "unset in compile", "BrierScore",
             lambda: _compiled(metrics.BrierScore()), "needs `from_logits` set explicitly"),
    BadInput("labels", "on a masked (-inf) class", "TemperatureScaling.fit",
             lambda: calibration.TemperatureScaling().fit(
                 np.where(np.eye(4)[LABELS] > 0, -np.inf, LOGITS), LABELS),
             "label falls on a masked class"),
    BadInput("logits", "NaN", "TemperatureScaling.fit",
             lambda: calibration.TemperatureScaling().fit(NAN_LOGITS, LABELS), "holds NaN"),
    BadInput("logits", "NaN", "MatrixScaling.fit",
             lambda: calibration.MatrixScaling().fit(NAN_LOGITS, LABELS), "holds NaN"),
    BadInput("logits", "+inf", "expected_calibration_error",
             lambda: calibration.expected_calibration_error(
                 np.where(np.eye(4)[LABELS] > 0, np.inf, LOGITS), LABELS, from_logits=True),
             "+inf logits"),
    BadInput("num_classes", "None with classwise=True", "ExpectedCalibrationError",
             lambda: metrics.ExpectedCalibrationError(from_logits=True, classwise=True),
             "`num_classes` must be an integer >= 1"),
    BadInput("num_fine_bins", "10 < num_bins 15", "ExpectedCalibrationError",
             lambda: metrics.ExpectedCalibrationError(from_logits=True, binning="equal_mass",
                                                      num_fine_bins=10),
             "`num_fine_bins` must be >= `num_bins`"),
    # Token-level predictions (batch, sequence, K) are one prediction per position:
    # their labels must have the positions' shape.
    BadInput("labels", "shape (2,) for predictions of shape (2, 3, 4)",
             "expected_calibration_error",
             lambda: calibration.expected_calibration_error(np.zeros((2, 3, 4)), [0, 1]),
             "`labels` must have shape (2, 3) (one per position of predictions of shape "
             "(2, 3, 4))"),
    BadInput("validation_data", "a generator without steps", "ECECallback",
             lambda: callbacks.ECECallback(iter([(X_ONE, LABELS)])), "pass `steps`"),
]

BAD_INPUTS = _from_logits_rows() + _weight_rows() + _label_rows() + OTHER_BAD_INPUTS


def _nan(_=None):
    return math.nan


def _binary_rows():
    rows = []
    for shape_name, reshape in (("(N,)", lambda a: a), ("(N, 1)", lambda a: a[:, None])):
        p, z = reshape(BINARY_PROBS), reshape(BINARY_LOGITS)
        rows += [
            RightValue("probs", f"binary probabilities {shape_name}", "expected_calibration_error",
                       lambda p=p: calibration.expected_calibration_error(p, BINARY_LABELS),
                       lambda: _np_binary_ece(BINARY_PROBS, BINARY_LABELS)),
            RightValue("probs", f"binary logits {shape_name}", "expected_calibration_error",
                       lambda z=z: calibration.expected_calibration_error(
                           z, BINARY_LABELS, from_logits=True),
                       lambda: _np_binary_ece(BINARY_PROBS, BINARY_LABELS)),
            RightValue("probs", f"binary probabilities {shape_name}", "expected_calibration_error"
                       "(norm='max')",
                       lambda p=p: calibration.expected_calibration_error(
                           p, BINARY_LABELS, norm="max"),
                       lambda: _np_binary_ece(BINARY_PROBS, BINARY_LABELS, norm="max")),
            RightValue("y_pred", f"binary logits {shape_name}", "ExpectedCalibrationError",
                       lambda z=z: _metric_value(metrics.ExpectedCalibrationError(
                           from_logits=True), BINARY_LABELS, z),
                       lambda: _np_binary_ece(BINARY_PROBS, BINARY_LABELS)),
            RightValue("logits_or_probs", f"binary logits {shape_name}",
                       "negative_log_likelihood",
                       lambda z=z: calibration.negative_log_likelihood(
                           z, BINARY_LABELS, from_logits=True),
                       lambda: float(keras.losses.BinaryCrossentropy(from_logits=True)(
                           BINARY_LABELS[:, None].astype("float32"), BINARY_LOGITS[:, None]))),
            RightValue("probs", f"binary probabilities {shape_name}", "brier_score",
                       lambda p=p: calibration.brier_score(p, BINARY_LABELS),
                       lambda: float(np.mean(2 * (BINARY_PROBS.astype(np.float64)
                                                  - BINARY_LABELS) ** 2))),
            RightValue("logits", f"binary logits {shape_name}", "TemperatureScaling.fit",
                       lambda z=z: calibration.TemperatureScaling().fit(
                           z, BINARY_LABELS).temperature,
                       lambda: _np_best_temperature(
                           np.stack([np.zeros(64), BINARY_LOGITS], 1), BINARY_LABELS)[0]),
            RightValue("validation_data", f"binary model output {shape_name}", "ECECallback",
                       lambda z=z: _callback_logs((X_ONE, BINARY_LABELS), _model_outputting(z))[
                           "val_ece"],
                       lambda: _np_binary_ece(BINARY_PROBS, BINARY_LABELS)),
        ]
    return rows


def _nan_rows():
    rows = []
    for norm in ("l1", "l2", "max"):
        rows.append(RightValue(
            "probs", f"NaN logits, norm={norm}", "expected_calibration_error",
            lambda norm=norm: calibration.expected_calibration_error(
                NAN_LOGITS, LABELS, norm=norm, from_logits=True), _nan))
        rows.append(RightValue(
            "y_pred", f"NaN logits, norm={norm}", "ExpectedCalibrationError",
            lambda norm=norm: _metric_value(
                metrics.ExpectedCalibrationError(from_logits=True, norm=norm), LABELS,
                NAN_LOGITS), _nan))
    rows += [
        RightValue("y_pred", "NaN logits, classwise", "ExpectedCalibrationError",
                   lambda: _metric_value(metrics.ExpectedCalibrationError(
                       from_logits=True, classwise=True, num_classes=4), LABELS, NAN_LOGITS),
                   _nan),
        RightValue("y_pred", "NaN logits, equal_mass", "ExpectedCalibrationError",
                   lambda: _metric_value(metrics.ExpectedCalibrationError(
                       from_logits=True, binning="equal_mass"), LABELS, NAN_LOGITS), _nan),
        RightValue("probs", "NaN logits, classwise", "expected_calibration_error",
                   lambda: calibration.expected_calibration_error(
                       NAN_LOGITS, LABELS, from_logits=True, classwise=True), _nan),
        RightValue("logits_or_probs", "NaN logits", "negative_log_likelihood",
                   lambda: calibration.negative_log_likelihood(NAN_LOGITS, LABELS,
                                                               from_logits=True), _nan),
        RightValue("probs", "NaN logits", "brier_score",
                   lambda: calibration.brier_score(NAN_LOGITS, LABELS, from_logits=True), _nan),
        RightValue("y_pred", "NaN logits", "BrierScore",
                   lambda: _metric_value(metrics.BrierScore(from_logits=True), LABELS,
                                         NAN_LOGITS), _nan),
        RightValue("validation_data", "a model outputting NaN (val_mce)", "ECECallback",
                   lambda: _callback_logs((X_ONE, LABELS), _model_outputting(NAN_LOGITS))[
                       "val_mce"], _nan),
    ]
    return rows


def _masked_rows():
    return [
        RightValue("logits_or_probs", "-inf on non-label classes", "negative_log_likelihood",
                   lambda: calibration.negative_log_likelihood(MASKED_LOGITS, LABELS,
                                                               from_logits=True),
                   lambda: float(keras.losses.SparseCategoricalCrossentropy(from_logits=True)(
                       LABELS, MASKED_LOGITS))),
        RightValue("logits_or_probs", "-inf on non-label classes", "negative_log_likelihood "
                   "(NumPy)",
                   lambda: calibration.negative_log_likelihood(MASKED_LOGITS, LABELS,
                                                               from_logits=True),
                   lambda: _np_masked_nll(MASKED_LOGITS, LABELS)),
        RightValue("probs", "-inf on non-label classes", "expected_calibration_error",
                   lambda: calibration.expected_calibration_error(MASKED_LOGITS, LABELS,
                                                                  from_logits=True),
                   lambda: _np_ece_of_probs(_np_softmax(MASKED_LOGITS), LABELS)),
        RightValue("y_pred", "-inf on non-label classes", "ExpectedCalibrationError",
                   lambda: _metric_value(metrics.ExpectedCalibrationError(from_logits=True),
                                         LABELS, MASKED_LOGITS),
                   lambda: _np_ece_of_probs(_np_softmax(MASKED_LOGITS), LABELS)),
        RightValue("probs", "-inf on non-label classes", "brier_score",
                   lambda: calibration.brier_score(MASKED_LOGITS, LABELS, from_logits=True),
                   lambda: float(np.mean(np.sum((_np_softmax(MASKED_LOGITS)
                                                 - np.eye(4)[LABELS]) ** 2, -1)))),
        RightValue("logits", "-inf on non-label classes", "TemperatureScaling.fit",
                   lambda: calibration.TemperatureScaling().fit(MASKED_LOGITS,
                                                                LABELS).temperature,
                   lambda: _np_best_temperature(MASKED_LOGITS, LABELS)[0]),
        RightValue("logits", "-inf on non-label classes", "VectorScaling.fit (NLL finite)",
                   lambda: calibration.negative_log_likelihood(
                       calibration.VectorScaling().fit(MASKED_LOGITS, LABELS).predict_proba(
                           MASKED_LOGITS), LABELS, from_logits=False),
                   lambda: float(np.clip(calibration.negative_log_likelihood(
                       calibration.VectorScaling().fit(MASKED_LOGITS, LABELS).transform(
                           MASKED_LOGITS), LABELS, from_logits=True), 0, 10))),
    ]


RIGHT_VALUES = _binary_rows() + _nan_rows() + _masked_rows()


def _row_id(row):
    return f"{row.entry}-{row.argument}={row.bad_value}"


@pytest.mark.parametrize("row", BAD_INPUTS, ids=[_row_id(row) for row in BAD_INPUTS])
def test_bad_input_raises_a_value_error_naming_argument_and_value(row):
    with pytest.raises(ValueError, match=re.escape(row.error)):
        row.call()


@pytest.mark.parametrize("row", RIGHT_VALUES, ids=[_row_id(row) for row in RIGHT_VALUES])
def test_unusual_input_gives_the_reference_value(row):
    expected = row.expected()
    actual = row.call()
    if math.isnan(expected):
        assert math.isnan(actual), f"expected NaN, got {actual}"
    elif row.entry == "TemperatureScaling.fit":
        # The NumPy reference is a grid search with a step of 0.15 %.
        assert actual == pytest.approx(expected, rel=3e-3)
    else:
        assert actual == pytest.approx(expected, rel=1e-5, abs=2e-6)


def test_table_sizes():
    assert len(BAD_INPUTS) + len(RIGHT_VALUES) >= 100


# -- Diverged models during fit ------------------------------------------------------


def _diverging_model():
    """Finite outputs for one epoch, NaN from the second on (weights set to NaN)."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile(keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


class _PoisonAfterFirstEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            for variable in self.model.trainable_variables:
                variable.assign(np.full(variable.shape, np.nan, "float32"))


def test_checkpoint_on_val_mce_never_keeps_a_nan_model(tmp_path):
    x = RNG.normal(size=(48, 4)).astype("float32")
    y = RNG.integers(0, 3, size=48)
    model = _diverging_model()
    path = str(tmp_path / "best.weights.h5")
    checkpoint = keras.callbacks.ModelCheckpoint(path, monitor="val_mce", save_best_only=True,
                                                 save_weights_only=True)
    with pytest.warns(UserWarning, match="no temperature fitted this epoch"):
        history = model.fit(
            x, y, validation_data=(x, y), epochs=3, batch_size=48, verbose=0,
            callbacks=[checkpoint, _PoisonAfterFirstEpoch(),
                       callbacks.ECECallback((x, y), fit_temperature=True)],
        )
    mce = history.history["val_mce"]
    assert not math.isnan(mce[0]) and all(math.isnan(v) for v in mce[1:])
    assert all(math.isnan(v) for v in history.history["val_temperature"][1:])
    restored = _diverging_model()
    restored.load_weights(path)
    assert all(np.all(np.isfinite(keras.ops.convert_to_numpy(v))) for v in restored.weights)
    assert checkpoint.best == pytest.approx(mce[0])
