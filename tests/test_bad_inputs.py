"""Every bad input gets a ValueError naming the argument and the value it got.

`BAD_INPUTS` is the table the README shows (argument | bad value | error): each row
is one parametrized test, and the docs' bad-input page is rendered from the same rows
(`docs/hooks/bad_inputs.py`), so the docs cannot drift from what is tested. Further tests check that a rejected call leaves
nothing half-written: no frozen teacher, no trained step, no fitted temperature.
"""

import math
import re
from typing import Callable
from typing import NamedTuple

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_kd
from keras_kd import calibration
from keras_kd import callbacks
from keras_kd import losses
from keras_kd import metrics
from keras_kd import targets  # noqa: F401  (keras_kd.targets.split_targets)
from keras_kd.distiller import LABELS
from keras_kd.distiller import TEACHER_LOGITS

NUM_FEATURES = 4


def _classifier(num_classes=3, name=None):
    return keras.Sequential(
        [keras.Input((NUM_FEATURES,)), keras.layers.Dense(num_classes)], name=name
    )


def _logits(n=4, num_classes=3, seed=0):
    return np.random.default_rng(seed).normal(size=(n, num_classes)).astype("float32")


def _probabilities(n=4, num_classes=3):
    logits = _logits(n, num_classes)
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


LABELS_4 = np.array([0, 1, 2, 0])


def _distiller(**kwargs):
    return keras_kd.Distiller(teacher=_classifier(), student=_classifier(), **kwargs)


def _fit_on_cached_logits(num_teacher_classes, use_cache_function=False):
    student = _classifier(3)
    distiller = keras_kd.Distiller(teacher=_classifier(3), student=student, alpha=0.5)
    distiller.compile(
        optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    x, labels = np.zeros((8, NUM_FEATURES), "float32"), np.zeros(8, "int32")
    if use_cache_function:
        # Logits cached from another teacher, with `num_teacher_classes` outputs.
        cached = keras_kd.cache_teacher_logits(
            _classifier(num_teacher_classes), (x, labels), batch_size=4, verbose=0
        )
        distiller.fit(cached, epochs=1, shuffle=False, verbose=0)
    else:
        y = {LABELS: labels, TEACHER_LOGITS: _logits(8, num_teacher_classes)}
        distiller.fit(x, y, batch_size=4, epochs=1, verbose=0)


class BadInput(NamedTuple):
    argument: str
    bad_value: str
    entry: str
    call: Callable[[], object]
    error: str  # a fragment of the message, matched literally


def _temperature_rows():
    rows = []
    entries = {
        "Distiller": lambda t: _distiller(temperature=t),
        "DistillationLoss": lambda t: keras_kd.DistillationLoss(temperature=t),
        "VirtualTeacherLoss": lambda t: keras_kd.VirtualTeacherLoss(temperature=t),
        "losses.distillation_loss": lambda t: losses.distillation_loss(
            _logits(), _logits(seed=1), temperature=t
        ),
        "TemperatureScaling": lambda t: calibration.TemperatureScaling(temperature=t),
    }
    for value in (0, -1.0, math.nan, math.inf):
        for entry, make in entries.items():
            rows.append(
                BadInput(
                    "temperature",
                    repr(value),
                    entry,
                    lambda make=make, value=value: make(value),
                    f"`temperature` must be a finite number > 0, got {value!r}",
                )
            )
    return rows


def _interval_rows(argument, interval, values, entries):
    return [
        BadInput(
            argument,
            repr(value),
            entry,
            lambda make=make, value=value: make(value),
            f"`{argument}` must be in {interval}, got {float(value)!r}",
        )
        for value in values
        for entry, make in entries.items()
    ]


BAD_INPUTS = [
    *_temperature_rows(),
    *_interval_rows(
        "alpha",
        "[0.0, 1.0]",
        (-0.1, 1.5, math.nan),
        {
            "Distiller": lambda a: _distiller(alpha=a),
            "VirtualTeacherLoss": lambda a: keras_kd.VirtualTeacherLoss(alpha=a),
        },
    ),
    *_interval_rows(
        "smoothing",
        "[0.0, 1.0)",
        (-0.1, 1.0, 1.5),
        {
            "LabelSmoothingLoss": lambda s: keras_kd.LabelSmoothingLoss(s, from_logits=True),
            "losses.label_smoothing_loss": lambda s: losses.label_smoothing_loss(
                LABELS_4, _logits(), smoothing=s
            ),
        },
    ),
    *_interval_rows(
        "correct_prob",
        "(0.0, 1.0]",
        (0.0, 1.5),
        {"VirtualTeacherLoss": lambda a: keras_kd.VirtualTeacherLoss(correct_prob=a)},
    ),
    BadInput(
        "correct_prob",
        "0.25 with K = 4 (must exceed 1/K)",
        "VirtualTeacherLoss()(y, logits)",
        lambda: keras_kd.VirtualTeacherLoss(correct_prob=0.25)(LABELS_4, _logits(4, 4)),
        "`correct_prob` must be in (1/K, 1] = (0.25, 1] for K=4 classes, got 0.25",
    ),
    *[
        BadInput(
            "num_bins",
            repr(value),
            entry,
            lambda make=make, value=value: make(value),
            f"`num_bins` must be an integer >= 1, got {value!r}",
        )
        for value in (0, -3, 2.5, "15")
        for entry, make in {
            "ExpectedCalibrationError": lambda b: metrics.ExpectedCalibrationError(num_bins=b),
            "expected_calibration_error": lambda b: calibration.expected_calibration_error(
                _probabilities(), LABELS_4, num_bins=b
            ),
            "reliability_diagram": lambda b: calibration.reliability_diagram(
                _probabilities(), LABELS_4, num_bins=b
            ),
            "ECECallback": lambda b: callbacks.ECECallback(
                (np.zeros((4, NUM_FEATURES)), LABELS_4), num_bins=b
            ),
        }.items()
    ],
    BadInput(
        "teacher, student",
        "3 vs 4 classes",
        "Distiller",
        lambda: keras_kd.Distiller(teacher=_classifier(3), student=_classifier(4)),
        "Teacher and student output shapes differ: teacher (None, 3) vs student (None, 4)",
    ),
    BadInput(
        "teacher",
        "a keras.layers.Dense",
        "Distiller",
        lambda: keras_kd.Distiller(teacher=keras.layers.Dense(3), student=_classifier()),
        "`teacher` must be a keras.Model, got <Dense",
    ),
    BadInput(
        "teacher",
        '["not a model"] in an ensemble',
        "Distiller",
        lambda: keras_kd.Distiller(teacher=[_classifier(), "model.keras"], student=_classifier()),
        "`teacher[1]` must be a keras.Model, got 'model.keras' of type str",
    ),
    BadInput(
        "teacher",
        "[] (empty ensemble)",
        "Distiller",
        lambda: keras_kd.Distiller(teacher=[], student=_classifier()),
        "`teacher` must be a keras.Model or a non-empty list of them, got []",
    ),
    BadInput(
        "student",
        "None",
        "Distiller",
        lambda: keras_kd.Distiller(teacher=_classifier(), student=None),
        "`student` must be a keras.Model, got None",
    ),
    BadInput(
        "teacher",
        "ensemble with 3 and 4 classes",
        "Distiller",
        lambda: keras_kd.Distiller(
            teacher=[_classifier(3, name="t3"), _classifier(4, name="t4")], student=_classifier()
        ),
        "`teacher` ensemble members must have the same output shape, got 't3': (None, 3), "
        "'t4': (None, 4)",
    ),
    *[
        BadInput(
            "y_true",
            "5 labels for 4 predictions",
            entry,
            call,
            "`y_true` and `y_pred` must hold the same number of examples: got labels for "
            "examples of shape (5,) and predictions of shape (4, 3)",
        )
        for entry, call in {
            "LabelSmoothingLoss": lambda: keras_kd.LabelSmoothingLoss(0.1, from_logits=True)(
                np.array([0, 1, 2, 0, 1]), _logits()
            ),
            "VirtualTeacherLoss": lambda: keras_kd.VirtualTeacherLoss()(
                np.array([0, 1, 2, 0, 1]), _logits()
            ),
            "ExpectedCalibrationError.update_state": lambda: (
                metrics.ExpectedCalibrationError().update_state(
                    np.array([0, 1, 2, 0, 1]), _probabilities()
                )
            ),
            "expected_calibration_error": lambda: calibration.expected_calibration_error(
                _probabilities(), np.array([0, 1, 2, 0, 1])
            ),
        }.items()
    ],
    BadInput(
        "y_true",
        "one-hot for 5 examples, 4 predictions",
        "losses.cross_entropy",
        lambda: losses.cross_entropy(np.eye(3)[[0, 1, 2, 0, 1]], _logits()),
        "`y_true` and `y_pred` must hold the same number of examples: got labels for "
        "examples of shape (5,) and predictions of shape (4, 3)",
    ),
    BadInput(
        "teacher_logits, student_logits",
        "5 vs 4 rows",
        "DistillationLoss",
        lambda: keras_kd.DistillationLoss()(_logits(5), _logits(4)),
        "`teacher_logits` and `student_logits` must have the same shape, got (5, 3) and (4, 3)",
    ),
    *[
        BadInput(
            "y_true",
            f"sparse labels of shape {shape}",
            entry,
            lambda call=call, shape=shape: call(np.zeros(shape, "int32")),
            "`y_true` must be class indices of shape (4,) (or with a trailing axis of 1) or "
            f"one-hot targets of shape (4, 3), got labels of shape {shape}",
        )
        for shape in ((4, 1, 1), ())
        for entry, call in {
            "LabelSmoothingLoss": lambda y: keras_kd.LabelSmoothingLoss(0.1, from_logits=True)(
                y, _logits()
            ),
            "expected_calibration_error": lambda y: calibration.expected_calibration_error(
                _probabilities(), y
            ),
        }.items()
    ],
    *[
        BadInput(
            "y_true",
            "one-hot with 4 classes, predictions with 3",
            entry,
            call,
            "One-hot `y_true` must have 3 classes on its last axis to match predictions of "
            "shape (4, 3), got labels of shape (4, 4)",
        )
        for entry, call in {
            "LabelSmoothingLoss": lambda: keras_kd.LabelSmoothingLoss(0.1, from_logits=True)(
                np.eye(4), _logits()
            ),
            "ExpectedCalibrationError.update_state": lambda: (
                metrics.ExpectedCalibrationError().update_state(np.eye(4), _probabilities())
            ),
        }.items()
    ],
    *[
        BadInput(
            "y_true",
            f"class index {bad} with 3 classes",
            entry,
            lambda call=call, bad=bad: call(np.array([0, 1, bad, 2])),
            f"Class indices in `y_true` must be integers in [0, 2] for predictions with 3 "
            f"classes, got {bad}",
        )
        for bad in (3, -1)
        for entry, call in {
            "LabelSmoothingLoss": lambda y: keras_kd.LabelSmoothingLoss(0.1, from_logits=True)(
                y, _logits()
            ),
            "VirtualTeacherLoss": lambda y: keras_kd.VirtualTeacherLoss()(y, _logits()),
            "losses.cross_entropy": lambda y: losses.cross_entropy(y, _logits()),
            "ExpectedCalibrationError.update_state": lambda y: (
                metrics.ExpectedCalibrationError().update_state(y, _probabilities())
            ),
            "TemperatureScaling.fit": lambda y: calibration.TemperatureScaling().fit(
                _logits(), y
            ),
        }.items()
    ],
    BadInput(
        "y_true",
        "class index 1.5 (as float labels)",
        "LabelSmoothingLoss",
        lambda: keras_kd.LabelSmoothingLoss(0.1, from_logits=True)(
            np.array([0.0, 1.5, 2.0, 1.0], "float32"), _logits()
        ),
        "Class indices in `y_true` must be integers in [0, 2] for predictions with 3 "
        "classes, got 1.5",
    ),
    BadInput(
        "validation_data",
        "0 examples",
        "ECECallback",
        lambda: callbacks.ECECallback((np.zeros((0, NUM_FEATURES)), np.zeros((0,)))),
        "`validation_data` is empty: it holds 0 examples",
    ),
    BadInput(
        "validation_data",
        "an empty tf.data.Dataset",
        "ECECallback",
        lambda: callbacks.ECECallback(
            tf.data.Dataset.from_tensor_slices(
                (np.zeros((0, NUM_FEATURES), "float32"), np.zeros((0,), "int32"))
            ).batch(4)
        ),
        "`validation_data` is empty: the dataset holds 0 batches",
    ),
    BadInput(
        "logits",
        "probabilities (rows in [0, 1] summing to 1)",
        "TemperatureScaling.fit",
        lambda: calibration.TemperatureScaling().fit(_probabilities(), LABELS_4),
        "`logits` looks like probabilities, not logits: every row is in [0, 1] and sums to 1",
    ),
    BadInput(
        "y['teacher_logits']",
        "cached logits with 4 classes, student with 3",
        "Distiller.fit",
        lambda: _fit_on_cached_logits(num_teacher_classes=4),
        "Teacher logits (`y['teacher_logits']` when cached) of shape (4, 4) do not match "
        "the student's output shape (4, 3)",
    ),
    BadInput(
        "y['teacher_logits']",
        "cache_teacher_logits of a 4-class teacher, student with 3",
        "Distiller.fit",
        lambda: _fit_on_cached_logits(num_teacher_classes=4, use_cache_function=True),
        "Teacher logits (`y['teacher_logits']` when cached) of shape (None, 4) do not match "
        "the student's output shape (None, 3)",
    ),
]


# ---------------------------------------------------------------------------
# Issue 11: binary/multi-label form, probabilities taken for logits, weights, labels,
# unusual models and data.
# ---------------------------------------------------------------------------

LOSS_CLASSES = {
    "DistillationLoss": lambda **kw: keras_kd.DistillationLoss(**kw),
    "LogitMatchingLoss": lambda **kw: keras_kd.LogitMatchingLoss(**kw),
    "LabelSmoothingLoss": lambda **kw: keras_kd.LabelSmoothingLoss(0.1, from_logits=True, **kw),
}


def _output_rows():
    entries = {
        **{name: (lambda o, make=make: make(output=o)) for name, make in LOSS_CLASSES.items()},
        "losses.distillation_loss": lambda o: losses.distillation_loss(
            _logits(), _logits(seed=1), 2.0, output=o
        ),
        "losses.logit_matching_loss": lambda o: losses.logit_matching_loss(
            _logits(), _logits(seed=1), output=o
        ),
        "losses.label_smoothing_loss": lambda o: losses.label_smoothing_loss(
            LABELS_4, _logits(), 0.1, output=o
        ),
        "losses.ensemble_logits": lambda o: losses.ensemble_logits(
            [_logits(), _logits(seed=1)], 2.0, output=o
        ),
        "Distiller": lambda o: _distiller(output=o),
    }
    return [
        BadInput(
            "output",
            repr(value),
            entry,
            lambda make=make, value=value: make(value),
            f"`output` must be 'softmax' (one distribution over K classes) or 'sigmoid' "
            f"(independent binary labels; a single logit is binary either way), got {value!r}",
        )
        for value in ("softmx", "Sigmoid", None)
        for entry, make in entries.items()
    ]


def _loss_calls(sample_weight=None, y_true=None):
    """Each loss class called on 4 examples of 3 classes, with these labels/weights."""
    labels = LABELS_4 if y_true is None else y_true
    return {
        "DistillationLoss": lambda: keras_kd.DistillationLoss()(
            _logits(seed=2), _logits(), sample_weight=sample_weight
        ),
        "LogitMatchingLoss": lambda: keras_kd.LogitMatchingLoss()(
            _logits(seed=2), _logits(), sample_weight=sample_weight
        ),
        "LabelSmoothingLoss": lambda: keras_kd.LabelSmoothingLoss(0.1, from_logits=True)(
            labels, _logits(), sample_weight=sample_weight
        ),
        "VirtualTeacherLoss": lambda: keras_kd.VirtualTeacherLoss()(
            labels, _logits(), sample_weight=sample_weight
        ),
    }


def _fit_with_weights(weights, num_examples=8):
    distiller = _distiller(alpha=0.5)
    distiller.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.zeros((num_examples, NUM_FEATURES), "float32")
    distiller.fit(x, np.zeros(num_examples, "int32"), sample_weight=weights, verbose=0)


def _weight_value_rows():
    rows = []
    for bad in (math.nan, math.inf, -1.0):
        weights = np.array([1.0, bad, 1.0, 1.0])
        calls = {
            **_loss_calls(sample_weight=weights),
            "Distiller.fit": lambda weights=weights: _fit_with_weights(np.tile(weights, 2)),
        }
        for entry, call in calls.items():
            rows.append(
                BadInput(
                    "sample_weight",
                    repr(bad),
                    entry,
                    call,
                    f"`sample_weight` must be finite and >= 0, got {bad!r}",
                )
            )
    return rows


def _weight_shape_rows():
    rows = []
    for weights, described in (
        (np.ones(5), "5 weights for 4 examples"),
        (np.ones((4, 3)), "one weight per class (4, 3)"),
    ):
        for entry, call in _loss_calls(sample_weight=weights).items():
            rows.append(
                BadInput(
                    "sample_weight",
                    described,
                    entry,
                    call,
                    "`sample_weight` must hold one weight per example, shape (4,) (or a "
                    f"scalar), for predictions of shape (4, 3); got shape {weights.shape}",
                )
            )
    rows.append(
        BadInput(
            "sample_weight",
            "5 weights for 8 examples",
            "Distiller.fit",
            lambda: _fit_with_weights(np.ones(5)),
            "`sample_weight` must hold one weight per example: got 5 weights for 8 examples",
        )
    )
    return rows


STRING_LABELS = np.array(["cat", "dog", "cat", "bird"])


def _label_rows():
    rows = []
    string_calls = {
        entry: call
        for entry, call in _loss_calls(y_true=STRING_LABELS).items()
        if entry in ("LabelSmoothingLoss", "VirtualTeacherLoss")
    }
    string_calls["losses.cross_entropy"] = lambda: losses.cross_entropy(STRING_LABELS, _logits())
    string_calls["losses.label_smoothing_loss"] = lambda: losses.label_smoothing_loss(
        STRING_LABELS, _logits(), 0.1
    )
    string_calls["DistillationLoss"] = lambda: keras_kd.DistillationLoss()(
        np.full((4, 3), "x"), _logits()
    )
    rows.append(
        BadInput(
            "y",
            "strings",
            "Distiller.fit",
            lambda: _fit_distiller(_classifier(), y=np.array(["cat", "dog"] * 4)),
            "`y` must be numeric (class indices, one-hot or 0/1 targets), got strings such as "
            "'cat'",
        )
    )
    for entry, call in string_calls.items():
        rows.append(
            BadInput(
                "y_true",
                "strings",
                entry,
                call,
                "`y_true` must be numeric (class indices, one-hot or 0/1 targets), got strings",
            )
        )
    bad_rows = {
        "an all-zero one-hot row": (
            np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0], [0, 0, 1]], "float32"),
            "`y_true` rows must be probability distributions (entries in [0, 1] summing to "
            "1), got a row summing to 0 at index (2,) (an all-zero row: a missing label?",
        ),
        "a multi-hot row summing to 2": (
            np.array([[1, 0, 0], [0, 1, 1], [0, 0, 1], [0, 0, 1]], "float32"),
            "`y_true` rows must be probability distributions (entries in [0, 1] summing to "
            "1), got a row summing to 2 at index (1,) (not 1",
        ),
        "a soft row with -0.5": (
            np.array([[1, 0, 0], [-0.5, 1.5, 0], [0, 0, 1], [0, 0, 1]], "float32"),
            "`y_true` must hold one-hot or soft targets in [0, 1], got -0.5",
        ),
    }
    for described, (targets, error) in bad_rows.items():
        calls = {
            **{
                entry: call
                for entry, call in _loss_calls(y_true=targets).items()
                if entry in ("LabelSmoothingLoss", "VirtualTeacherLoss")
            },
            "losses.cross_entropy": lambda targets=targets: losses.cross_entropy(
                targets, _logits()
            ),
            "losses.label_smoothing_loss": lambda targets=targets: losses.label_smoothing_loss(
                targets, _logits(), 0.1
            ),
        }
        for entry, call in calls.items():
            rows.append(BadInput("y_true", described, entry, call, error))
    binary = keras_kd.LabelSmoothingLoss(0.1, from_logits=True, output="sigmoid")
    rows += [
        BadInput(
            "y_true",
            "binary target 2",
            "LabelSmoothingLoss(output='sigmoid')",
            lambda: binary(np.array([[0.0], [1.0], [2.0], [1.0]]), _logits(4, 1)),
            "`y_true` must hold binary/multi-label targets in [0, 1], got 2.0",
        ),
        BadInput(
            "y_true",
            "binary target nan",
            "losses.label_smoothing_loss (K = 1)",
            lambda: losses.label_smoothing_loss(np.array([0.0, 1.0, np.nan, 1.0]), _logits(4, 1)),
            "`y_true` must hold binary/multi-label targets in [0, 1], got nan",
        ),
        BadInput(
            "y_true",
            "class indices for 3 sigmoid outputs",
            "LabelSmoothingLoss(output='sigmoid')",
            lambda: binary(LABELS_4, _logits()),
            "Binary/multi-label `y_true` must have the predictions' shape (4, 3) (or (4,) for "
            "one output), got labels of shape (4,)",
        ),
        BadInput(
            "y_pred",
            "a single logit (4, 1)",
            "VirtualTeacherLoss",
            lambda: keras_kd.VirtualTeacherLoss()(np.array([0, 1, 1, 0]), _logits(4, 1)),
            "VirtualTeacherLoss needs softmax logits over K >= 2 classes, got `y_pred` of "
            "shape (4, 1)",
        ),
    ]
    return rows


class _SoftmaxSubclass(keras.Model):
    """A subclassed classifier ending in a softmax: invisible to static inspection."""

    def __init__(self, num_classes=3, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(num_classes)

    def call(self, inputs):
        return keras.ops.softmax(self.dense(inputs))


def _lambda_softmax_model(name=None):
    return keras.Sequential(
        [
            keras.Input((NUM_FEATURES,)),
            keras.layers.Dense(3),
            keras.layers.Lambda(lambda z: keras.ops.softmax(z * 1.0)),
        ],
        name=name,
    )


def _fit_distiller(teacher, student=None, y=None, **fit_kwargs):
    distiller = keras_kd.Distiller(teacher=teacher, student=student or _classifier(), alpha=0.5)
    distiller.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).normal(size=(8, NUM_FEATURES)).astype("float32")
    y = np.zeros(8, "int32") if y is None else y
    distiller.fit(x, y, batch_size=4, epochs=1, verbose=0, **fit_kwargs)


def _probability_rows():
    teacher_found = (
        "outputs probabilities (every row in [0, 1] and summing to 1) on the first batch"
    )
    sigmoid_probabilities = np.random.default_rng(0).uniform(0.05, 0.95, (16, 1)).astype("float32")
    cached = {LABELS: np.zeros(8, "int32"), TEACHER_LOGITS: _probabilities(8)}
    return [
        BadInput(
            "y_true",
            "softmax probabilities as teacher logits",
            entry,
            lambda make=make: make()(_probabilities(), _logits()),
            "`y_true` look like probabilities (every row in [0, 1] and summing to 1), not logits",
        )
        for entry, make in (
            ("DistillationLoss", keras_kd.DistillationLoss),
            ("LogitMatchingLoss", keras_kd.LogitMatchingLoss),
        )
    ] + [
        BadInput(
            "y_true",
            "16 sigmoid probabilities as teacher logits",
            "DistillationLoss(output='sigmoid')",
            lambda: keras_kd.DistillationLoss(output="sigmoid")(
                sigmoid_probabilities, _logits(16, 1)
            ),
            "`y_true` look like sigmoid probabilities (all 16 values in [0, 1]",
        ),
        BadInput(
            "teacher",
            "a Lambda(softmax) after the logits",
            "Distiller.fit",
            lambda: _fit_distiller(_lambda_softmax_model(name="lambda_teacher")),
            f"`teacher` 'lambda_teacher' {teacher_found}",
        ),
        BadInput(
            "teacher",
            "a subclassed model returning softmax",
            "Distiller.fit",
            lambda: _fit_distiller(_SoftmaxSubclass(name="subclassed")),
            f"`teacher` 'subclassed' {teacher_found}",
        ),
        BadInput(
            "teacher",
            "ensemble member with a Lambda(softmax)",
            "Distiller.fit",
            lambda: _fit_distiller([_classifier(), _lambda_softmax_model(name="member")]),
            f"`teacher[1]` 'member' {teacher_found}",
        ),
        BadInput(
            "y['teacher_logits']",
            "cached probabilities",
            "Distiller.fit",
            lambda: _fit_distiller(_classifier(), y=cached),
            f"y['teacher_logits'] {teacher_found}",
        ),
        BadInput(
            "student",
            "a Lambda(softmax) after the logits",
            "Distiller.fit",
            lambda: _fit_distiller(_classifier(), _lambda_softmax_model(name="lambda_student")),
            "`student` 'lambda_student' outputs probabilities (every row in [0, 1] and summing "
            "to 1) on the first batch, not logits",
        ),
        BadInput(
            "teacher",
            "a Lambda(softmax) after the logits",
            "cache_teacher_logits",
            lambda: keras_kd.cache_teacher_logits(
                _lambda_softmax_model(name="lambda_teacher"),
                (np.ones((8, NUM_FEATURES), "float32"), np.zeros(8, "int32")),
                batch_size=4,
                verbose=0,
            ),
            f"`teacher` 'lambda_teacher' {teacher_found}",
        ),
        BadInput(
            "student",
            "a Dense(activation='sigmoid') head",
            "Distiller",
            lambda: keras_kd.Distiller(
                _classifier(1),
                keras.Sequential(
                    [keras.Input((NUM_FEATURES,)), keras.layers.Dense(1, activation="sigmoid")],
                    name="sigmoid_student",
                ),
            ),
            "The student 'sigmoid_student' ends in a sigmoid",
        ),
        BadInput(
            "student",
            "a Dense(activation=tf.nn.softmax) head",
            "Distiller",
            lambda: keras_kd.Distiller(
                _classifier(),
                keras.Sequential(
                    [
                        keras.Input((NUM_FEATURES,)),
                        keras.layers.Dense(3, activation=tf.nn.softmax),
                    ],
                    name="tf_softmax_student",
                ),
            ),
            "The student 'tf_softmax_student' ends in a softmax",
        ),
    ]


def _softmax_classifier():
    return keras.Sequential(
        [keras.Input((NUM_FEATURES,)), keras.layers.Dense(3), keras.layers.Softmax()],
        name="softmax_teacher",
    )


def _shared_dense_student(teacher):
    inputs = keras.Input((NUM_FEATURES,))
    return keras.Model(inputs, keras.layers.Dense(3)(teacher.layers[-1](inputs)), name="sharing")


def _dict_teacher():
    inputs = keras.Input((NUM_FEATURES,))
    return keras.Model(inputs, {"logits": keras.layers.Dense(3)(inputs)}, name="dict_teacher")


def _twice_called_teacher():
    inputs = keras.Input((NUM_FEATURES,))
    block = keras.layers.Dense(NUM_FEATURES, name="block")
    return keras.Model(inputs, keras.layers.Dense(3)(block(block(inputs))), name="reuser")


def _feature_distiller_on(teacher):
    inputs = keras.Input((NUM_FEATURES,))
    hidden = keras.layers.Dense(NUM_FEATURES, name="hidden")(inputs)
    student = keras.Model(inputs, keras.layers.Dense(3)(hidden))
    pair = keras_kd.FeaturePair("block", "hidden")
    return keras_kd.Distiller(teacher, student, feature_pairs=[pair])


class _Batches(keras.utils.PyDataset):
    def __len__(self):
        return 2

    def __getitem__(self, index):
        return np.zeros((4, NUM_FEATURES), "float32"), np.zeros(4, "int32")


def _cache(data, teacher=None, **kwargs):
    return keras_kd.cache_teacher_logits(teacher or _classifier(), data, verbose=0, **kwargs)


def _model_and_data_rows():
    teacher = _classifier(name="teacher")
    same = _classifier(name="same")
    contained_teacher = _classifier(name="inner")
    container = keras.Sequential([contained_teacher, keras.layers.Dense(3)], name="container")
    x = np.zeros((8, NUM_FEATURES), "float32")
    labels = np.zeros(8, "int32")
    return [
        BadInput(
            "output",
            "'softmax' (the default) with a sigmoid multi-label teacher",
            "Distiller",
            lambda: keras_kd.Distiller(
                keras.Sequential(
                    [keras.Input((NUM_FEATURES,)), keras.layers.Dense(3, activation="sigmoid")],
                    name="tagger",
                ),
                _classifier(),
            ),
            "`teacher` 'tagger' ends in a sigmoid over 3 outputs, but output='softmax'. Pass "
            "output='sigmoid'",
        ),
        BadInput(
            "output",
            "'sigmoid' with a softmax teacher",
            "Distiller",
            lambda: keras_kd.Distiller(_softmax_classifier(), _classifier(), output="sigmoid"),
            "`teacher` 'softmax_teacher' ends in a softmax over 3 outputs, but output='sigmoid'. "
            "Pass output='softmax'",
        ),
        BadInput(
            "teacher, student",
            "the same model",
            "Distiller",
            lambda: keras_kd.Distiller(same, same),
            "`teacher` and `student` are the same model 'same'",
        ),
        BadInput(
            "student",
            "a student that contains the teacher",
            "Distiller",
            lambda: keras_kd.Distiller(contained_teacher, container),
            "`student` 'container' contains the teacher `teacher` 'inner'",
        ),
        BadInput(
            "student",
            "a student sharing a layer with the teacher",
            "Distiller",
            lambda: keras_kd.Distiller(teacher, _shared_dense_student(teacher)),
            "`student` 'sharing' shares layers with the teacher `teacher` 'teacher'",
        ),
        BadInput(
            "teacher",
            "inputs of shape (None, 6) vs the student's (None, 4)",
            "Distiller",
            lambda: keras_kd.Distiller(
                keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)], name="wide"),
                _classifier(),
            ),
            "`teacher` 'wide' expects inputs of shape (None, 6) but `student`",
        ),
        BadInput(
            "teacher",
            "a model returning a dict",
            "Distiller.fit",
            lambda: _fit_distiller(_dict_teacher()),
            "`teacher` 'dict_teacher' returns a dict with keys ['logits']",
        ),
        BadInput(
            "teacher",
            "a model returning a dict",
            "cache_teacher_logits",
            lambda: _cache((x, labels), _dict_teacher(), batch_size=4),
            "`teacher` 'dict_teacher' returns a dict with keys ['logits']",
        ),
        BadInput(
            "teacher_layer",
            "a layer called twice",
            "Distiller(feature_pairs=...)",
            lambda: _feature_distiller_on(_twice_called_teacher()),
            "`teacher_layer`='block' is called 2 times in the teacher 'reuser'",
        ),
        BadInput(
            "data",
            "a Python generator",
            "cache_teacher_logits",
            lambda: _cache(((x[:4], labels[:4]) for _ in range(2))),
            "`data` is a Python generator, which can be read only once",
        ),
        BadInput(
            "data",
            "a keras.utils.PyDataset",
            "cache_teacher_logits",
            lambda: _cache(_Batches()),
            "`data` is a keras.utils.PyDataset (_Batches)",
        ),
        BadInput(
            "data",
            "an unbatched tf.data.Dataset",
            "cache_teacher_logits",
            lambda: _cache(tf.data.Dataset.from_tensor_slices((x, labels))),
            "`data` is an unbatched tf.data.Dataset: its inputs have shape (4,)",
        ),
        BadInput(
            "teacher",
            "ensemble with 3 and 4 classes",
            "cache_teacher_logits",
            lambda: _cache(
                (x, labels), [_classifier(3, name="t3"), _classifier(4, name="t4")], batch_size=4
            ),
            "`teacher` ensemble members must have the same output shape, got 't3': (None, 3), "
            "'t4': (None, 4)",
        ),
        BadInput(
            "y",
            "{'labels': ..., 'teacher_logit': ...} (misspelt)",
            "Distiller.fit",
            lambda: _fit_distiller(_classifier(), y={LABELS: labels, "teacher_logit": _logits(8)}),
            "`y` is a dict with keys ['labels', 'teacher_logit']; cached targets use only "
            f"{list(keras_kd.targets.CACHED_TARGET_KEYS)} (got 'teacher_logit'). "
            "Did you mean 'teacher_logits'?",
        ),
        BadInput(
            "y",
            "{'label': ...} (misspelt)",
            "targets.split_targets",
            lambda: keras_kd.targets.split_targets({"label": labels}),
            "`y` is a dict with keys ['label']; cached targets use only "
            f"{list(keras_kd.targets.CACHED_TARGET_KEYS)} (got 'label'). Did you mean 'labels'?",
        ),
        BadInput(
            "class_weight",
            "{0: 1.0, 1: 2.0} with cached logits",
            "Distiller.fit",
            lambda: _fit_distiller(
                _classifier(),
                y={LABELS: labels, TEACHER_LOGITS: _logits(8)},
                class_weight={0: 1.0, 1: 2.0},
            ),
            "`class_weight`={0: 1.0, 1: 2.0} cannot be applied with cached teacher logits",
        ),
        BadInput(
            "class_weight",
            "{0: 1.0, 1: -2.0}",
            "Distiller.fit",
            lambda: _fit_distiller(_classifier(), class_weight={0: 1.0, 1: -2.0}),
            "`class_weight` must be finite and >= 0, got -2.0",
        ),
    ]


BAD_INPUTS += [
    *_output_rows(),
    *_weight_value_rows(),
    *_weight_shape_rows(),
    *_label_rows(),
    *_probability_rows(),
    *_model_and_data_rows(),
]


def _row_id(row):
    return f"{row.entry}-{row.argument}={row.bad_value}"


@pytest.mark.parametrize("row", BAD_INPUTS, ids=[_row_id(row) for row in BAD_INPUTS])
def test_bad_input_raises_a_value_error_naming_argument_and_value(row):
    with pytest.raises(ValueError, match=re.escape(row.error)):
        row.call()


def test_every_row_names_its_argument():
    # The message fragment itself names the argument (or the key it is passed under).
    for row in BAD_INPUTS:
        named = [name.strip() for name in row.argument.split(",")]
        assert any(
            name.lower() in row.error.lower() or name.split("[")[0] in row.error for name in named
        ), row


# ---------------------------------------------------------------------------
# Inputs near the edge that are right, and get the right number (NumPy, float64)
# ---------------------------------------------------------------------------


def _np_log_softmax(z):
    z = np.asarray(z, np.float64)
    finite_max = np.max(np.where(np.isfinite(z), z, -np.inf), axis=-1, keepdims=True)
    return z - finite_max - np.log(np.sum(np.exp(z - finite_max), axis=-1, keepdims=True))


def _np_cross_entropy(targets, z):
    log_p = _np_log_softmax(z)
    # q log p with 0 where q = 0 (log p = -inf there for a masked class).
    return -np.sum(targets * np.where(targets > 0, log_p, 0.0), axis=-1)


def _np_kd(t, s, temperature):
    log_p, log_q = _np_log_softmax(np.asarray(t) / temperature), _np_log_softmax(
        np.asarray(s) / temperature
    )
    p = np.exp(log_p)
    with np.errstate(invalid="ignore"):  # -inf - -inf on classes both mask, dropped
        differences = np.where(p > 0, log_p - log_q, 0.0)
    return temperature**2 * np.sum(p * differences, axis=-1)


def _np_binary_kd(t, s, temperature):
    def log_sigmoid(x):
        return -np.logaddexp(0.0, -np.asarray(x, np.float64))

    t, s = np.asarray(t, np.float64) / temperature, np.asarray(s, np.float64) / temperature
    kl = np.exp(log_sigmoid(t)) * (log_sigmoid(t) - log_sigmoid(s)) + np.exp(
        log_sigmoid(-t)
    ) * (log_sigmoid(-t) - log_sigmoid(-s))
    return temperature**2 * kl.mean(axis=-1)


class GoodInput(NamedTuple):
    described: str
    entry: str
    call: Callable[[], object]
    expected: Callable[[], object]  # the NumPy reference


SOFT_TARGETS = np.array([[0.7, 0.2, 0.1], [0, 1, 0], [0.25, 0.25, 0.5], [1, 0, 0]], "float32")
MASKED_LOGITS = np.array(
    [[-np.inf, 2.0, 3.0], [1.0, -np.inf, 0.0], [0.5, 0.2, -np.inf], [1.0, 2.0, 3.0]], "float32"
)
MASKED_LABELS = np.array([1, 0, 0, 2])
WEIGHTS = np.array([0.0, 1.0, 0.0, 2.5])
SIGMOID_LOGITS_IN_UNIT_INTERVAL = np.array([[0.1], [0.9], [0.4], [0.6]], "float32")

GOOD_INPUTS = [
    GoodInput(
        "soft targets that are distributions",
        "losses.cross_entropy",
        lambda: losses.cross_entropy(SOFT_TARGETS, _logits()),
        lambda: _np_cross_entropy(SOFT_TARGETS, _logits()),
    ),
    GoodInput(
        "soft targets that are distributions (eps = 0)",
        "LabelSmoothingLoss",
        lambda: keras_kd.LabelSmoothingLoss(0.0, from_logits=True)(SOFT_TARGETS, _logits()),
        lambda: _np_cross_entropy(SOFT_TARGETS, _logits()).mean(),
    ),
    GoodInput(
        "float class indices 0.0 ... 2.0",
        "losses.cross_entropy",
        lambda: losses.cross_entropy(LABELS_4.astype("float32"), _logits()),
        lambda: _np_cross_entropy(np.eye(3)[LABELS_4], _logits()),
    ),
    GoodInput(
        "zero weights among positive ones",
        "DistillationLoss",
        lambda: keras_kd.DistillationLoss(2.0)(_logits(seed=2), _logits(), sample_weight=WEIGHTS),
        lambda: np.sum(WEIGHTS * _np_kd(_logits(seed=2), _logits(), 2.0)) / 4,
    ),
    GoodInput(
        "weights of shape (4, 1)",
        "LabelSmoothingLoss",
        lambda: keras_kd.LabelSmoothingLoss(0.0, from_logits=True)(
            LABELS_4, _logits(), sample_weight=WEIGHTS[:, None]
        ),
        lambda: np.sum(WEIGHTS * _np_cross_entropy(np.eye(3)[LABELS_4], _logits())) / 4,
    ),
    GoodInput(
        "masked logits (-inf off the label)",
        "losses.cross_entropy",
        lambda: losses.cross_entropy(MASKED_LABELS, MASKED_LOGITS),
        lambda: _np_cross_entropy(np.eye(3)[MASKED_LABELS], MASKED_LOGITS),
    ),
    GoodInput(
        "masked logits (-inf off the label), eps = 0",
        "losses.label_smoothing_loss",
        lambda: losses.label_smoothing_loss(MASKED_LABELS, MASKED_LOGITS, 0.0),
        lambda: _np_cross_entropy(np.eye(3)[MASKED_LABELS], MASKED_LOGITS),
    ),
    GoodInput(
        "masked logits (-inf off the label)",
        "VirtualTeacherLoss(alpha=0)",
        lambda: keras_kd.VirtualTeacherLoss(alpha=0.0, reduction=None)(
            MASKED_LABELS, MASKED_LOGITS
        ),
        lambda: _np_cross_entropy(np.eye(3)[MASKED_LABELS], MASKED_LOGITS),
    ),
    GoodInput(
        "the same classes masked in teacher and student",
        "losses.distillation_loss",
        lambda: losses.distillation_loss(MASKED_LOGITS, MASKED_LOGITS * 0.5, 2.0),
        lambda: _np_kd(MASKED_LOGITS, MASKED_LOGITS * 0.5, 2.0),
    ),
    GoodInput(
        "masked teacher classes only",
        "losses.distillation_loss",
        lambda: losses.distillation_loss(MASKED_LOGITS, _logits(), 2.0),
        lambda: _np_kd(MASKED_LOGITS, _logits(), 2.0),
    ),
    GoodInput(
        "teacher logits in [0, 1] summing to 1 with a negative row elsewhere",
        "DistillationLoss",
        lambda: keras_kd.DistillationLoss(2.0, reduction=None)(
            np.array([[0.2, 0.3, 0.5], [-0.5, 1.0, 0.5]], "float32"), _logits(2)
        ),
        lambda: _np_kd(np.array([[0.2, 0.3, 0.5], [-0.5, 1.0, 0.5]]), _logits(2), 2.0),
    ),
    GoodInput(
        "4 binary teacher logits in [0, 1] (too few to mean probabilities)",
        "DistillationLoss(output='sigmoid')",
        lambda: keras_kd.DistillationLoss(2.0, output="sigmoid", reduction=None)(
            SIGMOID_LOGITS_IN_UNIT_INTERVAL, _logits(4, 1)
        ),
        lambda: _np_binary_kd(SIGMOID_LOGITS_IN_UNIT_INTERVAL, _logits(4, 1), 2.0),
    ),
    GoodInput(
        "16 equal binary teacher logits 0.5 (constant: says nothing)",
        "DistillationLoss",
        lambda: keras_kd.DistillationLoss(2.0, reduction=None)(
            np.full((16, 1), 0.5, "float32"), _logits(16, 1)
        ),
        lambda: _np_binary_kd(np.full((16, 1), 0.5), _logits(16, 1), 2.0),
    ),
    GoodInput(
        "binary 0/1 labels of shape (4,) for one logit",
        "LabelSmoothingLoss",
        lambda: keras_kd.LabelSmoothingLoss(0.2, from_logits=True, reduction=None)(
            np.array([1, 0, 1, 1]), _logits(4, 1)
        ),
        lambda: -np.mean(
            (lambda q, z: q * -np.logaddexp(0, -z) + (1 - q) * -np.logaddexp(0, z))(
                np.array([[1, 0, 1, 1]]).T * 0.8 + 0.1, _logits(4, 1).astype(np.float64)
            ),
            axis=-1,
        ),
    ),
]


@pytest.mark.parametrize(
    "case", GOOD_INPUTS, ids=[f"{case.entry}-{case.described}" for case in GOOD_INPUTS]
)
def test_input_near_the_edge_gives_the_numpy_value(case):
    got = keras.ops.convert_to_numpy(case.call()).astype(np.float64)
    expected = np.asarray(case.expected(), np.float64)
    assert np.all(np.isfinite(got)), got
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------
# Nothing half-written
# ---------------------------------------------------------------------------


def test_rejected_distiller_does_not_freeze_the_teacher():
    teacher = _classifier(3)
    with pytest.raises(ValueError, match="differ"):
        keras_kd.Distiller(teacher=teacher, student=_classifier(4))
    with pytest.raises(ValueError, match="alpha"):
        keras_kd.Distiller(teacher=teacher, student=_classifier(3), alpha=2.0)
    assert teacher.trainable
    assert len(teacher.trainable_weights) == 2


def test_rejected_cached_logits_train_nothing():
    keras.utils.set_random_seed(0)
    student = _classifier(3)
    distiller = keras_kd.Distiller(teacher=_classifier(3), student=student, alpha=0.5)
    distiller.compile(
        optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    before = [w.copy() for w in student.get_weights()]
    x = np.ones((8, NUM_FEATURES), "float32")
    y = {LABELS: np.zeros(8, "int32"), TEACHER_LOGITS: _logits(8, 4)}
    with pytest.raises(ValueError, match=re.escape("of shape (4, 4) do not match")):
        distiller.fit(x, y, batch_size=4, epochs=1, verbose=0)
    for old, new in zip(before, student.get_weights()):
        np.testing.assert_array_equal(old, new)
    assert int(distiller.optimizer.iterations) == 0


def test_out_of_range_labels_stop_an_eager_distiller_before_any_update():
    # Inside a compiled fit() the range is not checked (it would cost a device sync
    # per step); run_eagerly=True, as when debugging, does check it.
    keras.utils.set_random_seed(0)
    student = _classifier(3)
    distiller = keras_kd.Distiller(teacher=_classifier(3), student=student, alpha=0.5)
    distiller.compile(
        optimizer="sgd", loss=keras_kd.LabelSmoothingLoss(0.1, from_logits=True), run_eagerly=True
    )
    before = [w.copy() for w in student.get_weights()]
    x = np.ones((4, NUM_FEATURES), "float32")
    with pytest.raises(ValueError, match=re.escape("got 7")):
        distiller.fit(x, np.array([0, 1, 7, 2]), batch_size=4, epochs=1, verbose=0)
    for old, new in zip(before, student.get_weights()):
        np.testing.assert_array_equal(old, new)


def test_empty_validation_data_of_unknown_size_fails_before_a_second_epoch():
    # After `filter` TensorFlow cannot know the size: ECECallback finds out at the end
    # of the first epoch and stops fit with the ValueError.
    model = _classifier(3)
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    empty = (
        tf.data.Dataset.from_tensor_slices(
            (np.zeros((4, NUM_FEATURES), "float32"), np.zeros((4,), "int32"))
        )
        .filter(lambda x, y: False)
        .batch(4)
    )
    x, labels = np.zeros((8, NUM_FEATURES), "float32"), np.zeros(8, "int32")
    with pytest.raises(ValueError, match="`validation_data` is empty"):
        model.fit(x, labels, epochs=3, verbose=0, callbacks=[callbacks.ECECallback(empty)])
    assert int(model.optimizer.iterations) == 1


def test_rejected_temperature_fit_keeps_the_old_temperature():
    scaler = calibration.TemperatureScaling(temperature=2.5)
    with pytest.raises(ValueError, match="looks like probabilities"):
        scaler.fit(_probabilities(), LABELS_4)
    assert scaler.temperature == 2.5
    assert scaler.from_probabilities is False


def test_in_range_labels_and_tensors_still_work():
    # The eager range check must not reject valid labels in any accepted form.
    logits = _logits()
    expected = -np.log(_probabilities())[np.arange(4), LABELS_4]
    for labels in (
        LABELS_4,
        LABELS_4.reshape(4, 1),
        LABELS_4.astype("float32"),
        tf.constant(LABELS_4),
        np.eye(3)[LABELS_4],
    ):
        got = keras.ops.convert_to_numpy(losses.cross_entropy(labels, logits))
        np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_graph_mode_skips_the_range_check_without_error():
    @tf.function
    def loss(labels, logits):
        return losses.cross_entropy(labels, logits)

    # Traced: values are unknown, so no check (and no host sync); a valid batch works.
    np.testing.assert_allclose(
        loss(tf.constant(LABELS_4), tf.constant(_logits())).numpy(),
        -np.log(_probabilities())[np.arange(4), LABELS_4],
        rtol=1e-5,
    )
