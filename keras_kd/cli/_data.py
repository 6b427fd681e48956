"""Datasets of `keras-kd reproduce`: the offline default and tensorflow_datasets.

Every dataset comes back as float32 images in [0, 1] of shape (N, H, W, C) and int32
labels, split into train / validation / test. The validation split is only used to
fit temperature scaling; the test split is only used for the reported numbers.
"""

import dataclasses

import numpy as np

from keras_kd.cli._config import DEFAULT_DATASET

_DIGITS_DESCRIPTION = "scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes)"


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


def load_dataset(config):
    """Loads `config.dataset` and splits it with `config.split_seed`."""
    if config.dataset == DEFAULT_DATASET:
        dataset = _load_digits(config)
    else:
        dataset = _load_tfds(config)
    return _cap_train(dataset, config.max_train_examples)


def _load_digits(config):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

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
    return Dataset(DEFAULT_DATASET, _DIGITS_DESCRIPTION, 10,
                   x_train, y_train, x_val, y_val, x_test, y_test)


def _load_tfds(config):
    import tensorflow_datasets as tfds

    name = config.dataset
    offline_hint = f"run offline with the default `--dataset {DEFAULT_DATASET}` ({_DIGITS_DESCRIPTION})"
    try:
        builder = tfds.builder(name, data_dir=config.data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise DatasetUnavailableError(
            f"tensorflow_datasets has no dataset {name!r}; {offline_hint}."
        ) from None
    image_key, label_key = _supervised_keys(builder, name, offline_hint)
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
