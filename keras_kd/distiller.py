"""`Distiller`: trains a student from a frozen teacher with Hinton's distillation loss."""

import keras
from keras import ops

from keras_kd import _sequence
from keras_kd import _teacher
from keras_kd import _validation
from keras_kd import features
from keras_kd import losses
from keras_kd.targets import LABELS  # noqa: F401  (re-exported: the cached-target keys)
from keras_kd.targets import TEACHER_LOGITS
from keras_kd.targets import TEACHER_MEMBER_LOGITS  # noqa: F401
from keras_kd.targets import example_weights as _example_weights
from keras_kd.targets import split_targets

# Logged during `fit` only; `evaluate` runs no teacher, so it reports the student's own
# compiled loss and metrics, exactly as `student.evaluate` does.
_TRAINING_ONLY_LOGS = ("student_loss", "distillation_loss")
_TRAINING_ONLY_LOG_PREFIX = "feature_loss_"

# Hard-label losses that Keras resolves with from_logits=False: they would silently
# treat the student's logits as probabilities.
_PROBABILITY_LOSS_NAMES = {
    "categorical_crossentropy",
    "sparse_categorical_crossentropy",
    "binary_crossentropy",
    "categorical_focal_crossentropy",
    "binary_focal_crossentropy",
    "kl_divergence",
    "kld",
    "kullback_leibler_divergence",
}


@keras.saving.register_keras_serializable(package="keras_kd")
class Distiller(keras.Model):
    """A `keras.Model` that distils a frozen teacher into a student.

    Training minimises (Hinton et al. 2015)

        L = (1 - alpha) * H(y, softmax(z_s)) + alpha * T^2 * KL(softmax(z_t / T) || softmax(z_s / T))

    where `H` is the hard-label loss given to `compile(loss=...)`, `z_t` and `z_s` are
    the teacher's and student's logits and `T` is the temperature. **`alpha` weights
    the distillation term** (Hinton's convention and the seed formula); some libraries,
    `keras.distillation` and the keras.io example among them, use alpha for the
    *hard* term instead. `alpha=0.9` means 90 % soft targets, 10 % hard labels.

    With `feature_pairs` (hints from intermediate layers; Romero et al. 2015, Zagoruyko
    & Komodakis 2017), each pair adds its own weighted term, outside `alpha`:

        L = (1 - alpha) * hard + alpha * T^2 * KL + sum_i weight_i * feature_loss_i(t_i, r_i(s_i))

    where `t_i` and `s_i` are the paired teacher and student layers' outputs and `r_i`
    a learnable projection when their shapes differ (see `keras_kd.FeaturePair`). Each
    step still runs one teacher and one student forward.

    What it guarantees:

    - The teacher is frozen at construction (`trainable=False`), always called with
      `training=False`, outside the gradient; its weights never change.
    - `evaluate()` and `predict()` run only the student: `distiller.evaluate(x, y)`
      equals `distiller.student.evaluate(x, y)` under the same `compile` settings.
    - `sample_weight` and `class_weight` weight both terms; reductions are Keras'
      own, so the loss is correct on several replicas under `tf.distribute`.
    - The softmaxes and the KL are computed in float32 from `log_softmax`, with no
      clipping, so `mixed_float16` and extreme logits train; the loss is scaled by the
      optimizer's loss scale.
    - Logs: `loss` (the total), `student_loss` (the hard term, unweighted) and
      `distillation_loss` (the `T^2 KL` term, unweighted), during training; with
      feature pairs also `feature_loss_<name>` per pair (unweighted).

    Teachers and students must output logits. A Sequential/Functional teacher that
    ends in a softmax is converted exactly (`log p` has the same tempered softmax as
    the logits); a student ending in a softmax is rejected, since its logits are what
    is trained. `compile(loss=...)` must then take logits: a loss configured with
    `from_logits=False` is rejected.

    Args:
        teacher: a `keras.Model`, or a list of them: an ensemble whose tempered
            softmaxes are averaged (Hinton et al. 2015).
        student: the `keras.Model` to train.
        temperature: T, a finite float > 0, default 4.0.
        alpha: weight of the distillation term in [0, 1], default 0.9.
        feature_pairs: list of `keras_kd.FeaturePair`, default None (logits only). Needs
            a single Functional or Sequential teacher and student, and a live teacher
            (not cached logits), since features are not cached.
        name: the model's name.
        divergence: "kl" (default, Hinton's forward KL), "reverse_kl" or "jsd": the
            soft term's divergence, as `keras_kd.losses.distillation_loss`.
        beta: float in (0, 1), default 0.5, the JSD's mixture weight.
        reduction: how the soft term is reduced over examples (and tokens). None
            (default): exactly as the compiled hard-label loss is, so
            `SparseCategoricalCrossentropy(from_logits=True,
            reduction="mean_with_sample_weight")` with a padding mask as
            `sample_weight` makes both terms means over real tokens; or an explicit
            Keras reduction ("sum_over_batch_size", "mean_with_sample_weight", "sum",
            "mean"). The logged `distillation_loss` is reduced the same way. See
            docs/guides/language-models.md.

    Example:
        >>> distiller = Distiller(teacher=teacher, student=student, temperature=4.0, alpha=0.9)
        >>> distiller.compile(
        ...     optimizer="adam",
        ...     loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        ...     metrics=["accuracy"],
        ... )
        >>> distiller.fit(x_train, y_train, epochs=3)
        >>> distiller.student.save("student.keras")  # ship the student alone

    Precomputed teacher logits (offline distillation) skip the teacher forward:
    pass `y = {"labels": labels, "teacher_logits": logits}` to `fit`, as
    `keras_kd.cache_teacher_logits` does.

    References:
        Hinton, Vinyals, Dean. Distilling the Knowledge in a Neural Network. 2015.
        Romero et al. FitNets: Hints for Thin Deep Nets. ICLR 2015.
        Zagoruyko, Komodakis. Paying More Attention to Attention. ICLR 2017.
    """

    def __init__(
        self,
        teacher,
        student,
        temperature=4.0,
        alpha=0.9,
        feature_pairs=None,
        name="distiller",
        divergence="kl",
        beta=0.5,
        reduction=None,
        **kwargs,
    ):
        if "dtype" not in kwargs and _computes_in_float16(student):
            # compile() adds loss scaling only when the Distiller's own policy is
            # mixed_float16: follow the student (built under that policy, or reloaded),
            # not the global policy of the moment, or its float16 gradients underflow.
            kwargs["dtype"] = "mixed_float16"
        super().__init__(name=name, **kwargs)
        teachers = _teacher.as_teacher_list(teacher)
        if not isinstance(student, keras.Model):
            raise ValueError(
                f"`student` must be a keras.Model, got {student!r} of type "
                f"{type(student).__name__}."
            )
        self.temperature = _validation.check_temperature(temperature)
        self.alpha = _validation.check_in_range(alpha, "alpha", 0.0, 1.0)
        # Checked (by constructing the loss) before the teacher is frozen.
        self.divergence, self.beta = divergence, beta
        self.reduction = _sequence.check_reduction(reduction)
        self._distillation_loss = losses.DistillationLoss(
            temperature=self.temperature, divergence=divergence, beta=beta
        )
        _teacher.check_compatible(teachers, student)
        feature_pairs = features.check_feature_pairs(feature_pairs)
        if feature_pairs and len(teachers) > 1:
            # Checked before anything is frozen: a rejected Distiller changes nothing.
            raise ValueError(
                f"feature_pairs need a single teacher, got an ensemble of "
                f"{len(teachers)}: their intermediate layers need not correspond. "
                "Distil the ensemble's logits, or pass one teacher."
            )
        feature_hints = (
            features.FeatureHints(feature_pairs, teachers[0], student, name="feature_hints")
            if feature_pairs
            else None
        )
        self._teacher_is_ensemble = isinstance(teacher, (list, tuple))
        self.teachers = [_teacher.freeze(model) for model in teachers]
        self.student = student
        self.student_loss_tracker = keras.metrics.Mean(name="student_loss")
        self.distillation_loss_tracker = keras.metrics.Mean(name="distillation_loss")
        self.feature_pairs = feature_pairs
        self._feature_hints = feature_hints
        if getattr(student, "built", False):
            self.built = True

    @property
    def teacher(self):
        """The teacher as given: one model, or the list of an ensemble."""
        return list(self.teachers) if self._teacher_is_ensemble else self.teachers[0]

    @property
    def feature_projections(self):
        """The FitNets projections by `FeaturePair` name (pairs whose shapes differ).

        They train and are saved with the Distiller; `student` does not contain them.
        """
        return dict(self._feature_hints.projections) if self._feature_hints else {}

    def call(self, inputs, training=None):
        if training and self._feature_hints is not None:
            # The same student layers through a model that also returns the hinted
            # features: one forward feeds both the logits and the feature terms.
            return self._feature_hints.student_forward(inputs, training=training)
        return self.student(inputs, training=training)

    def build(self, input_shape):
        self.student.build(input_shape)
        for model in self.teachers:
            model.build(input_shape)
        self.built = True

    # `compile` is Keras' own (overriding it would stop `load_model` from re-compiling);
    # Keras' compile assigns `self.loss`, so the hard-label loss is checked here.
    @property
    def loss(self):
        """The hard-label loss given to `compile`, applied to the student's logits."""
        return self._hard_loss

    @loss.setter
    def loss(self, loss):
        # Keras' Trainer.__init__ sets `loss = None` before `alpha` exists.
        alpha = getattr(self, "alpha", None)
        if alpha is not None:
            _check_hard_loss(loss, alpha)
        self._hard_loss = loss

    # Keras' compile skips the `loss` assignment when loss=None, but always ends with
    # `self.compiled = True`: the place to reject a missing hard-label loss (alpha < 1),
    # which would otherwise train on the soft term alone, silently.
    @property
    def compiled(self):
        return getattr(self, "_compiled", False)

    @compiled.setter
    def compiled(self, compiled):
        alpha = getattr(self, "alpha", None)
        if compiled and alpha is not None and self._compile_loss is None:
            _check_hard_loss(None, alpha)
        self._compiled = compiled

    def fit(self, x=None, y=None, *args, **kwargs):
        # Raw strings for a KerasHub task (its preprocessor not applied): a clear error
        # with the `dataset.map(preprocessor)` line instead of "Invalid dtype: str".
        _sequence.check_preprocessed(x, [self.student, *self.teachers])
        return super().fit(x, y, *args, **kwargs)

    # --- the objective: one place, every backend ----------------------------------

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The distillation objective while training; the student's own loss otherwise.

        This is the backend-neutral path (JAX and PyTorch use Keras' own train step,
        which calls it); the TensorFlow `train_step` calls the same
        `_distillation_objective`.
        """
        labels, teacher_logits = split_targets(y, self.temperature)
        sample_weight = _example_weights(sample_weight)
        if not training:
            return self._student_loss(labels, y_pred, sample_weight) + self._regularization()
        teacher_logits, teacher_features = self._teacher_targets(x, teacher_logits)
        return self._distillation_objective(
            labels, y_pred, teacher_logits, sample_weight, teacher_features
        )

    def _teacher_targets(self, x, cached_logits):
        """(teacher logits, teacher features or None): one teacher forward, or the cache."""
        if self._feature_hints is None:
            if cached_logits is None:
                cached_logits = _teacher.teacher_logits(self.teachers, x, self.temperature)
            return cached_logits, None
        if cached_logits is not None:
            raise ValueError(
                f"`y` carries cached teacher logits ({TEACHER_LOGITS!r}), but this "
                f"Distiller has feature_pairs {[p.name for p in self.feature_pairs]}: "
                "they need the teacher's intermediate features, which are not cached, so "
                "the teacher must run each step. Pass plain labels as `y`, or drop "
                "feature_pairs to train on the cached logits."
            )
        return self._feature_hints.teacher_forward(x)

    def _distillation_objective(
        self, labels, student_logits, teacher_logits, sample_weight, teacher_features=None
    ):
        """`(1 - alpha) * hard + alpha * T^2 KL + sum_i w_i * feature_i + regularization`.

        Updates the trackers. The student's features come from the training forward of
        `call` just before; `teacher_features` from `_teacher_targets`.
        """
        teacher_logits = _sequence.dense_teacher_logits(
            teacher_logits, student_logits, self.divergence
        )
        if teacher_logits.shape[-1] != student_logits.shape[-1]:
            raise ValueError(
                f"Teacher logits (`y[{TEACHER_LOGITS!r}]` when cached) of shape "
                f"{tuple(teacher_logits.shape)} do not match the student's output shape "
                f"{tuple(student_logits.shape)}: they must have the same number of classes."
            )
        self._distillation_loss.reduction = _sequence.soft_reduction(self.reduction, self.loss)
        soft = self._distillation_loss(teacher_logits, student_logits, sample_weight)
        total = self.alpha * soft + self._regularization()
        batch_size = ops.shape(student_logits)[0]
        if self.alpha < 1.0:
            hard = self._student_loss(labels, student_logits, sample_weight)
            total = total + (1.0 - self.alpha) * hard
            self.student_loss_tracker.update_state(_unscale(hard), sample_weight=batch_size)
        self.distillation_loss_tracker.update_state(_unscale(soft), sample_weight=batch_size)
        if self._feature_hints is not None:
            hint_losses = self._feature_hints.hint_losses(teacher_features, sample_weight)
            for pair, tracker, hint_loss in hint_losses:
                total = total + pair.weight * hint_loss
                tracker.update_state(_unscale(hint_loss), sample_weight=batch_size)
        return total

    def _student_loss(self, labels, student_logits, sample_weight):
        if self._compile_loss is None:
            return ops.zeros((), dtype="float32")
        if labels is None:
            raise ValueError(
                "The Distiller needs labels for its hard-label loss (alpha < 1); got y=None. "
                "Pass labels, or use alpha=1.0 with compile(loss=None) for soft targets only."
            )
        return ops.cast(self._compile_loss(labels, student_logits, sample_weight), "float32")

    def _regularization(self):
        # The student's own losses only: a teacher's activity regularizers must not
        # leak into the student's objective or its logged loss. Keras' JAX trainer runs
        # `call` (the student alone) in a stateless scope and hands its losses over in
        # `_losses_override`; read later, outside that scope, `student.losses` would
        # drop the activity regularizers (tests/backend_neutral checks both backends).
        student_losses = getattr(self, "_losses_override", None) or self.student.losses
        if not student_losses:
            return ops.zeros((), dtype="float32")
        return ops.sum([ops.cast(ops.sum(loss), "float32") for loss in student_losses])

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        labels, _ = split_targets(y, self.temperature)
        sample_weight = _example_weights(sample_weight)
        return super().compute_metrics(x, labels, y_pred, sample_weight=sample_weight)

    # --- TensorFlow: the train step the design card asks for ----------------------

    if keras.backend.backend() == "tensorflow":

        def train_step(self, data):
            """One step: teacher forward outside the tape, gradients for the student only."""
            import tensorflow as tf

            x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
            sample_weight = _example_weights(sample_weight)
            labels, teacher_logits = split_targets(y, self.temperature)
            teacher_logits, teacher_features = self._teacher_targets(x, teacher_logits)
            with tf.GradientTape() as tape:
                student_logits = self(x, training=True)
                loss = self._distillation_objective(
                    labels, student_logits, teacher_logits, sample_weight, teacher_features
                )
                self._loss_tracker.update_state(
                    _unscale(loss), sample_weight=tf.shape(student_logits)[0]
                )
                scaled_loss = self.optimizer.scale_loss(loss)
            trainable_weights = self.trainable_weights
            gradients = tape.gradient(scaled_loss, trainable_weights)
            self.optimizer.apply_gradients(zip(gradients, trainable_weights))
            return self.compute_metrics(x, labels, student_logits, sample_weight=sample_weight)

    def test_step(self, *args, **kwargs):
        # JAX's test_step returns (logs, state); the other backends return logs.
        result = super().test_step(*args, **kwargs)
        if isinstance(result, tuple):
            logs, state = result
            return _without_training_only_logs(logs), state
        return _without_training_only_logs(result)

    def evaluate(self, *args, **kwargs):
        # Keras takes the final results from `get_metrics_result()` (read across
        # replicas) only when its keys equal the test step's logs; otherwise it keeps
        # the last step's logs, which under tf.distribute hold per-replica values of
        # metrics such as ECE. So the training-only trackers leave both while evaluating.
        self._evaluating = True
        try:
            return super().evaluate(*args, **kwargs)
        finally:
            self._evaluating = False

    def get_metrics_result(self):
        result = super().get_metrics_result()
        if getattr(self, "_evaluating", False):
            return _without_training_only_logs(result)
        return result

    # --- serialization ------------------------------------------------------------

    def get_config(self):
        teachers = [_serialize_model(model) for model in self.teachers]
        return {
            "name": self.name,
            "trainable": self.trainable,
            "teacher": teachers if self._teacher_is_ensemble else teachers[0],
            "student": _serialize_model(self.student),
            "temperature": self.temperature,
            "alpha": self.alpha,
            "feature_pairs": [keras.saving.serialize_keras_object(p) for p in self.feature_pairs],
            "divergence": self.divergence,
            "beta": self.beta,
            "reduction": self.reduction,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        teacher = config.pop("teacher")
        if isinstance(teacher, list):
            teacher = [keras.saving.deserialize_keras_object(t, custom_objects) for t in teacher]
        else:
            teacher = keras.saving.deserialize_keras_object(teacher, custom_objects)
        student = keras.saving.deserialize_keras_object(config.pop("student"), custom_objects)
        feature_pairs = [
            keras.saving.deserialize_keras_object(pair, custom_objects)
            for pair in config.pop("feature_pairs", None) or []
        ]
        return cls(teacher=teacher, student=student, feature_pairs=feature_pairs, **config)


def _computes_in_float16(model):
    """True when `model` (or any layer nested in it) computes in float16."""
    stack = [model]
    while stack:
        layer = stack.pop()
        if getattr(layer, "compute_dtype", None) == "float16":
            return True
        stack.extend(getattr(layer, "layers", None) or [])
    return False


def _serialize_model(model):
    # The Distiller's own compile settings are what a reloaded Distiller trains with;
    # the sub-models' compile states (a trained teacher's optimizer) are dropped.
    config = keras.saving.serialize_keras_object(model)
    config.pop("compile_config", None)
    return config


def _unscale(loss):
    # Keras' reductions divide by the replica count under tf.distribute so that the
    # replicas' gradients sum to the global mean; logged values undo it, as Keras'
    # own loss tracker does.
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        num_replicas = tf.distribute.get_strategy().num_replicas_in_sync
        if num_replicas > 1:
            return loss * float(num_replicas)
    return loss


def _without_training_only_logs(logs):
    return {
        key: value
        for key, value in logs.items()
        if key not in _TRAINING_ONLY_LOGS and not key.startswith(_TRAINING_ONLY_LOG_PREFIX)
    }


def _check_hard_loss(loss, alpha):
    if loss is None:
        if alpha < 1.0:
            raise ValueError(
                f"Distiller.compile needs `loss`, the hard-label loss weighted by "
                f"(1 - alpha) = {1.0 - alpha:g}; got loss=None. Use e.g. "
                "keras.losses.SparseCategoricalCrossentropy(from_logits=True), or "
                "alpha=1.0 to train on soft targets only."
            )
        return
    if isinstance(loss, (list, tuple, dict)):
        raise ValueError(
            f"The Distiller trains single-output students: `loss` must be one loss, got {loss!r}."
        )
    name = loss if isinstance(loss, str) else getattr(loss, "__name__", None)
    takes_probabilities = name in _PROBABILITY_LOSS_NAMES
    if isinstance(loss, keras.losses.Loss):
        takes_probabilities = loss.get_config().get("from_logits") is False
    if takes_probabilities:
        raise ValueError(
            f"The Distiller's predictions are the student's logits, but `loss`={loss!r} "
            "expects probabilities (from_logits=False). Use a logits loss, e.g. "
            "keras.losses.SparseCategoricalCrossentropy(from_logits=True) or "
            "keras_kd.LabelSmoothingLoss(0.1, from_logits=True)."
        )
