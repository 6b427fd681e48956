"""Label handling shared by the losses, the ECE metric and the calibration tools.

Sparse or one-hot is decided from static shapes, never guessed from values: labels
whose rank equals the predictions' rank and whose last axis has K entries are one-hot
(or soft) targets; labels of rank one less, or with a trailing axis of 1, are class
indices.

Integer labels out of range are caught where their values are known without tracing
(eager calls, NumPy arrays): `one_hot` would silently turn them into all-zero rows.
Inside a compiled `fit` they are not checked, which would cost a device sync per step.
"""

import numpy as np
from keras import ops

from keras_kd import _validation


def is_sparse(labels, predictions):
    """True when `labels` holds class indices for `predictions` of shape (..., K).

    Raises:
        ValueError: labels whose shape fits neither convention, naming both shapes.
    """
    _validation.check_numeric_labels(labels)
    label_shape = tuple(labels.shape)
    prediction_shape = tuple(predictions.shape)
    num_classes = prediction_shape[-1]
    if len(label_shape) == len(prediction_shape) - 1:
        _check_same_examples(label_shape, prediction_shape)
        return True
    if len(label_shape) == len(prediction_shape):
        _check_same_examples(label_shape[:-1], prediction_shape)
        if label_shape[-1] == 1 and num_classes != 1:
            return True
        if label_shape[-1] is None or num_classes is None or label_shape[-1] == num_classes:
            return False
        raise ValueError(
            f"One-hot `y_true` must have {num_classes} classes on its last axis to "
            f"match predictions of shape {prediction_shape}, got labels of shape "
            f"{label_shape}."
        )
    raise ValueError(
        f"`y_true` must be class indices of shape {prediction_shape[:-1]} (or with a "
        f"trailing axis of 1) or one-hot targets of shape {prediction_shape}, got "
        f"labels of shape {label_shape}."
    )


def to_one_hot(labels, predictions, dtype="float32"):
    """Returns labels as (..., K) targets of `dtype`, from indices or one-hot input."""
    num_classes = predictions.shape[-1]
    if is_sparse(labels, predictions):
        return ops.one_hot(_class_indices(labels, predictions), num_classes, dtype=dtype)
    _validation.check_distribution_rows(labels)
    return ops.cast(labels, dtype)


def to_indices(labels, predictions):
    """Returns labels as int32 class indices of shape (...,)."""
    if is_sparse(labels, predictions):
        return _class_indices(labels, predictions)
    _validation.check_distribution_rows(labels)
    return ops.cast(ops.argmax(labels, axis=-1), "int32")


def _class_indices(sparse_labels, predictions):
    """Sparse labels as int32 indices of shape (...,), range-checked when eager."""
    if len(sparse_labels.shape) == len(predictions.shape):
        sparse_labels = ops.squeeze(sparse_labels, axis=-1)
    _check_class_range(sparse_labels, predictions.shape[-1])
    return ops.cast(sparse_labels, "int32")


def _check_same_examples(example_shape, prediction_shape):
    """Raises when labels and predictions have different known batch (example) sizes."""
    if any(
        a is not None and b is not None and a != b
        for a, b in zip(example_shape, prediction_shape[:-1])
    ):
        raise ValueError(
            f"`y_true` and `y_pred` must hold the same number of examples: got labels "
            f"for examples of shape {tuple(example_shape)} and predictions of shape "
            f"{tuple(prediction_shape)}."
        )


def _check_class_range(indices, num_classes):
    values = _eager_values(indices)
    if values is None or values.size == 0 or num_classes is None:
        return
    # Keras casts `y_true` to the loss dtype, so integer labels often arrive as floats.
    invalid = (values < 0) | (values >= num_classes) | (values != np.floor(values))
    if np.any(invalid):
        raise ValueError(
            f"Class indices in `y_true` must be integers in [0, {num_classes - 1}] for "
            f"predictions with {num_classes} classes, got {values[invalid].flat[0].item()!r} "
            f"({int(np.sum(invalid))} invalid of {values.size})."
        )


# One definition, in `_validation`, for every eager value check.
_eager_values = _validation.eager_values
