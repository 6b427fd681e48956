"""The tests' independent NumPy references, in float64, written apart from keras_kd.

One home for the formulas that several test files compare keras_kd with (log-softmax,
KL, Hinton's distillation term, cross-entropy, the binned calibration error, ...).
Nothing here imports keras_kd or keras: these are the numbers keras_kd must match, so
they are computed a second, independent way (direct float64 NumPy, loops over bins).

Test files import what they need, under the names they already use, e.g.
`from _numpy_reference import log_softmax as np_log_softmax` (pytest puts `tests/` on
`sys.path`; `tests/backend_neutral/` scripts add it themselves).
"""

import numpy as np


def log_softmax(logits, temperature=1.0):
    """log softmax(z / T) along the last axis, shifted by the row maximum."""
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    shifted = scaled - scaled.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def softmax(logits, temperature=1.0):
    """softmax(z / T) along the last axis."""
    return np.exp(log_softmax(logits, temperature))


def log_sigmoid(logits):
    """log sigmoid(z) = -log(1 + exp(-z)), stable for large |z|."""
    z = np.asarray(logits, dtype=np.float64)
    return -np.logaddexp(0.0, -z)


def sigmoid(logits):
    """1 / (1 + exp(-z))."""
    return np.exp(log_sigmoid(logits))


def one_hot(labels, num_classes):
    """Rows of the identity for integer labels of any shape, flattened to (N, K)."""
    return np.eye(num_classes)[np.asarray(labels).reshape(-1)]


def kl_divergence(log_p, log_q):
    """KL(p || q) per row from log-probabilities, with 0 * log 0 = 0."""
    log_p = np.asarray(log_p, dtype=np.float64)
    log_q = np.asarray(log_q, dtype=np.float64)
    p = np.exp(log_p)
    with np.errstate(invalid="ignore"):  # 0 * (-inf) where p = 0, replaced by 0
        terms = np.where(p > 0, p * (log_p - log_q), 0.0)
    return terms.sum(axis=-1)


def distillation_loss(teacher_logits, student_logits, temperature):
    """Hinton et al. 2015: T^2 KL(softmax(t / T) || softmax(s / T)), per example."""
    return temperature**2 * kl_divergence(
        log_softmax(teacher_logits, temperature), log_softmax(student_logits, temperature)
    )


def divergence_loss(teacher_logits, student_logits, temperature, divergence, beta=0.5):
    """T^2 D(p_t, p_s) per example from plain float64 probabilities.

    "kl": KL(p_t || p_s) (Hinton); "reverse_kl": KL(p_s || p_t) (MiniLLM); "jsd":
    beta KL(p_t || m) + (1 - beta) KL(p_s || m), m = beta p_t + (1 - beta) p_s (GKD).
    """
    p_t, p_s = softmax(teacher_logits, temperature), softmax(student_logits, temperature)
    with np.errstate(divide="ignore"):
        log_p_t, log_p_s = np.log(p_t), np.log(p_s)
        if divergence == "kl":
            value = kl_divergence(log_p_t, log_p_s)
        elif divergence == "reverse_kl":
            value = kl_divergence(log_p_s, log_p_t)
        else:
            log_m = np.log(beta * p_t + (1 - beta) * p_s)
            value = beta * kl_divergence(log_p_t, log_m) + (1 - beta) * kl_divergence(
                log_p_s, log_m
            )
    return temperature**2 * value


def distillation_gradient(teacher_logits, student_logits, temperature):
    """d distillation_loss / d student logits = T (softmax(s / T) - softmax(t / T)), per example."""
    return temperature * (
        softmax(student_logits, temperature) - softmax(teacher_logits, temperature)
    )


def cross_entropy(labels, logits):
    """-log softmax(z)[y] per example, for integer labels."""
    labels = np.asarray(labels).reshape(-1)
    return -log_softmax(logits)[np.arange(len(labels)), labels]


def label_smoothing(labels, logits, smoothing):
    """Müller et al. 2019: H((1 - eps) y + eps / K, softmax(z)), per example."""
    num_classes = np.shape(logits)[-1]
    targets = (1 - smoothing) * one_hot(labels, num_classes) + smoothing / num_classes
    return -np.sum(targets * log_softmax(logits), axis=-1)


def virtual_teacher(labels, num_classes, correct_prob):
    """Yuan et al. 2020: a on the true class, (1 - a) / (K - 1) elsewhere."""
    labels = np.asarray(labels).reshape(-1)
    probs = np.full((len(labels), num_classes), (1 - correct_prob) / (num_classes - 1))
    probs[np.arange(len(labels)), labels] = correct_prob
    return probs


def logit_matching(teacher_logits, student_logits):
    """Ba & Caruana 2014 with Hinton's 1/2: 0.5 mean_k (centred s - centred t)^2."""
    t = np.asarray(teacher_logits, dtype=np.float64)
    s = np.asarray(student_logits, dtype=np.float64)
    diff = (s - s.mean(axis=-1, keepdims=True)) - (t - t.mean(axis=-1, keepdims=True))
    return 0.5 * np.mean(diff**2, axis=-1)


def ensemble_logits(member_logits, temperature):
    """T log(mean_m softmax(z_m / T)): its tempered softmax is the members' mean."""
    mean_probs = np.mean([softmax(z, temperature) for z in member_logits], axis=0)
    return temperature * np.log(mean_probs)


def calibration_error(probs, labels, num_bins, norm="l1", sample_weight=None):
    """Calibration error by explicit bin edges and a loop over bins, in float64.

    Written independently of keras_kd._binning so tests compare two implementations:
    bins are [lo, hi) with the last closed; labels are indices or one-hot (argmax).
    `norm` is "l1" (ECE), "l2" (RMSCE) or "max" (MCE).
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    if labels.ndim == probs.ndim:
        labels = labels[..., 0] if labels.shape[-1] == 1 else np.argmax(labels, axis=-1)
    confidences = np.clip(probs.max(axis=-1), 0.0, 1.0).ravel()
    correct = (probs.argmax(axis=-1) == labels).ravel().astype(np.float64)
    weights = np.ones_like(confidences) if sample_weight is None else np.ravel(sample_weight)
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    shares, gaps = [], []
    for b in range(num_bins):
        upper_ok = confidences < edges[b + 1] if b < num_bins - 1 else confidences <= 1.0
        in_bin = (confidences >= edges[b]) & upper_ok
        mass = weights[in_bin].sum()
        if mass == 0:
            continue
        accuracy = (weights * correct)[in_bin].sum() / mass
        confidence = (weights * confidences)[in_bin].sum() / mass
        shares.append(mass / weights.sum())
        gaps.append(abs(accuracy - confidence))
    shares, gaps = np.array(shares), np.array(gaps)
    if norm == "l1":
        return float(np.sum(shares * gaps))
    if norm == "l2":
        return float(np.sqrt(np.sum(shares * gaps**2)))
    return float(gaps.max(initial=0.0))
