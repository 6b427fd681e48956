"""Feature distillation: hints from a teacher's intermediate layers (FitNets, attention transfer).

`FeaturePair` names a teacher layer, a student layer, a loss and a weight; the
`Distiller` adds `weight * loss(teacher feature, student feature)` to its objective for
each pair. The losses are pure functions on `keras.ops` (per example, float32) so they
can be tested and reused alone:

- `feature_mse`: `mean_j (r(s)_j - t_j)^2`, the FitNets hint loss (Romero et al. 2015),
- `feature_cosine_distance`: `1 - <r(s), t> / (||r(s)|| ||t||)` over flattened features,
- `attention_transfer_loss`: `|| a_s / ||a_s|| - a_t / ||a_t|| ||_2^2` with
  `a = mean_c |F_c|^2` (Zagoruyko & Komodakis 2017),

where `r` is a learnable linear regressor (Dense, or a 1x1 convolution) that maps the
student feature to the teacher's shape when the two differ, as in FitNets.

Features are channels-last, `(batch, C)` or `(batch, *spatial, C)`; with
`keras.config.image_data_format() == "channels_first"`, spatial features are read as
`(batch, C, *spatial)`.

References:
    Romero, Ballas, Kahou, Chassang, Gatta, Bengio. FitNets: Hints for Thin Deep Nets.
    ICLR 2015.
    Zagoruyko, Komodakis. Paying More Attention to Attention: Improving the Performance
    of Convolutional Neural Networks via Attention Transfer. ICLR 2017.
"""

from __future__ import annotations

import math
from typing import Any
from typing import Iterator
from typing import Optional
from typing import Sequence

import keras
from keras import ops

from keras_kd import _keras_compat
from keras_kd import _teacher
from keras_kd import _validation
from keras_kd._types import TensorLike

_PACKAGE = "keras_kd"

# Guards the normalisations against all-zero features (e.g. a dead ReLU layer), where
# the direction is undefined; the same floor as PyTorch's `F.normalize`, used by the
# attention-transfer reference code. It changes no norm above 1e-12.
_NORM_FLOOR = 1e-12


# ---------------------------------------------------------------------------
# Functional forms: one function per formula.
# ---------------------------------------------------------------------------


def feature_mse(teacher_features: TensorLike, student_features: TensorLike) -> TensorLike:
    """Mean squared error between teacher and (projected) student features, per example.

    `L = (1 / D) * sum_j (s_j - t_j)^2` over the D non-batch entries: the FitNets hint
    loss `1/2 ||u_h - r(v_g)||^2` (Romero et al. 2015, eq. 3) up to the constant
    factor `2 / D`, which keeps the loss's scale independent of the feature size.

    Args:
        teacher_features: tensor of shape (batch, ...).
        student_features: tensor of the same shape (project it first if needed).

    Returns:
        float32 per-example loss, shape (batch,).

    Example:
        >>> feature_mse(np.ones((2, 3)), np.zeros((2, 3)))  # [1., 1.]

    References:
        Romero et al. FitNets: Hints for Thin Deep Nets. ICLR 2015.
    """
    teacher, student = _flat_pair(teacher_features, student_features)
    return ops.mean(ops.square(student - teacher), axis=-1)


def feature_cosine_distance(
    teacher_features: TensorLike,
    student_features: TensorLike,
) -> TensorLike:
    """Cosine distance between flattened teacher and student features, per example.

    `L = 1 - <s, t> / (||s||_2 ||t||_2)`, in [0, 2]; 0 when the features point the same
    way, whatever their scale. An all-zero feature (norm below 1e-12) counts as having
    norm 1e-12, so the loss is then 1 rather than NaN.

    Args:
        teacher_features: tensor of shape (batch, ...).
        student_features: tensor of the same shape.

    Returns:
        float32 per-example loss, shape (batch,).

    Example:
        >>> feature_cosine_distance(np.array([[1.0, 0.0]]), np.array([[0.0, 2.0]]))  # [1.]
    """
    teacher, student = _flat_pair(teacher_features, student_features)
    return 1.0 - ops.sum(_unit(student) * _unit(teacher), axis=-1)


def attention_map(features: TensorLike, p: float = 2.0) -> TensorLike:
    """Spatial attention map `a = mean_c |F_c|^p`, flattened, float32.

    The activation-based attention of Zagoruyko & Komodakis (2017, section 3.1, the
    `F^p_mean` mapping) with their default p = 2. Averaging over channels makes maps of
    layers with different widths comparable.

    Args:
        features: tensor of shape (batch, *spatial, C) (channels-last) with at least
            one spatial axis.
        p: the exponent, a finite float > 0, default 2.0.

    Returns:
        float32 tensor of shape (batch, prod(spatial)).

    References:
        Zagoruyko, Komodakis. Paying More Attention to Attention. ICLR 2017.
    """
    p = _validation.check_temperature(p, name="p")
    if len(features.shape) < 3:
        raise ValueError(
            "attention_map needs spatial features of shape (batch, *spatial, C), got "
            f"shape {tuple(features.shape)}."
        )
    features = ops.cast(features, "float32")
    powered = ops.square(features) if p == 2.0 else ops.power(ops.abs(features), p)
    attention = ops.mean(powered, axis=_channel_axis(len(features.shape)))
    return ops.reshape(attention, (ops.shape(attention)[0], -1))


def attention_transfer_loss(
    teacher_features: TensorLike,
    student_features: TensorLike,
    p: float = 2.0,
) -> TensorLike:
    """Attention transfer: squared distance between L2-normalised attention maps.

    `L = || a_s / ||a_s||_2 - a_t / ||a_t||_2 ||_2^2` per example, with
    `a = attention_map(F, p)`; in [0, 2] since the maps are non-negative. Only the
    spatial sizes must match: the channel counts may differ, so no projection is needed.

    The paper's eq. 2 uses the unsquared norm `beta / 2 * || . ||_2`; the authors' code
    (`at_loss`: `(at(x) - at(y)).pow(2).mean()`) squares it and also averages over the
    positions. The squared norm is used here because it is smooth at 0 (the unsquared
    norm's gradient is undefined when the maps agree); it equals the reference code's
    value times the number of positions, so the paper's `beta = 1000` corresponds here
    to a weight of about `1000 / (H * W)`.

    Args:
        teacher_features: tensor of shape (batch, *spatial, C_t).
        student_features: tensor of shape (batch, *spatial, C_s).
        p: the exponent of `attention_map`, default 2.0.

    Returns:
        float32 per-example loss, shape (batch,).

    Example:
        >>> attention_transfer_loss(np.ones((1, 2, 2, 8)), np.ones((1, 2, 2, 3)))  # [0.]

    References:
        Zagoruyko, Komodakis. Paying More Attention to Attention: Improving the
        Performance of Convolutional Neural Networks via Attention Transfer. ICLR 2017.
        https://github.com/szagoruyko/attention-transfer (utils.py, `at_loss`).
    """
    teacher_attention = attention_map(teacher_features, p)
    student_attention = attention_map(student_features, p)
    _check_same_shape(teacher_attention, student_attention, "attention maps")
    return ops.sum(ops.square(_unit(student_attention) - _unit(teacher_attention)), axis=-1)


FEATURE_LOSSES = {
    "mse": feature_mse,
    "cosine": feature_cosine_distance,
    "attention": attention_transfer_loss,
}


def _flat_pair(teacher_features, student_features):
    _check_same_shape(teacher_features, student_features, "features")
    teacher = ops.cast(teacher_features, "float32")
    student = ops.cast(student_features, "float32")
    batch_size = ops.shape(teacher)[0]
    return ops.reshape(teacher, (batch_size, -1)), ops.reshape(student, (batch_size, -1))


def _unit(vectors):
    # sqrt(max(., floor^2)) rather than max(norm, floor): sqrt's gradient at 0 is inf.
    squared_norm = ops.sum(ops.square(vectors), axis=-1, keepdims=True)
    return vectors / ops.sqrt(ops.maximum(squared_norm, _NORM_FLOOR**2))


def _check_same_shape(teacher, student, what):
    shape_t, shape_s = tuple(teacher.shape), tuple(student.shape)
    if not _same_dims(shape_t, shape_s):
        raise ValueError(
            f"Teacher and student {what} must have the same shape, got {shape_t} "
            f"(teacher) and {shape_s} (student)."
        )


def _channel_axis(rank):
    if rank > 2 and keras.config.image_data_format() == "channels_first":
        return 1
    return -1


def _split_channels(shape):
    """(spatial dims, channels) of a feature shape without its batch axis."""
    shape = tuple(shape)
    if len(shape) > 1 and keras.config.image_data_format() == "channels_first":
        return shape[1:], shape[0]
    return shape[:-1], shape[-1]


# ---------------------------------------------------------------------------
# The public configuration object.
# ---------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package=_PACKAGE)
class FeaturePair:
    """A hint: match a student layer's output to a teacher layer's output.

    The `Distiller` adds `weight * loss(t, r(s))` to its objective, where `t` is the
    teacher layer's output (no gradient), `s` the student layer's output and `r` a
    learnable linear projection, created when the shapes differ (FitNets' regressor):
    a `Dense` layer for (batch, C) features, a 1x1 convolution for (batch, *spatial, C)
    features with equal spatial sizes. `r` trains with the student, is saved with the
    Distiller, and is not part of `distiller.student`.

    Losses (see the functions of the same module for the formulas):
    `"mse"` (`feature_mse`, FitNets), `"cosine"` (`feature_cosine_distance`) and
    `"attention"` (`attention_transfer_loss`, Zagoruyko & Komodakis 2017; needs equal
    spatial sizes, channel counts may differ, never projected).

    Args:
        teacher_layer: name of a layer of the (single, Functional or Sequential) teacher.
        student_layer: name of a layer of the (Functional or Sequential) student.
        loss: `"mse"` (default), `"cosine"` or `"attention"`.
        weight: weight of the term in the objective, a finite float >= 0, default 1.0.
        name: the pair's name, used in the log key `feature_loss_<name>` and in the
            projection's name; default `teacher_layer`, or
            `"<teacher_layer>_<student_layer>"` when the two names differ.

    Example:
        >>> pair = keras_kd.FeaturePair("teacher_hidden", "student_hidden", loss="mse")
        >>> distiller = keras_kd.Distiller(teacher, student, feature_pairs=[pair])
        >>> distiller.compile(
        ...     "adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        >>> distiller.fit(x, y)  # logs feature_loss_teacher_hidden_student_hidden

    References:
        Romero et al. FitNets: Hints for Thin Deep Nets. ICLR 2015.
        Zagoruyko, Komodakis. Paying More Attention to Attention. ICLR 2017.
    """

    def __init__(
        self,
        teacher_layer: str,
        student_layer: str,
        loss: str = "mse",
        weight: float = 1.0,
        name: Optional[str] = None,
    ) -> None:
        self.teacher_layer = _check_name(teacher_layer, "teacher_layer")
        self.student_layer = _check_name(student_layer, "student_layer")
        self.loss = _validation.check_choice(loss, "loss", FEATURE_LOSSES)
        self.weight = _validation.check_in_range(
            weight, "weight", 0.0, math.inf, high_inclusive=False
        )
        if name is None:
            same = self.teacher_layer == self.student_layer
            name = self.teacher_layer if same else f"{self.teacher_layer}_{self.student_layer}"
        self.name = _check_name(name, "name")

    def get_config(self) -> dict[str, Any]:
        return {
            "teacher_layer": self.teacher_layer,
            "student_layer": self.student_layer,
            "loss": self.loss,
            "weight": self.weight,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> FeaturePair:
        return cls(**config)

    def __repr__(self):
        return (
            f"FeaturePair(teacher_layer={self.teacher_layer!r}, "
            f"student_layer={self.student_layer!r}, loss={self.loss!r}, "
            f"weight={self.weight!r}, name={self.name!r})"
        )

    def __eq__(self, other):
        return isinstance(other, FeaturePair) and self.get_config() == other.get_config()

    __hash__ = None


def _check_name(value, argument):
    if not isinstance(value, str) or not value:
        raise ValueError(f"`{argument}` must be a non-empty string, got {value!r}.")
    return value


def check_feature_pairs(feature_pairs: Sequence[FeaturePair]) -> list[FeaturePair]:
    """Returns `feature_pairs` as a list of `FeaturePair` with distinct names."""
    if feature_pairs is None:
        return []
    if not isinstance(feature_pairs, (list, tuple)):
        raise ValueError(
            "`feature_pairs` must be a list of keras_kd.FeaturePair, got "
            f"{feature_pairs!r} of type {type(feature_pairs).__name__}."
        )
    for index, pair in enumerate(feature_pairs):
        if not isinstance(pair, FeaturePair):
            raise ValueError(
                f"`feature_pairs[{index}]` must be a keras_kd.FeaturePair, got {pair!r}."
            )
    names = [pair.name for pair in feature_pairs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(
            f"`feature_pairs` names must be distinct (they name the logs "
            f"feature_loss_<name>), got {duplicates} more than once; pass `name=`."
        )
    return list(feature_pairs)


# ---------------------------------------------------------------------------
# What the Distiller owns: extractors, projections, per-pair losses and trackers.
# ---------------------------------------------------------------------------


class _Graph:
    """Plain holder for what must stay invisible to Keras' tracking and saving.

    The extractor models share the teacher's and student's layers; tracked, they
    would list those weights again and save them a second time.
    """

    def __init__(self, teacher, teacher_extractor, student_extractor):
        self.teacher = teacher
        self.teacher_extractor = teacher_extractor
        self.student_extractor = student_extractor
        # The student's features from the latest training forward, until the
        # objective consumes them: Keras' JAX and PyTorch trainers pass `compute_loss`
        # only the logits of `call`, and a second student forward would double the cost.
        self.student_features = None


class FeatureHints(keras.layers.Layer):
    """The feature terms of a `Distiller` (private to keras_kd: the Distiller makes it).

    Built once at construction: one extractor model per network returning every
    requested layer plus the final output, so each training step runs one teacher and
    one student forward; one projection per pair whose shapes differ; one
    `keras.losses.Loss` per pair, so `sample_weight` is applied with Keras' own
    reduction, exactly as for the distillation term; one `Mean` tracker per pair,
    logged as `feature_loss_<name>`.
    """

    def __init__(
        self,
        feature_pairs: Sequence[FeaturePair],
        teacher: keras.Model,
        student: keras.Model,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.feature_pairs = list(feature_pairs)
        teacher_inputs = _graph_inputs(teacher, "teacher")
        student_inputs = _graph_inputs(student, "student")
        teacher_outputs = [
            _layer_output(teacher, pair.teacher_layer, "teacher") for pair in self.feature_pairs
        ]
        student_outputs = [
            _layer_output(student, pair.student_layer, "student") for pair in self.feature_pairs
        ]
        projections = {
            pair.name: _make_projection(pair, teacher_output.shape, student_output.shape)
            for pair, teacher_output, student_output in zip(
                self.feature_pairs, teacher_outputs, student_outputs
            )
        }
        self.projections = {name: layer for name, layer in projections.items() if layer}
        self.pair_losses = [
            _PairLoss(FEATURE_LOSSES[pair.loss], name=pair.name) for pair in self.feature_pairs
        ]
        self.trackers = [
            keras.metrics.Mean(name=f"feature_loss_{pair.name}") for pair in self.feature_pairs
        ]
        self._graph = _Graph(
            teacher=teacher,
            teacher_extractor=_extractor(teacher, teacher_inputs, teacher_outputs),
            student_extractor=_extractor(student, student_inputs, student_outputs),
        )
        self.built = True

    def student_forward(self, inputs: TensorLike, training: bool) -> Any:
        """The student's logits; its features are kept for `hint_losses`."""
        *features, logits = self._graph.student_extractor(inputs, training=training)
        self._graph.student_features = features
        return logits

    def teacher_forward(self, inputs: TensorLike) -> tuple[Any, Any]:
        """(teacher logits, teacher features) from one forward, without gradient."""
        return _teacher.teacher_logits_and_features(
            self._graph.teacher, self._graph.teacher_extractor, inputs
        )

    def hint_losses(
        self,
        teacher_features: TensorLike,
        sample_weight: Optional[TensorLike] = None,
    ) -> Iterator[tuple[FeaturePair, keras.metrics.Metric, TensorLike]]:
        """Yields (pair, tracker, loss) per pair, `loss` reduced over the batch, unweighted."""
        student_features = self._graph.student_features
        if student_features is None:
            raise ValueError(
                "The Distiller's feature terms need the student's features from a "
                "training forward: call the Distiller with training=True before "
                "computing its training loss."
            )
        self._graph.student_features = None
        for pair, pair_loss, tracker, teacher_feature, student_feature in zip(
            self.feature_pairs, self.pair_losses, self.trackers, teacher_features, student_features
        ):
            projection = self.projections.get(pair.name)
            if projection is not None:
                student_feature = projection(student_feature)
            yield pair, tracker, pair_loss(teacher_feature, student_feature, sample_weight)


class _PairLoss(keras.losses.Loss):
    """A feature loss with Keras' reduction: `sum_b w_b * loss_b / batch_size`.

    Keras' own reduction scales for `tf.distribute` replicas like the Distiller's
    other terms. Built from the pair's config, never serialized itself.
    """

    def __init__(self, fn, name):
        super().__init__(name=name, reduction="sum_over_batch_size")
        self.fn = fn

    def call(self, y_true, y_pred):
        return self.fn(y_true, y_pred)


# One definition, shared with the teacher's static output inspection.
_overrides_call = _teacher.overrides_call


def _graph_inputs(model, role):
    """The symbolic inputs of a Functional/Sequential `model`, or a ValueError."""
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if isinstance(model, keras.Sequential) and not inputs:
        raise ValueError(
            f"The {role} {model.name!r} is a Sequential model with no input shape yet; "
            "feature_pairs read its layers' symbolic outputs. Start it with "
            "keras.Input(shape) or call its build(input_shape) first."
        )
    if not inputs or _overrides_call(model):
        raise ValueError(
            f"feature_pairs need a Functional or Sequential {role}, whose layers' outputs "
            f"can be extracted; {model.name!r} is a subclassed model "
            f"({type(model).__name__}). Wrap it into a Functional model that exposes "
            "the layer, e.g. `inputs = keras.Input(shape); hidden = body(inputs); "
            "outputs = head(hidden); keras.Model(inputs, outputs)` with `body` and "
            "`head` as layers, and name the layer producing the feature."
        )
    # A single input is passed as a tensor, not a list of one (Keras warns otherwise).
    return inputs[0] if len(inputs) == 1 else model.input


def _extractor(model, inputs, feature_outputs):
    # Rebuilt from the model's own graph: the same layers and weights, so training it
    # trains the model (BatchNorm statistics included).
    return keras.Model(inputs, [*feature_outputs, model.outputs[0]], name=f"{model.name}_hints")


def _layer_output(model, layer_name, role):
    names = [layer.name for layer in model.layers]
    if layer_name not in names:
        raise ValueError(
            f"`{role}_layer`={layer_name!r} is not a layer of the {role} {model.name!r}; "
            f"its layers are {names}."
        )
    layer = model.get_layer(layer_name)
    calls = _keras_compat.layer_call_count(layer)
    if calls > 1:
        # `layer.output` would silently be the first call's output only.
        raise ValueError(
            f"`{role}_layer`={layer_name!r} is called {calls} times in the {role} "
            f"{model.name!r} (a shared or reused layer), so its output is ambiguous. Pair "
            "a layer that is called once: e.g. add a keras.layers.Identity(name=...) after "
            "the call whose output you want to distil."
        )
    return layer.output


def _make_projection(pair, teacher_shape, student_shape):
    """FitNets' regressor from the student's feature shape to the teacher's, or None."""
    teacher_shape, student_shape = tuple(teacher_shape)[1:], tuple(student_shape)[1:]
    described = (
        f"FeaturePair {pair.name!r}: teacher layer {pair.teacher_layer!r} outputs "
        f"(batch, *{teacher_shape}) and student layer {pair.student_layer!r} outputs "
        f"(batch, *{student_shape})"
    )
    if pair.loss == "attention":
        if len(teacher_shape) < 2 or len(student_shape) < 2:
            raise ValueError(
                f"{described}; loss='attention' needs spatial features "
                "(batch, *spatial, C). Use loss='mse' or 'cosine' for vectors."
            )
        if not _same_dims(_split_channels(teacher_shape)[0], _split_channels(student_shape)[0]):
            raise ValueError(f"{described}; loss='attention' needs equal spatial sizes.")
        return None
    if _same_dims(teacher_shape, student_shape):
        return None
    teacher_spatial, teacher_channels = _split_channels(teacher_shape)
    student_spatial, _ = _split_channels(student_shape)
    spatial_rank = len(teacher_spatial)
    if (
        len(student_shape) != len(teacher_shape)
        or spatial_rank > 3
        or teacher_channels is None
        or not _same_dims(teacher_spatial, student_spatial)
    ):
        raise ValueError(
            f"{described}; they cannot be matched by a projection, which maps "
            "(batch, C_s) to (batch, C_t) with a Dense layer, or (batch, *spatial, C_s) "
            "to (batch, *spatial, C_t) with a 1x1 convolution (1 to 3 spatial axes, equal "
            "spatial sizes). Pick layers of matching spatial size, or pool one first."
        )
    name = f"projection_{pair.name}"
    if spatial_rank == 0:
        projection = keras.layers.Dense(teacher_channels, name=name)
    else:
        conv = {1: keras.layers.Conv1D, 2: keras.layers.Conv2D, 3: keras.layers.Conv3D}
        projection = conv[spatial_rank](teacher_channels, kernel_size=1, name=name)
    projection.build((None, *student_shape))
    return projection


def _same_dims(shape_a, shape_b):
    return len(shape_a) == len(shape_b) and all(
        a is None or b is None or a == b for a, b in zip(shape_a, shape_b)
    )
