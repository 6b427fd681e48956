"""Checks and conversions of the arrays every calibration function receives.

One place decides what the inputs mean, so no calibration function can read them
differently from another:

- predictions of shape (N, K >= 2) are rows of K class scores; (N, 1) and (N,) are
  a binary model's score of class 1 (a sigmoid probability or a logit). A 1-D array
  is never one example with N classes. A multi-label model's (N, L) sigmoid outputs
  are L binary problems: flatten them (`probs.reshape(-1)`, `labels.reshape(-1)`).
- `from_logits` is said, never guessed. Told logits, rows that are probability
  distributions raise; told probabilities, values outside [0, 1] or rows not
  summing to 1 raise.
- NaN predictions (a diverged model) are not an input error: the measures return
  NaN, so that `ModelCheckpoint(save_best_only=True)` never keeps such a model.
- `-inf` logits (masked classes) are valid, as in Keras' own cross-entropy.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
from keras import ops

from keras_kd import _labels
from keras_kd import _validation
from keras_kd._types import TensorLike

# A float16 or hand-normalised softmax misses 1 by a few ulps; a row that misses by
# more is not a distribution.
PROBABILITY_TOLERANCE = 1e-3
LOGITS_HINT = "Pass `from_logits=False` for probabilities, or give the model's pre-softmax outputs."


def to_numpy(array: TensorLike) -> np.ndarray:
    """Any array-like or tensor as a NumPy float64 array."""
    return np.asarray(ops.convert_to_numpy(array), dtype=np.float64)


def _numeric(value, name, hint):
    """`value` (array-like or tensor) as a NumPy array, after checking it holds numbers."""
    if isinstance(value, (list, tuple)) or not hasattr(value, "shape"):
        value = np.asarray(value)
    array = np.asarray(ops.convert_to_numpy(value))
    if array.dtype.kind not in "fiub":
        raise ValueError(
            f"`{name}` must hold numbers, got an array of dtype {array.dtype} "
            f"({array.ravel()[:1].tolist()}...). {hint}"
        )
    return array


def predictions_array(predictions: TensorLike, name: str = "predictions") -> np.ndarray:
    """Predictions as float64 of shape (N, K); a 1-D array is N binary scores."""
    array = _numeric(predictions, name, "Pass the model's outputs.").astype(np.float64)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2 or array.shape[0] == 0:
        raise ValueError(
            f"`{name}` must have shape (N, K), (N, 1) or (N,) with N >= 1, got "
            f"{array.shape}."
        )
    return array


def check_predictions(
    predictions: np.ndarray,
    from_logits: bool,
    name: str = "predictions",
) -> None:
    """Raises when `predictions` (N, K) are not what `from_logits` says they are.

    Rows holding NaN are skipped: they make the result NaN instead.
    """
    rows = predictions[~np.any(np.isnan(predictions), axis=-1)]
    if rows.size == 0:
        return
    if from_logits:
        if np.any(rows == np.inf):
            raise ValueError(f"`{name}` holds +inf logits; only -inf (a masked class) is valid.")
        _validation.check_not_probabilities(rows, name, LOGITS_HINT)
        return
    low, high = float(rows.min()), float(rows.max())
    tolerance = PROBABILITY_TOLERANCE
    if low < -tolerance or high > 1.0 + tolerance:
        raise ValueError(
            f"`{name}` must be probabilities in [0, 1] with `from_logits=False`, got "
            f"values in [{low:.6g}, {high:.6g}]. Pass `from_logits=True` for logits."
        )
    if rows.shape[-1] >= 2:
        sums = np.sum(rows, axis=-1)
        worst = int(np.argmax(np.abs(sums - 1.0)))
        if abs(sums[worst] - 1.0) > tolerance:
            raise ValueError(
                f"`{name}` rows must sum to 1 with `from_logits=False` (probability "
                f"distributions), got a row summing to {sums[worst]:.6g}. Pass "
                f"`from_logits=True` for logits, or normalise the rows (for "
                f"multi-label sigmoid outputs, flatten them into binary predictions)."
            )


def weights_array(sample_weight: TensorLike, num_examples: int) -> np.ndarray:
    """Weights as float64 (N,), after checking shape and values.

    Accepts None (all ones), shape (N,) or (N, 1). Rejects non-finite or negative
    weights and an all-zero total.
    """
    if sample_weight is None:
        return np.ones(num_examples)
    weights = np.asarray(ops.convert_to_numpy(sample_weight))
    if weights.dtype.kind not in "fiub":
        raise ValueError(f"`sample_weight` must hold numbers, got dtype {weights.dtype}.")
    weights = weights.astype(np.float64)
    if weights.ndim == 2 and weights.shape[-1] == 1:
        weights = weights[:, 0]
    if weights.shape != (num_examples,):
        raise ValueError(
            f"`sample_weight` must hold one weight per example, shape ({num_examples},) "
            f"or ({num_examples}, 1), got shape {weights.shape}."
        )
    if not np.all(np.isfinite(weights)) or np.any(weights < 0) or not np.sum(weights) > 0:
        bad = weights[~np.isfinite(weights) | (weights < 0)]
        shown = bad[0] if bad.size else 0.0
        raise ValueError(
            f"`sample_weight` must be finite and non-negative with a positive sum, got "
            f"{shown!r} (values in [{np.nanmin(weights)}, {np.nanmax(weights)}], sum "
            f"{np.sum(weights)})."
        )
    return weights


def labels_array(labels: TensorLike, predictions: np.ndarray) -> np.ndarray:
    """Labels as float64 targets (N, max(K, 2)): one-hot or soft distributions.

    Class indices (N,) / (N, 1) must be integers in [0, K - 1] (in {0, 1} for a
    binary model); one-hot or soft targets (N, K) must be distributions.
    """
    array = _numeric(labels, "labels", "Labels must be class indices or one-hot targets: map "
                     "names to indices first.")
    num_examples, width = predictions.shape
    num_classes = max(width, 2)
    # Structure and index range are checked by `_labels`, as for every loss and
    # metric, against two columns for a binary model (0/1 labels are indices).
    widened = np.zeros((num_examples, num_classes))
    if _labels.is_sparse(array, widened):
        indices = ops.convert_to_numpy(_labels._class_indices(array, widened))
        return np.eye(num_classes)[np.reshape(indices, (-1,))]
    if width == 1:
        raise ValueError(
            f"`labels` for a binary model (one prediction column) must be 0/1 class "
            f"indices of shape ({num_examples},) or ({num_examples}, 1), got shape "
            f"{array.shape}."
        )
    array = array.astype(np.float64)
    sums = np.sum(array, axis=-1)
    if np.any(array < 0) or not np.all(np.isfinite(array)) or np.any(
        np.abs(sums - 1.0) > PROBABILITY_TOLERANCE
    ):
        worst = int(np.argmax(np.abs(sums - 1.0)))
        raise ValueError(
            f"One-hot or soft `labels` must be rows of non-negative numbers summing to "
            f"1, got a row summing to {sums[worst]!r}. An all-zero row (a padded "
            f"example) needs `sample_weight` 0 and any valid label instead."
        )
    return array


def expand_binary(predictions: np.ndarray, from_logits: bool) -> np.ndarray:
    """A single column of class-1 scores as two columns: [0, z] or [1 - p, p]."""
    if predictions.shape[-1] != 1:
        return predictions
    if from_logits:
        return np.concatenate([np.zeros_like(predictions), predictions], axis=-1)
    return np.concatenate([1.0 - predictions, predictions], axis=-1)


def flatten_positions(
    predictions: TensorLike,
    labels: TensorLike,
    sample_weight: Optional[TensorLike] = None,
) -> tuple[TensorLike, TensorLike, Optional[TensorLike]]:
    """Token-level inputs as examples: (batch, ..., K) predictions become (N, K).

    Predictions of rank >= 3 (a sequence model's (batch, sequence, K) logits) are one
    prediction per position; their labels (batch, sequence) / (batch, sequence, 1) /
    (batch, sequence, K) and a padding mask (batch, sequence) as `sample_weight` are
    flattened alike, so masked positions weigh 0. Rank 1 and 2 are returned as given.
    """
    predictions = np.asarray(ops.convert_to_numpy(predictions))
    if predictions.ndim < 3:
        return predictions, labels, sample_weight
    positions = predictions.shape[:-1]

    def flat(value, name):
        if value is None:
            return None
        array = np.asarray(ops.convert_to_numpy(value))
        if array.shape in (positions, positions + (1,), (math.prod(positions),)):
            return array.reshape(-1)
        if array.shape == predictions.shape:
            return array.reshape(-1, predictions.shape[-1])
        raise ValueError(
            f"`{name}` must have shape {positions} (one per position of predictions of "
            f"shape {predictions.shape}) or {predictions.shape}, got {array.shape}."
        )

    flat_predictions = predictions.reshape(-1, predictions.shape[-1])
    return flat_predictions, flat(labels, "labels"), flat(sample_weight, "sample_weight")


def prepared(
    predictions: TensorLike,
    labels: TensorLike,
    from_logits: bool,
    sample_weight: Optional[TensorLike] = None,
    name: str = "predictions",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(predictions (N, K), targets (N, max(K, 2)), weights (N,)) after every check.

    Token-level predictions (batch, ..., K) are flattened first (`flatten_positions`).
    """
    _validation.check_bool(from_logits, "from_logits")
    predictions, labels, sample_weight = flatten_positions(predictions, labels, sample_weight)
    predictions = predictions_array(predictions, name)
    check_predictions(predictions, from_logits, name)
    targets = labels_array(labels, predictions)
    weights = weights_array(sample_weight, predictions.shape[0])
    return predictions, targets, weights


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Stable log-softmax over the last axis; `-inf` logits give `-inf`."""
    top = np.max(logits, axis=-1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    shifted = logits - top
    with np.errstate(divide="ignore"):
        return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


def log_probabilities(predictions: np.ndarray, from_logits: bool) -> np.ndarray:
    """log p (N, max(K, 2)) from logits or probabilities, in float64.

    Probabilities are clipped to [epsilon, 1 - epsilon] (1e-7) as Keras'
    cross-entropy does, so an NLL of probabilities equals Keras' `val_loss`.
    """
    expanded = expand_binary(predictions, from_logits)
    if from_logits:
        return log_softmax(expanded)
    epsilon = 1e-7
    return np.log(np.clip(expanded, epsilon, 1.0 - epsilon))


def cross_entropy_terms(targets: np.ndarray, log_probs: np.ndarray) -> np.ndarray:
    """Per-example `-sum_k y_k log p_k`, with 0 * log 0 = 0 (masked classes)."""
    products = np.where(targets > 0, targets * np.where(targets > 0, log_probs, 0.0), 0.0)
    return -np.sum(products, axis=-1)
