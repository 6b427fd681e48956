"""Shared pytest set-up: quiet TensorFlow, the TF backend, and a clean dtype policy."""

import os

# Set before keras/tensorflow are first imported by any test module.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _restore_dtype_policy():
    """A test that switches to mixed precision cannot leak it into the next test."""
    policy = keras.config.dtype_policy()
    yield
    keras.config.set_dtype_policy(policy)


def _reference_calibration_error(probs, labels, num_bins, norm="l1", sample_weight=None):
    """Calibration error by explicit bin edges and a loop over bins, in float64.

    Written independently of keras_kd._binning so tests compare two implementations:
    bins are [lo, hi) with the last closed; labels are indices or one-hot (argmax).
    """
    import numpy as np

    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    if labels.ndim == probs.ndim:
        labels = labels[..., 0] if labels.shape[-1] == 1 else np.argmax(labels, axis=-1)
    confidences = np.clip(probs.max(axis=-1), 0.0, 1.0).ravel()
    correct = (probs.argmax(axis=-1) == labels).ravel().astype(np.float64)
    weights = np.ones_like(confidences) if sample_weight is None else np.ravel(sample_weight)
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    shares, gaps = [], []
    for b in range(num_bins):
        upper_ok = confidences < edges[b + 1] if b < num_bins - 1 else confidences <= 1.0
        in_bin = (confidences >= edges[b]) & upper_ok
        mass = weights[in_bin].sum()
        if mass == 0:
            continue
        accuracy = (weights * correct)[in_bin].sum() / mass
        confidence = (weights * confidences)[in_bin].sum() / mass
        shares.append(mass / weights.sum())
        gaps.append(abs(accuracy - confidence))
    shares, gaps = np.array(shares), np.array(gaps)
    if norm == "l1":
        return float(np.sum(shares * gaps))
    if norm == "l2":
        return float(np.sqrt(np.sum(shares * gaps**2)))
    return float(gaps.max(initial=0.0))


@pytest.fixture
def reference_calibration_error():
    """An independent NumPy ECE/RMSCE/MCE, (probs, labels, num_bins, norm, sample_weight)."""
    return _reference_calibration_error


class _CallCounter(keras.layers.Layer):
    """Identity layer counting its executed calls in a non-trainable variable.

    `assign_add` runs inside the compiled step, so it counts executions (under
    `tf.function` and XLA too), not traces: proof of which models a step runs.
    """

    def build(self, input_shape):
        self.calls = self.add_weight(shape=(), initializer="zeros", trainable=False, name="calls")

    def call(self, inputs):
        self.calls.assign_add(1.0)
        return inputs


@pytest.fixture
def call_counter():
    """The class of an identity layer whose `calls` variable counts its executed calls."""
    return _CallCounter


# --- Keras backends: `backends` and `gpu` markers ------------------------------------
# tests/backend_neutral/ runs under every backend (tests/test_backends.py re-runs it
# under JAX and PyTorch); a test there that needs one backend says so with a marker.


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "backends(*names): runs only under these Keras backends (KERAS_BACKEND); "
        "skipped under the others with a reason",
    )


def pytest_collection_modifyitems(config, items):
    backend = keras.backend.backend()
    accelerators = None
    for item in items:
        marker = item.get_closest_marker("backends")
        if marker is not None and backend not in marker.args:
            wanted = " or ".join(marker.args)
            item.add_marker(
                pytest.mark.skip(reason=f"needs the {wanted} backend; KERAS_BACKEND={backend}")
            )
        if item.get_closest_marker("gpu") is not None:
            if accelerators is None:
                accelerators = _accelerators(backend)
            if not accelerators:
                item.add_marker(
                    pytest.mark.skip(
                        reason=f"needs an accelerator: the {backend} backend sees none here"
                    )
                )


def _accelerators(backend):
    """Names of the GPUs/TPUs the current Keras backend computes on (empty on CPU)."""
    if backend == "tensorflow":
        import tensorflow as tf

        return [device.name for device in tf.config.list_physical_devices("GPU")]
    if backend == "jax":
        import jax

        return [str(device) for device in jax.devices() if device.platform != "cpu"]
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        return ["mps"] if torch.backends.mps.is_available() else []
    return []
