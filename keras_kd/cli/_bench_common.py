"""What the two benchmarks (`bench`, `bench-ece`) share: data, models, options, clocks."""

import argparse
import os

JIT_MODES = {"off": (False,), "on": (True,), "both": (False, True)}


def positive_int(text):
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def add_jit_compile_argument(parser, what):
    parser.add_argument(
        "--jit-compile",
        choices=tuple(JIT_MODES),
        default="both",
        help=f"XLA for {what}, default both (off, then on)",
    )


def apply_quick(args, overrides):
    """With `--quick`, replaces the sizes in `args` by a smoke run's `overrides`."""
    if args.quick:
        for name, value in overrides.items():
            setattr(args, name, value)


def mlp(features, units, classes, name):
    """A ReLU MLP ending in logits: `features -> units... -> classes`."""
    import keras

    layers = [keras.Input((features,))]
    layers += [keras.layers.Dense(width, activation="relu") for width in units]
    layers.append(keras.layers.Dense(classes))
    return keras.Sequential(layers, name=name)


def synthetic_data(args):
    """A batched, cached, prefetched dataset of Gaussian inputs and random labels."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.samples, args.features)).astype("float32")
    y = rng.integers(0, args.classes, size=args.samples).astype("int32")
    # In memory and prefetched, so that the input pipeline costs every method the same.
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(args.batch_size).cache()
    return dataset.prefetch(tf.data.AUTOTUNE)


def load_average():
    """The 1, 5 and 15-minute load averages, to judge how quiet the machine was."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None
