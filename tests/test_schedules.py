"""keras_kd.schedules: the Distiller's temperature, alpha and term weights during fit.

Each epoch is one full-batch step, so each epoch's logged losses are checked against
NumPy at the scheduled values, from the models' outputs recorded just before the step.
"""

import keras
import numpy as np
import pytest
from test_distiller import CallCounter
from test_distiller import X
from test_distiller import Y
from test_distiller import make_mlp
from test_distiller import np_log_softmax
from test_distiller import predict
from test_distiller import sparse_logits_loss
from test_modern_losses import np_dkd_authors
from test_modern_losses import np_kd

import keras_kd
from keras_kd import Distiller
from keras_kd.schedules import DistillationSchedule
from keras_kd.schedules import LinearDecay
from keras_kd.schedules import LinearWarmup


class RecordOutputs(keras.callbacks.Callback):
    """Teacher and student logits before each step (after the schedule has run)."""

    def __init__(self, teacher, student, counter=None):
        super().__init__()
        self.teacher, self.student, self.counter = teacher, student, counter
        self.outputs, self.calls = [], []

    def on_train_batch_begin(self, batch, logs=None):
        if self.counter is not None:
            self.calls.append(self.counter.calls)
        self.outputs.append((predict(self.teacher, X), predict(self.student, X)))


def test_linear_warmup_and_decay_values():
    warmup = LinearWarmup(2.0, 4)
    assert [warmup(t) for t in range(6)] == [0.5, 1.0, 1.5, 2.0, 2.0, 2.0]
    decay = LinearDecay(8.0, 4.0, 2)
    assert [decay(t) for t in range(4)] == [8.0, 6.0, 4.0, 4.0]
    with pytest.raises(ValueError, match="warmup"):
        LinearWarmup(1.0, 0)
    with pytest.raises(ValueError, match="start"):
        LinearDecay(float("nan"), 1.0, 3)


def test_epoch_schedules_set_each_epochs_objective_without_retracing(tmp_path):
    counter = CallCounter()
    teacher, student = make_mlp(1), make_mlp(2, extra_layers=[counter])
    distiller = Distiller(
        teacher,
        student,
        alpha=0.5,
        distillation_loss=keras_kd.DecoupledDistillationLoss(temperature=8.0, beta=2.0),
    )
    distiller.compile(optimizer=keras.optimizers.SGD(0.1), loss=sparse_logits_loss())
    schedule = DistillationSchedule(
        temperature=LinearDecay(8.0, 4.0, 2),
        term_weights={"decoupled_distillation_loss": LinearWarmup(1.0, 3)},
    )
    recorder = RecordOutputs(teacher, student, counter)
    history = distiller.fit(
        X, Y, batch_size=len(X), epochs=4, shuffle=False, verbose=0, callbacks=[schedule, recorder]
    )
    temperatures, weights = [8.0, 6.0, 4.0, 4.0], [1 / 3, 2 / 3, 1.0, 1.0]
    for epoch, (teacher_logits, student_logits) in enumerate(recorder.outputs):
        t, w = temperatures[epoch], weights[epoch]
        dkd = np.mean(np_dkd_authors(Y, teacher_logits, student_logits, t, 1.0, 2.0))
        hard = np.mean(-np_log_softmax(student_logits)[np.arange(len(Y)), Y])
        np.testing.assert_allclose(history.history["decoupled_distillation_loss"][epoch], dkd, rtol=1e-5)
        np.testing.assert_allclose(history.history["loss"][epoch], 0.5 * hard + 0.5 * w * dkd, rtol=1e-5)
    # After the first step's trace, each epoch adds only the recorder's eager predict:
    # the train step is not retraced when the schedule changes T and the weight.
    assert np.diff(recorder.calls[1:]).tolist() == [1, 1]
    assert counter.calls == recorder.calls[-1] + 1
    # The last values are saved with the model, terms' config included.
    path = tmp_path / "scheduled.keras"
    distiller.save(path)
    loaded = keras.models.load_model(path, custom_objects={"CallCounter": CallCounter})
    assert loaded.temperature == 4.0
    assert loaded.term_weights == {"decoupled_distillation_loss": 1.0}
    assert loaded.distillation_terms["decoupled_distillation_loss"].temperature == 4.0


def test_step_schedule_on_alpha_with_a_keras_schedule():
    teacher, student = make_mlp(1), make_mlp(2)
    distiller = Distiller(teacher, student, temperature=3.0, alpha=0.0)
    distiller.compile(optimizer=keras.optimizers.SGD(0.1), loss=sparse_logits_loss())
    alpha = keras.optimizers.schedules.PolynomialDecay(0.0, 3, end_learning_rate=0.9)
    seen = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_begin=lambda batch, logs: seen.append(distiller.alpha)
    )
    recorder = RecordOutputs(teacher, student)
    history = distiller.fit(
        X, Y, batch_size=16, epochs=1, shuffle=False, verbose=0,
        callbacks=[DistillationSchedule(alpha=alpha, unit="step"), record, recorder],
    )
    np.testing.assert_allclose(seen, [0.0, 0.3, 0.6, 0.9], atol=1e-7)
    # The epoch's loss is the mean of the 4 steps' losses at their alphas.
    losses = []
    for step, (teacher_logits, student_logits) in enumerate(recorder.outputs):
        rows = slice(16 * step, 16 * (step + 1))
        kd = np.mean(np_kd(teacher_logits[rows], student_logits[rows], 3.0))
        hard = np.mean(-np_log_softmax(student_logits[rows])[np.arange(16), Y[rows]])
        losses.append((1 - seen[step]) * hard + seen[step] * kd)
    np.testing.assert_allclose(history.history["loss"][0], np.mean(losses), rtol=1e-5)


def test_step_schedule_counts_optimizer_steps_under_steps_per_execution():
    # Keras calls the batch hooks once per execution of 2 steps: t must still be the
    # optimizer's step count (0, 2, 4, ...), not the number of calls (0, 1, 2, ...).
    distiller = Distiller(make_mlp(1), make_mlp(2), temperature=3.0, alpha=0.0)
    distiller.compile(optimizer=keras.optimizers.SGD(0.1), loss=sparse_logits_loss(),
                      steps_per_execution=2)
    seen = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_begin=lambda batch, logs: seen.append(distiller.alpha)
    )
    distiller.fit(X, Y, batch_size=8, epochs=1, shuffle=False, verbose=0,
                  callbacks=[DistillationSchedule(alpha=lambda t: 0.1 * t, unit="step"), record])
    np.testing.assert_allclose(seen, [0.0, 0.2, 0.4, 0.6], atol=1e-7)


def test_a_schedule_out_of_range_raises_before_training():
    distiller = Distiller(make_mlp(1), make_mlp(2), alpha=0.5)
    distiller.compile(optimizer="sgd", loss=sparse_logits_loss())
    before = [np.array(w) for w in distiller.student.weights]
    with pytest.raises(ValueError, match="alpha"):
        distiller.fit(X, Y, verbose=0, callbacks=[DistillationSchedule(alpha=lambda t: 2.0)])
    for old, new in zip(before, distiller.student.weights):
        np.testing.assert_array_equal(old, np.array(new))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({}, "at least one"),
        ({"alpha": 0.5}, "callable"),
        ({"term_weights": [LinearWarmup(1.0, 2)]}, "dict"),
        ({"alpha": LinearWarmup(1.0, 2), "unit": "batch"}, "unit"),
    ],
)
def test_bad_schedules(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DistillationSchedule(**kwargs)


def test_unknown_term_name_is_named():
    distiller = Distiller(make_mlp(1), make_mlp(2))
    distiller.compile(optimizer="sgd", loss=sparse_logits_loss())
    schedule = DistillationSchedule(term_weights={"dkd": LinearWarmup(1.0, 2)})
    with pytest.raises(ValueError, match="dkd"):
        distiller.fit(X, Y, verbose=0, callbacks=[schedule])
