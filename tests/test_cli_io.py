"""The command line's file handling and up-front checks: atomic result files, output
paths, optional dependencies and `--version`, all before any training."""

import os
import sys
import time

import pytest

import keras_kd
from keras_kd.cli import _data
from keras_kd.cli import _extras
from keras_kd.cli import _io
from keras_kd.cli import main


# --- atomic writes -----------------------------------------------------------------


def test_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "results.json"
    target.write_text("old")
    _io.atomic_write_text(target, "new ✓")
    assert target.read_text(encoding="utf-8") == "new ✓"
    _io.atomic_write_bytes(target, b"\x89PNG")
    assert target.read_bytes() == b"\x89PNG"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["results.json"]
    # The usual permissions of a new file, not mkstemp's 0600.
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask


@pytest.mark.parametrize("interruption", [KeyboardInterrupt, RuntimeError])
def test_an_interrupted_write_keeps_the_previous_file(tmp_path, interruption):
    target = tmp_path / "results.json"
    target.write_text('{"complete": true}')
    with pytest.raises(interruption):
        with _io.atomic_output(target) as file:
            file.write('{"comple')
            raise interruption()
    assert target.read_text() == '{"complete": true}'
    assert sorted(path.name for path in tmp_path.iterdir()) == ["results.json"]


def test_atomic_output_refuses_other_modes(tmp_path):
    with pytest.raises(ValueError, match="mode must be 'w' or 'wb', got 'a'"):
        with _io.atomic_output(tmp_path / "x", "a"):
            pass


# --- output paths -------------------------------------------------------------------


def test_output_dir_checks(tmp_path):
    assert _io.check_output_dir(tmp_path / "new" / "deeper").is_dir()
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    with pytest.raises(ValueError, match="--output '.*a_file' is a file, not a directory"):
        _io.check_output_dir(a_file)
    with pytest.raises(ValueError, match="--output '.*a_file/below' is not a writable directory"):
        _io.check_output_dir(a_file / "below")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="needs POSIX permissions that apply (not root)")
def test_output_dir_that_is_not_writable(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        with pytest.raises(ValueError, match="is not a writable directory"):
            _io.check_output_dir(locked)
    finally:
        locked.chmod(0o700)


def test_output_file_checks(tmp_path):
    assert _io.check_output_file(tmp_path / "bench.json") == tmp_path / "bench.json"
    assert not (tmp_path / "bench.json").exists()  # checked, not created
    with pytest.raises(ValueError, match="--json '.*missing/bench.json': directory .* does not"):
        _io.check_output_file(tmp_path / "missing" / "bench.json")
    with pytest.raises(ValueError, match="is a directory; give a file name"):
        _io.check_output_file(tmp_path)


# --- the command line fails in seconds, before any training -------------------------


def _one_error_line(capsys):
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("keras-kd reproduce: error:")
    return lines[0]


def test_reproduce_refuses_an_output_that_is_a_file(tmp_path, capsys):
    a_file = tmp_path / "results"
    a_file.write_text("keep me")
    start = time.perf_counter()
    assert main(["reproduce", "--output", str(a_file)]) == 2
    assert time.perf_counter() - start < 10.0
    assert "is a file, not a directory" in _one_error_line(capsys)
    assert a_file.read_text() == "keep me"


@pytest.mark.parametrize(
    "assignment, message",
    [
        ("learning_rate=inf", "`learning_rate` must be finite, got inf"),
        ("hint_weight=nan", "`hint_weight` must be finite, got nan"),
        ("kd_temperature_grid=1,inf", "`kd_temperature_grid` must be finite"),
        ("kd_alpha_grid=0.5,1.5", "`kd_alpha_grid` must be one or more numbers in [0, 1]"),
        ("projection_classes=0,1,12", "class indices below 10 (dataset 'mnist1d' has 10"),
        ("mnist1d_test_examples=5", "`mnist1d_test_examples` must be an integer >= 10"),
        ("tfkd_correct_prob=1", "`tfkd_correct_prob` must be a number in (0, 1)"),
        ("tune=maybe", "Config key 'tune' expects bool, got 'maybe'"),
    ],
)
def test_reproduce_refuses_bad_values_before_training(tmp_path, capsys, assignment, message):
    output = tmp_path / "out"
    assert main(["reproduce", "--set", assignment, "--output", str(output)]) == 2
    assert message in _one_error_line(capsys)
    assert not output.exists()


def test_classes_are_checked_against_a_tfds_dataset_before_training():
    from keras_kd.cli import _config

    config = _config.ReproduceConfig(dataset="mnist", projection_classes=(0, 1, 12))
    with pytest.raises(ValueError, match="class indices below 10 .*'mnist' has 10 classes"):
        config.check_classes(10)
    config.check_classes(13)


def test_a_missing_extra_is_one_line_naming_it(tmp_path, capsys, monkeypatch):
    # None in sys.modules makes `import mnist1d` raise ImportError.
    monkeypatch.setitem(sys.modules, "mnist1d", None)
    monkeypatch.setitem(sys.modules, "mnist1d.data", None)
    assert main(["reproduce", "--output", str(tmp_path / "out")]) == 2
    line = _one_error_line(capsys)
    assert "'mnist1d'" in line and 'pip install "keras-kd[reproduce]"' in line
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["reproduce", "--dataset", "digits", "--output", str(tmp_path / "out")]) == 2
    assert "'matplotlib'" in _one_error_line(capsys)
    with pytest.raises(_extras.MissingDependencyError, match="pip install x"):
        _extras.require("matplotlib", "a test", install="pip install x")


def test_tfds_without_network_fails_in_seconds(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(_data, "network_reachable", lambda: False)
    start = time.perf_counter()
    status = main(["reproduce", "--dataset", "mnist", "--data-dir", str(tmp_path / "tfds"),
                   "--output", str(tmp_path / "out")])
    assert status == 2
    assert time.perf_counter() - start < 15.0
    line = _one_error_line(capsys)
    assert "'mnist' is not in the tensorflow_datasets directory" in line
    assert "no network" in line and "--dataset mnist1d" in line


def test_the_network_probe_answers_within_its_timeout():
    start = time.perf_counter()
    assert _data.network_reachable() in (True, False)
    # DNS may add a little to the connection timeout; never minutes.
    assert time.perf_counter() - start < 3 * _data._PROBE_TIMEOUT_SECONDS + 5


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"keras-kd {keras_kd.__version__}"
