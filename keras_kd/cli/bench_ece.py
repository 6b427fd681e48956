"""`keras-kd bench-ece`: what the streaming ECE metric adds to `model.evaluate()`.

Two copies of one MLP (same weights) are compiled, one with accuracy alone and one
with accuracy plus `keras_kd.metrics.ExpectedCalibrationError(from_logits=True)`, and
evaluated on the same in-memory synthetic dataset. After warm-up calls (tracing and
compilation), the two are timed alternately, so drift in the machine's load hits both
alike, and the medians of wall time and of process CPU time are compared. The
overhead goal is under 5 %.

    keras-kd bench-ece                  # 50k samples, jit_compile off and on
    keras-kd bench-ece --quick          # a smoke run, not figures
"""

import statistics
import sys
import time

from keras_kd.cli._bench_common import JIT_MODES
from keras_kd.cli._bench_common import add_jit_compile_argument
from keras_kd.cli._bench_common import add_size_arguments
from keras_kd.cli._bench_common import load_average
from keras_kd.cli._bench_common import mlp
from keras_kd.cli._bench_common import positive_int
from keras_kd.cli._bench_common import resolve_sizes
from keras_kd.cli._bench_common import synthetic_data

_GOAL_PERCENT = 5.0

_SIZES = (
    ("samples", positive_int, 50000, "examples"),
    ("batch_size", positive_int, 256, "batch size"),
    ("features", positive_int, 64, "input features"),
    ("classes", positive_int, 10, "classes"),
    ("units", positive_int, 256, "hidden width"),
    ("num_bins", positive_int, 15, "ECE bins"),
    ("repeats", positive_int, 15, "timed evaluate calls each"),
    ("warmup", positive_int, 2, "untimed calls"),
)
# --quick replaces only the sizes not given explicitly.
_QUICK = {"samples": 4096, "repeats": 3, "warmup": 1}
_SERIES = ("accuracy", "accuracy + ece")
_CLOCKS = ("wall", "cpu")


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "bench-ece",
        help="time the ECE metric inside model.evaluate() against accuracy alone",
        description=__doc__.split("\n\n")[0],
    )
    add_size_arguments(parser, _SIZES)
    add_jit_compile_argument(parser, "both models")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.set_defaults(func=run)
    return parser


def run(args):
    resolve_sizes(args, {name: default for name, _, default, _ in _SIZES}, _QUICK)
    jit_modes = JIT_MODES[args.jit_compile or "both"]
    dataset = synthetic_data(args)
    load_start = load_average()
    rows = [_measure(args, dataset, jit_compile) for jit_compile in jit_modes]
    print(_table(args, rows, load_start, load_average()))
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
        logs = with_ece.evaluate(dataset, verbose=0, return_dict=True)
    _progress(f"jit_compile={jit_compile}: ece {logs['ece']:.4f}, timing...")
    samples = {(name, clock): [] for name in _SERIES for clock in _CLOCKS}
    pair = list(zip(_SERIES, (baseline, with_ece)))
    for repeat in range(args.repeats):
        # Alternating (ABBA), so drifting background load and any advantage of going
        # second hit both series alike.
        for name, model in pair if repeat % 2 == 0 else pair[::-1]:
            wall, cpu = time.perf_counter(), time.process_time()
            model.evaluate(dataset, verbose=0)
            samples[name, "wall"].append(time.perf_counter() - wall)
            samples[name, "cpu"].append(time.process_time() - cpu)
    medians = {key: statistics.median(values) for key, values in samples.items()}
    overhead = {
        clock: 100.0 * (medians[_SERIES[1], clock] / medians[_SERIES[0], clock] - 1.0)
        for clock in _CLOCKS
    }
    return {"jit_compile": jit_compile, "medians": medians, "overhead_percent": overhead}


def _progress(message):
    print(f"[bench-ece] {message}", file=sys.stderr, flush=True)


def _mlp(args):
    import keras

    keras.utils.set_random_seed(0)
    return mlp(args.features, (args.units,), args.classes, "mlp")


def _table(args, rows, load_start, load_end):
    steps = -(-args.samples // args.batch_size)
    lines = [
        f"evaluate() on {args.samples} samples x {args.features} features, {args.classes} "
        f"classes, batch {args.batch_size} ({steps} steps), MLP "
        f"{args.features}-{args.units}-{args.classes}, {args.num_bins} bins; median of "
        f"{args.repeats} after {args.warmup} warm-up calls",
        "",
        "| jit_compile | clock | accuracy | accuracy + ece | per step | overhead | goal |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        medians = row["medians"]
        for clock in _CLOCKS:
            base, ece = medians[_SERIES[0], clock], medians[_SERIES[1], clock]
            lines.append(
                f"| {'on' if row['jit_compile'] else 'off'} | {clock} | {base:.3f} s | "
                f"{ece:.3f} s | {1e6 * (ece - base) / steps:+.0f} us | "
                f"{row['overhead_percent'][clock]:+.1f} % | < {_GOAL_PERCENT:.0f} % |"
            )
    lines += [
        "",
        "cpu is this process's CPU time (all its threads), which other processes' load "
        "barely changes; wall is elapsed time.",
        f"Load average {load_start} at start, {load_end} at end.",
    ]
    return "\n".join(lines)
