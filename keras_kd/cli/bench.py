"""`keras-kd bench`: what distillation costs, against its floor and `keras.distillation`.

The floor of a distillation epoch is one student training epoch plus one teacher
inference pass (`student_fit + teacher_predict`), and, when the teacher's logits are
cached, the student epoch alone. On synthetic data, with a teacher about 10x the
student's forward cost, one process measures (warm-up epochs first, then the median
of several) `student.fit`, `teacher.predict`, `keras_kd.Distiller.fit` live and from
`cache_teacher_logits`, and `keras.distillation.Distiller.fit` with
`LogitsDistillation(temperature=T, loss=keras.losses.KLDivergence())` (its correct
configuration) on the same models and data; then `evaluate` of both distillers
against `student.evaluate`. It prints the times, the ratios to the floor and to
`keras.distillation`, and the cached path's memory (samples x classes x bytes).

    keras-kd bench                         # default sizes, jit_compile off and on
    keras-kd bench --quick                 # a smoke run
    keras-kd bench --json bench.json       # also write the figures
"""

import json
import os
import platform
import statistics
import sys
import threading
import time

from keras_kd.cli._bench_common import JIT_MODES
from keras_kd.cli._bench_common import add_jit_compile_argument
from keras_kd.cli._bench_common import apply_quick
from keras_kd.cli._bench_common import load_average
from keras_kd.cli._bench_common import mlp
from keras_kd.cli._bench_common import positive_int
from keras_kd.cli._bench_common import synthetic_data

_GOALS = {
    "keras_kd / keras_distillation": 0.95,
    "keras_kd / (student_fit + teacher_predict)": 1.05,
    "keras_kd_cached / student_fit": 1.15,
    "keras_kd_evaluate / keras_distillation_evaluate": 0.6,
}

_QUICK = {
    "samples": 1024,
    "batch_size": 128,
    "features": 32,
    "classes": 10,
    "student_units": (32,),
    "teacher_units": (100, 96),
    "epochs": 2,
    "warmup": 1,
}


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "bench",
        help="time distillation against its floor and keras.distillation",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--samples", type=positive_int, default=8192, help="default 8192")
    parser.add_argument("--batch-size", type=positive_int, default=256, help="default 256")
    parser.add_argument("--features", type=positive_int, default=512, help="default 512")
    parser.add_argument("--classes", type=positive_int, default=100, help="default 100")
    parser.add_argument(
        "--student-units", type=_units, default=(512,), help="hidden widths, default 512"
    )
    parser.add_argument(
        "--teacher-units",
        type=_units,
        default=(1536, 1536),
        help="hidden widths, default 1536,1536 (about 10x the student's forward cost)",
    )
    parser.add_argument("--epochs", type=positive_int, default=5, help="timed epochs, default 5")
    parser.add_argument("--warmup", type=positive_int, default=1, help="untimed epochs, default 1")
    parser.add_argument("--temperature", type=float, default=4.0, help="default 4.0")
    parser.add_argument(
        "--alpha", type=float, default=0.9, help="weight of the distillation term, default 0.9"
    )
    add_jit_compile_argument(parser, "every model and distiller")
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes and 2 epochs: a smoke run, not figures"
    )
    parser.add_argument("--json", metavar="PATH", help="write the figures to this JSON file")
    parser.set_defaults(func=run)
    return parser


def run(args):
    import keras

    apply_quick(args, _QUICK)
    jit_modes = JIT_MODES[args.jit_compile]
    data = synthetic_data(args)
    machine = _machine()
    _progress(
        f"{args.samples} samples x {args.features} features, {args.classes} classes, "
        f"batch {args.batch_size}; student {list(args.student_units)}, teacher "
        f"{list(args.teacher_units)} ({_cost_ratio(args):.1f}x the student's forward "
        f"multiply-adds); {args.warmup} warm-up + {args.epochs} timed epochs; "
        f"load average {machine['load_average_start']}"
    )
    keras.utils.set_random_seed(0)
    teacher = mlp(args.features, args.teacher_units, args.classes, "teacher")
    runs = [_measure_all(args, teacher, data, jit_compile) for jit_compile in jit_modes]
    machine["load_average_end"] = load_average()
    memory = _cache_memory(args, [run.pop("cache_peak_rss_bytes") for run in runs])
    figures = {
        "machine": machine,
        "config": {key: value for key, value in vars(args).items() if key != "func"},
        "flop_ratio_teacher_to_student": _cost_ratio(args),
        "runs": runs,
        "cache_memory": memory,
        "goals": _GOALS,
    }
    print(_table(figures))
    if args.json:
        with open(args.json, "w") as file:
            json.dump(figures, file, indent=2, default=list)
        _progress(f"figures written to {args.json}")
    return 0


# --- measurements -------------------------------------------------------------------


def _measure_all(args, teacher, data, jit_compile):
    import keras

    import keras_kd
    from keras_kd.teacher_cache import cache_teacher_logits

    label = f"jit_compile={'on' if jit_compile else 'off'}"
    hard_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    compile_args = {"optimizer": "adam", "loss": hard_loss, "jit_compile": jit_compile}

    def distiller():
        model = keras_kd.Distiller(
            teacher, _student(args), temperature=args.temperature, alpha=args.alpha
        )
        model.compile(**compile_args)
        return model

    student = _student(args)
    student.compile(**compile_args)
    teacher.compile(loss=hard_loss, jit_compile=jit_compile)
    live = distiller()
    reference = keras.distillation.Distiller(
        teacher=teacher,
        student=_student(args),
        distillation_losses=keras.distillation.LogitsDistillation(
            temperature=args.temperature, loss=keras.losses.KLDivergence()
        ),
        # keras.distillation weights the hard term; keras_kd's alpha the soft one.
        student_loss_weight=1.0 - args.alpha,
    )
    reference.compile(**compile_args)

    with _PeakRss() as peak:
        start = _clocks()
        cached = cache_teacher_logits(teacher, data, verbose=0)
        cache_seconds = _elapsed(start)
    _progress(f"{label} cache: {cache_seconds[0]:.3f} s (once, tracing included)")
    # The same logits without the per-batch staleness check: what that check costs.
    unchecked = cache_teacher_logits(teacher, data, check_inputs=False, verbose=0)
    offline = distiller()
    offline_unchecked = distiller()

    passes = {
        "student_fit": lambda: _one_epoch(student, data),
        "teacher_predict": lambda: _one_call(teacher.predict, data),
        "keras_kd": lambda: _one_epoch(live, data),
        "keras_kd_cached": lambda: _one_epoch(offline, cached),
        "keras_kd_cached_unchecked": lambda: _one_epoch(offline_unchecked, unchecked),
        "keras_distillation": lambda: _one_epoch(reference, data),
        "student_evaluate": lambda: _one_call(student.evaluate, data),
        "keras_kd_evaluate": lambda: _one_call(live.evaluate, data),
        "keras_distillation_evaluate": lambda: _one_call(reference.evaluate, data),
        "student_predict": lambda: _one_call(student.predict, data),
    }
    wall, cpu = _interleaved(passes, args, label)
    wall["cache"], cpu["cache"] = cache_seconds
    return {
        "jit_compile": jit_compile,
        "seconds": wall,
        "ratios": _ratios(wall),
        "cpu_seconds": cpu,
        "cpu_ratios": _ratios(cpu),
        "cache_peak_rss_bytes": peak.bytes,
    }


def _interleaved(passes, args, label):
    """Median wall and CPU time of each pass, over rounds that run every pass once.

    Rounds interleave the methods (in a rotating order) so that a change in the load
    of a shared machine affects all of them alike; the first `args.warmup` rounds
    (tracing, XLA compilation, the input cache filling) are not timed. CPU time
    (this process, all threads) is far less sensitive to other processes than wall time.
    """
    names = list(passes)
    wall = {name: [] for name in names}
    cpu = {name: [] for name in names}
    for round_index in range(args.warmup + args.epochs):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            wall_seconds, cpu_seconds = passes[name]()
            if round_index >= args.warmup:
                wall[name].append(wall_seconds)
                cpu[name].append(cpu_seconds)
        timed = round_index - args.warmup + 1
        _progress(
            f"{label} round {round_index + 1}/{args.warmup + args.epochs}"
            + (" (warm-up)" if timed <= 0 else "")
            + ": "
            + ", ".join(f"{name} {passes_time:.3f} s" for name, passes_time in _last(wall))
        )
    return (
        {name: statistics.median(times) for name, times in wall.items()},
        {name: statistics.median(times) for name, times in cpu.items()},
    )


def _last(times):
    return [(name, values[-1]) for name, values in times.items() if values]


def _ratios(seconds):
    return {
        "keras_kd / keras_distillation": seconds["keras_kd"] / seconds["keras_distillation"],
        "keras_kd / (student_fit + teacher_predict)": seconds["keras_kd"]
        / (seconds["student_fit"] + seconds["teacher_predict"]),
        "keras_kd_cached / student_fit": seconds["keras_kd_cached"] / seconds["student_fit"],
        "keras_kd_cached_unchecked / student_fit": seconds["keras_kd_cached_unchecked"]
        / seconds["student_fit"],
        "keras_kd_evaluate / keras_distillation_evaluate": seconds["keras_kd_evaluate"]
        / seconds["keras_distillation_evaluate"],
        "keras_kd_evaluate / student_evaluate": seconds["keras_kd_evaluate"]
        / seconds["student_evaluate"],
        "teacher_predict / student_predict": seconds["teacher_predict"]
        / seconds["student_predict"],
    }


def _one_epoch(model, data):
    """(wall, CPU) seconds of one `fit` epoch, from its first to its last batch."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = _clocks()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds = _elapsed(self.start)

    timer = EpochTimer()
    model.fit(data, epochs=1, callbacks=[timer], shuffle=False, verbose=0)
    return timer.seconds


def _one_call(method, data):
    """(wall, CPU) seconds of one `predict` or `evaluate` pass."""
    start = _clocks()
    method(data, verbose=0)
    return _elapsed(start)


def _clocks():
    return time.perf_counter(), time.process_time()


def _elapsed(start):
    wall, cpu = _clocks()
    return wall - start[0], cpu - start[1]


class _PeakRss:
    """Peak resident-memory growth over a block, sampled every 2 ms (Linux; else None)."""

    _STATM = "/proc/self/statm"

    def __enter__(self):
        self.bytes = None
        self._running = os.path.exists(self._STATM)
        if self._running:
            self._baseline = self._peak = self._rss()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc_info):
        if self._running:
            self._running = False
            self._thread.join()
            self.bytes = max(self._peak - self._baseline, 0)

    def _sample(self):
        while self._running:
            self._peak = max(self._peak, self._rss())
            time.sleep(0.002)

    def _rss(self):
        with open(self._STATM) as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# --- models and data ----------------------------------------------------------------




def _student(args):
    import keras

    # The same initial weights for every student, so each method trains the same model.
    keras.utils.set_random_seed(1)
    return mlp(args.features, args.student_units, args.classes, "student")




def _forward_multiply_adds(features, units, classes):
    widths = [features, *units, classes]
    return sum(a * b for a, b in zip(widths[:-1], widths[1:]))


def _cost_ratio(args):
    return _forward_multiply_adds(
        args.features, args.teacher_units, args.classes
    ) / _forward_multiply_adds(args.features, args.student_units, args.classes)


def _cache_memory(args, peak_rss_bytes):
    # RSS growth also counts TensorFlow's own allocations while tracing the teacher
    # pass (first call especially); the formula is what the cache keeps.
    bytes_per_logit = 4  # float32, the default; dtype="float16" halves it
    return {
        "samples": args.samples,
        "classes": args.classes,
        "bytes_per_logit": bytes_per_logit,
        "logits_bytes": args.samples * args.classes * bytes_per_logit,
        "measured_peak_rss_growth_bytes_per_call": peak_rss_bytes,
    }


# --- output ---------------------------------------------------------------------------


def _table(figures):
    runs = figures["runs"]
    header = "| | " + " | ".join(f"jit_compile={'on' if r['jit_compile'] else 'off'}" for r in runs)
    lines = [header + " | goal |", "|---" * (len(runs) + 2) + "|"]
    for name in runs[0]["seconds"]:
        cells = " | ".join(_seconds_cell(r, name) for r in runs)
        lines.append(f"| {name} (wall, CPU) | {cells} | |")
    for kind, suffix in (("ratios", ""), ("cpu_ratios", " (CPU time)")):
        for name in runs[0][kind]:
            cells = " | ".join(f"{r[kind][name]:.2f}" for r in runs)
            goal = f"<= {_GOALS[name]}" if name in _GOALS else ""
            lines.append(f"| {name}{suffix} | {cells} | {goal} |")
    memory = figures["cache_memory"]
    machine = figures["machine"]
    peaks = memory["measured_peak_rss_growth_bytes_per_call"]
    lines += [
        "",
        f"Cached logits: {memory['samples']} samples x {memory['classes']} classes x "
        f"{memory['bytes_per_logit']} bytes = {memory['logits_bytes'] / 2**20:.1f} MiB; "
        "measured peak RSS growth during each cache_teacher_logits call (TensorFlow's "
        "tracing included): "
        + ", ".join(f"{peak / 2**20:.1f} MiB" if peak is not None else "n/a" for peak in peaks),
        f"Machine: {machine['cpu']}, {machine['cpus']} CPUs, {machine['platform']}; load "
        f"average {machine['load_average_start']} at start, {machine['load_average_end']} "
        f"at end; keras {machine['keras']}, tensorflow {machine['tensorflow']}.",
    ]
    return "\n".join(lines)


def _seconds_cell(run, name):
    return f"{run['seconds'][name]:.3f} s, {run['cpu_seconds'][name]:.3f} s"


def _progress(message):
    print(f"[bench] {message}", file=sys.stderr, flush=True)




def _machine():
    import keras
    import tensorflow as tf

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            names = [
                line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")
            ]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    gpus = [device.name for device in tf.config.list_physical_devices("GPU")]
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "gpus": gpus,
        "platform": platform.platform(),
        "keras": keras.__version__,
        "tensorflow": tf.__version__,
        "load_average_start": load_average(),
    }




def _units(text):
    import argparse

    try:
        widths = tuple(int(part) for part in text.split(","))
    except ValueError:
        widths = ()
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"must be comma-separated widths >= 1, got {text!r}")
    return widths
