"""Every hyperparameter of `keras-kd reproduce`, in one dataclass.

Command-line overrides go through `with_overrides`, which checks each value against
the field's type, so `--set kd_temperature=abc` fails with the key and the value.
No TensorFlow here: `keras-kd --help` imports this module.
"""

import dataclasses
import typing

DEFAULT_DATASET = "digits"


@dataclasses.dataclass(frozen=True)
class ReproduceConfig:
    """Hyperparameters of the reproduction; each field is a `--set key=value` key.

    Data:
        dataset: "digits" (default: scikit-learn's bundled 8x8 digits, 1,797 images,
            offline) or a tensorflow_datasets image-classification name ("mnist",
            "fashion_mnist", "cifar10", ...).
        data_dir: tensorflow_datasets data directory; None (default) uses its own.
        validation_fraction: share held out for temperature scaling, in (0, 1),
            default 0.15 (of all digits; of the training split for tfds).
        test_fraction: share of digits held out for testing, in (0, 1), default 0.25;
            tfds datasets use their own "test" split.
        max_train_examples: cap on training examples (a prefix of the shuffled
            training split), >= 10, or None (default) for all; keeps tfds runs short.
        split_seed: seed of the split, default 0, the same for every seed, so the
            seeds vary initialisation and batch order only.

    Schedule:
        seeds: number of seeds, >= 1, default 3; each repeats every row.
        first_seed: the first seed, default 0; seeds are first_seed, first_seed + 1, ...
        epochs: epochs of every fully trained model, >= 1, default 80.
        batch_size: minibatch size, default 64.
        learning_rate: Adam's initial learning rate, > 0, default 3e-3, decayed to 0
            by a cosine schedule over the run.
        teacher_shift_pixels: random translation, in pixels, of the training images
            of CNN-architecture models (`teacher`, `re_kd` and the helper teachers),
            default 1: Hinton et al.'s teacher was trained on jittered images.
        student_shift_pixels: the same for the MLP student, default 0 (an MLP has no
            notion of neighbouring pixels; translations only cost it accuracy).

    Models (the teacher is a small CNN, the student an MLP with one hidden layer;
    both name their last hidden layer "penultimate" and their output "logits"):
        teacher_filters: filters of the first of two 3x3 convolutions (the second
            has twice as many), default 32.
        teacher_units: units of the teacher's penultimate dense layer, default 128.
        teacher_dropout: dropout after it, in [0, 1), default 0.3.
        student_units: units of the student's hidden (penultimate) layer, default 256
            (19k parameters, an eighth of the teacher's 151k; without the
            convolutions' translation invariance it stays well below the teacher).

    Rows:
        kd_temperature, kd_alpha: Hinton's T (> 0, default 2.0) and the weight of the
            distillation term (in [0, 1], default 0.5) for `kd`, `ls_teacher_kd` and
            `fitnets`.
        smoothing: label-smoothing eps in [0, 1), default 0.1, for `label_smoothing`
            and the label-smoothed teacher of `ls_teacher_kd`.
        tfkd_correct_prob, tfkd_temperature, tfkd_alpha: `VirtualTeacherLoss`
            (Tf-KD_reg, paper mode) for `tfkd_reg`; defaults 0.9, 20.0, 0.5.
        teacher_free_temperature, teacher_free_alpha: T and alpha of the born-again,
            reversed and defective distillations (`tfkd_self`, `re_kd`, `de_kd`);
            defaults 20.0 and 0.9 (Yuan et al. show they help at high T).
        poor_teacher_steps: optimizer steps of the `de_kd` teacher, default 5: far
            below the student (its accuracy is recorded as `teacher_accuracy`).
        hint_weight: weight (>= 0, default 1.0) of the FitNets hint, the mean squared
            error between the teacher's penultimate layer and a learned linear
            projection of the student's, in `fitnets`.

    Report:
        num_bins: equal-width bins of the ECE and the reliability diagrams, default 15
            (Guo et al. 2017).
        projection_classes: the three classes of the Müller et al. projection
            picture, default (0, 1, 2).
    """

    dataset: str = DEFAULT_DATASET
    data_dir: typing.Optional[str] = None
    validation_fraction: float = 0.15
    test_fraction: float = 0.25
    max_train_examples: typing.Optional[int] = None
    split_seed: int = 0

    seeds: int = 3
    first_seed: int = 0
    epochs: int = 80
    batch_size: int = 64
    learning_rate: float = 3e-3
    teacher_shift_pixels: int = 1
    student_shift_pixels: int = 0

    teacher_filters: int = 32
    teacher_units: int = 128
    teacher_dropout: float = 0.3
    student_units: int = 256

    kd_temperature: float = 2.0
    kd_alpha: float = 0.5
    smoothing: float = 0.1
    tfkd_correct_prob: float = 0.9
    tfkd_temperature: float = 20.0
    tfkd_alpha: float = 0.5
    teacher_free_temperature: float = 20.0
    teacher_free_alpha: float = 0.9
    poor_teacher_steps: int = 5
    hint_weight: float = 1.0

    num_bins: int = 15
    projection_classes: typing.Tuple[int, int, int] = (0, 1, 2)

    def __post_init__(self):
        _check(self.seeds >= 1, "seeds", self.seeds, "an integer >= 1")
        for name in ("epochs", "batch_size", "teacher_filters", "teacher_units",
                     "student_units", "poor_teacher_steps", "num_bins"):
            _check(getattr(self, name) >= 1, name, getattr(self, name), "an integer >= 1")
        for name in ("validation_fraction", "test_fraction"):
            value = getattr(self, name)
            _check(0.0 < value < 1.0, name, value, "a number in (0, 1)")
        _check(
            self.validation_fraction + self.test_fraction < 1.0,
            "validation_fraction + test_fraction",
            self.validation_fraction + self.test_fraction,
            "below 1",
        )
        for name in ("kd_alpha", "tfkd_alpha", "teacher_free_alpha"):
            value = getattr(self, name)
            _check(0.0 <= value <= 1.0, name, value, "a number in [0, 1]")
        _check(0.0 <= self.teacher_dropout < 1.0, "teacher_dropout", self.teacher_dropout,
               "a number in [0, 1)")
        _check(0.0 <= self.smoothing < 1.0, "smoothing", self.smoothing, "a number in [0, 1)")
        for name in ("learning_rate", "kd_temperature", "tfkd_temperature",
                     "teacher_free_temperature"):
            _check(getattr(self, name) > 0, name, getattr(self, name), "a number > 0")
        _check(self.hint_weight >= 0, "hint_weight", self.hint_weight, "a number >= 0")
        for name in ("teacher_shift_pixels", "student_shift_pixels", "first_seed", "split_seed"):
            _check(getattr(self, name) >= 0, name, getattr(self, name), "an integer >= 0")
        _check(
            self.max_train_examples is None or self.max_train_examples >= 10,
            "max_train_examples", self.max_train_examples, "None or an integer >= 10",
        )
        _check(
            len(self.projection_classes) == 3 and len(set(self.projection_classes)) == 3,
            "projection_classes", self.projection_classes, "three distinct class indices",
        )

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


# `--quick`: one seed and few epochs, for CI and a first look (under 2 minutes on
# 2 CPU cores with the default data). Explicit flags given with --quick still win.
QUICK_OVERRIDES = {"seeds": 1, "epochs": 12}


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
