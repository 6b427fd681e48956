"""The `keras-kd` command line. The library never imports this package.

Each subcommand is a module here that defines `add_parser(subparsers)`, which
registers its arguments and sets `func` to the callable that runs it.
"""

import argparse
import importlib
import sys

import keras_kd

# Each module only registers its arguments when imported; its heavy work (models,
# data, TensorFlow graphs) starts in the `func` it sets.
_SUBCOMMANDS = ("reproduce", "bench", "bench_ece")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-kd",
        description="Knowledge distillation, label smoothing and calibration for Keras 3.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {keras_kd.__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in _SUBCOMMANDS:
        importlib.import_module(f"keras_kd.cli.{name}").add_parser(subparsers)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
