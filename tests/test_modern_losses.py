"""DKD, DIST and logit standardization against NumPy transcriptions of the authors' code.

The references below are written here in float64 from the authors' PyTorch code
(mdistiller `DKD.py::dkd_loss`, DIST_KD `dist_kd.py`, logit-standardization-KD
`KD.py::normalize`), independently of keras_kd. Gradients are checked against
central finite differences of the same float64 references.
"""

import keras
import numpy as np
import pytest
from _numpy_reference import log_softmax as np_log_softmax
from _numpy_reference import softmax as np_softmax
import tensorflow as tf

import keras_kd
from keras_kd import losses

# --- NumPy transcriptions, float64 ------------------------------------------------


def np_kl_div(log_input, target):
    """torch.nn.functional.kl_div(input, target, reduction='none').sum(1): xlogy(t, t) - t * input."""
    safe = np.where(target > 0, target, 1.0)
    return np.sum(np.where(target > 0, target * (np.log(safe) - log_input), 0.0), axis=-1)


def np_dkd_authors(labels, teacher, student, temperature, alpha, beta):
    """mdistiller dkd_loss per example, line by line (the -1000 trick included)."""
    teacher, student = np.asarray(teacher, np.float64), np.asarray(student, np.float64)
    gt_mask = np.eye(teacher.shape[-1])[labels]
    other_mask = 1.0 - gt_mask
    pred_student = np_softmax(student / temperature)
    pred_teacher = np_softmax(teacher / temperature)
    cat = lambda p: np.stack([(p * gt_mask).sum(1), (p * other_mask).sum(1)], axis=1)  # noqa: E731
    pred_student, pred_teacher = cat(pred_student), cat(pred_teacher)
    tckd = np_kl_div(np.log(pred_student), pred_teacher) * temperature**2
    pred_teacher_part2 = np_softmax(teacher / temperature - 1000.0 * gt_mask)
    log_pred_student_part2 = np_log_softmax(student / temperature - 1000.0 * gt_mask)
    nckd = np_kl_div(log_pred_student_part2, pred_teacher_part2) * temperature**2
    return alpha * tckd + beta * nckd


def np_dkd_exact(labels, teacher, student, temperature, alpha, beta):
    """The same DKD with the target class removed exactly (valid for any logits)."""
    out = []
    for label, t, s in zip(labels, np.asarray(teacher, np.float64), np.asarray(student, np.float64)):
        lt, ls = np_log_softmax(t / temperature), np_log_softmax(s / temperature)
        rest = np.arange(len(t)) != label
        log_rest = lambda lp: np.logaddexp.reduce(lp[rest])  # noqa: E731
        bt = np.array([lt[label], log_rest(lt)])
        bs = np.array([ls[label], log_rest(ls)])
        tckd = np_kl_div(bs, np.exp(bt))
        nt, ns = np_log_softmax(t[rest] / temperature), np_log_softmax(s[rest] / temperature)
        nckd = np_kl_div(ns, np.exp(nt))
        out.append(temperature**2 * (alpha * tckd + beta * nckd))
    return np.array(out)


def np_pearson_rows(a, b, eps=1e-8):
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + eps)


def np_dist_authors(teacher, student, tau, beta, gamma):
    """DIST_KD's DIST.forward: inter- and intra-class relations of softmax(z / tau)."""
    y_s = np_softmax(np.asarray(student, np.float64) / tau)
    y_t = np_softmax(np.asarray(teacher, np.float64) / tau)
    inter = tau**2 * (1 - np_pearson_rows(y_s, y_t).mean())
    intra = tau**2 * (1 - np_pearson_rows(y_s.T, y_t.T).mean())
    return beta * inter + gamma * intra


def np_standardize(z):
    """logit-standardization-KD normalize(): torch.std is the unbiased std."""
    z = np.asarray(z, np.float64)
    return (z - z.mean(-1, keepdims=True)) / (1e-7 + z.std(-1, ddof=1, keepdims=True))


def np_kd(teacher, student, temperature):
    return temperature**2 * np_kl_div(
        np_log_softmax(student / temperature), np_softmax(teacher / temperature)
    )


def numeric_grad(f, z, h=1e-5):
    """Central differences of a float64 scalar function of the student logits."""
    z = np.asarray(z, np.float64)
    grad = np.zeros_like(z)
    for index in np.ndindex(z.shape):
        up, down = z.copy(), z.copy()
        up[index] += h
        down[index] -= h
        grad[index] = (f(up) - f(down)) / (2 * h)
    return grad


def value_and_grad(loss_fn, student):
    student = tf.Variable(np.asarray(student, np.float32))
    with tf.GradientTape() as tape:
        value = loss_fn(student)
    return float(value), np.asarray(tape.gradient(value, student), np.float64)


def random_logits(seed, shape, scale=3.0):
    return (np.random.default_rng(seed).normal(size=shape) * scale).astype("float32")


LABELS = np.array([0, 2, 1, 4, 3, 0])
CASES = {
    "random": (random_logits(0, (6, 5)), random_logits(1, (6, 5))),
    # Confident teachers on the label (p_y -> 1) and confidently wrong students.
    "extreme_30": (
        np.eye(5, dtype="float32")[LABELS] * 60.0 - 30.0,
        np.eye(5, dtype="float32")[(LABELS + 1) % 5] * 60.0 - 30.0,
    ),
    "extreme_1e4": (
        np.eye(5, dtype="float32")[LABELS] * 1e4,
        np.eye(5, dtype="float32")[(LABELS + 2) % 5] * 1e4 - random_logits(2, (6, 5)),
    ),
}


# --- DKD ---------------------------------------------------------------------------


def test_dkd_exact_reference_is_the_authors_formula_where_both_are_defined():
    teacher, student = CASES["random"]
    for temperature in (1.0, 4.0):
        np.testing.assert_allclose(
            np_dkd_exact(LABELS, teacher, student, temperature, 1.0, 8.0),
            np_dkd_authors(LABELS, teacher, student, temperature, 1.0, 8.0),
            rtol=1e-9,
        )


@pytest.mark.parametrize("temperature", [1.0, 4.0])
@pytest.mark.parametrize("case", list(CASES))
def test_dkd_value_and_gradient(case, temperature):
    teacher, student = CASES[case]
    alpha, beta = 1.0, 8.0
    loss = keras_kd.DecoupledDistillationLoss(temperature, alpha=alpha, beta=beta)
    value, gradient = value_and_grad(
        lambda s: loss({"labels": LABELS, "teacher_logits": teacher}, s), student
    )
    reference = lambda s: np.mean(np_dkd_exact(LABELS, teacher, s, temperature, alpha, beta))  # noqa: E731
    if case == "random":  # where the authors' own formula is finite, it is the reference
        reference = lambda s: np.mean(  # noqa: E731
            np_dkd_authors(LABELS, teacher, s, temperature, alpha, beta)
        )
    expected = reference(student)
    assert np.isfinite(value) and np.all(np.isfinite(gradient))
    np.testing.assert_allclose(value, expected, rtol=2e-5, atol=1e-4 * temperature**2)
    np.testing.assert_allclose(
        gradient, numeric_grad(reference, student), rtol=1e-3, atol=1e-5 * temperature**2
    )


def test_dkd_authors_code_fails_where_keras_kd_does_not():
    teacher, student = CASES["extreme_1e4"]
    with np.errstate(divide="ignore", invalid="ignore"):
        authors = np_dkd_authors(LABELS, teacher, student, 1.0, 1.0, 8.0)
    assert not np.all(np.isfinite(authors))  # log(b_s) = log 0 for a confident student
    ours = losses.decoupled_distillation_loss(LABELS, teacher, student, 1.0)
    np.testing.assert_allclose(
        ours, np_dkd_exact(LABELS, teacher, student, 1.0, 1.0, 8.0), rtol=1e-5
    )


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_dkd_float16_inputs_compute_in_float32(temperature):
    teacher, student = CASES["extreme_30"]
    result = losses.decoupled_distillation_loss(
        LABELS, tf.constant(teacher, tf.float16), tf.constant(student, tf.float16), temperature
    )
    assert result.dtype == tf.float32
    np.testing.assert_allclose(
        result, np_dkd_exact(LABELS, teacher, student, temperature, 1.0, 8.0), rtol=1e-5
    )


def test_dkd_one_hot_labels_and_sample_weight():
    teacher, student = CASES["random"]
    weights = np.linspace(0.0, 2.0, len(LABELS))
    loss = keras_kd.DecoupledDistillationLoss(4.0, alpha=0.5, beta=2.0)
    value = loss(
        {"labels": np.eye(5)[LABELS], "teacher_logits": teacher}, student, sample_weight=weights
    )
    per_example = np_dkd_authors(LABELS, teacher, student, 4.0, 0.5, 2.0)
    np.testing.assert_allclose(value, np.sum(weights * per_example) / len(LABELS), rtol=1e-5)


def test_dkd_parts_recompose_hintons_kd():
    # Hinton's KL decomposes as TCKD + (1 - p_t,y) NCKD (the paper's eq. 5).
    teacher, student = CASES["random"]
    tckd = np_dkd_exact(LABELS, teacher, student, 4.0, 1.0, 0.0)
    nckd = np_dkd_exact(LABELS, teacher, student, 4.0, 0.0, 1.0)
    p_target = np_softmax(teacher / 4.0)[np.arange(len(LABELS)), LABELS]
    np.testing.assert_allclose(tckd + (1 - p_target) * nckd, np_kd(teacher, student, 4.0), rtol=1e-9)
    ours_tckd = losses.decoupled_distillation_loss(LABELS, teacher, student, 4.0, 1.0, 0.0)
    ours_nckd = losses.decoupled_distillation_loss(LABELS, teacher, student, 4.0, 0.0, 1.0)
    # float32 log-probabilities of size ~log K carry a few eps each, times T^2.
    np.testing.assert_allclose(ours_tckd, tckd, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours_nckd, nckd, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("num_classes", [1, 2])
def test_dkd_rejects_fewer_than_three_classes(num_classes):
    logits = np.zeros((2, num_classes), "float32")
    with pytest.raises(ValueError, match="K >= 3"):
        losses.decoupled_distillation_loss(np.array([0, 0]), logits, logits)


def test_dkd_needs_labels_standalone():
    teacher, student = CASES["random"]
    with pytest.raises(ValueError, match="needs labels"):
        keras_kd.DecoupledDistillationLoss()(teacher, student)


def test_dkd_with_standardized_logits():
    teacher, student = CASES["random"]
    value = losses.decoupled_distillation_loss(LABELS, teacher, student, 2.0, standardize=True)
    expected = np_dkd_authors(LABELS, np_standardize(teacher), np_standardize(student), 2.0, 1.0, 8.0)
    np.testing.assert_allclose(value, expected, rtol=1e-5)


# --- DIST --------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [1.0, 4.0])
@pytest.mark.parametrize("case", list(CASES))
def test_dist_value_and_gradient(case, temperature):
    teacher, student = CASES[case]
    loss = keras_kd.DISTLoss(temperature, beta=1.0, gamma=2.0)
    value, gradient = value_and_grad(lambda s: loss(teacher, s), student)
    reference = lambda s: np_dist_authors(teacher, s, temperature, 1.0, 2.0)  # noqa: E731
    assert np.isfinite(value) and np.all(np.isfinite(gradient))
    np.testing.assert_allclose(value, reference(student), rtol=1e-5, atol=1e-5 * temperature**2)
    np.testing.assert_allclose(
        gradient, numeric_grad(reference, student), rtol=1e-3, atol=1e-5 * temperature**2
    )


def test_dist_float16_inputs():
    teacher, student = CASES["extreme_30"]
    value = losses.dist_loss(
        tf.constant(teacher, tf.float16), tf.constant(student, tf.float16), 4.0
    )
    assert value.dtype == tf.float32
    np.testing.assert_allclose(value, np_dist_authors(teacher, student, 4.0, 1.0, 1.0), rtol=1e-5)


def test_dist_zero_weights_drop_examples_from_both_terms():
    teacher, student = CASES["random"]
    keep = np.array([1, 0, 1, 1, 0, 1], bool)
    value = keras_kd.DISTLoss(4.0)(teacher, student, sample_weight=keep.astype("float32"))
    y_s, y_t = np_softmax(student[keep] / 4.0), np_softmax(teacher[keep] / 4.0)
    inter = np.sum(1 - np_pearson_rows(y_s, y_t)) / len(keep)  # Keras: over the batch size
    intra = 1 - np_pearson_rows(y_s.T, y_t.T).mean()
    np.testing.assert_allclose(value, 16.0 * (inter + intra), rtol=1e-5)


def test_dist_weighted_intra_class_correlation():
    teacher, student = CASES["random"]
    weights = np.array([0.5, 2.0, 1.0, 0.1, 3.0, 1.0])
    value = losses.dist_loss(teacher, student, 1.0, beta=0.0, gamma=1.0, sample_weight=weights)
    y_s, y_t = np_softmax(student), np_softmax(teacher)
    correlations = []
    for j in range(5):
        cov = np.cov(y_s[:, j], y_t[:, j], aweights=weights)
        correlations.append(cov[0, 1] / np.sqrt(cov[0, 0] * cov[1, 1]))
    np.testing.assert_allclose(value, 1 - np.mean(correlations), rtol=1e-5)


def test_dist_batch_of_one_has_a_constant_intra_class_term():
    teacher, student = random_logits(5, (1, 4)), random_logits(6, (1, 4))
    value, gradient = value_and_grad(
        lambda s: losses.dist_loss(teacher, s, 1.0, beta=0.0, gamma=3.0), student
    )
    assert value == pytest.approx(3.0)
    np.testing.assert_array_equal(gradient, 0.0)


def test_dist_rejects_other_reductions_and_ranks():
    with pytest.raises(ValueError, match="reduction"):
        keras_kd.DISTLoss(reduction="sum")
    with pytest.raises(ValueError, match="batch, K"):
        losses.dist_loss(np.zeros((2, 3, 4)), np.zeros((2, 3, 4)))


# --- logit standardization ------------------------------------------------------------


def test_standardize_logits_uses_the_unbiased_std():
    logits = random_logits(7, (4, 6))
    np.testing.assert_allclose(losses.standardize_logits(logits), np_standardize(logits), rtol=1e-5, atol=1e-6)
    constant = losses.standardize_logits(np.full((1, 3), 5.0))
    np.testing.assert_array_equal(constant, 0.0)
    with pytest.raises(ValueError, match="K >= 2"):
        losses.standardize_logits(np.zeros((2, 1)))


@pytest.mark.parametrize("temperature", [1.0, 4.0])
@pytest.mark.parametrize("case", list(CASES))
def test_standardized_distillation_value_and_gradient(case, temperature):
    teacher, student = CASES[case]
    loss = keras_kd.DistillationLoss(temperature, standardize=True)
    value, gradient = value_and_grad(lambda s: loss(teacher, s), student)
    reference = lambda s: np.mean(  # noqa: E731
        np_kd(np_standardize(teacher), np_standardize(s), temperature)
    )
    np.testing.assert_allclose(value, reference(student), rtol=1e-5, atol=1e-5)
    h = 1e-5 if case == "random" else 1.0  # standardized logits are O(1) whatever the scale
    np.testing.assert_allclose(
        gradient, numeric_grad(reference, student, h=h), rtol=2e-3, atol=1e-6 * np.abs(student).max()
    )


def test_standardized_loss_is_invariant_to_scaling_either_model():
    teacher, student = CASES["random"]
    base = losses.distillation_loss(teacher, student, 2.0, standardize=True)
    scaled = losses.distillation_loss(10.0 * teacher + 3.0, 0.1 * student, 2.0, standardize=True)
    np.testing.assert_allclose(scaled, base, rtol=1e-4, atol=1e-6)


def test_standardize_must_be_a_bool():
    with pytest.raises(ValueError, match="standardize"):
        keras_kd.DistillationLoss(standardize=1)


# --- serialization ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "loss",
    [
        keras_kd.DecoupledDistillationLoss(2.0, alpha=0.5, beta=6.0, standardize=True),
        keras_kd.DISTLoss(4.0, beta=2.0, gamma=0.5),
        keras_kd.DistillationLoss(2.0, standardize=True),
    ],
    ids=lambda loss: type(loss).__name__,
)
def test_round_trip(loss):
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(restored) is type(loss)
    assert restored.get_config() == loss.get_config()


@pytest.mark.parametrize(
    "kwargs", [{"alpha": -1.0}, {"beta": float("nan")}, {"temperature": 0.0}, {"standardize": "yes"}]
)
def test_dkd_bad_hyperparameters(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        keras_kd.DecoupledDistillationLoss(**kwargs)


@pytest.mark.parametrize("kwargs", [{"gamma": -1.0}, {"beta": float("inf")}, {"temperature": -2.0}])
def test_dist_bad_hyperparameters(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        keras_kd.DISTLoss(**kwargs)
