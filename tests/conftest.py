"""Shared pytest set-up: quiet TensorFlow, the TF backend, and a clean dtype policy."""

import os

# Set before keras/tensorflow are first imported by any test module.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402
from _numpy_reference import calibration_error  # noqa: E402


@pytest.fixture(autouse=True)
def _restore_dtype_policy():
    """A test that switches to mixed precision cannot leak it into the next test."""
    policy = keras.config.dtype_policy()
    yield
    keras.config.set_dtype_policy(policy)


@pytest.fixture
def reference_calibration_error():
    """An independent NumPy ECE/RMSCE/MCE, (probs, labels, num_bins, norm, sample_weight)."""
    return calibration_error


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
