"""`keras-kd reproduce`: the seed papers' experiments end to end, offline.

Trains, for each seed, a teacher, a scratch student and the student under Hinton's
KD, label smoothing, teacher-free KD (virtual teacher, born-again), reversed and
defective KD, KD from a label-smoothed teacher and FitNets hints; measures test
accuracy, NLL, ECE and ECE after temperature scaling; writes results.json,
results.md and PNGs (reliability diagrams, a bar chart, Müller et al.'s penultimate
layer projection) to --output, and prints the table and which findings reproduced.

    keras-kd reproduce                          # sklearn digits, 3 seeds, offline
    keras-kd reproduce --quick                  # 1 seed, few epochs: a first look
    keras-kd reproduce --dataset mnist --set max_train_examples=10000
    keras-kd reproduce --set kd_temperature=4 --set kd_alpha=0.9
"""

import argparse
import pathlib
import shlex
import sys
import time

from keras_kd.cli import _config

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
        help=f"'{_config.DEFAULT_DATASET}' (default, offline) or a tensorflow_datasets "
        "image-classification name (mnist, fashion_mnist, cifar10, ...)",
    )
    parser.add_argument("--seeds", type=int, help="number of seeds (default 3)")
    parser.add_argument("--epochs", type=int, help="epochs of every fully trained model")
    parser.add_argument("--quick", action="store_true",
                        help="one seed and few epochs: a first look, under 2 minutes on 2 cores")
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
    for assignment in args.assignments:
        key, value = _config.parse_assignment(assignment)
        overrides[key] = value
    for key in ("dataset", "seeds", "epochs", "data_dir"):
        value = getattr(args, key)
        if value is not None:
            overrides[key] = value
    return _config.ReproduceConfig().with_overrides(overrides)


def run(args):
    """Runs the reproduction; returns the exit status (2 for bad input or no data)."""
    try:
        config = build_config(args)
    except ValueError as error:
        return _fail(error)

    from keras_kd.cli import _data
    from keras_kd.cli import _experiments
    from keras_kd.cli import _plots
    from keras_kd.cli import _report

    start = time.perf_counter()
    command = _command_line(args)
    try:
        dataset = _data.load_dataset(config)
    except _data.DatasetUnavailableError as error:
        return _fail(error)
    output_dir = pathlib.Path(args.output)
    output_dir.mkdir(parents=True, exist_ok=True)
    sizes = dataset.sizes()
    _log(f"{dataset.description}: train {sizes['train']}, validation {sizes['validation']}, "
         f"test {sizes['test']}; seeds {config.seed_list}; {config.epochs} epochs; "
         f"output {output_dir}")

    records, artifacts = [], None
    for seed in config.seed_list:
        seed_records, seed_artifacts = _experiments.run_seed(
            dataset, config, seed, log=_log, keep_artifacts=artifacts is None,
            verbose=1 if args.verbose else 0,
        )
        records.extend(seed_records)
        artifacts = artifacts or seed_artifacts

    summary = _report.summarize(records)
    checks = _report.findings(records)
    pictures = _plots.save_all(output_dir, artifacts, summary, dataset, config,
                               config.seed_list[0])
    wall_seconds = time.perf_counter() - start
    _report.write_json(output_dir / "results.json", config=config, dataset=dataset,
                       records=records, summary=summary, checks=checks, command=command,
                       wall_seconds=wall_seconds)
    markdown = _report.write_markdown(output_dir / "results.md", config=config, dataset=dataset,
                                      summary=summary, checks=checks, pictures=pictures,
                                      command=command, wall_seconds=wall_seconds,
                                      quick=args.quick)
    print(markdown, flush=True)
    _log(f"wrote {output_dir / 'results.json'}, {output_dir / 'results.md'} and "
         f"{len(pictures)} pictures in {wall_seconds / 60:.1f} min")
    return 0


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
