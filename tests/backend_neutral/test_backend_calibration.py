"""Calibration and the teacher-logit cache on the backend of this process, vs NumPy.

The ECE metric runs inside Keras' compiled evaluate (jitted on JAX); ECECallback and
TemperatureScaling work on the model's NumPy predictions; cache_teacher_logits runs
the teacher on the backend and hands Keras a tf.data pipeline, which every backend's
`fit` reads.
"""

import os

import keras
import numpy as np
import pytest

import _backend_reference as ref
from _backend_numbers import build_models
from _backend_numbers import compiled_distiller
from keras_kd import Distiller
from keras_kd import callbacks
from keras_kd import calibration
from keras_kd import metrics
from keras_kd import teacher_cache

NUM_BINS = 10


@pytest.fixture
def arrays():
    keras.utils.set_random_seed(0)
    return ref.inputs()


def test_ece_metric_in_compiled_evaluate_matches_numpy(arrays, reference_calibration_error):
    _, student = build_models(arrays)
    # `metrics` ignore sample weights and `weighted_metrics` apply them: both paths.
    student.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[
            metrics.ExpectedCalibrationError(num_bins=NUM_BINS, from_logits=True, norm=norm,
                                             name=f"ece_{norm}")
            for norm in ("l1", "l2", "max")
        ],
        weighted_metrics=[
            metrics.ExpectedCalibrationError(num_bins=NUM_BINS, from_logits=True,
                                             name="weighted_ece")
        ],
    )
    x, labels, weights = arrays["x"], arrays["labels"], arrays["sample_weight"]
    # Several batches: the metric's per-bin sums stream across them.
    result = student.evaluate(x, labels, sample_weight=weights, batch_size=ref.BATCH_SIZE,
                              verbose=0, return_dict=True)
    probs = ref.softmax(ref.mlp(ref.student_weights(arrays), x)[1])
    for norm in ("l1", "l2", "max"):
        expected = reference_calibration_error(probs, labels, NUM_BINS, norm)
        assert result[f"ece_{norm}"] == pytest.approx(expected, rel=1e-5, abs=1e-6), norm
    expected = reference_calibration_error(probs, labels, NUM_BINS, "l1", weights)
    assert result["weighted_ece"] == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_ece_callback_logs_the_student_calibration_and_drives_early_stopping(
    arrays, reference_calibration_error
):
    x, labels = arrays["x"], arrays["labels"]
    teacher, student = build_models(arrays)
    distiller = compiled_distiller(teacher, student)
    seen = []
    history = distiller.fit(
        x, labels, batch_size=ref.BATCH_SIZE, epochs=2, shuffle=False, verbose=0,
        callbacks=[
            callbacks.ECECallback((x, labels), num_bins=NUM_BINS, fit_temperature=True),
            keras.callbacks.LambdaCallback(
                on_epoch_end=lambda epoch, logs: seen.append(ref.mlp(student.get_weights(), x)[1])
            ),
            keras.callbacks.EarlyStopping(monitor="val_ece", patience=5),
        ],
    )
    logs = history.history
    for epoch, logits in enumerate(seen):
        probs = ref.softmax(logits)
        expected = reference_calibration_error(probs, labels, NUM_BINS, "l1")
        assert logs["val_ece"][epoch] == pytest.approx(expected, rel=1e-4, abs=1e-6)
        assert logs["val_mce"][epoch] == pytest.approx(
            reference_calibration_error(probs, labels, NUM_BINS, "max"), rel=1e-4, abs=1e-6
        )
        nll = np.mean(ref.cross_entropy(labels, logits))
        assert logs["val_nll"][epoch] == pytest.approx(nll, rel=1e-4)
        brier = np.mean(np.sum((probs - ref.one_hot(labels, ref.NUM_CLASSES)) ** 2, axis=-1))
        assert logs["val_brier"][epoch] == pytest.approx(brier, rel=1e-4)
        # The logged temperature minimises the NLL of softmax(z / T).
        temperature = logs["val_temperature"][epoch]
        nll_at = lambda t: np.mean(ref.cross_entropy(labels, logits / t))  # noqa: E731
        assert nll_at(temperature) <= min(nll_at(temperature * 0.99), nll_at(temperature * 1.01))


def test_temperature_scaling_wraps_a_model_that_saves_and_reloads(arrays, tmp_path):
    x, labels = arrays["x"], arrays["labels"]
    # The teacher: the labels are mostly its own predictions, so a finite T fits.
    teacher, _ = build_models(arrays)
    scaler = calibration.TemperatureScaling().fit(teacher.predict(x, verbose=0), labels)
    wrapped = scaler.wrap(teacher)
    expected = ref.softmax(ref.mlp(ref.teacher_weights(arrays), x)[1], scaler.temperature)
    np.testing.assert_allclose(wrapped.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)
    path = os.path.join(tmp_path, "calibrated.keras")
    wrapped.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)


def test_cached_ensemble_logits_from_a_file_train_like_the_live_ensemble(arrays, tmp_path):
    """An ensemble's per-member cache, saved and reloaded, folded at the Distiller's T."""
    x, labels = arrays["x"], arrays["labels"]
    teacher, _ = build_models(arrays)
    second_teacher, _ = build_models(arrays)
    second_teacher.set_weights([w * 0.5 for w in ref.teacher_weights(arrays)])
    ensemble = [teacher, second_teacher]
    path = os.path.join(tmp_path, "logits.npz")
    teacher_cache.cache_teacher_logits(ensemble, (x, labels), batch_size=ref.BATCH_SIZE,
                                       path=path, verbose=0)
    cached = teacher_cache.cache_teacher_logits(ensemble, (x, labels),
                                                batch_size=ref.BATCH_SIZE, path=path, verbose=0)
    first_x, first_targets = next(iter(cached))
    members = np.asarray(first_targets["teacher_member_logits"])
    np.testing.assert_allclose(members[:, 0], ref.mlp(ref.teacher_weights(arrays), first_x)[1],
                               rtol=1e-5, atol=1e-5)

    def distil(data, **fit_kwargs):
        _, fresh_student = build_models(arrays)
        distiller = Distiller(ensemble, fresh_student, temperature=ref.TEMPERATURE,
                              alpha=ref.ALPHA)
        distiller.compile(
            optimizer=keras.optimizers.SGD(learning_rate=ref.LEARNING_RATE),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        distiller.fit(data, epochs=1, verbose=0, **fit_kwargs)
        return fresh_student.get_weights()

    from_cache = distil(cached, shuffle=False)
    live = distil(x, y=labels, batch_size=ref.BATCH_SIZE, shuffle=False)
    for actual, expected in zip(from_cache, live):
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)


def test_classwise_equal_mass_and_brier_metrics_in_compiled_evaluate(arrays):
    """The issue-15 metrics stream inside each backend's compiled evaluate."""
    _, student = build_models(arrays)
    num_classes = int(student.output_shape[-1])
    student.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[
            metrics.ExpectedCalibrationError(num_bins=NUM_BINS, from_logits=True,
                                             classwise=True, num_classes=num_classes,
                                             name="classwise"),
            metrics.ExpectedCalibrationError(num_bins=NUM_BINS, from_logits=True,
                                             binning="equal_mass", name="ace"),
            metrics.BrierScore(from_logits=True),
        ],
    )
    x, labels = arrays["x"], arrays["labels"]
    result = student.evaluate(x, labels, batch_size=ref.BATCH_SIZE, verbose=0,
                              return_dict=True)
    logits = ref.mlp(ref.student_weights(arrays), x)[1]
    probs = ref.softmax(logits)
    one_hot = np.eye(num_classes)[labels]
    assert result["brier"] == pytest.approx(np.mean(np.sum((probs - one_hot) ** 2, -1)),
                                            rel=1e-5)
    classwise = calibration.expected_calibration_error(probs, labels, NUM_BINS, classwise=True)
    assert result["classwise"] == pytest.approx(classwise, abs=1e-5)
    exact_ace = calibration.expected_calibration_error(probs, labels, NUM_BINS,
                                                       binning="equal_mass")
    assert abs(result["ace"] - exact_ace) < 0.05  # the fine-histogram approximation
