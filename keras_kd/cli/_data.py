"""Datasets of `keras-kd reproduce`: MNIST-1D (the offline default), the digits, and
tensorflow_datasets.

Every dataset comes back as float32 inputs and int32 labels, split into train /
validation / test: MNIST-1D as sequences of shape (N, 40, 1), standardised by its
generator; images as (N, H, W, C) in [0, 1]. The validation split chooses the
hyperparameters and fits temperature scaling; the test split is only used for the
reported numbers.
"""

import contextlib
import dataclasses
import random
import socket

import numpy as np

from keras_kd.cli import _extras
from keras_kd.cli._config import CANONICAL_MNIST1D
from keras_kd.cli._config import DEFAULT_DATASET
from keras_kd.cli._config import DIGITS

_DIGITS_DESCRIPTION = "scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes)"
_OFFLINE_HINT = (f"run offline with the default `--dataset {DEFAULT_DATASET}` (MNIST-1D, "
                 f"generated locally) or `--dataset {DIGITS}`")
# Where tensorflow_datasets downloads from (its own mirror); probed before a download
# so that an offline machine fails in seconds, not after minutes of retries.
_DOWNLOAD_PROBE = ("storage.googleapis.com", 443)
_PROBE_TIMEOUT_SECONDS = 3.0


class DatasetUnavailableError(RuntimeError):
    """The dataset could not be loaded (offline, or not an image classifier); the
    message is one line that names the offline default."""


@dataclasses.dataclass
class Dataset:
    name: str
    description: str
    num_classes: int
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def input_shape(self):
        return self.x_train.shape[1:]

    def sizes(self):
        return {"train": len(self.y_train), "validation": len(self.y_val), "test": len(self.y_test)}


def required_modules(config):
    """[(import name, purpose)] that loading `config.dataset` needs, to check up front."""
    if config.dataset in (DEFAULT_DATASET, CANONICAL_MNIST1D):
        return [("mnist1d", "the MNIST-1D task (`--dataset mnist1d`, the default)")]
    if config.dataset == DIGITS:
        return [("sklearn", "the digits task (`--dataset digits`)")]
    return [("tensorflow_datasets", f"`--dataset {config.dataset}`")]


def load_dataset(config):
    """Loads `config.dataset` and splits it with `config.split_seed`."""
    if config.dataset == DEFAULT_DATASET:
        dataset = _load_mnist1d(config)
    elif config.dataset == CANONICAL_MNIST1D:
        dataset = _load_canonical_mnist1d(config)
    elif config.dataset == DIGITS:
        dataset = _load_digits(config)
    else:
        dataset = _load_tfds(config)
    return _cap_train(dataset, config.max_train_examples)


def generate_mnist1d(num_examples, seed):
    """MNIST-1D examples from `mnist1d.data.make_dataset`, offline.

    `make_dataset` builds every example from ten hard-coded templates (no download;
    only `get_dataset` downloads, and it is not used), in the generator's own order,
    and standardises the whole set. It reseeds NumPy's and Python's global random
    state, which is saved and restored here so the caller's is left alone.

    Returns:
        (x, y): float32 of shape (N, 40, 1) and int32 of shape (N,), N = num_examples.
    """
    data = _extras.require("mnist1d.data", "the MNIST-1D task (`--dataset mnist1d`)")
    args = data.get_dataset_args()
    # make_dataset draws num_samples // 10 examples per class.
    args.num_samples = 10 * -(-num_examples // 10)
    args.seed = seed
    with _global_random_state_kept():
        generated = data.make_dataset(args)
    x = np.concatenate([generated["x"], generated["x_test"]]).astype(np.float32)
    y = np.concatenate([generated["y"], generated["y_test"]]).astype(np.int32)
    return x[:num_examples, :, np.newaxis], y[:num_examples]


def _load_mnist1d(config):
    sizes = (config.mnist1d_train_examples, config.mnist1d_validation_examples,
             config.mnist1d_test_examples)
    x, y = generate_mnist1d(sum(sizes), config.mnist1d_seed)
    # The generator shuffles the classes; `split_seed` draws which example goes where.
    order = np.random.default_rng(config.split_seed).permutation(len(y))
    train, validation, test = np.split(order, np.cumsum(sizes)[:-1])
    description = (f"MNIST-1D (Greydanus 2020), {sum(sizes):,} sequences of length 40 "
                   f"generated offline by mnist1d (seed {config.mnist1d_seed}), 10 classes")
    return Dataset(DEFAULT_DATASET, description, 10, x[train], y[train],
                   x[validation], y[validation], x[test], y[test])


def _load_canonical_mnist1d(config):
    data = _extras.require("mnist1d.data", "the MNIST-1D task (`--dataset mnist1d_canonical`)")
    args = data.get_dataset_args()
    with _global_random_state_kept():
        # The package's default arguments (5,000 examples, seed 42, 80 % train) are
        # the ones the paper's published split was made with.
        generated = data.make_dataset(args)
    x_train = generated["x"].astype(np.float32)[..., np.newaxis]
    y_train = generated["y"].astype(np.int32)
    order = np.random.default_rng(config.split_seed).permutation(len(y_train))
    num_val = max(1, int(round(config.validation_fraction * len(y_train))))
    val_index, train_index = order[:num_val], order[num_val:]
    description = ("MNIST-1D canonical split (Greydanus 2020: 4,000 train / 1,000 test, "
                   "regenerated offline by mnist1d with its default arguments), 10 classes")
    return Dataset(CANONICAL_MNIST1D, description, 10,
                   x_train[train_index], y_train[train_index],
                   x_train[val_index], y_train[val_index],
                   generated["x_test"].astype(np.float32)[..., np.newaxis],
                   generated["y_test"].astype(np.int32))


@contextlib.contextmanager
def _global_random_state_kept():
    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        yield
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)


def _load_digits(config):
    datasets = _extras.require("sklearn.datasets", "the digits task (`--dataset digits`)")
    model_selection = _extras.require("sklearn.model_selection",
                                      "the digits task (`--dataset digits`)")
    load_digits, train_test_split = datasets.load_digits, model_selection.train_test_split

    digits = load_digits()
    # Pixel values are integers 0..16.
    images = (digits.images / 16.0).astype(np.float32)[..., np.newaxis]
    labels = digits.target.astype(np.int32)
    x_rest, x_test, y_rest, y_test = train_test_split(
        images, labels, test_size=config.test_fraction, stratify=labels,
        random_state=config.split_seed,
    )
    # The validation share is of the whole dataset, hence rescaled to what is left.
    validation_share = config.validation_fraction / (1.0 - config.test_fraction)
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=validation_share, stratify=y_rest,
        random_state=config.split_seed,
    )
    return Dataset(DIGITS, _DIGITS_DESCRIPTION, 10,
                   x_train, y_train, x_val, y_val, x_test, y_test)


def _load_tfds(config):
    tfds = _extras.require("tensorflow_datasets", f"`--dataset {config.dataset}`",
                           install='pip install tensorflow-datasets')

    name = config.dataset
    offline_hint = _OFFLINE_HINT
    try:
        builder = tfds.builder(name, data_dir=config.data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise DatasetUnavailableError(
            f"tensorflow_datasets has no dataset {name!r}; {offline_hint}."
        ) from None
    image_key, label_key = _supervised_keys(builder, name, offline_hint)
    if not builder.is_prepared() and not network_reachable():
        host, port = _DOWNLOAD_PROBE
        raise DatasetUnavailableError(
            f"{name!r} is not in the tensorflow_datasets directory {str(builder.data_dir)!r} "
            f"and there is no network ({host}:{port} unreachable within "
            f"{_PROBE_TIMEOUT_SECONDS:.0f} s) to download it; prepare it on a connected "
            f"machine and pass --data-dir, or {offline_hint}."
        )
    try:
        builder.download_and_prepare()
        train = builder.as_dataset(split="train", as_supervised=True)
        test = builder.as_dataset(split="test", as_supervised=True)
        x_train, y_train = _to_arrays(tfds, train)
        x_test, y_test = _to_arrays(tfds, test)
    except Exception as error:  # Network, disk and parsing errors alike: one line.
        reason = " ".join(f"{type(error).__name__}: {error}".split())[:200]
        raise DatasetUnavailableError(
            f"Could not download or read {name!r} through tensorflow_datasets ({reason}); "
            f"{offline_hint}."
        ) from None
    num_classes = builder.info.features[label_key].num_classes
    order = np.random.default_rng(config.split_seed).permutation(len(y_train))
    num_val = max(1, int(round(config.validation_fraction * len(y_train))))
    val_index, train_index = order[:num_val], order[num_val:]
    description = f"tensorflow_datasets {name!r} ({image_key} -> {label_key}, {num_classes} classes)"
    return Dataset(name, description, num_classes,
                   x_train[train_index], y_train[train_index],
                   x_train[val_index], y_train[val_index], x_test, y_test)


def network_reachable():
    """Whether tensorflow_datasets' download mirror answers within a few seconds."""
    try:
        with socket.create_connection(_DOWNLOAD_PROBE, timeout=_PROBE_TIMEOUT_SECONDS):
            return True
    except OSError:  # DNS failure, refused, unreachable, timed out
        return False


def _supervised_keys(builder, name, offline_hint):
    keys = builder.info.supervised_keys
    features = builder.info.features
    if not keys or len(keys) != 2 or not all(isinstance(key, str) for key in keys):
        raise DatasetUnavailableError(
            f"{name!r} has no (image, label) supervised keys, so it is not an image "
            f"classification dataset; {offline_hint}."
        )
    image_key, label_key = keys
    image_shape = getattr(features[image_key], "shape", None)
    is_image = image_shape is not None and len(image_shape) == 3 and None not in image_shape
    if not is_image or not hasattr(features[label_key], "num_classes"):
        raise DatasetUnavailableError(
            f"{name!r} is not a fixed-size image classification dataset "
            f"({image_key}: {image_shape}); {offline_hint}."
        )
    return image_key, label_key


def _to_arrays(tfds, dataset):
    images, labels = [], []
    for image_batch, label_batch in tfds.as_numpy(dataset.batch(1024)):
        images.append(image_batch)
        labels.append(label_batch)
    images = np.concatenate(images)
    scale = float(np.iinfo(images.dtype).max) if np.issubdtype(images.dtype, np.integer) else 1.0
    images = images.astype(np.float32) / scale
    return images, np.concatenate(labels).astype(np.int32)


def _cap_train(dataset, max_train_examples):
    if max_train_examples is None or len(dataset.y_train) <= max_train_examples:
        return dataset
    return dataclasses.replace(
        dataset,
        x_train=dataset.x_train[:max_train_examples],
        y_train=dataset.y_train[:max_train_examples],
    )
