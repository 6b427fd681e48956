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
