"""Training callbacks: calibration of the model on held-out data at every epoch."""

from __future__ import annotations

import importlib.util
import io
import itertools
import os
import sys
import warnings
from typing import Any
from typing import Optional
from typing import Union

import keras
import numpy as np
from keras import ops

from keras_kd import _binning
from keras_kd import _keras_compat
from keras_kd import _validation
from keras_kd import calibration
from keras_kd import targets as targets_module
from keras_kd.calibration import _inputs
from keras_kd.calibration import _measures

_DIAGRAM_SCHEDULES = ("end", "epoch")
_MEASURES = ("ece", "mce", "nll", "brier")


class ECECallback(keras.callbacks.Callback):
    """Calibration of the model on validation data at every epoch, in the logs.

    Streams ONE prediction pass over `validation_data` per epoch and logs (with the
    default prefix):

    - `val_ece`: `sum_b (n_b / N) |acc_b - conf_b|` over equal-width bins of the
      top-label confidence (Naeini et al. 2015; Guo et al. 2017), the same number as
      `keras_kd.calibration.expected_calibration_error`;
    - `val_mce`: `max_b |acc_b - conf_b|` over non-empty bins;
    - `val_nll`: `-(1/N) sum_i log p_i,y_i`;
    - `val_brier`: `(1/N) sum_i sum_k (p_ik - y_ik)^2`;
    - with `fit_temperature=True`, also `val_temperature`, the T of
      `TemperatureScaling` fitted on this same pass, and `val_ece_ts`, the ECE of
      `softmax(z / T)` (in-sample: an optimistic estimate of what a held-out
      temperature would give). If no finite T exists at that epoch, or the model
      diverged (NaN outputs), both are NaN and training goes on.

    A diverged model gives NaN for every value, never 0, so
    `ModelCheckpoint(monitor="val_mce", save_best_only=True)` never keeps it.

    Order-free: the place in the callbacks list does not matter when `fit` has
    validation data. Keras runs every callback's `on_test_end` during the
    validation pass, before any callback's `on_epoch_end`; the callback computes
    there and its values join that pass's logs, which `fit` turns into the epoch's
    `val_*` entries (`keras_kd._keras_compat.add_validation_logs`), so
    `EarlyStopping`, `ModelCheckpoint(save_best_only=True)`, `CSVLogger` and
    `TensorBoard` see its values wherever they stand. Without validation data in
    `fit` it computes in `on_epoch_end`, and only callbacks after it see the keys.
    Prefer compiled metrics for what can stream inside Keras' own pass
    (`keras_kd.metrics.ExpectedCalibrationError`, `BrierScore`,
    `keras.metrics.SparseCategoricalCrossentropy` for the NLL); a key that a
    compiled metric already put in the logs is left as it is (no overwrite, no
    warning), so both can be used together.

    `mode="auto"` in `EarlyStopping`/`ModelCheckpoint` minimises these keys
    (`val_temperature` has no direction: monitor it with an explicit `mode`).

    Memory: measures are accumulated batch by batch; only the model's outputs
    (N x K floats, never the inputs) are kept, and only when needed: for the
    temperature fit and for reliability diagrams.

    With a keras_kd `Distiller`, predicting runs only the student, so the callback
    measures the student's calibration with no special handling.

    Args:
        validation_data: a tuple `(x, y)` or `(x, y, sample_weight)` of arrays (x
            may be a list or dict of arrays for a multi-input model); a batched
            `tf.data.Dataset`, a `keras.utils.PyDataset`, or a Python generator
            (with `steps`) yielding such tuples. `y` may be a cached-target dict
            (`keras_kd.cache_teacher_logits`), whose `"labels"` are used. Datasets
            are read batch by batch, labels with their own predictions, so
            reshuffling cannot misalign them.
        num_bins: equal-width bins B, integer >= 1, default 15.
        from_logits: bool, default True: whether the model outputs logits (as a
            `Distiller`'s student does). Rows of probabilities with True, or values
            outside [0, 1] / rows not summing to 1 with False, raise a ValueError.
            A binary model's (N,) or (N, 1) output is the class-1 logit/probability.
        batch_size: prediction batch size for array data, integer >= 1 or None
            (32); ignored for datasets, which are already batched.
        fit_temperature: bool, default False; log `ece_ts` and `temperature`.
        diagram_dir: directory for reliability-diagram PNGs, or None (default).
            Needs matplotlib (`pip install keras-kd[plots]`).
        diagram_every: "end" (default): one `reliability_final.png` when training
            ends; "epoch": `reliability_epoch_001.png`, ... after every epoch.
        prefix: prefix of the log keys, default "val_". Keys starting with "val_"
            are order-free; others are written in `on_epoch_end`.
        verbose: 0 (default) silent; 1 reports diagrams written, on their own line
            after the progress bar (the values themselves appear in the bar, as
            every logged metric does).
        steps: batches per pass for a Python generator (required then), else None.
        tensorboard_dir: directory for a TensorBoard image summary of the
            reliability diagram each epoch ("calibration/reliability"), or None.
            Needs TensorFlow and matplotlib.

    Raises:
        ValueError: validation data of the wrong structure, empty, unbatched, or
            with a different number of labels and inputs; bad arguments.

    Example:
        >>> callbacks = [
        ...     keras.callbacks.EarlyStopping(monitor="val_ece_ts", patience=3),
        ...     ECECallback((x_val, y_val), from_logits=True, fit_temperature=True),
        ... ]
        >>> model.fit(x, y, validation_data=(x_val, y_val), epochs=20,
        ...           callbacks=callbacks)

    References:
        Guo, Pleiss, Sun, Weinberger. On Calibration of Modern Neural Networks.
        ICML 2017. Naeini, Cooper, Hauskrecht. AAAI 2015. Müller, Kornblith, Hinton.
        When Does Label Smoothing Help? NeurIPS 2019.
    """

    def __init__(
        self,
        validation_data: Any,
        num_bins: int = 15,
        from_logits: bool = True,
        batch_size: Optional[int] = None,
        fit_temperature: bool = False,
        diagram_dir: Optional[Union[str, os.PathLike]] = None,
        diagram_every: str = "end",
        prefix: str = "val_",
        verbose: int = 0,
        steps: Optional[int] = None,
        tensorboard_dir: Optional[Union[str, os.PathLike]] = None,
    ) -> None:
        super().__init__()
        self.num_bins = _validation.check_positive_int(num_bins, "num_bins")
        self.from_logits = _validation.check_bool(from_logits, "from_logits")
        if batch_size is not None:
            batch_size = _validation.check_positive_int(batch_size, "batch_size")
        self.batch_size = batch_size
        self.fit_temperature = _validation.check_bool(fit_temperature, "fit_temperature")
        self.diagram_dir = None if diagram_dir is None else os.fspath(diagram_dir)
        self.diagram_every = _validation.check_choice(
            diagram_every, "diagram_every", _DIAGRAM_SCHEDULES
        )
        if not isinstance(prefix, str):
            raise ValueError(f"`prefix` must be a string, got {prefix!r}.")
        self.prefix = prefix
        self.verbose = verbose
        if steps is not None:
            steps = _validation.check_positive_int(steps, "steps")
        self.steps = steps
        self.tensorboard_dir = None if tensorboard_dir is None else os.fspath(tensorboard_dir)
        if self.tensorboard_dir is not None and importlib.util.find_spec("tensorboard") is None:
            raise ImportError("ECECallback(tensorboard_dir=...) needs TensorBoard: "
                              "pip install tensorboard")
        self.validation_data = validation_data
        self._source = _ValidationSource(validation_data, steps)
        self._direction_hints = None
        self._validation_logs = None
        self._epoch = 0
        self._epoch_values = None  # computed in this epoch's validation pass
        self._pending_messages = []
        self._last_epoch = None  # (epoch, predictions, labels, weights), for "end"

    # -- Keras hooks ------------------------------------------------------------

    def on_train_begin(self, logs: Optional[dict[str, Any]] = None) -> None:
        self._source.check_against_model(self.model)
        self._direction_hints = _keras_compat.register_minimised_keys(
            self.model, self._minimised_keys()
        )
        self._validation_logs = _keras_compat.add_validation_logs(
            self.model, self._validation_values
        )

    def on_epoch_begin(self, epoch: int, logs: Optional[dict[str, Any]] = None) -> None:
        self._flush_messages()
        self._epoch = epoch
        self._epoch_values = None

    def on_test_end(self, logs: Optional[dict[str, Any]] = None) -> None:
        # During fit's validation pass, before every callback's on_epoch_end; the
        # values reach the epoch's logs through `_validation_values`.
        self._epoch_values = self._compute(self._epoch)

    def _validation_values(self):
        """This pass's `val_*` values, without the "val_" that `fit` adds back."""
        if self._epoch_values is None:
            return {}
        return {
            key.removeprefix("val_"): value
            for key, value in self._epoch_values.items()
            if key.startswith("val_")
        }

    def on_epoch_end(self, epoch: int, logs: Optional[dict[str, Any]] = None) -> None:
        if self._epoch_values is None:  # no validation pass in fit this epoch
            self._epoch_values = self._compute(epoch)
        if logs is not None:
            for key, value in self._epoch_values.items():
                logs.setdefault(key, value)
        self._epoch_values = None

    def on_train_end(self, logs: Optional[dict[str, Any]] = None) -> None:
        _keras_compat.unregister_minimised_keys(self.model, self._direction_hints)
        self._direction_hints = None
        if self._validation_logs is not None:
            _keras_compat.remove_validation_logs(self.model, self._validation_logs)
            self._validation_logs = None
        if self._last_epoch is not None:
            self._save_diagram("reliability_final.png", *self._last_epoch)
            self._last_epoch = None
        self._flush_messages()

    # -- Work ---------------------------------------------------------------------

    def _key(self, name):
        return f"{self.prefix}{name}"

    def _minimised_keys(self):
        names = list(_MEASURES) + (["ece_ts"] if self.fit_temperature else [])
        return [self._key(name) for name in names]

    def _keeps_outputs(self):
        return self.fit_temperature or self.diagram_dir is not None or (
            self.tensorboard_dir is not None
        )

    def _compute(self, epoch):
        measures = _StreamingMeasures(self.num_bins, self.from_logits)
        kept = [] if self._keeps_outputs() else None
        for predictions, labels, weights in self._source.batches(self.model, self.batch_size):
            measures.update(predictions, labels, weights)
            if kept is not None:
                kept.append((predictions, labels, weights))
        values = {self._key(name): value for name, value in measures.result().items()}
        if kept is None:
            return values
        predictions, labels, weights = _concatenate(kept)
        if self.fit_temperature:
            values.update(self._temperature_values(predictions, labels, weights))
        if self.diagram_dir is not None:
            if self.diagram_every == "epoch":
                self._save_diagram(f"reliability_epoch_{epoch + 1:03d}.png", epoch,
                                   predictions, labels, weights)
            else:
                self._last_epoch = (epoch, predictions, labels, weights)
        if self.tensorboard_dir is not None:
            self._log_image(epoch, predictions, labels, weights)
        return values

    def _temperature_values(self, predictions, labels, weights):
        from_probabilities = not self.from_logits
        try:
            scaler = calibration.TemperatureScaling().fit(
                predictions, labels, sample_weight=weights, from_probabilities=from_probabilities
            )
        except ValueError as error:
            # Early epochs can be at chance, a small validation set all correct, or
            # the model diverged: no finite temperature exists then, which is no
            # reason to stop training.
            warnings.warn(f"ECECallback: no temperature fitted this epoch. {error}", stacklevel=3)
            return {self._key("ece_ts"): float("nan"), self._key("temperature"): float("nan")}
        calibrated = scaler.predict_proba(predictions, from_probabilities=from_probabilities)
        ece = calibration.expected_calibration_error(
            calibrated, labels, self.num_bins, sample_weight=weights
        )
        return {self._key("ece_ts"): ece, self._key("temperature"): scaler.temperature}

    def _diagram(self, epoch, predictions, labels, weights):
        return calibration.reliability_diagram(
            predictions, labels, num_bins=self.num_bins, from_logits=self.from_logits,
            title=f"epoch {epoch + 1}", sample_weight=weights,
        )

    def _save_diagram(self, filename, epoch, predictions, labels, weights):
        if np.any(np.isnan(predictions)):
            self._pending_messages.append(f"No reliability diagram for epoch {epoch + 1}: NaN "
                                          f"predictions.")
            return
        path = os.path.join(self.diagram_dir, filename)
        os.makedirs(self.diagram_dir, exist_ok=True)
        self._diagram(epoch, predictions, labels, weights).savefig(path, dpi=100)
        self._pending_messages.append(f"Saved reliability diagram to {path}")

    def _log_image(self, epoch, predictions, labels, weights):
        tf = sys.modules.get("tensorflow")
        if tf is None:
            import tensorflow as tf
        if np.any(np.isnan(predictions)):
            return
        buffer = io.BytesIO()
        self._diagram(epoch, predictions, labels, weights).savefig(buffer, format="png", dpi=80)
        image = tf.image.decode_png(buffer.getvalue(), channels=4)[None]
        writer = tf.summary.create_file_writer(os.path.join(self.tensorboard_dir, "calibration"))
        with writer.as_default():
            tf.summary.image("reliability", image, step=epoch)
        writer.flush()

    def _flush_messages(self):
        # Printed at the start of the next epoch (or at the end of training), when
        # Keras' progress bar has finished its line, never into it.
        if self.verbose:
            for message in self._pending_messages:
                print(message)
        self._pending_messages = []


class _StreamingMeasures:
    """ECE, MCE, NLL and Brier score accumulated batch by batch, in float64."""

    def __init__(self, num_bins, from_logits):
        self.num_bins = num_bins
        self.from_logits = from_logits
        self.bins = np.zeros((3, num_bins))
        self.nll_sum = self.brier_sum = self.weight_sum = 0.0

    def update(self, predictions, labels, weights):
        predictions, targets, weights = _inputs.prepared(
            predictions, labels, self.from_logits, weights, name="model predictions"
        )
        statistics = _binning.bin_statistics(
            ops.convert_to_tensor(predictions.astype(np.float32)),
            ops.convert_to_tensor(targets.astype(np.float32)),
            self.num_bins,
            ops.convert_to_tensor(weights.astype(np.float32)),
            from_logits=self.from_logits,
        )
        self.bins += np.stack([ops.convert_to_numpy(s) for s in statistics])
        normalised = predictions
        if not self.from_logits and predictions.shape[-1] > 1:
            normalised = predictions / np.sum(predictions, axis=-1, keepdims=True)
        log_probs = _inputs.log_probabilities(normalised, self.from_logits)
        self.nll_sum += float(weights @ _inputs.cross_entropy_terms(targets, log_probs))
        probs = _measures.probabilities(predictions, self.from_logits)
        self.brier_sum += float(weights @ np.sum(np.square(probs - targets), axis=-1))
        self.weight_sum += float(np.sum(weights))

    def result(self):
        if self.weight_sum == 0:
            raise ValueError("`validation_data` is empty: the dataset yielded no batches.")
        counts, confidence_sums, correct_sums = self.bins
        error = {
            norm: float(ops.convert_to_numpy(_binning.calibration_error(
                counts, confidence_sums, correct_sums, norm)))
            for norm in ("l1", "max")
        }
        return {
            "ece": error["l1"],
            "mce": error["max"],
            "nll": self.nll_sum / self.weight_sum,
            "brier": self.brier_sum / self.weight_sum,
        }


def _concatenate(batches):
    predictions = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    weights = None
    if batches[0][2] is not None:
        weights = np.concatenate([np.reshape(b[2], (-1,)) for b in batches])
    return predictions, labels, weights


# ---------------------------------------------------------------------------
# Validation data.
# ---------------------------------------------------------------------------

_STRUCTURE_HELP = (
    "`validation_data` must be a tuple (x, y) or (x, y, sample_weight) of arrays, or a "
    "batched tf.data.Dataset, keras.utils.PyDataset or generator yielding such tuples"
)


class _ValidationSource:
    """Yields (predictions, labels, weights) batch by batch from any supported data."""

    def __init__(self, validation_data, steps):
        self.steps = steps
        self.arrays = self.dataset = self.py_dataset = self.generator = None
        if _is_tf_dataset(validation_data):
            _check_dataset_structure(validation_data)
            self.dataset = validation_data
        elif isinstance(validation_data, keras.utils.PyDataset):
            if len(validation_data) == 0:
                raise ValueError("`validation_data` is empty: the PyDataset holds 0 batches.")
            self.py_dataset = validation_data
        elif _is_generator(validation_data):
            if steps is None:
                raise ValueError(
                    "`validation_data` is a generator, which runs on across epochs: pass "
                    "`steps` (batches per validation pass), as `validation_steps` in fit."
                )
            self.generator = validation_data
        else:
            self.arrays = _check_arrays(validation_data)

    def check_against_model(self, model):
        if self.dataset is not None:
            _check_dataset_against_model(self.dataset, model)

    def _elements(self):
        if self.dataset is not None:
            return self.dataset.as_numpy_iterator()
        if self.py_dataset is not None:
            return (self.py_dataset[i] for i in range(len(self.py_dataset)))
        return itertools.islice(self.generator, self.steps)

    def batches(self, model, batch_size):
        if self.arrays is not None:
            x, labels, weights = self.arrays
            predictions = model.predict(x, batch_size=batch_size, verbose=0)
            yield _single_output(predictions), labels, weights
            return
        for element in self._elements():
            if not isinstance(element, (tuple, list)) or len(element) not in (2, 3):
                raise ValueError(f"{_STRUCTURE_HELP}; got a batch of {_describe(element)}.")
            x, y, w = (tuple(element) + (None,))[:3]
            labels = _labels_of(y)
            if isinstance(w, dict):
                w = targets_module.example_weights(w)
            predictions = _single_output(ops.convert_to_numpy(model.predict_on_batch(x)))
            labels = np.asarray(ops.convert_to_numpy(labels))
            if len(predictions) != len(labels):
                raise ValueError(
                    f"`validation_data` gave {len(labels)} labels for {len(predictions)} "
                    f"predictions in one batch. Is the dataset batched? Use "
                    f"`dataset.batch(batch_size)`."
                )
            yield predictions, labels, None if w is None else np.asarray(ops.convert_to_numpy(w))


def _labels_of(y):
    if isinstance(y, dict):
        if targets_module.LABELS not in y:
            raise ValueError(
                f"`validation_data` yields a target dict without {targets_module.LABELS!r} "
                f"(keys {sorted(y)}): calibration needs the labels."
            )
        return y[targets_module.LABELS]
    return y


def _check_arrays(validation_data):
    if not isinstance(validation_data, tuple) or len(validation_data) not in (2, 3):
        raise ValueError(f"{_STRUCTURE_HELP}, got {_describe(validation_data)}.")
    x, labels = validation_data[0], _labels_of(validation_data[1])
    labels = np.asarray(labels)
    weights = None
    if len(validation_data) == 3 and validation_data[2] is not None:
        weights = validation_data[2]
        if isinstance(weights, dict):
            weights = targets_module.example_weights(weights)
        weights = np.asarray(weights)
    inputs = keras.tree.flatten(x)
    if not inputs or labels.ndim == 0:
        raise ValueError(f"{_STRUCTURE_HELP}, got {_describe(validation_data)}.")
    for array in inputs:
        _validation.check_same_length(x=array, y=labels, sample_weight=weights)
    if len(labels) == 0:
        raise ValueError("`validation_data` is empty: it holds 0 examples.")
    return x, labels, weights


def _is_generator(value):
    return hasattr(value, "__next__") and hasattr(value, "__iter__") and not isinstance(
        value, (tuple, list, dict, np.ndarray)
    )


def _is_tf_dataset(value):
    # Only a program that imported TensorFlow can hold a tf.data.Dataset, so there
    # is no need to import it here (the JAX and PyTorch backends don't).
    tf = sys.modules.get("tensorflow")
    return tf is not None and isinstance(value, tf.data.Dataset)


def _check_dataset_structure(dataset):
    spec = dataset.element_spec
    if not isinstance(spec, tuple) or len(spec) not in (2, 3):
        raise ValueError(f"{_STRUCTURE_HELP}; the dataset yields {spec}.")
    leaves = keras.tree.flatten(spec)
    label_leaves = keras.tree.flatten(spec[1:])
    leading = {leaf.shape[0] for leaf in leaves if leaf.shape.rank and leaf.shape[0] is not None}
    if any(leaf.shape.rank == 0 for leaf in label_leaves) or len(leading) > 1:
        raise ValueError(
            f"`validation_data` looks unbatched: its elements {spec} have no common "
            f"batch dimension. Use `dataset.batch(batch_size)`."
        )
    # Known empty: fail now rather than after a whole epoch of training. A size
    # TensorFlow cannot know (after `filter`) is checked when the epoch ends.
    if int(dataset.cardinality()) == 0:
        raise ValueError("`validation_data` is empty: the dataset holds 0 batches.")


def _check_dataset_against_model(dataset, model):
    """Catches an unbatched dataset whose inputs lack the model's batch axis."""
    model_inputs = getattr(model, "inputs", None)
    input_specs = keras.tree.flatten(dataset.element_spec[0])
    if not model_inputs or len(model_inputs) != len(input_specs):
        return
    for model_input, spec in zip(model_inputs, input_specs):
        if spec.shape.rank is not None and spec.shape.rank == len(model_input.shape) - 1:
            raise ValueError(
                f"`validation_data` looks unbatched: it yields inputs of shape "
                f"{tuple(spec.shape)} for a model input of shape "
                f"{tuple(model_input.shape)}. Use `dataset.batch(batch_size)`."
            )


def _single_output(predictions):
    if not isinstance(predictions, np.ndarray):
        raise ValueError(
            f"ECECallback needs a model with one output of shape (N, K), (N, 1) or (N,), "
            f"got {type(predictions).__name__} of outputs."
        )
    return predictions


def _describe(value):
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of length {len(value)}"
    return f"{type(value).__name__}"
