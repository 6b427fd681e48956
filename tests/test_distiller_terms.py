"""Distiller hyperparameters as properties, and pluggable distillation terms.

Each logged number is checked against NumPy (float64) from the models' outputs before
the step; the DKD and DIST references are the transcriptions of the authors' code in
tests/test_modern_losses.py.
"""

import keras
import numpy as np
import pytest
from test_distiller import CallCounter
from test_distiller import X
from test_distiller import Y
from test_distiller import make_mlp
from test_distiller import np_log_softmax
from test_distiller import one_step_logs
from test_distiller import predict
from test_distiller import sparse_logits_loss
from test_modern_losses import np_dist_authors
from test_modern_losses import np_dkd_authors
from test_modern_losses import np_kd

import keras_kd
from keras_kd import Distiller


def np_hard(labels, student_logits):
    return -np_log_softmax(student_logits)[np.arange(len(labels)), labels]


def compiled(distiller, loss=None, learning_rate=0.1):
    distiller.compile(
        optimizer=keras.optimizers.SGD(learning_rate),
        loss=sparse_logits_loss() if loss is None else loss,
    )
    return distiller


# --- temperature / alpha / term weights as properties ------------------------------


def test_assigned_temperature_and_alpha_take_effect_at_the_next_step_without_retracing():
    counter = CallCounter()
    teacher, student = make_mlp(1), make_mlp(2, extra_layers=[counter])
    distiller = compiled(Distiller(teacher, student, temperature=2.0, alpha=0.5))
    one_step_logs(distiller, X, Y)

    distiller.temperature, distiller.alpha = 8.0, 0.2
    teacher_logits, student_logits = predict(teacher, X), predict(student, X)
    calls = counter.calls  # the eager predict above counted too
    logs = one_step_logs(distiller, X, Y)
    assert counter.calls == calls  # the same traced step ran, with the new values
    soft = np.mean(np_kd(teacher_logits, student_logits, 8.0))
    hard = np.mean(np_hard(Y, student_logits))
    np.testing.assert_allclose(logs["distillation_loss"], soft, rtol=1e-5)
    np.testing.assert_allclose(logs["loss"], 0.8 * hard + 0.2 * soft, rtol=1e-5)
    assert distiller.get_config()["temperature"] == 8.0
    assert distiller.distillation_terms["distillation_loss"].temperature == 8.0


@pytest.mark.parametrize(
    "name, value",
    [
        ("temperature", -5.0),
        ("temperature", float("nan")),
        ("temperature", "4"),
        ("alpha", 7.0),
        ("alpha", -0.1),
        ("alpha", None),
    ],
)
def test_invalid_assignments_raise_and_change_nothing(name, value):
    distiller = Distiller(make_mlp(1), make_mlp(2), temperature=3.0, alpha=0.5)
    with pytest.raises(ValueError, match=name):
        setattr(distiller, name, value)
    assert (distiller.temperature, distiller.alpha) == (3.0, 0.5)
    np.testing.assert_allclose(float(distiller._temperature_variable.value), 3.0)


def test_alpha_below_one_needs_a_compiled_hard_loss():
    distiller = Distiller(make_mlp(1), make_mlp(2), alpha=1.0)
    distiller.compile(optimizer="sgd", loss=None)
    with pytest.raises(ValueError, match="needs `loss`"):
        distiller.alpha = 0.5
    assert distiller.alpha == 1.0


def test_term_weights_are_validated():
    distiller = Distiller(make_mlp(1), make_mlp(2))
    with pytest.raises(ValueError, match="finite number >= 0"):
        distiller.term_weights = {"distillation_loss": -1.0}
    with pytest.raises(ValueError, match="keyed by term name"):
        distiller.term_weights = {"dkd": 1.0}
    distiller.term_weights = {"distillation_loss": 0.5}
    assert distiller.term_weights == {"distillation_loss": 0.5}


def test_reloaded_distiller_trains_with_the_assigned_objective(tmp_path):
    teacher, student = make_mlp(1), make_mlp(2)
    distiller = compiled(Distiller(teacher, student, temperature=2.0, alpha=0.5))
    one_step_logs(distiller, X, Y)
    distiller.temperature, distiller.alpha = 6.0, 0.3
    path = tmp_path / "distiller.keras"
    distiller.save(path)
    loaded = keras.models.load_model(path)
    assert (loaded.temperature, loaded.alpha) == (6.0, 0.3)

    teacher_logits, student_logits = predict(teacher, X), predict(student, X)
    expected_soft = np.mean(np_kd(teacher_logits, student_logits, 6.0))
    expected = 0.7 * np.mean(np_hard(Y, student_logits)) + 0.3 * expected_soft
    for model in (distiller, loaded):
        logs = one_step_logs(model, X, Y)
        np.testing.assert_allclose(logs["distillation_loss"], expected_soft, rtol=1e-5)
        np.testing.assert_allclose(logs["loss"], expected, rtol=1e-5)
    for a, b in zip(distiller.student.weights, loaded.student.weights):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-6, atol=1e-7)


# --- pluggable terms ---------------------------------------------------------------


def test_dkd_and_dist_terms_weighted_with_alpha_match_numpy():
    teacher, student = make_mlp(1), make_mlp(2)
    teacher_logits, student_logits = predict(teacher, X), predict(student, X)
    distiller = compiled(
        Distiller(
            teacher,
            student,
            alpha=0.6,
            distillation_loss=[
                keras_kd.DecoupledDistillationLoss(temperature=4.0, alpha=1.0, beta=2.0),
                (keras_kd.DISTLoss(temperature=4.0), 2.0),
            ],
        )
    )
    assert distiller.temperature == 4.0
    weights = np.random.default_rng(0).uniform(0.5, 1.5, len(X))
    logs = one_step_logs(distiller, X, Y, sample_weight=weights)

    dkd = np.sum(weights * np_dkd_authors(Y, teacher_logits, student_logits, 4.0, 1.0, 2.0)) / len(X)
    hard = np.sum(weights * np_hard(Y, student_logits)) / len(X)
    np.testing.assert_allclose(logs["decoupled_distillation_loss"], dkd, rtol=1e-5)
    np.testing.assert_allclose(logs["student_loss"], hard, rtol=1e-5)
    # DIST's weighted form is tested in test_modern_losses; here it must be that value.
    dist = float(keras_kd.DISTLoss(4.0)(teacher_logits, student_logits, sample_weight=weights))
    np.testing.assert_allclose(logs["dist_loss"], dist, rtol=1e-5)
    np.testing.assert_allclose(logs["loss"], 0.4 * hard + 0.6 * (dkd + 2.0 * dist), rtol=1e-5)
    assert "distillation_loss" not in logs


def test_dist_term_without_weights_is_the_authors_number():
    teacher, student = make_mlp(1), make_mlp(2)
    teacher_logits, student_logits = predict(teacher, X), predict(student, X)
    distiller = compiled(
        Distiller(teacher, student, alpha=1.0, distillation_loss=keras_kd.DISTLoss(2.0)), loss=None
    )
    logs = one_step_logs(distiller, X, Y)
    expected = np_dist_authors(teacher_logits, student_logits, 2.0, 1.0, 1.0)
    np.testing.assert_allclose(logs["dist_loss"], expected, rtol=1e-5)
    np.testing.assert_allclose(logs["loss"], expected, rtol=1e-5)


@keras.saving.register_keras_serializable(package="keras_kd_tests")
class SquaredProbabilityGap(keras.losses.Loss):
    """A user's own term: a plain keras.losses.Loss on (teacher logits, student logits)."""

    def call(self, y_true, y_pred):
        gap = keras.ops.softmax(y_pred) - keras.ops.softmax(y_true)
        return keras.ops.sum(keras.ops.square(gap), axis=-1)


def test_a_users_plain_loss_is_a_term_and_saves(tmp_path):
    teacher, student = make_mlp(1), make_mlp(2)
    teacher_logits, student_logits = predict(teacher, X), predict(student, X)
    distiller = compiled(
        Distiller(
            teacher,
            student,
            temperature=2.0,
            alpha=0.5,
            distillation_loss=[keras_kd.DistillationLoss(2.0), (SquaredProbabilityGap(name="gap"), 3.0)],
        )
    )
    path = tmp_path / "terms.keras"
    distiller.save(path)
    logs = one_step_logs(distiller, X, Y)
    p_s = np.exp(np_log_softmax(student_logits))
    p_t = np.exp(np_log_softmax(teacher_logits))
    gap = np.mean(np.sum((p_s - p_t) ** 2, -1))
    kd = np.mean(np_kd(teacher_logits, student_logits, 2.0))
    np.testing.assert_allclose(logs["gap"], gap, rtol=1e-5)
    hard = np.mean(np_hard(Y, student_logits))
    np.testing.assert_allclose(logs["loss"], 0.5 * hard + 0.5 * (kd + 3.0 * gap), rtol=1e-5)
    loaded = keras.models.load_model(path)
    assert loaded.term_weights == {"distillation_loss": 1.0, "gap": 3.0}
    assert isinstance(loaded.distillation_terms["gap"], SquaredProbabilityGap)


def test_standardized_default_term():
    teacher, student = make_mlp(1), make_mlp(2)
    teacher_logits, student_logits = predict(teacher, X), predict(student, X)

    def standardize(z):
        return (z - z.mean(-1, keepdims=True)) / (1e-7 + z.std(-1, ddof=1, keepdims=True))

    distiller = compiled(Distiller(teacher, student, temperature=2.0, standardize=True))
    logs = one_step_logs(distiller, X, Y)
    expected = np.mean(np_kd(standardize(teacher_logits), standardize(student_logits), 2.0))
    np.testing.assert_allclose(logs["distillation_loss"], expected, rtol=1e-5)


def test_cached_teacher_logits_feed_every_logit_term():
    teacher, student = make_mlp(1), make_mlp(2)
    terms = lambda: [keras_kd.DecoupledDistillationLoss(4.0), keras_kd.DISTLoss(4.0)]  # noqa: E731
    live = compiled(Distiller(teacher, student, distillation_loss=terms()))
    logs_live = one_step_logs(live, X, Y)
    cached_student = make_mlp(2)
    cached = compiled(Distiller(teacher, cached_student, distillation_loss=terms()))
    y = {"labels": Y, "teacher_logits": predict(teacher, X).astype("float32")}
    logs_cached = one_step_logs(cached, X, y)
    for key in ("loss", "decoupled_distillation_loss", "dist_loss", "student_loss"):
        np.testing.assert_allclose(logs_cached[key], logs_live[key], rtol=1e-5)


def test_dkd_without_labels_says_so():
    teacher, student = make_mlp(1), make_mlp(2)
    distiller = compiled(
        Distiller(teacher, student, alpha=1.0, distillation_loss=keras_kd.DecoupledDistillationLoss()),
        loss=None,
    )
    with pytest.raises(ValueError, match="needs labels"):
        distiller.fit(X, {"teacher_logits": predict(teacher, X).astype("float32")}, verbose=0)


def test_evaluate_drops_every_term_log():
    distiller = compiled(
        Distiller(make_mlp(1), make_mlp(2), distillation_loss=keras_kd.DISTLoss(4.0))
    )
    results = distiller.evaluate(X, Y, verbose=0, return_dict=True)
    assert set(results) == {"loss"}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"temperature": 2.0, "distillation_loss": keras_kd.DISTLoss(4.0)}, "differs"),
        (
            {"distillation_loss": [keras_kd.DISTLoss(1.0), keras_kd.DecoupledDistillationLoss(4.0)]},
            "different temperatures",
        ),
        ({"distillation_loss": [keras_kd.DISTLoss(), keras_kd.DISTLoss()]}, "must differ"),
        ({"distillation_loss": [(keras_kd.DISTLoss(), -1.0)]}, "finite number >= 0"),
        ({"distillation_loss": ["kl_divergence"]}, "keras.losses.Loss"),
        ({"distillation_loss": keras_kd.DISTLoss(), "standardize": True}, "standardize"),
    ],
)
def test_bad_terms(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Distiller(make_mlp(1), make_mlp(2), **kwargs)


def test_single_term_takes_its_own_temperature():
    distiller = Distiller(make_mlp(1), make_mlp(2), distillation_loss=keras_kd.DISTLoss(1.0))
    assert distiller.temperature == 1.0
    assert Distiller(make_mlp(1), make_mlp(2)).temperature == 4.0


class TemperatureEcho(keras_kd.DistillationTerm):
    """A DistillationTerm subclass whose per-example loss is the temperature it receives."""

    def __init__(self, temperature=3.0, name="echo", **kwargs):
        super().__init__(temperature=temperature, name=name, **kwargs)

    def compute(self, teacher_logits, student_logits, temperature, labels=None):
        return keras.ops.zeros_like(student_logits[:, 0]) + temperature


def test_a_distillation_term_subclass_follows_the_distillers_temperature():
    distiller = compiled(Distiller(make_mlp(1), make_mlp(2), distillation_loss=TemperatureEcho()))
    assert one_step_logs(distiller, X, Y)["echo"] == pytest.approx(3.0)
    distiller.temperature = 7.5
    assert one_step_logs(distiller, X, Y)["echo"] == pytest.approx(7.5)
    # Standalone, the term uses its own temperature (kept equal to the Distiller's).
    term = distiller.distillation_terms["echo"]
    assert float(term(np.zeros((2, 3)), np.zeros((2, 3)))) == pytest.approx(7.5)
