"""Distillation and label-smoothing losses: pure functions on `keras.ops` and thin
serializable `keras.losses.Loss` wrappers around them.

Every formula lives in exactly one function here; the `Distiller`, the loss classes
and the command line all call these. All arithmetic is in float32 and in log space
(`log_softmax`, never `log(softmax)`), so float16 logits from a mixed-precision model
and logits as large as 1e4 give finite values and gradients. Nothing is clipped:
Keras' `KLDivergence` clips probabilities to [1e-7, 1], which makes the gradient
vanish when the student is confidently wrong.

Conventions: `y_pred` is always the student's *logits* (pre-softmax scores), shape
(..., K). Hard labels may be class indices, shape (...,) or (..., 1), or one-hot /
soft targets, shape (..., K); which one is decided from the static shapes.
"""

# Modules, one concern each (as optax.losses): `_core` (tempered log-softmax, KL,
# cross-entropy), `_distillation` (Hinton's KD, ensembles, logit matching),
# `_smoothing` (label smoothing, virtual teacher), `_term` (the Distiller-term contract),
# `_decoupled` (DKD), `_dist` (DIST), `_divergences` (forward and reverse KL,
# generalized JSD).
from keras_kd.losses._core import cross_entropy
from keras_kd.losses._core import kl_divergence_from_log_probs
from keras_kd.losses._core import tempered_log_softmax
from keras_kd.losses._decoupled import DecoupledDistillationLoss
from keras_kd.losses._decoupled import decoupled_distillation_loss
from keras_kd.losses._dist import DISTLoss
from keras_kd.losses._dist import dist_loss
from keras_kd.losses._distillation import DistillationLoss
from keras_kd.losses._distillation import LogitMatchingLoss
from keras_kd.losses._distillation import distillation_loss
from keras_kd.losses._distillation import ensemble_logits
from keras_kd.losses._distillation import logit_matching_loss
from keras_kd.losses._distillation import standardize_logits
from keras_kd.losses._divergences import DIVERGENCES
from keras_kd.losses._divergences import divergence_from_log_probs
from keras_kd.losses._divergences import generalized_jsd_from_log_probs
from keras_kd.losses._divergences import reverse_kl_divergence_from_log_probs
from keras_kd.losses._smoothing import LabelSmoothingLoss
from keras_kd.losses._smoothing import VirtualTeacherLoss
from keras_kd.losses._smoothing import label_smoothing_loss
from keras_kd.losses._smoothing import virtual_teacher_loss
from keras_kd.losses._smoothing import virtual_teacher_probs
from keras_kd.losses._term import DistillationTerm

__all__ = [
    "DISTLoss",
    "DecoupledDistillationLoss",
    "DIVERGENCES",
    "DistillationLoss",
    "DistillationTerm",
    "LabelSmoothingLoss",
    "LogitMatchingLoss",
    "VirtualTeacherLoss",
    "cross_entropy",
    "decoupled_distillation_loss",
    "dist_loss",
    "distillation_loss",
    "divergence_from_log_probs",
    "ensemble_logits",
    "generalized_jsd_from_log_probs",
    "kl_divergence_from_log_probs",
    "label_smoothing_loss",
    "logit_matching_loss",
    "reverse_kl_divergence_from_log_probs",
    "standardize_logits",
    "tempered_log_softmax",
    "virtual_teacher_loss",
    "virtual_teacher_probs",
]
