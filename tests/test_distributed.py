"""keras_kd under `tf.distribute.MirroredStrategy`: 2 replicas train like 1.

TensorFlow's CPU is split into 2 logical devices, which must happen before TensorFlow
initialises its devices; the other test modules have done that long before this one
runs, so the training happens in a subprocess: this file run as a script (the
`__main__` block at the end) trains every scenario once on the default strategy (one
device) and once on `MirroredStrategy` over 2 logical CPUs, with the same global batch
and the same initial weights, and prints the logs and weights as JSON.

The tests compare the two, and check the one-step numbers against an independent
NumPy computation of the loss, its gradient and the ECE, so that a loss scaled
wrongly on both (e.g. a plain batch mean summed over replicas, which doubles the
gradient on 2 replicas) cannot pass.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from _numpy_reference import log_softmax as _np_log_softmax

NUM_FEATURES = 6
NUM_CLASSES = 4
TEMPERATURE = 4.0
ALPHA = 0.7
LEARNING_RATE = 0.5
NUM_BINS = 5
_RESULT_MARKER = "KERAS_KD_DISTRIBUTED_RESULT "

# One subprocess trains every scenario twice (about 25 s of CPU): slow, still in CI.
pytestmark = pytest.mark.slow


def _data(num_examples=64, seed=0):
    """Inputs, integer labels, sample weights and teacher logits, float32."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num_examples, NUM_FEATURES)).astype("float32")
    labels = rng.integers(0, NUM_CLASSES, size=num_examples).astype("int32")
    weights = rng.uniform(0.2, 2.0, size=num_examples).astype("float32")
    teacher_logits = (3.0 * rng.normal(size=(num_examples, NUM_CLASSES))).astype("float32")
    return x, labels, weights, teacher_logits


# ---------------------------------------------------------------------------
# The subprocess: scenarios run on 1 and on 2 replicas
# ---------------------------------------------------------------------------


def _worker_main():
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )
    import keras

    import keras_kd
    from keras_kd.distiller import LABELS
    from keras_kd.distiller import TEACHER_LOGITS
    from keras_kd.metrics import ExpectedCalibrationError

    # One MirroredStrategy for every run: a second instance in the same process reuses
    # collective instance keys and can pair one replica's all-reduce with the other's
    # from an earlier model (a TensorFlow limitation, not keras_kd's).
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])

    def strategy_for(num_replicas):
        if num_replicas == 1:
            return tf.distribute.get_strategy()  # the default: no tf.distribute at all
        return mirrored

    def linear(seed, name):
        keras.utils.set_random_seed(seed)
        return keras.Sequential(
            [keras.Input((NUM_FEATURES,)), keras.layers.Dense(NUM_CLASSES)], name=name
        )

    def mlp(seed, name):
        keras.utils.set_random_seed(seed)
        return keras.Sequential(
            [
                keras.Input((NUM_FEATURES,)),
                keras.layers.Dense(8, activation="tanh"),
                keras.layers.Dense(NUM_CLASSES),
            ],
            name=name,
        )

    def weights_of(model):
        return [w.tolist() for w in model.get_weights()]

    def last(history):
        return {key: float(values[-1]) for key, values in history.history.items()}

    def distiller_run(num_replicas, teacher_kind, hard_loss, cached, epochs, batch_size, n):
        x, labels, weights, cached_logits = _data(n)
        x_val, labels_val, _, _ = _data(32, seed=1)
        with strategy_for(num_replicas).scope():
            if teacher_kind == "ensemble":
                teacher = [mlp(1, "t1"), mlp(2, "t2")]
            else:
                teacher = linear(1, "teacher") if teacher_kind == "linear" else mlp(1, "teacher")
            student = linear(3, "student") if teacher_kind == "linear" else mlp(3, "student")
            initial = weights_of(student)
            distiller = keras_kd.Distiller(teacher, student, temperature=TEMPERATURE, alpha=ALPHA)
            distiller.compile(
                optimizer=keras.optimizers.SGD(LEARNING_RATE),
                loss=hard_loss(),
                metrics=[ExpectedCalibrationError(num_bins=NUM_BINS, from_logits=True)],
            )
        y = {LABELS: labels, TEACHER_LOGITS: cached_logits} if cached else labels
        history = distiller.fit(
            x,
            y,
            sample_weight=weights,
            batch_size=batch_size,
            epochs=epochs,
            shuffle=False,
            validation_data=(x_val, labels_val),
            verbose=0,
        )
        evaluated = distiller.evaluate(
            x, labels, sample_weight=weights, batch_size=batch_size, verbose=0, return_dict=True
        )
        return {
            "fit": last(history),
            "evaluate": {key: float(value) for key, value in evaluated.items()},
            "initial": initial,
            "student": weights_of(student),
        }

    def losses_run(num_replicas):
        # Every keras_kd loss on its own head of one model: one compiled step serves
        # all five, and Keras logs each head's loss as `<head>_loss`.
        x, labels, weights, teacher_logits = _data()
        heads = {
            "distillation": (keras_kd.DistillationLoss(TEMPERATURE), teacher_logits),
            "logit_matching": (keras_kd.LogitMatchingLoss(), teacher_logits),
            "label_smoothing": (keras_kd.LabelSmoothingLoss(0.1, from_logits=True), labels),
            "virtual_paper": (keras_kd.VirtualTeacherLoss(0.9, 20.0, 0.5, "paper"), labels),
            "virtual_reference": (
                keras_kd.VirtualTeacherLoss(0.9, 20.0, 0.5, "reference", 10.0),
                labels,
            ),
        }
        with strategy_for(num_replicas).scope():
            keras.utils.set_random_seed(5)
            inputs = keras.Input((NUM_FEATURES,))
            hidden = keras.layers.Dense(8, activation="tanh")(inputs)
            outputs = {name: keras.layers.Dense(NUM_CLASSES, name=name)(hidden) for name in heads}
            model = keras.Model(inputs, outputs)
            model.compile(
                optimizer=keras.optimizers.SGD(LEARNING_RATE),
                loss={name: loss for name, (loss, _) in heads.items()},
            )
        targets = {name: target for name, (_, target) in heads.items()}
        history = model.fit(
            x, targets, sample_weight=weights, batch_size=16, epochs=1, shuffle=False, verbose=0
        )
        return {"fit": last(history), "weights": weights_of(model)}

    scenarios = {
        # One step on the whole batch: checked against NumPy as well as 1 vs 2.
        "one_step": lambda r: distiller_run(
            r, "linear", _sparse_ce, cached=True, epochs=1, batch_size=16, n=16
        ),
        # A live ensemble teacher, a keras_kd hard loss, 2 epochs with validation.
        "distiller": lambda r: distiller_run(
            r,
            "ensemble",
            lambda: keras_kd.LabelSmoothingLoss(0.1, from_logits=True),
            cached=False,
            epochs=2,
            batch_size=16,
            n=64,
        ),
        "losses": losses_run,
    }
    results = {
        name: {str(r): run(r) for r in (1, 2)} for name, run in scenarios.items()
    }
    results["num_replicas_in_sync"] = strategy_for(2).num_replicas_in_sync
    print(_RESULT_MARKER + json.dumps(results), flush=True)


def _sparse_ce():
    import keras

    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


# ---------------------------------------------------------------------------
# The tests
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def results():
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    repository = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [repository, env.get("PYTHONPATH")]))
    completed = subprocess.run(
        [sys.executable, os.path.abspath(__file__)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith(_RESULT_MARKER)]
    assert completed.returncode == 0 and lines, completed.stderr[-4000:]
    return json.loads(lines[-1][len(_RESULT_MARKER):])


def _assert_same_weights(a, b, atol=1e-5):
    assert len(a) == len(b)
    for left, right in zip(a, b):
        np.testing.assert_allclose(np.asarray(left), np.asarray(right), rtol=1e-5, atol=atol)


def _assert_same_logs(a, b, keys):
    for key in keys:
        assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), key


def test_the_subprocess_really_ran_two_replicas(results):
    assert results["num_replicas_in_sync"] == 2


@pytest.mark.parametrize("scenario", ["one_step", "distiller"])
def test_distiller_on_two_replicas_equals_one(results, scenario):
    one, two = results[scenario]["1"], results[scenario]["2"]
    _assert_same_weights(one["initial"], two["initial"], atol=0)
    _assert_same_weights(one["student"], two["student"])
    logged = ["loss", "student_loss", "distillation_loss", "ece", "val_loss", "val_ece"]
    assert set(logged) <= set(one["fit"])
    _assert_same_logs(one["fit"], two["fit"], logged)
    # evaluate() reports the student's loss and metrics, read across replicas.
    assert set(one["evaluate"]) == {"loss", "ece"}
    _assert_same_logs(one["evaluate"], two["evaluate"], ["loss", "ece"])
    # The run trained: a test that compares two untouched models would prove nothing.
    assert not np.allclose(np.asarray(one["initial"][0]), np.asarray(one["student"][0]))


@pytest.mark.parametrize(
    "head",
    ["distillation", "logit_matching", "label_smoothing", "virtual_paper", "virtual_reference"],
)
def test_every_loss_on_two_replicas_equals_one(results, head):
    one, two = results["losses"]["1"], results["losses"]["2"]
    assert f"{head}_loss" in one["fit"]
    _assert_same_logs(one["fit"], two["fit"], ["loss", f"{head}_loss"])


def test_the_multi_loss_model_trains_the_same_on_two_replicas(results):
    _assert_same_weights(results["losses"]["1"]["weights"], results["losses"]["2"]["weights"])


def test_one_step_matches_numpy_on_both_strategies(results, reference_calibration_error):
    """Loss terms, ECE and the SGD update of a linear student, from the formulas."""
    x, labels, weights, teacher_logits = _data(16)
    x, weights = x.astype(np.float64), weights.astype(np.float64)
    kernel, bias = (np.asarray(w, np.float64) for w in results["one_step"]["1"]["initial"])
    logits = x @ kernel + bias
    n, one_hot = len(x), np.eye(NUM_CLASSES)[labels]

    log_p = _np_log_softmax(logits)
    log_pt_t, log_ps_t = _np_log_softmax(teacher_logits / TEMPERATURE), _np_log_softmax(
        logits / TEMPERATURE
    )
    hard = -(one_hot * log_p).sum(axis=1)
    soft = TEMPERATURE**2 * (np.exp(log_pt_t) * (log_pt_t - log_ps_t)).sum(axis=1)
    # Keras' "sum_over_batch_size": sum of weighted losses over the number of examples.
    hard_loss, soft_loss = (weights * hard).sum() / n, (weights * soft).sum() / n
    total = (1 - ALPHA) * hard_loss + ALPHA * soft_loss

    d_logits = (
        (1 - ALPHA) * (np.exp(log_p) - one_hot)
        + ALPHA * TEMPERATURE * (np.exp(log_ps_t) - np.exp(log_pt_t))
    ) * weights[:, None] / n
    expected_kernel = kernel - LEARNING_RATE * x.T @ d_logits
    expected_bias = bias - LEARNING_RATE * d_logits.sum(axis=0)
    # compile(metrics=...) are unweighted in Keras (weighted_metrics= take the weights).
    ece = reference_calibration_error(np.exp(log_p), labels, NUM_BINS)

    for replicas in ("1", "2"):
        run = results["one_step"][replicas]
        assert run["fit"]["student_loss"] == pytest.approx(hard_loss, rel=1e-5)
        assert run["fit"]["distillation_loss"] == pytest.approx(soft_loss, rel=1e-5)
        assert run["fit"]["loss"] == pytest.approx(total, rel=1e-5)
        assert run["fit"]["ece"] == pytest.approx(ece, abs=1e-5)
        np.testing.assert_allclose(run["student"][0], expected_kernel, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(run["student"][1], expected_bias, rtol=1e-4, atol=1e-6)


def test_evaluate_and_validation_ece_match_numpy_on_the_final_student(
    results, reference_calibration_error
):
    x, labels, _, _ = _data(64)
    x_val, labels_val, _, _ = _data(32, seed=1)
    for replicas in ("1", "2"):
        run = results["distiller"][replicas]
        kernel_1, bias_1, kernel_2, bias_2 = (np.asarray(w, np.float64) for w in run["student"])

        def probabilities(inputs):
            logits = np.tanh(inputs @ kernel_1 + bias_1) @ kernel_2 + bias_2
            return np.exp(_np_log_softmax(logits))

        expected = reference_calibration_error(probabilities(x), labels, NUM_BINS)
        assert run["evaluate"]["ece"] == pytest.approx(expected, abs=1e-5)
        expected_val = reference_calibration_error(probabilities(x_val), labels_val, NUM_BINS)
        assert run["fit"]["val_ece"] == pytest.approx(expected_val, abs=1e-5)


if __name__ == "__main__":
    _worker_main()
