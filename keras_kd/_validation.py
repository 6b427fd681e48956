"""Argument checks shared by every public entry point.

Each check raises a `ValueError` that names the argument and the value it got,
so a bad hyperparameter fails at construction instead of training silently wrong.
"""

import math
import numbers

import numpy as np


def check_temperature(temperature, name="temperature"):
    """Returns `temperature` as a float after checking it is finite and > 0."""
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
        raise ValueError(
            f"`{name}` must be a finite number > 0, got {temperature!r} "
            f"(type {type(temperature).__name__})."
        )
    if not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"`{name}` must be a finite number > 0, got {temperature!r}.")
    return float(temperature)


def check_in_range(value, name, low, high, low_inclusive=True, high_inclusive=True):
    """Returns `value` as a float after checking it lies in the given interval."""
    left = "[" if low_inclusive else "("
    right = "]" if high_inclusive else ")"
    interval = f"{left}{low}, {high}{right}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"`{name}` must be a number in {interval}, got {value!r}.")
    value = float(value)
    above_low = value >= low if low_inclusive else value > low
    below_high = value <= high if high_inclusive else value < high
    if math.isnan(value) or not (above_low and below_high):
        raise ValueError(f"`{name}` must be in {interval}, got {value!r}.")
    return value


def check_positive_int(value, name):
    """Returns `value` as an int after checking it is an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}.")
    return int(value)


def check_choice(value, name, choices):
    """Returns `value` after checking it is one of `choices`."""
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {sorted(choices)}, got {value!r}.")
    return value


def check_bool(value, name):
    """Returns `value` after checking it is True or False (not 0/1 or a string)."""
    if not isinstance(value, bool):
        raise ValueError(f"`{name}` must be True or False, got {value!r}.")
    return value


def check_same_length(**arrays):
    """Checks that every array-like given by keyword has the same first dimension.

    `None` values are skipped, so optional arrays (sample weights) can be passed as is.
    """
    lengths = {name: len(array) for name, array in arrays.items() if array is not None}
    if len(set(lengths.values())) > 1:
        described = ", ".join(f"`{name}` has {length}" for name, length in lengths.items())
        raise ValueError(f"Expected the same number of examples in each array, but {described}.")


def check_not_probabilities(predictions, name, hint):
    """Raises if every row of `predictions` (N, K >= 2) is in [0, 1] and sums to 1.

    Logits almost never look like that, while probabilities passed where logits are
    expected would be softmaxed twice and silently give wrong numbers. `hint` says
    how to pass probabilities instead.
    """
    predictions = np.asarray(predictions)
    if predictions.ndim == 0 or predictions.shape[-1] < 2 or predictions.size == 0:
        return
    in_unit_interval = np.all((predictions >= 0.0) & (predictions <= 1.0))
    if in_unit_interval and np.allclose(np.sum(predictions, axis=-1), 1.0, atol=1e-3):
        raise ValueError(
            f"`{name}` looks like probabilities, not logits: every row is in [0, 1] "
            f"and sums to 1. {hint}"
        )


# --- Values: checked where they are known without a device sync -----------------------


def eager_values(tensor):
    """`tensor` as NumPy when its values exist outside a traced function, else None.

    NumPy arrays, Python lists and eager tensors qualify; symbolic tensors inside a
    compiled `fit` (TensorFlow graphs, JAX tracers) and accelerator tensors of the
    PyTorch backend do not: reading them would cost a device sync every step.
    """
    if tensor is None:
        return None
    if isinstance(tensor, (np.ndarray, list, tuple, numbers.Number)):
        return np.asarray(tensor)
    module = type(tensor).__module__
    if module.startswith("tensorflow"):  # also tf.data elements under other backends
        import tensorflow as tf

        eager = tf.executing_eagerly() and hasattr(tensor, "numpy")
        return tensor.numpy() if eager else None
    if module.startswith("torch"):
        # Only host tensors: reading a GPU tensor would sync the device every step.
        return tensor.detach().numpy() if tensor.device.type == "cpu" else None
    if module.startswith("jax"):
        import jax

        return None if isinstance(tensor, jax.core.Tracer) else np.asarray(tensor)
    if module.startswith("keras"):  # a symbolic KerasTensor: no values
        return None
    return np.asarray(tensor)


def is_string_array(tensor):
    """True for NumPy/TensorFlow string (or object) arrays, which no loss can read."""
    dtype = getattr(tensor, "dtype", None)
    if dtype is None:
        return False
    if isinstance(dtype, np.dtype):
        return dtype.kind in "USO"
    return "string" in str(dtype)


def check_numeric_labels(labels, name="y_true"):
    """Raises for string labels, naming one, and saying how to map them to numbers."""
    if not is_string_array(labels):
        return
    values = eager_values(labels) if not isinstance(labels, np.ndarray) else labels
    example = values.flat[0] if values is not None and values.size else "?"
    if isinstance(example, bytes):
        example = example.decode("utf-8", "replace")
    example = str(example) if isinstance(example, np.str_) else example
    raise ValueError(
        f"`{name}` must be numeric (class indices, one-hot or 0/1 targets), got strings "
        f"such as {example!r}. Map them to class indices first, e.g. with "
        "keras.layers.StringLookup(num_oov_indices=0)."
    )


def check_unit_interval_values(tensor, name, what):
    """Raises when eager values of `tensor` are not finite numbers in [0, 1]."""
    values = eager_values(tensor)
    if values is None or values.size == 0:
        return
    values = values.astype(np.float64)
    invalid = ~np.isfinite(values) | (values < 0.0) | (values > 1.0)
    if np.any(invalid):
        raise ValueError(
            f"`{name}` must hold {what} in [0, 1], got {values[invalid].flat[0].item()!r} "
            f"({int(np.sum(invalid))} of {values.size} values outside [0, 1])."
        )


def check_distribution_rows(tensor, name="y_true"):
    """Raises when eager rows of one-hot/soft targets are not probability distributions.

    An all-zero row (a missing label, or an out-of-range index one-hot encoded by
    hand) would add nothing to a cross-entropy; a multi-hot row summing to 2 would
    count the example twice. Both are rejected; soft targets that sum to 1 are fine.
    """
    values = eager_values(tensor)
    if values is None or values.size == 0 or values.ndim == 0:
        return
    values = values.astype(np.float64)
    check_unit_interval_values(values, name, "one-hot or soft targets")
    sums = np.sum(values, axis=-1)
    invalid = np.abs(sums - 1.0) > 1e-3
    if np.any(invalid):
        row = np.argwhere(invalid)[0]
        total = float(sums[tuple(row)])
        reason = "an all-zero row: a missing label?" if total == 0 else "not 1"
        raise ValueError(
            f"One-hot or soft `{name}` rows must be probability distributions (entries in "
            f"[0, 1] summing to 1), got a row summing to {total:g} at index "
            f"{tuple(int(i) for i in row)} ({reason}; {int(np.sum(invalid))} of "
            f"{sums.size} rows). For independent (multi-label) targets use "
            "output='sigmoid'."
        )


def check_sample_weight(sample_weight, predictions, name="sample_weight"):
    """Raises for sample weights of the wrong shape or with NaN, inf or negative values.

    Per-example losses have shape `predictions.shape[:-1]`; the weights must have that
    shape (optionally with a trailing 1), a leading part of it (per-sequence weights
    for per-token losses), or be a scalar. Shapes are checked
    statically; values only when eager (NumPy, eager tensors).
    """
    if sample_weight is None:
        return
    weight_shape = tuple(getattr(sample_weight, "shape", np.shape(sample_weight)))
    example_shape = tuple(predictions.shape[:-1])
    if weight_shape and weight_shape[-1] == 1 and len(weight_shape) == len(example_shape) + 1:
        weight_shape = weight_shape[:-1]
    # A prefix of the example shape is fine too: per-sequence weights (N,) for
    # per-token losses (N, T) broadcast, as in Keras.
    if weight_shape and (
        len(weight_shape) > len(example_shape)
        or any(
            a is not None and b is not None and a != b
            for a, b in zip(weight_shape, example_shape)
        )
    ):
        raise ValueError(
            f"`{name}` must hold one weight per example, shape {example_shape} (or a "
            f"scalar), for predictions of shape {tuple(predictions.shape)}; got shape "
            f"{tuple(getattr(sample_weight, 'shape', np.shape(sample_weight)))}."
        )
    check_weight_values(sample_weight, name)


def check_weight_values(sample_weight, name="sample_weight"):
    """Raises when eager weights hold NaN, inf or negative values, naming one."""
    values = eager_values(sample_weight)
    if values is None or values.size == 0:
        return
    if is_string_array(values):
        raise ValueError(f"`{name}` must be numbers, got strings such as {values.flat[0]!r}.")
    values = values.astype(np.float64)
    invalid = ~np.isfinite(values) | (values < 0.0)
    if np.any(invalid):
        raise ValueError(
            f"`{name}` must be finite and >= 0, got {values[invalid].flat[0].item()!r} "
            f"({int(np.sum(invalid))} of {values.size} weights). Drop those examples, or "
            "give them weight 0."
        )


def probability_form(values, output="softmax", min_binary_values=16):
    """What `values` (N, K) look like when they cannot be logits, else None.

    - softmax, K >= 2: every row in [0, 1] and summing to 1 -> "probabilities (every
      row in [0, 1] and summing to 1)". Real logits essentially never do that.
    - sigmoid or K = 1: logits in [0, 1] are legitimate (probabilities 0.5 to 0.73),
      so a value alone proves nothing. But a batch of at least `min_binary_values`
      outputs all in [0, 1], not all equal, is either probabilities or a model that
      never predicts below 0.5 nor above 0.73: useless as a teacher either way, so it
      is reported. (All equal: a constant output, e.g. on all-zero inputs, says nothing.)
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 0 or values.size == 0 or not np.all(np.isfinite(values)):
        return None
    in_unit_interval = bool(np.all((values >= 0.0) & (values <= 1.0)))
    if not in_unit_interval:
        return None
    if output == "sigmoid" or values.shape[-1] == 1:
        if values.size < min_binary_values or np.ptp(values) == 0:
            return None
        return (
            f"sigmoid probabilities (all {values.size} values in [0, 1]; as logits they "
            "would mean every prediction lies between 0.5 and 0.73)"
        )
    if np.allclose(np.sum(values, axis=-1), 1.0, atol=1e-3):
        return "probabilities (every row in [0, 1] and summing to 1)"
    return None
