"""Every bad input gets a ValueError naming the argument and the value it got.

`BAD_INPUTS` is the table the README shows (argument | bad value | error): each row
is one parametrized test, and `markdown_table()` renders the same rows, so the docs
cannot drift from what is tested. Further tests check that a rejected call leaves
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


def markdown_table():
    """The rows above as the README's markdown table: rows that differ only in the
    bad value are merged, with `<value>` standing for it in the message."""
    merged = {}
    for row in BAD_INPUTS:
        error = row.error.replace(f"got {row.bad_value}", "got <value>")
        values, entries = merged.setdefault((row.argument, error), ([], []))
        for item, seen in ((row.bad_value, values), (row.entry, entries)):
            if item not in seen:
                seen.append(item)
    lines = [
        "| argument | bad value | where | error message (contains) |",
        "|---|---|---|---|",
    ]
    for (argument, error), (values, entries) in merged.items():
        where = ", ".join(f"`{entry}`" for entry in entries)
        lines.append(f"| `{argument}` | {', '.join(values)} | {where} | {error} |")
    return "\n".join(lines)


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
