"""Invariants of the losses, the ECE metric and temperature scaling, by hypothesis.

Each property is checked against float64 NumPy written here (or Keras' own
cross-entropy), over generated logits, labels, temperatures and weights.
Complementary ECE properties live next to their modules and are not repeated here:
tests/test_metrics.py (streamed == one-shot, in [0, 1]) and tests/test_calibration.py
(the array function: in [0, 1], invariant to sample order).
"""

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck
from hypothesis import assume
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import keras_kd
from keras_kd import calibration
from keras_kd import losses
from keras_kd import metrics
from _numpy_reference import cross_entropy as _np_cross_entropy
from _numpy_reference import log_softmax as _np_log_softmax

_SETTINGS = settings(max_examples=30, deadline=None)


@st.composite
def _logit_batches(draw, max_abs=50.0, min_classes=2):
    """(logits (N, K) float32, labels (N,)) with N in [1, 6], K in [min_classes, 6]."""
    n = draw(st.integers(1, 6))
    k = draw(st.integers(min_classes, 6))
    elements = st.floats(-max_abs, max_abs, allow_nan=False, width=32)
    logits = draw(hnp.arrays(np.float32, (n, k), elements=elements))
    labels = draw(hnp.arrays(np.int32, (n,), elements=st.integers(0, k - 1)))
    return logits, labels


_temperatures = st.floats(0.5, 50.0)


def _numpy(tensor):
    return keras.ops.convert_to_numpy(tensor).astype(np.float64)


# ---------------------------------------------------------------------------
# KL distillation loss
# ---------------------------------------------------------------------------


@_SETTINGS
@given(
    teacher=_logit_batches(),
    student_seed=st.integers(0, 2**16),
    temperature=_temperatures,
)
def test_distillation_loss_is_nonnegative_and_bounds_the_distance(
    teacher, student_seed, temperature
):
    """T^2 KL >= 0 and, by Pinsker, >= 2 T^2 TV^2: small only if the targets match."""
    teacher_logits, _ = teacher
    rng = np.random.default_rng(student_seed)
    student_logits = rng.uniform(-50, 50, size=teacher_logits.shape).astype("float32")
    loss = _numpy(losses.distillation_loss(teacher_logits, student_logits, temperature))

    p = np.exp(_np_log_softmax(teacher_logits.astype(np.float64) / temperature))
    q = np.exp(_np_log_softmax(student_logits.astype(np.float64) / temperature))
    total_variation = 0.5 * np.abs(p - q).sum(axis=-1)
    # float32 log-probabilities carry ~1e-7 relative error on logits / T up to 100.
    tolerance = temperature**2 * 1e-5 * (1.0 + 100.0 / temperature)
    assert np.all(loss >= -tolerance)
    assert np.all(loss >= temperature**2 * 2.0 * total_variation**2 * (1 - 1e-4) - tolerance)


@_SETTINGS
@given(
    teacher=_logit_batches(),
    shift=st.floats(-100.0, 100.0),
    temperature=_temperatures,
)
def test_distillation_loss_is_zero_when_the_tempered_distributions_match(
    teacher, shift, temperature
):
    # softmax(z / T) is invariant to adding a constant to every logit of a row.
    teacher_logits, _ = teacher
    student_logits = (teacher_logits.astype(np.float64) + shift).astype("float32")
    loss = _numpy(losses.distillation_loss(teacher_logits, student_logits, temperature))
    # The shift itself is rounded to float32 (|z + c| <= 150, ulp ~1e-5).
    assert np.all(np.abs(loss) <= temperature**2 * 1e-5 * (1.0 + 150.0 / temperature))


# ---------------------------------------------------------------------------
# Label smoothing and the virtual teacher reduce to cross-entropy
# ---------------------------------------------------------------------------


@_SETTINGS
@given(batch=_logit_batches(max_abs=1e3), one_hot=st.booleans())
def test_label_smoothing_with_zero_smoothing_is_cross_entropy(batch, one_hot):
    logits, labels = batch
    targets = np.eye(logits.shape[1], dtype="float32")[labels] if one_hot else labels
    ours = keras_kd.LabelSmoothingLoss(0.0, from_logits=True, reduction=None)(targets, logits)
    expected = _np_cross_entropy(labels, logits)
    np.testing.assert_allclose(_numpy(ours), expected, rtol=1e-5, atol=1e-5)
    keras_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
    np.testing.assert_allclose(
        _numpy(ours), _numpy(keras_loss(labels, logits)), rtol=1e-5, atol=1e-5
    )


@_SETTINGS
@given(
    batch=_logit_batches(max_abs=1e3),
    temperature=_temperatures,
    mode=st.sampled_from(["paper", "reference"]),
    multiplier=st.floats(0.0, 100.0),
)
def test_virtual_teacher_with_certain_teacher_and_zero_alpha_is_cross_entropy(
    batch, temperature, mode, multiplier
):
    logits, labels = batch
    loss = keras_kd.VirtualTeacherLoss(
        correct_prob=1.0,
        temperature=temperature,
        alpha=0.0,
        mode=mode,
        multiplier=multiplier,
        reduction=None,
    )
    np.testing.assert_allclose(
        _numpy(loss(labels, logits)), _np_cross_entropy(labels, logits), rtol=1e-5, atol=1e-5
    )


# ---------------------------------------------------------------------------
# ECE: the streaming metric with weights and logits
# ---------------------------------------------------------------------------


@_SETTINGS
@given(
    batch=_logit_batches(max_abs=1e4),
    weight_seed=st.integers(0, 2**16),
    order_seed=st.integers(0, 2**16),
    num_bins=st.integers(1, 20),
    norm=st.sampled_from(["l1", "l2", "max"]),
)
def test_weighted_ece_metric_on_logits_is_in_unit_interval_and_order_invariant(
    batch, weight_seed, order_seed, num_bins, norm
):
    logits, labels = batch
    weights = np.random.default_rng(weight_seed).uniform(0.1, 3.0, size=len(labels))
    order = np.random.default_rng(order_seed).permutation(len(labels))

    def ece(rows):
        metric = metrics.ExpectedCalibrationError(num_bins=num_bins, from_logits=True, norm=norm)
        metric.update_state(labels[rows], logits[rows], sample_weight=weights[rows])
        return float(_numpy(metric.result()))

    value = ece(np.arange(len(labels)))
    assert 0.0 <= value <= 1.0
    assert ece(order) == pytest.approx(value, abs=1e-6)


# ---------------------------------------------------------------------------
# Temperature scaling keeps the argmax
# ---------------------------------------------------------------------------


@st.composite
def _separated_logits(draw):
    """Logits on a 1/16 grid: distinct values stay distinct after z / T in float32."""
    n = draw(st.integers(1, 8))
    k = draw(st.integers(2, 6))
    steps = draw(hnp.arrays(np.int32, (n, k), elements=st.integers(-800, 800)))
    return (steps / 16.0).astype("float32")


@_SETTINGS
@given(logits=_separated_logits(), temperature=st.floats(0.05, 100.0))
def test_temperature_scaling_never_changes_the_argmax(logits, temperature):
    # Logits that are valid probability rows are refused by design (ambiguous input).
    assume(not (np.all((logits >= 0) & (logits <= 1)) and np.allclose(logits.sum(-1), 1.0)))
    expected = np.argmax(logits, axis=-1)  # ties resolve to the first index, as below
    scaler = calibration.TemperatureScaling(temperature=temperature)
    np.testing.assert_array_equal(np.argmax(scaler.predict_proba(logits), axis=-1), expected)
    np.testing.assert_array_equal(np.argmax(scaler.transform(logits), axis=-1), expected)
    layer = calibration.TemperatureScalingLayer(temperature=temperature)
    np.testing.assert_array_equal(np.argmax(_numpy(layer(logits)), axis=-1), expected)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(logits=_separated_logits(), label_seed=st.integers(0, 2**16))
def test_a_fitted_temperature_never_changes_the_argmax(logits, label_seed):
    labels = np.random.default_rng(label_seed).integers(0, logits.shape[1], size=len(logits))
    assume(not (np.all((logits >= 0) & (logits <= 1)) and np.allclose(logits.sum(-1), 1.0)))
    try:
        scaler = calibration.TemperatureScaling().fit(logits, labels)
    except ValueError:
        # No finite T minimises the NLL (all correct, or no better than chance).
        assume(False)
    assert scaler.temperature > 0
    np.testing.assert_array_equal(
        np.argmax(scaler.predict_proba(logits), axis=-1), np.argmax(logits, axis=-1)
    )
