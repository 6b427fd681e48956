"""Divergences between a teacher's and a student's distributions, from log-probabilities.

Forward KL `KL(p_t || p_s)` is Hinton's (mass-covering: the student must cover every
class the teacher gives mass to); reverse KL `KL(p_s || p_t)` is mode-seeking, the
choice of MiniLLM for generative language models; the generalized Jensen-Shannon
divergence interpolates between them and is bounded. All take log-probabilities of
shape (..., K) and return float32 of shape (...,); all are computed in log space
(`logaddexp` for the mixture), so no probability is ever logged back.

References:
    Agarwal et al. On-Policy Distillation of Language Models: Learning from
        Self-Generated Mistakes (GKD). ICLR 2024.
    Gu, Dong, Wei, Huang. MiniLLM: Knowledge Distillation of Large Language Models.
        ICLR 2024.
"""

from __future__ import annotations

import functools
import math
import numbers

from keras import ops

from keras_kd import _validation
from keras_kd.losses._core import kl_divergence_from_log_probs
from keras_kd._types import TensorLike

DIVERGENCES = ("kl", "reverse_kl", "jsd")


def reverse_kl_divergence_from_log_probs(
    teacher_log_probs: TensorLike,
    student_log_probs: TensorLike,
) -> TensorLike:
    """Reverse KL, `KL(p_s || p_t) = sum_k p_s,k (log p_s,k - log p_t,k)` (MiniLLM).

    Mode-seeking: the student is penalised for mass where the teacher has little, not
    for missing some of the teacher's modes. Infinite where the teacher gives a class
    probability exactly 0 that the student does not.

    Args:
        teacher_log_probs: `log p_t`, shape (..., K).
        student_log_probs: `log p_s`, shape (..., K).

    Returns:
        float32 tensor of shape (...,).

    References:
        Gu et al. MiniLLM: Knowledge Distillation of Large Language Models. ICLR 2024.
    """
    return kl_divergence_from_log_probs(student_log_probs, teacher_log_probs)


def generalized_jsd_from_log_probs(
    teacher_log_probs: TensorLike,
    student_log_probs: TensorLike,
    beta: float = 0.5,
) -> TensorLike:
    """Generalized Jensen-Shannon divergence `beta KL(p_t || m) + (1 - beta) KL(p_s || m)`.

    `m = beta p_t + (1 - beta) p_s`, taken in log space as
    `log m = logaddexp(log p_t + log beta, log p_s + log(1 - beta))`, the formula of
    TRL's `generalized_jsd_loss`. beta = 0.5 is the symmetric JSD, bounded by log 2;
    as beta -> 0 it behaves as `beta` times the forward KL, as beta -> 1 as
    `(1 - beta)` times the reverse KL (GKD, section 3). Finite for any pair of
    distributions, also where one gives a class probability 0.

    Args:
        teacher_log_probs: `log p_t`, shape (..., K).
        student_log_probs: `log p_s`, shape (..., K).
        beta: the teacher's weight in the mixture, a float in (0, 1), default 0.5.

    Returns:
        float32 tensor of shape (...,).

    Example:
        >>> from keras_kd.losses import tempered_log_softmax
        >>> t = tempered_log_softmax(teacher_logits); s = tempered_log_softmax(student_logits)
        >>> generalized_jsd_from_log_probs(t, s, beta=0.5)

    References:
        Agarwal et al. On-Policy Distillation of Language Models (GKD). ICLR 2024.
        von Werra et al. TRL, `GKDTrainer.generalized_jsd_loss`.
    """
    beta = check_beta(beta)
    teacher_log_probs = ops.cast(teacher_log_probs, "float32")
    student_log_probs = ops.cast(student_log_probs, "float32")
    mixture_log_probs = _mixture_log_probs(teacher_log_probs, student_log_probs, beta)
    return beta * kl_divergence_from_log_probs(teacher_log_probs, mixture_log_probs) + (
        1.0 - beta
    ) * kl_divergence_from_log_probs(student_log_probs, mixture_log_probs)


def divergence_from_log_probs(
    teacher_log_probs: TensorLike,
    student_log_probs: TensorLike,
    divergence: str = "kl",
    beta: float = 0.5,
) -> TensorLike:
    """The divergence named `divergence` ("kl", "reverse_kl" or "jsd") between p_t and p_s.

    Args:
        teacher_log_probs: `log p_t`, shape (..., K).
        student_log_probs: `log p_s`, shape (..., K).
        divergence: "kl" (forward, `KL(p_t || p_s)`, Hinton's; default), "reverse_kl"
            (`KL(p_s || p_t)`, MiniLLM) or "jsd" (generalized JSD with `beta`, GKD).
        beta: float in (0, 1), default 0.5; used by "jsd" only.

    Returns:
        float32 tensor of shape (...,).
    """
    divergence = check_divergence(divergence)
    check_beta(beta)  # also when unused: a bad value is a mistake, not a no-op
    if divergence == "reverse_kl":
        return reverse_kl_divergence_from_log_probs(teacher_log_probs, student_log_probs)
    if divergence == "jsd":
        return generalized_jsd_from_log_probs(teacher_log_probs, student_log_probs, beta)
    return kl_divergence_from_log_probs(teacher_log_probs, student_log_probs)


def divergence_from_logits(
    teacher_logits: TensorLike,
    student_logits: TensorLike,
    temperature: float = 1.0,
    divergence: str = "kl",
    beta: float = 0.5,
) -> TensorLike:
    """The divergence between `softmax(t / T)` and `softmax(s / T)`, lean in memory.

    The same value as `divergence_from_log_probs` of the tempered log-softmaxes, but
    with the gradient written out (`keras.ops.custom_gradient`), so that automatic
    differentiation keeps no (tokens x K) intermediate alive between the value and
    the gradient: only the two logits and per-row statistics (log-partitions, the
    divergence itself) cross over, and the gradient is one elementwise pass. With
    `a = t / T`, `b = s / T`, `p_t = softmax(a)`, `p_s = softmax(b)`, `D` the
    divergence and `m = beta p_t + (1 - beta) p_s`:

        "kl":         dD/db = p_s - p_t              dD/da = p_t (log p_t - log p_s - D)
        "reverse_kl": dD/db = p_s (log p_s - log p_t - D)              dD/da = p_t - p_s
        "jsd":        dD/db = (1 - beta) p_s (log p_s - log m - KL(p_s || m))
                      dD/da = beta p_t (log p_t - log m - KL(p_t || m))

    (the softmax Jacobian applied to `dD/dp`, e.g. `(1 - beta) log(p_s / m)` for the
    JSD). The forward and reverse KL values are taken as

        KL(softmax(a) || softmax(b)) = sum_k p_k (a_k - b_k) - logsumexp(a) + logsumexp(b)

    so that no log-softmax is materialized either. For (tokens x K) logits XLA then
    allocates at most 2 extra (tokens x K) float32 buffers for the value and its
    gradient, for every divergence (measured by `benchmarks/loss_memory.py`; autodiff
    through the log-softmaxes took up to 5, for the JSD). Classes where a
    distribution's probability is 0 (`-inf` logits in both) contribute 0 to the value
    and to the gradient.

    Args:
        teacher_logits, student_logits: shape (..., K).
        temperature: T > 0, default 1.0; a tensor (a scheduled temperature) is
            differentiated through as well.
        divergence: "kl" (default), "reverse_kl" or "jsd".
        beta: float in (0, 1), default 0.5; used by "jsd" only.

    Returns:
        float32 tensor of shape (...,), without the `T^2` factor.
    """
    divergence = check_divergence(divergence)
    beta = check_beta(beta)
    if isinstance(temperature, numbers.Real):
        _validation.check_temperature(temperature)
    teacher_logits = ops.cast(teacher_logits, "float32") / temperature
    student_logits = ops.cast(student_logits, "float32") / temperature
    return _divergence_with_gradient(divergence, float(beta))(teacher_logits, student_logits)


@functools.lru_cache(maxsize=None)
def _divergence_with_gradient(divergence, beta):
    """`(a, b) -> D(softmax(a), softmax(b))` per row, with its gradient written out."""

    @ops.custom_gradient
    def divergence_of(teacher_logits, student_logits):
        teacher_log_partition = ops.logsumexp(teacher_logits, axis=-1, keepdims=True)
        student_log_partition = ops.logsumexp(student_logits, axis=-1, keepdims=True)

        def teacher_log_probs():
            return teacher_logits - teacher_log_partition

        def student_log_probs():
            return student_logits - student_log_partition

        if divergence == "jsd":
            mixture_log_probs = _mixture_log_probs(teacher_log_probs(), student_log_probs(), beta)
            teacher_part = kl_divergence_from_log_probs(teacher_log_probs(), mixture_log_probs)
            student_part = kl_divergence_from_log_probs(student_log_probs(), mixture_log_probs)
            value = beta * teacher_part + (1.0 - beta) * student_part
        elif divergence == "reverse_kl":
            value = _kl_from_logits(
                student_logits, student_log_partition, teacher_logits, teacher_log_partition
            )
        else:
            value = _kl_from_logits(
                teacher_logits, teacher_log_partition, student_logits, student_log_partition
            )

        def gradient(*args, upstream=None):
            # TensorFlow and JAX pass the output's cotangent positionally, torch by name.
            upstream = args[0] if upstream is None else upstream
            upstream = ops.expand_dims(upstream, axis=-1)
            log_p_t, log_p_s = teacher_log_probs(), student_log_probs()
            p_t, p_s = ops.exp(log_p_t), ops.exp(log_p_s)
            row_value = ops.expand_dims(value, axis=-1)
            if divergence == "jsd":
                log_m = _mixture_log_probs(log_p_t, log_p_s, beta)
                teacher_grad = beta * _scaled_log_ratio(
                    p_t, log_p_t, log_m, ops.expand_dims(teacher_part, axis=-1)
                )
                student_grad = (1.0 - beta) * _scaled_log_ratio(
                    p_s, log_p_s, log_m, ops.expand_dims(student_part, axis=-1)
                )
            elif divergence == "reverse_kl":
                teacher_grad = p_t - p_s
                student_grad = _scaled_log_ratio(p_s, log_p_s, log_p_t, row_value)
            else:
                teacher_grad = _scaled_log_ratio(p_t, log_p_t, log_p_s, row_value)
                student_grad = p_s - p_t
            return upstream * teacher_grad, upstream * student_grad

        return value, gradient

    return divergence_of


def _mixture_log_probs(teacher_log_probs, student_log_probs, beta):
    """`log(beta p_t + (1 - beta) p_s)`, in log space."""
    return ops.logaddexp(teacher_log_probs + math.log(beta), student_log_probs + math.log1p(-beta))


def _scaled_log_ratio(p, log_p, log_q, kl):
    """`p (log p - log q - KL(p || q))`: the softmax Jacobian times `log p - log q`.

    0 where `p = 0`, also where `log p - log q` is `-inf - (-inf)`.
    """
    return ops.where(p > 0, p * (log_p - log_q - kl), 0.0)


def _kl_from_logits(target_logits, target_log_partition, logits, log_partition):
    """`sum_k p_k (a_k - b_k) - logsumexp(a) + logsumexp(b)`, `p = softmax(a)`.

    The log-partitions are given with a kept last axis of size 1.
    """
    target_probs = ops.exp(target_logits - target_log_partition)
    # `where` keeps 0 * (-inf - z) = nan out of the sum for zero-probability targets.
    terms = ops.where(target_probs > 0, target_probs * (target_logits - logits), 0.0)
    return ops.sum(terms, axis=-1) + ops.squeeze(log_partition - target_log_partition, axis=-1)


def check_divergence(divergence: str) -> str:
    return _validation.check_choice(divergence, "divergence", DIVERGENCES)


def check_beta(beta: float) -> float:
    # Open interval: at beta = 0 or 1 the mixture equals one side and the JSD is 0.
    return _validation.check_in_range(
        beta, "beta", 0.0, 1.0, low_inclusive=False, high_inclusive=False
    )
