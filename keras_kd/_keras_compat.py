"""Every use of Keras behaviour that is not public API, in one place.

Each item names the Keras behaviour it relies on, so a Keras upgrade that moves it
breaks here, visibly, and nowhere else. Sections are owned by the modules that use
them (keep them separate to keep merges clean).
"""

import contextlib

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
