"""Confidence binning shared by the streaming ECE metric and the array functions.

Every calibration number in keras_kd goes through this module, so the metric, the
callback and `keras_kd.calibration` cannot disagree on a bin edge. All arithmetic is
`keras.ops` in float32, so it runs inside a compiled `evaluate()` on any backend. It
runs once per evaluation batch, so it uses few ops: on CPU without XLA each op costs
a dispatch comparable to a small model's layer.

Bin convention (equal width): confidence `c = max_k p_k`, clamped to [0, 1], falls
in bin `min(floor(c * B), B - 1)`. Bins are [lo, hi) with the last one closed, so
`c = 1.0` lands in the top bin, as in TensorFlow Probability and netcal.
"""

from keras import ops

from keras_kd import _labels

NORMS = ("l1", "l2", "max")


def top_label(predictions, labels, from_logits=False):
    """Top-label confidence and 0/1 correctness, both float32 and flattened to (N,).

    From logits the confidence is `max_k softmax(z)_k = 1 / sum_k exp(z_k - max z)`,
    computed in float32 without forming the softmax: it never overflows and needs one
    `exp` per logit. A single column is a binary model's sigmoid probability (or
    logit) of class 1: confidence `max(p, 1 - p)`, predicted class `p > 0.5`.

    Args:
        predictions: probabilities or logits of shape (..., K).
        labels: class indices (...,) / (..., 1) or one-hot targets (..., max(K, 2)).
        from_logits: whether `predictions` are logits.

    Raises:
        ValueError: labels that do not fit the predictions (see `keras_kd._labels`).
    """
    predictions = ops.cast(predictions, "float32")
    if predictions.shape[-1] == 1:
        # Labels are read against two classes, so 0/1 labels are class indices.
        indices = _labels.to_indices(labels, ops.concatenate([predictions] * 2, axis=-1))
        scores = predictions[..., 0]
        if from_logits:
            confidences = ops.sigmoid(ops.abs(scores))
            predicted = ops.cast(scores > 0.0, "int32")
        else:
            confidences = ops.maximum(scores, 1.0 - scores)
            predicted = ops.cast(scores > 0.5, "int32")
    else:
        indices = _labels.to_indices(labels, predictions)  # also checks example counts
        predicted = ops.cast(ops.argmax(predictions, axis=-1), "int32")
        if from_logits:
            # In (0, 1] by construction: the sum is at least exp(0) = 1.
            top = ops.max(predictions, axis=-1, keepdims=True)
            confidences = 1.0 / ops.sum(ops.exp(predictions - top), axis=-1)
        else:
            confidences = ops.max(predictions, axis=-1)
    if not from_logits:
        # Probabilities that went through float16 or a user's own normalisation can
        # exceed 1 by an ulp, which would index past the last bin.
        confidences = ops.clip(confidences, 0.0, 1.0)
    correct = ops.cast(ops.equal(predicted, indices), "float32")
    if len(confidences.shape) != 1:
        confidences, correct = ops.reshape(confidences, (-1,)), ops.reshape(correct, (-1,))
    return confidences, correct


def equal_width_bins(confidences, num_bins):
    """Bin index `min(floor(c * B), B - 1)` as int32, for confidences in [0, 1]."""
    # Casting truncates toward zero, which is floor for c >= 0.
    return ops.minimum(ops.cast(confidences * num_bins, "int32"), num_bins - 1)


def sums_per_bin(bin_ids, confidences, correct, num_bins, weights=None):
    """Sufficient statistics per bin: (count, sum of confidence, sum of correct).

    Each is float32 of shape (num_bins,); with `weights` every sum is weighted, so
    "count" is the total weight in the bin. A one-hot matrix product rather than a
    scatter keeps the sums deterministic on accelerators and cheap for small B.
    """
    if weights is None:
        columns = ops.stack([ops.ones_like(confidences), confidences, correct])
    else:
        columns = ops.stack([weights, weights * confidences, weights * correct])
    membership = ops.one_hot(bin_ids, num_bins, dtype="float32")
    counts, confidence_sums, correct_sums = ops.unstack(ops.matmul(columns, membership), 3)
    return counts, confidence_sums, correct_sums


def bin_statistics(predictions, labels, num_bins, sample_weight=None, from_logits=False):
    """Per-bin (count, confidence sum, correct sum) with equal-width bins.

    Args:
        predictions: probabilities (or logits with `from_logits=True`), (..., K).
        labels: class indices (...,) / (..., 1) or one-hot targets (..., K).
        num_bins: B >= 1.
        sample_weight: optional non-negative weights, one per example (see
            `flatten_weights`).
        from_logits: whether `predictions` are logits, default False.

    Returns:
        Three float32 tensors of shape (num_bins,).
    """
    confidences, correct = top_label(predictions, labels, from_logits)
    weights = None
    if sample_weight is not None:
        weights = flatten_weights(sample_weight, predictions)
    bin_ids = equal_width_bins(confidences, num_bins)
    return sums_per_bin(bin_ids, confidences, correct, num_bins, weights)


def flatten_weights(sample_weight, predictions):
    """Weights as float32 of shape (N,): one per example of `predictions` (..., K).

    Accepts weights of the examples' shape (...,), with a trailing axis of 1, or a
    scalar (broadcast to every example).
    """
    weights = ops.cast(sample_weight, "float32")
    example_rank = len(predictions.shape) - 1
    if len(weights.shape) == example_rank + 1 and weights.shape[-1] == 1:
        weights = ops.squeeze(weights, axis=-1)
    if len(weights.shape) != example_rank:
        weights = ops.broadcast_to(weights, ops.shape(predictions)[:-1])
    elif not _same_known_shape(weights.shape, predictions.shape[:-1]):
        raise ValueError(
            f"`sample_weight` must hold one weight per example: got shape "
            f"{tuple(sample_weight.shape)} for predictions of shape "
            f"{tuple(predictions.shape)}."
        )
    return ops.reshape(weights, (-1,))


def calibration_error(counts, confidence_sums, correct_sums, norm="l1"):
    """Calibration error from per-bin statistics, as a float32 tensor.

    With `n_b` the (weighted) count of bin b, `N = sum_b n_b`, and the gap
    `g_b = |acc_b - conf_b| = |correct_sum_b - confidence_sum_b| / n_b`:

    - "l1": `ECE = sum_b (n_b / N) g_b` (Naeini et al. 2015; Guo et al. 2017),
    - "l2": `RMSCE = sqrt(sum_b (n_b / N) g_b^2)`,
    - "max": `MCE = max_b g_b`.

    The bins are the last axis: statistics of shape (..., B) give errors of shape
    (...), one per leading index (per class for the classwise ECE). Empty bins
    contribute nothing, and are left out of the maximum. With no samples at all the
    error is 0. A NaN prediction (a diverged model) makes the error NaN, never 0: its
    NaN confidence reaches every bin's sum through the one-hot product
    (NaN * 0 = NaN), and the result is then NaN explicitly, as reductions such as
    `max` do not propagate NaN on every backend.
    """
    # The metric passes its state variables: Keras' JAX `ops.where` hands them to
    # `jnp.where` unconverted, which recent JAX (0.10) rejects.
    counts, confidence_sums, correct_sums = (
        ops.convert_to_tensor(value) for value in (counts, confidence_sums, correct_sums)
    )
    total = ops.maximum(ops.sum(counts, axis=-1), 1e-30)
    invalid = ops.any(ops.isnan(confidence_sums) | ops.isnan(correct_sums), axis=-1)
    if norm == "l1":
        # sum_b |correct_b - conf_b| / N: the same value without dividing twice.
        error = ops.sum(ops.abs(correct_sums - confidence_sums), axis=-1) / total
    elif norm in ("l2", "max"):
        nonempty = counts > 0
        safe_counts = ops.where(nonempty, counts, 1.0)
        gaps = ops.where(nonempty, ops.abs(correct_sums - confidence_sums) / safe_counts, 0.0)
        if norm == "l2":
            error = ops.sqrt(ops.sum(counts * ops.square(gaps), axis=-1) / total)
        else:
            error = ops.max(gaps, axis=-1)
    else:
        raise ValueError(f"`norm` must be one of {list(NORMS)}, got {norm!r}.")
    return ops.where(invalid, float("nan"), error)


def classwise_statistics(probs, targets, num_bins, weights=None):
    """Per-class, per-bin statistics (K, B) x 3 for the classwise ECE.

    For every class k, each example's `p_k` is binned with equal width and counted
    against `y_k` (1 when k is the label; soft targets count fractionally).

    Args:
        probs: float32 probabilities (N, K).
        targets: float32 one-hot or soft targets (N, K).
        num_bins: B >= 1.
        weights: optional float32 (N,).
    """
    bin_ids = equal_width_bins(ops.clip(probs, 0.0, 1.0), num_bins)  # (N, K)
    membership = ops.one_hot(bin_ids, num_bins, dtype="float32")  # (N, K, B)
    if weights is None:
        weights = ops.ones_like(probs[:, 0])
    weights = weights[:, None, None]
    counts = ops.sum(membership * weights, axis=0)
    confidence_sums = ops.sum(membership * (weights * probs[:, :, None]), axis=0)
    correct_sums = ops.sum(membership * (weights * targets[:, :, None]), axis=0)
    return counts, confidence_sums, correct_sums


def equal_mass_groups(counts, confidence_sums, correct_sums, num_bins):
    """Merges a fine equal-width histogram (..., M) into B equal-mass bins (..., B).

    Fine bin j, with cumulative weight `W_<j` before it, goes to bin
    `min(floor(B * W_<j / W), B - 1)`: the rule `expected_calibration_error` applies
    per example, applied per fine bin. A fine bin is never split, so the mass that
    lands in another bin than the exact per-example rule would put it in is at most
    the mass of one fine bin per boundary. Moving an example of weight w between two
    bins changes the ECE by at most 2 w / W, hence
    `|ECE_streamed - ECE_exact| <= 2 sum_{j straddling a boundary} n_j / W
    <= 2 (B - 1) max_j n_j / W` (`equal_mass_error_bound`).
    """
    counts, confidence_sums, correct_sums = (
        ops.convert_to_tensor(value) for value in (counts, confidence_sums, correct_sums)
    )
    total = ops.maximum(ops.sum(counts, axis=-1, keepdims=True), 1e-30)
    before = ops.cumsum(counts, axis=-1) - counts
    groups = ops.minimum(ops.cast(ops.floor(num_bins * before / total), "int32"), num_bins - 1)
    membership = ops.one_hot(groups, num_bins, dtype="float32")  # (..., M, B)
    merged = [
        ops.sum(membership * ops.expand_dims(value, -1), axis=-2)
        for value in (counts, confidence_sums, correct_sums)
    ]
    return tuple(merged)


def equal_mass_error_bound(counts, num_bins):
    """The bound of `equal_mass_groups`: `2 sum_{straddling j} n_j / W`, float32."""
    counts = ops.convert_to_tensor(counts)
    total = ops.maximum(ops.sum(counts, axis=-1), 1e-30)
    before = ops.cumsum(counts, axis=-1) - counts
    after = before + counts
    # Fine bin j straddles a boundary when a multiple of W / B lies strictly inside
    # (W_<j, W_<=j): its examples could belong to two bins.
    start = ops.floor(num_bins * before / total[..., None])
    end = ops.ceil(num_bins * after / total[..., None]) - 1
    straddles = ops.cast(end > start, "float32")
    return 2.0 * ops.sum(straddles * counts, axis=-1) / total


def _same_known_shape(shape_a, shape_b):
    """Equal ranks and equal sizes wherever both are known (None matches any)."""
    shape_a, shape_b = tuple(shape_a), tuple(shape_b)
    return len(shape_a) == len(shape_b) and all(
        a is None or b is None or a == b for a, b in zip(shape_a, shape_b)
    )
