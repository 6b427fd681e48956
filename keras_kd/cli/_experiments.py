"""The rows of `keras-kd reproduce`: how each model is trained and what is measured.

Every model of one seed starts from the same initialisation for its architecture
(`keras.utils.set_random_seed(seed)` right before it is built), so the rows differ
only in their objective and the comparisons between rows are paired.
"""

import dataclasses
import math
import time

import keras
import numpy as np

import keras_kd
from keras_kd import calibration
from keras_kd.cli import _models

# The row names are read by other tools from results.json: keep them.
ROWS = (
    "teacher",
    "student",
    "kd",
    "label_smoothing",
    "tfkd_reg",
    "tfkd_self",
    "re_kd",
    "de_kd",
    "ls_teacher_kd",
    "fitnets",
)

ROW_DESCRIPTIONS = {
    "teacher": "CNN teacher, hard labels (images shifted by up to `teacher_shift_pixels`)",
    "student": "MLP student from scratch, hard labels",
    "kd": "student distilled from `teacher` (Hinton et al. 2015)",
    "label_smoothing": "student with LabelSmoothingLoss (Szegedy et al. 2016)",
    "tfkd_reg": "student with VirtualTeacherLoss, Tf-KD_reg (Yuan et al. 2020)",
    "tfkd_self": "student distilled from a trained copy of itself, Tf-KD_self (Yuan et al. 2020)",
    "re_kd": "teacher architecture distilled from the trained student, Re-KD (Yuan et al. 2020)",
    "de_kd": "student distilled from a poorly trained teacher, De-KD (Yuan et al. 2020)",
    "ls_teacher_kd": "student distilled from a label-smoothed teacher (Müller et al. 2019)",
    "fitnets": "student distilled from `teacher` with a penultimate-layer hint plus KD "
    "(Romero et al. 2015)",
}

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
      confidences shows on this test split (sampling noise; see `_calibrated_ece`).
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


def run_seed(dataset, config, seed, log=print, keep_artifacts=False, verbose=0):
    """Trains and measures every row for one seed.

    Returns:
        (records, artifacts): a list of `Record` in `ROWS` order, and, with
        `keep_artifacts`, a dict of arrays for the pictures: `test_logits` per row and
        `projection` (penultimate features and class templates) for `student` and
        `label_smoothing`; else an empty dict.
    """
    runner = _SeedRunner(dataset, config, seed, log, verbose)
    records = {}
    test_logits = {}

    def add(row, model, seconds, teacher_metrics=None):
        logits, metrics = runner.measure(model)
        test_logits[row] = logits
        records[row] = Record(
            row=row,
            seed=seed,
            **metrics,
            parameters=int(model.count_params()),
            training_seconds=seconds,
            ece_noise_floor=_calibrated_ece(logits, config.num_bins, seed),
            teacher_accuracy=teacher_metrics["accuracy"] if teacher_metrics else None,
            teacher_ece=teacher_metrics["ece"] if teacher_metrics else None,
        )
        runner.log_line(row, metrics, seconds)
        return metrics

    hard_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    smoothing_loss = keras_kd.LabelSmoothingLoss(config.smoothing, from_logits=True)

    teacher, seconds = runner.train(_models.build_teacher, hard_loss)
    teacher_metrics = add("teacher", teacher, seconds)

    student, seconds = runner.train(_models.build_student, hard_loss)
    student_metrics = add("student", student, seconds)

    model, seconds = runner.distil(teacher, _models.build_student,
                                   config.kd_temperature, config.kd_alpha)
    add("kd", model, seconds, teacher_metrics)

    label_smoothing, seconds = runner.train(_models.build_student, smoothing_loss)
    add("label_smoothing", label_smoothing, seconds)

    virtual_teacher_loss = keras_kd.VirtualTeacherLoss(
        correct_prob=config.tfkd_correct_prob,
        temperature=config.tfkd_temperature,
        alpha=config.tfkd_alpha,
        mode="paper",
    )
    model, seconds = runner.train(_models.build_student, virtual_teacher_loss)
    add("tfkd_reg", model, seconds)

    # The trained `student` row is the "copy of itself trained first".
    model, seconds = runner.distil(student, _models.build_student,
                                   config.teacher_free_temperature, config.teacher_free_alpha)
    add("tfkd_self", model, seconds, student_metrics)

    model, seconds = runner.distil(student, _models.build_teacher,
                                   config.teacher_free_temperature, config.teacher_free_alpha)
    add("re_kd", model, seconds, student_metrics)

    poor_teacher, _ = runner.train(_models.build_teacher, hard_loss,
                                   steps=config.poor_teacher_steps)
    _, poor_metrics = runner.measure(poor_teacher)
    runner.log_line(f"(de_kd teacher, {config.poor_teacher_steps} steps)", poor_metrics)
    model, seconds = runner.distil(poor_teacher, _models.build_student,
                                   config.teacher_free_temperature, config.teacher_free_alpha)
    add("de_kd", model, seconds, poor_metrics)

    ls_teacher, _ = runner.train(_models.build_teacher, smoothing_loss)
    _, ls_teacher_metrics = runner.measure(ls_teacher)
    runner.log_line("(ls_teacher_kd teacher)", ls_teacher_metrics)
    model, seconds = runner.distil(ls_teacher, _models.build_student,
                                   config.kd_temperature, config.kd_alpha)
    add("ls_teacher_kd", model, seconds, ls_teacher_metrics)

    # FitNets' regressor (a Dense layer the Distiller adds, as the widths differ)
    # maps the student's penultimate layer onto the teacher's.
    hint = keras_kd.FeaturePair(_models.PENULTIMATE, _models.PENULTIMATE, loss="mse",
                                weight=config.hint_weight, name="hint")
    model, seconds = runner.distil(teacher, _models.build_student, config.kd_temperature,
                                   config.kd_alpha, feature_pairs=[hint])
    add("fitnets", model, seconds, teacher_metrics)

    artifacts = {}
    if keep_artifacts:
        artifacts = {
            "test_logits": test_logits,
            "projection": {
                row: runner.projection_inputs(model)
                for row, model in (("student", student), ("label_smoothing", label_smoothing))
            },
        }
    return [records[row] for row in ROWS], artifacts


class _SeedRunner:
    """Builds, trains and measures the models of one seed."""

    def __init__(self, dataset, config, seed, log, verbose):
        self.dataset = dataset
        self.config = config
        self.seed = seed
        self.log = log
        self.verbose = verbose

    def _build(self, build, name=None):
        # The same seed before every build: the same architecture starts from the
        # same weights (and sees the same batch order) in every row.
        keras.utils.set_random_seed(self.seed)
        kwargs = {"name": name} if name else {}
        return build(self.dataset.input_shape, self.dataset.num_classes, self.config, **kwargs)

    def _shift_pixels(self, build):
        # Augmentation follows the architecture: the CNN uses translations, the MLP
        # student cannot (it has no notion of neighbouring pixels).
        if build is _models.build_teacher:
            return self.config.teacher_shift_pixels
        return self.config.student_shift_pixels

    def _optimizer(self):
        # Cosine decay to 0 over the whole run: the last epochs at a small step size
        # make the final weights, hence the rows' comparison, much less noisy.
        config = self.config
        total_steps = math.ceil(len(self.dataset.y_train) * config.epochs / config.batch_size)
        schedule = keras.optimizers.schedules.CosineDecay(config.learning_rate, total_steps)
        return keras.optimizers.Adam(learning_rate=schedule)

    def _fit(self, model, shift_pixels, steps=None):
        """Trains for `config.epochs` epochs, or for `steps` batches only, on images
        randomly translated by up to `shift_pixels`."""
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
        model.fit(batches, epochs=1, shuffle=False, verbose=self.verbose)
        return time.perf_counter() - start

    def train(self, build, loss, steps=None):
        """A model of `build`'s architecture trained on `loss`; (model, seconds)."""
        model = self._build(build)
        model.compile(optimizer=self._optimizer(), loss=loss,
                      steps_per_execution=_STEPS_PER_EXECUTION)
        return model, self._fit(model, self._shift_pixels(build), steps)

    def distil(self, teacher, build, temperature, alpha, **distiller_kwargs):
        """A model of `build`'s architecture distilled from `teacher`; (model, seconds)."""
        student = self._build(build, name="distilled")
        distiller = keras_kd.Distiller(
            teacher=teacher, student=student, temperature=temperature, alpha=alpha,
            **distiller_kwargs,
        )
        distiller.compile(
            optimizer=self._optimizer(),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            steps_per_execution=_STEPS_PER_EXECUTION,
        )
        return student, self._fit(distiller, self._shift_pixels(build))

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

    def log_line(self, label, metrics, seconds=None):
        scaled, temperature = metrics["ece_temperature_scaled"], metrics["temperature"]
        line = (
            f"seed {self.seed} | {label:<16} acc {metrics['accuracy']:.4f}  "
            f"nll {metrics['nll']:.3f}  ece {metrics['ece']:.4f}  "
            f"ece(ts) {'n/a' if scaled is None else f'{scaled:.4f}'}  "
            f"T {'n/a' if temperature is None else f'{temperature:.2f}'}"
        )
        if seconds is not None:
            line += f"  {seconds:.1f} s"
        self.log(line)


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


def _calibrated_ece(logits, num_bins, seed, draws=100):
    """The mean ECE of a perfectly calibrated model with these confidences.

    Labels are drawn so that the top class is right with probability equal to its
    confidence, which is perfect calibration; the ECE of such draws is still > 0, as
    the binned estimator is biased upwards on a finite test set. An observed ECE near
    this floor leaves nothing measurable for a calibration method to remove.
    """
    probs = keras.ops.convert_to_numpy(keras.ops.softmax(logits, axis=-1))
    top_class = np.argmax(probs, axis=-1)
    confidence = np.max(probs, axis=-1)
    # Any other class serves as the wrong label: the top-label ECE never looks at it.
    wrong_class = (top_class + 1) % probs.shape[-1]
    rng = np.random.default_rng(seed)
    values = [
        calibration.expected_calibration_error(
            probs, np.where(rng.random(len(probs)) < confidence, top_class, wrong_class),
            num_bins=num_bins,
        )
        for _ in range(draws)
    ]
    return float(np.mean(values))


def _predict(model, x):
    return _models.predict_in_batches(model, x)
