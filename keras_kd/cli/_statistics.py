"""The statistics of `keras-kd reproduce`'s findings: vectorised ECE, its noise floor,
bootstrap resamples of the test split, and intervals over seeds.

The ECE here is the same estimator as `keras_kd.calibration.expected_calibration_error`
(equal-width bins, bin `min(floor(c * B), B - 1)`), evaluated for many resamples at
once as matrix products; tests check it against the library's function.
"""

import math

import numpy as np

from keras_kd import calibration

# Two-sided 97.5 % quantiles of Student's t for 1..10 degrees of freedom.
_T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)
_Z_975 = 1.959964


def top_label(logits):
    """(confidence, predicted class) of logits (N, K), confidence in float64."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    confidence = 1.0 / np.exp(shifted).sum(axis=-1)
    return confidence, np.argmax(logits, axis=-1)


def binned_ece(confidence, correct, num_bins, weights=None):
    """Top-label ECE for each row of `correct` and/or `weights`, vectorised.

    Args:
        confidence: (N,) top-label confidences in [0, 1].
        correct: (N,) or (R, N) 0/1 correctness.
        num_bins: equal-width bins.
        weights: None or (R, N) non-negative example weights (bootstrap counts).

    Returns:
        (R,) ECEs, `sum_b |sum_{i in b} w_i (correct_i - c_i)| / sum_i w_i`.
    """
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.atleast_2d(np.asarray(correct, dtype=np.float64))
    weights = np.ones((1, confidence.size)) if weights is None else np.atleast_2d(weights)
    bins = np.minimum((confidence * num_bins).astype(np.int64), num_bins - 1)
    one_hot = np.zeros((confidence.size, num_bins))
    one_hot[np.arange(confidence.size), bins] = 1.0
    gaps = (weights * (correct - confidence)) @ one_hot
    return np.abs(gaps).sum(axis=-1) / weights.sum(axis=-1)


def noise_floor(logits, num_bins, seed, draws=200):
    """The expected ECE of a perfectly calibrated model with these confidences.

    Each draw makes the top class right with probability equal to its confidence
    (perfect calibration); the binned ECE of such labels is still > 0 on a finite
    test set. An observed ECE near this floor leaves nothing for a calibration
    method to remove. The library's `perfectly_calibrated_ece` is the one source.
    """
    return calibration.perfectly_calibrated_ece(
        logits, num_bins=num_bins, from_logits=True, num_draws=draws, seed=seed
    )


def bootstrap_counts(num_examples, samples, seed):
    """(samples, N) multiplicities of N examples drawn with replacement, per resample."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(num_examples, np.full(num_examples, 1.0 / num_examples),
                           size=samples).astype(np.float64)


def measure(logits, labels, metric, num_bins, counts=None, temperature=None):
    """`metric` ("accuracy", "ece" or "ece_temperature_scaled") of `logits` on the
    test split, for each resample in `counts` (R, N), or once (R = 1)."""
    logits = np.asarray(logits, dtype=np.float64)
    if metric == "ece_temperature_scaled":
        if temperature is None:
            return None
        logits = logits / temperature
    confidence, predicted = top_label(logits)
    correct = (predicted == np.asarray(labels)).astype(np.float64)
    weights = np.ones((1, correct.size)) if counts is None else counts
    if metric == "accuracy":
        return (weights @ correct) / weights.sum(axis=-1)
    return binned_ece(confidence, correct, num_bins, weights)


def seed_half_width(differences):
    """Half-width of the 95 % t interval of the mean of `differences` (None for one)."""
    count = len(differences)
    if count < 2:
        return None
    return t_quantile(count - 1) * float(np.std(differences, ddof=1)) / math.sqrt(count)


def t_quantile(degrees_of_freedom):
    """Student's t 97.5 % quantile (a table, then the Cornish-Fisher expansion)."""
    if degrees_of_freedom <= len(_T_975):
        return _T_975[degrees_of_freedom - 1]
    z, df = _Z_975, degrees_of_freedom
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def verdict(mean, half_width, direction, negligible):
    """"reproduced", "not reproduced" or "too noisy to tell" for a claimed direction.

    Reproduced: the interval `mean ± half_width` lies entirely on the claimed side of
    0. Not reproduced: it lies entirely on the other side, or entirely within
    ±`negligible` (an effect too small to matter is ruled in). Otherwise the
    interval is too wide to tell.
    """
    sign = 1.0 if direction == "higher" else -1.0
    low, high = sorted((sign * (mean - half_width), sign * (mean + half_width)))
    if low > 0.0:
        return "reproduced"
    if high < 0.0 or (abs(mean) + half_width < negligible):
        return "not reproduced"
    return "too noisy to tell"
