"""Every script in examples/ runs offline in its --quick mode, and what it reports holds."""

import importlib.util
import math
import pathlib

import numpy as np
import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(autouse=True)
def _examples_on_path(monkeypatch):
    # The examples import their shared `_digits` helper as a sibling module, as
    # `python examples/<name>.py` allows.
    monkeypatch.syspath_prepend(str(EXAMPLES))


def run_example(name, *argv):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(["--quick", *argv])


def test_every_example_is_tested():
    scripts = {path.stem for path in EXAMPLES.glob("*.py") if not path.stem.startswith("_")}
    tested = {name[len("test_"):] for name in globals() if name.startswith("test_")}
    assert scripts <= tested, scripts - tested


def test_distil_mnist():
    results = run_example("distil_mnist")
    for key in ("teacher_accuracy", "student_accuracy"):
        assert 0.0 <= results[key] <= 1.0


def test_label_smoothing():
    results = run_example("label_smoothing")
    assert set(results) == {0.0, 0.1}
    for logs in results.values():
        assert 0.0 <= logs["accuracy"] <= 1.0
        assert 0.0 <= logs["ece"] <= 1.0
        assert math.isfinite(logs["loss"])
    # With eps = 0.1 the loss has the floor H(q') > 0 that eps = 0 does not:
    # H(q') = -(0.9 + 0.01) log(0.91) - 9 * 0.01 log(0.01) = 0.5003 for K = 10.
    floor = -(0.91 * np.log(0.91) + 9 * 0.01 * np.log(0.01))
    assert results[0.1]["loss"] > floor


def test_teacher_free():
    results = run_example("teacher_free")
    assert set(results) == {"cross-entropy", "virtual teacher"}
    assert all(0.0 <= accuracy <= 1.0 for accuracy in results.values())


def test_custom_term():
    results = run_example("custom_term")
    history = results["history"]
    # Each term is logged by its name, with finite values; the cosine term lies in [0, 1].
    for key in ("loss", "student_loss", "decoupled_distillation_loss", "cosine_term"):
        assert len(history[key]) == 2 and all(math.isfinite(v) for v in history[key]), key
    assert all(0.0 <= value <= 1.0 for value in history["cosine_term"])
    assert 0.0 <= results["accuracy"] <= 1.0
    # The warm-up (over max(1, 2 // 3) = 1 epoch) has reached DKD's full weight.
    assert results["term_weights"] == {"decoupled_distillation_loss": 1.0, "cosine_term": 2.0}


def test_ece_early_stopping():
    history = run_example("ece_early_stopping")
    assert 1 <= len(history["val_ece"]) <= 3
    for key in ("val_ece", "val_mce", "val_nll", "val_brier", "val_ece_ts"):
        assert all(math.isfinite(value) for value in history[key]), key
    assert all(0.0 <= value <= 1.0 for value in history["val_ece"])
    assert all(value > 0.0 for value in history["val_temperature"])


def test_temperature_scaling(tmp_path):
    path = tmp_path / "calibrated.keras"
    results = run_example("temperature_scaling", "--save", str(path))
    logits = np.asarray(results["test_logits"], dtype=np.float64)
    temperature = results["temperature"]
    assert temperature > 0.0
    # softmax(z / T) by hand.
    scaled = logits / temperature
    expected = np.exp(scaled - scaled.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(results["calibrated_probs"], expected, atol=1e-6)
    np.testing.assert_allclose(results["wrapped_probs"], expected, atol=1e-5)
    # Scaling keeps the argmax, hence the accuracy.
    np.testing.assert_array_equal(expected.argmax(1), logits.argmax(1))
    # ECE after scaling, by explicit bins ([lo, hi), the last closed; 15 bins).
    confidence, correct = expected.max(1), expected.argmax(1) == results["y_test"]
    bins = np.minimum((confidence * 15).astype(int), 14)
    ece = sum(
        abs(correct[bins == b].mean() - confidence[bins == b].mean()) * np.mean(bins == b)
        for b in range(15) if np.any(bins == b)
    )
    assert results["ece_after"] == pytest.approx(ece, abs=1e-6)
    # The saved model loads (with keras_kd imported) and predicts the same.
    import keras

    reloaded = keras.models.load_model(path)
    x_test = _digits_test_images()
    np.testing.assert_allclose(reloaded.predict(x_test, verbose=0), expected, atol=1e-5)


def _digits_test_images():
    from _digits import digits_splits  # on the path through _examples_on_path

    return digits_splits()[2][0]


def test_distil_binary():
    results = run_example("distil_binary")
    assert set(results) == {"binary", "multi-label"}
    for result in results.values():
        soft = result["distillation_loss"]
        assert all(math.isfinite(value) for value in soft)
        # The Bernoulli soft term falls as the student learns the teacher's targets.
        assert soft[-1] < soft[0]
        for key in ("distilled_agreement", "labels_only_agreement", "teacher_accuracy"):
            assert 0.0 <= result[key] <= 1.0


@pytest.mark.slow  # two KerasHub teachers and three students: about a minute
def test_distil_language_model(tmp_path):
    pytest.importorskip("keras_hub", reason="the `lm` extra (keras-hub) is not installed")
    results = run_example("distil_language_model", "--output", str(tmp_path))
    causal_lm = results["causal_lm"]
    assert causal_lm["distillation_loss"][-1] < causal_lm["distillation_loss"][0]
    cached = causal_lm["topk_cache_distillation_loss"]
    assert cached[-1] < cached[0]
    for result in results.values():
        assert (pathlib.Path(result["preset"]) / "config.json").exists()
