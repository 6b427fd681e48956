"""Token-level distillation: how the soft term is reduced, and top-k teacher targets.

Sequence models give logits of shape (batch, ..., K) and a padding mask of shape
(batch, ...) as `sample_weight`; every loss then yields one value per position and
Keras' reduction turns them into the scalar that trains. The hard-label loss given to
`Distiller.compile` chooses that reduction; the soft term follows it unless told
otherwise, so that both are means over the same positions and `alpha` keeps its
meaning whatever the amount of padding.
"""

import math

import keras
from keras import ops

from keras_kd import _validation

# Keras' reductions to a scalar ("none" would leave a per-token tensor to train on).
_SCALAR_REDUCTIONS = ("sum_over_batch_size", "mean_with_sample_weight", "mean", "sum")
# What Keras wraps a loss function or a name in (`LossFunctionWrapper`'s default).
KERAS_DEFAULT_REDUCTION = "sum_over_batch_size"


def check_reduction(reduction):
    """None (follow the hard-label loss) or one of Keras' scalar reductions."""
    if reduction is None:
        return None
    return _validation.check_choice(reduction, "reduction", _SCALAR_REDUCTIONS)


def soft_reduction(reduction, hard_loss):
    """The soft term's reduction: `reduction` if given, else the hard-label loss's own.

    A `keras.losses.Loss` instance carries its reduction; a loss function or name is
    wrapped by Keras with "sum_over_batch_size". A hard loss reducing to "none" (per
    position) has no scalar to follow, so the soft term takes Keras' default.
    """
    if reduction is not None:
        return reduction
    hard_reduction = getattr(hard_loss, "reduction", None)
    if isinstance(hard_loss, keras.losses.Loss) and hard_reduction in _SCALAR_REDUCTIONS:
        return hard_reduction
    return KERAS_DEFAULT_REDUCTION


def dense_teacher_logits(teacher_logits, student_logits, divergence):
    """Dense (..., K) teacher logits from a top-k cache's targets; dense ones unchanged.

    A top-k cache (`keras_kd.cache_teacher_logits(..., top_k=k)`) gives, per position,
    the teacher's k largest logits, their class indices and one "tail logit", as the
    dict `{"values": (..., k), "indices": (..., k), "tail_logit": (...,)}` that
    `keras_kd.targets.split_targets` returns. They become logits equal to the
    teacher's on the k classes and to the tail logit on the other K - k: the tail
    logit `log((Z - sum_top exp z_i) / (K - k))`, `Z = sum_all exp z_j`, spreads the
    tail's probability mass evenly over its classes, so at T = 1 the target has the
    teacher's exact top-k probabilities and tail mass, and only the tail's shape is
    lost; at other temperatures the tail's mass is that of an even tail (above the
    true one for T > 1, by Jensen's inequality). With k = K it is exactly the dense
    teacher. Without a "tail_logit" the tail is empty (`-inf`): the renormalized top k.
    """
    if not isinstance(teacher_logits, dict):
        return teacher_logits
    values = ops.cast(teacher_logits["values"], "float32")
    indices = ops.cast(teacher_logits["indices"], "int32")
    num_classes, top_k = student_logits.shape[-1], values.shape[-1]
    tail_logit = teacher_logits.get("tail_logit")
    if divergence == "reverse_kl" and tail_logit is None and top_k != num_classes:
        raise ValueError(
            f"divergence='reverse_kl' against a renormalized top-k target (top_k={top_k} "
            f"of {num_classes} classes, no tail) is infinite: the other classes have "
            "probability 0, where the student's is not. Use divergence='kl' or 'jsd'."
        )
    leading_shape = ops.shape(values)[:-1]
    flat_values = ops.reshape(values, (-1,))
    flat_indices = ops.reshape(indices, (-1, top_k))
    num_positions = ops.shape(flat_indices)[0]
    rows = ops.repeat(ops.arange(num_positions, dtype="int32"), top_k)
    coordinates = ops.stack([rows, ops.reshape(flat_indices, (-1,))], axis=1)
    dense_shape = (num_positions, num_classes)
    scattered = ops.scatter(coordinates, flat_values, dense_shape)
    present = ops.scatter(coordinates, ops.ones_like(flat_values), dense_shape)
    if tail_logit is None:
        tail = -math.inf
    else:
        tail = ops.reshape(ops.cast(tail_logit, "float32"), (-1, 1))
    dense = ops.where(present > 0, scattered, tail)
    return ops.stop_gradient(ops.reshape(dense, (*leading_shape, num_classes)))


def check_preprocessed(x, models):
    """Raises if `x` holds strings for models that take numbers (e.g. token ids).

    A KerasHub task with an attached preprocessor tokenizes raw strings in its own
    `fit` (it maps the preprocessor over the data); a `keras.Model` wrapping it, as the
    Distiller does, does not, and the string tensor would fail deep in the first layer
    ("Invalid dtype: str..."). Say what to do instead, before anything trains.
    """
    if not _holds_strings(x):
        return
    preprocessors = [
        (model.name, type(model.preprocessor).__name__)
        for model in models
        if getattr(model, "preprocessor", None) is not None
    ]
    applied = (
        "the Distiller does not apply the preprocessors attached to "
        + ", ".join(f"{name} ({kind})" for name, kind in preprocessors)
        + " (a KerasHub task applies its own in its `fit`)"
        if preprocessors
        else "the models take numbers"
    )
    raise ValueError(
        f"`x` holds strings, but {applied}. Preprocess the data first, as the task's own "
        "fit does, e.g.\n"
        "    dataset = tf.data.Dataset.from_tensor_slices(texts).batch(8)"
        ".map(student.preprocessor)\n"
        "    distiller.fit(dataset)\n"
        "(a causal-LM preprocessor yields (x, next-token labels, padding mask), which the "
        "Distiller takes as (x, y, sample_weight))."
    )


def _holds_strings(x):
    import sys

    import numpy as np

    tf = sys.modules.get("tensorflow")
    if tf is None:
        # TensorFlow not loaded (JAX or PyTorch): `x` holds no tf tensor or dataset, and
        # importing it here would claim GPU memory beside the other framework.
        return any(_is_string_array(leaf, np) for leaf in _leaves(x))
    if isinstance(x, tf.data.Dataset):
        return any(
            getattr(spec, "dtype", None) == tf.string for spec in tf.nest.flatten(x.element_spec)
        )
    return any(
        _is_string_array(leaf, np) or (tf.is_tensor(leaf) and leaf.dtype == tf.string)
        for leaf in tf.nest.flatten(x)
    )


def _leaves(x):
    if isinstance(x, dict):
        return [leaf for value in x.values() for leaf in _leaves(value)]
    if isinstance(x, (list, tuple)):
        return [leaf for value in x for leaf in _leaves(value)]
    return [x]


def _is_string_array(leaf, np):
    if isinstance(leaf, (str, bytes)):
        return True
    return isinstance(leaf, np.ndarray) and (
        leaf.dtype.kind in "US"
        or (leaf.dtype.kind == "O" and leaf.size > 0 and isinstance(leaf.flat[0], (str, bytes)))
    )
