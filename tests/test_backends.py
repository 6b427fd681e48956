"""keras_kd on every Keras 3 backend: TensorFlow, JAX and PyTorch.

Keras picks its backend once per process (`KERAS_BACKEND`), so the other backends run
in subprocesses:

- `tests/backend_neutral/` is re-run under JAX and PyTorch (under the backend of this
  process it is collected as part of the ordinary suite);
- `tests/backend_neutral/_backend_numbers.py` computes, in each backend, every loss,
  the ECE metric, the calibration functions and one epoch of distillation from the
  same initial weights; the numbers are compared with NumPy
  (`_backend_reference.py`) and with each other.

A backend whose package is not installed is skipped with the reason;
`pip install ".[test]"` installs the CPU builds of JAX and PyTorch.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

BACKEND_NEUTRAL = Path(__file__).parent / "backend_neutral"
sys.path.insert(0, str(BACKEND_NEUTRAL))
import _backend_reference as ref  # noqa: E402

# Each test waits on subprocesses that import a backend and compile their steps:
# about a minute of 2 cores in all, so the module is deselectable with -m "not slow".
pytestmark = pytest.mark.slow

BACKENDS = ("tensorflow", "jax", "torch")
# A backend package imports in seconds, but the whole backend-neutral suite on 2
# busy cores takes minutes: a hung subprocess must not stall CI past its limit.
SUBPROCESS_TIMEOUT_S = 900
# float32 computed in different orders by different kernels: measured up to 2.4e-6
# absolute, 1.8e-5 relative (the T^2 KL of nearly matching logits); twice that here.
RTOL, ATOL = 5e-5, 5e-6


def _missing(backend):
    """Why `backend` cannot run here, or None."""
    if importlib.util.find_spec(backend) is None:
        return f"the {backend} package is not installed (pip install '.[test]' installs it)"
    return None


def _environment(backend):
    # The checkout first on the path: the subprocess tests this tree's keras_kd, installed
    # or not.
    repository = str(Path(__file__).parent.parent)
    python_path = os.pathsep.join(filter(None, [repository, os.environ.get("PYTHONPATH")]))
    return {
        **os.environ,
        "KERAS_BACKEND": backend,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONPATH": python_path,
    }


def _start(backend, arguments):
    return subprocess.Popen(
        [sys.executable, *arguments],
        cwd=Path(__file__).parent.parent,
        env=_environment(backend),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(process):
    """(exit code, output), killing the process past the timeout."""
    try:
        output, _ = process.communicate(timeout=SUBPROCESS_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        return f"timed out after {SUBPROCESS_TIMEOUT_S} s", output
    return process.returncode, output


# --- the backend-neutral suite under the other backends --------------------------


@pytest.fixture(scope="module")
def suite_runs():
    """Starts tests/backend_neutral under every other installed backend, in parallel."""
    processes = {
        backend: _start(
            backend,
            ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore", str(BACKEND_NEUTRAL)],
        )
        for backend in BACKENDS
        if backend != keras.backend.backend() and _missing(backend) is None
    }
    return {backend: _finish(process) for backend, process in processes.items()}


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_neutral_suite_passes(backend, suite_runs):
    if _missing(backend):
        pytest.skip(_missing(backend))
    if backend == keras.backend.backend():
        pytest.skip(f"this run is under {backend}: tests/backend_neutral ran in this process")
    code, output = suite_runs[backend]
    assert code == 0, f"tests/backend_neutral under KERAS_BACKEND={backend}: exit {code}\n{output}"
    # The subprocess must have tested something, not skipped everything.
    assert " passed" in output.splitlines()[-1], output[-2000:]


# --- the same numbers on every backend -------------------------------------------


@pytest.fixture(scope="module")
def numbers(tmp_path_factory):
    """{backend: the JSON of _backend_numbers.py} for every installed backend."""
    directory = tmp_path_factory.mktemp("backend_numbers")
    inputs = directory / "inputs.npz"
    np.savez(inputs, **ref.inputs())
    script = str(BACKEND_NEUTRAL / "_backend_numbers.py")
    processes = {
        backend: _start(backend, [script, str(inputs), str(directory / f"{backend}.json")])
        for backend in BACKENDS
        if _missing(backend) is None
    }
    results = {}
    for backend, process in processes.items():
        code, output = _finish(process)
        assert code == 0, f"_backend_numbers.py under {backend}: exit {code}\n{output}"
        results[backend] = json.loads((directory / f"{backend}.json").read_text())
    return results


def _section(numbers, backend, name):
    if _missing(backend):
        pytest.skip(_missing(backend))
    result = numbers[backend]
    assert result["backend"] == backend
    assert name not in result["errors"], f"{name} under {backend}:\n{result['errors'][name]}"
    return result[name]


def _installed_pairs():
    """The installed backends other than TensorFlow, to compare with it, or a skip."""
    others = [backend for backend in BACKENDS[1:] if _missing(backend) is None]
    if _missing("tensorflow") or not others:
        pytest.skip("needs TensorFlow and at least one of JAX or PyTorch installed")
    return others


def _assert_tree_close(actual, expected, where, rtol=RTOL, atol=ATOL):
    """Nested dicts and lists (of arrays of different shapes) compared leaf by leaf."""
    if isinstance(expected, dict):
        assert sorted(actual) == sorted(expected), where
        for key in expected:
            _assert_tree_close(actual[key], expected[key], f"{where}[{key!r}]", rtol, atol)
        return
    if isinstance(expected, list) and len({np.shape(leaf) for leaf in expected}) > 1:
        assert len(actual) == len(expected), where
        for index, (leaf, expected_leaf) in enumerate(zip(actual, expected)):
            _assert_tree_close(leaf, expected_leaf, f"{where}[{index}]", rtol, atol)
        return
    np.testing.assert_allclose(
        np.asarray(actual, dtype=np.float64),
        np.asarray(expected, dtype=np.float64),
        rtol=rtol,
        atol=atol,
        err_msg=where,
    )


def _numpy_losses(arrays):
    """Every entry of `_backend_numbers.loss_numbers`, from the NumPy references."""
    teacher, student = arrays["teacher_logits"], arrays["student_logits"]
    labels, weights = arrays["labels"], arrays["sample_weight"]
    temperature = ref.TEMPERATURE
    log_p = ref.log_softmax(teacher, temperature)
    log_q = ref.log_softmax(student, temperature)
    per_example = {
        "tempered_log_softmax": log_q,
        "kl_divergence_from_log_probs": np.sum(np.exp(log_p) * (log_p - log_q), axis=-1),
        "distillation_loss": ref.kd_loss(teacher, student, temperature),
        "ensemble_logits": ref.ensemble_logits(
            [teacher, arrays["second_teacher_logits"]], temperature
        ),
        "cross_entropy": ref.cross_entropy(labels, student),
        "cross_entropy_one_hot": ref.cross_entropy(labels, student),
        "label_smoothing_loss": ref.label_smoothing(labels, student, 0.1),
        "label_smoothing_loss_probs": ref.label_smoothing_from_probs(
            labels, ref.softmax(student), 0.1
        ),
        "virtual_teacher_loss_paper": ref.virtual_teacher_paper(labels, student, 0.9, 20.0, 0.5),
        "virtual_teacher_loss_reference": ref.virtual_teacher_reference(
            labels, student, 0.99, 20.0, 0.1, 100.0
        ),
        "logit_matching_loss": ref.logit_matching(teacher, student),
    }
    reduced = {
        "DistillationLoss": per_example["distillation_loss"],
        "LabelSmoothingLoss": per_example["label_smoothing_loss"],
        "VirtualTeacherLoss": per_example["virtual_teacher_loss_paper"],
        "LogitMatchingLoss": per_example["logit_matching_loss"],
    }
    return {
        **per_example,
        **{name: ref.weighted_batch_mean(values, weights) for name, values in reduced.items()},
    }


# At T = 20 the KL is ~1e-3, a difference of float32 log-probabilities, and T^2 = 400
# scales its rounding (~1e-7) up to ~5e-5 (measured: 1.2e-4 relative).
LOSS_RTOL = {"virtual_teacher_loss_paper": 5e-4, "VirtualTeacherLoss": 5e-4}


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_loss_matches_numpy(backend, numbers):
    expected = _numpy_losses(ref.inputs())
    actual = _section(numbers, backend, "losses")
    assert sorted(actual) == sorted(expected)
    for name in expected:
        _assert_tree_close(
            actual[name], expected[name], f"{name} on {backend}", rtol=LOSS_RTOL.get(name, RTOL)
        )


@pytest.mark.parametrize("backend", BACKENDS)
def test_ece_metric_and_functions_match_numpy(backend, numbers, reference_calibration_error):
    arrays = ref.inputs()
    probs = ref.softmax(arrays["student_logits"])
    result = _section(numbers, backend, "ece")
    for norm in ("l1", "l2", "max"):
        expected = reference_calibration_error(
            probs, arrays["labels"], 10, norm, arrays["sample_weight"]
        )
        assert result[f"metric_{norm}"] == pytest.approx(expected, rel=1e-5, abs=1e-6), norm
        assert result[f"function_{norm}"] == pytest.approx(expected, rel=1e-5, abs=1e-6), norm
    # Temperature scaling minimises the NLL of softmax(z / T): its neighbours do no
    # better, whatever the solver.
    def nll(temperature):
        return np.mean(ref.cross_entropy(arrays["labels"], arrays["student_logits"] / temperature))

    fitted = result["temperature"]
    assert nll(fitted) <= min(nll(fitted * 0.99), nll(fitted * 1.01))


def test_losses_and_ece_agree_across_backends(numbers):
    for backend in _installed_pairs():
        reference = _section(numbers, "tensorflow", "losses")
        for name, value in _section(numbers, backend, "losses").items():
            _assert_tree_close(
                value, reference[name], f"{name}: {backend} vs tensorflow",
                rtol=LOSS_RTOL.get(name, RTOL),
            )
        _assert_tree_close(
            _section(numbers, backend, "ece"),
            _section(numbers, "tensorflow", "ece"),
            f"ece: {backend} vs tensorflow",
        )


def test_one_epoch_of_distillation_agrees_across_backends(numbers):
    """Same weights, data and order: TF's train_step and Keras' JAX/PyTorch train steps
    (through `compute_loss`) end the epoch with the same student, logs and predictions."""
    for backend in _installed_pairs():
        for name in ("training", "cached_training", "feature_training"):
            _assert_tree_close(
                _section(numbers, backend, name),
                _section(numbers, "tensorflow", name),
                f"{name}: {backend} vs tensorflow",
                rtol=1e-4,
                atol=1e-5,
            )


@pytest.mark.parametrize("backend", BACKENDS)
def test_distilling_from_cached_logits_equals_live(backend, numbers):
    live = _section(numbers, backend, "training")
    cached = _section(numbers, backend, "cached_training")
    for key in ("loss", "student_loss", "distillation_loss", "ece"):
        np.testing.assert_allclose(cached["history"][key], live["history"][key], rtol=1e-5)
    _assert_tree_close(cached["student_weights"], live["student_weights"], backend, atol=1e-6)
