"""NumPy references for the backend tests, in float64, written apart from keras_kd.

Nothing here imports keras_kd or keras: these are the independent numbers that every
backend's result is compared with. Also the fixed inputs and initial weights that
tests/test_backends.py hands to each backend's subprocess.
"""

import sys
from pathlib import Path

import numpy as np

# The generic formulas live in tests/_numpy_reference.py, shared by every test file;
# this module adds the backend tests' fixed inputs and their composite objectives.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _numpy_reference import cross_entropy  # noqa: E402
from _numpy_reference import distillation_gradient as kd_gradient  # noqa: E402,F401
from _numpy_reference import distillation_loss as kd_loss  # noqa: E402
from _numpy_reference import divergence_loss  # noqa: E402,F401
from _numpy_reference import ensemble_logits  # noqa: E402,F401
from _numpy_reference import label_smoothing  # noqa: E402,F401
from _numpy_reference import log_softmax  # noqa: E402
from _numpy_reference import logit_matching  # noqa: E402,F401
from _numpy_reference import one_hot  # noqa: E402
from _numpy_reference import softmax  # noqa: E402,F401
from _numpy_reference import virtual_teacher  # noqa: E402

NUM_FEATURES = 6
NUM_CLASSES = 4
NUM_EXAMPLES = 64
BATCH_SIZE = 16
TEACHER_UNITS = 12
STUDENT_UNITS = 8
TEMPERATURE = 3.0
ALPHA = 0.7
LEARNING_RATE = 0.1
KERNEL_L2 = 1e-2
ACTIVITY_L2 = 1e-3


def label_smoothing_from_probs(labels, probs, smoothing, epsilon=1e-7):
    targets = (1 - smoothing) * one_hot(labels, probs.shape[-1]) + smoothing / probs.shape[-1]
    probs = probs / probs.sum(axis=-1, keepdims=True)
    return -np.sum(targets * np.log(np.clip(probs, epsilon, 1 - epsilon)), axis=-1)


def virtual_teacher_paper(labels, logits, correct_prob, temperature, alpha):
    teacher = np.log(virtual_teacher(labels, logits.shape[-1], correct_prob))
    return (1 - alpha) * cross_entropy(labels, logits) + alpha * kd_loss(
        teacher, logits, temperature
    )


def virtual_teacher_reference(labels, logits, correct_prob, temperature, alpha, multiplier):
    """Yuan et al.'s code: KLDivLoss(log_softmax(z), softmax(p_d / T)) / K, no T^2."""
    num_classes = logits.shape[-1]
    log_p = log_softmax(virtual_teacher(labels, num_classes, correct_prob), temperature)
    kl = np.sum(np.exp(log_p) * (log_p - log_softmax(logits)), axis=-1)
    return (1 - alpha) * cross_entropy(labels, logits) + alpha * multiplier * kl / num_classes


def weighted_batch_mean(values, sample_weight):
    """Keras' "sum_over_batch_size": sum_i w_i * l_i / N."""
    return float(np.sum(np.asarray(sample_weight) * values) / len(values))


def mlp(weights, x):
    """Dense-ReLU-Dense forward with weights [W1, b1, W2, b2]; returns (hidden, logits)."""
    w1, b1, w2, b2 = (np.asarray(w, dtype=np.float64) for w in weights)
    hidden = np.maximum(np.asarray(x, dtype=np.float64) @ w1 + b1, 0.0)
    return hidden, hidden @ w2 + b2


def distillation_objective(teacher_weights, student_weights, x, labels, sample_weight):
    """The Distiller's training loss on one batch, as the seed formula writes it:
    `(1 - alpha) H(y, p_s) + alpha T^2 KL + L2 kernel + L2 activity` (see `inputs`)."""
    _, teacher_logits = mlp(teacher_weights, x)
    hidden, student_logits = mlp(student_weights, x)
    hard = weighted_batch_mean(cross_entropy(labels, student_logits), sample_weight)
    soft = weighted_batch_mean(
        kd_loss(teacher_logits, student_logits, TEMPERATURE), sample_weight
    )
    kernel = KERNEL_L2 * np.sum(np.square(student_weights[0]))
    # Keras' activity regularizer is reduced over the batch: sum / batch size.
    activity = ACTIVITY_L2 * np.sum(np.square(hidden)) / len(x)
    return (1 - ALPHA) * hard + ALPHA * soft + kernel + activity


def inputs(seed=7):
    """Fixed inputs and initial weights, the same for every backend (float32 arrays)."""
    rng = np.random.default_rng(seed)

    def normal(*shape, scale=1.0):
        return (scale * rng.standard_normal(shape)).astype(np.float32)

    arrays = {
        "x": normal(NUM_EXAMPLES, NUM_FEATURES),
        "sample_weight": rng.uniform(0.5, 1.5, NUM_EXAMPLES).astype(np.float32),
        "teacher_w1": normal(NUM_FEATURES, TEACHER_UNITS, scale=0.6),
        "teacher_b1": normal(TEACHER_UNITS, scale=0.1),
        "teacher_w2": normal(TEACHER_UNITS, NUM_CLASSES, scale=0.6),
        "teacher_b2": normal(NUM_CLASSES, scale=0.1),
        "student_w1": normal(NUM_FEATURES, STUDENT_UNITS, scale=0.5),
        "student_b1": normal(STUDENT_UNITS, scale=0.1),
        "student_w2": normal(STUDENT_UNITS, NUM_CLASSES, scale=0.5),
        "student_b2": normal(NUM_CLASSES, scale=0.1),
        # FitNets' regressor from the student's hidden layer to the teacher's.
        "projection_kernel": normal(STUDENT_UNITS, TEACHER_UNITS, scale=0.3),
        "projection_bias": normal(TEACHER_UNITS, scale=0.1),
    }
    # Labels the teacher mostly gets right (a quarter flipped at random), so the
    # distilled student ranks them better than chance and a finite temperature fits.
    labels = np.argmax(mlp(teacher_weights(arrays), arrays["x"])[1], axis=-1)
    flipped = rng.random(NUM_EXAMPLES) < 0.25
    labels[flipped] = rng.integers(0, NUM_CLASSES, int(flipped.sum()))
    arrays["labels"] = labels.astype(np.int32)
    # Logits for the loss formulas: favouring the true class, with a wide spread.
    favour = one_hot(labels, NUM_CLASSES).astype(np.float32)
    arrays["teacher_logits"] = normal(NUM_EXAMPLES, NUM_CLASSES, scale=3.0) + 3.0 * favour
    arrays["student_logits"] = normal(NUM_EXAMPLES, NUM_CLASSES, scale=2.0) + 1.5 * favour
    arrays["second_teacher_logits"] = normal(NUM_EXAMPLES, NUM_CLASSES, scale=3.0) + 2.0 * favour
    return arrays


def teacher_weights(arrays):
    return [arrays[f"teacher_{name}"] for name in ("w1", "b1", "w2", "b2")]


def student_weights(arrays):
    return [arrays[f"student_{name}"] for name in ("w1", "b1", "w2", "b2")]


def dkd_loss(labels, teacher_logits, student_logits, temperature, alpha, beta):
    """DKD per example (mdistiller dkd_loss), the target class removed exactly."""
    out = []
    for label, t, s in zip(labels, teacher_logits, student_logits):
        log_p, log_q = log_softmax(t, temperature), log_softmax(s, temperature)
        rest = np.arange(len(t)) != label
        binary_p = np.array([log_p[label], np.logaddexp.reduce(log_p[rest])])
        binary_q = np.array([log_q[label], np.logaddexp.reduce(log_q[rest])])
        tckd = np.sum(np.exp(binary_p) * (binary_p - binary_q))
        rest_p, rest_q = log_softmax(t[rest], temperature), log_softmax(s[rest], temperature)
        nckd = np.sum(np.exp(rest_p) * (rest_p - rest_q))
        out.append(temperature**2 * (alpha * tckd + beta * nckd))
    return np.array(out)


def dist_loss(teacher_logits, student_logits, temperature, beta, gamma):
    """DIST (DIST_KD dist_kd.py): Pearson of softmax(z / T) over rows and over columns."""

    def pearson_rows(a, b):
        a, b = a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
        return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-8)

    y_s, y_t = softmax(student_logits, temperature), softmax(teacher_logits, temperature)
    inter = 1 - pearson_rows(y_s, y_t).mean()
    intra = 1 - pearson_rows(y_s.T, y_t.T).mean()
    return temperature**2 * (beta * inter + gamma * intra)


def standardize(logits):
    """Logit standardization with the unbiased std (torch.std), as the authors' code."""
    logits = np.asarray(logits, dtype=np.float64)
    centred = logits - logits.mean(-1, keepdims=True)
    return centred / (1e-7 + logits.std(-1, ddof=1, keepdims=True))
