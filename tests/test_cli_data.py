"""The data and config of `keras-kd reproduce`: MNIST-1D and digits splits, tfds path
(mocked, offline), one-line errors, and the config's overrides."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from keras_kd.cli import _config
from keras_kd.cli import _experiments
from keras_kd.cli import _data
from keras_kd.cli import main

# The digits tests predate MNIST-1D as the default: they name the dataset now.
DIGITS = _config.ReproduceConfig(dataset="digits")
MNIST1D = _config.ReproduceConfig()


@pytest.fixture(autouse=True)
def _network_reachable(monkeypatch):
    # Mocked tfds data needs no download; the offline probe must not refuse it.
    monkeypatch.setattr(_data, "network_reachable", lambda: True)


# --- the offline default: MNIST-1D ---------------------------------------------------


def test_mnist1d_is_the_default_and_splits_every_generated_example_once():
    import random

    assert MNIST1D.dataset == "mnist1d"
    numpy_state, python_state = np.random.get_state(), random.getstate()
    dataset = _data.load_dataset(MNIST1D)
    # make_dataset reseeds the global generators; the loader restores them.
    assert np.random.get_state()[1].tolist() == numpy_state[1].tolist()
    assert random.getstate() == python_state
    assert dataset.sizes() == {"train": 4000, "validation": 2000, "test": 8000}
    assert dataset.input_shape == (40, 1) and dataset.num_classes == 10
    x, y = _data.generate_mnist1d(14000, seed=42)
    got = sorted(row.tobytes() for split in (dataset.x_train, dataset.x_val, dataset.x_test)
                 for row in split)
    assert got == sorted(row.tobytes() for row in x)
    for split_x, split_y in ((dataset.x_train, dataset.y_train), (dataset.x_val, dataset.y_val),
                             (dataset.x_test, dataset.y_test)):
        assert split_x.dtype == np.float32 and split_y.dtype == np.int32
        # Classes balanced by the generator: each within 2 points of 10 %.
        assert np.all(np.abs(np.bincount(split_y, minlength=10) / len(split_y) - 0.1) < 0.02)
    # The generator standardises the whole set.
    assert abs(float(x.mean())) < 1e-3 and abs(float(x.std()) - 1.0) < 1e-3
    again = _data.load_dataset(MNIST1D)
    np.testing.assert_array_equal(again.x_test, dataset.x_test)


def test_mnist1d_canonical_is_the_packages_default_split():
    from mnist1d.data import get_dataset_args
    from mnist1d.data import make_dataset

    config = MNIST1D.with_overrides({"dataset": "mnist1d_canonical"})
    dataset = _data.load_dataset(config)
    assert dataset.sizes() == {"train": 3400, "validation": 600, "test": 1000}
    with _data._global_random_state_kept():  # make_dataset reseeds NumPy's global state
        reference = make_dataset(get_dataset_args())
    np.testing.assert_array_equal(dataset.x_test[..., 0], reference["x_test"].astype(np.float32))
    np.testing.assert_array_equal(dataset.y_test, reference["y_test"])
    got = sorted(row.tobytes() for row in np.concatenate([dataset.x_train, dataset.x_val]))
    assert got == sorted(row.tobytes() for row in reference["x"].astype(np.float32)[..., None])


def test_mnist1d_needs_no_network(monkeypatch):
    import socket

    def no_network(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    dataset = _data.load_dataset(MNIST1D.with_overrides({
        "mnist1d_train_examples": 50, "mnist1d_validation_examples": 20,
        "mnist1d_test_examples": 30}))
    assert dataset.sizes() == {"train": 50, "validation": 20, "test": 30}


# --- digits ---------------------------------------------------------------------------


def test_digits_split_covers_every_image_once_with_the_configured_shares():
    from sklearn.datasets import load_digits

    dataset = _data.load_dataset(DIGITS)
    sizes = dataset.sizes()
    assert sum(sizes.values()) == 1797
    # train_test_split rounds the test share up: ceil(0.25 * 1797) = 450.
    assert sizes["test"] == 450
    assert sizes["validation"] == int(np.ceil(0.15 / 0.75 * (1797 - 450)))
    assert dataset.input_shape == (8, 8, 1) and dataset.num_classes == 10
    # Every original image appears in exactly one split: compare the multisets of
    # (image bytes, label) rows against the raw data.
    raw = load_digits()
    expected = sorted(
        (image.astype(np.float32).tobytes(), int(label))
        for image, label in zip(raw.images / 16.0, raw.target)
    )
    got = sorted(
        (image[..., 0].tobytes(), int(label))
        for x, y in ((dataset.x_train, dataset.y_train), (dataset.x_val, dataset.y_val),
                     (dataset.x_test, dataset.y_test))
        for image, label in zip(x, y)
    )
    assert got == expected
    for x in (dataset.x_train, dataset.x_val, dataset.x_test):
        assert x.dtype == np.float32 and x.min() >= 0.0 and x.max() <= 1.0
    # Stratified: every class in every split, in proportions within 2 points.
    for y in (dataset.y_train, dataset.y_val, dataset.y_test):
        shares = np.bincount(y, minlength=10) / len(y)
        assert np.all(np.abs(shares - np.bincount(raw.target) / 1797) < 0.02)


def test_digits_split_is_fixed_by_split_seed():
    first = _data.load_dataset(DIGITS)
    again = _data.load_dataset(DIGITS)
    other = _data.load_dataset(DIGITS.with_overrides({"split_seed": 1}))
    np.testing.assert_array_equal(first.y_test, again.y_test)
    np.testing.assert_array_equal(first.x_train, again.x_train)
    assert not np.array_equal(first.x_test, other.x_test)


def test_max_train_examples_caps_only_the_training_split():
    dataset = _data.load_dataset(DIGITS.with_overrides({"max_train_examples": 100}))
    full = _data.load_dataset(DIGITS)
    assert dataset.sizes() == {**full.sizes(), "train": 100}
    np.testing.assert_array_equal(dataset.x_train, full.x_train[:100])


# --- tensorflow_datasets, offline --------------------------------------------------


@pytest.mark.parametrize("name, shape", [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))])
def test_tfds_dataset_loads_through_mock_data(name, shape):
    config = DIGITS.with_overrides({"dataset": name, "validation_fraction": 0.25})
    with tfds.testing.mock_data(num_examples=40):
        dataset = _data.load_dataset(config)
    assert dataset.name == name and dataset.num_classes == 10
    assert dataset.input_shape == shape
    # 40 mock training examples: 10 held out for validation, 30 left; 40 test.
    assert dataset.sizes() == {"train": 30, "validation": 10, "test": 40}
    assert dataset.x_train.dtype == np.float32
    assert 0.0 <= dataset.x_train.min() and dataset.x_train.max() <= 1.0
    assert set(np.unique(dataset.y_test)) <= set(range(10))


def test_unknown_tfds_name_is_a_one_line_error_naming_the_offline_default():
    config = DIGITS.with_overrides({"dataset": "no_such_dataset_xyz"})
    with pytest.raises(_data.DatasetUnavailableError) as info:
        _data.load_dataset(config)
    message = str(info.value)
    assert "\n" not in message
    assert "'no_such_dataset_xyz'" in message and "--dataset mnist1d" in message


def test_failed_download_is_a_one_line_error_naming_the_offline_default(monkeypatch, tmp_path):
    def offline(self, *args, **kwargs):
        raise ConnectionError("Name or service not known\n(no network)")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", offline)
    config = DIGITS.with_overrides({"dataset": "mnist", "data_dir": str(tmp_path)})
    with pytest.raises(_data.DatasetUnavailableError) as info:
        _data.load_dataset(config)
    message = str(info.value)
    assert "\n" not in message
    assert "'mnist'" in message and "ConnectionError" in message
    assert "--dataset digits" in message


def test_a_dataset_that_is_not_image_classification_is_refused():
    config = DIGITS.with_overrides({"dataset": "imdb_reviews"})
    with pytest.raises(_data.DatasetUnavailableError, match="not a fixed-size image"):
        _data.load_dataset(config)


def test_cli_reports_an_unavailable_dataset_in_one_line_with_status_2(tmp_path, capsys):
    status = main(["reproduce", "--dataset", "no_such_dataset_xyz", "--output", str(tmp_path)])
    assert status == 2
    error_lines = capsys.readouterr().err.strip().splitlines()
    assert len(error_lines) == 1
    assert error_lines[0].startswith("keras-kd reproduce: error:")
    assert "--dataset digits" in error_lines[0]


# --- the config --------------------------------------------------------------------


def test_overrides_are_parsed_by_field_type():
    config = DIGITS.with_overrides({
        "epochs": "7", "kd_temperature": "3.5", "max_train_examples": "None",
        "projection_classes": "3,4,5", "dataset": "mnist",
    })
    assert config.epochs == 7 and isinstance(config.epochs, int)
    assert config.kd_temperature == 3.5
    assert config.max_train_examples is None
    assert config.projection_classes == (3, 4, 5)
    assert config.dataset == "mnist"
    assert DIGITS.with_overrides({"max_train_examples": "500"}).max_train_examples == 500


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"no_such_key": "1"}, "Unknown config key 'no_such_key'"),
        ({"epochs": "many"}, "Config key 'epochs' expects int, got 'many'"),
        ({"epochs": "0"}, "`epochs` must be an integer >= 1, got 0"),
        ({"kd_alpha": "1.5"}, "`kd_alpha` must be a number in \\[0, 1\\], got 1.5"),
        ({"smoothing": "1.0"}, "`smoothing` must be a number in \\[0, 1\\), got 1.0"),
        ({"kd_temperature": "0"}, "`kd_temperature` must be a number > 0, got 0.0"),
        ({"test_fraction": "0.9"}, "validation_fraction \\+ test_fraction` must be below 1"),
        ({"projection_classes": "1,1,2"}, "`projection_classes` must be three distinct"),
    ],
)
def test_bad_overrides_raise_value_errors_naming_key_and_value(overrides, message):
    with pytest.raises(ValueError, match=message):
        DIGITS.with_overrides(overrides)


def test_set_needs_key_equals_value():
    assert _config.parse_assignment(" kd_alpha = 0.3 ") == ("kd_alpha", "0.3")
    with pytest.raises(ValueError, match="--set expects key=value, got 'kd_alpha'"):
        _config.parse_assignment("kd_alpha")


def test_quick_then_set_then_flags_take_precedence_in_that_order():
    from keras_kd.cli import build_parser
    from keras_kd.cli import reproduce

    args = build_parser().parse_args(
        ["reproduce", "--quick", "--set", "epochs=5", "--set", "seeds=2", "--seeds", "3"]
    )
    config = reproduce.build_config(args)
    assert config.epochs == 5  # --set beats --quick
    assert config.seeds == 3  # the explicit flag beats --set
    quick = reproduce.build_config(build_parser().parse_args(["reproduce", "--quick"]))
    assert (quick.seeds, quick.epochs, quick.tune) == (
        _config.QUICK_OVERRIDES["seeds"], _config.QUICK_OVERRIDES["epochs"], False
    )
    # Explicit flags are never overridden by --quick, whatever their order.
    args = build_parser().parse_args(["reproduce", "--epochs", "3", "--set", "tune=true",
                                      "--quick", "--seeds", "2"])
    config = reproduce.build_config(args)
    assert (config.epochs, config.tune, config.seeds) == (3, True, 2)
    assert set(reproduce.explicit_overrides(args)) == {"epochs", "tune", "seeds"}


def test_cli_rejects_a_bad_set_with_status_2(tmp_path, capsys):
    status = main(["reproduce", "--set", "kd_alpha=2", "--output", str(tmp_path)])
    assert status == 2
    assert "`kd_alpha` must be a number in [0, 1], got 2.0" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_reproduce_runs_end_to_end_on_mocked_mnist(tmp_path):
    import json

    with tfds.testing.mock_data(num_examples=64):
        status = main(["reproduce", "--dataset", "mnist", "--quick", "--set", "epochs=1",
                       "--set", "poor_teacher_steps=1", "--output", str(tmp_path)])
    assert status == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["dataset"]["name"] == "mnist"
    assert results["dataset"]["sizes"] == {"train": 54, "validation": 10, "test": 64}
    # One record per row, every row of the table (one seed under --quick).
    assert sorted(r["row"] for r in results["records"]) == sorted(_experiments.ROWS)
    # 28x28x1 inputs: the MLP student's first layer has 784 inputs.
    mlp = next(r for r in results["records"] if r["row"] == "mlp_student")
    units = results["config"]["mlp_units"]
    assert mlp["parameters"] == 784 * units + units + units * units + units + units * 10 + 10
    assert (tmp_path / "penultimate_projection.png").is_file()
