"""Multi-output distillation: a two-head functional teacher and student, output by output.

The logged and total losses are checked against NumPy (float64) from the models'
outputs before the step.
"""

import keras
import numpy as np
import pytest
from test_distiller import X
from test_distiller import Y
from test_distiller import np_log_softmax
from test_distiller import one_step_logs
from test_modern_losses import np_dkd_authors
from test_modern_losses import np_kd

import keras_kd
from keras_kd import Distiller

AUX_CLASSES = 3
Y_AUX = (Y + 1) % AUX_CLASSES


def two_heads(seed, hidden, as_dict=True, aux_activation=None):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((X.shape[1],))
    features = keras.layers.Dense(hidden, activation="relu")(inputs)
    main = keras.layers.Dense(4, name="main")(features)
    aux = keras.layers.Dense(AUX_CLASSES, activation=aux_activation, name="aux")(features)
    return keras.Model(inputs, {"main": main, "aux": aux} if as_dict else [main, aux])


def outputs_of(model):
    outputs = model(X, training=False)
    if isinstance(outputs, dict):
        return {key: np.asarray(value, np.float64) for key, value in outputs.items()}
    return dict(zip(["main", "aux"], (np.asarray(value, np.float64) for value in outputs)))


def np_ce(labels, logits):
    return -np_log_softmax(logits)[np.arange(len(labels)), labels]


def sparse_ce():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.mark.parametrize("as_dict", [True, False], ids=["dict", "list"])
def test_each_output_distils_with_its_own_term_and_hard_loss(as_dict):
    teacher, student = two_heads(1, 32, as_dict), two_heads(2, 8, as_dict)
    t, s = outputs_of(teacher), outputs_of(student)
    distiller = Distiller(
        teacher,
        student,
        alpha=0.6,
        distillation_loss={
            "main": keras_kd.DecoupledDistillationLoss(temperature=3.0, beta=2.0),
            "aux": [(keras_kd.DistillationLoss(3.0), 0.5)],
        },
    )
    if as_dict:
        loss, y = {"main": sparse_ce(), "aux": sparse_ce()}, {"main": Y, "aux": Y_AUX}
    else:
        loss, y = [sparse_ce(), sparse_ce()], [Y, Y_AUX]
    distiller.compile(optimizer=keras.optimizers.SGD(0.1), loss=loss, loss_weights=None)
    logs = one_step_logs(distiller, X, y)

    dkd = np.mean(np_dkd_authors(Y, t["main"], s["main"], 3.0, 1.0, 2.0))
    kd = np.mean(np_kd(t["aux"], s["aux"], 3.0))
    hard = np.mean(np_ce(Y, s["main"])) + np.mean(np_ce(Y_AUX, s["aux"]))
    np.testing.assert_allclose(logs["main_decoupled_distillation_loss"], dkd, rtol=1e-5)
    np.testing.assert_allclose(logs["aux_distillation_loss"], kd, rtol=1e-5)
    np.testing.assert_allclose(logs["student_loss"], hard, rtol=1e-5)
    np.testing.assert_allclose(logs["loss"], 0.4 * hard + 0.6 * (dkd + 0.5 * kd), rtol=1e-5)
    assert distiller.term_weights == {"aux_distillation_loss": 0.5, "main_decoupled_distillation_loss": 1.0}


def test_default_hinton_on_every_output_none_skips_and_evaluate_is_the_students(tmp_path):
    teacher, student = two_heads(1, 32), two_heads(2, 8)
    t, s = outputs_of(teacher), outputs_of(student)
    distiller = Distiller(teacher, student, temperature=2.0, alpha=0.5)
    distiller.compile(optimizer="sgd", loss={"main": sparse_ce(), "aux": sparse_ce()})
    assert sorted(distiller.term_weights) == ["aux_distillation_loss", "main_distillation_loss"]

    skipping = Distiller(
        teacher, two_heads(2, 8), temperature=2.0, alpha=0.5,
        distillation_loss={"main": keras_kd.DistillationLoss(2.0), "aux": None},
    )
    skipping.compile(optimizer=keras.optimizers.SGD(0.1), loss={"main": sparse_ce(), "aux": sparse_ce()})
    logs = one_step_logs(skipping, X, {"main": Y, "aux": Y_AUX})
    assert "aux_distillation_loss" not in logs
    hard = np.mean(np_ce(Y, s["main"])) + np.mean(np_ce(Y_AUX, s["aux"]))
    kd = np.mean(np_kd(t["main"], s["main"], 2.0))
    np.testing.assert_allclose(logs["loss"], 0.5 * hard + 0.5 * kd, rtol=1e-5)

    student.compile(loss={"main": sparse_ce(), "aux": sparse_ce()})
    y = {"main": Y, "aux": Y_AUX}
    ours = distiller.evaluate(X, y, verbose=0, return_dict=True)
    theirs = student.evaluate(X, y, verbose=0, return_dict=True)
    assert set(ours) == set(theirs)
    for key in theirs:
        np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-6)

    path = tmp_path / "multi.keras"
    skipping.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.term_weights == {"main_distillation_loss": 1.0}


@pytest.mark.parametrize(
    "teacher_kwargs, kwargs, match",
    [
        ({"hidden": 32, "aux_activation": "softmax"}, {}, "logits on every output"),
        ({"hidden": 32}, {"distillation_loss": keras_kd.DISTLoss()}, "dict from output name"),
        ({"hidden": 32}, {"distillation_loss": {"head": keras_kd.DISTLoss()}}, "head"),
        ({"hidden": 32}, {"distillation_loss": {"main": None, "aux": None}}, "nothing to distil"),
    ],
)
def test_bad_multi_output_setups(teacher_kwargs, kwargs, match):
    with pytest.raises(ValueError, match=match):
        Distiller(two_heads(1, **teacher_kwargs), two_heads(2, 8), **kwargs)


def test_teacher_with_other_outputs_is_rejected():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((X.shape[1],))
    single = keras.Model(inputs, keras.layers.Dense(4)(inputs))
    with pytest.raises(ValueError, match="same outputs"):
        Distiller(single, two_heads(2, 8))
