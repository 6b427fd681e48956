"""keras_kd.losses against independent float64 NumPy references: values and gradients.

Every reference below is written from the formula in the paper (or, for Tf-KD's
"reference" mode, transcribed from the authors' PyTorch code), never by calling
keras_kd. Gradients come from TensorFlow autodiff and are compared with the analytic
NumPy gradient.
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_kd import losses
from keras_kd.losses import DistillationLoss
from keras_kd.losses import LabelSmoothingLoss
from keras_kd.losses import LogitMatchingLoss
from keras_kd.losses import VirtualTeacherLoss
from _numpy_reference import distillation_loss as np_distillation
from _numpy_reference import kl_divergence as np_kl
from _numpy_reference import log_softmax as np_log_softmax
from _numpy_reference import logit_matching as np_logit_matching
from _numpy_reference import one_hot as np_one_hot
from _numpy_reference import softmax as np_softmax
from _numpy_reference import virtual_teacher as np_virtual_teacher

# ---------------------------------------------------------------------------
# Independent float64 NumPy references
# ---------------------------------------------------------------------------


def np_distillation_grad(teacher_logits, student_logits, temperature):
    """d/ds of the batch mean of np_distillation: T (softmax(s/T) - softmax(t/T)) / N."""
    t = np.asarray(teacher_logits, np.float64) / temperature
    s = np.asarray(student_logits, np.float64) / temperature
    return temperature * (np_softmax(s) - np_softmax(t)) / len(s)


def np_smoothed_cross_entropy(one_hot, logits, smoothing):
    """Müller et al. 2019: (1 - eps) H(q, p) + eps H(u, p), per example."""
    num_classes = logits.shape[-1]
    log_p = np_log_softmax(logits)
    hard = -(one_hot * log_p).sum(-1)
    uniform = -(log_p / num_classes).sum(-1)
    return (1 - smoothing) * hard + smoothing * uniform


def np_tfkd_paper(labels, logits, correct_prob, temperature, alpha):
    """Paper mode: (1 - alpha) CE + alpha T^2 KL(softmax(log p_d / T) || softmax(z / T))."""
    num_classes = logits.shape[-1]
    p_d = np_virtual_teacher(labels, num_classes, correct_prob)
    cross_entropy = -np_log_softmax(logits)[np.arange(len(labels)), labels]
    soft = np_distillation(np.log(p_d), logits, temperature)
    return (1 - alpha) * cross_entropy + alpha * soft


def np_tfkd_reference_batch(labels, outputs, correct_prob, temperature, alpha, multiplier):
    """A transcription of the authors' `loss_kd_regularization` (Tf-KD_reg, PyTorch).

        loss_CE = F.cross_entropy(outputs, labels)                       # mean over batch
        teacher_soft = (1 - correct_prob) / (K - 1); teacher_soft[i, labels[i]] = correct_prob
        loss_soft_regu = nn.KLDivLoss()(F.log_softmax(outputs, dim=1),
                                        F.softmax(teacher_soft / T, dim=1)) * multiplier
        KD_loss = (1 - alpha) * loss_CE + alpha * loss_soft_regu

    `nn.KLDivLoss()` (reduction "mean") averages target * (log target - input) over all
    batch x K elements. Returns the batch loss (a scalar).
    """
    batch, num_classes = outputs.shape
    loss_ce = np.mean(-np_log_softmax(outputs)[np.arange(batch), labels])
    teacher_soft = np_virtual_teacher(labels, num_classes, correct_prob)
    target = np_softmax(teacher_soft / temperature)
    log_input = np_log_softmax(outputs)
    loss_soft_regu = np.mean(target * (np.log(target) - log_input)) * multiplier
    return (1 - alpha) * loss_ce + alpha * loss_soft_regu


def value_and_grad(loss, y_true, y_pred, dtype="float32", sample_weight=None):
    """Batch loss and d loss / d y_pred through TensorFlow autodiff."""
    y_pred = tf.Variable(np.asarray(y_pred), dtype=dtype)
    with tf.GradientTape() as tape:
        value = loss(y_true, y_pred, sample_weight=sample_weight)
    gradient = tape.gradient(value, y_pred)
    return float(value), np.asarray(gradient, dtype=np.float64)


def float32_kl_atol(temperature, num_classes):
    """Float32 rounding bound on T^2 KL: log-probabilities of size ~log K carry an
    absolute error of a few eps each, and T^2 scales it (at T = 100 that is ~1e-4
    relative on typical values; the gradient, T (q - p), stays accurate)."""
    return 2 * temperature**2 * math.log(num_classes) * np.finfo(np.float32).eps


def float32_grad_atol(temperature, batch_size):
    """Float32 rounding bound on T (q - p) / N, probabilities carrying a few eps each."""
    return 4 * temperature * np.finfo(np.float32).eps / batch_size


def random_logits(seed, shape, scale=3.0):
    return (np.random.default_rng(seed).normal(size=shape) * scale).astype("float32")


# ---------------------------------------------------------------------------
# DistillationLoss
# ---------------------------------------------------------------------------

# (name, teacher logits, student logits): ordinary, confidently wrong, +-1e4, 1000 classes.
DISTILLATION_CASES = [
    ("random", random_logits(0, (8, 10)), random_logits(1, (8, 10))),
    (
        "extreme_30",
        np.array([[30.0, -30.0, -30.0], [-30.0, 30.0, 0.0]], "float32"),
        np.array([[-30.0, 30.0, -30.0], [30.0, -30.0, 30.0]], "float32"),
    ),
    (
        "extreme_1e4",
        np.array([[1e4, -1e4, 0.0], [0.0, 0.0, 0.0]], "float32"),
        np.array([[-1e4, 1e4, 0.0], [1e4, -1e4, -1e4]], "float32"),
    ),
    ("k1000", random_logits(2, (4, 1000)), random_logits(3, (4, 1000))),
]


@pytest.mark.parametrize("temperature", [1.0, 4.0, 100.0])
@pytest.mark.parametrize("case", DISTILLATION_CASES, ids=[c[0] for c in DISTILLATION_CASES])
def test_distillation_loss_value_and_gradient(case, temperature):
    _, teacher, student = case
    value, gradient = value_and_grad(DistillationLoss(temperature), teacher, student)
    expected = np.mean(np_distillation(teacher, student, temperature))
    assert np.isfinite(value) and np.all(np.isfinite(gradient))
    np.testing.assert_allclose(
        value, expected, rtol=1e-5, atol=float32_kl_atol(temperature, teacher.shape[-1])
    )
    np.testing.assert_allclose(
        gradient,
        np_distillation_grad(teacher, student, temperature),
        rtol=1e-4,
        atol=float32_grad_atol(temperature, len(student)),
    )


@pytest.mark.parametrize("temperature", [1.0, 100.0])
def test_distillation_loss_per_example_function(temperature):
    teacher, student = random_logits(4, (6, 7)), random_logits(5, (6, 7))
    per_example = np.asarray(losses.distillation_loss(teacher, student, temperature))
    assert per_example.shape == (6,)
    np.testing.assert_allclose(
        per_example,
        np_distillation(teacher, student, temperature),
        rtol=1e-5,
        atol=float32_kl_atol(temperature, 7),
    )


@pytest.mark.parametrize("temperature", [1.0, 100.0])
def test_distillation_loss_float16_inputs(temperature):
    teacher = np.array([[30.0, -30.0, 0.0, 1.5], [1e4, -1e4, 0.0, 2.0]], "float16")
    student = np.array([[-30.0, 30.0, 0.5, 0.0], [-1e4, 1e4, 3.0, 0.0]], "float16")
    # The function computes in float32 whatever its input dtype.
    per_example = losses.distillation_loss(tf.constant(teacher), tf.constant(student), temperature)
    assert per_example.dtype == tf.float32
    np.testing.assert_allclose(
        per_example, np_distillation(teacher, student, temperature), rtol=1e-5
    )
    value, gradient = value_and_grad(DistillationLoss(temperature), teacher, student, "float16")
    np.testing.assert_allclose(
        value, np.mean(np_distillation(teacher, student, temperature)), rtol=1e-3
    )
    np.testing.assert_allclose(
        gradient, np_distillation_grad(teacher, student, temperature), rtol=1e-2, atol=1e-3
    )


def test_published_case_clipped_kl_vs_exact():
    """Issue 2: student [30, -30, -30] vs a uniform teacher; clipped KL 9.65 vs 38.90.

    The published figures are at T = 1: KL(u || softmax(s)) = -log 3 + 40 = 38.90, and
    with q clipped to 1e-7 it is -log 3 - (2/3) log 1e-7 = 9.65.
    """
    teacher = np.zeros((1, 3), "float32")  # uniform
    student = np.array([[30.0, -30.0, -30.0]], "float32")
    exact = float(np_distillation(teacher, student, 1.0)[0])
    assert exact == pytest.approx(-math.log(3) + 40.0, rel=1e-12)
    assert round(exact, 2) == 38.90
    clipped_q = np.clip(np_softmax(student), 1e-7, 1.0)
    clipped = float(np.sum(1 / 3 * (np.log(1 / 3) - np.log(clipped_q))))
    assert round(clipped, 2) == 9.65

    # Keras' KLDivergence on the softmaxes: the clipped value and a vanishing gradient.
    student_var = tf.Variable(student)
    with tf.GradientTape() as tape:
        keras_value = keras.losses.KLDivergence()(
            tf.nn.softmax(teacher), tf.nn.softmax(student_var)
        )
    keras_gradient = tape.gradient(keras_value, student_var).numpy()
    assert float(keras_value) == pytest.approx(clipped, rel=1e-5)
    assert np.max(np.abs(keras_gradient)) < 1e-20

    # Ours: the exact value, and the gradient T (p_s - p_t) = [2/3, -1/3, -1/3].
    value, gradient = value_and_grad(DistillationLoss(temperature=1.0), teacher, student)
    assert value == pytest.approx(exact, rel=1e-6)
    np.testing.assert_allclose(gradient, np_softmax(student) - 1 / 3, atol=1e-6)
    np.testing.assert_allclose(gradient, [[2 / 3, -1 / 3, -1 / 3]], atol=1e-6)


def test_distillation_loss_zero_when_student_equals_teacher_up_to_shift():
    logits = random_logits(6, (5, 4))
    per_example = np.asarray(losses.distillation_loss(logits, logits + 7.0, 3.0))
    np.testing.assert_allclose(per_example, 0.0, atol=1e-5)


def test_distillation_loss_sample_weight():
    teacher, student = random_logits(7, (6, 5)), random_logits(8, (6, 5))
    weights = np.array([0.0, 1.0, 2.0, 0.5, 0.0, 3.0], "float32")
    value, gradient = value_and_grad(DistillationLoss(2.0), teacher, student, sample_weight=weights)
    per_example = np_distillation(teacher, student, 2.0)
    # Keras' "sum_over_batch_size": sum of weighted losses over the batch size.
    np.testing.assert_allclose(value, np.sum(weights * per_example) / 6, rtol=1e-5)
    np.testing.assert_allclose(
        gradient,
        weights[:, None] * np_distillation_grad(teacher, student, 2.0),
        rtol=1e-4,
        atol=1e-7,
    )
    assert np.all(gradient[weights == 0] == 0)


# ---------------------------------------------------------------------------
# LabelSmoothingLoss
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.5])
@pytest.mark.parametrize("num_classes", [3, 1000])
def test_label_smoothing_matches_keras_from_logits(smoothing, num_classes):
    logits = random_logits(10, (8, num_classes))
    labels = np.random.default_rng(11).integers(0, num_classes, 8)
    one_hot = np_one_hot(labels, num_classes).astype("float32")
    ours = LabelSmoothingLoss(smoothing, from_logits=True)
    keras_loss = keras.losses.CategoricalCrossentropy(label_smoothing=smoothing, from_logits=True)
    value, gradient = value_and_grad(ours, one_hot, logits)
    expected = np.mean(np_smoothed_cross_entropy(one_hot, logits, smoothing))
    np.testing.assert_allclose(value, expected, rtol=1e-5)
    np.testing.assert_allclose(value, float(keras_loss(one_hot, logits)), rtol=1e-5)
    # d/dz of H(q', softmax(z)) is softmax(z) - q', with q' = (1 - eps) q + eps / K.
    smoothed_targets = (1 - smoothing) * one_hot + smoothing / num_classes
    np.testing.assert_allclose(
        gradient, (np_softmax(logits) - smoothed_targets) / 8, rtol=1e-4, atol=1e-7
    )


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_label_smoothing_matches_keras_from_probabilities(smoothing):
    logits = random_logits(12, (8, 5))
    probabilities = np_softmax(logits).astype("float32")
    one_hot = np_one_hot(np.random.default_rng(13).integers(0, 5, 8), 5).astype("float32")
    ours = LabelSmoothingLoss(smoothing, from_logits=False)
    keras_loss = keras.losses.CategoricalCrossentropy(label_smoothing=smoothing)
    np.testing.assert_allclose(
        float(ours(one_hot, probabilities)), float(keras_loss(one_hot, probabilities)), rtol=1e-5
    )
    np.testing.assert_allclose(
        float(ours(one_hot, probabilities)),
        np.mean(np_smoothed_cross_entropy(one_hot, logits, smoothing)),
        rtol=1e-4,
    )


def test_label_smoothing_sparse_labels_equal_one_hot():
    logits = random_logits(14, (8, 6))
    labels = np.random.default_rng(15).integers(0, 6, 8)
    one_hot = np_one_hot(labels, 6).astype("float32")
    loss = LabelSmoothingLoss(0.1, from_logits=True)
    expected = np.mean(np_smoothed_cross_entropy(one_hot, logits, 0.1))
    for y_true in (labels, labels.reshape(-1, 1), labels.astype("float32"), one_hot):
        np.testing.assert_allclose(float(loss(y_true, logits)), expected, rtol=1e-5)
    # Keras' sparse loss has no smoothing; ours is the smoothed one-hot loss.
    unsmoothed = float(keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits))
    assert abs(float(loss(labels, logits)) - unsmoothed) > 1e-3


def test_label_smoothing_zero_is_cross_entropy():
    logits = random_logits(16, (8, 4))
    labels = np.random.default_rng(17).integers(0, 4, 8)
    cross_entropy = -np_log_softmax(logits)[np.arange(8), labels]
    np.testing.assert_allclose(
        float(LabelSmoothingLoss(0.0, from_logits=True)(labels, logits)),
        np.mean(cross_entropy),
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        np.asarray(losses.cross_entropy(labels, logits)), cross_entropy, rtol=1e-5
    )
    np.testing.assert_allclose(
        float(keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits)),
        np.mean(cross_entropy),
        rtol=1e-5,
    )


def test_label_smoothing_extreme_and_float16_logits():
    logits = np.array([[1e4, -1e4, 0.0], [30.0, -30.0, -30.0]], "float16")
    labels = np.array([1, 2])
    value, gradient = value_and_grad(
        LabelSmoothingLoss(0.1, from_logits=True), labels, logits, "float16"
    )
    one_hot = np_one_hot(labels, 3)
    np.testing.assert_allclose(
        value, np.mean(np_smoothed_cross_entropy(one_hot, logits, 0.1)), rtol=1e-3
    )
    smoothed = 0.9 * one_hot + 0.1 / 3
    np.testing.assert_allclose(gradient, (np_softmax(logits) - smoothed) / 2, atol=1e-3)


# ---------------------------------------------------------------------------
# VirtualTeacherLoss (Tf-KD_reg)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [1.0, 20.0, 100.0])
@pytest.mark.parametrize("num_classes", [5, 1000])
def test_virtual_teacher_paper_mode(temperature, num_classes):
    logits = random_logits(20, (8, num_classes))
    labels = np.random.default_rng(21).integers(0, num_classes, 8)
    loss = VirtualTeacherLoss(correct_prob=0.9, temperature=temperature, alpha=0.3)
    value, gradient = value_and_grad(loss, labels, logits)
    np.testing.assert_allclose(
        value,
        np.mean(np_tfkd_paper(labels, logits, 0.9, temperature, 0.3)),
        rtol=1e-5,
        atol=0.3 * float32_kl_atol(temperature, num_classes),
    )
    one_hot = np_one_hot(labels, num_classes)
    p_d = np_virtual_teacher(labels, num_classes, 0.9)
    tempered_teacher = np_softmax(np.log(p_d) / temperature)
    expected_gradient = (
        0.7 * (np_softmax(logits) - one_hot)
        + 0.3 * temperature * (np_softmax(logits / temperature) - tempered_teacher)
    ) / 8
    np.testing.assert_allclose(
        gradient, expected_gradient, rtol=1e-4, atol=float32_grad_atol(temperature, 8)
    )


@pytest.mark.parametrize(
    "temperature, alpha, multiplier",
    [(40.0, 0.95, 1.0), (20.0, 0.1, 100.0), (10.0, 0.95, 1.0), (1.0, 0.5, 50.0)],
)
def test_virtual_teacher_reference_mode_matches_authors_code(temperature, alpha, multiplier):
    logits = random_logits(22, (16, 10))
    labels = np.random.default_rng(23).integers(0, 10, 16)
    loss = VirtualTeacherLoss(
        correct_prob=0.99,
        temperature=temperature,
        alpha=alpha,
        mode="reference",
        multiplier=multiplier,
    )
    value, gradient = value_and_grad(loss, labels, logits)
    expected = np_tfkd_reference_batch(labels, logits, 0.99, temperature, alpha, multiplier)
    np.testing.assert_allclose(value, expected, rtol=1e-5)
    # d/dz of KL(p || softmax(z)) is softmax(z) - p; the KL is averaged over N x K.
    target = np_softmax(np_virtual_teacher(labels, 10, 0.99) / temperature)
    expected_gradient = (
        (1 - alpha) * (np_softmax(logits) - np_one_hot(labels, 10))
        + alpha * multiplier / 10 * (np_softmax(logits) - target)
    ) / 16
    np.testing.assert_allclose(gradient, expected_gradient, rtol=1e-4, atol=1e-7)


def test_virtual_teacher_modes_differ_and_accept_one_hot():
    logits = random_logits(24, (8, 10))
    labels = np.random.default_rng(25).integers(0, 10, 8)
    paper = VirtualTeacherLoss(0.99, 20.0, 0.5)
    reference = VirtualTeacherLoss(0.99, 20.0, 0.5, mode="reference")
    assert abs(float(paper(labels, logits)) - float(reference(labels, logits))) > 1e-2
    one_hot = np_one_hot(labels, 10).astype("float32")
    np.testing.assert_allclose(
        float(paper(one_hot, logits)), float(paper(labels, logits)), rtol=1e-6
    )
    np.testing.assert_allclose(
        float(reference(labels.reshape(-1, 1), logits)), float(reference(labels, logits)), rtol=1e-6
    )


def test_virtual_teacher_probs():
    labels = np.array([0, 2, 3])
    probs = np.asarray(losses.virtual_teacher_probs(labels, np.zeros((3, 4), "float32"), 0.7))
    np.testing.assert_allclose(probs, np_virtual_teacher(labels, 4, 0.7), rtol=1e-6)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)


def test_virtual_teacher_alpha_zero_is_cross_entropy():
    logits = random_logits(26, (8, 5))
    labels = np.random.default_rng(27).integers(0, 5, 8)
    for mode in ("paper", "reference"):
        loss = VirtualTeacherLoss(0.9, 20.0, alpha=0.0, mode=mode)
        np.testing.assert_allclose(
            float(loss(labels, logits)),
            np.mean(-np_log_softmax(logits)[np.arange(8), labels]),
            rtol=1e-5,
        )


# ---------------------------------------------------------------------------
# LogitMatchingLoss, the high-temperature limit, ensembles
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [1.0, 30.0, 1e4])
def test_logit_matching_value_and_gradient(scale):
    teacher, student = random_logits(30, (6, 8), scale), random_logits(31, (6, 8), scale)
    value, gradient = value_and_grad(LogitMatchingLoss(), teacher, student)
    np.testing.assert_allclose(value, np.mean(np_logit_matching(teacher, student)), rtol=1e-5)
    # The centred difference d is orthogonal to constants, so d/ds of 0.5 mean_k d^2 is d / K.
    t, s = teacher.astype(np.float64), student.astype(np.float64)
    centred_difference = (s - s.mean(-1, keepdims=True)) - (t - t.mean(-1, keepdims=True))
    np.testing.assert_allclose(gradient, centred_difference / 8 / 6, rtol=1e-4, atol=1e-6 * scale)


def test_logit_matching_ignores_per_example_shifts():
    teacher, student = random_logits(32, (4, 5)), random_logits(33, (4, 5))
    shifted = teacher + np.arange(4, dtype="float32")[:, None] * 10
    np.testing.assert_allclose(
        np.asarray(losses.logit_matching_loss(shifted, student)),
        np.asarray(losses.logit_matching_loss(teacher, student)),
        rtol=1e-5,
    )


def test_high_temperature_limit_of_distillation_is_logit_matching():
    """Hinton et al. 2015, section 2.1: T^2 KL -> 0.5 mean_k (centred s - centred t)^2.

    The value converges fast (O(1/T^2)); its gradient T (q - p) tends to the centred
    logit difference / K as O(1/T).
    """
    teacher, student = random_logits(34, (8, 10), 1.0), random_logits(35, (8, 10), 1.0)
    limit = np.mean(np_logit_matching(teacher, student))
    assert np.mean(np_distillation(teacher, student, 1e3)) == pytest.approx(limit, rel=1e-5)
    assert float(LogitMatchingLoss()(teacher, student)) == pytest.approx(limit, rel=1e-5)
    assert float(DistillationLoss(100.0)(teacher, student)) == pytest.approx(limit, rel=1e-3)
    _, distillation_gradient = value_and_grad(DistillationLoss(1e3), teacher, student)
    _, matching_gradient = value_and_grad(LogitMatchingLoss(), teacher, student)
    np.testing.assert_allclose(
        distillation_gradient, matching_gradient, atol=1e-2 * np.abs(matching_gradient).max()
    )


@pytest.mark.parametrize("temperature", [1.0, 4.0, 100.0])
def test_ensemble_logits_give_the_mean_of_tempered_softmaxes(temperature):
    members = [random_logits(seed, (5, 7)) for seed in (40, 41, 42)]
    combined = np.asarray(losses.ensemble_logits([tf.constant(m) for m in members], temperature))
    mean_probs = np.mean([np_softmax(m / temperature) for m in members], axis=0)
    np.testing.assert_allclose(np_softmax(combined / temperature), mean_probs, rtol=1e-5, atol=1e-7)
    # So distilling from them is distilling from the averaged soft targets.
    student = random_logits(43, (5, 7))
    expected = temperature**2 * np_kl(np.log(mean_probs), np_log_softmax(student / temperature))
    np.testing.assert_allclose(
        np.asarray(losses.distillation_loss(combined, student, temperature)),
        expected,
        rtol=1e-5,
        atol=float32_kl_atol(temperature, 7),
    )


def test_ensemble_of_one_is_the_member():
    member = random_logits(44, (3, 4))
    np.testing.assert_array_equal(np.asarray(losses.ensemble_logits([member], 2.0)), member)


def test_tempered_log_softmax_and_kl_helpers():
    logits = random_logits(45, (4, 6), 30.0)
    for temperature in (1.0, 7.0):
        np.testing.assert_allclose(
            np.asarray(losses.tempered_log_softmax(logits, temperature)),
            np_log_softmax(logits / temperature),
            rtol=1e-5,
            atol=1e-5,
        )
    # A target with zero-probability classes (log p = -inf) contributes 0 there.
    with np.errstate(divide="ignore"):
        target = np.log(np.array([[0.5, 0.5, 0.0]]))
    student = np_log_softmax(np.array([[1.0, 2.0, 3.0]]))
    value = np.asarray(losses.kl_divergence_from_log_probs(target.astype("float32"), student))
    assert np.isfinite(value).all()
    np.testing.assert_allclose(value, np_kl(target, student), rtol=1e-5)


# ---------------------------------------------------------------------------
# Use in compile, serialization
# ---------------------------------------------------------------------------


def test_distillation_loss_in_compile_offline_distillation():
    keras.utils.set_random_seed(0)
    inputs = np.random.default_rng(50).normal(size=(32, 4)).astype("float32")
    teacher_logits = random_logits(51, (32, 3))
    student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    student.compile(optimizer="sgd", loss=DistillationLoss(temperature=2.0))
    reported = student.evaluate(inputs, teacher_logits, batch_size=32, verbose=0)
    expected = np.mean(np_distillation(teacher_logits, student.predict(inputs, verbose=0), 2.0))
    np.testing.assert_allclose(reported, expected, rtol=1e-5)
    history = student.fit(inputs, teacher_logits, epochs=5, batch_size=32, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]


LOSS_INSTANCES = [
    DistillationLoss(temperature=2.5),
    LabelSmoothingLoss(0.2, from_logits=False),
    LabelSmoothingLoss(0.05, from_logits=True),
    VirtualTeacherLoss(0.95, 30.0, 0.25, mode="reference", multiplier=50.0),
    VirtualTeacherLoss(0.9, 10.0, 0.5, mode="paper"),
    LogitMatchingLoss(),
]


@pytest.mark.parametrize("loss", LOSS_INSTANCES, ids=lambda loss: type(loss).__name__)
def test_config_and_serialization_round_trip(loss):
    config = loss.get_config()
    rebuilt = type(loss).from_config(config)
    assert rebuilt.get_config() == config
    serialized = keras.saving.serialize_keras_object(loss)
    assert serialized["registered_name"].startswith("keras_kd>")
    restored = keras.saving.deserialize_keras_object(serialized)
    assert type(restored) is type(loss)
    assert restored.get_config() == config
    # Same numbers after the round trip.
    logits = random_logits(52, (4, 5))
    if isinstance(loss, (DistillationLoss, LogitMatchingLoss)):
        y_true = random_logits(53, (4, 5))
    else:
        y_true = np.array([0, 1, 4, 2])
    y_pred = np_softmax(logits).astype("float32") if config.get("from_logits") is False else logits
    assert float(restored(y_true, y_pred)) == pytest.approx(float(loss(y_true, y_pred)), rel=1e-6)
    assert keras.losses.get(serialized).get_config() == config


def test_config_keeps_hyperparameters():
    config = VirtualTeacherLoss(0.95, 30.0, 0.25, mode="reference", multiplier=50.0).get_config()
    assert (config["correct_prob"], config["temperature"], config["alpha"]) == (0.95, 30.0, 0.25)
    assert (config["mode"], config["multiplier"]) == ("reference", 50.0)
    assert DistillationLoss(2.5).get_config()["temperature"] == 2.5
    assert LabelSmoothingLoss(0.2, from_logits=False).get_config()["smoothing"] == 0.2


# ---------------------------------------------------------------------------
# ValueErrors naming the argument and the value
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0, -1.0, float("nan"), float("inf"), "4", True, None])
def test_bad_temperature(temperature):
    for make in (DistillationLoss, lambda temperature: VirtualTeacherLoss(temperature=temperature)):
        with pytest.raises(ValueError, match="temperature") as error:
            make(temperature=temperature)
        assert repr(temperature) in str(error.value)


@pytest.mark.parametrize("smoothing", [-0.1, 1.0, 1.5, float("nan"), "0.1"])
def test_bad_smoothing(smoothing):
    with pytest.raises(ValueError, match="smoothing") as error:
        LabelSmoothingLoss(smoothing, from_logits=True)
    assert repr(smoothing) in str(error.value)


def test_bad_from_logits():
    with pytest.raises(ValueError, match="from_logits"):
        LabelSmoothingLoss(0.1, from_logits="yes")
    with pytest.raises(TypeError):
        LabelSmoothingLoss(0.1)  # from_logits is a required keyword: no silent default


@pytest.mark.parametrize("correct_prob", [0.0, -0.5, 1.5, float("nan")])
def test_bad_correct_prob_at_construction(correct_prob):
    with pytest.raises(ValueError, match="correct_prob") as error:
        VirtualTeacherLoss(correct_prob=correct_prob)
    assert repr(correct_prob) in str(error.value)


@pytest.mark.parametrize("correct_prob, num_classes", [(0.2, 5), (0.1, 5), (0.5, 2)])
def test_correct_prob_not_above_uniform_rejected_at_call(correct_prob, num_classes):
    loss = VirtualTeacherLoss(correct_prob=correct_prob)
    with pytest.raises(ValueError, match="correct_prob") as error:
        loss(np.array([0, 1]), np.zeros((2, num_classes), "float32"))
    assert repr(correct_prob) in str(error.value)
    assert f"K={num_classes}" in str(error.value)


def test_virtual_teacher_needs_two_classes():
    with pytest.raises(ValueError, match="2 classes"):
        VirtualTeacherLoss(0.9)(np.array([0, 0]), np.zeros((2, 1), "float32"))


@pytest.mark.parametrize("alpha", [-0.1, 1.1, float("nan"), "0.5"])
def test_bad_alpha(alpha):
    with pytest.raises(ValueError, match="alpha") as error:
        VirtualTeacherLoss(alpha=alpha)
    assert repr(alpha) in str(error.value)


def test_bad_mode_and_multiplier():
    with pytest.raises(ValueError, match="mode.*'bad'"):
        VirtualTeacherLoss(mode="bad")
    with pytest.raises(ValueError, match="mode"):
        losses.virtual_teacher_loss(np.array([0]), np.zeros((1, 3), "float32"), mode="bad")
    with pytest.raises(ValueError, match="multiplier"):
        VirtualTeacherLoss(multiplier=-1.0)


@pytest.mark.parametrize(
    "loss", [DistillationLoss(2.0), LogitMatchingLoss()], ids=["distillation", "logit_matching"]
)
def test_teacher_student_shape_mismatch_names_both_shapes(loss):
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 4\)"):
        loss(np.zeros((2, 3), "float32"), np.zeros((2, 4), "float32"))


@pytest.mark.parametrize(
    "loss",
    [LabelSmoothingLoss(0.1, from_logits=True), VirtualTeacherLoss(0.9)],
    ids=["label_smoothing", "virtual_teacher"],
)
def test_one_hot_labels_with_wrong_class_count(loss):
    with pytest.raises(ValueError, match=r"3 classes.*\(2, 4\)"):
        loss(np.zeros((2, 4), "float32"), np.zeros((2, 3), "float32"))
    with pytest.raises(ValueError, match="y_true"):
        loss(np.zeros((2, 3, 3), "float32"), np.zeros((2, 3), "float32"))


SAMPLE_LABELS = np.array([0, 2, 1, 1])
SAMPLE_TEACHER = random_logits(60, (4, 3))


@pytest.mark.parametrize(
    "loss, y_true, reference",
    [
        (
            LabelSmoothingLoss(0.1, from_logits=True),
            SAMPLE_LABELS,
            lambda z: np_smoothed_cross_entropy(np_one_hot(SAMPLE_LABELS, 3), z, 0.1),
        ),
        (
            VirtualTeacherLoss(0.9, 4.0, 0.5),
            SAMPLE_LABELS,
            lambda z: np_tfkd_paper(SAMPLE_LABELS, z, 0.9, 4.0, 0.5),
        ),
        (LogitMatchingLoss(), SAMPLE_TEACHER, lambda z: np_logit_matching(SAMPLE_TEACHER, z)),
    ],
    ids=["label_smoothing", "virtual_teacher", "logit_matching"],
)
def test_sample_weight_scales_each_example(loss, y_true, reference):
    logits = random_logits(61, (4, 3))
    weights = np.array([0.0, 2.0, 1.0, 0.5], "float32")
    np.testing.assert_allclose(
        float(loss(y_true, logits, sample_weight=weights)),
        np.sum(weights * reference(logits)) / 4,
        rtol=1e-5,
    )
