"""DIST: distillation from a stronger teacher by Pearson correlation of tempered softmaxes."""

from __future__ import annotations

from typing import Any
from typing import Optional

import keras
from keras import ops

from keras_kd.losses._core import PACKAGE
from keras_kd.losses._core import check_same_shape
from keras_kd.losses._term import DistillationTerm
from keras_kd.losses._term import check_weight
from keras_kd.losses._term import split_term_targets
from keras_kd._types import TensorLike

# The authors' epsilon in the cosine of the mean-centred vectors.
_PEARSON_EPSILON = 1e-8


def dist_loss(
    teacher_logits: TensorLike,
    student_logits: TensorLike,
    temperature: float = 1.0,
    beta: float = 1.0,
    gamma: float = 1.0,
    sample_weight: Optional[TensorLike] = None,
) -> TensorLike:
    """DIST: `beta T^2 (1 - mean_i rho(Y_s[i,:], Y_t[i,:])) + gamma T^2 (1 - rho_j)`, a scalar.

    With `Y = softmax(z / T)` row by row and `rho` the Pearson correlation (the cosine
    of the mean-centred vectors, epsilon 1e-8 as the authors'), the first term is the
    inter-class relation of each example's class scores; the second, the intra-class
    relation, `1 - mean_j rho(Y_s[:, j], Y_t[:, j])`, correlates each class's column
    *across the batch*.

    Batch semantics (the second term is a loss of the batch, not of an example):

    - `sample_weight` w weighs example i's inter-class term as any Keras loss does,
      `sum_i w_i (1 - rho_i) / N` ("sum_over_batch_size"), and enters the intra-class
      correlation as weights of a weighted Pearson correlation (weighted means and
      covariances over the batch). With w = 1 both are the authors' formula exactly;
      an example of weight 0 is as if absent from both terms.
    - A batch of one (or with fewer than two examples of weight > 0) has constant
      columns: their correlation is 0, so the intra-class term is the constant
      `gamma T^2` with zero gradient, as in the authors' code. Use batches of
      tens of examples or more (the authors use 128-1024).
    - Under `tf.distribute`, each replica computes the intra-class term over the
      batch *it* sees (the global batch divided by the replica count), as the
      authors' DistributedDataParallel training does; the replicas' losses are
      averaged. So a run on R replicas optimises the mean of R local-batch losses,
      not the loss of the global batch.

    Args:
        teacher_logits: shape (N, K).
        student_logits: shape (N, K).
        temperature: T, float > 0, default 1.0 (ImageNet; the authors use 4 on CIFAR).
        beta: inter-class weight >= 0, default 1.0.
        gamma: intra-class weight >= 0, default 1.0.
        sample_weight: optional per-example weights >= 0, shape (N,).

    Returns:
        float32 scalar.

    Example:
        >>> dist_loss(teacher_logits, student_logits, temperature=4.0)

    References:
        Huang et al. Knowledge Distillation from A Stronger Teacher. NeurIPS 2022
        (`image_classification_sota/lib/models/losses/dist_kd.py`).
    """
    teacher_logits = ops.convert_to_tensor(teacher_logits)
    student_logits = ops.convert_to_tensor(student_logits)
    check_same_shape(teacher_logits, student_logits, "teacher_logits", "student_logits")
    if len(student_logits.shape) != 2:
        raise ValueError(
            f"dist_loss needs logits of shape (batch, K) (its intra-class term correlates "
            f"over the batch), got shape {tuple(student_logits.shape)}."
        )
    teacher_probs = ops.softmax(ops.cast(teacher_logits, "float32") / temperature, axis=-1)
    student_probs = ops.softmax(ops.cast(student_logits, "float32") / temperature, axis=-1)
    batch_size = ops.cast(ops.shape(student_probs)[0], "float32")
    if sample_weight is None:
        weights = ops.ones_like(student_probs[:, 0])
    else:
        weights = ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
    inter_class = ops.divide_no_nan(
        ops.sum(weights * (1.0 - _pearson(student_probs, teacher_probs, axis=1))), batch_size
    )
    column_weights = ops.expand_dims(weights, -1)
    intra_class = 1.0 - ops.mean(
        _pearson(student_probs, teacher_probs, axis=0, weights=column_weights)
    )
    return (temperature**2) * (beta * inter_class + gamma * intra_class)


def _pearson(a, b, axis, weights=None):
    """Pearson correlation along `axis` (weighted means/covariances when `weights`)."""
    if weights is None:
        a = a - ops.mean(a, axis=axis, keepdims=True)
        b = b - ops.mean(b, axis=axis, keepdims=True)
        root_weights = 1.0
    else:
        total = ops.sum(weights, axis=axis, keepdims=True)
        a = a - ops.divide_no_nan(ops.sum(weights * a, axis=axis, keepdims=True), total)
        b = b - ops.divide_no_nan(ops.sum(weights * b, axis=axis, keepdims=True), total)
        root_weights = ops.sqrt(weights)
    a, b = a * root_weights, b * root_weights
    norms = ops.sqrt(ops.sum(ops.square(a), axis=axis) * ops.sum(ops.square(b), axis=axis))
    return ops.sum(a * b, axis=axis) / (norms + _PEARSON_EPSILON)


def _replica_count():
    # A batch-level loss is not reduced by Keras' `reduce_values` (it returns scalars
    # as they are), so the 1 / replicas scaling that Keras applies to every reduced
    # loss, making the replicas' summed gradients a mean, is applied here.
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync


@keras.saving.register_keras_serializable(package=PACKAGE)
class DISTLoss(DistillationTerm):
    """DIST (Huang et al. 2022) as a loss and a `Distiller` term: a batch-level loss.

    `beta T^2 (1 - mean_i rho_i) + gamma T^2 (1 - mean_j rho_j)` with `sample_weight`
    and replicas handled as documented in `keras_kd.losses.dist_loss`. `y_true` is
    the teacher's logits. The authors train `CE + 2 * DIST` (beta = gamma = 1, T = 4
    on CIFAR, 1 on ImageNet).

    Args:
        temperature: T, float > 0, default 1.0.
        beta: inter-class weight >= 0, default 1.0.
        gamma: intra-class weight >= 0, default 1.0.
        name, dtype: as for any `keras.losses.Loss`. The reduction is the batch-level
            one described above (only "sum_over_batch_size" is accepted).

    Example:
        >>> distiller = keras_kd.Distiller(
        ...     teacher, student, distillation_loss=DISTLoss(temperature=4.0))

    References:
        Huang et al. Knowledge Distillation from A Stronger Teacher. NeurIPS 2022.
    """

    def __init__(
        self,
        temperature: float = 1.0,
        beta: float = 1.0,
        gamma: float = 1.0,
        reduction: str = "sum_over_batch_size",
        name: str = "dist_loss",
        dtype: Any = None,
    ) -> None:
        if reduction != "sum_over_batch_size":
            raise ValueError(
                f"DISTLoss is a batch-level loss with its own reduction; `reduction` must "
                f"be 'sum_over_batch_size', got {reduction!r}."
            )
        super().__init__(temperature=temperature, reduction=reduction, name=name, dtype=dtype)
        self.beta = check_weight(beta, "beta")
        self.gamma = check_weight(gamma, "gamma")

    def __call__(
        self,
        y_true: TensorLike,
        y_pred: TensorLike,
        sample_weight: Optional[TensorLike] = None,
    ) -> TensorLike:
        # Overridden because `sample_weight` enters the intra-class correlation itself.
        _, teacher_logits = split_term_targets(y_true, self)
        temperature = self._temperature_in_use
        if temperature is None:
            temperature = self.temperature
        loss = dist_loss(
            teacher_logits,
            y_pred,
            temperature,
            beta=self.beta,
            gamma=self.gamma,
            sample_weight=sample_weight,
        )
        return loss / float(_replica_count())

    def compute(
        self,
        teacher_logits: TensorLike,
        student_logits: TensorLike,
        temperature: TensorLike,
        labels: Optional[TensorLike] = None,
    ) -> TensorLike:
        raise NotImplementedError("DISTLoss is batch-level: call it, or use `dist_loss`.")

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "beta": self.beta, "gamma": self.gamma}
