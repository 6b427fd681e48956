"""The anchors' defects, reproduced on keras 3.15, and keras_kd not sharing them.

Anchors: `keras.distillation` (Keras >= 3.12) and the keras.io knowledge-distillation
example. Each test first shows the anchor's behaviour against an independent NumPy
number, then the same situation with keras_kd.
"""

import keras
import numpy as np
import pytest
from keras import ops

import keras_kd
from _numpy_reference import distillation_loss as np_distillation
from _numpy_reference import log_softmax as np_log_softmax

NUM_FEATURES, NUM_CLASSES = 8, 4


def make_mlp(seed, batchnorm=False, name=None, extra_layers=()):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((NUM_FEATURES,))
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    if batchnorm:
        hidden = keras.layers.BatchNormalization()(hidden)
    outputs = keras.layers.Dense(NUM_CLASSES)(hidden)
    for layer in extra_layers:
        outputs = layer(outputs)
    return keras.Model(inputs, outputs, name=name)


class CallCounter(keras.layers.Layer):
    """Identity layer counting how often its `call` runs (eagerly or while tracing)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls = 0

    def call(self, inputs):
        self.calls += 1
        return inputs


def data(num_examples=64, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(num_examples, NUM_FEATURES)) * 2 + 1).astype("float32")
    return x, rng.integers(0, NUM_CLASSES, num_examples)


X, Y = data()


def sparse_logits_loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def weights_of(model):
    return [np.array(weight) for weight in model.weights]


# --- keras.distillation.LogitsDistillation's default loss -------------------------------


def test_logits_distillation_default_applies_kl_to_raw_scaled_logits():
    """Issue 2's figures: 28.53 from the anchor where the correct value is 5.54.

    The logits: `np.random.default_rng(0)`, teacher then student, normal (8, 10) x 3, T = 3.
    """
    rng = np.random.default_rng(0)
    teacher_logits = (rng.normal(size=(8, 10)) * 3).astype("float32")
    student_logits = (rng.normal(size=(8, 10)) * 3).astype("float32")
    temperature = 3.0

    anchor = keras.distillation.LogitsDistillation(temperature=3)
    # "kl_divergence" resolves to the plain function, not a KLDivergence instance, so
    # the anchor's softmax-and-T^2 branch is skipped.
    assert not isinstance(anchor.loss, keras.losses.KLDivergence)
    anchor_value = float(anchor.compute_loss(teacher_logits, student_logits))

    # What the anchor computes: KL on clip(logits / T, 1e-7, 1), no softmax, no T^2.
    clipped_t = np.clip(teacher_logits.astype(np.float64) / temperature, 1e-7, 1.0)
    clipped_s = np.clip(student_logits.astype(np.float64) / temperature, 1e-7, 1.0)
    defect = np.mean(np.sum(clipped_t * np.log(clipped_t / clipped_s), axis=-1))
    correct = np.mean(np_distillation(teacher_logits, student_logits, temperature))
    assert round(defect, 2) == 28.53
    assert round(correct, 2) == 5.54
    assert anchor_value == pytest.approx(defect, rel=1e-5)

    ours = keras_kd.DistillationLoss(temperature=temperature)
    assert float(ours(teacher_logits, student_logits)) == pytest.approx(correct, rel=1e-5)
    # The anchor is right only when given a KLDivergence instance.
    instance_path = keras.distillation.LogitsDistillation(3, loss=keras.losses.KLDivergence())
    assert float(instance_path.compute_loss(teacher_logits, student_logits)) == pytest.approx(
        correct, rel=1e-4
    )


# --- keras.distillation.Distiller: sample_weight, evaluate, dtypes ------------------------


def make_anchor(teacher, student):
    anchor = keras.distillation.Distiller(
        teacher=teacher,
        student=student,
        distillation_losses=keras.distillation.LogitsDistillation(
            temperature=3.0, loss=keras.losses.KLDivergence()
        ),
        student_loss_weight=0.5,
    )
    anchor.compile(optimizer=keras.optimizers.SGD(0.1), loss=sparse_logits_loss())
    return anchor


def make_ours(teacher, student):
    ours = keras_kd.Distiller(teacher=teacher, student=student, temperature=3.0, alpha=0.5)
    ours.compile(optimizer=keras.optimizers.SGD(0.1), loss=sparse_logits_loss())
    return ours


def test_anchor_distiller_ignores_sample_weight():
    zero_weights = np.zeros(len(X), "float32")
    results = {}
    for name, make in (("anchor", make_anchor), ("ours", make_ours)):
        teacher, student = make_mlp(1), make_mlp(2)
        before = weights_of(student)
        distiller = make(teacher, student)
        history = distiller.fit(
            X, Y, sample_weight=zero_weights, batch_size=len(X), epochs=1, verbose=0
        )
        changed = any(not np.array_equal(old, new) for old, new in zip(before, weights_of(student)))
        results[name] = (history.history["loss"][0], changed)
    anchor_loss, anchor_changed = results["anchor"]
    ours_loss, ours_changed = results["ours"]
    # The anchor: zero weights, yet a positive loss and a student that moved.
    assert anchor_loss > 0.1 and anchor_changed
    # keras_kd: zero weights, zero loss, nothing moves.
    assert ours_loss == 0.0 and not ours_changed

    # The anchor's loss is the same with and without weights.
    anchor = make_anchor(make_mlp(1), make_mlp(2))
    y_pred = anchor.student(X)
    weights = np.linspace(0.0, 2.0, len(X)).astype("float32")
    weighted = float(anchor.compute_loss(X, Y, y_pred, sample_weight=weights))
    unweighted = float(anchor.compute_loss(X, Y, y_pred))
    assert weighted == pytest.approx(unweighted, rel=1e-6)


def test_anchor_evaluate_runs_the_teacher_and_reports_the_combined_loss():
    results = {}
    for name, make in (("anchor", make_anchor), ("ours", make_ours)):
        counter = CallCounter()
        teacher, student = make_mlp(1, extra_layers=[counter]), make_mlp(2)
        distiller = make(teacher, student)
        calls = counter.calls
        loss = distiller.evaluate(X, Y, batch_size=len(X), verbose=0, return_dict=True)["loss"]
        results[name] = (loss, counter.calls - calls)
        student.compile(optimizer="sgd", loss=sparse_logits_loss())
        results[name + "_student"] = student.evaluate(X, Y, batch_size=len(X), verbose=0)
        results[name + "_logits"] = (
            np.asarray(teacher(X), np.float64),
            np.asarray(student(X), np.float64),
        )

    teacher_logits, student_logits = results["anchor_logits"]
    hard = np.mean(-np_log_softmax(student_logits)[np.arange(len(Y)), Y])
    soft = np.mean(np_distillation(teacher_logits, student_logits, 3.0))
    anchor_loss, anchor_teacher_calls = results["anchor"]
    assert anchor_teacher_calls > 0
    assert anchor_loss == pytest.approx(0.5 * hard + 0.5 * soft, rel=1e-4)
    assert results["anchor_student"] == pytest.approx(hard, rel=1e-5)
    assert abs(anchor_loss - results["anchor_student"]) > 0.05

    ours_loss, ours_teacher_calls = results["ours"]
    assert ours_teacher_calls == 0
    assert ours_loss == pytest.approx(results["ours_student"], rel=1e-6)


def test_anchor_needs_equal_dtypes_ours_distils_float32_into_mixed_precision():
    teacher = make_mlp(1)
    keras.config.set_dtype_policy("mixed_float16")  # reset by conftest's fixture
    student = make_mlp(2)
    keras.config.set_dtype_policy("float32")
    with pytest.raises(ValueError, match="dtypes must match"):
        make_anchor(teacher, student)
    ours = keras_kd.Distiller(teacher=teacher, student=student, temperature=3.0, alpha=0.5)
    ours.compile(optimizer=keras.optimizers.Adam(1e-2), loss=sparse_logits_loss())
    history = ours.fit(X, Y, batch_size=16, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


# --- the keras.io example: teacher not frozen, student called with `training` unset --------


class KerasIoDistiller(keras.Model):
    """The keras.io knowledge-distillation example's pattern (Keras 3 version).

    Transcribed: the teacher is assigned as is (not frozen), `compute_loss` calls it
    with training=False but inside the gradient (no stop_gradient), and `call(x)` runs
    `self.student(x)` with no `training` argument.
    """

    def __init__(self, student, teacher):
        super().__init__()
        self.teacher = teacher
        self.student = student

    def compile(
        self, optimizer, metrics, student_loss_fn, distillation_loss_fn, alpha, temperature
    ):
        super().compile(optimizer=optimizer, metrics=metrics)
        self.student_loss_fn = student_loss_fn
        self.distillation_loss_fn = distillation_loss_fn
        self.alpha = alpha
        self.temperature = temperature

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, allow_empty=False):
        teacher_pred = self.teacher(x, training=False)
        student_loss = self.student_loss_fn(y, y_pred)
        distillation_loss = self.distillation_loss_fn(
            ops.softmax(teacher_pred / self.temperature, axis=1),
            ops.softmax(y_pred / self.temperature, axis=1),
        ) * (self.temperature**2)
        return self.alpha * student_loss + (1 - self.alpha) * distillation_loss

    def call(self, x):
        return self.student(x)


def _moving_statistics(model):
    return [np.array(w) for w in model.non_trainable_weights if "moving" in w.path]


def _trainable(model):
    return [np.array(w) for w in model.trainable_weights]


def test_keras_io_pattern_trains_its_teacher_and_freezes_student_batchnorm():
    def run(build):
        teacher = make_mlp(1, batchnorm=True)
        student = make_mlp(2, batchnorm=True)
        teacher_before, student_stats_before = weights_of(teacher), _moving_statistics(student)
        distiller = build(teacher, student)
        distiller.fit(X, Y, batch_size=16, epochs=1, verbose=0)
        teacher_changed = [
            not np.array_equal(old, np.array(new))
            for old, new in zip(teacher_before, teacher.weights)
        ]
        stats_changed = [
            not np.array_equal(old, new)
            for old, new in zip(student_stats_before, _moving_statistics(student))
        ]
        return teacher, teacher_changed, stats_changed

    def keras_io(teacher, student):
        distiller = KerasIoDistiller(student=student, teacher=teacher)
        distiller.compile(
            optimizer=keras.optimizers.Adam(1e-2),
            metrics=["accuracy"],
            student_loss_fn=sparse_logits_loss(),
            distillation_loss_fn=keras.losses.KLDivergence(),
            alpha=0.1,
            temperature=3,
        )
        return distiller

    def ours(teacher, student):
        distiller = keras_kd.Distiller(teacher=teacher, student=student, temperature=3.0, alpha=0.9)
        distiller.compile(optimizer=keras.optimizers.Adam(1e-2), loss=sparse_logits_loss())
        return distiller

    # keras.io: the teacher's kernels move (the KL's gradient reaches them), its own
    # BatchNorm statistics do not (training=False); the student's BatchNorm statistics
    # never update, since `self.student(x)` is called with `training` unset.
    teacher, teacher_changed, stats_changed = run(keras_io)
    assert teacher.trainable
    assert any(teacher_changed)
    assert len(stats_changed) == 2 and not any(stats_changed)

    # keras_kd: a bit-identical teacher, and a student whose statistics do update.
    teacher, teacher_changed, stats_changed = run(ours)
    assert not teacher.trainable
    assert not any(teacher_changed)
    assert len(stats_changed) == 2 and all(stats_changed)
