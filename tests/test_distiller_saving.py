"""A saved Distiller holds what it needs to resume, not the teacher's stale optimizer."""

import io
import logging
import warnings
import zipfile

import h5py
import keras
import numpy as np
from test_distiller import X
from test_distiller import Y
from test_distiller import make_mlp
from test_distiller import predict
from test_distiller import sparse_logits_loss

from keras_kd import Distiller


def saved_weight_paths(path):
    with zipfile.ZipFile(path) as archive, archive.open("model.weights.h5") as file:
        weights = h5py.File(io.BytesIO(file.read()), "r")
        paths = []
        weights.visititems(
            lambda name, item: paths.append(name) if isinstance(item, h5py.Dataset) else None
        )
        return paths, archive.getinfo("model.weights.h5").file_size


def test_a_trained_teachers_adam_state_is_not_saved_and_reload_is_quiet(tmp_path, caplog):
    teacher = make_mlp(1, hidden=256, name="teacher")
    teacher.compile(optimizer="adam", loss=sparse_logits_loss())
    teacher.fit(X, Y, epochs=1, verbose=0)
    teacher_optimizer = teacher.optimizer
    distiller = Distiller(teacher, make_mlp(2, name="student"), temperature=3.0, alpha=0.7)
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2), loss=sparse_logits_loss())
    distiller.fit(X, Y, batch_size=16, epochs=1, verbose=0)
    path = tmp_path / "distiller.keras"
    distiller.save(path)
    assert teacher.optimizer is teacher_optimizer  # detached only while saving

    paths, size = saved_weight_paths(path)
    optimizer_paths = [p for p in paths if "optimizer" in p]
    # Only the Distiller's own Adam: iterations, learning rate, 2 moments x 4 student weights.
    assert all(p.startswith("optimizer/") for p in optimizer_paths), optimizer_paths
    assert len(optimizer_paths) == 2 + 2 * len(distiller.student.trainable_weights)
    # The same file as for a teacher that was never compiled.
    twin = Distiller(make_mlp(1, hidden=256, name="teacher"), make_mlp(2, name="student"))
    twin.compile(optimizer=keras.optimizers.Adam(1e-2), loss=sparse_logits_loss())
    twin.fit(X, Y, batch_size=16, epochs=1, verbose=0)
    twin.save(tmp_path / "twin.keras")
    assert size <= 1.02 * saved_weight_paths(tmp_path / "twin.keras")[1]

    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        loaded = keras.models.load_model(path)
    assert [str(w.message) for w in caught] == []
    # TensorFlow's retracing notice counts tf.functions made by earlier tests too: not
    # about this reload.
    assert [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and "tf.function retracing" not in r.getMessage()
    ] == []
    np.testing.assert_array_equal(predict(loaded, X), predict(distiller, X))
    assert int(loaded.optimizer.iterations) == int(distiller.optimizer.iterations)

    weights_path = tmp_path / "distiller.weights.h5"
    distiller.save_weights(weights_path)
    with h5py.File(weights_path, "r") as weights:
        names = []
        weights.visititems(lambda name, item: names.append(name))
    assert [n for n in names if "optimizer" in n and not n.startswith("optimizer")] == []
    assert teacher.optimizer is teacher_optimizer


def test_a_file_without_the_hyperparameter_variables_still_loads(tmp_path):
    """keras_kd 0.1.0 saved no Distiller variables of its own; its files still load."""
    distiller = Distiller(make_mlp(1), make_mlp(2), temperature=3.0, alpha=0.7)
    distiller.compile(optimizer="adam", loss=sparse_logits_loss())
    distiller.fit(X, Y, verbose=0)
    path, old_path = tmp_path / "new.keras", tmp_path / "old.keras"
    distiller.save(path)
    with zipfile.ZipFile(path) as archive:
        contents = {name: archive.read(name) for name in archive.namelist()}
    weights_file = tmp_path / "weights.h5"
    weights_file.write_bytes(contents["model.weights.h5"])
    with h5py.File(weights_file, "r+") as weights:
        assert len(weights["vars"]) == 3  # temperature, alpha, the term's weight
        for name in list(weights["vars"]):
            del weights["vars"][name]
    contents["model.weights.h5"] = weights_file.read_bytes()
    with zipfile.ZipFile(old_path, "w") as archive:
        for name, data in contents.items():
            archive.writestr(name, data)
    loaded = keras.models.load_model(old_path)
    assert (loaded.temperature, loaded.alpha) == (3.0, 0.7)
    np.testing.assert_allclose(float(loaded._temperature_variable.value), 3.0)
    np.testing.assert_array_equal(predict(loaded, X), predict(distiller, X))
