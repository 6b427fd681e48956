"""A teacher too large for one device: its weights sharded by
`keras.distribution.ModelParallel` on 8 virtual CPU devices (JAX), the student trained
by the Distiller, with the same losses as on one device.

JAX fixes its device count at start-up, so the training happens in a subprocess (this
file run as a script) with `XLA_FLAGS=--xla_force_host_platform_device_count=8` and
`KERAS_BACKEND=jax`; the test compares its report.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# One subprocess importing JAX and compiling two fits: about 20 s of 2 busy cores.
pytestmark = pytest.mark.slow

NUM_DEVICES = 8
SUBPROCESS_TIMEOUT_S = 600


def _train(distributed):
    """Distils a 2-layer teacher into a student for 3 steps; returns the per-step logs."""
    import keras
    import numpy as np

    import keras_kd

    if distributed:
        devices = keras.distribution.list_devices("cpu")
        mesh = keras.distribution.DeviceMesh((2, 4), ["batch", "model"], devices)
        layout_map = keras.distribution.LayoutMap(mesh)
        # Megatron-style: the first kernel split by columns, the second by rows. Keras
        # matches the patterns against whole variable paths ("sequential/teacher_hidden/kernel").
        layout_map[".*teacher_hidden/kernel"] = (None, "model")
        layout_map[".*teacher_hidden/bias"] = ("model",)
        layout_map[".*teacher_logits/kernel"] = ("model", None)
        keras.distribution.set_distribution(
            keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch")
        )
    keras.utils.set_random_seed(0)
    teacher = keras.Sequential(
        [
            keras.Input((12,)),
            keras.layers.Dense(64, activation="relu", name="teacher_hidden"),
            keras.layers.Dense(10, name="teacher_logits"),
        ]
    )
    student = keras.Sequential([keras.Input((12,)), keras.layers.Dense(10, name="student")])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 12)).astype("float32")
    y = rng.integers(0, 10, size=32).astype("int32")
    distiller = keras_kd.Distiller(teacher, student, temperature=2.0, alpha=0.7)
    distiller.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    teacher_before = [np.asarray(w) for w in teacher.get_weights()]
    history = distiller.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)
    # A NamedSharding's PartitionSpec, e.g. "PartitionSpec(None, 'model')"; "None" on one device.
    shardings = {
        w.path.split("/", 1)[-1]: str(getattr(w.value.sharding, "spec", None))
        for w in teacher.weights
    }
    unchanged = all(
        np.array_equal(a, np.asarray(b)) for a, b in zip(teacher_before, teacher.get_weights())
    )
    keras.distribution.set_distribution(None)
    return {
        "history": history.history,
        "shardings": shardings,
        "teacher_unchanged": unchanged,
        "num_devices": len(keras.distribution.list_devices("cpu")),
    }


def test_distiller_trains_with_a_model_parallel_teacher(tmp_path):
    if importlib.util.find_spec("jax") is None:
        pytest.skip("the jax package is not installed (pip install '.[test]' installs it)")
    output = tmp_path / "report.json"
    environment = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={NUM_DEVICES}",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]
        ),
    }
    completed = subprocess.run(
        [sys.executable, __file__, str(output)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    report = json.loads(output.read_text())
    single, sharded = report["single_device"], report["model_parallel"]
    assert sharded["num_devices"] == NUM_DEVICES
    # The teacher's weights really were split over the "model" axis.
    assert "model" in sharded["shardings"]["teacher_hidden/kernel"], sharded["shardings"]
    assert "model" in sharded["shardings"]["teacher_logits/kernel"], sharded["shardings"]
    assert sharded["teacher_unchanged"] and single["teacher_unchanged"]
    for key in ("loss", "student_loss", "distillation_loss"):
        for one, many in zip(single["history"][key], sharded["history"][key]):
            assert abs(one - many) <= 1e-5 * max(1.0, abs(one)), (key, single, sharded)


if __name__ == "__main__":
    report = {
        "single_device": _train(distributed=False),
        "model_parallel": _train(distributed=True),
    }
    Path(sys.argv[1]).write_text(json.dumps(report))
