"""Every use of Keras behaviour that is not public API, in one place.

Each item names the Keras behaviour it relies on, so a Keras upgrade that moves it
breaks here, visibly, and nowhere else. Sections are owned by the modules that use
them (keep them separate to keep merges clean).
"""

import contextlib
import warnings

# ===========================================================================
# Calibration metrics and callbacks (keras_kd.metrics, keras_kd.callbacks)
# ===========================================================================


def declare_lower_is_better(metric):
    """Tells `mode="auto"` monitors that `metric` is minimised.

    Relies on: `keras.callbacks.MonitorCallback._set_monitor_op` (EarlyStopping,
    ModelCheckpoint, ReduceLROnPlateau) reading the private `_direction` attribute
    ("up"/"down") of the compiled metric whose `name` matches the monitored key, as
    Keras' own metrics set it in their constructors.
    """
    metric._direction = "down"


class _DirectionMarker:
    """A name-and-direction stand-in for a metric, with no state and no value."""

    def __init__(self, name):
        self.name = name
        self._direction = "down"

    def reset_state(self):
        pass


def register_minimised_keys(model, keys):
    """Lets `mode="auto"` monitors minimise keys that a callback writes into the logs.

    Relies on: `MonitorCallback._set_monitor_op` searching `model.metrics` for
    `keras.src.trainers.compile_utils.MetricsList` containers and reading their
    `.metrics` names and `_direction`; and on `Model._metrics` being the list behind
    `model.metrics`. A `MetricsList` subclass that updates nothing and reports
    nothing is appended for the duration of `fit`. If Keras moved these, monitors
    of these keys need an explicit `mode="min"`; a warning says so.

    Returns:
        The appended container, for `unregister_minimised_keys`, or None.
    """
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
            f"keras_kd could not tell Keras that {keys} are minimised ({error}); pass "
            f"mode='min' to EarlyStopping/ModelCheckpoint monitoring them.",
            stacklevel=3,
        )
        return None


def unregister_minimised_keys(model, hints):
    """Removes what `register_minimised_keys` appended (see there)."""
    if hints is not None and hints in getattr(model, "_metrics", []):
        model._metrics.remove(hints)


def add_validation_logs(model, values):
    """Adds `values()` to the logs of the validation pass that `fit` runs each epoch.

    Relies on: every Keras 3 trainer's `fit` (TensorFlow, JAX, PyTorch, NumPy)
    running validation through `self.evaluate(..., return_dict=True)` and prefixing
    the returned dict with "val_" into the epoch's logs, before any callback's
    `on_epoch_end`. `on_test_end` alone cannot add keys: `CallbackList` hands each
    callback a copy of the logs. `model.evaluate` is shadowed by an instance
    attribute for the duration of `fit`; `values()` returns the keys to add
    (without "val_"), which never replace a key the evaluation already has.

    Returns:
        A handle for `remove_validation_logs`.
    """
    original = model.evaluate
    state = {"active": True}

    def evaluate(*args, **kwargs):
        logs = original(*args, **kwargs)
        if state["active"] and kwargs.get("return_dict") and isinstance(logs, dict):
            for key, value in values().items():
                logs.setdefault(key, value)
        return logs

    object.__setattr__(model, "evaluate", evaluate)
    return evaluate, original, state


def remove_validation_logs(model, handle):
    """Undoes `add_validation_logs` (see there)."""
    evaluate, original, state = handle
    state["active"] = False
    if model.__dict__.get("evaluate") is evaluate:
        if getattr(original, "__self__", None) is model:
            object.__delattr__(model, "evaluate")
        else:  # another wrapper was there before ours
            object.__setattr__(model, "evaluate", original)


# ===========================================================================
# Feature distillation (keras_kd.features)
# ===========================================================================


def layer_call_count(layer):
    """How many times `layer` was called on symbolic inputs (its graph nodes).

    Keras 3 records one `Node` per symbolic call in `Layer._inbound_nodes`; a layer
    applied twice in a Functional model (weight sharing, a block reused in a loop)
    has two, and `layer.output` silently returns the first call's tensor. There is no
    public count.
    """
    return len(getattr(layer, "_inbound_nodes", None) or ())


# ===========================================================================
# The Distiller (keras_kd.distiller)
# ===========================================================================
#
# Two further contracts the Distiller relies on are documented where they are used,
# as they are overrides rather than attribute reads:
#
# - `Distiller.loss` / `Distiller.compiled` properties: Keras' `Trainer.compile`
#   assigns `self.loss = loss` (skipped for loss=None) and always ends with
#   `self.compiled = True`; `Trainer.__init__` sets `loss = None` first. The
#   Distiller validates the hard-label loss there, because overriding `compile`
#   itself would also run on `load_model`'s `compile_from_config`.
# - `Distiller.evaluate` / `get_metrics_result`: Keras' `_get_metrics_result_or_logs`
#   takes the final results from `get_metrics_result()` (read across replicas) only
#   when its keys equal the last test step's logs; otherwise it keeps the last
#   step's per-replica logs. The training-only logs are removed from both.


def compiled_loss(model):
    """The loss built by `compile(loss=..., loss_weights=...)`, or None without one.

    Relies on: `Trainer.compile` storing a `CompileLoss` (which resolves strings,
    matches list/dict losses to the outputs and applies `loss_weights`) in
    `model._compile_loss`. The public route, `Trainer.compute_loss`, also adds
    `model.losses`, which for a Distiller would include a teacher's activity
    regularizers; the Distiller adds only the student's.
    """
    return getattr(model, "_compile_loss", None)


def loss_tracker(model):
    """The `Mean` behind the logged "loss".

    Relies on: `Trainer.compile` creating `model._loss_tracker` (listed first in
    `model.metrics`), which Keras' own train steps update with the unscaled total.
    The Distiller's TensorFlow `train_step` updates it the same way.
    """
    return model._loss_tracker


def losses_in_stateless_call(model):
    """The losses of the forward pass that JAX's train step ran statelessly, or None.

    Relies on: Keras' JAX trainer running `call` in a `StatelessScope` and handing
    the losses collected there (activity regularizers) to `compute_loss` through
    `model._losses_override`; outside that scope `model.losses` would miss them.
    """
    return getattr(model, "_losses_override", None)


@contextlib.contextmanager
def without_optimizers(models):
    """Detaches `models`' optimizers for the duration of a save.

    Relies on: `keras.saving` saving every `KerasSaveable` reachable through the
    attributes (`dir()`) of the saved model (`saving_lib._walk_saveable`), which
    includes the `optimizer` of a compiled sub-model: a teacher's stale Adam state
    would be written into the Distiller's file (about 60 % of it) and, having no
    optimizer to load into on reload, would be ignored. `Trainer.optimizer` is a
    plain attribute, restored afterwards.
    """
    saved = [(model, model.__dict__.get("optimizer")) for model in models]
    try:
        for model, optimizer in saved:
            if optimizer is not None:
                object.__setattr__(model, "optimizer", None)
        yield
    finally:
        for model, optimizer in saved:
            if optimizer is not None:
                object.__setattr__(model, "optimizer", optimizer)


def output_layers(model):
    """The layer that produces each of a Functional model's outputs, in output order.

    Relies on: every Keras 3 symbolic tensor carrying `_keras_history` (operation,
    node index, tensor index), as `Functional` uses to rebuild its graph; there is no
    public map from an output to its layer.
    """
    return [output._keras_history.operation for output in model.outputs]


# ===========================================================================
# Multi-worker training (keras_kd._multi_worker)
# ===========================================================================


@contextlib.contextmanager
def multi_worker_symbolic_build(model, strategy):
    """Lets `fit`/`evaluate` build `model` from a first batch split across workers.

    keras-team/keras#20585: the TensorFlow trainer's `_maybe_symbolic_build(iterator=...)`
    reads the first distributed batch and averages the whole `(x, y, ...)` nest with one
    `strategy.reduce("MEAN", batch, axis=None)`, which `MultiWorkerMirroredStrategy`
    rejects ("Attempt to convert a value (PerReplica...) ... to a Tensor"). The build only
    needs the batch's shapes and dtypes: this instance attribute, in place for the call
    (it shadows the method; Keras 3.12 to 3.15 call it once per `fit`/`evaluate` with
    `iterator=` and from `train_on_batch` with `data_batch=`), hands the original this
    worker's first replica's part of the batch instead: the shapes Keras' element-wise
    mean has under `MirroredStrategy`, with no collective.
    """
    import keras

    if "_maybe_symbolic_build" in model.__dict__:  # nested: `fit` runs `evaluate`
        yield
        return
    original = model._maybe_symbolic_build

    def maybe_symbolic_build(iterator=None, data_batch=None):
        if iterator is not None and data_batch is None:
            for _, _, batches in iterator:
                data_batch = keras.tree.map_structure(
                    lambda value: strategy.experimental_local_results(value)[0],
                    next(batches),
                )
                break
        return original(data_batch=data_batch)

    object.__setattr__(model, "_maybe_symbolic_build", maybe_symbolic_build)
    try:
        yield
    finally:
        if model.__dict__.get("_maybe_symbolic_build") is maybe_symbolic_build:
            object.__delattr__(model, "_maybe_symbolic_build")
