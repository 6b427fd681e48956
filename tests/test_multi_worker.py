"""keras_kd across processes: MultiWorkerMirroredStrategy and JAX's DataParallel.

Each run is a subprocess executing this file as a script (the `__main__` block at the
end), because a process's distribution setup (`TF_CONFIG`, the number of XLA host
devices) is fixed before TensorFlow or JAX starts.

- Two `MultiWorkerMirroredStrategy` workers on 127.0.0.1 each call plain
  `Distiller.fit` (with validation data) and `evaluate` on the same global batches as
  one process with no strategy; the student weights, every logged number of every
  epoch and every batch, and `evaluate`'s results agree within float tolerance, the
  `ExpectedCalibrationError` included (its sufficient statistics are summed across
  workers).
- Only the chief writes `ModelCheckpoint`'s, `CSVLogger`'s and `TensorBoard`'s files
  (each worker is given its own paths, so a write by the other would show), and the
  chief's CSV holds the global logs.
- Fault recovery through `fit` with a plain `keras.callbacks.BackupAndRestore` on a
  directory both workers share (the Distiller lets only the chief write it; every
  worker restores from it): worker 1 is killed (SIGKILL) after epoch 0's backup, the
  cluster restarted as a cluster manager would (TensorFlow's surviving worker would
  fail once its next collective times out; it is stopped at once), and `fit` resumes
  at epoch 1 and finishes with the weights and logs of the uninterrupted run.
- JAX: `keras.distribution.DataParallel` over 2 virtual CPU devices
  (`XLA_FLAGS=--xla_force_host_platform_device_count=2`) equals one device.

Keras 3 alone cannot run `fit` or `evaluate` under `MultiWorkerMirroredStrategy` on
several workers, for any model (keras-team/keras#20585); `keras_kd/_multi_worker.py`
says what the Distiller does instead.

Every subprocess has a hard timeout and only binds ports on 127.0.0.1.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

NUM_FEATURES = 6
NUM_CLASSES = 4
NUM_EXAMPLES = 64
GLOBAL_BATCH = 16
EPOCHS = 3
NUM_BINS = 5
_TIMEOUT_SECONDS = 150  # per subprocess: far above a normal run, bounded if one hangs
_RESULT = "result.json"

# Each test starts 2-5 TensorFlow processes (about 10-40 s on 2 CPUs): slow, still in CI.
pytestmark = pytest.mark.slow


# ---------------------------------------------------------------------------
# The subprocess
# ---------------------------------------------------------------------------


def _data(num_examples=NUM_EXAMPLES, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num_examples, NUM_FEATURES)).astype("float32")
    labels = rng.integers(0, NUM_CLASSES, size=num_examples).astype("int32")
    return x, labels


def _worker_main(output_dir, backup_dir, pause_marker):
    if os.environ.get("KERAS_BACKEND") == "jax":
        return _jax_main(output_dir)
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()
    import keras

    keras.config.disable_traceback_filtering()  # a failing worker's log shows the cause

    import keras_kd
    from keras_kd.metrics import ExpectedCalibrationError

    if "TF_CONFIG" in os.environ:
        strategy = tf.distribute.MultiWorkerMirroredStrategy(
            communication_options=tf.distribute.experimental.CommunicationOptions(
                # A collective waiting for a dead peer fails instead of hanging.
                timeout_seconds=30.0
            )
        )
        task = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    else:
        strategy, task = tf.distribute.get_strategy(), 0

    with strategy.scope():
        distiller = _distiller(keras, keras_kd, ExpectedCalibrationError)
    x, labels = _data()
    train = tf.data.Dataset.from_tensor_slices((x, labels)).batch(GLOBAL_BATCH)
    options = tf.data.Options()
    # Each worker takes its share of every global batch: the same examples per step.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    train = train.with_options(options)

    batch_logs = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            batch_logs.append({key: float(value) for key, value in logs.items()})

    class PauseAfterFirstEpoch(keras.callbacks.Callback):
        """Listed after `BackupAndRestore`: the chief's epoch-0 backup is written."""

        def on_epoch_end(self, epoch, logs=None):
            with open(f"{pause_marker}.{task}", "w") as file:
                file.write(str(epoch))
            time.sleep(60.0)  # the test kills the workers here

    callbacks = [Record()]
    if not backup_dir:
        # A path per task, to see which worker wrote: under the Distiller only the chief.
        callbacks += [
            keras.callbacks.ModelCheckpoint(
                os.path.join(output_dir, f"task{task}.weights.h5"), save_weights_only=True
            ),
            keras.callbacks.CSVLogger(os.path.join(output_dir, f"task{task}.csv")),
            keras.callbacks.TensorBoard(os.path.join(output_dir, f"task{task}_tensorboard")),
        ]
    if backup_dir:
        # The plain Keras callback: keras_kd lets only the chief write the backup.
        callbacks.insert(0, keras.callbacks.BackupAndRestore(backup_dir))
    if pause_marker:
        callbacks.append(PauseAfterFirstEpoch())
    # The fault-recovery runs skip validation and `evaluate` (the other runs cover them).
    validation = None if backup_dir else train
    history = distiller.fit(
        train, epochs=EPOCHS, validation_data=validation, callbacks=callbacks, verbose=0
    )
    evaluation = {} if backup_dir else distiller.evaluate(train, verbose=0, return_dict=True)
    result = {
        "task": task,
        "epochs": history.epoch,
        "logs": {key: [float(v) for v in values] for key, values in history.history.items()},
        "batch_logs": batch_logs,
        "evaluate": {key: float(value) for key, value in evaluation.items()},
        "student": [w.tolist() for w in distiller.student.get_weights()],
    }
    with open(os.path.join(output_dir, f"task{task}-{_RESULT}"), "w") as file:
        json.dump(result, file)


def _distiller(keras, keras_kd, ExpectedCalibrationError):
    keras.utils.set_random_seed(1)
    teacher = keras.Sequential([keras.Input((NUM_FEATURES,)), keras.layers.Dense(NUM_CLASSES)])
    keras.utils.set_random_seed(3)
    student = keras.Sequential(
        [
            keras.Input((NUM_FEATURES,)),
            keras.layers.Dense(8, activation="tanh"),
            keras.layers.Dense(NUM_CLASSES),
        ]
    )
    distiller = keras_kd.Distiller(teacher, student, temperature=4.0, alpha=0.7)
    distiller.compile(
        optimizer=keras.optimizers.SGD(0.5),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[ExpectedCalibrationError(num_bins=NUM_BINS, from_logits=True)],
    )
    return distiller


def _jax_main(output_dir):
    import keras

    import keras_kd

    devices = keras.distribution.list_devices("cpu")
    if os.environ.get("KERAS_KD_DATA_PARALLEL") == "1":
        assert len(devices) == 2, devices
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    from keras_kd.metrics import ExpectedCalibrationError

    distiller = _distiller(keras, keras_kd, ExpectedCalibrationError)
    x, labels = _data()
    history = distiller.fit(
        x, labels, batch_size=GLOBAL_BATCH, epochs=EPOCHS, shuffle=False, verbose=0
    )
    result = {
        "devices": len(devices),
        "logs": {key: [float(v) for v in values] for key, values in history.history.items()},
        "student": [np.asarray(w).tolist() for w in distiller.student.get_weights()],
    }
    with open(os.path.join(output_dir, f"task0-{_RESULT}"), "w") as file:
        json.dump(result, file)


# ---------------------------------------------------------------------------
# Helpers of the tests
# ---------------------------------------------------------------------------


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def _start(output_dir, task=None, ports=None, backup_dir="", pause_marker="", env=None):
    environment = {
        **os.environ,
        "KERAS_BACKEND": "tensorflow",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "CUDA_VISIBLE_DEVICES": "",
        "PYTHONPATH": os.pathsep.join(
            filter(None, [os.path.dirname(os.path.dirname(__file__)), os.environ.get("PYTHONPATH")])
        ),
        **(env or {}),
    }
    environment.pop("TF_CONFIG", None)
    if task is not None:
        environment["TF_CONFIG"] = json.dumps(
            {
                "cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
                "task": {"type": "worker", "index": task},
            }
        )
    log = open(os.path.join(output_dir, f"task{task or 0}.log"), "ab")
    return subprocess.Popen(
        [sys.executable, __file__, output_dir, backup_dir, pause_marker],
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _wait(processes, output_dir, timeout=_TIMEOUT_SECONDS):
    """Waits for all `processes`, killing all of them at the deadline; returns the codes."""
    deadline = time.monotonic() + timeout
    codes = []
    try:
        for process in processes:
            codes.append(process.wait(timeout=max(deadline - time.monotonic(), 1)))
    except subprocess.TimeoutExpired:
        _kill(processes)
        pytest.fail(f"a worker ran past {timeout} s; logs in {output_dir}: {_logs(output_dir)}")
    return codes


def _kill(processes):
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def _logs(output_dir):
    tails = []
    for name in sorted(os.listdir(output_dir)):
        if name.endswith(".log"):
            with open(os.path.join(output_dir, name), "rb") as file:
                tails.append(f"--- {name}\n" + file.read()[-2500:].decode(errors="replace"))
    return "\n".join(tails)


def _result(output_dir, task=0):
    with open(os.path.join(output_dir, f"task{task}-{_RESULT}")) as file:
        result = json.load(file)
    result["output_dir"] = output_dir  # where its other files are
    return result


def _assert_same_training(result, reference, atol=1e-5):
    for got, expected in zip(result["student"], reference["student"]):
        np.testing.assert_allclose(got, expected, atol=atol, rtol=0)
    assert set(result["logs"]) == set(reference["logs"])
    for key, values in reference["logs"].items():
        np.testing.assert_allclose(result["logs"][key], values, atol=atol, rtol=1e-5, err_msg=key)


@pytest.fixture(scope="module")
def single_process(tmp_path_factory):
    """The reference: one process, no strategy, same global batches."""
    output_dir = str(tmp_path_factory.mktemp("single"))
    codes = _wait([_start(output_dir)], output_dir)
    assert codes == [0], _logs(output_dir)
    return _result(output_dir)


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    """Both workers' results of the same `fit` and `evaluate` calls."""
    output_dir = str(tmp_path_factory.mktemp("two_workers"))
    ports = _free_ports(2)
    workers = [_start(output_dir, task, ports) for task in range(2)]
    assert _wait(workers, output_dir) == [0, 0], _logs(output_dir)
    return [_result(output_dir, task) for task in range(2)]


# ---------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------


def test_two_workers_fit_like_one_process(single_process, two_workers):
    # The students moved, and both workers hold the one-process weights and logs,
    # validation and ECE included (per-worker ECE would differ: each sees half of every
    # batch), at every epoch's end and after every batch.
    assert single_process["logs"]["ece"][0] > 0
    assert "val_ece" in single_process["logs"]
    assert np.abs(np.ravel(single_process["student"][0])).max() > 0
    assert len(single_process["batch_logs"]) == EPOCHS * NUM_EXAMPLES // GLOBAL_BATCH
    for result in two_workers:
        assert result["epochs"] == list(range(EPOCHS))
        _assert_same_training(result, single_process)
        assert len(result["batch_logs"]) == len(single_process["batch_logs"])
        for got, expected in zip(result["batch_logs"], single_process["batch_logs"]):
            assert set(got) == set(expected)
            for key, value in expected.items():
                np.testing.assert_allclose(got[key], value, atol=1e-5, rtol=1e-5, err_msg=key)


def test_two_workers_evaluate_like_one_process(single_process, two_workers):
    expected = single_process["evaluate"]
    assert set(expected) == {"loss", "ece"} and expected["ece"] > 0
    for result in two_workers:
        assert set(result["evaluate"]) == set(expected)
        for key, value in expected.items():
            np.testing.assert_allclose(result["evaluate"][key], value, atol=1e-5, err_msg=key)


def test_killed_worker_restarted_with_backup_and_restore_finishes_like_an_uninterrupted_run(
    tmp_path, single_process
):
    output_dir, backup_dir = str(tmp_path / "out"), str(tmp_path / "backup")
    os.makedirs(output_dir)
    marker = str(tmp_path / "epoch_done")
    ports = _free_ports(2)
    workers = [_start(output_dir, task, ports, backup_dir, marker) for task in range(2)]

    # Both workers pause after epoch 0, the chief having backed it up.
    deadline = time.monotonic() + _TIMEOUT_SECONDS
    while not all(os.path.exists(f"{marker}.{task}") for task in range(2)):
        if time.monotonic() > deadline or any(w.poll() is not None for w in workers):
            _kill(workers)
            pytest.fail(f"no epoch finished before the kill: {_logs(output_dir)}")
        time.sleep(0.1)
    workers[1].send_signal(signal.SIGKILL)  # the fault
    workers[1].wait(timeout=30)
    # The survivor would fail once its next collective times out; a cluster manager
    # restarts every worker. Stopping it now saves the wait.
    _kill(workers[:1])
    assert not os.path.exists(os.path.join(output_dir, f"task0-{_RESULT}"))  # unfinished

    ports = _free_ports(2)
    restarted = [_start(output_dir, task, ports, backup_dir) for task in range(2)]
    assert _wait(restarted, output_dir) == [0, 0], _logs(output_dir)
    for task in range(2):
        result = _result(output_dir, task)
        assert result["epochs"] == list(range(1, EPOCHS))  # resumed after epoch 0
        for got, expected in zip(result["student"], single_process["student"]):
            np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
        assert set(result["logs"]) == {k for k in single_process["logs"] if "val_" not in k}
        for key, values in result["logs"].items():
            # The resumed run logs epochs 1 and 2.
            expected = single_process["logs"][key][1:]
            np.testing.assert_allclose(values, expected, atol=1e-5, err_msg=key)
    assert not os.path.exists(backup_dir)  # the chief deleted the finished run's backup


def _csv_logs(path):
    with open(path) as file:
        header, *rows = [line.strip().split(",") for line in file if line.strip()]
    return {key: [float(row[i]) for row in rows] for i, key in enumerate(header) if key != "epoch"}


def _event_files(log_dir):
    """The TensorBoard event files written under `log_dir` (its train/ and validation/)."""
    return [
        name
        for _, _, names in os.walk(log_dir)
        for name in names
        if name.startswith("events.out.tfevents")
    ]


def test_only_the_chief_writes_checkpoints_csv_and_tensorboard_logs(
    single_process, two_workers
):
    single_dir, workers_dir = single_process["output_dir"], two_workers[0]["output_dir"]
    # Each worker was given its own paths, so a write by worker 1 would show.
    for name in ("task0.weights.h5", "task0.csv"):
        assert os.path.getsize(os.path.join(single_dir, name)) > 0
        assert os.path.getsize(os.path.join(workers_dir, name)) > 0
    for directory in (single_dir, workers_dir):
        assert _event_files(os.path.join(directory, "task0_tensorboard"))
    for name in ("task1.weights.h5", "task1.csv", "task1_tensorboard"):
        assert not os.path.exists(os.path.join(workers_dir, name))
    # The chief's CSV holds the global logs, as one process writes them and `fit` returns.
    expected = _csv_logs(os.path.join(single_dir, "task0.csv"))
    got = _csv_logs(os.path.join(workers_dir, "task0.csv"))
    assert set(got) == set(expected) == set(single_process["logs"])
    for key, values in expected.items():
        np.testing.assert_allclose(values, single_process["logs"][key], rtol=1e-6, err_msg=key)
        np.testing.assert_allclose(got[key], values, atol=1e-5, rtol=1e-5, err_msg=key)


def test_jax_data_parallel_on_two_devices_equals_one_device(tmp_path):
    pytest.importorskip("jax")
    results = {}
    for parallel in ("0", "1"):
        output_dir = str(tmp_path / f"parallel{parallel}")
        os.makedirs(output_dir)
        env = {
            "KERAS_BACKEND": "jax",
            "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
            "KERAS_KD_DATA_PARALLEL": parallel,
            "JAX_PLATFORMS": "cpu",
        }
        process = _start(output_dir, env=env)
        assert _wait([process], output_dir) == [0], _logs(output_dir)
        results[parallel] = _result(output_dir)
    assert results["1"]["devices"] == 2
    assert results["0"]["logs"]["ece"][0] > 0
    _assert_same_training(results["1"], results["0"])
    # ModelParallel (sharding one model's weights) belongs to the language-model issue.


if __name__ == "__main__":
    _worker_main(*sys.argv[1:4])
