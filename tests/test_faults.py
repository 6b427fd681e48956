"""Faults during distillation: a killed run resumes, a diverging run stops, checkpoints
stay clean, and a saved `.keras` file resumes training with its optimizer state.

Deterministic ops and fixed seeds make "resumed" and "uninterrupted" comparable bit
for bit. The students have no dropout: Keras' `BackupAndRestore` does not save the
random-seed state of `Dropout` layers, so a resumed run draws other masks (a Keras
limitation, the same for any model).
"""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework import config as tf_config

import keras_kd
from keras_kd.callbacks import ECECallback

NUM_FEATURES = 6
NUM_CLASSES = 3
BATCH_SIZE = 8
EPOCHS = 3


@pytest.fixture
def deterministic():
    """Seeded, deterministic TensorFlow ops for this test only."""
    was_enabled = tf_config.is_op_determinism_enabled()
    tf.config.experimental.enable_op_determinism()
    yield
    if not was_enabled:
        tf_config.disable_op_determinism()


def _data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, NUM_FEATURES)).astype("float32")
    return x, rng.integers(0, NUM_CLASSES, size=n).astype("int32")


def _distiller(seed=1, learning_rate=0.01):
    """Same seed, same initial weights: a restarted script rebuilds the same model."""
    keras.utils.set_random_seed(seed)
    teacher = keras.Sequential([keras.Input((NUM_FEATURES,)), keras.layers.Dense(NUM_CLASSES)])
    student = keras.Sequential(
        [
            keras.Input((NUM_FEATURES,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.BatchNormalization(),  # non-trainable state must survive too
            keras.layers.Dense(NUM_CLASSES),
        ]
    )
    distiller = keras_kd.Distiller(teacher, student, temperature=3.0, alpha=0.5)
    distiller.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return distiller


class _KillAt(keras.callbacks.Callback):
    """Raises at (epoch, batch): the process dying mid-epoch."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.kill_epoch, self.kill_batch, self.current_epoch = epoch, batch, None

    def on_epoch_begin(self, epoch, logs=None):
        self.current_epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.current_epoch == self.kill_epoch and batch == self.kill_batch:
            raise RuntimeError("killed")


def _assert_same_weights(a, b):
    assert len(a) == len(b)
    for left, right in zip(a, b):
        np.testing.assert_array_equal(left, right)


# ---------------------------------------------------------------------------
# BackupAndRestore
# ---------------------------------------------------------------------------


def test_killed_run_resumed_by_backup_and_restore_equals_an_uninterrupted_run(
    tmp_path, deterministic
):
    x, labels = _data()
    x_val, labels_val = _data(24, seed=1)
    fit = dict(batch_size=BATCH_SIZE, epochs=EPOCHS, shuffle=False, verbose=0)

    def ece_callback():
        return ECECallback((x_val, labels_val), num_bins=5)

    reference = _distiller()
    reference_history = reference.fit(x, labels, callbacks=[ece_callback()], **fit)

    backup_dir = str(tmp_path / "backup")
    killed = _distiller()
    with pytest.raises(RuntimeError, match="killed"):
        killed.fit(
            x,
            labels,
            callbacks=[keras.callbacks.BackupAndRestore(backup_dir), _KillAt(1, 2), ece_callback()],
            **fit,
        )
    # The backup holds the end of epoch 0, not the half-trained epoch 1.
    with open(os.path.join(backup_dir, "training_metadata.json")) as file:
        assert json.load(file)["epoch"] == 1

    resumed = _distiller()  # the restarted script: same construction, fresh objects
    history = resumed.fit(
        x, labels, callbacks=[keras.callbacks.BackupAndRestore(backup_dir), ece_callback()], **fit
    )

    # Resumed at epoch 1 with the restored optimizer step count (6 + 12 = 18): without
    # the restore it would have run 3 epochs, or counted 12 steps.
    assert history.epoch == [1, 2]
    _assert_same_weights(reference.student.get_weights(), resumed.student.get_weights())
    assert int(resumed.optimizer.iterations) == int(reference.optimizer.iterations) == 18
    _assert_same_weights(
        [v.numpy() for v in reference.optimizer.variables],
        [v.numpy() for v in resumed.optimizer.variables],
    )
    _assert_same_weights(reference.teacher.get_weights(), resumed.teacher.get_weights())
    # The logs of the resumed epochs, ECECallback's included, equal the reference's.
    for key in ("loss", "student_loss", "distillation_loss", "val_ece", "val_nll", "val_brier"):
        assert history.history[key] == pytest.approx(reference_history.history[key][1:]), key
    assert not os.path.exists(backup_dir)  # deleted once training completed


# ---------------------------------------------------------------------------
# Divergence: TerminateOnNaN and ModelCheckpoint(save_best_only=True)
# ---------------------------------------------------------------------------


class _DivergeAtEpoch(keras.callbacks.Callback):
    """Sets an absurd learning rate from `epoch` on: the run diverges to inf/NaN."""

    def __init__(self, epoch):
        super().__init__()
        self.diverge_epoch = epoch
        self.weights_at_end = {}

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.diverge_epoch:
            self.model.optimizer.learning_rate.assign(1e30)

    def on_epoch_end(self, epoch, logs=None):
        self.weights_at_end[epoch] = [w.copy() for w in self.model.student.get_weights()]


def test_terminate_on_nan_stops_a_diverging_distillation():
    x, labels = _data()
    distiller = _distiller(learning_rate=0.01)
    diverge = _DivergeAtEpoch(0)
    steps = []
    counter = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: steps.append(logs)
    )
    history = distiller.fit(
        x,
        labels,
        batch_size=BATCH_SIZE,
        epochs=10,
        shuffle=False,
        verbose=0,
        callbacks=[diverge, keras.callbacks.TerminateOnNaN(), counter],
    )
    assert distiller.stop_training
    assert len(history.epoch) == 1  # stopped in the first epoch, not after 10
    assert len(steps) < len(x) // BATCH_SIZE  # ... and within it, at the first bad batch
    last = steps[-1]["loss"]
    assert np.isnan(last) or np.isinf(last)
    assert all(np.isfinite(step["loss"]) for step in steps[:-1])


@pytest.mark.parametrize("monitor", ["loss", "val_loss"])
def test_save_best_only_never_keeps_a_nan_checkpoint(tmp_path, monitor):
    x, labels = _data()
    path = str(tmp_path / "best.keras")
    distiller = _distiller(learning_rate=0.01)
    diverge = _DivergeAtEpoch(2)
    history = distiller.fit(
        x,
        labels,
        batch_size=BATCH_SIZE,
        epochs=3,
        shuffle=False,
        verbose=0,
        validation_data=_data(16, seed=2),
        callbacks=[
            diverge,
            keras.callbacks.ModelCheckpoint(path, monitor=monitor, save_best_only=True),
        ],
    )
    logged = np.array(history.history[monitor])
    assert np.all(np.isfinite(logged[:2])) and not np.any(np.isfinite(logged[2:]))
    # The student is now NaN; the kept checkpoint is the best finite epoch.
    assert not np.all(np.isfinite(distiller.student.get_weights()[0]))
    best_epoch = int(np.argmin(logged[:2]))
    kept = keras.saving.load_model(path)
    for weight in kept.student.get_weights() + kept.teacher.get_weights():
        assert np.all(np.isfinite(weight))
    _assert_same_weights(kept.student.get_weights(), diverge.weights_at_end[best_epoch])


# ---------------------------------------------------------------------------
# Save mid-training, reload, resume
# ---------------------------------------------------------------------------


def test_reloaded_keras_file_resumes_with_its_optimizer_state(tmp_path, deterministic):
    x, labels = _data()
    fit = dict(batch_size=BATCH_SIZE, epochs=1, shuffle=False, verbose=0)
    original = _distiller()
    original.fit(x, labels, **fit)
    path = str(tmp_path / "mid_training.keras")
    original.save(path)

    reloaded = keras.saving.load_model(path)
    assert isinstance(reloaded, keras_kd.Distiller)
    assert int(reloaded.optimizer.iterations) == int(original.optimizer.iterations) == 6
    original_slots = {v.path: v.numpy() for v in original.optimizer.variables}
    reloaded_slots = [v.numpy() for v in reloaded.optimizer.variables]
    assert len(reloaded_slots) == len(original_slots) > 2  # iterations, lr, Adam moments
    _assert_same_weights(list(original_slots.values()), reloaded_slots)
    assert any(np.any(slot != 0) for slot in reloaded_slots[2:])  # moments were trained
    assert not reloaded.teacher.trainable

    original_history = original.fit(x, labels, **fit)
    reloaded_history = reloaded.fit(x, labels, **fit)
    assert reloaded_history.history == original_history.history
    _assert_same_weights(original.student.get_weights(), reloaded.student.get_weights())
