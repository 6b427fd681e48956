"""Frozen teachers: validation, freezing, and their outputs as logits.

Shared by the `Distiller` and the teacher-logit cache, so that a live teacher and a
cached one produce exactly the same targets.
"""

import keras
from keras import ops

from keras_kd import _validation
from keras_kd import losses
from keras_kd.losses import _binary
from keras_kd.targets import TEACHER_LOGITS


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


# Activation functions recognised by identity or name (`tf.nn.softmax` is named
# "softmax_v2"); `keras.activations.*` and `keras.ops.*` share these names.
_SOFTMAX_NAMES = {"softmax", "softmax_v2"}
_SIGMOID_NAMES = {"sigmoid"}
# Layers that pass a probability output through unchanged (at inference).
_PASS_THROUGH_LAYERS = (
    keras.layers.Dropout,
    keras.layers.Identity,
    keras.layers.Flatten,
    keras.layers.Reshape,
    keras.layers.ActivityRegularization,
    keras.layers.InputLayer,
)


def overrides_call(model):
    """True when `model`'s class defines its own `call` (a subclassed model).

    Its layers list then says nothing about what it computes: a Functional subclass
    with its own `call`, or a plain subclass whose `call` applies a softmax.
    """
    for cls in type(model).__mro__:
        if cls.__module__.startswith("keras."):
            return False
        if "call" in vars(cls):
            return True
    return False


def output_activation(model):
    """"softmax" or "sigmoid" when `model` visibly ends in one, else None.

    Looks at the last layer of Sequential/Functional models, through nested models and
    layers that pass their input through (Dropout, Identity, Flatten, Reshape): a
    `Softmax` layer, `Activation`/`activation=` softmax or sigmoid given by name or as
    a function (`keras.activations.softmax`, `keras.ops.softmax`, `tf.nn.softmax`,
    ...), or a `Lambda` of one of those functions. Subclassed models and other
    lambdas cannot be read statically: the `Distiller` and `cache_teacher_logits`
    check their values on the first batch instead.
    """
    if overrides_call(model):
        return None
    try:
        layers = list(model.layers)
    except (AttributeError, ValueError):
        return None
    for layer in reversed(layers):
        if isinstance(layer, _PASS_THROUGH_LAYERS):
            continue
        if isinstance(layer, keras.Model):
            return output_activation(layer)
        return _layer_activation(layer)
    return None


def ends_in_logits(model):
    """True when `model` visibly ends in a layer with a linear activation (a Dense or
    convolution with `activation=None`): its outputs are logits, no values to check."""
    if overrides_call(model):
        return False
    try:
        layers = list(model.layers)
    except (AttributeError, ValueError):
        return False
    for layer in reversed(layers):
        if isinstance(layer, _PASS_THROUGH_LAYERS):
            continue
        if isinstance(layer, keras.Model):
            return ends_in_logits(layer)
        activation = getattr(layer, "activation", None)
        return getattr(activation, "__name__", None) == "linear"
    return False


def _layer_activation(layer):
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    function = getattr(layer, "activation", None)
    if isinstance(layer, keras.layers.Lambda):
        function = getattr(layer, "function", None)
    name = getattr(function, "__name__", None)
    if name in _SOFTMAX_NAMES:
        return "softmax"
    if name in _SIGMOID_NAMES:
        return "sigmoid"
    return None


def ends_in_softmax(model):
    """True when the model's last layer visibly applies a softmax (see `output_activation`)."""
    return output_activation(model) == "softmax"


def check_compatible(teachers, student, output="softmax"):
    """Raises ValueError when teachers and student cannot be distilled together.

    Called before anything is frozen, so a rejected pair is left as it was.
    """
    _binary.check_output(output)
    check_model_relationships(teachers, student)
    activation = output_activation(student)
    if activation is not None:
        raise ValueError(
            f"The student {student.name!r} ends in a {activation}. The Distiller needs the "
            "student's logits: build its last layer with `activation=None` (use "
            "`from_logits=True` losses), and apply a softmax at inference if needed."
            if activation == "softmax"
            else f"The student {student.name!r} ends in a sigmoid. The Distiller needs the "
            "student's logits: build its last layer with `activation=None` (use "
            "`from_logits=True` losses, e.g. BinaryCrossentropy(from_logits=True)), and "
            "apply the sigmoid at inference."
        )
    known = check_ensemble(teachers)
    _check_output_matches_heads(teachers, output)
    student_shape = output_shape(student)
    if known and student_shape and known[0][1][1:] != student_shape[1:]:
        raise ValueError(
            f"Teacher and student output shapes differ: teacher {known[0][1]} vs student "
            f"{student_shape}. They must predict the same classes."
        )


def _check_output_matches_heads(teachers, output):
    """A teacher whose visible head contradicts `output` (K >= 2) is a forgotten argument."""
    for index, model in enumerate(teachers):
        activation = output_activation(model)
        shape = output_shape(model)
        if activation is None or activation == output or not shape or shape[-1] == 1:
            continue
        where = "`teacher`" if len(teachers) == 1 else f"`teacher[{index}]`"
        raise ValueError(
            f"{where} {model.name!r} ends in a {activation} over {shape[-1]} outputs, but "
            f"output={output!r}. Pass output={activation!r}: "
            + (
                "independent (multi-label) sigmoids are distilled label by label."
                if activation == "sigmoid"
                else "a softmax teacher's outputs form one distribution over the classes."
            )
        )


def check_ensemble(teachers):
    """Raises when ensemble members' static output shapes differ; returns the known ones."""
    shapes = [output_shape(model) for model in teachers]
    known = [(model.name, shape) for model, shape in zip(teachers, shapes) if shape]
    if len({shape[1:] for _, shape in known}) > 1:
        described = ", ".join(f"{name!r}: {shape}" for name, shape in known)
        raise ValueError(
            f"`teacher` ensemble members must have the same output shape, got {described}."
        )
    return known


def check_model_relationships(teachers, student):
    """Raises when a teacher is the student, shares weights with it, or reads other inputs.

    Freezing a teacher sets `trainable=False` on its layers: any layer the student
    shares with it (or a teacher nested inside the student) would silently stop
    training. Inputs of another shape would fail, or broadcast, inside `fit`.
    """
    for index, teacher in enumerate(teachers):
        where = "`teacher`" if len(teachers) == 1 else f"`teacher[{index}]`"
        if teacher is student:
            raise ValueError(
                f"{where} and `student` are the same model {student.name!r}: the teacher is "
                "frozen, so the student would not train. Distil into a fresh copy, e.g. "
                "student = keras.models.clone_model(teacher) (born-again distillation)."
            )
        shared = _shared_variables(teacher, student)
        if shared:
            contained = any(layer is teacher for layer in _all_layers(student))
            relation = "contains the teacher" if contained else "shares layers with the teacher"
            raise ValueError(
                f"`student` {student.name!r} {relation} {where} {teacher.name!r} "
                f"({len(shared)} shared variables, e.g. {shared[0]!r}): freezing the teacher "
                "would silently freeze that part of the student. Build the student from "
                "its own layers (keras.models.clone_model copies a model without sharing)."
            )
        teacher_shapes, student_shapes = input_shapes(teacher), input_shapes(student)
        if teacher_shapes and student_shapes and not _compatible_shapes(
            teacher_shapes, student_shapes
        ):
            raise ValueError(
                f"{where} {teacher.name!r} expects inputs of shape {_describe(teacher_shapes)} "
                f"but `student` {student.name!r} expects {_describe(student_shapes)}; both are "
                "called on the same `x`. Put the preprocessing (e.g. keras.layers.Resizing) "
                "inside the teacher, so that it takes the student's inputs."
            )


def _all_layers(model):
    stack, seen = list(getattr(model, "layers", None) or []), []
    while stack:
        layer = stack.pop()
        seen.append(layer)
        stack.extend(getattr(layer, "layers", None) or [])
    return seen


def _shared_variables(teacher, student):
    teacher_ids = {id(variable) for variable in teacher.weights}
    return [variable.path for variable in student.weights if id(variable) in teacher_ids]


def input_shapes(model):
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        return None
    return [tuple(tensor.shape) for tensor in inputs] if inputs else None


def _compatible_shapes(shapes_a, shapes_b):
    return len(shapes_a) == len(shapes_b) and all(
        len(a) == len(b) and all(x is None or y is None or x == y for x, y in zip(a, b))
        for a, b in zip(shapes_a, shapes_b)
    )


def _describe(shapes):
    return shapes[0] if len(shapes) == 1 else shapes


def teacher_logits(teachers, inputs, temperature, output="softmax"):
    """The teachers' targets as float32 logits, with no gradient.

    A softmax teacher's probabilities become `log(p)`, which has exactly the tempered
    softmax of the logits (softmax is invariant to the shift `log p = z - logsumexp(z)`);
    only probabilities that underflowed to 0 lose their tiny tempered mass. An
    ensemble is folded into one tensor by `losses.ensemble_logits`.
    """
    outputs = member_logits(teachers, inputs)
    return ops.stop_gradient(losses.ensemble_logits(outputs, temperature, output))


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
    """The model's output as float32 logits: `log p` of a softmax, `logit(p)` of a sigmoid."""
    if isinstance(output, (dict, list, tuple)):
        what = f"a dict with keys {sorted(output)}" if isinstance(output, dict) else (
            f"a {type(output).__name__} of {len(output)} tensors"
        )
        raise ValueError(
            f"`teacher` {model.name!r} returns {what}; keras_kd distils one logits tensor "
            "of shape (batch, K). Wrap it to return the logits, e.g. "
            "keras.Model(teacher.inputs, teacher.outputs[...]) or a subclass whose call "
            "returns outputs['logits']."
        )
    output = ops.cast(output, "float32")
    activation = output_activation(model)
    if activation == "softmax":
        return ops.log(output)
    if activation == "sigmoid":
        # logit(p) = log p - log(1 - p): sigmoid(logit(p) / T) is the tempered form.
        return ops.log(output) - ops.log1p(-output)
    return output


def check_first_batch(teachers, student, x, output="softmax", cached_logits=None):
    """Checks one batch of values: teacher outputs (or cached logits) and the student's.

    Run once before training, and only for models whose output static inspection
    cannot read (`output_activation` and `ends_in_logits` both say nothing: a
    subclassed model, a `Lambda`, a custom last layer): a softmax hidden there shows
    in the values.
    Outputs that are probability distributions where logits are expected raise a
    `ValueError` saying what was found (see `_validation.probability_form`).
    """
    if cached_logits is not None:
        _raise_if_probabilities(
            _validation.eager_values(cached_logits), f"y[{TEACHER_LOGITS!r}]", output,
            "cached teacher logits",
        )
    elif not all(output_activation(model) or ends_in_logits(model) for model in teachers):
        shapes = []
        for index, model in enumerate(teachers):
            where = "`teacher`" if len(teachers) == 1 else f"`teacher[{index}]`"
            logits = _as_logits(model, model(x, training=False))
            shapes.append((model.name, tuple(logits.shape)))
            if output_activation(model) is None:
                _raise_if_probabilities(
                    ops.convert_to_numpy(logits), f"{where} {model.name!r}", output, "teacher"
                )
        if len({shape for _, shape in shapes}) > 1:
            described = ", ".join(f"{name!r}: {shape}" for name, shape in shapes)
            raise ValueError(
                f"`teacher` ensemble members disagree on the first batch: their outputs "
                f"have shapes {described}. Every member must predict the same K classes."
            )
    if student is None or ends_in_logits(student):
        return
    student_output = student(x, training=False)
    if isinstance(student_output, (dict, list, tuple)):
        raise ValueError(
            f"`student` {student.name!r} returns a {type(student_output).__name__}; the "
            "Distiller trains a single-output student (one logits tensor)."
        )
    # Softmax form only: an untrained single-logit student's outputs may all lie in
    # [0, 1] (small logits), which the sigmoid test would take for probabilities; its
    # sigmoid head is caught statically.
    student_values = ops.convert_to_numpy(student_output)
    found = None
    if output == "softmax" and student_values.shape[-1] > 1:
        found = _validation.probability_form(student_values, output)
    if found:
        raise ValueError(
            f"`student` {student.name!r} outputs {found} on the first batch, not logits. "
            "The Distiller trains the student's logits: remove its final softmax/sigmoid "
            "(activation=None) and apply it at inference."
        )


def _raise_if_probabilities(values, where, output, role):
    if values is None:
        return
    found = _validation.probability_form(values, output)
    if found:
        raise ValueError(
            f"{where} outputs {found} on the first batch, where logits are expected, and "
            f"the {role}'s last layer is not a softmax/sigmoid keras_kd can see (a "
            "subclassed model, a Lambda, ...). Return logits (activation=None), or convert "
            "exactly: logits = keras.ops.log(p) for a softmax, log(p) - log(1 - p) for a "
            "sigmoid."
        )
