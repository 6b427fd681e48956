"""The rows of `keras-kd reproduce`: how each model is trained and what is measured.

A row is one entry of `ROWS`: an architecture and an objective (labels with a loss,
or distillation from another trained model with Distiller arguments). Every model of
one seed starts from the same initialisation for its architecture
(`keras.utils.set_random_seed(seed)` right before it is built) and sees the same
batches, so the rows differ only in their objective and the comparisons between rows
are paired.
"""

import dataclasses
import math
import time
import typing

import keras
import numpy as np

import keras_kd
from keras_kd import calibration
from keras_kd.cli import _models
from keras_kd.cli import _statistics

# Architectures: the teacher, the main student (a thinner network of the teacher's
# family) and the capacity-gap student (an MLP).
ARCHITECTURES = {
    "teacher": _models.build_teacher,
    "student": _models.build_student,
    "mlp": _models.build_mlp,
}
_STUDENT_NAMES = {"student": "thin CNN student", "mlp": "MLP student"}


@dataclasses.dataclass(frozen=True)
class Row:
    """One model to train: `architecture` on labels with `loss(config)`, or distilled
    from the model named `teacher` (a row or a helper of the same seed) with
    `keras_kd.Distiller(teacher, student, **distillation(config, architecture))`."""

    name: str
    architecture: str
    description: str
    loss: typing.Optional[typing.Callable] = None
    teacher: typing.Optional[str] = None
    distillation: typing.Optional[typing.Callable] = None
    # The config key whose value is a number of optimizer steps to train for instead
    # of `config.epochs` (the poor De-KD teacher).
    steps: typing.Optional[str] = None
    # `schedule(config, total_steps)`: a `keras_kd.schedules.DistillationSchedule` for
    # the distillation's `fit` (DKD's warm-up), or None.
    schedule: typing.Optional[typing.Callable] = None


def _hard_labels(config):
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _smoothed_labels(config):
    return keras_kd.LabelSmoothingLoss(config.smoothing, from_logits=True)


def _virtual_teacher(config):
    return keras_kd.VirtualTeacherLoss(
        correct_prob=config.tfkd_correct_prob, temperature=config.tfkd_temperature,
        alpha=config.tfkd_alpha, mode="paper",
    )


def kd_hyperparameters(config, architecture):
    """(T, alpha) of Hinton KD for a student architecture: each student has its own,
    chosen on the validation split (the MLP, far from the teacher, wants a lower T)."""
    if architecture == "mlp":
        return config.mlp_kd_temperature, config.mlp_kd_alpha
    return config.kd_temperature, config.kd_alpha


def _hinton(config, architecture):
    temperature, alpha = kd_hyperparameters(config, architecture)
    return {"temperature": temperature, "alpha": alpha}


def _teacher_free(config, architecture):
    return {"temperature": config.teacher_free_temperature, "alpha": config.teacher_free_alpha}


def _fitnets(config, architecture):
    # FitNets' regressor (a Dense layer the Distiller adds, as the widths differ)
    # maps the student's penultimate layer onto the teacher's.
    hint = keras_kd.FeaturePair(_models.PENULTIMATE, _models.PENULTIMATE, loss="mse",
                                weight=config.hint_weight, name="hint")
    return {**_hinton(config, architecture), "feature_pairs": [hint]}


def _decoupled(config, architecture):
    return {
        "distillation_loss": keras_kd.DecoupledDistillationLoss(
            temperature=config.dkd_temperature, alpha=config.dkd_tckd_weight,
            beta=config.dkd_nckd_weight),
        "alpha": config.dkd_alpha,
    }


def _decoupled_warmup(config, total_steps):
    # The authors' warm-up is by epoch (20 of 240); every row here trains its epochs
    # in one Keras epoch, so the same share of training is counted in optimizer steps.
    warmup_steps = max(1, round(config.dkd_warmup_fraction * total_steps))
    return keras_kd.schedules.DistillationSchedule(
        term_weights={"decoupled_distillation_loss": keras_kd.schedules.LinearWarmup(
            1.0, warmup_steps)},
        unit="step",
    )


def _dist(config, architecture):
    return {
        "distillation_loss": keras_kd.DISTLoss(
            temperature=config.dist_temperature, beta=config.dist_beta,
            gamma=config.dist_gamma),
        "alpha": config.dist_alpha,
    }


def _standardized(config, architecture):
    return {
        "distillation_loss": keras_kd.DistillationLoss(
            config.standardized_temperature, standardize=True),
        "alpha": config.standardized_alpha,
    }


def _modern_rows(prefix, architecture, label):
    """DKD, DIST and KD on standardized logits for one student architecture, each with
    the authors' CIFAR-100 hyperparameters (see `_config.ReproduceConfig`)."""
    return (
        Row(f"{prefix}dkd", architecture, f"{label} distilled from `teacher` with decoupled "
            "KD and its warm-up, DKD (Zhao et al. 2022)", teacher="teacher",
            distillation=_decoupled, schedule=_decoupled_warmup),
        Row(f"{prefix}dist", architecture, f"{label} distilled from `teacher` with DIST's "
            "Pearson-correlation relations (Huang et al. 2022)", teacher="teacher",
            distillation=_dist),
        Row(f"{prefix}kd_standardized", architecture, f"{label} distilled from `teacher` "
            "with KD on standardized logits (Sun et al. 2024)", teacher="teacher",
            distillation=_standardized),
    )


def _student_rows(prefix, architecture, label):
    """The student rows for one student architecture; `prefix` names its rows."""
    scratch = f"{prefix}student"
    return (
        Row(scratch, architecture, f"{label} from scratch, hard labels", loss=_hard_labels),
        Row(f"{prefix}kd", architecture, f"{label} distilled from `teacher` "
            "(Hinton et al. 2015)", teacher="teacher", distillation=_hinton),
        Row(f"{prefix}label_smoothing", architecture, f"{label} with LabelSmoothingLoss "
            "(Szegedy et al. 2016)", loss=_smoothed_labels),
        Row(f"{prefix}tfkd_reg", architecture, f"{label} with VirtualTeacherLoss, Tf-KD_reg "
            "(Yuan et al. 2020)", loss=_virtual_teacher),
        Row(f"{prefix}tfkd_self", architecture, f"{label} distilled from a trained copy of "
            f"itself (`{scratch}`), Tf-KD_self (Yuan et al. 2020)", teacher=scratch,
            distillation=_teacher_free),
        Row(f"{prefix}de_kd", architecture, f"{label} distilled from a poorly trained "
            "teacher, De-KD (Yuan et al. 2020)", teacher="poor_teacher",
            distillation=_teacher_free),
        Row(f"{prefix}ls_teacher_kd", architecture, f"{label} distilled from a "
            "label-smoothed teacher (Müller et al. 2019)", teacher="ls_teacher",
            distillation=_hinton),
        Row(f"{prefix}fitnets", architecture, f"{label} distilled from `teacher` with a "
            "penultimate-layer hint plus KD (Romero et al. 2015)", teacher="teacher",
            distillation=_fitnets),
    )


_MAIN = "thin CNN student"
_MLP = "MLP student (capacity gap)"

# The row table. Row names are read by other tools from results.json: keep them.
# A new distillation term is one entry (and, for its finding, one `_report.CLAIMS`
# entry), as the modern rows below.
ROW_TABLE = (
    Row("teacher", "teacher", "CNN teacher, hard labels", loss=_hard_labels),
    *_student_rows("", "student", _MAIN),
    Row("re_kd", "teacher", "teacher architecture distilled from the trained thin student "
        "(`student`), Re-KD (Yuan et al. 2020)", teacher="student",
        distillation=_teacher_free),
    *_student_rows("mlp_", "mlp", _MLP),
    # Modern logit distillation, after the older rows so that their order is kept.
    *_modern_rows("", "student", _MAIN),
    *_modern_rows("mlp_", "mlp", _MLP),
)
ROWS = tuple(row.name for row in ROW_TABLE)
ROW_DESCRIPTIONS = {row.name: row.description for row in ROW_TABLE}

# Models that teach rows but are not rows themselves.
HELPERS = (
    Row("poor_teacher", "teacher", "teacher architecture after `poor_teacher_steps` "
        "steps (the De-KD teacher)", loss=_hard_labels, steps="poor_teacher_steps"),
    Row("ls_teacher", "teacher", "teacher trained with label smoothing (the "
        "`ls_teacher_kd` teacher)", loss=_smoothed_labels),
)
_BY_NAME = {row.name: row for row in ROW_TABLE + HELPERS}

# Several optimizer steps per call into the compiled function: small models are
# dominated by Python overhead otherwise.
_STEPS_PER_EXECUTION = 16

# The measured columns, in table order; see `Record`.
METRICS = (
    "accuracy",
    "nll",
    "ece",
    "ece_temperature_scaled",
    "temperature",
    "parameters",
    "training_seconds",
)

# Hyperparameters chosen on the validation split, and the grids they come from.
TUNED = {
    "student": ("kd_temperature", "kd_alpha"),
    "mlp": ("mlp_kd_temperature", "mlp_kd_alpha"),
}


@dataclasses.dataclass
class Record:
    """One row trained with one seed, measured on the test split.

    - accuracy: top-1 accuracy; nll: mean negative log-likelihood; ece: expected
      calibration error (equal-width bins).
    - ece_temperature_scaled, nll_temperature_scaled: the same after temperature
      scaling fitted on the validation split; temperature: the fitted T (all three
      None, with `note`, when no finite T exists).
    - parameters: the trained model's parameter count; training_seconds: wall time of
      this row's own `fit` (its teacher's training not included).
    - ece_noise_floor: the mean ECE a perfectly calibrated model with the same
      confidences shows on this test split (sampling noise; see
      `_statistics.noise_floor`).
    - teacher_accuracy, teacher_ece: those of the model that taught this row, for
      distilled rows.
    """

    row: str
    seed: int
    accuracy: float
    nll: float
    ece: float
    ece_temperature_scaled: float
    nll_temperature_scaled: float
    temperature: float
    parameters: int
    training_seconds: float
    ece_noise_floor: float = None
    teacher_accuracy: float = None
    teacher_ece: float = None
    note: str = None


class Progress:
    """Counts trained models and prints `k of n models done, ~m min left`."""

    def __init__(self, total, log):
        self.total, self.done, self.log = total, 0, log
        self.start = time.perf_counter()

    def step(self, line):
        self.done += 1
        elapsed = time.perf_counter() - self.start
        left = elapsed / self.done * max(self.total - self.done, 0)
        self.log(f"{line}  [{self.done} of {self.total} models done, ~{left / 60:.1f} min left]")


def models_per_seed():
    """How many models one seed trains: every row and every helper a row needs."""
    used = {row.teacher for row in ROW_TABLE if row.teacher}
    return len(ROW_TABLE) + sum(helper.name in used for helper in HELPERS)


def tuning_models(config, fixed=()):
    """How many models `tune` trains (0 without `config.tune`); `fixed` as in `tune`."""
    if not config.tune:
        return 0
    kd_grid = len(config.kd_temperature_grid) * len(config.kd_alpha_grid)
    tuned_students = sum(not set(keys) & set(fixed) for keys in TUNED.values())
    return tuned_students * kd_grid + (0 if "smoothing" in fixed else len(config.smoothing_grid))


def tune(dataset, config, seed, fixed, progress, log=print, verbose=0):
    """Chooses the KD (T, alpha) of each student and the smoothing eps on the
    validation split, by validation accuracy (ties: lower validation NLL).

    Args:
        fixed: config keys the user set explicitly; those are never tuned.

    Returns:
        (config with the chosen values, {key: how it was chosen}, runner): the
        runner holds the trained teacher, reused by the seed's rows.
    """
    runner = _SeedRunner(dataset, config, seed, log, verbose, progress)
    chosen, provenance, grids = {}, {}, {}
    for architecture, (temperature_key, alpha_key) in TUNED.items():
        if {temperature_key, alpha_key} & set(fixed):
            continue
        candidates = [(t, a) for t in config.kd_temperature_grid for a in config.kd_alpha_grid]
        scores = {}
        for temperature, alpha in candidates:
            model, _ = runner.distil(runner.model("teacher"), architecture,
                                     {"temperature": temperature, "alpha": alpha})
            scores[(temperature, alpha)] = runner.validation_score(model)
            progress.step(f"tune  | {architecture:<7} KD T={temperature:g} alpha={alpha:g}: "
                          f"validation acc {scores[(temperature, alpha)][0]:.4f}")
        best = _best(scores)
        chosen.update({temperature_key: best[0], alpha_key: best[1]})
        grids[architecture] = scores
        for key in (temperature_key, alpha_key):
            provenance[key] = (
                f"tuned in this run: validation accuracy of the {_STUDENT_NAMES[architecture]} "
                f"over "
                f"T in {list(config.kd_temperature_grid)} x alpha in "
                f"{list(config.kd_alpha_grid)} (seed {seed})"
            )
    if "smoothing" not in fixed:
        scores = {}
        for smoothing in config.smoothing_grid:
            loss = keras_kd.LabelSmoothingLoss(smoothing, from_logits=True)
            model, _ = runner.train("student", loss)
            scores[smoothing] = runner.validation_score(model)
            progress.step(f"tune  | student label smoothing eps={smoothing:g}: validation acc "
                          f"{scores[smoothing][0]:.4f}")
        chosen["smoothing"] = _best(scores)
        provenance["smoothing"] = (
            f"tuned in this run: validation accuracy of the thin CNN student over eps in "
            f"{list(config.smoothing_grid)} (seed {seed})"
        )
    log("tuned on the validation split: " + ", ".join(f"{k}={v:g}" for k, v in chosen.items()))
    tuned = config.with_overrides(chosen)
    runner.config = tuned
    return tuned, provenance, runner


def provenance_of_defaults(config, fixed, tuned_provenance):
    """{hyperparameter: how its value in this run was chosen}, for the report."""
    notes = {}
    tunable = [key for keys in TUNED.values() for key in keys] + ["smoothing"]
    for key in tunable:
        if key in fixed:
            notes[key] = "set explicitly (--set)"
        elif key in tuned_provenance:
            notes[key] = tuned_provenance[key]
        else:
            notes[key] = ("the default, chosen on the validation split by a tuning run "
                          "(docs/guides/main-job.md); not tuned in this run")
    for key in ("tfkd_correct_prob", "tfkd_temperature", "tfkd_alpha",
                "teacher_free_temperature", "teacher_free_alpha"):
        notes[key] = "set explicitly (--set)" if key in fixed else "the paper's value, not tuned"
    notes["hint_weight"] = ("set explicitly (--set)" if "hint_weight" in fixed
                            else "fixed (FitNets trains its hint in a separate stage), not tuned")
    for key in _MODERN_KEYS:
        notes[key] = ("set explicitly (--set)" if key in fixed
                      else "the authors' CIFAR-100 default, not tuned")
    return {key: {"value": getattr(config, key), "how": note} for key, note in notes.items()}


# The modern rows' hyperparameters: the authors' defaults (the Distiller alphas translated
# from their CE and KD weights; see `_config.ReproduceConfig`).
_MODERN_KEYS = ("dkd_temperature", "dkd_tckd_weight", "dkd_nckd_weight", "dkd_alpha",
                "dkd_warmup_fraction", "dist_temperature", "dist_beta", "dist_gamma",
                "dist_alpha", "standardized_temperature", "standardized_alpha")


def _best(scores):
    # Highest validation accuracy, then lowest validation NLL, then the first listed.
    return max(scores, key=lambda key: (scores[key][0], -scores[key][1]))


def run_seed(dataset, config, seed, progress, log=print, keep_artifacts=False, verbose=0,
             runner=None):
    """Trains and measures every row (and the helpers they need) for one seed.

    Args:
        runner: a `_SeedRunner` of this seed that already holds trained models
            (from `tune`), or None.

    Returns:
        (records, logits): a list of `Record` in `ROWS` order, and {"test": {model
        name: test logits}, "temperature": {model name: fitted T or None},
        "projection": ...} (the projection inputs of `student` and
        `label_smoothing` only with `keep_artifacts`).
    """
    runner = runner or _SeedRunner(dataset, config, seed, log, verbose, progress)
    records = {}
    for row in ROW_TABLE:
        model = runner.model(row.name)
        logits, metrics = runner.measurements[row.name]
        teacher = runner.measurements[row.teacher][1] if row.teacher else None
        records[row.name] = Record(
            row=row.name,
            seed=seed,
            **metrics,
            parameters=int(model.count_params()),
            training_seconds=runner.seconds[row.name],
            ece_noise_floor=_statistics.noise_floor(logits, config.num_bins, seed),
            teacher_accuracy=teacher["accuracy"] if teacher else None,
            teacher_ece=teacher["ece"] if teacher else None,
        )
    outputs = {
        "test": {name: logits for name, (logits, _) in runner.measurements.items()},
        "temperature": {name: metrics["temperature"]
                        for name, (_, metrics) in runner.measurements.items()},
    }
    if keep_artifacts:
        outputs["projection"] = {
            name: runner.projection_inputs(runner.model(name))
            for name in ("student", "label_smoothing")
        }
    return [records[row] for row in ROWS], outputs


class _SeedRunner:
    """Builds, trains, measures and keeps the models of one seed."""

    def __init__(self, dataset, config, seed, log, verbose, progress):
        self.dataset = dataset
        self.config = config
        self.seed = seed
        self.log = log
        self.verbose = verbose
        self.progress = progress
        self.models, self.seconds, self.measurements = {}, {}, {}

    def model(self, name):
        """The trained model `name` (a row or a helper), trained on first use."""
        if name not in self.models:
            row = _BY_NAME[name]
            if row.teacher:
                schedule = row.schedule(self.config, self._total_steps()) if row.schedule else None
                model, seconds = self.distil(self.model(row.teacher), row.architecture,
                                             row.distillation(self.config, row.architecture),
                                             schedule)
            else:
                steps = getattr(self.config, row.steps) if row.steps else None
                model, seconds = self.train(row.architecture, row.loss(self.config), steps)
            self.models[name], self.seconds[name] = model, seconds
            self.measurements[name] = self.measure(model)
            self.progress.step(self.line(name, self.measurements[name][1], seconds))
        return self.models[name]

    def _build(self, architecture, name=None):
        # The same seed before every build: the same architecture starts from the
        # same weights (and sees the same batch order) in every row.
        keras.utils.set_random_seed(self.seed)
        kwargs = {"name": name} if name else {}
        return ARCHITECTURES[architecture](self.dataset.input_shape, self.dataset.num_classes,
                                           self.config, **kwargs)

    def _shift_pixels(self, architecture):
        # Augmentation for images only (MNIST-1D's generator already translates), and
        # only for convolutions (an MLP has no notion of neighbouring pixels).
        if len(self.dataset.input_shape) != 3:
            return 0
        if architecture == "mlp":
            return self.config.student_shift_pixels
        return self.config.teacher_shift_pixels

    def _total_steps(self):
        """Optimizer steps of a fully trained model (`config.epochs` epochs)."""
        config = self.config
        return math.ceil(len(self.dataset.y_train) * config.epochs / config.batch_size)

    def _optimizer(self):
        # Cosine decay to 0 over the whole run: the last epochs at a small step size
        # make the final weights, hence the rows' comparison, much less noisy.
        schedule = keras.optimizers.schedules.CosineDecay(self.config.learning_rate,
                                                          self._total_steps())
        return keras.optimizers.Adam(learning_rate=schedule)

    def _fit(self, model, shift_pixels, steps=None, callbacks=()):
        """Trains for `config.epochs` epochs, or for `steps` batches only, on inputs
        randomly translated by up to `shift_pixels`, with `callbacks`."""
        import tensorflow as tf

        config = self.config
        num_examples = len(self.dataset.y_train)
        batches = tf.data.Dataset.from_tensor_slices((self.dataset.x_train, self.dataset.y_train))
        # All epochs in one Keras epoch: Keras' per-epoch overhead would otherwise
        # cost more than the small models' own compute. Reshuffled every pass, with
        # the row's seed, so every row of a seed sees the same batches.
        batches = batches.shuffle(num_examples, seed=self.seed, reshuffle_each_iteration=True)
        batches = batches.repeat(1 if steps else config.epochs)
        if shift_pixels:
            batches = batches.enumerate().map(_random_shift(shift_pixels, self.seed))
        batches = batches.batch(config.batch_size)
        if steps:
            batches = batches.take(steps)
        start = time.perf_counter()
        model.fit(batches, epochs=1, shuffle=False, verbose=self.verbose,
                  callbacks=list(callbacks))
        return time.perf_counter() - start

    def train(self, architecture, loss, steps=None):
        """A model of `architecture` trained on `loss`; (model, seconds)."""
        model = self._build(architecture)
        model.compile(optimizer=self._optimizer(), loss=loss,
                      steps_per_execution=_STEPS_PER_EXECUTION)
        return model, self._fit(model, self._shift_pixels(architecture), steps)

    def distil(self, teacher, architecture, distiller_kwargs, schedule=None):
        """A model of `architecture` distilled from `teacher`, with the `schedule`
        callback (or None) during `fit`; (model, seconds)."""
        student = self._build(architecture, name="distilled")
        distiller = keras_kd.Distiller(teacher=teacher, student=student, **distiller_kwargs)
        distiller.compile(
            optimizer=self._optimizer(),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            steps_per_execution=_STEPS_PER_EXECUTION,
        )
        return student, self._fit(distiller, self._shift_pixels(architecture),
                                  callbacks=[schedule] if schedule else ())

    def validation_score(self, model):
        """(validation accuracy, validation NLL): what the tuning grid compares."""
        logits = _predict(model, self.dataset.x_val)
        accuracy = float(np.mean(np.argmax(logits, axis=-1) == self.dataset.y_val))
        return accuracy, calibration.negative_log_likelihood(logits, self.dataset.y_val,
                                                             from_logits=True)

    def measure(self, model):
        """(test logits, metrics): the test metrics of `Record`, with temperature
        scaling fitted on the validation split."""
        dataset = self.dataset
        num_bins = self.config.num_bins
        test_logits = _predict(model, dataset.x_test)
        metrics = {
            "accuracy": float(np.mean(np.argmax(test_logits, axis=-1) == dataset.y_test)),
            "nll": calibration.negative_log_likelihood(test_logits, dataset.y_test,
                                                       from_logits=True),
            "ece": calibration.expected_calibration_error(test_logits, dataset.y_test,
                                                          num_bins=num_bins, from_logits=True),
            "ece_temperature_scaled": None,
            "nll_temperature_scaled": None,
            "temperature": None,
            "note": None,
        }
        try:
            scaler = calibration.TemperatureScaling().fit(_predict(model, dataset.x_val),
                                                          dataset.y_val)
        except ValueError as error:
            # No finite T minimises the validation NLL (e.g. no validation errors).
            metrics["note"] = f"temperature scaling not fitted: {error}"
            return test_logits, metrics
        scaled = scaler.transform(test_logits)
        metrics.update(
            ece_temperature_scaled=calibration.expected_calibration_error(
                scaled, dataset.y_test, num_bins=num_bins, from_logits=True
            ),
            nll_temperature_scaled=calibration.negative_log_likelihood(
                scaled, dataset.y_test, from_logits=True
            ),
            temperature=float(scaler.temperature),
        )
        return test_logits, metrics

    def projection_inputs(self, model):
        """Penultimate features (train and test) and class templates, for the picture."""
        kernel, bias = _models.class_templates(model)
        return {
            "train_features": _models.penultimate_features(model, self.dataset.x_train),
            "train_labels": self.dataset.y_train,
            "test_features": _models.penultimate_features(model, self.dataset.x_test),
            "test_labels": self.dataset.y_test,
            "kernel": kernel,
            "bias": bias,
        }

    def line(self, label, metrics, seconds=None):
        scaled, temperature = metrics["ece_temperature_scaled"], metrics["temperature"]
        line = (
            f"seed {self.seed} | {label:<20} acc {metrics['accuracy']:.4f}  "
            f"nll {metrics['nll']:.3f}  ece {metrics['ece']:.4f}  "
            f"ece(ts) {'n/a' if scaled is None else f'{scaled:.4f}'}  "
            f"T {'n/a' if temperature is None else f'{temperature:.2f}'}"
        )
        if seconds is not None:
            line += f"  {seconds:.1f} s"
        return line


def _random_shift(pixels, seed):
    """A tf.data map translating each image by up to `pixels` in each direction
    (zero padding, then a random crop back to the original size).

    Stateless randomness keyed on (seed, example position) keeps the augmentation
    repeatable whatever the threading.
    """
    import tensorflow as tf

    def shift(position, example):
        image, label = example
        padded = tf.pad(image, [[pixels, pixels], [pixels, pixels], [0, 0]])
        crop_seed = tf.stack([tf.constant(seed, tf.int64), position])
        return tf.image.stateless_random_crop(padded, tf.shape(image), seed=crop_seed), label

    return shift


def _predict(model, x):
    return _models.predict_in_batches(model, x)
