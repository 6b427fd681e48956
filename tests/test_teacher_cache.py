"""keras_kd.cache_teacher_logits and the Distiller's train step: correctness, not speed.

Teachers here are single Dense layers, so their logits have an independent NumPy
reference (`x @ W + b`); the ensemble fold is re-derived in NumPy from its formula
`T * log(mean_m softmax(z_m / T))`. Counting layers (conftest's `call_counter`)
prove which models run in each step.
"""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_kd import Distiller
from keras_kd import _teacher
from keras_kd import losses
from keras_kd.distiller import LABELS
from keras_kd.distiller import TEACHER_LOGITS
from keras_kd.distiller import TEACHER_MEMBER_LOGITS
from keras_kd.distiller import split_targets
from keras_kd.teacher_cache import cache_teacher_logits
from _numpy_reference import distillation_loss as np_distillation_loss
from _numpy_reference import ensemble_logits as np_ensemble_fold
from _numpy_reference import log_softmax as np_log_softmax

NUM_FEATURES = 6
NUM_CLASSES = 4
NUM_SAMPLES = 50
BATCH_SIZE = 16  # 50 = 3 x 16 + 2: a short last batch must survive too


# ---------------------------------------------------------------------------
# Independent NumPy references and small models
# ---------------------------------------------------------------------------


def np_dense(model, x):
    kernel, bias = (np.asarray(w, dtype=np.float64) for w in model.get_weights())
    return np.asarray(x, dtype=np.float64) @ kernel + bias


def dense_teacher(seed, activation=None, num_classes=NUM_CLASSES, bias=0.0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((NUM_FEATURES,)),
            keras.layers.Dense(
                num_classes,
                activation=activation,
                bias_initializer=keras.initializers.Constant(bias),
            ),
        ]
    )


def mlp_student(seed=7, num_classes=NUM_CLASSES, extra_layer=None):
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((NUM_FEATURES,)), keras.layers.Dense(8, activation="relu")]
    if extra_layer is not None:
        layers.append(extra_layer)
    layers.append(keras.layers.Dense(num_classes))
    return keras.Sequential(layers)


def arrays(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(NUM_SAMPLES, NUM_FEATURES)).astype("float32")
    y = rng.integers(0, NUM_CLASSES, size=NUM_SAMPLES)
    sample_weight = rng.uniform(0.5, 2.0, size=NUM_SAMPLES).astype("float32")
    return x, y, sample_weight


def batched(x, y, sample_weight=None):
    parts = (x, y) if sample_weight is None else (x, y, sample_weight)
    return tf.data.Dataset.from_tensor_slices(parts).batch(BATCH_SIZE)


def compiled_distiller(teacher, student, temperature=4.0, alpha=0.7, **compile_kwargs):
    distiller = Distiller(teacher, student, temperature=temperature, alpha=alpha)
    distiller.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        **compile_kwargs,
    )
    return distiller


def collect(dataset):
    return [tf.nest.map_structure(lambda t: t.numpy(), element) for element in dataset]


def counted_teacher(call_counter, seed=1):
    counter = call_counter()
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [keras.Input((NUM_FEATURES,)), counter, keras.layers.Dense(NUM_CLASSES)]
    )
    return model, counter


def assert_same_weights(model_a, model_b, atol):
    for a, b in zip(model_a.get_weights(), model_b.get_weights()):
        np.testing.assert_allclose(a, b, atol=atol, rtol=0)


# ---------------------------------------------------------------------------
# What the cache holds
# ---------------------------------------------------------------------------


def test_cache_keeps_batches_order_weights_and_teacher_logits():
    x, y, sample_weight = arrays()
    teacher = dense_teacher(1)
    cached = collect(cache_teacher_logits(teacher, (x, y, sample_weight), BATCH_SIZE, verbose=0))

    assert [len(element[0]) for element in cached] == [16, 16, 16, 2]
    np.testing.assert_array_equal(np.concatenate([e[0] for e in cached]), x)
    np.testing.assert_array_equal(np.concatenate([e[1][LABELS] for e in cached]), y)
    np.testing.assert_array_equal(np.concatenate([e[2] for e in cached]), sample_weight)
    logits = np.concatenate([e[1][TEACHER_LOGITS] for e in cached])
    assert logits.dtype == np.float32
    np.testing.assert_allclose(logits, np_dense(teacher, x), rtol=1e-5, atol=1e-5)


def test_dataset_input_keeps_its_batches_and_soft_only_data():
    x, _, _ = arrays()
    teacher = dense_teacher(1)
    # Uneven batches, and no labels (alpha = 1 training).
    dataset = tf.data.Dataset.from_tensor_slices(x).batch(20)
    cached = collect(cache_teacher_logits(teacher, dataset, verbose=0))

    assert [len(element[0]) for element in cached] == [20, 20, 10]
    assert all(set(element[1]) == {TEACHER_LOGITS} for element in cached)
    logits = np.concatenate([e[1][TEACHER_LOGITS] for e in cached])
    np.testing.assert_allclose(logits, np_dense(teacher, x), rtol=1e-5, atol=1e-5)


def test_softmax_teacher_is_cached_as_log_probabilities():
    x, y, _ = arrays()
    teacher = dense_teacher(2, activation="softmax")
    cached = collect(cache_teacher_logits(teacher, (x, y), BATCH_SIZE, verbose=0))
    logits = np.concatenate([e[1][TEACHER_LOGITS] for e in cached])
    np.testing.assert_allclose(logits, np_log_softmax(np_dense(teacher, x)), atol=1e-5)


def test_ensemble_is_cached_per_member_and_folded_at_the_distillers_temperature():
    x, y, _ = arrays()
    teachers = [dense_teacher(1), dense_teacher(2)]
    cached = collect(cache_teacher_logits(teachers, (x, y), BATCH_SIZE, verbose=0))
    members = np.concatenate([e[1][TEACHER_MEMBER_LOGITS] for e in cached])
    assert members.shape == (NUM_SAMPLES, 2, NUM_CLASSES)
    for index, teacher in enumerate(teachers):
        np.testing.assert_allclose(members[:, index], np_dense(teacher, x), atol=1e-5)

    # One cache, any temperature: the fold happens in the Distiller.
    for temperature in (1.0, 4.0):
        _, folded = split_targets({TEACHER_MEMBER_LOGITS: members}, temperature)
        expected = np_ensemble_fold([np_dense(t, x) for t in teachers], temperature)
        np.testing.assert_allclose(folded, expected, atol=1e-4)
    with pytest.raises(ValueError, match="temperature"):
        split_targets({TEACHER_MEMBER_LOGITS: members})


# ---------------------------------------------------------------------------
# Training from the cache equals live distillation
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ensemble, check_inputs",
    [(False, True), (True, True), (False, False)],
    ids=["one_teacher", "ensemble", "unchecked_inputs"],
)
def test_training_from_cache_gives_the_weights_of_live_distillation(ensemble, check_inputs):
    x, y, sample_weight = arrays()
    teacher = [dense_teacher(1), dense_teacher(2)] if ensemble else dense_teacher(1)
    temperature = 2.0

    live = compiled_distiller(teacher, mlp_student(), temperature=temperature)
    live.fit(batched(x, y, sample_weight), epochs=2, shuffle=False, verbose=0)

    cached = cache_teacher_logits(
        teacher, (x, y, sample_weight), BATCH_SIZE, check_inputs=check_inputs, verbose=0
    )
    offline = compiled_distiller(teacher, mlp_student(), temperature=temperature)
    offline.fit(cached, epochs=2, shuffle=False, verbose=0)

    # The students moved (the comparison is not trivially of initial weights) ...
    assert not np.allclose(live.student.get_weights()[0], mlp_student().get_weights()[0])
    # ... and identically: same targets, same weights, same order.
    assert_same_weights(live.student, offline.student, atol=1e-5)


def test_float16_cache_stores_rounded_logits_and_trains_close_to_float32():
    x, y, _ = arrays()
    teacher = dense_teacher(1, bias=3.0)
    cached16 = collect(
        cache_teacher_logits(teacher, (x, y), BATCH_SIZE, dtype="float16", verbose=0)
    )
    logits16 = np.concatenate([e[1][TEACHER_LOGITS] for e in cached16])
    assert logits16.dtype == np.float16
    expected = np_dense(teacher, x).astype(np.float32).astype(np.float16)
    np.testing.assert_array_equal(logits16, expected)

    students = []
    for dtype in ("float32", "float16"):
        distiller = compiled_distiller(teacher, mlp_student())
        distiller.fit(
            cache_teacher_logits(teacher, (x, y), BATCH_SIZE, dtype=dtype, verbose=0),
            epochs=1,
            shuffle=False,
            verbose=0,
        )
        students.append(distiller.student)
    assert_same_weights(*students, atol=1e-3)


def test_float16_overflow_raises_instead_of_inf():
    x, y, _ = arrays()
    teacher = dense_teacher(1, bias=1e5)
    with pytest.raises(ValueError, match="overflow dtype='float16'"):
        cache_teacher_logits(teacher, (x, y), BATCH_SIZE, dtype="float16", verbose=0)


def test_float16_loss_error_at_temperature_4_is_below_the_documented_bound():
    # Classifier-like logits: a spread of ~3 and a confident class at +8; a student
    # that agrees only partly. The README's figure comes from this measurement.
    rng = np.random.default_rng(3)
    num, classes, temperature = 4096, 100, 4.0
    labels = rng.integers(0, classes, num)
    teacher = rng.normal(0.0, 3.0, (num, classes)) + 8.0 * np.eye(classes)[labels]
    student = 0.5 * teacher + rng.normal(0.0, 2.0, (num, classes))
    teacher32, student32 = teacher.astype(np.float32), student.astype(np.float32)
    teacher16 = teacher32.astype(np.float16)

    loss32 = losses.distillation_loss(teacher32, student32, temperature).numpy()
    loss16 = losses.distillation_loss(teacher16, student32, temperature).numpy()
    # Both against the float64 NumPy formula on the same (rounded) inputs.
    np.testing.assert_allclose(loss32, np_distillation_loss(teacher32, student32, 4.0), rtol=1e-4)
    np.testing.assert_allclose(loss16, np_distillation_loss(teacher16, student32, 4.0), rtol=1e-4)
    mean_error = abs(loss16.mean() - loss32.mean()) / loss32.mean()
    example_error = np.max(np.abs(loss16 - loss32) / loss32)
    assert mean_error < 2e-5
    assert example_error < 2e-3


# ---------------------------------------------------------------------------
# The on-disk cache
# ---------------------------------------------------------------------------


def test_disk_cache_round_trips_without_running_the_teacher(tmp_path, monkeypatch):
    x, y, sample_weight = arrays()
    teacher = dense_teacher(1)
    path = str(tmp_path / "cache" / "teacher.npz")

    def cached_on_disk():
        return collect(
            cache_teacher_logits(
                teacher, (x, y, sample_weight), BATCH_SIZE, path=path, dtype="float16", verbose=0
            )
        )

    first = cached_on_disk()
    assert os.path.isfile(path) and not os.path.exists(path + ".partial")

    def no_teacher(*args, **kwargs):
        raise AssertionError("the teacher ran although the cache file exists")

    monkeypatch.setattr(_teacher, "member_logits", no_teacher)
    again = cached_on_disk()
    assert [len(e[0]) for e in again] == [16, 16, 16, 2]
    for before, after in zip(first, again):
        np.testing.assert_array_equal(before[0], after[0])
        np.testing.assert_array_equal(before[2], after[2])
        np.testing.assert_array_equal(before[1][LABELS], after[1][LABELS])
        assert after[1][TEACHER_LOGITS].dtype == np.float16
        np.testing.assert_array_equal(before[1][TEACHER_LOGITS], after[1][TEACHER_LOGITS])
    logits = np.concatenate([e[1][TEACHER_LOGITS] for e in again]).astype(np.float64)
    np.testing.assert_allclose(logits, np_dense(teacher, x), rtol=1e-3, atol=1e-3)


def test_disk_cache_refuses_another_teacher_data_or_dtype(tmp_path):
    x, y, _ = arrays()
    path = str(tmp_path / "teacher.npz")
    cache_teacher_logits(dense_teacher(1), (x, y), BATCH_SIZE, path=path, verbose=0)

    with pytest.raises(ValueError, match="teacher weights"):
        cache_teacher_logits(dense_teacher(5), (x, y), BATCH_SIZE, path=path, verbose=0)
    with pytest.raises(ValueError, match="dtype"):
        cache_teacher_logits(
            dense_teacher(1), (x, y), BATCH_SIZE, path=path, dtype="float16", verbose=0
        )
    with pytest.raises(ValueError, match="first batch differs"):
        cache_teacher_logits(dense_teacher(1), (x + 1.0, y), BATCH_SIZE, path=path, verbose=0)
    with pytest.raises(ValueError, match="has 7 batches, but"):
        cache_teacher_logits(dense_teacher(1), (x, y), 8, path=path, verbose=0)

    not_a_cache = tmp_path / "other.npz"
    not_a_cache.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="not a keras_kd teacher-logit cache"):
        cache_teacher_logits(dense_teacher(1), (x, y), BATCH_SIZE, path=str(not_a_cache), verbose=0)
    with pytest.raises(ValueError, match="must name a file"):
        cache_teacher_logits(dense_teacher(1), (x, y), BATCH_SIZE, path=str(tmp_path), verbose=0)


# ---------------------------------------------------------------------------
# Stale logits: data that changes between passes
# ---------------------------------------------------------------------------


def test_random_augmentation_and_reshuffling_are_rejected_at_caching():
    x, y, _ = arrays()
    teacher = dense_teacher(1)
    # A stateful generator, as Keras' random preprocessing layers use: new noise each
    # pass. (A bare `tf.random.normal` under a global seed repeats its draws every
    # pass: the inputs, and so the cache, are then the same each epoch.)
    noise = tf.random.Generator.from_seed(1)
    augmented = batched(x, y).map(lambda a, b: (a + noise.normal(tf.shape(a)), b))
    with pytest.raises(ValueError, match="random augmentation"):
        cache_teacher_logits(teacher, augmented, verbose=0)
    reshuffled = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(50, seed=1).batch(BATCH_SIZE)
    with pytest.raises(ValueError, match="first batch differs"):
        cache_teacher_logits(teacher, reshuffled, verbose=0)

    # A fixed shuffle is the same on every pass, so it can be cached.
    fixed = tf.data.Dataset.from_tensor_slices((x, y))
    fixed = fixed.shuffle(50, seed=1, reshuffle_each_iteration=False).batch(BATCH_SIZE)
    cached = collect(cache_teacher_logits(teacher, fixed, verbose=0))
    inputs = np.concatenate([e[0] for e in cached])
    np.testing.assert_allclose(
        np.concatenate([e[1][TEACHER_LOGITS] for e in cached]), np_dense(teacher, inputs), atol=1e-5
    )


def test_inputs_that_change_after_caching_fail_the_epoch():
    x, y, _ = arrays()
    offset = tf.Variable(0.0)
    dataset = batched(x, y).map(lambda a, b: (a + offset, b))
    cached = cache_teacher_logits(dense_teacher(1), dataset, verbose=0)
    collect(cached)  # unchanged inputs: fine
    offset.assign(1.0)
    with pytest.raises(tf.errors.InvalidArgumentError, match="differ from those the teacher saw"):
        collect(cached)
    # The opt-out skips exactly this per-batch check, nothing else.
    offset.assign(0.0)
    unchecked = cache_teacher_logits(dense_teacher(1), dataset, check_inputs=False, verbose=0)
    offset.assign(1.0)
    assert len(collect(unchecked)) == len(collect(batched(x, y)))


def test_rows_reordered_in_a_later_batch_fail_the_epoch():
    # E.g. a parallel map with deterministic=False: the first batch may stay in place.
    x, y, _ = arrays()
    reorder = tf.Variable(False)

    def maybe_reverse_second_batch(index, element):
        inputs, labels = element
        flip = tf.logical_and(reorder, tf.equal(index, 1))
        return tf.where(flip, tf.reverse(inputs, [0]), inputs), labels

    dataset = batched(x, y).enumerate().map(maybe_reverse_second_batch)
    cached = cache_teacher_logits(dense_teacher(1), dataset, verbose=0)
    reorder.assign(True)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"stale; batch index:\] \[1\]"):
        collect(cached)


@pytest.mark.parametrize(
    "change, failing_batch",
    [("reverse_rows_of_batch_1", 1), ("one_value_in_every_batch", 0)],
)
def test_large_inputs_are_checked_by_sample_and_first_batch_in_full(change, failing_batch):
    # 4200 values per example: later batches are checked by a sample of each row, the
    # first batch of each pass by all its bytes (a cutout-like change of one value).
    rng = np.random.default_rng(4)
    x = rng.normal(size=(24, 4200)).astype("float32")
    active = tf.Variable(False)

    def changed(index, inputs):
        if change == "reverse_rows_of_batch_1":
            return tf.where(active & tf.equal(index, 1), tf.reverse(inputs, [0]), inputs)
        bump = tf.scatter_nd([[0, 4199]], [1.0], tf.shape(inputs))
        return tf.where(active, inputs + bump, inputs)

    dataset = tf.data.Dataset.from_tensor_slices(x).batch(8).enumerate().map(changed)
    teacher = keras.Sequential([keras.Input((4200,)), keras.layers.Dense(3)])
    cached = cache_teacher_logits(teacher, dataset, verbose=0)
    collect(cached)
    active.assign(True)
    failure = rf"batch index:\] \[{failing_batch}\]"
    with pytest.raises(tf.errors.InvalidArgumentError, match=failure):
        collect(cached)


def test_data_that_grew_after_caching_fails_the_epoch():
    x, y, _ = arrays()
    limit = tf.Variable(3 * BATCH_SIZE, dtype=tf.int64)  # 3 full batches, then 4
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).enumerate()
    dataset = dataset.filter(lambda index, _: index < limit).map(lambda _, e: e).batch(BATCH_SIZE)
    cached = cache_teacher_logits(dense_teacher(1), dataset, verbose=0)
    limit.assign(NUM_SAMPLES)
    with pytest.raises(tf.errors.InvalidArgumentError, match="3 batches were cached"):
        collect(cached)


def test_shuffling_the_cached_dataset_keeps_each_input_with_its_logits():
    x, y, sample_weight = arrays()
    teacher = dense_teacher(1)
    cached = cache_teacher_logits(teacher, (x, y, sample_weight), BATCH_SIZE, verbose=0)
    shuffled = collect(cached.unbatch().shuffle(NUM_SAMPLES, seed=2).batch(7))
    inputs = np.concatenate([e[0] for e in shuffled])
    assert not np.array_equal(inputs, x)  # really shuffled
    order = [int(np.flatnonzero((x == row).all(axis=1))[0]) for row in inputs]
    np.testing.assert_allclose(
        np.concatenate([e[1][TEACHER_LOGITS] for e in shuffled]),
        np_dense(teacher, inputs),
        atol=1e-5,
    )
    np.testing.assert_array_equal(np.concatenate([e[1][LABELS] for e in shuffled]), y[order])
    np.testing.assert_array_equal(np.concatenate([e[2] for e in shuffled]), sample_weight[order])


# ---------------------------------------------------------------------------
# Proportionate staleness checks: what each `check_inputs` catches
# ---------------------------------------------------------------------------


def test_arrays_are_snapshotted_so_later_edits_cannot_make_logits_stale():
    x, y, sample_weight = arrays()
    teacher = dense_teacher(1)
    original = x.copy()
    cached = cache_teacher_logits(teacher, (x, y, sample_weight), BATCH_SIZE, verbose=0)
    x += 100.0  # the caller edits its array in place after caching
    elements = collect(cached)
    inputs = np.concatenate([e[0] for e in elements])
    np.testing.assert_array_equal(inputs, original)
    np.testing.assert_allclose(
        np.concatenate([e[1][TEACHER_LOGITS] for e in elements]),
        np_dense(teacher, original),
        atol=1e-5,
    )


def test_teacher_weights_are_hashed_only_for_a_cache_on_disk(tmp_path, monkeypatch):
    from keras_kd import teacher_cache

    x, y, _ = arrays()
    hashed = []
    real = teacher_cache._weights_fingerprint
    monkeypatch.setattr(
        teacher_cache, "_weights_fingerprint", lambda teachers: hashed.append(1) or real(teachers)
    )
    cache_teacher_logits(dense_teacher(1), (x, y), BATCH_SIZE, verbose=0)
    cache_teacher_logits(dense_teacher(1), batched(x, y), verbose=0)
    assert hashed == []
    path = str(tmp_path / "teacher.npz")
    cache_teacher_logits(dense_teacher(1), (x, y), BATCH_SIZE, path=path, verbose=0)
    cache_teacher_logits(dense_teacher(1), (x, y), BATCH_SIZE, path=path, verbose=0)
    assert hashed == [1, 1]  # written, then read back


def test_every_batch_check_catches_an_edit_the_sample_does_not_see():
    # Inputs of 4200 values per example (sampled after each pass's first batch); one
    # value the row sample skips (it reads every 262nd, so not column 1), changed in
    # batch 2 only: the documented blind spot of the default check.
    rng = np.random.default_rng(5)
    x = rng.normal(size=(48, 4200)).astype("float32")
    active = tf.Variable(False)

    def edit_batch_2(index, inputs):
        bump = tf.scatter_nd([[0, 1]], [1.0], tf.shape(inputs))
        return tf.where(active & tf.equal(index, 2), inputs + bump, inputs)

    dataset = tf.data.Dataset.from_tensor_slices(x).batch(16).enumerate().map(edit_batch_2)
    teacher = keras.Sequential([keras.Input((4200,)), keras.layers.Dense(3)])
    sampled = cache_teacher_logits(teacher, dataset, verbose=0)
    every = cache_teacher_logits(teacher, dataset, check_inputs="every_batch", verbose=0)
    active.assign(True)
    assert len(collect(sampled)) == 3
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"batch index:\] \[2\]"):
        collect(every)


@pytest.mark.parametrize("check_inputs", [True, "every_batch"])
def test_both_checks_catch_reshuffling_before_batching_during_fit(check_inputs):
    # The pipeline reshuffles only once `reshuffle` is set, i.e. after caching.
    x, y, _ = arrays()
    reshuffle = tf.Variable(False)

    def maybe_reverse(inputs, labels):
        return tf.where(reshuffle, tf.reverse(inputs, [0]), inputs), labels

    dataset = batched(x, y).map(maybe_reverse)
    cached = cache_teacher_logits(dense_teacher(1), dataset, check_inputs=check_inputs, verbose=0)
    distiller = compiled_distiller(dense_teacher(1), mlp_student())
    distiller.fit(cached, epochs=1, shuffle=False, verbose=0)
    reshuffle.assign(True)
    with pytest.raises(tf.errors.InvalidArgumentError, match="stale"):
        distiller.fit(cached, epochs=1, shuffle=False, verbose=0)


def test_a_cache_file_of_the_previous_format_is_refused_by_name(tmp_path):
    import json

    x, y, _ = arrays()
    path = tmp_path / "old.npz"
    metadata = {"format": "keras_kd.teacher_logits/1", "dtype": "float32", "num_members": 1}
    with open(path, "wb") as file:
        np.savez(file, metadata=np.array(json.dumps(metadata)), logits=np.zeros((50, 4)))
    with pytest.raises(ValueError, match="another file format"):
        cache_teacher_logits(dense_teacher(1), (x, y), BATCH_SIZE, path=str(path), verbose=0)


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


def test_cached_logits_that_do_not_match_the_student_raise():
    x, y, _ = arrays()
    cached = cache_teacher_logits(dense_teacher(1, num_classes=5), (x, y), BATCH_SIZE, verbose=0)
    distiller = compiled_distiller(dense_teacher(1), mlp_student())
    with pytest.raises(ValueError, match=r"Teacher logits.*\(None, 5\) do not match the student"):
        distiller.fit(cached, epochs=1, shuffle=False, verbose=0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"batch_size": None}, "`batch_size` is required"),
        ({"batch_size": 0}, "`batch_size` must be an integer >= 1, got 0"),
        ({"batch_size": 8, "dtype": "int8"}, "`dtype` must be one of .* got 'int8'"),
        ({"batch_size": 8, "verbose": 2}, "`verbose` must be one of .* got 2"),
        ({"batch_size": 8, "check_inputs": "yes"}, "`check_inputs` must be True or False"),
        ({"batch_size": 8, "check_inputs": 1}, "`check_inputs` must be True or False.*got 1"),
    ],
)
def test_bad_arguments_raise_value_errors(kwargs, match):
    x, y, _ = arrays()
    with pytest.raises(ValueError, match=match):
        cache_teacher_logits(dense_teacher(1), (x, y), **kwargs)


def test_bad_data_raises_value_errors():
    x, y, sample_weight = arrays()
    teacher = dense_teacher(1)
    with pytest.raises(ValueError, match="`batch_size` is for arrays"):
        cache_teacher_logits(teacher, batched(x, y), batch_size=8)
    with pytest.raises(ValueError, match="infinite"):
        cache_teacher_logits(teacher, batched(x, y).repeat())
    with pytest.raises(ValueError, match="same number of examples"):
        cache_teacher_logits(teacher, (x, y[:-1]), batch_size=8)
    with pytest.raises(ValueError, match="no labels"):
        cache_teacher_logits(teacher, (x, None, sample_weight), batch_size=8)
    with pytest.raises(ValueError, match="no batch"):
        cache_teacher_logits(teacher, batched(x, y).take(0), verbose=0)
    with pytest.raises(ValueError, match="`teacher` must be a keras.Model"):
        cache_teacher_logits("teacher", (x, y), batch_size=8)


# ---------------------------------------------------------------------------
# The Distiller's step: on the floor
# ---------------------------------------------------------------------------


def test_each_step_runs_one_teacher_and_one_student_forward_and_evaluate_none(call_counter):
    x, y, _ = arrays()
    teacher, teacher_counter = counted_teacher(call_counter)
    student_counter = call_counter()
    distiller = compiled_distiller(teacher, mlp_student(extra_layer=student_counter))
    steps = 4  # ceil(50 / 16)

    distiller.fit(batched(x, y), epochs=1, shuffle=False, verbose=0)
    assert float(teacher_counter.calls) == steps
    assert float(student_counter.calls) == steps  # no duplicate student forward

    distiller.evaluate(batched(x, y), verbose=0)
    distiller.predict(x, batch_size=BATCH_SIZE, verbose=0)
    assert float(teacher_counter.calls) == steps
    assert float(student_counter.calls) == 3 * steps

    cached = cache_teacher_logits(teacher, batched(x, y), verbose=0)
    assert float(teacher_counter.calls) == 2 * steps  # the one caching pass
    distiller.fit(cached, epochs=2, shuffle=False, verbose=0)
    distiller.evaluate(cached, verbose=0)
    assert float(teacher_counter.calls) == 2 * steps


class RaisingTeacher(keras.Model):
    """A teacher that fails if it is ever called once armed."""

    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(NUM_CLASSES)
        self.armed = False

    def call(self, inputs, training=None):
        if self.armed:
            raise RuntimeError("the teacher was called")
        return self.dense(inputs)


def test_evaluate_and_predict_never_trace_the_teacher():
    x, y, _ = arrays()
    teacher = RaisingTeacher()
    teacher(x[:1])
    distiller = compiled_distiller(teacher, mlp_student(), metrics=["accuracy"])
    teacher.armed = True
    student_only = mlp_student()
    student_only.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    expected = student_only.evaluate(x, y, batch_size=BATCH_SIZE, verbose=0, return_dict=True)
    logs = distiller.evaluate(x, y, batch_size=BATCH_SIZE, verbose=0, return_dict=True)
    assert logs == pytest.approx(expected, rel=1e-6)
    np.testing.assert_allclose(
        distiller.predict(x, verbose=0), student_only.predict(x, verbose=0), rtol=1e-6
    )
    with pytest.raises(RuntimeError, match="the teacher was called"):
        distiller.fit(x, y, epochs=1, verbose=0)


def test_jit_compile_and_steps_per_execution_give_the_default_weights():
    x, y, sample_weight = arrays()
    teacher = dense_teacher(1)
    live = batched(x, y, sample_weight)
    cached = cache_teacher_logits(teacher, (x, y, sample_weight), BATCH_SIZE, verbose=0)
    students = []
    for dataset, options in (
        (live, {}),
        (live, {"jit_compile": True, "steps_per_execution": 3}),
        (cached, {"jit_compile": True, "steps_per_execution": 3}),
    ):
        distiller = compiled_distiller(teacher, mlp_student(), **options)
        distiller.fit(dataset, epochs=2, shuffle=False, verbose=0)
        students.append(distiller.student)
    # XLA fuses differently, so float rounding may differ in the last bits. XLA also
    # compiles no host callback, so passing under jit_compile shows the step has none.
    # 4 batches in windows of 3: a partial window each epoch.
    assert_same_weights(students[0], students[1], atol=1e-5)
    assert_same_weights(students[0], students[2], atol=1e-5)


# ---------------------------------------------------------------------------
# The benchmark command
# ---------------------------------------------------------------------------


@pytest.mark.slow
def test_bench_quick_runs_and_writes_its_figures(tmp_path):
    import json

    json_path = tmp_path / "bench.json"
    # The subcommand through its own `add_parser`, in a fresh process as `keras-kd bench`
    # runs (one process for all measurements).
    program = (
        "import argparse, sys; from keras_kd.cli import bench; "
        "parser = argparse.ArgumentParser(prog='keras-kd'); "
        "bench.add_parser(parser.add_subparsers(dest='command', required=True)); "
        "args = parser.parse_args(sys.argv[1:]); sys.exit(args.func(args))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", program, "bench", "--quick", "--json", str(json_path)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    figures = json.loads(json_path.read_text())
    for run in figures["runs"]:
        times = run["seconds"]
        for name in ("student_fit", "teacher_predict", "keras_kd", "keras_kd_cached",
                     "keras_distillation", "cache", "student_evaluate",
                     "keras_kd_evaluate", "keras_distillation_evaluate"):
            assert times[name] > 0, name
        ratios = run["ratios"]
        assert ratios["keras_kd / keras_distillation"] == pytest.approx(
            times["keras_kd"] / times["keras_distillation"]
        )
    memory = figures["cache_memory"]
    formula = memory["samples"] * memory["classes"] * memory["bytes_per_logit"]
    assert memory["logits_bytes"] == formula
    assert "keras_kd / keras_distillation" in completed.stdout
