"""`keras-kd bench`: what distillation costs, against its floor and `keras.distillation`.

The floor of a live distillation epoch is one student training epoch plus one
compiled teacher forward over the same data (`student_fit + teacher_forward`): the
work every distiller does, as two separate programs (one step that runs both may be
cheaper, where XLA fuses across them, or dearer: `student_fit_live_kd` measures it).
From cached teacher logits it is the student epoch alone. One
process measures, on synthetic data, for an MLP or a CNN pair (a ResNet-style teacher
and a thinner plain student on 32x32x3 images): `student.fit`, the compiled teacher
forward, `teacher.predict`, `keras_kd.Distiller.fit` live and from
`cache_teacher_logits` (arrays, and a `tf.data` pipeline under each `check_inputs`),
the floor of cached distillation (`student_fit_kd`: the student's own `fit` with
Hinton's term added to its loss, on the same cached logits), the least a live
distiller does inside `fit` (`student_fit_live_kd`: a plain model tracking the student
and the frozen teacher, whose loss adds Hinton's term on the teacher's logits of the
same step),
`keras.distillation.Distiller.fit` with `LogitsDistillation(temperature=T,
loss=keras.losses.KLDivergence())` (its correct configuration) on the same models and
data, and `evaluate` of both distillers and the student. Each round times every
contender's epoch once, in a rotating order, so a shared machine's load hits all
alike; the figures are medians over the timed rounds. `--backends tensorflow,jax`
measures each backend in its own subprocess (`KERAS_BACKEND`). `--terms` also times
`keras_kd.Distiller.fit` with each distillation term (standardized KD, DKD, DIST,
reverse KL, JSD) against Hinton's `DistillationLoss`, from cached teacher logits by
default, so that the teacher's forward does not hide the term's own cost.

    keras-kd bench                                  # MLP, jit_compile off and on
    keras-kd bench --workload cnn --backends tensorflow,jax
    keras-kd bench --quick --json bench.json        # a smoke run, figures to a file
    keras-kd bench --terms                          # + each term's cost against KD
"""

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from keras_kd.cli._bench_common import JIT_MODES
from keras_kd.cli._io import atomic_write_text
from keras_kd.cli._io import check_output_file
from keras_kd.cli._bench_common import add_jit_compile_argument
from keras_kd.cli._bench_common import add_size_arguments
from keras_kd.cli._bench_common import load_average
from keras_kd.cli._bench_common import mlp
from keras_kd.cli._bench_common import positive_float
from keras_kd.cli._bench_common import positive_int
from keras_kd.cli._bench_common import resolve_sizes
from keras_kd.cli._bench_common import synthetic_arrays
from keras_kd.cli._bench_common import unit_interval

_FLOOR = "student_fit + teacher_forward"
_GOALS = {
    f"keras_kd / ({_FLOOR})": 1.0,
    "keras_kd / keras_distillation": 1.0,
    "keras_kd_cached / student_fit": 1.05,
    "keras_kd_cached / student_fit_kd": 1.05,
}
_BACKENDS = ("tensorflow", "jax")
# `--terms`: which teacher logits the term comparison trains on. "cached" (the default
# when the flag is given) isolates the term; "live" adds the teacher's forward to
# every contender alike, as a user distilling live pays it.
_TERM_TEACHERS = {"cached": ("cached",), "live": ("live",), "both": ("cached", "live")}
_REFERENCE_TERM = "kd"
_CHILD_TIMEOUT_SECONDS = 4 * 3600  # a hard stop for one backend's subprocess


def _units(text):
    import argparse

    try:
        widths = tuple(int(part) for part in text.split(","))
    except ValueError:
        widths = ()
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"must be comma-separated widths >= 1, got {text!r}")
    return widths


def _backends(text):
    import argparse

    names = tuple(part.strip() for part in text.split(","))
    unknown = [name for name in names if name not in _BACKENDS]
    if unknown or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(
            f"must be distinct names among {', '.join(_BACKENDS)}, got {text!r}"
        )
    return names


# Sizes per workload: the teacher costs 10-50x the student's forward multiply-adds,
# as in practice. `--student-units`/`--teacher-units` are hidden widths for the MLP and
# channels per stage for the CNN (two residual blocks per stage, stride 2 between).
_WORKLOAD_SIZES = {
    "mlp": {
        "samples": 8192, "batch_size": 256, "features": 512, "classes": 100,
        "student_units": (512,), "teacher_units": (1536, 1536), "epochs": 5, "warmup": 1,
    },
    "cnn": {
        "samples": 2048, "batch_size": 128, "image_size": 32, "classes": 10,
        "student_units": (16, 32), "teacher_units": (32, 64), "epochs": 5, "warmup": 1,
    },
}
_QUICK = {
    "mlp": {
        "samples": 1024, "batch_size": 128, "features": 32, "classes": 10,
        "student_units": (32,), "teacher_units": (100, 96), "epochs": 2, "warmup": 1,
    },
    "cnn": {
        "samples": 256, "batch_size": 64, "image_size": 16, "classes": 10,
        "student_units": (4, 8), "teacher_units": (8, 16), "epochs": 2, "warmup": 1,
    },
}
_SIZES = (
    ("samples", positive_int, "mlp 8192, cnn 2048", "examples"),
    ("batch_size", positive_int, "mlp 256, cnn 128", "batch size"),
    ("features", positive_int, "512", "MLP input features"),
    ("image_size", positive_int, "32", "CNN image side (3 channels)"),
    ("classes", positive_int, "mlp 100, cnn 10", "classes"),
    ("student_units", _units, "mlp 512, cnn 16,32", "student widths"),
    ("teacher_units", _units, "mlp 1536,1536, cnn 32,64", "teacher widths"),
    ("epochs", positive_int, "5", "timed rounds (epochs of each contender)"),
    ("warmup", positive_int, "1", "untimed rounds"),
)


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "bench",
        help="time distillation against its floor and keras.distillation",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument(
        "--workload", choices=tuple(_WORKLOAD_SIZES), default="mlp", help="default mlp"
    )
    add_size_arguments(parser, _SIZES)
    parser.add_argument("--temperature", type=positive_float, default=4.0, help="default 4.0")
    parser.add_argument(
        "--alpha", type=unit_interval, default=0.9,
        help="weight of the distillation term, in [0, 1], default 0.9",
    )
    parser.add_argument(
        "--backends", type=_backends, default=None,
        help="comma-separated Keras backends (tensorflow, jax), each measured in its own "
        "process; default the current one (KERAS_BACKEND)",
    )
    add_jit_compile_argument(parser, "every model and distiller")
    parser.add_argument(
        "--quick", action="store_true",
        help="small sizes and 2 rounds (flags given explicitly are kept): a smoke run",
    )
    parser.add_argument(
        "--terms", choices=tuple(_TERM_TEACHERS), nargs="?", const="cached", default=None,
        help="also time Distiller.fit with each distillation term (kd_standardized, dkd, "
        "dist, kd_reverse_kl, kd_jsd) against Hinton's KD (kd): from cached teacher "
        "logits (the default when the flag is given alone: the term's own cost), with "
        "the live teacher, or both; needs --classes >= 3 (DKD)",
    )
    parser.add_argument("--json", metavar="PATH", help="write the figures to this JSON file")
    parser.set_defaults(func=run)
    return parser


def run(args):
    """Checks every argument, then measures; returns 0, or 2 for a bad argument."""
    try:
        _resolve(args)
    except ValueError as error:
        print(f"keras-kd bench: error: {error}", file=sys.stderr)
        return 2
    if args.backends != (_current_backend(),):
        figures = _run_in_subprocesses(args)
    else:
        figures = _measure_backend(args)
    print(_table(figures))
    if args.json:
        atomic_write_text(args.json, json.dumps(figures, indent=2, default=list))
        _progress(f"figures written to {args.json}")
    return 0


def _resolve(args):
    """Fills the sizes and checks the combinations and the output path: before any work."""
    sizes = {name: None for name, *_ in _SIZES}
    sizes.update(_WORKLOAD_SIZES[args.workload])
    resolve_sizes(args, sizes, _QUICK[args.workload])
    unused = "image_size" if args.workload == "mlp" else "features"
    if getattr(args, unused) is not None:
        raise ValueError(f"--{unused.replace('_', '-')} does not apply to --workload "
                         f"{args.workload}.")
    if args.terms is not None and args.classes < 3:
        raise ValueError(
            f"--terms times DKD, whose non-target term needs at least 3 classes; got "
            f"--classes {args.classes}. Use --classes 3 or more, or leave out --terms."
        )
    if args.backends is None:
        args.backends = (_current_backend(),)
    if args.jit_compile is None:
        args.jit_compile = "both"
    elif args.jit_compile != "on" and "jax" in args.backends:
        raise ValueError(
            f"--jit-compile {args.jit_compile} asks for uncompiled steps, which the JAX "
            "backend does not benchmark (it always compiles); use --jit-compile on, or "
            "leave it out."
        )
    if args.json:
        check_output_file(args.json, "--json")


def _current_backend():
    # keras_kd's package import has loaded Keras, whose backend is fixed from here on.
    import keras

    return keras.backend.backend()


def _jit_modes(args):
    return (True,) if _current_backend() == "jax" else JIT_MODES[args.jit_compile]


# --- one backend, in this process ---------------------------------------------------------


def _measure_backend(args):
    import keras

    x, y = synthetic_arrays(args.samples, _input_shape(args), args.classes)
    machine = _machine()
    keras.utils.set_random_seed(0)
    teacher = _teacher(args)
    student = _student(args)
    cost_ratio = _multiply_adds(teacher) / _multiply_adds(student)
    _progress(
        f"{keras.backend.backend()}, {args.workload}: {args.samples} samples of "
        f"{_input_shape(args)}, {args.classes} classes, batch {args.batch_size}; student "
        f"{list(args.student_units)}, teacher {list(args.teacher_units)} ({cost_ratio:.1f}x "
        f"the student's forward multiply-adds); {args.warmup} warm-up + {args.epochs} "
        f"timed rounds; load average {machine['load_average_start']}"
    )
    runs = [_measure_all(args, teacher, (x, y), jit) for jit in _jit_modes(args)]
    machine["load_average_end"] = load_average()
    peaks = [run.pop("cache_peak_rss_bytes") for run in runs]
    return {
        "machine": machine,
        "config": _config(args),
        "flop_ratio_teacher_to_student": cost_ratio,
        "runs": runs,
        "cache_memory": _cache_memory(args, peaks),
        "goals": _GOALS,
    }


def _measure_all(args, teacher, arrays, jit_compile):
    import keras

    from keras_kd.teacher_cache import cache_teacher_logits

    label = f"{keras.backend.backend()} jit_compile={'on' if jit_compile else 'off'}"
    x, y = arrays
    data = _pipeline(x, y, args.batch_size)
    hard_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    compile_args = {"optimizer": "adam", "loss": hard_loss, "jit_compile": jit_compile}

    def distiller():
        return _keras_kd_distiller(args, teacher, compile_args)

    student = _student(args)
    student.compile(**compile_args)
    teacher.compile(loss=hard_loss, jit_compile=jit_compile)
    live = distiller()
    reference = _keras_distillation(args, teacher, compile_args)

    with _PeakRss() as peak:
        start = _clocks()
        # In-memory arrays, batched by keras_kd: a snapshot, never re-checked.
        cached = cache_teacher_logits(teacher, (x, y), batch_size=args.batch_size, verbose=0)
        cache_seconds = _elapsed(start)
    _progress(f"{label} cache: {cache_seconds[0]:.3f} s (once, tracing included)")
    # A tf.data pipeline can change between epochs: each `check_inputs` and its cost.
    pipelines = {
        name: cache_teacher_logits(teacher, data, check_inputs=check, verbose=0)
        for name, check in (
            ("keras_kd_cached_pipeline", True),
            ("keras_kd_cached_every_batch", "every_batch"),
            ("keras_kd_cached_unchecked", False),
        )
    }
    forward = _compiled_forward(teacher, jit_compile)

    passes = {
        "student_fit": lambda: _one_epoch(student, data),
        "teacher_forward": lambda: _timed(forward, data),
        "teacher_predict": lambda: _timed(lambda d: teacher.predict(d, verbose=0), data),
        "keras_kd": lambda: _one_epoch(live, data),
        "student_fit_live_kd": lambda model=_student_with_live_kd(
            args, compile_args, teacher
        ): _one_epoch(model, data),
        "keras_distillation": lambda: _one_epoch(reference, data),
        "keras_kd_cached": lambda model=distiller(): _one_epoch(model, cached),
        "student_fit_kd": lambda model=_student_with_kd(args, compile_args): _one_epoch(
            model, cached
        ),
        **{
            name: lambda model=distiller(), dataset=dataset: _one_epoch(model, dataset)
            for name, dataset in pipelines.items()
        },
        "student_evaluate": lambda: _timed(lambda d: student.evaluate(d, verbose=0), data),
        "keras_kd_evaluate": lambda: _timed(lambda d: live.evaluate(d, verbose=0), data),
        "keras_distillation_evaluate": lambda: _timed(
            lambda d: reference.evaluate(d, verbose=0), data
        ),
    }
    wall, cpu = _interleaved(passes, args, label)
    wall["cache"], cpu["cache"] = cache_seconds
    figures = {
        "backend": keras.backend.backend(),
        "jit_compile": jit_compile,
        "seconds": wall,
        "ratios": _ratios(wall),
        "cpu_seconds": cpu,
        "cpu_ratios": _ratios(cpu),
        "cache_peak_rss_bytes": peak.bytes,
    }
    if args.terms is not None:
        datasets = {"cached": cached, "live": data}
        figures["terms"] = _measure_terms(args, teacher, datasets, compile_args, label)
    return figures


def _distillation_terms(temperature):
    """The terms `--terms` compares, by name; Hinton's KD (`kd`) is the reference.

    Fresh instances on each call: a Distiller sets its temperature on its terms.
    """
    import keras_kd

    return {
        _REFERENCE_TERM: keras_kd.DistillationLoss(temperature),
        "kd_standardized": keras_kd.DistillationLoss(temperature, standardize=True),
        "dkd": keras_kd.DecoupledDistillationLoss(temperature),
        "dist": keras_kd.DISTLoss(temperature),
        "kd_reverse_kl": keras_kd.DistillationLoss(temperature, divergence="reverse_kl"),
        "kd_jsd": keras_kd.DistillationLoss(temperature, divergence="jsd"),
    }


def _measure_terms(args, teacher, datasets, compile_args, label):
    """Epoch times of `Distiller.fit` with each term, and their ratios to Hinton's KD.

    The same student weights, data, optimizer and alpha for every term; all terms, from
    cached and live teacher logits alike, are interleaved in the same rounds.
    """
    import keras_kd

    passes = {}
    for teacher_logits in _TERM_TEACHERS[args.terms]:
        for name, term in _distillation_terms(args.temperature).items():
            model = keras_kd.Distiller(
                teacher, _student(args), alpha=args.alpha, distillation_loss=term
            )
            model.compile(**compile_args)
            passes[f"{teacher_logits} {name}"] = (
                lambda model=model, dataset=datasets[teacher_logits]: _one_epoch(model, dataset)
            )
    wall, cpu = _interleaved(passes, args, f"{label} terms")
    return {
        teacher_logits: {
            "seconds": _section(wall, teacher_logits),
            "ratios": _term_ratios(_section(wall, teacher_logits)),
            "cpu_seconds": _section(cpu, teacher_logits),
            "cpu_ratios": _term_ratios(_section(cpu, teacher_logits)),
        }
        for teacher_logits in _TERM_TEACHERS[args.terms]
    }


def _section(seconds, teacher_logits):
    prefix = f"{teacher_logits} "
    return {
        name[len(prefix):]: value for name, value in seconds.items() if name.startswith(prefix)
    }


def _term_ratios(seconds):
    reference = seconds[_REFERENCE_TERM]
    return {
        f"{name} / {_REFERENCE_TERM}": value / reference
        for name, value in seconds.items()
        if name != _REFERENCE_TERM
    }


def _compiled_forward(model, jit_compile):
    """A function that runs `model(x, training=False)` over a dataset, compiled.

    The tightest teacher pass: one compiled step per batch, no outputs gathered
    (unlike `predict`, which converts and concatenates every batch on the host); the
    last result is waited for, so asynchronous dispatch is counted.
    """
    import keras

    if keras.backend.backend() == "jax":
        import jax

        def logits(trainable, non_trainable, x):
            return model.stateless_call(trainable, non_trainable, x, training=False)[0]

        step = jax.jit(logits)

        def run(dataset):
            trainable = [v.value for v in model.trainable_variables]
            non_trainable = [v.value for v in model.non_trainable_variables]
            out = None
            for x, _ in dataset.as_numpy_iterator():
                out = step(trainable, non_trainable, x)
            out.block_until_ready()

        return run

    import tensorflow as tf

    step = tf.function(lambda x: model(x, training=False), jit_compile=jit_compile)

    def run(dataset):
        # A Python loop over compiled steps, as `fit` runs: measured no slower than a
        # loop traced into the graph (which cost 1.8x the wall time on 2 CPUs).
        out = None
        for x, _ in dataset:
            out = step(x)
        out.numpy()

    return run


def _interleaved(passes, args, label):
    """Median wall and CPU time of each pass, over rounds that run every pass once.

    Rounds interleave the contenders (in a rotating order) so that a change in the
    load of a shared machine affects all of them alike; the first `args.warmup` rounds
    (tracing, XLA compilation, the input cache filling) are not timed. CPU time (this
    process, all threads) is far less sensitive to other processes than wall time.
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
        _progress(
            f"{label} round {round_index + 1}/{args.warmup + args.epochs}"
            + (" (warm-up)" if round_index < args.warmup else "")
            + ": "
            + ", ".join(f"{name} {values[-1]:.3f} s" for name, values in wall.items() if values)
        )
    return (
        {name: statistics.median(times) for name, times in wall.items()},
        {name: statistics.median(times) for name, times in cpu.items()},
    )


def _ratios(seconds):
    floor = seconds["student_fit"] + seconds["teacher_forward"]
    student = seconds["student_fit"]
    return {
        f"keras_kd / ({_FLOOR})": seconds["keras_kd"] / floor,
        "keras_kd / keras_distillation": seconds["keras_kd"] / seconds["keras_distillation"],
        f"keras_distillation / ({_FLOOR})": seconds["keras_distillation"] / floor,
        "keras_kd / student_fit_live_kd": seconds["keras_kd"] / seconds["student_fit_live_kd"],
        f"student_fit_live_kd / ({_FLOOR})": seconds["student_fit_live_kd"] / floor,
        "keras_kd / (student_fit + teacher_predict)": seconds["keras_kd"]
        / (student + seconds["teacher_predict"]),
        "teacher_predict / teacher_forward": seconds["teacher_predict"]
        / seconds["teacher_forward"],
        "keras_kd_cached / student_fit": seconds["keras_kd_cached"] / student,
        "keras_kd_cached / student_fit_kd": seconds["keras_kd_cached"]
        / seconds["student_fit_kd"],
        "student_fit_kd / student_fit": seconds["student_fit_kd"] / student,
        "keras_kd_cached_pipeline / student_fit": seconds["keras_kd_cached_pipeline"] / student,
        "keras_kd_cached_every_batch / student_fit": seconds["keras_kd_cached_every_batch"]
        / student,
        "keras_kd_cached_unchecked / student_fit": seconds["keras_kd_cached_unchecked"]
        / student,
        "keras_kd_cached / keras_distillation": seconds["keras_kd_cached"]
        / seconds["keras_distillation"],
        "keras_kd_evaluate / keras_distillation_evaluate": seconds["keras_kd_evaluate"]
        / seconds["keras_distillation_evaluate"],
        "keras_kd_evaluate / student_evaluate": seconds["keras_kd_evaluate"]
        / seconds["student_evaluate"],
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


def _timed(function, data):
    """(wall, CPU) seconds of `function(data)`."""
    start = _clocks()
    function(data)
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


# --- several backends, one subprocess each --------------------------------------------------


def _run_in_subprocesses(args):
    """Runs this benchmark once per backend in a child process and merges the figures."""
    merged = None
    with tempfile.TemporaryDirectory(prefix="keras-kd-bench-") as directory:
        for backend in args.backends:
            path = os.path.join(directory, f"{backend}.json")
            command = [sys.executable, "-m", "keras_kd", "bench", *_child_argv(args, backend),
                       "--json", path]
            _progress(f"{backend}: {' '.join(command[1:])}")
            package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
            env = {
                **os.environ,
                "KERAS_BACKEND": backend,
                "PYTHONPATH": os.pathsep.join(
                    filter(None, [os.path.dirname(package_root), os.environ.get("PYTHONPATH")])
                ),
            }
            subprocess.run(command, env=env, check=True, timeout=_CHILD_TIMEOUT_SECONDS,
                           stdout=subprocess.DEVNULL)
            with open(path) as file:
                figures = json.load(file)
            if merged is None:
                merged = figures
            else:
                merged["runs"] += figures["runs"]
                merged["cache_memory"]["measured_peak_rss_growth_bytes_per_call"] += figures[
                    "cache_memory"]["measured_peak_rss_growth_bytes_per_call"]
                merged["machine"]["load_average_end"] = figures["machine"]["load_average_end"]
    merged["config"]["backends"] = list(args.backends)
    return merged


def _child_argv(args, backend):
    argv = ["--workload", args.workload, "--backends", backend]
    for name, *_ in _SIZES:
        value = getattr(args, name)
        if value is not None:
            text = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
            argv += [f"--{name.replace('_', '-')}", text]
    argv += ["--temperature", repr(args.temperature), "--alpha", repr(args.alpha)]
    if backend != "jax":
        argv += ["--jit-compile", args.jit_compile]
    if args.terms is not None:
        argv += ["--terms", args.terms]
    return argv


# --- models and data ---------------------------------------------------------------------


def _input_shape(args):
    if args.workload == "mlp":
        return (args.features,)
    return (args.image_size, args.image_size, 3)


def _teacher(args):
    if args.workload == "mlp":
        return mlp(args.features, args.teacher_units, args.classes, "teacher")
    return _resnet(args.image_size, args.teacher_units, args.classes, "teacher")


def _student(args):
    import keras

    # The same initial weights for every student, so each method trains the same model.
    keras.utils.set_random_seed(1)
    if args.workload == "mlp":
        return mlp(args.features, args.student_units, args.classes, "student")
    return _plain_cnn(args.image_size, args.student_units, args.classes, "student")


def _pipeline(x, y, batch_size):
    """The benchmark's `tf.data` input: batched, cached in memory and prefetched, so that
    the input pipeline costs every contender the same."""
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size).cache()
    return data.prefetch(tf.data.AUTOTUNE)


def _keras_kd_distiller(args, teacher, compile_args):
    """`keras_kd.Distiller` with its default objective (Hinton's KD), compiled."""
    import keras_kd

    model = keras_kd.Distiller(
        teacher, _student(args), temperature=args.temperature, alpha=args.alpha
    )
    model.compile(**compile_args)
    return model


def _keras_distillation(args, teacher, compile_args):
    """`keras.distillation.Distiller` with keras_kd's default objective, compiled."""
    import keras

    model = keras.distillation.Distiller(
        teacher=teacher,
        student=_student(args),
        distillation_losses=keras.distillation.LogitsDistillation(
            temperature=args.temperature, loss=keras.losses.KLDivergence()
        ),
        # keras.distillation weights the hard term; keras_kd's alpha the soft one.
        student_loss_weight=1.0 - args.alpha,
    )
    model.compile(**compile_args)
    return model


def _student_with_kd(args, compile_args):
    """The floor of cached distillation: the student, its own `fit`, the KD term added.

    A plain `keras.Model` over the student's layers whose `compute_loss` is `(1 - alpha)`
    times the compiled hard loss plus `alpha` times the batch mean of Hinton's term
    (`keras_kd.losses.distillation_loss`, the function every keras_kd path uses), on
    the same cached dataset as the Distiller: the least work any distiller of these
    cached logits does. What `Distiller.fit` costs beyond it is the Distiller's own
    bookkeeping (the per-term and hard-loss trackers it logs, the targets' routing).
    """
    import keras

    from keras_kd.targets import LABELS
    from keras_kd.targets import TEACHER_LOGITS

    objective = _kd_objective(args, compile_args)

    class StudentWithKD(keras.Model):
        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
            return objective(y[LABELS], y[TEACHER_LOGITS], y_pred)

    student = _student(args)
    model = StudentWithKD(student.inputs, student.outputs, name="student_with_kd")
    model.compile(**compile_args)
    return model


def _student_with_live_kd(args, compile_args, teacher):
    """The floor of live distillation inside `fit`: the student and a frozen teacher.

    A plain `keras.Model` that tracks the student and the (frozen) teacher as its
    layers, calls the student, and adds to the compiled hard loss Hinton's term on the
    teacher's logits computed in the same step: `_student_with_kd`'s objective, on the
    Distiller's data. It is what one training step must do when the teacher runs in it
    (the teacher's weights part of the step's state, as any tracked layer's are), so
    `keras_kd / student_fit_live_kd` is what the Distiller costs beyond the work itself,
    and `student_fit_live_kd / (student_fit + teacher_forward)` what running the
    teacher inside the student's step costs on this backend.
    """
    import keras

    objective = _kd_objective(args, compile_args)

    class StudentWithLiveKD(keras.Model):
        def __init__(self, student, teacher):
            super().__init__(name="student_with_live_kd")
            self.student = student
            self.teacher = teacher
            # Frozen as the Distiller freezes it: its weights are state, not trained.
            self.teacher.trainable = False

        def call(self, x, training=None):
            return self.student(x, training=training)

        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
            teacher_logits = keras.ops.stop_gradient(self.teacher(x, training=False))
            return objective(y, teacher_logits, y_pred)

    model = StudentWithLiveKD(_student(args), teacher)
    model.compile(**compile_args)
    return model


def _kd_objective(args, compile_args):
    """`(1 - alpha) hard + alpha mean(KD)`: the Distiller's default objective, by hand."""
    import keras

    from keras_kd import losses

    alpha, temperature, hard_loss = args.alpha, args.temperature, compile_args["loss"]

    def objective(labels, teacher_logits, student_logits):
        soft = keras.ops.mean(losses.distillation_loss(teacher_logits, student_logits, temperature))
        return (1.0 - alpha) * hard_loss(labels, student_logits) + alpha * soft

    return objective


def _resnet(image_size, widths, classes, name):
    """A small ResNet (He et al. 2016): a 3x3 stem, two basic blocks per width."""
    from keras import layers

    import keras

    def conv_bn(x, filters, kernel, strides=1):
        x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False)(x)
        return layers.BatchNormalization()(x)

    inputs = keras.Input((image_size, image_size, 3))
    x = layers.ReLU()(conv_bn(inputs, widths[0], 3))
    for stage, filters in enumerate(widths):
        for block in range(2):
            strides = 2 if stage > 0 and block == 0 else 1
            shortcut = x
            if strides != 1 or shortcut.shape[-1] != filters:
                shortcut = conv_bn(x, filters, 1, strides)
            residual = layers.ReLU()(conv_bn(x, filters, 3, strides))
            x = layers.ReLU()(layers.Add()([shortcut, conv_bn(residual, filters, 3)]))
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(classes)(x), name=name)


def _plain_cnn(image_size, widths, classes, name):
    """One 3x3 ReLU convolution per width, stride 2 after the first, then a linear head."""
    import keras
    from keras import layers

    model = [keras.Input((image_size, image_size, 3))]
    for index, filters in enumerate(widths):
        model.append(
            layers.Conv2D(filters, 3, strides=1 if index == 0 else 2, padding="same",
                          activation="relu")
        )
    model += [layers.GlobalAveragePooling2D(), layers.Dense(classes)]
    return keras.Sequential(model, name=name)


def _multiply_adds(model):
    """Forward multiply-adds per example of the Dense and Conv2D layers of `model`."""
    import math

    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dense):
            total += layer.kernel.shape[0] * layer.kernel.shape[1]
        elif isinstance(layer, keras.layers.Conv2D):
            output_positions = math.prod(layer.output.shape[1:-1])
            total += output_positions * math.prod(layer.kernel.shape)
    return total


def _cache_memory(args, peak_rss_bytes):
    # RSS growth also counts TensorFlow's own allocations while tracing the teacher
    # pass (and the arrays' snapshot); the formula is what the cache keeps.
    bytes_per_logit = 4  # float32, the default; dtype="float16" halves it
    return {
        "samples": args.samples,
        "classes": args.classes,
        "bytes_per_logit": bytes_per_logit,
        "logits_bytes": args.samples * args.classes * bytes_per_logit,
        "measured_peak_rss_growth_bytes_per_call": peak_rss_bytes,
    }


def _config(args):
    return {key: value for key, value in vars(args).items() if key not in ("func", "command")}


# --- output --------------------------------------------------------------------------------


def _table(figures):
    runs = figures["runs"]
    titles = [f"{run['backend']} jit {'on' if run['jit_compile'] else 'off'}" for run in runs]
    lines = ["| | " + " | ".join(titles) + " | goal |", "|---" * (len(runs) + 2) + "|"]
    for name in runs[0]["seconds"]:
        cells = " | ".join(
            f"{run['seconds'][name]:.3f} s, {run['cpu_seconds'][name]:.3f} s" for run in runs
        )
        lines.append(f"| {name} (wall, CPU) | {cells} | |")
    for kind, suffix in (("ratios", ""), ("cpu_ratios", " (CPU time)")):
        for name in runs[0][kind]:
            cells = " | ".join(f"{run[kind][name]:.2f}" for run in runs)
            goal = f"<= {_GOALS[name]}" if name in _GOALS else ""
            lines.append(f"| {name}{suffix} | {cells} | {goal} |")
    if "terms" in runs[0]:
        lines += ["", *_terms_table(runs, titles)]
    memory = figures["cache_memory"]
    machine = figures["machine"]
    peaks = memory["measured_peak_rss_growth_bytes_per_call"]
    lines += [
        "",
        f"Workload {figures['config']['workload']}; teacher "
        f"{figures['flop_ratio_teacher_to_student']:.1f}x the student's forward multiply-adds.",
        f"Cached logits: {memory['samples']} samples x {memory['classes']} classes x "
        f"{memory['bytes_per_logit']} bytes = {memory['logits_bytes'] / 2**20:.2f} MiB; "
        "measured peak RSS growth during each cache_teacher_logits call (tracing and the "
        "arrays' snapshot included): "
        + ", ".join(f"{peak / 2**20:.1f} MiB" if peak is not None else "n/a" for peak in peaks),
        f"Machine: {machine['cpu']}, {machine['cpus']} CPUs, {machine['platform']}; load "
        f"average {machine['load_average_start']} at start, {machine['load_average_end']} "
        f"at end; keras {machine['keras']}, tensorflow {machine['tensorflow']}.",
    ]
    return "\n".join(lines)


def _terms_table(runs, titles):
    """`Distiller.fit` epochs with each term, and their ratios to Hinton's KD."""
    lines = [
        "| distillation term, teacher logits | " + " | ".join(titles) + " |",
        "|---" * (len(runs) + 1) + "|",
    ]
    for teacher_logits, section in runs[0]["terms"].items():
        for name in section["seconds"]:
            cells = " | ".join(
                f"{run['terms'][teacher_logits]['seconds'][name]:.3f} s, "
                f"{run['terms'][teacher_logits]['cpu_seconds'][name]:.3f} s"
                for run in runs
            )
            lines.append(f"| {name}, {teacher_logits} (wall, CPU) | {cells} |")
    for kind, suffix in (("ratios", ""), ("cpu_ratios", " (CPU time)")):
        for teacher_logits, section in runs[0]["terms"].items():
            for name in section[kind]:
                cells = " | ".join(
                    f"{run['terms'][teacher_logits][kind][name]:.2f}" for run in runs
                )
                lines.append(f"| {name}, {teacher_logits}{suffix} | {cells} |")
    return lines


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
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "keras": keras.__version__,
        "tensorflow": tf.__version__,
        "load_average_start": load_average(),
    }
