"""What the two benchmarks (`bench`, `bench-ece`) share: sizes, options, data, output.

Every argument is checked when parsed or at the top of `run`, before any model is
built, so a bad value or an unwritable `--json` never costs a benchmark run.
"""

import argparse
import math
import os

JIT_MODES = {"off": (False,), "on": (True,), "both": (False, True)}


# --- argument types -------------------------------------------------------------------


def positive_int(text):
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def positive_float(text):
    """argparse type: a finite number > 0 (not nan or inf)."""
    value = _finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def unit_interval(text):
    """argparse type: a finite number in [0, 1]."""
    value = _finite_float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1], got {text!r}")
    return value


def _finite_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def add_jit_compile_argument(parser, what):
    parser.add_argument(
        "--jit-compile",
        choices=tuple(JIT_MODES),
        default=None,
        help=f"XLA for {what}: off, on or both (default both; on only under JAX, which "
        "always compiles)",
    )


def add_size_arguments(parser, sizes):
    """Registers `--name` for each `(name, type, default, help)` in `sizes`.

    The parser's default is None, so that `resolve_sizes` can tell a flag the user gave
    (kept, even with `--quick`) from one left out (the default, or `--quick`'s size).
    """
    for name, kind, default, help_text in sizes:
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        parser.add_argument(
            f"--{name.replace('_', '-')}", type=kind, default=None,
            help=f"{help_text}, default {shown}",
        )


def resolve_sizes(args, defaults, quick):
    """Fills each size left out on the command line: `--quick`'s value, else the default.

    Explicit flags always win, with or without `--quick`.
    """
    for name, default in defaults.items():
        if getattr(args, name, None) is None:
            setattr(args, name, quick.get(name, default) if args.quick else default)
    return args


# --- models, data, machine --------------------------------------------------------------


def mlp(features, units, classes, name):
    """A ReLU MLP ending in logits: `features -> units... -> classes`."""
    import keras

    layers = [keras.Input((features,))]
    layers += [keras.layers.Dense(width, activation="relu") for width in units]
    layers.append(keras.layers.Dense(classes))
    return keras.Sequential(layers, name=name)


def synthetic_arrays(samples, input_shape, classes):
    """Gaussian inputs of `input_shape` per example and uniform random labels, seed 0."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(samples, *input_shape)).astype("float32")
    y = rng.integers(0, classes, size=samples).astype("int32")
    return x, y


def synthetic_data(args, input_shape=None):
    """A batched, cached, prefetched dataset of Gaussian inputs and random labels."""
    import tensorflow as tf

    x, y = synthetic_arrays(args.samples, input_shape or (args.features,), args.classes)
    # In memory and prefetched, so that the input pipeline costs every method the same.
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(args.batch_size).cache()
    return dataset.prefetch(tf.data.AUTOTUNE)


def load_average():
    """The 1, 5 and 15-minute load averages, to judge how quiet the machine was."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None
