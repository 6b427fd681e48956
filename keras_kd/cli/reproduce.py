"""`keras-kd reproduce`: the seed papers' experiments end to end, offline.

On MNIST-1D (generated locally), trains for each seed a CNN teacher and two students
(a thinner CNN, and an MLP far below the teacher), each from scratch and under
Hinton's KD, label smoothing, teacher-free KD (virtual teacher, born-again),
defective KD, KD from a label-smoothed teacher, FitNets hints, DKD, DIST and KD on
standardized logits, plus reversed KD into the teacher's architecture. KD's T and
alpha and the smoothing eps are chosen on the validation split first. Measures test
accuracy, NLL, ECE and ECE after temperature scaling; decides each paper's claim from
95 % intervals over seeds and test examples; writes results.json, results.md and PNGs
to --output.

    keras-kd reproduce                          # MNIST-1D, 3 seeds, offline
    keras-kd reproduce --quick                  # 1 seed, few epochs: a first look
    keras-kd reproduce --dataset mnist1d_canonical   # the paper's 4,000 / 1,000 split
    keras-kd reproduce --dataset digits         # scikit-learn's 8x8 digits
    keras-kd reproduce --dataset mnist --set max_train_examples=10000
    keras-kd reproduce --set kd_temperature=4 --set kd_alpha=0.9   # fixed, not tuned
"""

import argparse
import os
import shlex
import sys
import time

from keras_kd.cli import _config
from keras_kd.cli import _extras
from keras_kd.cli import _io

DEFAULT_OUTPUT = "runs/reproduce"


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "reproduce",
        help="run the seed papers' experiments offline and write a table and pictures",
        description=__doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n", 1)[1],
        epilog="Config keys for --set (with their defaults; see "
        "keras_kd/cli/_config.py for what each means):\n" + _config.field_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--dataset",
        help=f"'{_config.DEFAULT_DATASET}' (default, generated offline), "
        f"'{_config.CANONICAL_MNIST1D}' (the paper's 4,000 / 1,000 split), "
        f"'{_config.DIGITS}' (offline) or a tensorflow_datasets image-classification name "
        "(mnist, fashion_mnist, cifar10, ...; needs the data or a network)",
    )
    parser.add_argument("--seeds", type=int, help="number of seeds (default 3)")
    parser.add_argument("--epochs", type=int, help="epochs of every fully trained model")
    parser.add_argument("--quick", action="store_true",
                        help="one seed, few epochs, no tuning: a first look, about 2 min on 2 "
                        "cores; --seeds, --epochs and --set still win")
    parser.add_argument("--output", default=DEFAULT_OUTPUT,
                        help=f"output directory (default {DEFAULT_OUTPUT})")
    parser.add_argument("--data-dir", help="tensorflow_datasets data directory")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        dest="assignments", help="override a config key (repeatable)")
    parser.add_argument("--verbose", action="store_true",
                        help="Keras progress bars for every model, besides one line per model")
    parser.set_defaults(func=run)
    return parser


def build_config(args):
    """The config from the defaults, then --quick, then --set, then explicit flags."""
    overrides = dict(_config.QUICK_OVERRIDES) if args.quick else {}
    overrides.update(explicit_overrides(args))
    return _config.ReproduceConfig().with_overrides(overrides)


def explicit_overrides(args):
    """{key: value} the user gave with --set or a flag; --quick never overrides them,
    and tuning never changes them."""
    overrides = {}
    for assignment in args.assignments:
        key, value = _config.parse_assignment(assignment)
        overrides[key] = value
    for key in ("dataset", "seeds", "epochs", "data_dir"):
        value = getattr(args, key)
        if value is not None:
            overrides[key] = value
    return overrides


def run(args):
    """Runs the reproduction; returns the exit status (2 for bad input or no data).

    Everything that can fail without training (config values, the output directory,
    optional packages, the data and its classes) is checked first.
    """
    try:
        config = build_config(args)
        fixed = set(explicit_overrides(args))
        output_dir = _io.check_output_dir(args.output)
        _extras.require("matplotlib", "the pictures of `keras-kd reproduce`")
        from keras_kd.cli import _data

        for module_name, purpose in _data.required_modules(config):
            _extras.require(module_name, purpose)
    except (ValueError, _extras.MissingDependencyError) as error:
        return _fail(error)

    from keras_kd.cli import _experiments
    from keras_kd.cli import _plots
    from keras_kd.cli import _report

    start = time.perf_counter()
    machine = {"cpus": _cpu_count(), "load_average_start": _load_average()}
    command = _command_line(args)
    try:
        dataset = _data.load_dataset(config)
        config.check_classes(dataset.num_classes)
    except (ValueError, _data.DatasetUnavailableError, _extras.MissingDependencyError) as error:
        return _fail(error)
    sizes = dataset.sizes()
    total = (_experiments.tuning_models(config, fixed)
             + config.seeds * _experiments.models_per_seed())
    _log(f"{dataset.description}: train {sizes['train']}, validation {sizes['validation']}, "
         f"test {sizes['test']}; seeds {config.seed_list}; {config.epochs} epochs; "
         f"{total} models to train; output {output_dir}")
    progress = _experiments.Progress(total, _log)

    runner, tuned_how = None, {}
    if config.tune:
        config, tuned_how, runner = _experiments.tune(
            dataset, config, config.first_seed, fixed, progress, log=_log,
            verbose=1 if args.verbose else 0,
        )
    records, outputs, projection = [], {}, None
    for seed in config.seed_list:
        seed_records, seed_outputs = _experiments.run_seed(
            dataset, config, seed, progress, log=_log, keep_artifacts=projection is None,
            verbose=1 if args.verbose else 0, runner=runner if seed == config.first_seed else None,
        )
        records.extend(seed_records)
        projection = projection or seed_outputs.pop("projection")
        outputs[seed] = seed_outputs

    first = config.seed_list[0]
    summary = _report.summarize(records)
    checks = _report.findings(outputs, dataset.y_test, config.num_bins, config.bootstrap_samples)
    measurable = _report.measurability(records)
    hyperparameters = _experiments.provenance_of_defaults(config, fixed, tuned_how)
    pictures = _plots.save_all(output_dir, {**outputs[first], "projection": projection},
                               summary, dataset, config, first)
    wall_seconds = time.perf_counter() - start
    machine["load_average_end"] = _load_average()
    report = dict(config=config, dataset=dataset, summary=summary, checks=checks,
                  command=command, wall_seconds=wall_seconds, hyperparameters=hyperparameters,
                  measurable=measurable, machine=machine)
    _report.write_json(output_dir / "results.json", records=records, **report)
    markdown = _report.write_markdown(output_dir / "results.md", pictures=pictures,
                                      quick=args.quick, **report)
    print(markdown, flush=True)
    _log(f"wrote {output_dir / 'results.json'}, {output_dir / 'results.md'} and "
         f"{len(pictures)} pictures in {wall_seconds / 60:.1f} min")
    return 0


def _cpu_count():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on every platform
        return os.cpu_count()


def _load_average():
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def _log(line):
    print(line, flush=True)


def _fail(error):
    print(f"keras-kd reproduce: error: {error}", file=sys.stderr, flush=True)
    return 2


def _command_line(args):
    """The command that repeats this run (the flags as given, in a fixed order)."""
    parts = ["keras-kd", "reproduce"]
    for flag in ("dataset", "seeds", "epochs"):
        if getattr(args, flag) is not None:
            parts += [f"--{flag}", str(getattr(args, flag))]
    if args.quick:
        parts.append("--quick")
    if args.data_dir is not None:
        parts += ["--data-dir", args.data_dir]
    for assignment in args.assignments:
        parts += ["--set", assignment]
    parts += ["--output", str(args.output)]
    return " ".join(shlex.quote(part) for part in parts)
