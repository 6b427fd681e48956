"""The command line's optional dependencies, imported lazily and checked up front.

`keras-kd reproduce` needs scikit-learn (the digits), matplotlib (the pictures) and
mnist1d (the default task), none of which the library itself needs. They are checked
before any data is loaded or model trained, so a missing one costs a second and a
one-line message naming the extra to install, not a traceback after minutes of work.
"""

import importlib

REPRODUCE_EXTRA = 'pip install "keras-kd[reproduce]"'


class MissingDependencyError(RuntimeError):
    """An optional dependency is missing; the message is one line naming the extra."""


def require(module_name, purpose, install=REPRODUCE_EXTRA):
    """Imports and returns `module_name`, or raises `MissingDependencyError`.

    Args:
        module_name: the import name ("sklearn", "matplotlib", "mnist1d", ...).
        purpose: what needs it, for the message ("the default MNIST-1D task").
        install: the command that installs it, default the `[reproduce]` extra.
    """
    try:
        return importlib.import_module(module_name)
    except ImportError as error:
        raise MissingDependencyError(
            f"{purpose} needs the optional package {module_name!r} ({error}); "
            f"install it with: {install}"
        ) from None
