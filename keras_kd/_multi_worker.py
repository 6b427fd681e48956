"""`Distiller.fit` and `evaluate` under a multi-worker `MultiWorkerMirroredStrategy`.

Keras 3 (3.12 to 3.15 at least) cannot run `fit` or `evaluate` there for any model
(keras-team/keras#20585); its TensorFlow trainer fails twice before or at the first step:

1. `_maybe_symbolic_build` averages the first distributed `(x, y)` batch with one
   `strategy.reduce("MEAN", batch, axis=None)` over the whole nest: "Attempt to convert a
   value (PerReplica...) with an unsupported type ... to a Tensor". keras_kd hands it
   this worker's first replica's part instead (`_keras_compat.multi_worker_symbolic_build`).
2. Each step's logs go through `reduce_per_replica(..., "auto")`, which under several
   workers calls `strategy.reduce("MEAN", log, axis=0)` on scalar logs, which rank-0
   tensors cannot take. keras_kd's train and test functions (`make_train_function` and
   `make_test_function`, Keras' public hooks) read the logs as Keras reads them at an
   epoch's end: `get_metrics_result()` in cross-replica context, where each metric's
   state (sync-on-read, summed) is all-reduced over every replica of every worker. So
   the per-batch logs are the global ones too, an `ExpectedCalibrationError` included,
   and equal one process's on the same global batches.

And Keras' file-writing callbacks write from every worker, all into the same files
when the workers share a path: two processes writing one `.keras` zip or one CSV can
leave a torn file. keras_kd lets only the chief (`strategy.extended.should_checkpoint`)
write: `BackupAndRestore` writes and deletes its backup on the chief alone while every
worker restores from it, and `ModelCheckpoint`, `CSVLogger` and `TensorBoard` run on the
chief alone (as `tf.keras` 2 did, which sent the other workers' copies to a temporary
directory and deleted them). Their files hold nothing a worker could add: every log is
the global batch's, every weight mirrored. A `CallbackList` passed in is the caller's,
taken as Keras takes it. Without several workers none of this applies: `fit` and
`evaluate` are Keras'.
"""

import inspect

import keras

from keras_kd import _keras_compat


def multi_worker_strategy(model):
    """`model`'s `MultiWorkerMirroredStrategy` when it spans several workers, else None."""
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    strategy = model.distribute_strategy
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return None
    # Public form of `strategy.extended._in_multi_worker_mode()`: more replicas in sync
    # than this worker's own devices means other workers take part.
    if strategy.num_replicas_in_sync > len(strategy.extended.worker_devices):
        return strategy
    return None


def call(model, method, args, kwargs):
    """`method(*args, **kwargs)` (Keras' `fit` or `evaluate`), fixed up for several workers."""
    strategy = multi_worker_strategy(model)
    if strategy is None:
        return method(*args, **kwargs)
    bound = inspect.signature(method).bind(*args, **kwargs)
    callbacks = bound.arguments.get("callbacks")
    if callbacks is not None and not strategy.extended.should_checkpoint:
        bound.arguments["callbacks"] = _without_writes(callbacks)
    with _keras_compat.multi_worker_symbolic_build(model, strategy):
        return method(*bound.args, **bound.kwargs)


def step_function(model, step):
    """A `train_function`/`test_function` running `step` on every replica of every worker.

    As Keras' own (one step per `get_next`, `steps_per_execution` steps per call, the
    step compiled with `model.jit_compile` unless `model.run_eagerly`), except the logs:
    see the module docstring.
    """
    import tensorflow as tf

    strategy = model.distribute_strategy

    def replica_step(data):
        # As Keras' `_autoconvert_optionals`: a generator's missing entries arrive as
        # empty `tf.experimental.Optional`s.
        data = keras.tree.map_structure(
            lambda value: None if isinstance(value, tf.experimental.Optional) else value, data
        )
        return step(data)

    def one_step_on_data(data):
        outputs = strategy.run(replica_step, args=(data,))
        results = model.get_metrics_result()  # cross-replica: summed over all workers
        if isinstance(outputs, dict) and set(outputs) == set(results):
            return results
        # A step that logs more than its metrics: each value averaged over the replicas.
        return keras.tree.map_structure(
            lambda value: strategy.reduce("MEAN", value, axis=None), outputs
        )

    def one_step_on_iterator(iterator):
        return one_step_on_data(iterator.get_next())

    if not model.run_eagerly:
        one_step_on_data = tf.function(
            one_step_on_data, reduce_retracing=True, jit_compile=model.jit_compile
        )
        one_step_on_iterator = tf.function(one_step_on_iterator, reduce_retracing=True)

    def function(iterator):
        logs = None
        if isinstance(iterator, (tf.data.Iterator, tf.distribute.DistributedIterator)):
            for _ in range(model.steps_per_execution):
                try:
                    logs = one_step_on_iterator(iterator)
                except tf.errors.OutOfRangeError:
                    if logs is None:
                        raise  # Keras' epoch iterator ends the epoch
                    break
        else:  # `train_on_batch`/`test_on_batch`: an iterable of batches
            for _, data in zip(range(model.steps_per_execution), iterator):
                logs = one_step_on_data(data)
        return logs

    return function


class _RestoreOnly(keras.callbacks.Callback):
    """A non-chief worker's `BackupAndRestore`: restores at `on_train_begin`, never writes."""

    def __init__(self, backup):
        super().__init__()
        self.backup = backup

    def set_model(self, model):
        super().set_model(model)
        self.backup.set_model(model)

    def set_params(self, params):
        super().set_params(params)
        self.backup.set_params(params)

    def on_train_begin(self, logs=None):
        self.backup.on_train_begin(logs)


# Callbacks whose only effect is writing files the chief writes too.
_CHIEF_ONLY_WRITERS = (
    keras.callbacks.ModelCheckpoint,
    keras.callbacks.CSVLogger,
    keras.callbacks.TensorBoard,
)


def _without_writes(callbacks):
    """A non-chief worker's `callbacks`: `BackupAndRestore` restore-only, writers left out."""
    if isinstance(callbacks, keras.callbacks.CallbackList):
        return callbacks  # configured by the caller, as Keras takes it
    kept = []
    for callback in callbacks:
        if isinstance(callback, keras.callbacks.BackupAndRestore):
            kept.append(_RestoreOnly(callback))
        elif not isinstance(callback, _CHIEF_ONLY_WRITERS):
            kept.append(callback)
    return kept
