"""keras_kd's numbers on the current Keras backend, for tests/test_backends.py.

Run once per backend on the same inputs:

    KERAS_BACKEND=jax python tests/backend_neutral/_backend_numbers.py INPUTS.npz OUT.json

It writes every loss, the ECE metric and the calibration functions on fixed logits, and
one epoch of distillation (live, from cached teacher logits, and with a feature hint)
from fixed initial weights, as JSON. A section that raises is written as its traceback
under "errors", so one broken feature fails its own test, not all of them. The
backend-neutral tests import `build_models` and `compiled_distiller` from here.
"""

import json
import os
import sys
import traceback

import keras
import numpy as np
from keras import ops

import keras_kd
from keras_kd import calibration
from keras_kd import callbacks
from keras_kd import features
from keras_kd import losses
from keras_kd import metrics
from keras_kd import teacher_cache

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _backend_reference as ref  # noqa: E402

NUM_BINS = 10


def build_models(arrays):
    """The reference teacher and student (`_backend_reference.mlp`) with fixed weights.

    The student has an L2 kernel and an L2 activity regularizer, so the Distiller's
    regularization term is part of every number.
    """
    teacher = keras.Sequential(
        [
            keras.Input((ref.NUM_FEATURES,)),
            keras.layers.Dense(ref.TEACHER_UNITS, activation="relu", name="teacher_hidden"),
            keras.layers.Dense(ref.NUM_CLASSES, name="teacher_logits"),
        ],
        name="teacher",
    )
    student = keras.Sequential(
        [
            keras.Input((ref.NUM_FEATURES,)),
            keras.layers.Dense(
                ref.STUDENT_UNITS,
                activation="relu",
                kernel_regularizer=keras.regularizers.L2(ref.KERNEL_L2),
                activity_regularizer=keras.regularizers.L2(ref.ACTIVITY_L2),
                name="student_hidden",
            ),
            keras.layers.Dense(ref.NUM_CLASSES, name="student_logits"),
        ],
        name="student",
    )
    teacher.set_weights(ref.teacher_weights(arrays))
    student.set_weights(ref.student_weights(arrays))
    return teacher, student


def compiled_distiller(teacher, student, jit_compile="auto"):
    """The reference Distiller (T, alpha of `_backend_reference`), SGD, with an ECE metric."""
    distiller = keras_kd.Distiller(teacher, student, temperature=ref.TEMPERATURE, alpha=ref.ALPHA)
    distiller.compile(
        optimizer=keras.optimizers.SGD(learning_rate=ref.LEARNING_RATE),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[metrics.ExpectedCalibrationError(num_bins=NUM_BINS, from_logits=True)],
        jit_compile=jit_compile,
    )
    return distiller


def _numpy(value):
    return np.asarray(ops.convert_to_numpy(value), dtype=np.float64).tolist()


def loss_numbers(arrays):
    """Every loss function per example, and every loss class reduced with weights."""
    teacher, student = arrays["teacher_logits"], arrays["student_logits"]
    labels, weights = arrays["labels"], arrays["sample_weight"]
    one_hot = np.eye(ref.NUM_CLASSES, dtype=np.float32)[labels]
    probs = ops.softmax(student, axis=-1)
    temperature = ref.TEMPERATURE
    values = {
        "tempered_log_softmax": losses.tempered_log_softmax(student, temperature),
        "kl_divergence_from_log_probs": losses.kl_divergence_from_log_probs(
            losses.tempered_log_softmax(teacher, temperature),
            losses.tempered_log_softmax(student, temperature),
        ),
        "distillation_loss": losses.distillation_loss(teacher, student, temperature),
        "ensemble_logits": losses.ensemble_logits(
            [teacher, arrays["second_teacher_logits"]], temperature
        ),
        "cross_entropy": losses.cross_entropy(labels, student),
        "cross_entropy_one_hot": losses.cross_entropy(one_hot, student),
        "label_smoothing_loss": losses.label_smoothing_loss(labels, student, 0.1),
        "label_smoothing_loss_probs": losses.label_smoothing_loss(
            labels, probs, 0.1, from_logits=False
        ),
        "virtual_teacher_loss_paper": losses.virtual_teacher_loss(
            labels, student, correct_prob=0.9, temperature=20.0, alpha=0.5
        ),
        "virtual_teacher_loss_reference": losses.virtual_teacher_loss(
            labels, student, 0.99, 20.0, alpha=0.1, mode="reference", multiplier=100.0
        ),
        "logit_matching_loss": losses.logit_matching_loss(teacher, student),
        # The classes, reduced by Keras' "sum_over_batch_size" with sample weights.
        "DistillationLoss": keras_kd.DistillationLoss(temperature)(teacher, student, weights),
        "LabelSmoothingLoss": keras_kd.LabelSmoothingLoss(0.1, from_logits=True)(
            labels, student, weights
        ),
        "VirtualTeacherLoss": keras_kd.VirtualTeacherLoss(0.9, 20.0, alpha=0.5)(
            labels, student, weights
        ),
        "LogitMatchingLoss": keras_kd.LogitMatchingLoss()(teacher, student, weights),
    }
    return {name: _numpy(value) for name, value in values.items()}


def ece_numbers(arrays):
    """The streaming metric (two batches, weighted) and the array functions."""
    logits, labels, weights = arrays["student_logits"], arrays["labels"], arrays["sample_weight"]
    half = len(labels) // 2
    values = {}
    for norm in ("l1", "l2", "max"):
        metric = metrics.ExpectedCalibrationError(
            num_bins=NUM_BINS, from_logits=True, norm=norm
        )
        metric.update_state(labels[:half], logits[:half], weights[:half])
        metric.update_state(labels[half:], logits[half:], weights[half:])
        values[f"metric_{norm}"] = float(ops.convert_to_numpy(metric.result()))
        values[f"function_{norm}"] = calibration.expected_calibration_error(
            logits, labels, num_bins=NUM_BINS, norm=norm, from_logits=True,
            sample_weight=weights,
        )
    values["temperature"] = calibration.TemperatureScaling().fit(logits, labels).temperature
    return values


def training_numbers(arrays):
    """One epoch of distillation from the fixed weights, with the ECE metric and
    callback; then evaluate and predict."""
    x, labels, weights = arrays["x"], arrays["labels"], arrays["sample_weight"]
    teacher, student = build_models(arrays)
    distiller = compiled_distiller(teacher, student)
    ece_callback = callbacks.ECECallback(
        (x, labels), num_bins=NUM_BINS, fit_temperature=True
    )
    history = distiller.fit(
        x, labels, sample_weight=weights, batch_size=ref.BATCH_SIZE, epochs=1,
        shuffle=False, verbose=0, callbacks=[ece_callback],
    )
    evaluation = distiller.evaluate(x, labels, batch_size=ref.BATCH_SIZE, verbose=0,
                                    return_dict=True)
    predictions = distiller.predict(x, batch_size=ref.BATCH_SIZE, verbose=0)
    return {
        "history": {key: [float(v) for v in values] for key, values in history.history.items()},
        "evaluate": {key: float(value) for key, value in evaluation.items()},
        "student_weights": [_numpy(w) for w in student.get_weights()],
        "predictions": _numpy(predictions),
    }


def cached_training_numbers(arrays):
    """The same epoch with the teacher's logits cached first: the teacher never runs."""
    x, labels, weights = arrays["x"], arrays["labels"], arrays["sample_weight"]
    teacher, student = build_models(arrays)
    cached = teacher_cache.cache_teacher_logits(
        teacher, (x, labels, weights), batch_size=ref.BATCH_SIZE, verbose=0
    )
    distiller = compiled_distiller(teacher, student)
    history = distiller.fit(cached, epochs=1, verbose=0)
    return {
        "history": {key: [float(v) for v in values] for key, values in history.history.items()},
        "student_weights": [_numpy(w) for w in student.get_weights()],
    }


def feature_training_numbers(arrays):
    """One epoch with a FitNets hint between the hidden layers (8 -> 12 units, so a
    projection is trained too), from fixed weights for the projection as well."""
    x, labels, weights = arrays["x"], arrays["labels"], arrays["sample_weight"]
    teacher, student = build_models(arrays)
    pair = features.FeaturePair("teacher_hidden", "student_hidden", loss="mse", weight=0.5)
    distiller = keras_kd.Distiller(
        teacher, student, temperature=ref.TEMPERATURE, alpha=ref.ALPHA, feature_pairs=[pair]
    )
    projection = distiller.feature_projections[pair.name]
    projection.set_weights([arrays["projection_kernel"], arrays["projection_bias"]])
    distiller.compile(
        optimizer=keras.optimizers.SGD(learning_rate=ref.LEARNING_RATE),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    history = distiller.fit(
        x, labels, sample_weight=weights, batch_size=ref.BATCH_SIZE, epochs=1, shuffle=False,
        verbose=0,
    )
    return {
        "history": {key: [float(v) for v in values] for key, values in history.history.items()},
        "student_weights": [_numpy(w) for w in student.get_weights()],
        "projection_weights": [_numpy(w) for w in projection.get_weights()],
    }


SECTIONS = {
    "losses": loss_numbers,
    "ece": ece_numbers,
    "training": training_numbers,
    "cached_training": cached_training_numbers,
    "feature_training": feature_training_numbers,
}


def compute(arrays):
    numbers = {"backend": keras.backend.backend(), "errors": {}}
    for name, section in SECTIONS.items():
        keras.utils.set_random_seed(0)
        try:
            numbers[name] = section(arrays)
        except Exception:  # noqa: BLE001 - reported, per section, to the comparing test
            numbers["errors"][name] = traceback.format_exc()
    return numbers


def main(argv):
    inputs_path, output_path = argv
    with np.load(inputs_path) as data:
        arrays = {name: data[name] for name in data.files}
    with open(output_path, "w") as file:
        json.dump(compute(arrays), file)


if __name__ == "__main__":
    main(sys.argv[1:])
