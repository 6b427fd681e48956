"""Training callbacks: calibration of the model on held-out data at every epoch."""

import os
import sys
import warnings

import keras
import numpy as np

from keras_kd import _validation
from keras_kd import calibration

_DIAGRAM_SCHEDULES = ("end", "epoch")


class ECECallback(keras.callbacks.Callback):
    """Logs calibration metrics of the model on validation data after every epoch.

    Runs ONE prediction pass over `validation_data` per epoch and writes into the
    epoch's `logs` dict, in place (with the default prefix):

    - `val_ece`: `sum_b (n_b / N) |acc_b - conf_b|` over equal-width bins of the
      top-label confidence (Naeini et al. 2015; Guo et al. 2017), the same number as
      `keras_kd.calibration.expected_calibration_error`;
    - `val_mce`: `max_b |acc_b - conf_b|` over non-empty bins;
    - `val_nll`: `-(1/N) sum_i log p_i,y_i`;
    - `val_brier`: `(1/N) sum_i sum_k (p_ik - y_ik)^2`;
    - with `fit_temperature=True`, also `val_temperature`, the T of
      `TemperatureScaling` fitted on this same pass, and `val_ece_ts`, the ECE of
      `softmax(z / T)` (in-sample: an optimistic estimate of what a held-out
      temperature would give). If no finite T exists at that epoch, both are NaN.

    Callback order matters. Keras calls callbacks in list order and each sees the
    `logs` dict as the previous ones left it, so put this callback BEFORE any
    `EarlyStopping`, `ModelCheckpoint`, `ReduceLROnPlateau`, `CSVLogger` or
    `TensorBoard` that should see `val_ece`; those placed before it never see the
    key (EarlyStopping then warns that the metric is unavailable). `History` and the
    progress bar are appended by Keras after user callbacks and always see it.

    For `mode="auto"` the callback tells Keras that its metrics decrease when
    better: during `fit` it registers direction hints on the model, exactly like a
    metric's `_direction = "down"`, so `EarlyStopping(monitor="val_ece")` minimises.
    `val_temperature` has no direction; monitor it with an explicit `mode`.

    With a keras_kd `Distiller`, `predict()` runs only the student, so the callback
    measures the student's calibration with no special handling.

    State: nothing is carried between epochs except, when `diagram_every="end"`,
    the last epoch's predictions for the final diagram. Resuming training needs no
    state from this callback; best values live in `EarlyStopping`/`ModelCheckpoint`.

    Args:
        validation_data: a tuple `(x, y)` or `(x, y, sample_weight)` of NumPy arrays
            (x may be a list or dict of arrays for a multi-input model), or a
            batched `tf.data.Dataset` yielding such tuples. A dataset is read once
            per epoch, labels and predictions batch by batch, so reshuffling cannot
            misalign them.
        num_bins: equal-width bins B, integer >= 1, default 15.
        from_logits: bool, default True: whether the model outputs logits (as a
            `Distiller`'s student does). A model whose outputs are rows of
            probabilities with `from_logits=True` raises a ValueError.
        batch_size: prediction batch size for array data, integer >= 1 or None
            (Keras' default, 32); ignored for datasets, which are already batched.
        fit_temperature: bool, default False; log `val_ece_ts` and `val_temperature`.
        diagram_dir: directory for reliability-diagram PNGs, or None (default) for
            none. Needs matplotlib (`pip install keras-kd[plots]`).
        diagram_every: "end" (default): one `reliability_final.png` when training
            ends; "epoch": `reliability_epoch_001.png`, ... after every epoch.
        prefix: prefix of the log keys, default "val_".
        verbose: 0 (default) silent, 1 prints the values after each epoch.

    Raises:
        ValueError: validation data of the wrong structure, empty, unbatched, or
            with a different number of labels and inputs; bad arguments.

    Example:
        >>> callbacks = [
        ...     ECECallback((x_val, y_val), from_logits=True),        # first
        ...     keras.callbacks.EarlyStopping(monitor="val_ece", patience=3),
        ...     keras.callbacks.ModelCheckpoint("best.keras", monitor="val_ece",
        ...                                     save_best_only=True),
        ... ]
        >>> model.fit(x, y, epochs=20, callbacks=callbacks)

    References:
        Guo, Pleiss, Sun, Weinberger. On Calibration of Modern Neural Networks.
        ICML 2017. Naeini, Cooper, Hauskrecht. AAAI 2015. Müller, Kornblith, Hinton.
        When Does Label Smoothing Help? NeurIPS 2019.
    """

    def __init__(
        self,
        validation_data,
        num_bins=15,
        from_logits=True,
        batch_size=None,
        fit_temperature=False,
        diagram_dir=None,
        diagram_every="end",
        prefix="val_",
        verbose=0,
    ):
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
        self.validation_data = validation_data
        self._arrays, self._dataset = _check_validation_data(validation_data)
        self._direction_hints = None
        self._warned_overwrite = False
        self._last_epoch = None  # (epoch, predictions, labels), for the "end" diagram

    # -- Keras hooks ------------------------------------------------------------

    def on_train_begin(self, logs=None):
        if self._dataset is not None:
            _check_dataset_against_model(self._dataset, self.model)
        self._direction_hints = _register_direction_hints(self.model, self._minimised_keys())

    def on_epoch_end(self, epoch, logs=None):
        predictions, labels, weights = self._predict()
        values = self._calibration_values(predictions, labels, weights)
        if logs is not None:
            clashes = [key for key in values if key in logs]
            if clashes and not self._warned_overwrite:
                warnings.warn(
                    f"ECECallback overwrites {clashes} already in the logs (a compiled "
                    f"metric of the same name?). Pass another `prefix` to keep both.",
                    stacklevel=2,
                )
                self._warned_overwrite = True
            logs.update(values)
        if self.verbose:
            shown = ", ".join(f"{key}={value:.4f}" for key, value in values.items())
            print(f"Epoch {epoch + 1}: {shown}")
        if self.diagram_dir is not None:
            if self.diagram_every == "epoch":
                self._save_diagram(
                    f"reliability_epoch_{epoch + 1:03d}.png", epoch, predictions, labels
                )
            else:
                self._last_epoch = (epoch, predictions, labels)

    def on_train_end(self, logs=None):
        _unregister_direction_hints(self.model, self._direction_hints)
        self._direction_hints = None
        if self._last_epoch is not None:
            epoch, predictions, labels = self._last_epoch
            self._save_diagram("reliability_final.png", epoch, predictions, labels)
            self._last_epoch = None

    # -- Work ---------------------------------------------------------------------

    def _key(self, name):
        return f"{self.prefix}{name}"

    def _minimised_keys(self):
        names = ["ece", "mce", "nll", "brier"] + (["ece_ts"] if self.fit_temperature else [])
        return [self._key(name) for name in names]

    def _predict(self):
        """One pass: predictions (N, K), labels (N, ...) and weights (N,) or None."""
        if self._arrays is not None:
            x, labels, weights = self._arrays
            predictions = self.model.predict(x, batch_size=self.batch_size, verbose=0)
            return _single_output(predictions), labels, weights
        predictions, labels, weights = [], [], []
        for element in self._dataset.as_numpy_iterator():
            x, y, w = (tuple(element) + (None,))[:3]
            batch_predictions = _single_output(self.model.predict_on_batch(x))
            if len(batch_predictions) != len(y):
                raise ValueError(
                    f"`validation_data` gave {len(y)} labels for {len(batch_predictions)} "
                    f"predictions in one batch. Is the dataset batched? Use "
                    f"`dataset.batch(batch_size)`."
                )
            predictions.append(batch_predictions)
            labels.append(y)
            weights.append(w)
        if not predictions:
            raise ValueError("`validation_data` is empty: the dataset yielded no batches.")
        has_weights = weights[0] is not None
        return (
            np.concatenate(predictions),
            np.concatenate(labels),
            np.concatenate(weights) if has_weights else None,
        )

    def _calibration_values(self, predictions, labels, weights):
        if self.from_logits:
            _validation.check_not_probabilities(
                predictions,
                "model predictions",
                hint="Pass `from_logits=False` to ECECallback for a model that outputs "
                "probabilities.",
            )
        common = dict(from_logits=self.from_logits, sample_weight=weights)
        values = {
            self._key("ece"): calibration.expected_calibration_error(
                predictions, labels, self.num_bins, norm="l1", **common
            ),
            self._key("mce"): calibration.expected_calibration_error(
                predictions, labels, self.num_bins, norm="max", **common
            ),
            self._key("nll"): calibration.negative_log_likelihood(
                predictions, labels, **common
            ),
            self._key("brier"): calibration.brier_score(predictions, labels, **common),
        }
        if self.fit_temperature:
            values.update(self._temperature_values(predictions, labels, weights))
        return values

    def _temperature_values(self, predictions, labels, weights):
        from_probabilities = not self.from_logits
        try:
            scaler = calibration.TemperatureScaling().fit(
                predictions, labels, from_probabilities=from_probabilities, sample_weight=weights
            )
        except ValueError as error:
            # Early epochs can be at chance, or a small validation set all correct:
            # no finite temperature exists then, which is no reason to stop training.
            warnings.warn(f"ECECallback: no temperature fitted this epoch. {error}", stacklevel=3)
            return {self._key("ece_ts"): float("nan"), self._key("temperature"): float("nan")}
        calibrated = scaler.predict_proba(predictions, from_probabilities=from_probabilities)
        ece = calibration.expected_calibration_error(
            calibrated, labels, self.num_bins, sample_weight=weights
        )
        return {self._key("ece_ts"): ece, self._key("temperature"): scaler.temperature}

    def _save_diagram(self, filename, epoch, predictions, labels):
        path = os.path.join(self.diagram_dir, filename)
        calibration.save_reliability_diagram(
            path,
            predictions,
            labels,
            num_bins=self.num_bins,
            from_logits=self.from_logits,
            title=f"epoch {epoch + 1}",
        )
        if self.verbose:
            print(f"Saved reliability diagram to {path}")


# ---------------------------------------------------------------------------
# Validation data.
# ---------------------------------------------------------------------------

_STRUCTURE_HELP = (
    "`validation_data` must be a tuple (x, y) or (x, y, sample_weight) of arrays, or a "
    "batched tf.data.Dataset yielding such tuples"
)


def _check_validation_data(validation_data):
    """Returns (arrays, None) or (None, dataset) after checking the structure."""
    if _is_tf_dataset(validation_data):
        _check_dataset_structure(validation_data)
        return None, validation_data
    if not isinstance(validation_data, tuple) or len(validation_data) not in (2, 3):
        raise ValueError(f"{_STRUCTURE_HELP}, got {_describe(validation_data)}.")
    x, labels = validation_data[0], np.asarray(validation_data[1])
    weights = None
    if len(validation_data) == 3 and validation_data[2] is not None:
        weights = np.asarray(validation_data[2])
    inputs = keras.tree.flatten(x)
    if not inputs or labels.ndim == 0:
        raise ValueError(f"{_STRUCTURE_HELP}, got {_describe(validation_data)}.")
    for array in inputs:
        _validation.check_same_length(x=array, y=labels, sample_weight=weights)
    if len(labels) == 0:
        raise ValueError("`validation_data` is empty: it holds 0 examples.")
    return (x, labels, weights), None


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
            f"ECECallback needs a model with one output of shape (N, K), got "
            f"{type(predictions).__name__} of outputs."
        )
    return predictions


def _describe(value):
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of length {len(value)}"
    return f"{type(value).__name__}"


# ---------------------------------------------------------------------------
# Direction hints for mode="auto".
# ---------------------------------------------------------------------------
# Keras' MonitorCallback (EarlyStopping, ModelCheckpoint, ReduceLROnPlateau) infers
# the direction of `val_<name>` by looking for a compiled metric called <name> with a
# `_direction` attribute; values written into `logs` by a callback have no such
# metric, so `mode="auto"` would raise. During `fit` we add to the model a metric
# list holding name-and-direction markers that contributes no values and no
# variables. This uses Keras internals (keras.src), so it degrades to a warning.


class _DirectionMarker:
    def __init__(self, name):
        self.name = name
        self._direction = "down"

    def reset_state(self):
        pass


def _register_direction_hints(model, keys):
    try:
        from keras.src.trainers.compile_utils import MetricsList

        class _DirectionHints(MetricsList):
            def update_state(self, *args, **kwargs):
                pass

            def reset_state(self):
                pass

            def result(self):
                return {}

        hints = _DirectionHints(
            [_DirectionMarker(key.removeprefix("val_")) for key in keys],
            name="keras_kd_direction_hints",
        )
        model._metrics.append(hints)
        return hints
    except Exception as error:  # Keras internals moved: auto mode just won't know.
        warnings.warn(
            f"ECECallback could not tell Keras that {keys} are minimised ({error}); "
            f"pass mode='min' to EarlyStopping/ModelCheckpoint monitoring them.",
            stacklevel=3,
        )
        return None


def _unregister_direction_hints(model, hints):
    if hints is not None and hints in getattr(model, "_metrics", []):
        model._metrics.remove(hints)
