"""Frozen teachers: validation, freezing, and their outputs as logits.

Shared by the `Distiller` and the teacher-logit cache, so that a live teacher and a
cached one produce exactly the same targets.
"""

import keras
from keras import ops

from keras_kd import losses


def as_teacher_list(teacher):
    """Returns `teacher` as a non-empty list of `keras.Model`, or raises ValueError."""
    teachers = list(teacher) if isinstance(teacher, (list, tuple)) else [teacher]
    if not teachers:
        raise ValueError("`teacher` must be a keras.Model or a non-empty list of them, got [].")
    for index, model in enumerate(teachers):
        if not isinstance(model, keras.Model):
            where = "`teacher`" if len(teachers) == 1 else f"`teacher[{index}]`"
            raise ValueError(
                f"{where} must be a keras.Model, got {model!r} of type {type(model).__name__}."
            )
    return teachers


def freeze(model):
    """Freezes `model`: not trainable, so it never enters `trainable_weights`."""
    model.trainable = False
    return model


def output_shape(model):
    """The static output shape of a built Functional/Sequential model, else None."""
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        return None
    if not outputs:
        return None
    if len(outputs) != 1:
        raise ValueError(
            f"Model {model.name!r} has {len(outputs)} outputs; keras_kd distils "
            "single-output classifiers (one logits tensor of shape (batch, K))."
        )
    return tuple(outputs[0].shape)


def ends_in_softmax(model):
    """True when the model's last layer applies a softmax (detectable models only).

    Sequential and Functional models are inspected; subclassed models cannot be and
    are taken to output logits.
    """
    try:
        last_layer = model.layers[-1] if model.layers else None
    except (AttributeError, ValueError, IndexError):
        return False
    if last_layer is None or isinstance(last_layer, keras.Model):
        return ends_in_softmax(last_layer) if isinstance(last_layer, keras.Model) else False
    if isinstance(last_layer, keras.layers.Softmax):
        return True
    activation = getattr(last_layer, "activation", None)
    return getattr(activation, "__name__", None) == "softmax"


def check_compatible(teachers, student):
    """Raises ValueError when teachers and student cannot be distilled together."""
    if ends_in_softmax(student):
        raise ValueError(
            f"The student {student.name!r} ends in a softmax. The Distiller needs the "
            "student's logits: build its last layer with `activation=None` (use "
            "`from_logits=True` losses), and apply a softmax at inference if needed."
        )
    shapes = [output_shape(model) for model in teachers]
    known = [(model.name, shape) for model, shape in zip(teachers, shapes) if shape]
    if len({shape[1:] for _, shape in known}) > 1:
        described = ", ".join(f"{name!r}: {shape}" for name, shape in known)
        raise ValueError(
            f"`teacher` ensemble members must have the same output shape, got {described}."
        )
    student_shape = output_shape(student)
    if known and student_shape and known[0][1][1:] != student_shape[1:]:
        raise ValueError(
            f"Teacher and student output shapes differ: teacher {known[0][1]} vs student "
            f"{student_shape}. They must predict the same classes."
        )


def teacher_logits(teachers, inputs, temperature):
    """The teachers' targets as float32 logits, with no gradient.

    A softmax teacher's probabilities become `log(p)`, which has exactly the tempered
    softmax of the logits (softmax is invariant to the shift `log p = z - logsumexp(z)`);
    only probabilities that underflowed to 0 lose their tiny tempered mass. An
    ensemble is folded into one tensor by `losses.ensemble_logits`.
    """
    outputs = member_logits(teachers, inputs)
    return ops.stop_gradient(losses.ensemble_logits(outputs, temperature))


def member_logits(teachers, inputs):
    """Each teacher's float32 logits, unfolded: what `teacher_logits` folds at a temperature.

    The teacher-logit cache stores these, so that a cache serves any temperature.
    """
    return [_as_logits(model, model(inputs, training=False)) for model in teachers]


def teacher_logits_and_features(teacher, extractor, inputs):
    """A single teacher's logits and intermediate features from one forward, no gradient.

    `extractor` is a model on the teacher's layers returning `[*features, output]`;
    the logits are exactly those of `teacher_logits([teacher], inputs, T)`.
    """
    *features, output = extractor(inputs, training=False)
    return (
        ops.stop_gradient(_as_logits(teacher, output)),
        [ops.stop_gradient(feature) for feature in features],
    )


def _as_logits(model, output):
    output = ops.cast(output, "float32")
    return ops.log(output) if ends_in_softmax(model) else output
