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
from keras_kd.targets import TEACHER_TOPK_TAIL_TEMPERATURES

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


def top_k_tail_log_masses(logits, indices):
    """The tail's tempered log-masses `L(1 / T_j)`, (..., G), of (..., K) logits.

    `L(s) = log sum_{i not in the top k} exp(s z_i)`, at `s = 1 / T_j` for each `T_j`
    of `keras_kd.targets.TEACHER_TOPK_TAIL_TEMPERATURES`; `indices` (..., k) are the
    top k. Summed over the tail itself, not as the total minus the top k, which
    cancels to 0 (or -inf) in float32 once the top k hold all but ~1e-7 of the mass
    at T = 1, though at T > 1 that tail carries much of it. `-inf` where the tail is
    empty (k = K).
    """
    logits = ops.cast(logits, "float32")
    num_classes, top_k = logits.shape[-1], indices.shape[-1]
    leading_shape = ops.shape(logits)[:-1]
    if top_k == num_classes:
        return ops.full((*leading_shape, len(TEACHER_TOPK_TAIL_TEMPERATURES)), -math.inf)
    flat_logits = ops.reshape(logits, (-1, num_classes))
    present = _scatter_rows(ops.ones(ops.shape(indices), "float32"), indices, num_classes)
    tail = ops.where(present > 0, -math.inf, flat_logits)
    masses = [
        ops.logsumexp(tail / temperature, axis=-1)
        for temperature in TEACHER_TOPK_TAIL_TEMPERATURES
    ]
    return ops.reshape(ops.stack(masses, axis=-1), (*leading_shape, len(masses)))


def interpolated_tail_log_mass(tail_log_masses, num_tail, temperature):
    """`L(1 / T)` from the stored `L(1 / T_j)`: piecewise linear in `s = 1 / T`.

    The knots are `s = 0`, where `L(0) = log(K - k)` exactly, and `s = 1 / T_j` for
    `T_j` in `TEACHER_TOPK_TAIL_TEMPERATURES` (8, 4, 2, 1); past `s = 1` (T < 1) the
    last segment's line goes on. Exact at the knots. `L` is convex in `s` (a
    log-sum-exp of linear functions), so between knots the chord lies above it (the
    tail's mass is overstated) and past `s = 1` the extended chord below it
    (understated); both lie closer to `L` than the format-2 cache's single chord
    from `s = 0` to `s = 1`, whose error they bound. Linear pieces in `s` keep the
    target invariant to shifting a position's logits by a constant (`L(s)` shifts by
    `s c`), which clamping at T = 1 would not. Measured on a small GPT-2 at k = 8
    (docs/guides/language-models.md), the per-token loss is off by 2.0 % at T = 1.5
    and 3.9 % at T = 3 (single chord: 6.0 %, 10.5 %); below T = 1, where the tail's
    mass is small, by 17 % at T = 0.5 (renormalized top k: 20 %). `temperature` may
    be a tensor (a scheduled Distiller temperature): the segment is chosen in-graph.
    """
    inverse = 1.0 / ops.cast(temperature, "float32")
    masses = ops.cast(tail_log_masses, "float32")
    # The stored temperatures ascend, so their inverses, the knots past s = 0, descend.
    knots = [0.0] + [1.0 / t for t in reversed(TEACHER_TOPK_TAIL_TEMPERATURES)]
    at_knots = [ops.full(ops.shape(masses)[:-1], math.log(max(num_tail, 1)))]
    at_knots += [masses[..., j] for j in reversed(range(len(TEACHER_TOPK_TAIL_TEMPERATURES)))]
    # Segment j spans knots j and j + 1; s at or past the last inner knot takes the last.
    segment = sum(ops.cast(inverse >= knot, "int32") for knot in knots[1:-1])
    value = ops.zeros_like(at_knots[0])
    for j, (low, high) in enumerate(zip(knots[:-1], knots[1:])):
        weight = (inverse - low) / (high - low)
        line = at_knots[j] + weight * (at_knots[j + 1] - at_knots[j])
        value = ops.where(segment == j, line, value)
    return value


def dense_teacher_logits(teacher_logits, student_logits, divergence, temperature):
    """Dense (..., K) teacher logits from a top-k cache's targets; dense ones unchanged.

    A top-k cache (`keras_kd.cache_teacher_logits(..., top_k=k)`) gives, per position,
    the teacher's k largest logits, their class indices and the tail's tempered
    log-masses `L(1 / T_j) = log sum_tail exp(z_i / T_j)` at the few temperatures
    `T_j` of `TEACHER_TOPK_TAIL_TEMPERATURES`, as the dict `{"values": (..., k),
    "indices": (..., k), "tail_log_mass": (..., G)}` that
    `keras_kd.targets.split_targets` returns. They become logits equal to the
    teacher's on the k classes and to one "tail logit" on the other K - k, chosen so
    that at the training `temperature` T the tail carries the teacher's tempered mass:

        c_T = T (L(1 / T) - log(K - k)),   so   (K - k) exp(c_T / T) = exp(L(1 / T)),

    with `L(1 / T)` interpolated between the stored temperatures
    (`interpolated_tail_log_mass`): exact at each `T_j`, within the chords between
    them elsewhere. The target then has the teacher's exact tempered top-k probabilities and
    tail mass at each `T_j` (at T = 1 the tail logit is `log((Z - sum_top exp z_i) /
    (K - k))`, `Z = sum_j exp z_j`); only the tail's shape is lost (spread evenly).
    With k = K it is exactly the dense teacher at every T. Without a "tail_log_mass"
    the tail is empty (`-inf`): the renormalized top k.
    """
    if not isinstance(teacher_logits, dict):
        return teacher_logits
    values = ops.cast(teacher_logits["values"], "float32")
    indices = ops.cast(teacher_logits["indices"], "int32")
    num_classes, top_k = student_logits.shape[-1], values.shape[-1]
    tail_log_mass = teacher_logits.get("tail_log_mass")
    if divergence == "reverse_kl" and tail_log_mass is None and top_k != num_classes:
        raise ValueError(
            f"divergence='reverse_kl' against a renormalized top-k target (top_k={top_k} "
            f"of {num_classes} classes, no tail) is infinite: the other classes have "
            "probability 0, where the student's is not. Use divergence='kl' or 'jsd'."
        )
    num_grid = len(TEACHER_TOPK_TAIL_TEMPERATURES)
    if tail_log_mass is not None and tail_log_mass.shape[-1] != num_grid:
        raise ValueError(
            f"The top-k tail's log-masses have {tail_log_mass.shape[-1]} entries per "
            f"position, expected {num_grid} (at T = {TEACHER_TOPK_TAIL_TEMPERATURES}): a "
            "top-k cache from another keras_kd version. Make the cache again."
        )
    leading_shape = ops.shape(values)[:-1]
    scattered = _scatter_rows(values, indices, num_classes)
    present = _scatter_rows(ops.ones_like(values), indices, num_classes)
    if tail_log_mass is None or top_k == num_classes:
        tail = -math.inf  # no tail; with k = K no class takes it
    else:
        num_tail = num_classes - top_k
        flat_masses = ops.reshape(ops.cast(tail_log_mass, "float32"), (-1, num_grid))
        # A tail of only -inf logits (a masked vocabulary) stays at -inf: interpolating
        # between -inf knots would give nan.
        has_mass = ops.isfinite(flat_masses[:, 0])
        finite = ops.where(has_mass[:, None], flat_masses, 0.0)
        log_mass = interpolated_tail_log_mass(finite, num_tail, temperature)
        tail_logit = ops.cast(temperature, "float32") * (log_mass - math.log(num_tail))
        tail = ops.reshape(ops.where(has_mass, tail_logit, -math.inf), (-1, 1))
    dense = ops.where(present > 0, scattered, tail)
    return ops.stop_gradient(ops.reshape(dense, (*leading_shape, num_classes)))


def _scatter_rows(values, indices, num_classes):
    """(positions, K): `values` (..., k) at their class `indices` (..., k), 0 elsewhere."""
    top_k = values.shape[-1]
    flat_values = ops.reshape(values, (-1,))
    flat_indices = ops.reshape(ops.cast(indices, "int32"), (-1, top_k))
    num_positions = ops.shape(flat_indices)[0]
    rows = ops.repeat(ops.arange(num_positions, dtype="int32"), top_k)
    coordinates = ops.stack([rows, ops.reshape(flat_indices, (-1,))], axis=1)
    return ops.scatter(coordinates, flat_values, (num_positions, num_classes))


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
