"""`keras-kd bench` and `bench-ece` check every argument before any work, never let
`--quick` override an explicit flag, and write their result files atomically."""

import json
import math
import os

import pytest

from keras_kd.cli import _bench_common
from keras_kd.cli import _io
from keras_kd.cli import bench
from keras_kd.cli import bench_ece
from keras_kd.cli import build_parser
from keras_kd.cli import main


def _parse(*argv):
    return build_parser().parse_args(list(argv))


@pytest.fixture
def no_measuring(monkeypatch):
    """Fails the test if a benchmark would start measuring (build models, train)."""

    def refuse(*args, **kwargs):
        raise AssertionError("the benchmark started although an argument was bad")

    monkeypatch.setattr(bench, "_measure_backend", refuse)
    monkeypatch.setattr(bench, "_run_in_subprocesses", refuse)


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--temperature", "nan"),
        ("--temperature", "inf"),
        ("--temperature", "0"),
        ("--temperature", "-2"),
        ("--alpha", "1.5"),
        ("--alpha", "nan"),
        ("--samples", "0"),
        ("--samples", "many"),
        ("--teacher-units", "64,0"),
        ("--backends", "tensorflow,torch"),
        ("--backends", "jax,jax"),
        ("--terms", "teacher"),
    ],
)
def test_bad_values_are_rejected_when_parsed(flag, value, capsys, no_measuring):
    with pytest.raises(SystemExit) as exit_info:
        _parse("bench", flag, value)
    assert exit_info.value.code == 2
    assert flag in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--json", "{missing}/bench.json"], "does not exist"),
        (["--json", "{directory}"], "is a directory"),
        (["--workload", "cnn", "--features", "64"], "--features does not apply"),
        (["--workload", "mlp", "--image-size", "16"], "--image-size does not apply"),
        (["--backends", "jax", "--jit-compile", "off"], "JAX backend"),
        (["--terms", "--classes", "2"], "needs at least 3 classes"),
    ],
)
def test_bad_combinations_and_output_paths_fail_before_any_work(
    argv, message, tmp_path, capsys, no_measuring
):
    argv = [
        part.format(missing=tmp_path / "missing", directory=tmp_path) for part in argv
    ]
    assert main(["bench", *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "missing").exists()


def test_quick_never_overrides_an_explicit_flag():
    args = _parse("bench", "--quick", "--samples", "300", "--teacher-units", "7,5")
    bench._resolve(args)
    assert args.samples == 300
    assert args.teacher_units == (7, 5)
    assert args.batch_size == bench._QUICK["mlp"]["batch_size"]  # the rest is quick's

    args = _parse("bench", "--workload", "cnn", "--epochs", "9")
    bench._resolve(args)
    assert args.epochs == 9
    assert args.samples == bench._WORKLOAD_SIZES["cnn"]["samples"]
    assert args.features is None  # no MLP sizes leak into the CNN run

    args = _parse("bench-ece", "--quick", "--samples", "512", "--repeats", "4")
    defaults = {name: default for name, _, default, _ in bench_ece._SIZES}
    _bench_common.resolve_sizes(args, defaults, bench_ece._QUICK)
    assert (args.samples, args.repeats) == (512, 4)
    assert args.warmup == bench_ece._QUICK["warmup"]


def test_result_files_are_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    path = tmp_path / "bench.json"
    _io.atomic_write_text(str(path), '{"old": 1}')
    assert path.read_text() == '{"old": 1}'

    def interrupted(source, target):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _io.atomic_write_text(str(path), '{"new": 2}')
    assert path.read_text() == '{"old": 1}'  # the previous file, intact
    assert os.listdir(tmp_path) == ["bench.json"]  # no temporary file left behind


def test_unwritable_directory_is_reported(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # root ignores permissions
            pytest.skip("running as a user who can write anywhere")
        with pytest.raises(ValueError, match="is not writable"):
            _io.check_output_file(str(locked / "bench.json"))
    finally:
        locked.chmod(0o700)


def test_terms_flag_alone_times_the_terms_from_cached_logits():
    assert _parse("bench").terms is None  # the default run is unchanged
    assert _parse("bench", "--terms").terms == "cached"
    args = _parse("bench", "--terms", "both", "--quick")
    bench._resolve(args)
    assert args.terms == "both"
    argv = bench._child_argv(args, "jax")  # each backend's subprocess times them too
    assert argv[argv.index("--terms") + 1] == "both"


def test_quick_terms_run_reports_a_finite_positive_ratio_for_every_term(tmp_path):
    path = tmp_path / "terms.json"
    argv = ["bench", "--quick", "--jit-compile", "off", "--epochs", "1", "--samples", "256",
            "--terms", "both", "--json", str(path)]
    assert main(argv) == 0
    (run,) = json.loads(path.read_text())["runs"]
    others = ["kd_standardized", "dkd", "dist", "kd_reverse_kl", "kd_jsd"]
    assert list(run["terms"]) == ["cached", "live"]
    for section in run["terms"].values():
        assert list(section["seconds"]) == ["kd", *others]
        for kind in ("ratios", "cpu_ratios"):
            assert list(section[kind]) == [f"{name} / kd" for name in others]
            assert all(math.isfinite(r) and r > 0 for r in section[kind].values())
    # The term contenders stay out of the existing figures.
    assert not any("dkd" in name for name in run["seconds"])


@pytest.mark.parametrize("teacher_logits", ["cached", "live"])
def test_the_floors_train_the_distillers_objective(teacher_logits):
    """`student_fit_kd` and `student_fit_live_kd`, the floors of cached and of live
    distillation, must do the Distiller's work: from the same initial weights, one
    epoch of each on the same data gives the same student."""
    import keras
    import numpy as np
    import tensorflow as tf

    import keras_kd

    args = _parse("bench", "--quick", "--samples", "256")
    bench._resolve(args)
    x, y = _bench_common.synthetic_arrays(args.samples, bench._input_shape(args), args.classes)
    teacher = bench._teacher(args)
    compile_args = {
        "optimizer": "sgd",
        "loss": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    }
    if teacher_logits == "cached":
        data = keras_kd.cache_teacher_logits(
            teacher, (x, y), batch_size=args.batch_size, verbose=0
        )
        floor = bench._student_with_kd(args, compile_args)
        floor_weights = floor.get_weights
    else:
        data = tf.data.Dataset.from_tensor_slices((x, y)).batch(args.batch_size)
        floor = bench._student_with_live_kd(args, compile_args, teacher)
        floor_weights = floor.student.get_weights
    teacher_weights = teacher.get_weights()
    distiller = keras_kd.Distiller(
        teacher, bench._student(args), temperature=args.temperature, alpha=args.alpha
    )
    distiller.compile(**compile_args)
    for model in (floor, distiller):
        model.fit(data, epochs=1, verbose=0)
    for trained, expected in zip(distiller.student.get_weights(), floor_weights()):
        np.testing.assert_allclose(trained, expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(floor_weights()[0], bench._student(args).get_weights()[0])
    for after, before in zip(teacher.get_weights(), teacher_weights):
        np.testing.assert_array_equal(after, before)  # the teacher stays frozen
