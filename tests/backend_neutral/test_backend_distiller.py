"""The Distiller on the backend of this process: training, evaluation, saving, vs NumPy.

TensorFlow trains through the Distiller's own `train_step`; JAX and PyTorch through
Keras' train steps calling `Distiller.compute_loss`. Both must give the seed formula's
loss and gradient, computed here in NumPy for a Dense-ReLU-Dense student.
"""

import os

import keras
import numpy as np
import pytest

import _backend_reference as ref
from _backend_numbers import build_models
from _backend_numbers import compiled_distiller
from keras_kd.distiller import LABELS
from keras_kd.distiller import TEACHER_LOGITS

BATCH = slice(0, ref.BATCH_SIZE)


@pytest.fixture
def arrays():
    keras.utils.set_random_seed(0)
    return ref.inputs()


def _numpy_step(arrays):
    """Student weights after one SGD step on the first batch, by hand (float64).

    With g = dL/dz per example, `(1 - alpha) (softmax(z) - y) + alpha T (softmax(z/T) -
    softmax(t/T))`, weighted by w_i / N: dW2 = h^T g, db2 = sum g; back through the
    ReLU into W1 and b1, plus the L2 kernel (2 l W1) and activity (2 l h / N) terms.
    """
    teacher_weights, student_weights = ref.teacher_weights(arrays), ref.student_weights(arrays)
    x, labels = arrays["x"][BATCH].astype(np.float64), arrays["labels"][BATCH]
    weights = arrays["sample_weight"][BATCH][:, None]
    _, teacher_logits = ref.mlp(teacher_weights, x)
    hidden, student_logits = ref.mlp(student_weights, x)
    n = len(x)
    hard = ref.softmax(student_logits) - ref.one_hot(labels, ref.NUM_CLASSES)
    soft = ref.kd_gradient(teacher_logits, student_logits, ref.TEMPERATURE)
    d_logits = weights * ((1 - ref.ALPHA) * hard + ref.ALPHA * soft) / n
    w1, b1, w2, b2 = (np.asarray(w, dtype=np.float64) for w in student_weights)
    d_hidden = (d_logits @ w2.T + 2 * ref.ACTIVITY_L2 * hidden / n) * (hidden > 0)
    gradients = [
        x.T @ d_hidden + 2 * ref.KERNEL_L2 * w1,
        d_hidden.sum(axis=0),
        hidden.T @ d_logits,
        d_logits.sum(axis=0),
    ]
    return [w - ref.LEARNING_RATE * g for w, g in zip((w1, b1, w2, b2), gradients)]


def test_one_training_step_matches_numpy_loss_and_gradient(arrays):
    teacher, student = build_models(arrays)
    distiller = compiled_distiller(teacher, student)
    logs = distiller.train_on_batch(
        arrays["x"][BATCH],
        arrays["labels"][BATCH],
        sample_weight=arrays["sample_weight"][BATCH],
        return_dict=True,
    )
    expected_loss = ref.distillation_objective(
        ref.teacher_weights(arrays),
        ref.student_weights(arrays),
        arrays["x"][BATCH],
        arrays["labels"][BATCH],
        arrays["sample_weight"][BATCH],
    )
    assert logs["loss"] == pytest.approx(expected_loss, rel=1e-5)
    assert set(logs) == {"loss", "student_loss", "distillation_loss", "ece"}
    for actual, expected in zip(student.get_weights(), _numpy_step(arrays)):
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)
    for actual, expected in zip(teacher.get_weights(), ref.teacher_weights(arrays)):
        np.testing.assert_array_equal(actual, expected)


def test_cached_teacher_logits_in_y_train_exactly_like_the_live_teacher(arrays):
    x, labels = arrays["x"][BATCH], arrays["labels"][BATCH]
    teacher, student = build_models(arrays)
    cached = {LABELS: labels, TEACHER_LOGITS: ref.mlp(ref.teacher_weights(arrays), x)[1]}
    compiled_distiller(teacher, student).train_on_batch(x, cached)
    live_teacher, live_student = build_models(arrays)
    compiled_distiller(live_teacher, live_student).train_on_batch(x, labels)
    for actual, expected in zip(student.get_weights(), live_student.get_weights()):
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)


def test_evaluate_equals_student_evaluate_and_numpy_with_regularizers(arrays):
    """evaluate runs the student only: hard loss + the student's regularization, on
    every backend (JAX hands the activity losses over from its stateless forward)."""
    teacher, student = build_models(arrays)
    distiller = compiled_distiller(teacher, student)
    x, labels = arrays["x"], arrays["labels"]
    # One batch, so Keras' mean over batches is the plain formula.
    result = distiller.evaluate(x, labels, batch_size=len(x), verbose=0, return_dict=True)
    assert set(result) == {"loss", "ece"}
    student.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert result["loss"] == pytest.approx(
        student.evaluate(x, labels, batch_size=len(x), verbose=0), rel=1e-6
    )
    hidden, logits = ref.mlp(ref.student_weights(arrays), x)
    expected = (
        np.mean(ref.cross_entropy(labels, logits))
        + ref.KERNEL_L2 * np.sum(np.square(ref.student_weights(arrays)[0]))
        + ref.ACTIVITY_L2 * np.sum(np.square(hidden)) / len(x)
    )
    assert result["loss"] == pytest.approx(expected, rel=1e-5)


def test_fit_predict_save_reload_and_resume(arrays, tmp_path):
    x, labels, weights = arrays["x"], arrays["labels"], arrays["sample_weight"]
    teacher, student = build_models(arrays)
    distiller = compiled_distiller(teacher, student)
    history = distiller.fit(
        x, labels, sample_weight=weights, batch_size=ref.BATCH_SIZE, epochs=3, shuffle=False,
        verbose=0,
    )
    losses = history.history["loss"]
    assert losses[-1] < losses[0]
    predictions = distiller.predict(x, verbose=0)
    np.testing.assert_allclose(predictions, student.predict(x, verbose=0), atol=1e-6)
    np.testing.assert_allclose(predictions, ref.mlp(student.get_weights(), x)[1], atol=1e-5)

    path = os.path.join(tmp_path, "distiller.keras")
    distiller.save(path)
    reloaded = keras.saving.load_model(path)
    assert (reloaded.temperature, reloaded.alpha) == (ref.TEMPERATURE, ref.ALPHA)
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), predictions, atol=1e-6)
    for actual, expected in zip(reloaded.teacher.get_weights(), ref.teacher_weights(arrays)):
        np.testing.assert_array_equal(actual, expected)
    # The reloaded Distiller resumes with its optimizer state: one more epoch on each
    # ends at the same weights.
    for model in (distiller, reloaded):
        model.fit(x, labels, sample_weight=weights, batch_size=ref.BATCH_SIZE, epochs=1,
                  shuffle=False, verbose=0)
    for actual, expected in zip(reloaded.student.get_weights(), student.get_weights()):
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
def test_short_distillation_with_jit_compile_on_an_accelerator(arrays):
    """GPU smoke test: compiled (XLA on TF/JAX, torch.compile on PyTorch) training."""
    x, labels = arrays["x"], arrays["labels"]
    teacher, student = build_models(arrays)
    distiller = compiled_distiller(teacher, student, jit_compile=True)
    history = distiller.fit(x, labels, batch_size=ref.BATCH_SIZE, epochs=5, shuffle=False,
                            verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    for actual, expected in zip(teacher.get_weights(), ref.teacher_weights(arrays)):
        np.testing.assert_array_equal(actual, expected)
    # TF32 matmuls on recent GPUs: agreement to ~1e-3 relative, not float32's 1e-6.
    np.testing.assert_allclose(
        distiller.predict(x, verbose=0), ref.mlp(student.get_weights(), x)[1], rtol=1e-2,
        atol=1e-2,
    )


def test_scheduled_temperature_and_alpha_take_effect_at_the_next_step(arrays):
    """Under JAX, fit keeps variables in its own state: a schedule's assignment must reach it.

    One full-batch step per epoch, the soft term (unweighted, so the student's
    regularizers do not enter it) checked against NumPy at each epoch's temperature.
    """
    from keras_kd.schedules import DistillationSchedule

    teacher, student = build_models(arrays)
    distiller = compiled_distiller(teacher, student)
    temperatures, alphas = [2.0, 5.0, 9.0], [0.2, 0.6, 1.0]
    outputs = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            model = self.model  # syncs the JAX state into the variables first
            x = arrays["x"]
            outputs.append([keras.ops.convert_to_numpy(m(x, training=False)) for m in model.teachers + [model.student]])

    schedule = DistillationSchedule(
        temperature=lambda epoch: temperatures[epoch], alpha=lambda epoch: alphas[epoch]
    )
    history = distiller.fit(
        arrays["x"], arrays["labels"], batch_size=len(arrays["x"]), epochs=3, shuffle=False,
        verbose=0, callbacks=[schedule, Record()],
    )
    for epoch, (teacher_logits, student_logits) in enumerate(outputs):
        expected = np.mean(ref.kd_loss(teacher_logits, student_logits, temperatures[epoch]))
        np.testing.assert_allclose(
            history.history["distillation_loss"][epoch], expected, rtol=1e-5
        )
    assert (distiller.temperature, distiller.alpha) == (9.0, 1.0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(distiller._temperature_variable), 9.0)


def test_top_k_targets_follow_a_scheduled_temperature_in_graph(arrays):
    """A top-k cache's even tail is rebuilt in the compiled step at the variable's
    temperature (on a stored one, 2, and between, 3), as NumPy rebuilds it in float64."""
    from keras_kd.schedules import DistillationSchedule
    from keras_kd.targets import TEACHER_TOPK_INDICES
    from keras_kd.targets import TEACHER_TOPK_LOGITS
    from keras_kd.targets import TEACHER_TOPK_TAIL_LOG_MASS

    x, labels = arrays["x"], arrays["labels"]
    teacher_logits = ref.mlp(ref.teacher_weights(arrays), x)[1]
    top_k, num_tail = 2, ref.NUM_CLASSES - 2
    order = np.argsort(-teacher_logits, axis=-1)[:, :top_k]
    in_top = np.zeros(teacher_logits.shape, bool)
    np.put_along_axis(in_top, order, True, -1)

    def tail_log_mass(temperature):  # log sum_tail exp(z / T)
        tail = np.where(in_top, -np.inf, teacher_logits / temperature)
        return np.log(np.exp(tail).sum(-1))

    cached = {
        LABELS: labels,
        TEACHER_TOPK_LOGITS: np.take_along_axis(teacher_logits, order, -1).astype("float32"),
        TEACHER_TOPK_INDICES: order.astype("int32"),
        TEACHER_TOPK_TAIL_LOG_MASS: np.stack(
            [tail_log_mass(t) for t in (1.0, 2.0, 4.0, 8.0)], -1
        ).astype("float32"),
    }
    # At T = 3, between the stored 2 and 4: L(1/3) on the chord between L(1/4) and L(1/2).
    weight = (1 / 3 - 1 / 4) / (1 / 2 - 1 / 4)
    tail_at = {
        2.0: tail_log_mass(2.0),
        3.0: (1 - weight) * tail_log_mass(4.0) + weight * tail_log_mass(2.0),
    }
    teacher, student = build_models(arrays)
    distiller = compiled_distiller(teacher, student)
    temperatures, outputs = [2.0, 3.0], []

    class Record(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            outputs.append(keras.ops.convert_to_numpy(self.model.student(x, training=False)))

    history = distiller.fit(
        x, cached, batch_size=len(x), epochs=2, shuffle=False, verbose=0,
        callbacks=[DistillationSchedule(temperature=lambda epoch: temperatures[epoch]), Record()],
    )
    for epoch, student_logits in enumerate(outputs):
        temperature = temperatures[epoch]
        even = np.where(
            in_top, teacher_logits, temperature * (tail_at[temperature] - np.log(num_tail))[:, None]
        )
        expected = np.mean(ref.kd_loss(even, student_logits, temperature))
        np.testing.assert_allclose(
            history.history["distillation_loss"][epoch], expected, rtol=1e-5
        )
