"""Every docstring example of keras_kd runs.

The examples are written as a user would write them, with the names a user has at hand
(`teacher`, `student`, `model`, `x`, `y`, `x_val`, ...). This file supplies those names
as tiny models and data (a 4-feature, 3-class problem; layers named as the examples
name them), runs each example in a fresh namespace inside a temporary directory (the
examples save files), and checks:

- every example runs without an exception;
- where an example shows an expected output, the output matches (doctest's ELLIPSIS
  and NORMALIZE_WHITESPACE); an example that shows none may print anything (progress
  bars, a `History` object).

An example that cannot run here must say so with `# doctest: +SKIP` and a reason.
"""

import doctest
import functools
import importlib
import pkgutil
import re
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_kd

NUM_FEATURES, NUM_CLASSES, NUM_EXAMPLES = 4, 3, 32

# The command line has no docstring examples and imports its optional dependencies;
# `__main__` runs it on import.
SKIPPED_PACKAGES = ("keras_kd.cli", "keras_kd.__main__")


def _public_modules():
    names = ["keras_kd"]
    for info in pkgutil.walk_packages(keras_kd.__path__, prefix="keras_kd."):
        if not info.name.startswith(SKIPPED_PACKAGES):
            names.append(info.name)
    return names


def _doctests():
    finder = doctest.DocTestFinder(exclude_empty=True)
    found = {}
    for name in _public_modules():
        module = importlib.import_module(name)
        for test in finder.find(module):
            # A name re-exported by a package is found twice: keep its defining module's.
            if test.examples and test.filename and test.name not in found:
                found[test.name] = (name, test)
    return sorted(found.values(), key=lambda item: item[1].name)


def _mlp(name, hidden_name, seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((NUM_FEATURES,))
    hidden = keras.layers.Dense(8, activation="relu", name=hidden_name)(inputs)
    return keras.Model(inputs, keras.layers.Dense(NUM_CLASSES)(hidden), name=name)


def _user_namespace():
    """The names the examples use, fresh for each docstring.

    `model` is compiled, as a user's model is by the time it is fitted or calibrated;
    it has the teacher's weights, and every label set is the teacher's argmax with a
    quarter of the labels redrawn, so the logits rank the truth better than chance
    (temperature scaling rightly refuses logits that do not).
    """
    teacher = _mlp("teacher", "teacher_hidden", seed=0)
    model = _mlp("model", "hidden", seed=0)
    model.compile("adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    student = _mlp("student", "student_hidden", seed=1)
    rng = np.random.default_rng(0)

    def features_and_labels():
        x = rng.normal(size=(NUM_EXAMPLES, NUM_FEATURES)).astype("float32")
        labels = np.argmax(teacher(x), axis=-1)
        redrawn = rng.random(NUM_EXAMPLES) < 0.25
        labels[redrawn] = rng.integers(0, NUM_CLASSES, int(redrawn.sum()))
        return x, labels

    (x, y), (x_val, y_val), (x_test, y_test) = (features_and_labels() for _ in range(3))
    val_logits = np.asarray(model(x_val))
    distiller = keras_kd.Distiller(teacher, student)
    distiller.compile("adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return {
        "keras": keras,
        "np": np,
        "keras_kd": keras_kd,
        "teacher": teacher,
        "student": student,
        "model": model,
        "x": x,
        "y": y,
        "x_train": x,
        "y_train": y,
        "x_val": x_val,
        "y_val": y_val,
        "x_test": x_test,
        "y_test": y_test,
        # Held-out logits, as calibrators are fitted on and applied to.
        "val_logits": val_logits,
        "test_logits": np.asarray(model(x_test)),
        "logits": val_logits,
        "labels": y_val,
        "teacher_logits": np.asarray(teacher(x_val)),
        "student_logits": np.asarray(student(x_val)),
        "scaler": keras_kd.TemperatureScaling().fit(val_logits, y_val),
        "distiller": distiller,
        "functools": functools,
    }


class _ShownOutputChecker(doctest.OutputChecker):
    """Checks the output an example shows; an example that shows none may print any."""

    def check_output(self, want, got, optionflags):
        return not want or super().check_output(want, got, optionflags)


DOCTESTS = _doctests()


def test_the_public_modules_have_examples():
    # A finder that found nothing would make the test below pass vacuously.
    assert len(DOCTESTS) >= 10, [test.name for _, test in DOCTESTS]


@pytest.mark.parametrize(
    "module_name, test", DOCTESTS, ids=[test.name for _, test in DOCTESTS]
)
def test_docstring_example_runs(module_name, test, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    test.globs = {**vars(importlib.import_module(module_name)), **_user_namespace()}
    runner = doctest.DocTestRunner(
        checker=_ShownOutputChecker(),
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
    )
    report = []
    runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)


FRONT_PAGES = ("README.md", "docs/getting-started.md")


@pytest.mark.parametrize("page", FRONT_PAGES)
def test_the_code_of_the_front_pages_runs(page, tmp_path, monkeypatch):
    """The README's screen of code and the getting-started page, as a user pastes them."""
    root = Path(__file__).resolve().parents[1]
    text = (root / page).read_text(encoding="utf-8")
    blocks = re.findall(r"^```python\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    assert blocks, f"{page} shows no Python code"
    monkeypatch.chdir(tmp_path)
    namespace = _user_namespace()
    for block in blocks:
        exec(compile(block, page, "exec"), namespace)  # noqa: S102 - our own docs
