"""Checks on what `Distiller.fit` and `cache_teacher_logits` are given, before any work.

Cheap and once: NumPy arguments are checked whole (weights, target keys); the first
batch is run through the teachers and the student to see their *values* (what static
inspection of the models cannot), so probabilities taken for logits fail before the
first step instead of training silently wrong.
"""

import inspect

import keras
import numpy as np

from keras_kd import _teacher
from keras_kd import _validation
from keras_kd.targets import TEACHER_LOGITS
from keras_kd.targets import TEACHER_MEMBER_LOGITS
from keras_kd.targets import check_target_keys
from keras_kd.targets import is_per_output

# Rows taken from in-memory arrays for the first-batch value check.
_CHECK_ROWS = 32


def check_fit_call(distiller, args, kwargs):
    """`check_fit_inputs` on a `fit(*args, **kwargs)` call's arguments, bound as Keras does."""
    bound = inspect.signature(keras.Model.fit).bind(distiller, *args, **kwargs).arguments
    check_fit_inputs(
        distiller,
        bound.get("x"),
        bound.get("y"),
        bound.get("sample_weight"),
        bound.get("class_weight"),
        bound.get("batch_size"),
    )


def check_fit_inputs(distiller, x, y=None, sample_weight=None, class_weight=None, batch_size=None):
    """Everything `Distiller.fit` can check before training; raises ValueError."""
    output_names = getattr(distiller, "_output_names", None) or ()
    check_target_keys(y, output_names)
    labels = y.get("labels") if isinstance(y, dict) and not is_per_output(y, output_names) else y
    if labels is not None and not isinstance(labels, (list, tuple, dict)):
        _validation.check_numeric_labels(labels, "y")
    if class_weight is not None:
        _check_class_weight(class_weight, x, y)
    if sample_weight is not None:
        _validation.check_weight_values(sample_weight)
        _check_length(sample_weight, x, "sample_weight")
    if getattr(distiller, "_first_batch_checked", False):
        return
    readable = all(
        _teacher.output_activation(model) or _teacher.ends_in_logits(model)
        for model in [*distiller.teachers, distiller.student]
    )
    if readable and not _carries_cached_logits(x, y):
        # Nothing the values could add: skip reading a batch (a shuffle buffer to fill).
        distiller._first_batch_checked = True
        return
    batch = first_batch(x, y, sample_weight, batch_size)
    if batch is None:
        return
    x_batch, y_batch, weight_batch = batch
    check_target_keys(y_batch, output_names)
    if weight_batch is not None:
        _validation.check_weight_values(weight_batch)
    cached = None
    if isinstance(y_batch, dict):
        cached = y_batch.get(TEACHER_LOGITS, y_batch.get(TEACHER_MEMBER_LOGITS))
    output = getattr(getattr(distiller, "_distillation_loss", None), "output", "softmax")
    _teacher.check_first_batch(distiller.teachers, distiller.student, x_batch, output, cached)
    distiller._first_batch_checked = True


def check_cache_data(teachers, data):
    """Rejects data `cache_teacher_logits` cannot re-read in order, naming the fix."""
    _teacher.check_ensemble(teachers)
    if inspect.isgenerator(data) or (
        hasattr(data, "__next__") and not isinstance(data, (tuple, list, np.ndarray))
    ):
        raise ValueError(
            f"`data` is a Python {type(data).__name__}, which can be read only once; the "
            "cache re-reads `data` every epoch to pair inputs with their logits. Pass "
            "arrays with batch_size, or tf.data.Dataset.from_generator(<generator "
            "function>, output_signature=...).batch(n)."
        )
    if isinstance(data, keras.utils.PyDataset):
        raise ValueError(
            f"`data` is a keras.utils.PyDataset ({type(data).__name__}), which "
            "cache_teacher_logits does not read (it may reshuffle between epochs). Pass "
            "arrays with batch_size, or a batched tf.data.Dataset."
        )
    import tensorflow as tf

    if isinstance(data, tf.data.Dataset):
        _check_batched(teachers, data)


def check_cache_first_batch(teachers, dataset):
    """Runs the teachers on the first batch: probabilities, dicts, disagreeing members."""
    batch = first_batch(dataset)
    if batch is not None:
        _teacher.check_first_batch(teachers, None, batch[0])


def first_batch(x, y=None, sample_weight=None, batch_size=None):
    """(x, y, sample_weight) of the first batch, or None when it cannot be read cheaply.

    Arrays: their first rows. A tf.data.Dataset: its first element (a fresh iterator;
    the dataset is re-iterated by `fit`). A PyDataset: item 0. Generators are not
    read (that would consume them).
    """
    import tensorflow as tf

    if isinstance(x, tf.data.Dataset):
        for element in x.take(1):
            return keras.utils.unpack_x_y_sample_weight(element)
        return None
    if isinstance(x, keras.utils.PyDataset):
        return keras.utils.unpack_x_y_sample_weight(x[0]) if len(x) else None
    leaves = tf.nest.flatten(x)
    if not leaves or any(_validation.eager_values(leaf) is None for leaf in leaves):
        return None
    rows = min(batch_size or _CHECK_ROWS, _CHECK_ROWS)

    def head(structure):
        if structure is None:
            return None
        return tf.nest.map_structure(lambda array: np.asarray(array)[:rows], structure)

    return head(x), head(y), head(sample_weight)


def _carries_cached_logits(x, y):
    """True when `y` (or the dataset `x`'s targets) is a dict of cached targets."""
    import tensorflow as tf

    if isinstance(x, tf.data.Dataset):
        element = x.element_spec
        return isinstance(element, tuple) and len(element) > 1 and isinstance(element[1], dict)
    return isinstance(y, dict)


def _check_class_weight(class_weight, x, y):
    if _carries_cached_logits(x, y):
        raise ValueError(
            f"`class_weight`={class_weight!r} cannot be applied with cached teacher logits "
            "(`y` is a dict of labels and logits, which Keras' class weighting does not "
            "read). Pass the same weights per example instead: sample_weight = "
            "np.array([class_weight[c] for c in labels]) (or make them the third element "
            "of the cached dataset)."
        )
    if not isinstance(class_weight, dict):
        raise ValueError(
            f"`class_weight` must be a dict {{class index: weight}}, got {class_weight!r}."
        )
    _validation.check_weight_values(np.asarray(list(class_weight.values())), "class_weight")


def _check_length(sample_weight, x, name):
    import tensorflow as tf

    leaves = tf.nest.flatten(x) if x is not None else []
    weights = _validation.eager_values(sample_weight)
    first = _validation.eager_values(leaves[0]) if leaves else None
    if weights is None or first is None or weights.ndim == 0 or first.ndim == 0:
        return
    if len(weights) != len(first):
        raise ValueError(
            f"`{name}` must hold one weight per example: got {len(weights)} weights for "
            f"{len(first)} examples in `x`."
        )


def _check_batched(teachers, dataset):
    import tensorflow as tf

    expected = _teacher.input_shapes(teachers[0])
    spec = dataset.element_spec
    x_spec = spec[0] if isinstance(spec, tuple) else spec
    leaves = tf.nest.flatten(x_spec)
    if not expected or len(leaves) != len(expected) or not hasattr(leaves[0], "shape"):
        return
    element_rank, input_rank = len(leaves[0].shape), len(expected[0])
    if element_rank == input_rank - 1:
        raise ValueError(
            f"`data` is an unbatched tf.data.Dataset: its inputs have shape "
            f"{tuple(leaves[0].shape)}, the teacher expects batches of shape {expected[0]}. "
            "Batch it first: data.batch(batch_size)."
        )
