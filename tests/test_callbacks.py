"""Tests for keras_kd.callbacks.ECECallback."""

import csv
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from keras_kd import calibration
from keras_kd.callbacks import ECECallback

NUM_CLASSES = 3


def _data(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype("float32")
    noisy = x[:, 0] + 0.8 * rng.normal(size=n)
    y = np.digitize(noisy, [-0.5, 0.5]).astype("int32")
    return x, y


X_TRAIN, Y_TRAIN = _data(192, 0)
X_VAL, Y_VAL = _data(96, 1)
W_VAL = np.random.default_rng(2).uniform(0.5, 2.0, size=96).astype("float32")


def _model(softmax=False):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((4,)),
        keras.layers.Dense(8, activation="relu"),
        keras.layers.Dense(NUM_CLASSES, activation="softmax" if softmax else None),
    ])
    model.compile(
        keras.optimizers.Adam(0.05),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=not softmax),
    )
    return model


class _Recorder(keras.callbacks.Callback):
    """Placed after ECECallback: what the logs and the model say at each epoch end."""

    def __init__(self, model_to_predict=None):
        super().__init__()
        self.model_to_predict = model_to_predict
        self.logs, self.predictions = [], []

    def on_epoch_end(self, epoch, logs=None):
        self.logs.append(dict(logs))
        model = self.model_to_predict or self.model
        self.predictions.append(model.predict(X_VAL, verbose=0))


def _expected(predictions, labels, weights=None, from_logits=True):
    common = dict(from_logits=from_logits, sample_weight=weights)
    return {
        "val_ece": calibration.expected_calibration_error(predictions, labels, **common),
        "val_mce": calibration.expected_calibration_error(predictions, labels, norm="max",
                                                          **common),
        "val_nll": calibration.negative_log_likelihood(predictions, labels, **common),
        "val_brier": calibration.brier_score(predictions, labels, **common),
    }


def _evaluate_once(callback, model):
    """Runs the callback's epoch-end hook outside `fit` and returns the logs."""
    callback.set_model(model)
    callback.on_train_begin()
    logs = {}
    callback.on_epoch_end(0, logs)
    callback.on_train_end()
    return logs


def test_logged_values_equal_the_array_functions_on_that_epochs_predictions():
    model = _model()
    recorder = _Recorder()
    history = model.fit(X_TRAIN, Y_TRAIN, epochs=3, batch_size=64, verbose=0,
                        callbacks=[ECECallback((X_VAL, Y_VAL)), recorder])
    assert len(history.history["val_ece"]) == 3
    for logs, predictions in zip(recorder.logs, recorder.predictions):
        for key, value in _expected(predictions, Y_VAL).items():
            assert logs[key] == pytest.approx(value, abs=1e-6), key
    assert history.history["val_ece"] == [logs["val_ece"] for logs in recorder.logs]
    assert len(set(history.history["val_ece"])) > 1  # the model did change


def test_callbacks_after_it_see_val_ece_and_auto_mode_minimises(tmp_path):
    model = _model()
    checkpoint_path = str(tmp_path / "best.weights.h5")
    csv_path = str(tmp_path / "log.csv")
    stopper = keras.callbacks.EarlyStopping(monitor="val_ece", patience=10)
    checkpoint = keras.callbacks.ModelCheckpoint(
        checkpoint_path, monitor="val_ece", mode="min", save_best_only=True,
        save_weights_only=True,
    )
    auto_checkpoint = keras.callbacks.ModelCheckpoint(
        str(tmp_path / "auto.weights.h5"), monitor="val_ece", save_best_only=True,
        save_weights_only=True,
    )
    history = model.fit(
        X_TRAIN, Y_TRAIN, epochs=4, batch_size=64, verbose=0,
        callbacks=[ECECallback((X_VAL, Y_VAL)), stopper, checkpoint, auto_checkpoint,
                   keras.callbacks.CSVLogger(csv_path)],
    )
    # mode="auto" resolved to minimisation for a callback-made metric.
    assert stopper.monitor_op is ops.less
    assert auto_checkpoint.monitor_op is ops.less
    eces = history.history["val_ece"]
    assert stopper.best == pytest.approx(min(eces))
    model.load_weights(checkpoint_path)
    best = calibration.expected_calibration_error(model.predict(X_VAL, verbose=0), Y_VAL,
                                                  from_logits=True)
    assert best == pytest.approx(min(eces), abs=1e-6)
    with open(csv_path) as file:
        rows = list(csv.DictReader(file))
    assert [float(row["val_ece"]) for row in rows] == pytest.approx(eces)
    # The direction hints live only during fit.
    assert "keras_kd_direction_hints" not in [m.name for m in model.metrics]


def test_dataset_and_arrays_with_sample_weights_give_the_same_values():
    model = _model()
    predictions = model.predict(X_VAL, verbose=0)
    expected = _expected(predictions, Y_VAL, W_VAL)
    from_arrays = _evaluate_once(ECECallback((X_VAL, Y_VAL, W_VAL), batch_size=40), model)
    # Reshuffled every epoch: labels must still meet their own predictions.
    dataset = tf.data.Dataset.from_tensor_slices((X_VAL, Y_VAL, W_VAL)).shuffle(96).batch(40)
    from_dataset = _evaluate_once(ECECallback(dataset), model)
    for key, value in expected.items():
        assert from_arrays[key] == pytest.approx(value, abs=1e-6), key
        assert from_dataset[key] == pytest.approx(value, abs=1e-6), key
    unweighted = tf.data.Dataset.from_tensor_slices((X_VAL, np.eye(3)[Y_VAL])).batch(32)
    assert _evaluate_once(ECECallback(unweighted), model)["val_ece"] == pytest.approx(
        _expected(predictions, Y_VAL)["val_ece"], abs=1e-6
    )


def test_fit_temperature_logs_the_fitted_temperature_and_calibrated_ece():
    model = _model()
    model.fit(X_TRAIN, Y_TRAIN, epochs=2, batch_size=64, verbose=0)
    logs = _evaluate_once(ECECallback((X_VAL, Y_VAL), fit_temperature=True, prefix="cal_"),
                          model)
    predictions = model.predict(X_VAL, verbose=0)
    scaler = calibration.TemperatureScaling().fit(predictions, Y_VAL)
    assert logs["cal_temperature"] == pytest.approx(scaler.temperature, rel=1e-6)
    assert logs["cal_ece_ts"] == pytest.approx(
        calibration.expected_calibration_error(scaler.predict_proba(predictions), Y_VAL),
        abs=1e-6,
    )
    assert set(logs) == {"cal_ece", "cal_mce", "cal_nll", "cal_brier", "cal_ece_ts",
                         "cal_temperature"}


def test_probability_outputs_need_from_logits_false():
    model = _model(softmax=True)
    predictions = model.predict(X_VAL, verbose=0)
    logs = _evaluate_once(ECECallback((X_VAL, Y_VAL), from_logits=False), model)
    assert logs["val_ece"] == pytest.approx(
        _expected(predictions, Y_VAL, from_logits=False)["val_ece"], abs=1e-6
    )
    with pytest.raises(ValueError, match="from_logits=False"):
        _evaluate_once(ECECallback((X_VAL, Y_VAL)), model)


def test_reliability_diagrams_are_written(tmp_path):
    model = _model()
    per_epoch = ECECallback((X_VAL, Y_VAL), diagram_dir=tmp_path / "epochs",
                            diagram_every="epoch")
    final = ECECallback((X_VAL, Y_VAL), diagram_dir=tmp_path / "end", prefix="last_")
    model.fit(X_TRAIN, Y_TRAIN, epochs=1, batch_size=96, verbose=0, callbacks=[per_epoch, final])
    assert sorted(p.name for p in (tmp_path / "epochs").iterdir()) == [
        "reliability_epoch_001.png"
    ]
    assert [p.name for p in (tmp_path / "end").iterdir()] == ["reliability_final.png"]
    assert (tmp_path / "end" / "reliability_final.png").read_bytes()[:4] == b"\x89PNG"


def test_works_with_a_distiller_student():
    from keras_kd.distiller import Distiller

    teacher = _model()
    keras.utils.set_random_seed(1)
    student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(NUM_CLASSES)])
    distiller = Distiller(teacher=teacher, student=student)
    distiller.compile("adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    recorder = _Recorder(model_to_predict=student)
    distiller.fit(X_TRAIN, Y_TRAIN, epochs=1, batch_size=96, verbose=0,
                  callbacks=[ECECallback((X_VAL, Y_VAL)), recorder])
    expected = _expected(recorder.predictions[0], Y_VAL)["val_ece"]
    assert recorder.logs[0]["val_ece"] == pytest.approx(expected, abs=1e-6)


def test_a_key_a_compiled_metric_already_logged_is_kept_without_warning():
    # Issue 15 replaced the 0.1 behaviour (overwrite and warn): the compiled metric,
    # computed in Keras' own validation pass, stands, and nothing warns.
    callback = ECECallback((X_VAL, Y_VAL))
    callback.set_model(_model())
    logs = {"val_ece": 123.0}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        callback.on_epoch_end(0, logs)
    assert logs["val_ece"] == 123.0
    assert {"val_mce", "val_nll", "val_brier"} <= set(logs)


@pytest.mark.parametrize(
    "validation_data, match",
    [
        ([X_VAL, Y_VAL], "must be a tuple"),
        ((X_VAL, Y_VAL, W_VAL, W_VAL), "must be a tuple"),
        ({"x": X_VAL, "y": Y_VAL}, "must be a tuple"),
        ((X_VAL, Y_VAL[:50]), "same number of examples"),
        ((X_VAL, Y_VAL, W_VAL[:10]), "same number of examples"),
        ((X_VAL[:0], Y_VAL[:0]), "empty"),
        (tf.data.Dataset.from_tensor_slices(X_VAL).batch(8), "must be a tuple"),
        (tf.data.Dataset.from_tensor_slices((X_VAL, Y_VAL)), "unbatched"),
        (tf.data.Dataset.from_tensor_slices((X_VAL, np.eye(3)[Y_VAL])), "unbatched"),
    ],
)
def test_bad_validation_data_raises_at_construction(validation_data, match):
    with pytest.raises(ValueError, match=match):
        ECECallback(validation_data)


def test_empty_dataset_raises_at_epoch_end():
    empty = tf.data.Dataset.from_tensor_slices((X_VAL[:0], Y_VAL[:0])).batch(8)
    with pytest.raises(ValueError, match="empty"):
        _evaluate_once(ECECallback(empty), _model())


def test_unbatched_dataset_matching_label_width_is_caught_against_the_model():
    x = X_VAL[:, :3]
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(NUM_CLASSES)])
    unbatched = tf.data.Dataset.from_tensor_slices((x, np.eye(3)[Y_VAL]))
    callback = ECECallback(unbatched)
    callback.set_model(model)
    with pytest.raises(ValueError, match="unbatched"):
        callback.on_train_begin()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_bins=0), "num_bins"),
        (dict(num_bins=2.0), "num_bins"),
        (dict(batch_size=0), "batch_size"),
        (dict(diagram_every="batch"), "diagram_every"),
        (dict(from_logits="true"), "from_logits"),
        (dict(prefix=None), "prefix"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ECECallback((X_VAL, Y_VAL), **kwargs)


# -- Issue 15: order-free, data forms, no warnings, no text in the progress bar -----------


def test_placed_last_every_callback_before_it_sees_its_values(tmp_path):
    model = _model()
    seen = {}

    class _Seer(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen[epoch] = dict(logs)

    stopper = keras.callbacks.EarlyStopping(monitor="val_ece_ts", patience=10)
    checkpoint = keras.callbacks.ModelCheckpoint(
        str(tmp_path / "best.weights.h5"), monitor="val_ece", save_best_only=True,
        save_weights_only=True,
    )
    csv_path = str(tmp_path / "log.csv")
    callback = ECECallback((X_VAL, Y_VAL), fit_temperature=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # "metric not available" and the like
        history = model.fit(
            X_TRAIN, Y_TRAIN, validation_data=(X_VAL, Y_VAL), epochs=3, batch_size=64,
            verbose=0,
            callbacks=[_Seer(), stopper, checkpoint, keras.callbacks.CSVLogger(csv_path),
                       callback],
        )
    keys = {"val_ece", "val_mce", "val_nll", "val_brier", "val_ece_ts", "val_temperature"}
    assert all(keys <= set(logs) for logs in seen.values())
    assert stopper.monitor_op is ops.less
    assert stopper.best == pytest.approx(min(history.history["val_ece_ts"]))
    assert checkpoint.best == pytest.approx(min(history.history["val_ece"]))
    with open(csv_path) as file:
        rows = list(csv.DictReader(file))
    assert [float(row["val_ece_ts"]) for row in rows] == pytest.approx(
        history.history["val_ece_ts"])
    model.load_weights(str(tmp_path / "best.weights.h5"))
    best = calibration.expected_calibration_error(model.predict(X_VAL, verbose=0), Y_VAL,
                                                  from_logits=True)
    assert best == pytest.approx(min(history.history["val_ece"]), abs=1e-6)
    assert "evaluate" not in model.__dict__  # the validation hook lives only during fit


def test_tensorboard_before_it_logs_its_values_and_the_diagram_image(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing import event_accumulator

    model = _model()
    model.fit(X_TRAIN, Y_TRAIN, validation_data=(X_VAL, Y_VAL), epochs=2, batch_size=64,
              verbose=0, callbacks=[
                  keras.callbacks.TensorBoard(str(tmp_path / "tb")),
                  ECECallback((X_VAL, Y_VAL), fit_temperature=True,
                              tensorboard_dir=tmp_path / "tb")])
    tags = set()
    for path in (tmp_path / "tb").rglob("events.out.tfevents*"):
        accumulator = event_accumulator.EventAccumulator(str(path))
        accumulator.Reload()
        tags |= {tag for values in accumulator.Tags().values() if isinstance(values, list)
                 for tag in values}
    assert any("ece_ts" in tag for tag in tags), tags
    assert any("reliability" in tag for tag in tags), tags


def test_with_the_compiled_metric_there_is_no_duplicate_key_warning():
    from keras_kd import metrics

    model = _model()
    model.compile(keras.optimizers.Adam(0.05),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[metrics.ExpectedCalibrationError(from_logits=True)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        history = model.fit(X_TRAIN, Y_TRAIN, validation_data=(X_VAL, Y_VAL), epochs=2,
                            batch_size=64, verbose=0, callbacks=[ECECallback((X_VAL, Y_VAL))])
    predictions = model.predict(X_VAL, verbose=0)
    assert history.history["val_ece"][-1] == pytest.approx(
        calibration.expected_calibration_error(predictions, Y_VAL, from_logits=True), abs=1e-5)


def test_messages_never_go_into_the_progress_bar_line(tmp_path, capsys):
    model = _model()
    model.fit(X_TRAIN, Y_TRAIN, validation_data=(X_VAL, Y_VAL), epochs=2, batch_size=96,
              verbose=1, callbacks=[ECECallback((X_VAL, Y_VAL), verbose=1,
                                                diagram_dir=tmp_path, diagram_every="epoch")])
    lines = capsys.readouterr().out.replace("\r", "\n").splitlines()
    for line in lines:
        if "Saved reliability diagram" in line:
            assert line.startswith("Saved reliability diagram"), line
    assert sum("Saved reliability diagram" in line for line in lines) == 2
    assert any("val_ece" in line for line in lines)  # values appear in Keras' own bar


class _Batches(keras.utils.PyDataset):
    def __init__(self, x, y, weights=None, batch_size=40):
        super().__init__()
        self.x, self.y, self.weights, self.batch_size = x, y, weights, batch_size

    def __len__(self):
        return -(-len(self.x) // self.batch_size)

    def __getitem__(self, index):
        rows = slice(index * self.batch_size, (index + 1) * self.batch_size)
        if self.weights is None:
            return self.x[rows], self.y[rows]
        return self.x[rows], self.y[rows], self.weights[rows]


def test_py_dataset_generator_and_cached_logit_dicts_give_the_array_values():
    model = _model()
    expected = _expected(model.predict(X_VAL, verbose=0), Y_VAL, W_VAL)

    def generator():
        while True:
            for start in range(0, 96, 32):
                yield X_VAL[start:start + 32], Y_VAL[start:start + 32], W_VAL[start:start + 32]

    cached = {"labels": Y_VAL, "teacher_logits": np.zeros((96, NUM_CLASSES), "float32")}
    dataset = tf.data.Dataset.from_tensor_slices((X_VAL, cached, W_VAL)).batch(40)
    for data, kwargs in [
        (_Batches(X_VAL, Y_VAL, W_VAL), {}),
        (generator(), {"steps": 3}),
        (dataset, {}),
        ((X_VAL, cached, W_VAL), {}),
    ]:
        logs = _evaluate_once(ECECallback(data, **kwargs), model)
        for key, value in expected.items():
            assert logs[key] == pytest.approx(value, abs=1e-6), (type(data), key)


def test_tensorboard_images_without_tensorboard_fail_at_construction(monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorboard" else real_find_spec(name,
                                                                                           *a))
    with pytest.raises(ImportError, match="pip install tensorboard"):
        ECECallback((X_VAL, Y_VAL), tensorboard_dir="tb")
