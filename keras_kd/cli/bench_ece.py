"""`keras-kd bench-ece`: what the streaming ECE metric adds to `model.evaluate()`.

Two copies of one MLP (same weights) are compiled, one with accuracy alone and one
with accuracy plus `keras_kd.metrics.ExpectedCalibrationError(from_logits=True)`, and
evaluated on the same in-memory synthetic dataset. After warm-up calls (tracing and
compilation), the two are timed alternately, so drift in the machine's load hits both
alike, and the medians are compared. The overhead goal is under 5 %.

    keras-kd bench-ece                  # 50k samples, jit_compile off and on
    keras-kd bench-ece --quick          # a smoke run, not figures
"""

import statistics
import time

from keras_kd.cli.bench import _load_average
from keras_kd.cli.bench import _positive_int

_GOAL_PERCENT = 5.0

_QUICK = {"samples": 4096, "repeats": 3, "warmup": 1}


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "bench-ece",
        help="time the ECE metric inside model.evaluate() against accuracy alone",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--samples", type=_positive_int, default=50000, help="default 50000")
    parser.add_argument("--batch-size", type=_positive_int, default=256, help="default 256")
    parser.add_argument("--features", type=_positive_int, default=64, help="default 64")
    parser.add_argument("--classes", type=_positive_int, default=10, help="default 10")
    parser.add_argument("--units", type=_positive_int, default=256, help="hidden width, default 256")
    parser.add_argument("--num-bins", type=_positive_int, default=15, help="default 15")
    parser.add_argument(
        "--repeats", type=_positive_int, default=9, help="timed evaluate calls each, default 9"
    )
    parser.add_argument("--warmup", type=_positive_int, default=2, help="untimed calls, default 2")
    parser.add_argument(
        "--jit-compile",
        choices=("off", "on", "both"),
        default="both",
        help="XLA for both models, default both (off, then on)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.set_defaults(func=run)
    return parser


def run(args):
    if args.quick:
        for name, value in _QUICK.items():
            setattr(args, name, value)
    jit_modes = {"off": (False,), "on": (True,), "both": (False, True)}[args.jit_compile]
    dataset = _synthetic_dataset(args)
    load_start = _load_average()
    rows = [_measure(args, dataset, jit_compile) for jit_compile in jit_modes]
    print(_table(args, rows, load_start, _load_average()))
    return 0


def _measure(args, dataset, jit_compile):
    import keras

    from keras_kd.metrics import ExpectedCalibrationError

    baseline = _mlp(args)
    with_ece = _mlp(args)
    with_ece.set_weights(baseline.get_weights())
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    baseline.compile(loss=loss, metrics=["accuracy"], jit_compile=jit_compile)
    with_ece.compile(
        loss=loss,
        metrics=["accuracy", ExpectedCalibrationError(args.num_bins, from_logits=True)],
        jit_compile=jit_compile,
    )
    for _ in range(args.warmup):
        baseline.evaluate(dataset, verbose=0)
        with_ece.evaluate(dataset, verbose=0)
    durations = {"accuracy": [], "accuracy + ece": []}
    for _ in range(args.repeats):
        # Alternating, so a change in background load hits both series alike.
        for name, model in (("accuracy", baseline), ("accuracy + ece", with_ece)):
            start = time.perf_counter()
            model.evaluate(dataset, verbose=0)
            durations[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(values) for name, values in durations.items()}
    overhead = 100.0 * (medians["accuracy + ece"] / medians["accuracy"] - 1.0)
    return {"jit_compile": jit_compile, "medians": medians, "overhead_percent": overhead}


def _mlp(args):
    import keras

    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((args.features,)),
            keras.layers.Dense(args.units, activation="relu"),
            keras.layers.Dense(args.classes),
        ]
    )


def _synthetic_dataset(args):
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.samples, args.features)).astype("float32")
    y = rng.integers(0, args.classes, size=args.samples).astype("int32")
    # Cached in memory, so the input pipeline costs both models the same.
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(args.batch_size).cache()
    return dataset.prefetch(tf.data.AUTOTUNE)


def _table(args, rows, load_start, load_end):
    lines = [
        f"evaluate() on {args.samples} samples x {args.features} features, {args.classes} "
        f"classes, batch {args.batch_size}, MLP {args.features}-{args.units}-{args.classes}; "
        f"median of {args.repeats} after {args.warmup} warm-up calls",
        "",
        "| jit_compile | accuracy | accuracy + ece | overhead | goal |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        medians = row["medians"]
        lines.append(
            f"| {'on' if row['jit_compile'] else 'off'} | {medians['accuracy']:.3f} s | "
            f"{medians['accuracy + ece']:.3f} s | {row['overhead_percent']:+.1f} % | "
            f"< {_GOAL_PERCENT:.0f} % |"
        )
    lines += ["", f"Load average {load_start} at start, {load_end} at end."]
    return "\n".join(lines)
