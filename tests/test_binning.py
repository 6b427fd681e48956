"""Tests for keras_kd._binning: bin edges, per-bin statistics and the three norms."""

import numpy as np
import pytest
from keras import ops

from keras_kd import _binning


def _numpy(tensors):
    return [ops.convert_to_numpy(t) for t in tensors]


def _error(probs, labels, num_bins, norm="l1", sample_weight=None):
    probs = ops.convert_to_tensor(np.asarray(probs, dtype="float32"))
    labels = ops.convert_to_tensor(np.asarray(labels))
    if sample_weight is not None:
        sample_weight = ops.convert_to_tensor(np.asarray(sample_weight, dtype="float32"))
    statistics = _binning.bin_statistics(probs, labels, num_bins, sample_weight)
    return float(ops.convert_to_numpy(_binning.calibration_error(*statistics, norm)))


def test_bin_index_is_floor_of_scaled_confidence_with_last_bin_closed():
    confidences = ops.convert_to_tensor(np.array([0.0, 0.09, 0.1, 0.55, 0.99, 1.0], "float32"))
    bins = ops.convert_to_numpy(_binning.equal_width_bins(confidences, 10))
    np.testing.assert_array_equal(bins, [0, 0, 1, 5, 9, 9])


def test_confidence_above_one_is_clamped_into_the_last_bin():
    probs = np.array([[1.0000001, 0.0], [0.2, 0.8]], "float32")
    counts, confidence_sums, _ = _numpy(
        _binning.bin_statistics(ops.convert_to_tensor(probs), ops.convert_to_tensor([0, 1]), 4)
    )
    np.testing.assert_array_equal(counts, [0, 0, 0, 2])
    np.testing.assert_allclose(confidence_sums[-1], 1.8, rtol=1e-6)


def test_statistics_are_count_confidence_sum_and_correct_sum_per_bin():
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4], [0.45, 0.55]], "float32")
    labels = np.array([0, 0, 0, 1])
    counts, confidence_sums, correct_sums = _numpy(
        _binning.bin_statistics(ops.convert_to_tensor(probs), ops.convert_to_tensor(labels), 2)
    )
    # Confidences 0.9, 0.7, 0.6, 0.55: all in [0.5, 1]; correct: 1, 0, 1, 1.
    np.testing.assert_allclose(counts, [0, 4])
    np.testing.assert_allclose(confidence_sums, [0, 2.75], rtol=1e-6)
    np.testing.assert_allclose(correct_sums, [0, 3])


def test_sample_weights_scale_every_statistic():
    probs = ops.convert_to_tensor(np.array([[0.9, 0.1], [0.2, 0.8]], "float32"))
    labels = ops.convert_to_tensor([0, 0])
    weights = ops.convert_to_tensor(np.array([[2.0], [0.5]], "float32"))  # trailing 1
    counts, confidence_sums, correct_sums = _numpy(
        _binning.bin_statistics(probs, labels, 5, weights)
    )
    np.testing.assert_allclose(counts, [0, 0, 0, 0, 2.5])
    np.testing.assert_allclose(confidence_sums[-1], 2 * 0.9 + 0.5 * 0.8, rtol=1e-6)
    np.testing.assert_allclose(correct_sums[-1], 2.0)


# Public vectors: confidence, correctness, B -> ECE (and MCE).
def test_public_vector_two_samples_in_the_top_bin():
    probs, labels = [[0.05, 0.95], [0.0, 1.0]], [1, 0]
    assert _error(probs, labels, 10, "l1") == pytest.approx(0.475, abs=1e-6)
    assert _error(probs, labels, 10, "max") == pytest.approx(0.475, abs=1e-6)


def test_public_vector_float32_confidences_0_6_and_0_65():
    probs, labels = [[0.6, 0.4], [0.35, 0.65]], [1, 1]  # correct: 0, 1
    assert _error(probs, labels, 10) == pytest.approx(0.125, abs=1e-6)


def test_public_vector_binary_top_label():
    p = np.array([0.51, 0.45, 0.39, 0.66, 0.68, 0.29, 0.81, 0.85], "float32")
    labels = [0, 0, 0, 1, 0, 1, 1, 1]
    assert _error(np.stack([1 - p, p], axis=1), labels, 10) == pytest.approx(0.145, abs=1e-6)
    assert _error(p[:, None], labels, 10) == pytest.approx(0.145, abs=1e-6)


def test_norms_on_hand_made_statistics_ignore_empty_bins():
    counts = np.array([0.0, 2.0, 0.0, 2.0], "float32")
    confidence_sums = np.array([0.0, 0.8, 0.0, 1.8], "float32")  # conf 0.4, 0.9
    correct_sums = np.array([0.0, 1.0, 0.0, 2.0], "float32")  # acc 0.5, 1.0

    def error(norm):
        return float(ops.convert_to_numpy(
            _binning.calibration_error(counts, confidence_sums, correct_sums, norm)
        ))

    assert error("l1") == pytest.approx(0.5 * 0.1 + 0.5 * 0.1, abs=1e-6)
    assert error("l2") == pytest.approx(0.1, abs=1e-6)
    assert error("max") == pytest.approx(0.1, abs=1e-6)


def test_no_samples_gives_zero_for_every_norm():
    zeros = np.zeros(5, "float32")
    for norm in _binning.NORMS:
        value = ops.convert_to_numpy(_binning.calibration_error(zeros, zeros, zeros, norm))
        assert float(value) == 0.0


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("num_bins", [1, 7, 15])
@pytest.mark.parametrize("norm", ["l1", "l2", "max"])
def test_random_cases_match_the_numpy_reference(seed, num_bins, norm, reference_calibration_error):
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(4, 0.5), size=200).astype("float32")
    labels = rng.integers(0, 4, size=200)
    weights = rng.uniform(0, 2, size=200).astype("float32")
    expected = reference_calibration_error(probs, labels, num_bins, norm, weights)
    actual = _error(probs, labels, num_bins, norm, weights)
    assert actual == pytest.approx(expected, abs=1e-5)


def test_confidence_from_logits_is_the_top_softmax_probability_without_overflow():
    logits = np.array([[1000.0, 0.0, -1000.0], [0.0, 2.0, 1.0], [3.0, 3.0, 3.0]], "float32")
    confidences, correct = _numpy(_binning.top_label(ops.convert_to_tensor(logits),
                                                     ops.convert_to_tensor([0, 2, 0]), True))
    expected = np.exp(2.0) / (1 + np.exp(2.0) + np.exp(1.0))
    np.testing.assert_allclose(confidences, [1.0, expected, 1 / 3], rtol=1e-6)
    np.testing.assert_array_equal(correct, [1, 0, 1])  # ties go to the first class


def test_single_column_is_a_binary_model():
    scores = np.array([[0.0], [2.0], [-1.0]], "float32")
    labels = ops.convert_to_tensor([0, 1, 1])
    confidences, correct = _numpy(_binning.top_label(ops.convert_to_tensor(scores), labels,
                                                     True))
    np.testing.assert_allclose(confidences, [0.5, 1 / (1 + np.e**-2), 1 / (1 + np.e**-1)],
                               rtol=1e-6)
    np.testing.assert_array_equal(correct, [1, 1, 0])
    probs = np.array([[0.5], [0.9], [0.3]], "float32")
    confidences, correct = _numpy(_binning.top_label(ops.convert_to_tensor(probs), labels))
    np.testing.assert_allclose(confidences, [0.5, 0.9, 0.7], rtol=1e-6)
    np.testing.assert_array_equal(correct, [1, 1, 0])


def test_labels_that_do_not_match_the_predictions_raise():
    probs = ops.convert_to_tensor(np.full((3, 2), 0.5, "float32"))
    with pytest.raises(ValueError, match="same number of examples"):
        _binning.bin_statistics(probs, ops.convert_to_tensor([0, 1]), 10)
    with pytest.raises(ValueError, match="one weight per example"):
        _binning.bin_statistics(probs, ops.convert_to_tensor([0, 1, 1]), 10,
                                ops.convert_to_tensor(np.ones(4, "float32")))


def test_unknown_norm_raises():
    zeros = np.zeros(2, "float32")
    with pytest.raises(ValueError, match="norm"):
        _binning.calibration_error(zeros, zeros, zeros, "l3")
