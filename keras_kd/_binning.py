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
    """Calibration error from per-bin statistics, as a float32 scalar.

    With `n_b` the (weighted) count of bin b, `N = sum_b n_b`, and the gap
    `g_b = |acc_b - conf_b| = |correct_sum_b - confidence_sum_b| / n_b`:

    - "l1": `ECE = sum_b (n_b / N) g_b` (Naeini et al. 2015; Guo et al. 2017),
    - "l2": `RMSCE = sqrt(sum_b (n_b / N) g_b^2)`,
    - "max": `MCE = max_b g_b`.

    Empty bins contribute nothing, and are left out of the maximum. With no samples
    at all the error is 0.
    """
    # The metric passes its state variables: Keras' JAX `ops.where` hands them to
    # `jnp.where` unconverted, which recent JAX (0.10) rejects.
    counts, confidence_sums, correct_sums = (
        ops.convert_to_tensor(value) for value in (counts, confidence_sums, correct_sums)
    )
    total = ops.maximum(ops.sum(counts), 1e-30)
    if norm == "l1":
        # sum_b |correct_b - conf_b| / N: the same value without dividing twice.
        return ops.sum(ops.abs(correct_sums - confidence_sums)) / total
    nonempty = counts > 0
    safe_counts = ops.where(nonempty, counts, 1.0)
    gaps = ops.where(nonempty, ops.abs(correct_sums - confidence_sums) / safe_counts, 0.0)
    if norm == "l2":
        return ops.sqrt(ops.sum(counts * ops.square(gaps)) / total)
    if norm == "max":
        return ops.max(gaps)
    raise ValueError(f"`norm` must be one of {list(NORMS)}, got {norm!r}.")


def _same_known_shape(shape_a, shape_b):
    """Equal ranks and equal sizes wherever both are known (None matches any)."""
    shape_a, shape_b = tuple(shape_a), tuple(shape_b)
    return len(shape_a) == len(shape_b) and all(
        a is None or b is None or a == b for a, b in zip(shape_a, shape_b)
    )
