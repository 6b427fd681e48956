"""`Distiller`: trains a student from a frozen teacher with one or more distillation terms."""

from __future__ import annotations

import math
from typing import Any
from typing import Optional
from typing import Sequence
from typing import Union

import keras
from keras import ops

from keras_kd import _fit_checks
from keras_kd import _keras_compat
from keras_kd import _multi_worker
from keras_kd import _sequence
from keras_kd import _teacher
from keras_kd import _validation
from keras_kd import features
from keras_kd import losses
from keras_kd.losses import _binary
from keras_kd.losses._term import term_targets
from keras_kd.targets import LABELS  # noqa: F401  (re-exported: the cached-target keys)
from keras_kd.targets import TEACHER_LOGITS
from keras_kd.targets import TensorLike
from keras_kd.targets import TEACHER_MEMBER_LOGITS  # noqa: F401
from keras_kd.targets import example_weights as _example_weights
from keras_kd.targets import split_targets

# Logged during `fit` only (with each distillation term's name); `evaluate` runs no
# teacher, so it reports the student's own compiled loss and metrics, exactly as
# `student.evaluate` does.
_STUDENT_LOSS_LOG = "student_loss"
_TRAINING_ONLY_LOG_PREFIX = "feature_loss_"
_DEFAULT_TEMPERATURE = 4.0

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

        L = (1 - alpha) * H(y, softmax(z_s)) + alpha * T^2 * KL(softmax(z_t/T) || softmax(z_s/T))

    where `H` is the hard-label loss given to `compile(loss=...)`, `z_t` and `z_s` are
    the teacher's and student's logits and `T` is the temperature. **`alpha` weights
    the distillation term** (Hinton's convention and the seed formula); some libraries,
    `keras.distillation` and the keras.io example among them, use alpha for the
    *hard* term instead. `alpha=0.9` means 90 % soft targets, 10 % hard labels.

    With `distillation_loss` (one term, or a weighted list of terms `D_i` with weights
    `w_i`, default 1), the soft part is their weighted sum, inside `alpha`:

        L = (1 - alpha) * hard + alpha * sum_i w_i * D_i(z_t, z_s; T) + features

    Hinton's `DistillationLoss` is the default term; `keras_kd.DecoupledDistillationLoss`
    (DKD), `keras_kd.DISTLoss` (DIST), `DistillationLoss(standardize=True)` (logit
    standardization) and a user's own `keras_kd.DistillationTerm` or any
    `keras.losses.Loss` are terms too (see `keras_kd.DistillationTerm` for the
    contract). Every term follows the Distiller's one temperature `T`.

    Teacher and student with the same several outputs (Functional, list or dict of
    logits) distil output by output, `hard` being the compiled (list or dict) loss and
    the soft part `sum_o sum_i w_oi D_oi` over the outputs' terms.

    With `feature_pairs` (hints from intermediate layers; Romero et al. 2015, Zagoruyko
    & Komodakis 2017), each pair adds its own weighted term, outside `alpha`:

        L = (1 - alpha) * hard + alpha * sum_i w_i D_i + sum_j weight_j * feature_j(t_j, r_j(s_j))

    where `t_j` and `s_j` are the paired teacher and student layers' outputs and `r_j`
    a learnable projection when their shapes differ (see `keras_kd.FeaturePair`). Each
    step still runs one teacher and one student forward.

    `temperature`, `alpha` and `term_weights` are validated properties backed by
    non-trainable variables: assigning them (by hand, or with
    `keras_kd.schedules.DistillationSchedule` during `fit`) takes effect at the next
    step without retracing, and they are saved with the model.

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
    - Logs: `loss` (the total), `student_loss` (the hard term, unweighted) and each
      distillation term by its name (unweighted; Hinton's is `distillation_loss`),
      during training; with feature pairs also `feature_loss_<name>` per pair
      (unweighted).

    Teachers and students must output logits. A Sequential/Functional teacher that
    ends in a softmax is converted exactly (`log p` has the same tempered softmax as
    the logits); a student ending in a softmax is rejected, since its logits are what
    is trained. `compile(loss=...)` must then take logits: a loss configured with
    `from_logits=False` is rejected.

    Args:
        teacher: a `keras.Model`, or a list of them: an ensemble whose tempered
            softmaxes are averaged (Hinton et al. 2015).
        student: the `keras.Model` to train.
        temperature: T, a finite float > 0. Default: the terms' own temperature
            (every `DistillationTerm` given must agree), else 4.0.
        alpha: weight of the distillation terms in [0, 1], default 0.9.
        feature_pairs: list of `keras_kd.FeaturePair`, default None (logits only). Needs
            a single Functional or Sequential teacher and student, and a live teacher
            (not cached logits), since features are not cached.
        name: the model's name.
        output: "softmax" (default; K-class classifiers) or "sigmoid" (multi-label
            models with K independent sigmoid outputs): the soft term is then the mean
            over labels of `T^2` Bernoulli KLs between `sigmoid(z / T)`. A single-logit
            binary model (K = 1) is distilled in that form under either value. See
            docs/guides/binary-and-multilabel.md.
        distillation_loss: the distillation term(s): a `keras.losses.Loss`, or a list
            whose items are a loss or a `(loss, weight)` pair, weight a finite float
            >= 0. Default None: Hinton's `DistillationLoss(temperature)`. Term names
            (their `name`) must differ: they are the log keys. For a multi-output
            student: a dict from output name to such a value, or None to skip the
            output (outputs left out are skipped); logs are `<output>_<name>`.
        standardize: bool, default False: logit standardization in the default
            Hinton term (Sun et al. 2024). Set it on the term when you pass one.
        divergence: "kl" (default, Hinton's forward KL), "reverse_kl" or "jsd": the
            default term's divergence, as `keras_kd.losses.distillation_loss` (set it
            on the term when you pass one).
        beta: float in (0, 1), default 0.5, the JSD's mixture weight.
        reduction: how each distillation term is reduced over examples (and tokens). None
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

    Several terms, weighted:

        >>> Distiller(teacher, student, alpha=0.5, distillation_loss=[
        ...     keras_kd.DecoupledDistillationLoss(temperature=4.0),
        ...     (keras_kd.DISTLoss(temperature=4.0), 2.0)])

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
        teacher: Union[keras.Model, Sequence[keras.Model]],
        student: keras.Model,
        temperature: Optional[float] = None,
        alpha: float = 0.9,
        feature_pairs: Optional[Sequence[features.FeaturePair]] = None,
        name: str = "distiller",
        distillation_loss: Any = None,
        standardize: bool = False,
        output: str = "softmax",
        divergence: str = "kl",
        beta: float = 0.5,
        reduction: Optional[str] = None,
        **kwargs: Any,
    ) -> None:
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
        output_names = _multi_output_names(student)
        standardize = _validation.check_bool(standardize, "standardize")
        divergence = losses._divergences.check_divergence(divergence)
        beta = losses._divergences.check_beta(beta)
        reduction = _sequence.check_reduction(reduction)
        # (output index or None, term, weight, log name) for every distillation term.
        entries = _term_entries(distillation_loss, output_names)
        temperature = _resolve_temperature(temperature, [(term, w) for _, term, w, _ in entries])
        if distillation_loss is None:
            entries = [
                (
                    index,
                    losses.DistillationLoss(
                        temperature,
                        standardize=standardize,
                        output=output,
                        divergence=divergence,
                        beta=beta,
                    ),
                    1.0,
                    log,
                )
                for index, _, _, log in entries
            ]
        elif standardize or divergence != "kl" or beta != 0.5:
            raise ValueError(
                f"`standardize`, `divergence` and `beta` (got {standardize!r}, {divergence!r}, "
                f"{beta!r}) configure the default Hinton term; with `distillation_loss` "
                "given, set them on the term instead, e.g. DistillationLoss(standardize=True, "
                "divergence='jsd') or DecoupledDistillationLoss(standardize=True)."
            )
        alpha = _validation.check_in_range(alpha, "alpha", 0.0, 1.0)
        output = _check_terms_output(output, entries)
        _check_terms_reduction(reduction, entries)
        if output_names:
            _check_multi_output(teachers, student, output_names, feature_pairs)
        else:
            _teacher.check_compatible(teachers, student, output)
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
        self._default_term = distillation_loss is None
        self._standardize = standardize
        self.teachers = [_teacher.freeze(model) for model in teachers]
        self.student = student
        self._output_names = output_names
        # The output form (softmax or sigmoid) every term, teacher conversion and
        # ensemble fold share.
        self._output = output
        # The default term's divergence (a top-k cache's target depends on it) and the
        # terms' reduction (None: follow the compiled hard-label loss).
        self._divergence, self._beta, self._reduction = divergence, beta, reduction
        self._terms = [term for _, term, _, _ in entries]
        self._term_outputs = [index for index, _, _, _ in entries]
        self._term_log_names = [log for _, _, _, log in entries]
        # Non-trainable variables, read inside the train step: an assignment takes
        # effect at the next step without retracing, and they are saved with the model.
        self._temperature_variable = self._hyperparameter("temperature", temperature)
        self._alpha_variable = self._hyperparameter("alpha", alpha)
        self._term_weight_variables = [
            self._hyperparameter(f"{log}_weight", weight) for _, _, weight, log in entries
        ]
        # Python mirrors: what the properties and get_config report (the variables hold
        # float32 roundings), and what decisions taken while tracing read.
        self._temperature_value = temperature
        self._alpha_value = alpha
        self._term_weight_values = [weight for _, _, weight, _ in entries]
        self._trained_without_labels = False
        self.student_loss_tracker = keras.metrics.Mean(name=_STUDENT_LOSS_LOG)
        self.term_loss_trackers = [keras.metrics.Mean(name=log) for log in self._term_log_names]
        self.feature_pairs = feature_pairs
        self._feature_hints = feature_hints
        if getattr(student, "built", False):
            self.built = True

    def fit(self, *args: Any, **kwargs: Any) -> keras.callbacks.History:
        # Before any step: raw strings for a KerasHub task whose preprocessor is not
        # applied (a clear error with the `dataset.map(preprocessor)` line instead of
        # "Invalid dtype: str"), weights, target keys, and the first batch's values (once).
        x = args[0] if args else kwargs.get("x")
        _sequence.check_preprocessed(x, [self.student, *self.teachers])
        _fit_checks.check_fit_call(self, args, kwargs)
        # Under a multi-worker MultiWorkerMirroredStrategy, what Keras cannot run there
        # is done by keras_kd (keras-team/keras#20585; see `_multi_worker`).
        return _multi_worker.call(self, super().fit, args, kwargs)

    def _hyperparameter(self, name, value):
        return self.add_weight(
            shape=(),
            dtype="float32",
            initializer=keras.initializers.Constant(value),
            trainable=False,
            autocast=False,
            name=name,
        )

    # --- hyperparameters: validated, effective at the next step, saved ---------------

    @property
    def temperature(self) -> float:
        """T, shared by every distillation term (and an ensemble's fold); float > 0."""
        return self._temperature_value

    @temperature.setter
    def temperature(self, value: float) -> None:
        value = _validation.check_temperature(value)
        self._sync_training_state()
        self._temperature_variable.assign(value)
        self._temperature_value = value
        for term in self._terms:
            if isinstance(term, losses.DistillationTerm):
                # Keeps each term's config (saved with the Distiller) equal to T.
                term.temperature = value

    @property
    def alpha(self) -> float:
        """Weight of the distillation terms in [0, 1]; `1 - alpha` weighs the hard loss."""
        return self._alpha_value

    @alpha.setter
    def alpha(self, value: float) -> None:
        value = _validation.check_in_range(value, "alpha", 0.0, 1.0)
        if value < 1.0 and self.compiled and _keras_compat.compiled_loss(self) is None:
            _check_hard_loss(None, value)
        if value < 1.0 and self._trained_without_labels:
            raise ValueError(
                f"`alpha` = {value!r} < 1 needs labels for the hard loss, but this Distiller "
                "trains on targets without labels (soft targets only). Keep alpha = 1.0."
            )
        self._sync_training_state()
        self._alpha_variable.assign(value)
        self._alpha_value = value

    @property
    def term_weights(self) -> dict[str, float]:
        """Each distillation term's weight `w_i` by term name (a dict of floats >= 0).

        Assign a dict with some or all names to change them, e.g.
        `distiller.term_weights = {"dist_loss": 2.0}`.
        """
        return dict(zip(self._term_log_names, self._term_weight_values))

    @term_weights.setter
    def term_weights(self, weights: dict[str, float]) -> None:
        names = list(self._term_log_names)
        if not isinstance(weights, dict) or set(weights) - set(names):
            raise ValueError(
                f"`term_weights` must be a dict keyed by term name, some of {names}; "
                f"got {weights!r}."
            )
        checked = {name: _check_term_weight(value, name) for name, value in weights.items()}
        self._sync_training_state()
        for name, value in checked.items():
            index = names.index(name)
            self._term_weight_variables[index].assign(value)
            self._term_weight_values[index] = value

    @property
    def divergence(self) -> str:
        """The default term's divergence ("kl", "reverse_kl" or "jsd"); set at construction."""
        return self._divergence

    @property
    def beta(self) -> float:
        """The default term's JSD mixture weight in (0, 1); set at construction."""
        return self._beta

    @property
    def reduction(self) -> Optional[str]:
        """The terms' reduction, or None to follow the compiled hard loss; set at construction."""
        return self._reduction

    @divergence.setter
    def divergence(self, value: Any) -> None:
        _fixed_at_construction("divergence", value)

    @beta.setter
    def beta(self, value: Any) -> None:
        _fixed_at_construction("beta", value)

    @reduction.setter
    def reduction(self, value: Any) -> None:
        _fixed_at_construction("reduction", value)

    @property
    def distillation_terms(self) -> dict[str, keras.losses.Loss]:
        """The distillation terms by log name (`<output>_<name>` for multi-output), in order."""
        return dict(zip(self._term_log_names, self._terms))

    def _sync_training_state(self):
        # Under JAX, `fit` keeps the variables' values in its own state between steps
        # and writes them back at the end of the epoch; `jax_state_sync` (public on
        # Keras' JAX trainer, what `Callback.model` calls) writes them now, so that a
        # value read or assigned mid-epoch is the current one and the next step
        # re-reads the state. A no-op on the other backends and outside `fit`.
        sync = getattr(self, "jax_state_sync", None)
        if sync is not None:
            sync()

    @property
    def teacher(self) -> Union[keras.Model, list[keras.Model]]:
        """The teacher as given: one model, or the list of an ensemble."""
        return list(self.teachers) if self._teacher_is_ensemble else self.teachers[0]

    @property
    def feature_projections(self) -> dict[str, keras.layers.Layer]:
        """The FitNets projections by `FeaturePair` name (pairs whose shapes differ).

        They train and are saved with the Distiller; `student` does not contain them.
        """
        return dict(self._feature_hints.projections) if self._feature_hints else {}

    def call(self, inputs: TensorLike, training: Optional[bool] = None) -> Any:
        if training and self._feature_hints is not None:
            # The same student layers through a model that also returns the hinted
            # features: one forward feeds both the logits and the feature terms.
            return self._feature_hints.student_forward(inputs, training=training)
        return self.student(inputs, training=training)

    def build(self, input_shape: Any) -> None:
        self.student.build(input_shape)
        for model in self.teachers:
            model.build(input_shape)
        self.built = True

    # `compile` is Keras' own (overriding it would stop `load_model` from re-compiling);
    # Keras' compile assigns `self.loss`, so the hard-label loss is checked here.
    @property
    def loss(self) -> Any:
        """The hard-label loss given to `compile`, applied to the student's logits."""
        return self._hard_loss

    @loss.setter
    def loss(self, loss: Any) -> None:
        # Keras' Trainer.__init__ sets `loss = None` before `alpha` exists.
        alpha = getattr(self, "_alpha_value", None)
        if alpha is not None:
            _check_hard_loss(loss, alpha, getattr(self, "_output_names", None))
        self._hard_loss = loss

    # Keras' compile skips the `loss` assignment when loss=None, but always ends with
    # `self.compiled = True`: the place to reject a missing hard-label loss (alpha < 1),
    # which would otherwise train on the soft term alone, silently.
    @property
    def compiled(self) -> bool:
        return getattr(self, "_compiled", False)

    @compiled.setter
    def compiled(self, compiled: bool) -> None:
        alpha = getattr(self, "_alpha_value", None)
        if compiled and alpha is not None and _keras_compat.compiled_loss(self) is None:
            _check_hard_loss(None, alpha)
        self._compiled = compiled

    # --- the objective: one place, every backend ----------------------------------

    def compute_loss(
        self,
        x: Any = None,
        y: Any = None,
        y_pred: Any = None,
        sample_weight: Optional[TensorLike] = None,
        training: bool = True,
    ) -> TensorLike:
        """The distillation objective while training; the student's own loss otherwise.

        This is the backend-neutral path (JAX and PyTorch use Keras' own train step,
        which calls it); the TensorFlow `train_step` calls the same
        `_distillation_objective`.
        """
        labels, teacher_logits = split_targets(
            y, self._temperature_variable.value, self._output, self._output_names
        )
        sample_weight = _example_weights(sample_weight)
        if not training:
            return self._student_loss(labels, y_pred, sample_weight) + self._regularization()
        teacher_logits, teacher_features = self._teacher_targets(x, teacher_logits)
        return self._distillation_objective(
            labels, y_pred, teacher_logits, sample_weight, teacher_features
        )

    def _teacher_targets(self, x, cached_logits):
        """(teacher logits, teacher features or None): one teacher forward, or the cache."""
        if self._output_names:
            if cached_logits is not None:
                raise ValueError(
                    f"`y` carries cached teacher logits ({TEACHER_LOGITS!r}), but the "
                    f"student has several outputs {self._output_names}: the cache holds one "
                    "logits tensor. Pass the labels as `y` and let the teacher run."
                )
            outputs = keras.tree.flatten(self.teachers[0](x, training=False))
            return [ops.stop_gradient(ops.cast(output, "float32")) for output in outputs], None
        if self._feature_hints is None:
            if cached_logits is None:
                cached_logits = _teacher.teacher_logits(
                    self.teachers, x, self._temperature_variable.value, self._output
                )
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
        """`(1 - alpha) * hard + alpha * sum_i w_i D_i + sum_j w_j * feature_j + regularization`.

        Updates the trackers. The student's features come from the training forward of
        `call` just before; `teacher_features` from `_teacher_targets`.
        """
        if not self._output_names:
            teacher_logits = _sequence.dense_teacher_logits(
                teacher_logits, student_logits, self._divergence, self._temperature_variable.value
            )
        teacher_outputs = keras.tree.flatten(teacher_logits)
        student_outputs = keras.tree.flatten(student_logits)
        for teacher_output, student_output in zip(teacher_outputs, student_outputs):
            if teacher_output.shape[-1] != student_output.shape[-1]:
                raise ValueError(
                    f"Teacher logits (`y[{TEACHER_LOGITS!r}]` when cached) of shape "
                    f"{tuple(teacher_output.shape)} do not match the student's output shape "
                    f"{tuple(student_output.shape)}: they must have the same number of classes."
                )
        temperature = self._temperature_variable.value
        alpha = self._alpha_variable.value
        batch_size = ops.shape(student_outputs[0])[0]
        soft = ops.zeros((), dtype="float32")
        # Every term is reduced as the compiled hard loss is (or as `reduction` says),
        # so e.g. a per-real-token hard loss makes the soft terms per real token too.
        reduction = _sequence.soft_reduction(self._reduction, self.loss)
        for term in self._terms:
            term.reduction = reduction
        for output, term, weight, tracker in zip(
            self._term_outputs, self._terms, self._term_weight_variables, self.term_loss_trackers
        ):
            if output is None:
                term_inputs = (labels, teacher_logits, student_logits, sample_weight)
            else:  # one output of a multi-output model
                term_inputs = (
                    _output_of(labels, output),
                    teacher_outputs[output],
                    student_outputs[output],
                    _output_of(sample_weight, output),
                )
            value = _term_loss(term, *term_inputs, temperature)
            soft = soft + weight.value * value
            tracker.update_state(_unscale(value), sample_weight=batch_size)
        total = alpha * soft + self._regularization()
        if _keras_compat.compiled_loss(self) is not None:
            if labels is None:
                if self._alpha_value < 1.0:
                    self._student_loss(labels, student_logits, sample_weight)  # raises
                # Decided while tracing: `alpha` may not drop below 1 afterwards.
                self._trained_without_labels = True
            else:
                hard = self._student_loss(labels, student_logits, sample_weight)
                total = total + (1.0 - alpha) * hard
                self.student_loss_tracker.update_state(_unscale(hard), sample_weight=batch_size)
        if self._feature_hints is not None:
            hint_losses = self._feature_hints.hint_losses(teacher_features, sample_weight)
            for pair, tracker, hint_loss in hint_losses:
                total = total + pair.weight * hint_loss
                tracker.update_state(_unscale(hint_loss), sample_weight=batch_size)
        return total

    def _student_loss(self, labels, student_logits, sample_weight):
        compiled_loss = _keras_compat.compiled_loss(self)
        if compiled_loss is None:
            return ops.zeros((), dtype="float32")
        if labels is None:
            raise ValueError(
                "The Distiller needs labels for its hard-label loss (alpha < 1); got y=None. "
                "Pass labels, or use alpha=1.0 with compile(loss=None) for soft targets only."
            )
        return ops.cast(compiled_loss(labels, student_logits, sample_weight), "float32")

    def _regularization(self):
        # The student's own losses only: a teacher's activity regularizers must not
        # leak into the student's objective or its logged loss. Under JAX the forward's
        # losses come from the stateless call (see `_keras_compat`; tests/backend_neutral
        # checks both backends).
        student_losses = _keras_compat.losses_in_stateless_call(self) or self.student.losses
        if not student_losses:
            return ops.zeros((), dtype="float32")
        return ops.sum([ops.cast(ops.sum(loss), "float32") for loss in student_losses])

    def compute_metrics(
        self,
        x: Any,
        y: Any,
        y_pred: Any,
        sample_weight: Optional[TensorLike] = None,
    ) -> dict[str, Any]:
        # Only the labels are used: an ensemble's cached logits are folded at an arbitrary
        # temperature and dropped (JAX runs this outside the scope holding the
        # Distiller's variables, so the temperature variable cannot be read here).
        labels, _ = split_targets(y, 1.0, self._output, self._output_names)
        sample_weight = _example_weights(sample_weight)
        return super().compute_metrics(x, labels, y_pred, sample_weight=sample_weight)

    # --- TensorFlow: the train step the design card asks for ----------------------

    if keras.backend.backend() == "tensorflow":

        def train_step(self, data: Any) -> dict[str, Any]:
            """One step: teacher forward outside the tape, gradients for the student only."""
            import tensorflow as tf

            x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
            sample_weight = _example_weights(sample_weight)
            labels, teacher_logits = split_targets(
                y, self._temperature_variable.value, self._output, self._output_names
            )
            teacher_logits, teacher_features = self._teacher_targets(x, teacher_logits)
            with tf.GradientTape() as tape:
                student_logits = self(x, training=True)
                loss = self._distillation_objective(
                    labels, student_logits, teacher_logits, sample_weight, teacher_features
                )
                _keras_compat.loss_tracker(self).update_state(
                    _unscale(loss), sample_weight=tf.shape(keras.tree.flatten(student_logits)[0])[0]
                )
                scaled_loss = self.optimizer.scale_loss(loss)
            trainable_weights = self.trainable_weights
            gradients = tape.gradient(scaled_loss, trainable_weights)
            self.optimizer.apply_gradients(zip(gradients, trainable_weights))
            return self.compute_metrics(x, labels, student_logits, sample_weight=sample_weight)

        def make_train_function(self, force: bool = False) -> Any:
            # Keras' own fails under several MultiWorkerMirroredStrategy workers
            # (keras-team/keras#20585); see `_multi_worker`. Elsewhere it is Keras'.
            if _multi_worker.multi_worker_strategy(self) is None or (
                self.train_function is not None and not force
            ):
                return super().make_train_function(force)
            self.train_function = _multi_worker.step_function(self, self.train_step)
            return self.train_function

        def make_test_function(self, force: bool = False) -> Any:
            # As `make_train_function`.
            if _multi_worker.multi_worker_strategy(self) is None or (
                self.test_function is not None and not force
            ):
                return super().make_test_function(force)
            self.test_function = _multi_worker.step_function(self, self.test_step)
            return self.test_function

    def test_step(self, *args: Any, **kwargs: Any) -> Any:
        # JAX's test_step returns (logs, state); the other backends return logs.
        result = super().test_step(*args, **kwargs)
        if isinstance(result, tuple):
            logs, state = result
            return self._without_training_only_logs(logs), state
        return self._without_training_only_logs(result)

    def evaluate(self, *args: Any, **kwargs: Any) -> Any:
        # Keras takes the final results from `get_metrics_result()` (read across
        # replicas) only when its keys equal the test step's logs; otherwise it keeps
        # the last step's logs, which under tf.distribute hold per-replica values of
        # metrics such as ECE. So the training-only trackers leave both while evaluating.
        self._evaluating = True
        try:
            return _multi_worker.call(self, super().evaluate, args, kwargs)
        finally:
            self._evaluating = False

    def get_metrics_result(self) -> dict[str, Any]:
        result = super().get_metrics_result()
        if getattr(self, "_evaluating", False):
            return self._without_training_only_logs(result)
        return result

    def _without_training_only_logs(self, logs):
        training_only = {_STUDENT_LOSS_LOG, *self._term_log_names}
        return {
            key: value
            for key, value in logs.items()
            if key not in training_only and not key.startswith(_TRAINING_ONLY_LOG_PREFIX)
        }

    # --- serialization ------------------------------------------------------------

    def save(self, *args: Any, **kwargs: Any) -> None:
        """As `keras.Model.save`, without the teachers' own optimizer state.

        A teacher compiled and trained before distillation carries its optimizer; its
        state is stale (the teacher is frozen) and the Distiller's file holds what the
        Distiller needs to resume: the student, projections and its own optimizer.
        """
        with _keras_compat.without_optimizers(self.teachers):
            return super().save(*args, **kwargs)

    def save_weights(self, *args: Any, **kwargs: Any) -> None:
        """As `keras.Model.save_weights`, without the teachers' own optimizer state."""
        with _keras_compat.without_optimizers(self.teachers):
            return super().save_weights(*args, **kwargs)

    def get_config(self) -> dict[str, Any]:
        teachers = [_serialize_model(model) for model in self.teachers]
        return {
            "name": self.name,
            "trainable": self.trainable,
            "teacher": teachers if self._teacher_is_ensemble else teachers[0],
            "student": _serialize_model(self.student),
            "temperature": self.temperature,
            "alpha": self.alpha,
            "feature_pairs": [keras.saving.serialize_keras_object(p) for p in self.feature_pairs],
            "output": self._output,
            "distillation_loss": None if self._default_term else self._terms_config(),
            "standardize": self._standardize,
            "divergence": self._divergence,
            "beta": self._beta,
            "reduction": self._reduction,
        }

    def load_own_variables(self, store: Any) -> None:
        # A file saved by keras_kd 0.1.0, before temperature and alpha were variables,
        # holds none of the Distiller's own: the values from its config, already set at
        # construction, are the ones it was saved with.
        if len(store.keys()) == 0:
            return
        super().load_own_variables(store)

    def _terms_config(self):
        def items(output):
            return [
                {"loss": keras.saving.serialize_keras_object(term), "weight": weight}
                for index, term, weight in zip(
                    self._term_outputs, self._terms, self._term_weight_values
                )
                if index == output
            ]

        if not self._output_names:
            return items(None)
        return {name: items(index) or None for index, name in enumerate(self._output_names)}

    @classmethod
    def from_config(
        cls,
        config: dict[str, Any],
        custom_objects: Optional[dict[str, Any]] = None,
    ) -> Distiller:
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
        def deserialize_terms(items):
            if items is None:
                return None
            return [
                (
                    keras.saving.deserialize_keras_object(item["loss"], custom_objects),
                    item["weight"],
                )
                for item in items
            ]

        terms = config.pop("distillation_loss", None)
        if isinstance(terms, dict):
            terms = {name: deserialize_terms(items) for name, items in terms.items()}
        else:
            terms = deserialize_terms(terms)
        return cls(
            teacher=teacher,
            student=student,
            feature_pairs=feature_pairs,
            distillation_loss=terms,
            **config,
        )


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


def _term_loss(term, labels, teacher_logits, student_logits, sample_weight, temperature):
    """One distillation term's reduced loss, float32 (the contract of `DistillationTerm`)."""
    if isinstance(term, losses.DistillationTerm):
        value = term.distill(labels, teacher_logits, student_logits, sample_weight, temperature)
    else:
        y_true = term_targets(term, labels, teacher_logits)
        value = term(y_true, student_logits, sample_weight=sample_weight)
    return ops.cast(value, "float32")


def _output_of(structure, index):
    """Output `index`'s entry of a structure aligned with the outputs (or the whole value)."""
    if isinstance(structure, (list, tuple, dict)):
        return keras.tree.flatten(structure)[index]
    return structure


def _multi_output_names(model):
    """The output names of a Functional model with several outputs, else None."""
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        return None
    if not outputs or len(outputs) < 2:
        return None
    return list(model.output_names)


def _term_entries(distillation_loss, output_names):
    """[(output index or None, term or None (the default), weight, log name)]."""
    if not output_names:
        weighted = _as_weighted_terms(distillation_loss) or [(None, 1.0)]
        return [
            (None, term, weight, term.name if term is not None else "distillation_loss")
            for term, weight in weighted
        ]
    if distillation_loss is None:
        per_output = {name: [(None, 1.0)] for name in output_names}
    elif isinstance(distillation_loss, dict):
        unknown = set(distillation_loss) - set(output_names)
        if unknown:
            raise ValueError(
                f"`distillation_loss` names outputs {sorted(unknown)} that the student does "
                f"not have; its outputs are {output_names}."
            )
        per_output = {
            name: _as_weighted_terms(distillation_loss.get(name)) for name in output_names
        }
    else:
        raise ValueError(
            f"The student has several outputs {output_names}: `distillation_loss` must be "
            "a dict from output name to a term, a list of weighted terms, or None to skip "
            f"that output; got {distillation_loss!r}."
        )
    if not any(per_output.values()):
        raise ValueError(
            f"`distillation_loss` skips every output of {output_names}: nothing to distil."
        )
    return [
        (index, term, weight, f"{name}_{term.name if term is not None else 'distillation_loss'}")
        for index, name in enumerate(output_names)
        for term, weight in per_output[name] or []
    ]


def _check_multi_output(teachers, student, output_names, feature_pairs):
    """A multi-output teacher and student must have the same outputs (names and widths)."""
    if len(teachers) > 1 or feature_pairs:
        raise ValueError(
            f"A multi-output student ({output_names}) is distilled from one teacher and "
            "without feature_pairs; got an ensemble or feature pairs."
        )
    teacher = teachers[0]
    teacher_names = _multi_output_names(teacher)
    student_shapes = [tuple(output.shape[1:]) for output in student.outputs]
    teacher_shapes = (
        [tuple(output.shape[1:]) for output in teacher.outputs] if teacher_names else None
    )
    if teacher_names != output_names or teacher_shapes != student_shapes:
        raise ValueError(
            f"Teacher and student must have the same outputs to distil output by output: "
            f"teacher {teacher_names} {teacher_shapes}, student {output_names} {student_shapes}."
        )
    for model in (teacher, student):
        for name, layer in zip(output_names, _keras_compat.output_layers(model)):
            activation = getattr(getattr(layer, "activation", None), "__name__", None)
            if isinstance(layer, keras.layers.Softmax) or activation in ("softmax", "sigmoid"):
                raise ValueError(
                    f"Output {name!r} of {model.name!r} ends in a {activation or 'softmax'}; "
                    "multi-output Distillers need logits on every output (activation=None)."
                )


def _as_weighted_terms(distillation_loss):
    """`distillation_loss` as a list of (loss, weight), or None for the default term."""
    if distillation_loss is None:
        return None
    if isinstance(distillation_loss, (list, tuple)):
        items = distillation_loss
    else:
        items = [distillation_loss]
    if isinstance(distillation_loss, tuple) and len(distillation_loss) == 2 and not isinstance(
        distillation_loss[1], keras.losses.Loss
    ):
        items = [distillation_loss]  # one (loss, weight) pair
    if not items:
        raise ValueError("`distillation_loss` must name at least one term, got [].")
    weighted = []
    for index, item in enumerate(items):
        loss, weight = item if isinstance(item, (list, tuple)) and len(item) == 2 else (item, 1.0)
        if not isinstance(loss, keras.losses.Loss):
            raise ValueError(
                f"`distillation_loss[{index}]` must be a keras.losses.Loss (e.g. "
                f"keras_kd.DecoupledDistillationLoss()) or a (loss, weight) pair, got {item!r}."
            )
        weighted.append((loss, _check_term_weight(weight, loss.name)))
    names = [loss.name for loss, _ in weighted]
    repeated = sorted({name for name in names if names.count(name) > 1})
    reserved = sorted(set(names) & {"loss", _STUDENT_LOSS_LOG})
    if repeated or reserved:
        raise ValueError(
            f"Distillation term names are their log keys and must differ from each other "
            f"and from 'loss' and 'student_loss'; got {names}. Pass `name=` to the terms."
        )
    return weighted


def _check_term_weight(weight, name):
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not (
        math.isfinite(weight) and weight >= 0
    ):
        raise ValueError(
            f"The weight of distillation term {name!r} must be a finite number >= 0, "
            f"got {weight!r}."
        )
    return float(weight)


def _resolve_temperature(temperature, weighted_terms):
    """The Distiller's T: given, or the terms' common one, or 4.0; never two values."""
    own = {
        loss.name: loss.temperature
        for loss, _ in weighted_terms or []
        if isinstance(loss, losses.DistillationTerm)
    }
    if temperature is not None:
        temperature = _validation.check_temperature(temperature)
        differing = {name: value for name, value in own.items() if value != temperature}
        if differing:
            raise ValueError(
                f"`temperature`={temperature!r} differs from the temperature of the terms "
                f"{differing}: every term follows the Distiller's one temperature. Give it "
                "once, on the terms or as `temperature`."
            )
        return temperature
    if len(set(own.values())) > 1:
        raise ValueError(
            f"The distillation terms have different temperatures {own}, but a Distiller "
            "has one temperature, which every term follows. Construct them with the same one."
        )
    return next(iter(own.values()), _DEFAULT_TEMPERATURE)


def _check_hard_loss(loss, alpha, output_names=None):
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
        if not output_names:
            raise ValueError(
                f"This student has a single output: `loss` must be one loss, got {loss!r}."
            )
        for item in loss.values() if isinstance(loss, dict) else loss:
            if item is not None:
                _check_hard_loss(item, 0.0)
        return
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


def _check_terms_output(output, entries):
    """`output` after checking that no given term reads its logits in another form."""
    output = _binary.check_output(output)
    for _, term, _, _ in entries:
        term_output = getattr(term, "output", output)
        if term_output != output:
            raise ValueError(
                f"The distillation term {term.name!r} has output={term_output!r}, but the "
                f"Distiller has output={output!r}: the teacher's logits are converted and "
                f"an ensemble folded in the Distiller's form. Pass output={term_output!r} "
                "to the Distiller too."
            )
    return output


def _fixed_at_construction(name, value):
    # Changing them would change the traced objective (and a top-k target): refuse
    # rather than save a value that training ignores.
    raise ValueError(
        f"`Distiller.{name}` is fixed at construction, got an assignment of {value!r}. "
        f"Build a new Distiller with {name}={value!r} (its student keeps its weights)."
    )


def _check_terms_reduction(reduction, entries):
    """Raises when a given term carries its own reduction, which the Distiller would override.

    Every term is reduced as `reduction` says (None: as the compiled hard loss), so a
    term built with another reduction would silently lose it: say where to set it.
    """
    for _, term, _, _ in entries:
        own = getattr(term, "reduction", _sequence.KERAS_DEFAULT_REDUCTION)
        if own != _sequence.KERAS_DEFAULT_REDUCTION and own != reduction:
            raise ValueError(
                f"The distillation term {term.name!r} has reduction={own!r}, but the "
                f"Distiller reduces every term itself (reduction={reduction!r}: "
                f"{'as the compiled hard loss' if reduction is None else 'as given'}). "
                f"Pass reduction={own!r} to the Distiller instead, and leave the term's "
                "default."
            )
