"""Calibration measures on arrays: ECE/MCE/RMS-CE (top-label or classwise, equal
width or equal mass), NLL, Brier score, bootstrap intervals and the noise floor.

The equal-width binning goes through `keras_kd._binning`, the same code as the
streaming `ExpectedCalibrationError` metric, so both give the same number.
"""

from __future__ import annotations

import math
from typing import Callable
from typing import NamedTuple
from typing import Optional

import numpy as np
from keras import ops

from keras_kd import _binning
from keras_kd import _validation
from keras_kd.calibration import _inputs
from keras_kd._types import TensorLike

BINNINGS = ("equal_width", "equal_mass")


def expected_calibration_error(
    probs: TensorLike,
    labels: TensorLike,
    num_bins: int = 15,
    norm: str = "l1",
    binning: str = "equal_width",
    from_logits: bool = False,
    sample_weight: Optional[TensorLike] = None,
    classwise: bool = False,
) -> float:
    """Expected (or maximum, or RMS) calibration error, top-label or classwise.

    Top-label (default): confidence `c_i = max_k p_ik`, correct when the argmax is
    the label. With bins b holding weight `n_b` of the total N, mean confidence
    `conf_b` and accuracy `acc_b`:
    `ECE = sum_b (n_b / N) |acc_b - conf_b|` (norm="l1"),
    `RMSCE = sqrt(sum_b (n_b / N) (acc_b - conf_b)^2)` (norm="l2"),
    `MCE = max_b |acc_b - conf_b|` over non-empty bins (norm="max").

    Classwise (`classwise=True`; Kull et al. 2019, the SCE of Nixon et al. 2019):
    for every class k, every example's `p_ik` is binned and compared with the
    frequency of `y = k` in its bin; the result is the mean over classes of that
    error (in the chosen norm).

    Binning:
        - "equal_width" (default): bin `min(floor(c * B), B - 1)`, i.e. [lo, hi) with
          the last bin closed, as TensorFlow Probability and netcal; identical to
          the `ExpectedCalibrationError` metric.
        - "equal_mass" (adaptive, ACE; Nixon et al. 2019): examples sorted by
          ascending confidence (ties broken by correctness, then weight, so the
          result does not depend on the input order); the example with cumulative
          weight `W_<i` before it goes to bin `floor(B * W_<i / W)`.

    Binary models: predictions of shape (N,) or (N, 1) are the probability (or
    logit) of class 1; the confidence is `max(p, 1 - p)`. Multi-label outputs
    (N, L) are L binary problems: pass `probs.reshape(-1)`, `labels.reshape(-1)`.

    Args:
        probs: probabilities (or logits with `from_logits=True`), shape (N, K),
            (N, 1) or (N,). Probabilities must lie in [0, 1] with rows summing to
            1; logits must not be such rows. NaN predictions give NaN.
        labels: class indices (N,) / (N, 1) or one-hot targets (N, K).
        num_bins: B, an integer >= 1, default 15 (Guo et al. 2017).
        norm: "l1" (default), "l2" or "max".
        binning: "equal_width" (default) or "equal_mass".
        from_logits: bool, default False.
        sample_weight: optional finite non-negative weights of shape (N,).
        classwise: bool, default False.

    Returns:
        A Python float in [0, 1], or NaN when a prediction is NaN.

    Example:
        >>> expected_calibration_error([[0.05, 0.95], [0.0, 1.0]], [1, 0], num_bins=10)
        0.475...

    References:
        Naeini et al. AAAI 2015; Guo et al. ICML 2017; Kull et al. NeurIPS 2019;
        Nixon et al. CVPR Workshops 2019.
    """
    num_bins = _validation.check_positive_int(num_bins, "num_bins")
    _validation.check_choice(norm, "norm", _binning.NORMS)
    _validation.check_choice(binning, "binning", BINNINGS)
    _validation.check_bool(classwise, "classwise")
    predictions, targets, weights = _inputs.prepared(probs, labels, from_logits, sample_weight)
    if np.any(np.isnan(predictions)):
        return math.nan
    if classwise:
        return _classwise_error(predictions, targets, weights, num_bins, norm, binning, from_logits)
    confidences, correct = _binning.top_label(
        ops.convert_to_tensor(predictions.astype(np.float32)),
        ops.convert_to_tensor(targets.astype(np.float32)),
        from_logits,
    )
    statistics = _binned(confidences, correct, weights, num_bins, binning)
    return float(ops.convert_to_numpy(_binning.calibration_error(*statistics, norm)))


def _binned(confidences, correct, weights, num_bins, binning):
    """(count, confidence sum, correct sum) per bin, for confidences (N,)."""
    confidences = ops.convert_to_tensor(confidences, "float32")
    correct = ops.convert_to_tensor(correct, "float32")
    if binning == "equal_width":
        bin_ids = _binning.equal_width_bins(confidences, num_bins)
    else:
        bin_ids = ops.convert_to_tensor(
            _equal_mass_bins(
                ops.convert_to_numpy(confidences), ops.convert_to_numpy(correct), weights, num_bins
            )
        )
    weights = ops.convert_to_tensor(weights.astype(np.float32))
    return _binning.sums_per_bin(bin_ids, confidences, correct, num_bins, weights)


def _classwise_error(predictions, targets, weights, num_bins, norm, binning, from_logits):
    probs = probabilities(predictions, from_logits)
    errors = []
    for k in range(probs.shape[-1]):
        statistics = _binned(np.clip(probs[:, k], 0.0, 1.0), targets[:, k], weights, num_bins,
                             binning)
        errors.append(float(ops.convert_to_numpy(_binning.calibration_error(*statistics, norm))))
    return float(np.mean(errors))


def _equal_mass_bins(confidences, correct, weights, num_bins):
    # Sorting on (confidence, correct, weight) makes the assignment a function of
    # the multiset of examples, hence independent of their order.
    order = np.lexsort((weights, correct, confidences))
    sorted_weights = weights[order].astype(np.float64)
    weight_before = np.cumsum(sorted_weights) - sorted_weights
    total = max(float(np.sum(sorted_weights)), np.finfo(np.float64).tiny)
    sorted_bins = np.minimum(np.floor(weight_before * num_bins / total), num_bins - 1)
    bin_ids = np.empty(len(order), dtype=np.int32)
    bin_ids[order] = sorted_bins.astype(np.int32)
    return bin_ids


def probabilities(predictions: np.ndarray, from_logits: bool) -> np.ndarray:
    """Float64 probabilities (N, max(K, 2)) from checked predictions (N, K)."""
    return np.exp(_inputs.log_probabilities(predictions, from_logits)) if from_logits else (
        _inputs.expand_binary(predictions, False)
    )


def negative_log_likelihood(
    logits_or_probs: TensorLike,
    labels: TensorLike,
    from_logits: bool,
    sample_weight: Optional[TensorLike] = None,
) -> float:
    """Mean negative log-likelihood (cross-entropy) of the labels, in float64.

    `NLL = -(1 / N) sum_i sum_k y_ik log p_ik`, weighted by `sample_weight` if given.
    Logits go through a stable log-softmax, where `-inf` logits (masked classes)
    are valid and `0 * log 0 = 0`, as in Keras' `SparseCategoricalCrossentropy`;
    probabilities are normalised and clipped to [1e-7, 1 - 1e-7] exactly as Keras'
    cross-entropy does, so the value matches `val_loss` of a model compiled with
    it. A binary model's single column is `sigmoid`/probability of class 1.

    Args:
        logits_or_probs: shape (N, K), (N, 1) or (N,).
        labels: class indices (N,) / (N, 1) or one-hot / soft targets (N, K).
        from_logits: bool, required: whether the first argument holds logits.
        sample_weight: optional finite non-negative weights of shape (N,).

    Returns:
        A Python float >= 0; NaN when a prediction is NaN.

    Example:
        >>> negative_log_likelihood([[0.0, 0.0]], [1], from_logits=True)  # log 2
        0.693...
    """
    predictions, targets, weights = _inputs.prepared(
        logits_or_probs, labels, from_logits, sample_weight
    )
    if not from_logits and predictions.shape[-1] > 1:
        predictions = predictions / np.sum(predictions, axis=-1, keepdims=True)
    log_probs = _inputs.log_probabilities(predictions, from_logits)
    return _weighted_mean(_inputs.cross_entropy_terms(targets, log_probs), weights)


def brier_score(
    probs: TensorLike,
    labels: TensorLike,
    from_logits: bool = False,
    sample_weight: Optional[TensorLike] = None,
) -> float:
    """Multi-class Brier score: `(1 / N) sum_i sum_k (p_ik - y_ik)^2`, in [0, 2].

    A binary model's single column counts both classes, `2 (p - y)^2`.

    Args:
        probs: probabilities (or logits with `from_logits=True`), (N, K), (N, 1), (N,).
        labels: class indices (N,) / (N, 1) or one-hot / soft targets (N, K).
        from_logits: bool, default False.
        sample_weight: optional finite non-negative weights of shape (N,).

    Returns:
        A Python float; NaN when a prediction is NaN.

    Example:
        >>> brier_score([[0.5, 0.5]], [1])
        0.5

    References:
        Brier. Verification of Forecasts Expressed in Terms of Probability. 1950.
    """
    predictions, targets, weights = _inputs.prepared(probs, labels, from_logits, sample_weight)
    squared = np.square(probabilities(predictions, from_logits) - targets)
    return _weighted_mean(np.sum(squared, axis=-1), weights)


def accuracy(
    probs: TensorLike,
    labels: TensorLike,
    from_logits: bool = False,
    sample_weight: Optional[TensorLike] = None,
) -> float:
    """Top-1 accuracy (weighted), with a binary column read as `p > 0.5` (`z > 0`)."""
    predictions, targets, weights = _inputs.prepared(probs, labels, from_logits, sample_weight)
    expanded = _inputs.expand_binary(predictions, from_logits)
    correct = np.argmax(expanded, axis=-1) == np.argmax(targets, axis=-1)
    return _weighted_mean(correct.astype(np.float64), weights)


class Interval(NamedTuple):
    """A measure on the data (`estimate`) and its bootstrap interval [low, high]."""

    estimate: float
    low: float
    high: float


def bootstrap_interval(
    measure: Callable,
    predictions: TensorLike,
    labels: TensorLike,
    sample_weight: Optional[TensorLike] = None,
    num_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Percentile bootstrap interval of any measure, resampling examples.

    Draws `num_resamples` samples of N examples with replacement (NumPy's
    `default_rng(seed)`, so the interval is reproducible), evaluates
    `measure(predictions[idx], labels[idx], sample_weight=...)` on each and returns
    the `(1 - level) / 2` and `(1 + level) / 2` quantiles around the value on all
    the data. An ECE without its noise cannot be compared: two models whose
    intervals overlap widely are not distinguished by this test set.

    Args:
        measure: a function `(predictions, labels, sample_weight=None) -> float`,
            e.g. `functools.partial(expected_calibration_error, from_logits=True)`.
        predictions: (N, ...) array, indexed along its first axis.
        labels: (N, ...) array.
        sample_weight: optional (N,) weights, resampled with the examples.
        num_resamples: integer >= 1, default 1000.
        level: coverage in (0, 1), default 0.95.
        seed: integer seed, default 0.

    Returns:
        `Interval(estimate, low, high)`.

    Example:
        >>> ece = functools.partial(expected_calibration_error, from_logits=True)
        >>> bootstrap_interval(ece, logits, labels, seed=0)
        Interval(estimate=..., low=..., high=...)

    References:
        Efron, Tibshirani. An Introduction to the Bootstrap. 1993.
    """
    num_resamples = _validation.check_positive_int(num_resamples, "num_resamples")
    level = _validation.check_in_range(level, "level", 0.0, 1.0, False, False)
    predictions = np.asarray(ops.convert_to_numpy(predictions))
    labels = np.asarray(ops.convert_to_numpy(labels))
    num_examples = len(predictions)
    _validation.check_same_length(predictions=predictions, labels=labels)
    if sample_weight is not None:
        sample_weight = _inputs.weights_array(sample_weight, num_examples)
    estimate = measure(predictions, labels, sample_weight=sample_weight)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(num_resamples):
        idx = rng.integers(0, num_examples, size=num_examples)
        weights = None if sample_weight is None else sample_weight[idx]
        if weights is not None and not np.sum(weights) > 0:
            continue
        values.append(measure(predictions[idx], labels[idx], sample_weight=weights))
    low, high = np.quantile(values, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return Interval(float(estimate), float(low), float(high))


def perfectly_calibrated_ece(
    probs: TensorLike,
    num_bins: int = 15,
    norm: str = "l1",
    binning: str = "equal_width",
    from_logits: bool = False,
    sample_weight: Optional[TensorLike] = None,
    classwise: bool = False,
    num_draws: int = 100,
    seed: int = 0,
) -> float:
    """Expected ECE of a perfectly calibrated model with these very predictions.

    Draws labels `y_i ~ Categorical(p_i)` (so the predictions are calibrated by
    construction), computes `expected_calibration_error` with the same options,
    and averages over `num_draws` draws. A binned ECE is biased upwards by the
    finite sample: this is that bias, the noise floor under which a measured ECE
    means nothing.

    Args:
        probs: probabilities (or logits with `from_logits=True`), (N, K), (N, 1), (N,).
        num_bins, norm, binning, from_logits, sample_weight, classwise: as in
            `expected_calibration_error`.
        num_draws: integer >= 1, default 100.
        seed: integer seed, default 0.

    Returns:
        A Python float (NaN when a prediction is NaN).

    References:
        Bröcker, Smith. Increasing the Reliability of Reliability Diagrams. 2007;
        Kumar, Liang, Ma. Verified Uncertainty Calibration. NeurIPS 2019.
    """
    num_draws = _validation.check_positive_int(num_draws, "num_draws")
    _validation.check_bool(from_logits, "from_logits")
    predictions = _inputs.predictions_array(probs)
    _inputs.check_predictions(predictions, from_logits)
    if np.any(np.isnan(predictions)):
        return math.nan
    p = probabilities(predictions, from_logits)
    p = p / np.sum(p, axis=-1, keepdims=True)
    rng = np.random.default_rng(seed)
    cumulative = np.cumsum(p, axis=-1)
    values = []
    for _ in range(num_draws):
        draws = (rng.uniform(size=(len(p), 1)) > cumulative).sum(axis=-1)
        labels = np.minimum(draws, p.shape[-1] - 1)
        values.append(
            expected_calibration_error(
                predictions, labels, num_bins, norm, binning, from_logits, sample_weight,
                classwise,
            )
        )
    return float(np.mean(values))


def _weighted_mean(values, weights):
    return float(np.sum(weights * values) / np.sum(weights))
