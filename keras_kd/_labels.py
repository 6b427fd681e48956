"""Label handling shared by the losses, the ECE metric and the calibration tools.

Sparse or one-hot is decided from static shapes, never guessed from values: labels
whose rank equals the predictions' rank and whose last axis has K entries are one-hot
(or soft) targets; labels of rank one less, or with a trailing axis of 1, are class
indices.
"""

from keras import ops


def is_sparse(labels, predictions):
    """True when `labels` holds class indices for `predictions` of shape (..., K).

    Raises:
        ValueError: labels whose shape fits neither convention, naming both shapes.
    """
    label_shape = tuple(labels.shape)
    prediction_shape = tuple(predictions.shape)
    num_classes = prediction_shape[-1]
    if len(label_shape) == len(prediction_shape) - 1:
        return True
    if len(label_shape) == len(prediction_shape):
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
        if len(labels.shape) == len(predictions.shape):
            labels = ops.squeeze(labels, axis=-1)
        return ops.one_hot(ops.cast(labels, "int32"), num_classes, dtype=dtype)
    return ops.cast(labels, dtype)


def to_indices(labels, predictions):
    """Returns labels as int32 class indices of shape (...,)."""
    if is_sparse(labels, predictions):
        if len(labels.shape) == len(predictions.shape):
            labels = ops.squeeze(labels, axis=-1)
        return ops.cast(labels, "int32")
    return ops.cast(ops.argmax(labels, axis=-1), "int32")
