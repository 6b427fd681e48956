"""Every hyperparameter of `keras-kd reproduce`, in one dataclass.

Command-line overrides go through `with_overrides`, which checks each value against
the field's type, so `--set kd_temperature=abc` fails with the key and the value.
No TensorFlow here: `keras-kd --help` imports this module.
"""

import dataclasses
import math
import typing

DEFAULT_DATASET = "mnist1d"
# The paper's own split of MNIST-1D (Greydanus 2020): 4,000 train / 1,000 test.
CANONICAL_MNIST1D = "mnist1d_canonical"
DIGITS = "digits"
OFFLINE_DATASETS = (DEFAULT_DATASET, CANONICAL_MNIST1D, DIGITS)
# The three offline datasets all have ten classes.
OFFLINE_NUM_CLASSES = 10


@dataclasses.dataclass(frozen=True)
class ReproduceConfig:
    """Hyperparameters of the reproduction; each field is a `--set key=value` key.

    Data:
        dataset: "mnist1d" (default: MNIST-1D generated offline by the `mnist1d`
            package, split `mnist1d_train_examples` / `mnist1d_validation_examples` /
            `mnist1d_test_examples`), "mnist1d_canonical" (the paper's 4,000 / 1,000
            split, validation carved from its training part by `validation_fraction`),
            "digits" (scikit-learn's bundled 8x8 digits) or a tensorflow_datasets
            image-classification name ("mnist", "fashion_mnist", "cifar10", ...).
        data_dir: tensorflow_datasets data directory; None (default) uses its own.
        mnist1d_train_examples, mnist1d_validation_examples, mnist1d_test_examples:
            the default task's split, each >= 10, defaults 4,000 (as the paper's
            training split), 2,000 and 8,000 (a test split 8 times the paper's, so
            that one example is 0.0125 points and the ECE noise floor is small).
        mnist1d_seed: the generator's seed, default 42 (the package's own).
        validation_fraction: share held out for model selection and temperature
            scaling, in (0, 1), default 0.15 (of all digits; of the training split
            for mnist1d_canonical and tfds).
        test_fraction: share of digits held out for testing, in (0, 1), default 0.25;
            the other datasets have their own test split.
        max_train_examples: cap on training examples (a prefix of the shuffled
            training split), >= 10, or None (default) for all; keeps tfds runs short.
        split_seed: seed of the split, default 0, the same for every seed, so the
            seeds vary initialisation and batch order only.

    Schedule:
        seeds: number of seeds, >= 1, default 3; each repeats every row.
        first_seed: the first seed, default 0; seeds are first_seed, first_seed + 1, ...
        epochs: epochs of every fully trained model, >= 1, default 30.
        batch_size: minibatch size, default 64.
        learning_rate: Adam's initial learning rate, > 0, default 3e-3, decayed to 0
            by a cosine schedule over the run.
        teacher_shift_pixels: random translation, in pixels, of the training images
            of the convolutional models (image datasets only; MNIST-1D is already
            translated by its generator), default 1.
        student_shift_pixels: the same for the MLP student, default 0 (an MLP has no
            notion of neighbouring pixels; translations only cost it accuracy).

    Models (all output logits and name their last hidden layer "penultimate" and
    their output "logits"; 1-D convolutions on MNIST-1D, 2-D on images):
        teacher_filters: filters of each of the teacher's convolutions (three strided
            1-D ones, or two 3x3 2-D ones, the second twice as wide), default 32.
        teacher_units: units of the teacher's penultimate dense layer, default 128.
        teacher_dropout: dropout after it, in [0, 1), default 0.3.
        student_filters, student_units: the main student, a thinner network of the
            teacher's family (two convolutions of `student_filters`, a penultimate
            layer of `student_units`, no dropout); defaults 16 and 64.
        mlp_units: the capacity-gap student, an MLP with two ReLU hidden layers of
            `mlp_units` each, default 100 (MNIST-1D's baseline MLP).

    Rows (how each default was chosen is printed in the report):
        kd_temperature, kd_alpha: Hinton's T (> 0) and the weight of the distillation
            term (in [0, 1]) for the main student's `kd`, `ls_teacher_kd` and
            `fitnets`; defaults 2.0 and 0.5, chosen on the validation split (grid
            below, seed 0, 30 epochs; docs/guides/main-job.md).
        mlp_kd_temperature, mlp_kd_alpha: the same for the MLP student's rows;
            defaults 1.0 and 0.5, chosen on the validation split likewise.
        smoothing: label-smoothing eps in [0, 1) for `label_smoothing` rows and the
            label-smoothed teacher of `ls_teacher_kd` rows; default 0.2, chosen on the
            validation split likewise (validation accuracy 0.894 against 0.879 for 0.1).
        tune: with True (default; `--quick` sets False), the first seed chooses
            kd_temperature x kd_alpha, mlp_kd_temperature x mlp_kd_alpha (grids
            `kd_temperature_grid` x `kd_alpha_grid`) and smoothing (`smoothing_grid`)
            by validation accuracy before the rows are trained; a key given with
            --set is never tuned.
        kd_temperature_grid, kd_alpha_grid, smoothing_grid: the grids, defaults
            (1, 2, 4), (0.5, 0.9) and (0.05, 0.1, 0.2).
        tfkd_correct_prob, tfkd_temperature, tfkd_alpha: `VirtualTeacherLoss`
            (Tf-KD_reg, paper mode) for `tfkd_reg`; defaults 0.9, 20.0, 0.5 (the
            paper's, not tuned).
        teacher_free_temperature, teacher_free_alpha: T and alpha of the born-again,
            reversed and defective distillations (`tfkd_self`, `re_kd`, `de_kd`);
            defaults 20.0 and 0.9 (the paper's, not tuned).
        poor_teacher_steps: optimizer steps of the `de_kd` teacher, default 5: far
            below the student (its accuracy is recorded as `teacher_accuracy`).
        hint_weight: weight (>= 0, default 1.0, not tuned) of the FitNets hint, the
            mean squared error between the teacher's penultimate layer and a learned
            linear projection of the student's, in `fitnets`.

    Modern logit-distillation rows (the authors' CIFAR-100 defaults, not tuned; their
    losses `CE weight * CE + KD weight * L` become the Distiller's
    `(1 - alpha) * CE + alpha * L` with `alpha = KD weight / (CE weight + KD weight)`,
    the same objective up to a constant factor, which Adam's step ignores):
        dkd_temperature, dkd_tckd_weight, dkd_nckd_weight: DKD's T, alpha and beta
            (`DecoupledDistillationLoss`) for `dkd` rows; defaults 4.0, 1.0 and 8.0
            (Zhao et al. 2022, mdistiller's CIFAR-100 config).
        dkd_alpha: the Distiller's alpha of `dkd` rows, in [0, 1], default 0.5 (the
            authors' CE weight 1 and DKD weight 1).
        dkd_warmup_fraction: the share of training over which DKD's weight rises
            linearly from 0 to 1, in [0, 1), default 20 / 240 (the authors' 20 of 240
            epochs); applied every `steps_per_execution` steps.
        dist_temperature, dist_beta, dist_gamma: DIST's tau and its inter- and
            intra-class weights (`DISTLoss`) for `dist` rows; defaults 4.0, 1.0, 1.0
            (Huang et al. 2022, CIFAR-100).
        dist_alpha: the Distiller's alpha of `dist` rows, default 2 / 3 (the authors'
            `CE + 2 L`).
        standardized_temperature: the base T of `kd_standardized` rows (Hinton KD on
            standardized logits, `DistillationLoss(standardize=True)`), default 2.0
            (Sun et al. 2024).
        standardized_alpha: their Distiller alpha, default 9 / 9.1 (the authors' CE
            weight 0.1 and KD weight 9).

    Report:
        num_bins: equal-width bins of the ECE and the reliability diagrams, default 15
            (Guo et al. 2017).
        bootstrap_samples: resamples of the test split for the intervals, >= 10,
            default 200.
        projection_classes: the three classes of the Müller et al. projection
            picture, default (0, 1, 2).
    """

    dataset: str = DEFAULT_DATASET
    data_dir: typing.Optional[str] = None
    mnist1d_train_examples: int = 4000
    mnist1d_validation_examples: int = 2000
    mnist1d_test_examples: int = 8000
    mnist1d_seed: int = 42
    validation_fraction: float = 0.15
    test_fraction: float = 0.25
    max_train_examples: typing.Optional[int] = None
    split_seed: int = 0

    seeds: int = 3
    first_seed: int = 0
    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 3e-3
    teacher_shift_pixels: int = 1
    student_shift_pixels: int = 0

    teacher_filters: int = 32
    teacher_units: int = 128
    teacher_dropout: float = 0.3
    student_filters: int = 16
    student_units: int = 64
    mlp_units: int = 100

    kd_temperature: float = 2.0
    kd_alpha: float = 0.5
    mlp_kd_temperature: float = 1.0
    mlp_kd_alpha: float = 0.5
    smoothing: float = 0.2
    tune: bool = True
    kd_temperature_grid: typing.Tuple[float, ...] = (1.0, 2.0, 4.0)
    kd_alpha_grid: typing.Tuple[float, ...] = (0.5, 0.9)
    smoothing_grid: typing.Tuple[float, ...] = (0.05, 0.1, 0.2)
    tfkd_correct_prob: float = 0.9
    tfkd_temperature: float = 20.0
    tfkd_alpha: float = 0.5
    teacher_free_temperature: float = 20.0
    teacher_free_alpha: float = 0.9
    poor_teacher_steps: int = 5
    hint_weight: float = 1.0
    dkd_temperature: float = 4.0
    dkd_tckd_weight: float = 1.0
    dkd_nckd_weight: float = 8.0
    dkd_alpha: float = 0.5
    dkd_warmup_fraction: float = 20 / 240
    dist_temperature: float = 4.0
    dist_beta: float = 1.0
    dist_gamma: float = 1.0
    dist_alpha: float = 2 / 3
    standardized_temperature: float = 2.0
    standardized_alpha: float = 9 / 9.1

    num_bins: int = 15
    bootstrap_samples: int = 200
    projection_classes: typing.Tuple[int, int, int] = (0, 1, 2)

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            values = value if isinstance(value, tuple) else (value,)
            for item in values:
                # NaN fails every comparison below, but inf passes `> 0`: refuse both.
                if isinstance(item, float) and not math.isfinite(item):
                    raise ValueError(
                        f"Config `{field.name}` must be finite, got {value!r}."
                    )
        _check(isinstance(self.dataset, str) and self.dataset.strip() != "", "dataset",
               self.dataset, "a dataset name")
        _check(self.seeds >= 1, "seeds", self.seeds, "an integer >= 1")
        for name in ("epochs", "batch_size", "teacher_filters", "teacher_units",
                     "student_filters", "student_units", "mlp_units",
                     "poor_teacher_steps", "num_bins"):
            _check(getattr(self, name) >= 1, name, getattr(self, name), "an integer >= 1")
        for name in ("mnist1d_train_examples", "mnist1d_validation_examples",
                     "mnist1d_test_examples", "bootstrap_samples"):
            _check(getattr(self, name) >= 10, name, getattr(self, name), "an integer >= 10")
        for name in ("validation_fraction", "test_fraction"):
            value = getattr(self, name)
            _check(0.0 < value < 1.0, name, value, "a number in (0, 1)")
        _check(
            self.validation_fraction + self.test_fraction < 1.0,
            "validation_fraction + test_fraction",
            self.validation_fraction + self.test_fraction,
            "below 1",
        )
        for name in ("kd_alpha", "mlp_kd_alpha", "tfkd_alpha", "teacher_free_alpha",
                     "dkd_alpha", "dist_alpha", "standardized_alpha"):
            value = getattr(self, name)
            _check(0.0 <= value <= 1.0, name, value, "a number in [0, 1]")
        _check(0.0 < self.tfkd_correct_prob < 1.0, "tfkd_correct_prob",
               self.tfkd_correct_prob, "a number in (0, 1)")
        _check(0.0 <= self.teacher_dropout < 1.0, "teacher_dropout", self.teacher_dropout,
               "a number in [0, 1)")
        _check(0.0 <= self.smoothing < 1.0, "smoothing", self.smoothing, "a number in [0, 1)")
        for name in ("learning_rate", "kd_temperature", "mlp_kd_temperature",
                     "tfkd_temperature", "teacher_free_temperature", "dkd_temperature",
                     "dist_temperature", "standardized_temperature"):
            _check(getattr(self, name) > 0, name, getattr(self, name), "a number > 0")
        for name in ("hint_weight", "dkd_tckd_weight", "dkd_nckd_weight", "dist_beta",
                     "dist_gamma"):
            _check(getattr(self, name) >= 0, name, getattr(self, name), "a number >= 0")
        _check(0.0 <= self.dkd_warmup_fraction < 1.0, "dkd_warmup_fraction",
               self.dkd_warmup_fraction, "a number in [0, 1)")
        for name, valid, expected in (
            ("kd_temperature_grid", lambda value: value > 0, "numbers > 0"),
            ("kd_alpha_grid", lambda value: 0.0 <= value <= 1.0, "numbers in [0, 1]"),
            ("smoothing_grid", lambda value: 0.0 <= value < 1.0, "numbers in [0, 1)"),
        ):
            grid = getattr(self, name)
            _check(len(grid) >= 1 and all(valid(value) for value in grid), name, grid,
                   f"one or more {expected}")
        for name in ("teacher_shift_pixels", "student_shift_pixels", "first_seed", "split_seed",
                     "mnist1d_seed"):
            _check(getattr(self, name) >= 0, name, getattr(self, name), "an integer >= 0")
        _check(
            self.max_train_examples is None or self.max_train_examples >= 10,
            "max_train_examples", self.max_train_examples, "None or an integer >= 10",
        )
        _check(
            len(self.projection_classes) == 3 and len(set(self.projection_classes)) == 3
            and min(self.projection_classes) >= 0,
            "projection_classes", self.projection_classes, "three distinct class indices >= 0",
        )
        if self.dataset in OFFLINE_DATASETS:
            self.check_classes(OFFLINE_NUM_CLASSES)

    def check_classes(self, num_classes):
        """Raises if `projection_classes` names a class the dataset does not have."""
        missing = [label for label in self.projection_classes if label >= num_classes]
        _check(not missing, "projection_classes", self.projection_classes,
               f"class indices below {num_classes} (dataset {self.dataset!r} has "
               f"{num_classes} classes)")

    @property
    def seed_list(self):
        return list(range(self.first_seed, self.first_seed + self.seeds))

    def with_overrides(self, overrides):
        """A copy with `overrides` ({field: value or string}) applied and checked."""
        fields = {field.name: field for field in dataclasses.fields(self)}
        changes = {}
        for key, value in overrides.items():
            if key not in fields:
                raise ValueError(
                    f"Unknown config key {key!r}; known keys: {', '.join(sorted(fields))}."
                )
            changes[key] = _parse(value, fields[key].type, key) if isinstance(value, str) else value
        return dataclasses.replace(self, **changes)

    def to_dict(self):
        return dataclasses.asdict(self)


# `--quick`: one seed, few epochs, no tuning (the defaults' values), for CI and a first
# look (about 2 min on 2 CPU cores with the default data). Explicit flags and --set
# given with --quick always win.
QUICK_OVERRIDES = {"seeds": 1, "epochs": 8, "tune": False, "bootstrap_samples": 50}


def parse_assignment(text):
    """`"key=value"` -> `("key", "value")`, for `--set`."""
    key, separator, value = text.partition("=")
    if not separator or not key.strip():
        raise ValueError(f"--set expects key=value, got {text!r}.")
    return key.strip(), value.strip()


def field_help():
    """One line per config field, `name = default`, for `--help`."""
    return "\n".join(
        f"  {field.name} = {field.default!r}" for field in dataclasses.fields(ReproduceConfig)
    )


def _parse(text, annotation, key):
    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if origin is typing.Union and type(None) in arguments:
        if text.lower() in ("none", "null", ""):
            return None
        (annotation,) = [argument for argument in arguments if argument is not type(None)]
        origin = typing.get_origin(annotation)
        arguments = typing.get_args(annotation)
    try:
        if origin is tuple:
            return tuple(arguments[0](part) for part in text.split(",") if part.strip())
        if annotation is bool:
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError(text)
            return text.lower() in ("true", "1")
        return annotation(text)
    except ValueError:
        name = getattr(annotation, "__name__", str(annotation))
        raise ValueError(f"Config key {key!r} expects {name}, got {text!r}.") from None


def _check(condition, name, value, expected):
    if not condition:
        raise ValueError(f"Config `{name}` must be {expected}, got {value!r}.")
