"""The top-k teacher cache: equal to the dense cache at k = K, the top k plus an even
tail with the tempered tail mass against NumPy at k < K, the interpolation between
the stored temperatures, a temperature changed after tracing, its memory per
position, memory-mapping, reloading, and its errors."""

import os

import keras
import numpy as np
import pytest
from _numpy_reference import log_softmax as np_log_softmax

from keras_kd import Distiller
from keras_kd import _sequence
from keras_kd import cache_teacher_logits

SEQUENCE, VOCABULARY, NUM_CLASSES = 5, 17, 19
TEMPERATURE, ALPHA = 2.0, 0.6


def np_in_top(teacher_logits, top_k):
    top = np.argsort(-np.asarray(teacher_logits), axis=-1)[..., :top_k]
    in_top = np.zeros(np.shape(teacher_logits), bool)
    np.put_along_axis(in_top, top, True, -1)
    return in_top


def np_tail_log_mass(teacher_logits, in_top, temperature):
    """log sum_{i outside the top k} exp(z_i / T), float64."""
    tail = np.where(in_top, -np.inf, np.asarray(teacher_logits, np.float64) / temperature)
    peak = tail.max(-1, keepdims=True)
    return np.log(np.exp(tail - peak).sum(-1)) + peak[..., 0]


def np_topk_kd(teacher_logits, student_logits, top_k, temperature):
    """T^2 KL(top-k teacher with an even tail || student), per position, float64.

    The K - k tail classes share the tail's exact tempered probability mass
    sum_tail exp(z / T) equally (what the cache gives at its stored temperatures).
    """
    teacher_logits = np.asarray(teacher_logits, np.float64)
    num_classes = teacher_logits.shape[-1]
    in_top = np_in_top(teacher_logits, top_k)
    tail_mass = np_tail_log_mass(teacher_logits, in_top, temperature)[..., None]
    approximate = np.where(
        in_top, teacher_logits / temperature, tail_mass - np.log(num_classes - top_k)
    )
    log_t = np_log_softmax(approximate)
    log_s = np_log_softmax(np.asarray(student_logits, np.float64) / temperature)
    return temperature**2 * (np.exp(log_t) * (log_t - log_s)).sum(-1)


def _token_model(seed, width):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((SEQUENCE,), dtype="int32"),
            keras.layers.Embedding(
                VOCABULARY,
                width,
                embeddings_initializer=keras.initializers.RandomNormal(stddev=2.0),
            ),
            keras.layers.Dense(NUM_CLASSES),
        ]
    )


def _data(num=12):
    rng = np.random.default_rng(0)
    x = rng.integers(0, VOCABULARY, size=(num, SEQUENCE)).astype("int32")
    labels = rng.integers(0, NUM_CLASSES, size=(num, SEQUENCE)).astype("int32")
    lengths = rng.integers(1, SEQUENCE + 1, size=num)
    mask = (np.arange(SEQUENCE)[None, :] < lengths[:, None]).astype("float32")
    return x, labels, mask


def _distiller(teacher, student, **kwargs):
    distiller = Distiller(teacher, student, TEMPERATURE, ALPHA, **kwargs)
    distiller.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction="mean_with_sample_weight"
        ),
    )
    return distiller


def _first_batch_loss(distiller, cached):
    x, y, sample_weight = next(iter(cached))
    return float(distiller.compute_loss(x, y, distiller(x), sample_weight=sample_weight))


@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_top_k_equal_to_the_vocabulary_is_exactly_the_dense_cache(tmp_path, dtype, temperature):
    teacher, student = _token_model(1, 16), _token_model(2, 4)
    data = _data()
    dense = cache_teacher_logits(teacher, data, batch_size=4, dtype=dtype, verbose=0)
    topk = cache_teacher_logits(
        teacher, data, batch_size=4, dtype=dtype, top_k=NUM_CLASSES,
        path=str(tmp_path / "topk"), verbose=0,
    )
    distiller = _distiller(teacher, student)
    distiller.temperature = temperature
    np.testing.assert_allclose(
        _first_batch_loss(distiller, topk), _first_batch_loss(distiller, dense), rtol=1e-6
    )


@pytest.mark.parametrize("divergence", ["kl", "jsd"])
def test_top_k_below_the_vocabulary_trains_on_the_top_k_and_an_even_tail(tmp_path, divergence):
    teacher, student = _token_model(1, 16), _token_model(2, 4)
    x, labels, mask = _data()
    top_k = 4
    cached = cache_teacher_logits(
        teacher, (x, labels, mask), batch_size=4, top_k=top_k, path=str(tmp_path / "c"), verbose=0
    )
    distiller = Distiller(teacher, student, TEMPERATURE, 1.0, divergence=divergence,
                          reduction="mean_with_sample_weight")
    distiller.compile(optimizer="sgd")
    x0, y0, w0 = next(iter(cached))
    assert y0["teacher_topk_logits"].shape == (4, SEQUENCE, top_k)
    assert y0["teacher_topk_indices"].dtype == "int32"
    loss = float(distiller.compute_loss(x0, y0, distiller(x0), sample_weight=w0))
    teacher_logits = keras.ops.convert_to_numpy(teacher(x[:4]))
    student_logits = keras.ops.convert_to_numpy(student(x[:4]))
    if divergence == "kl":
        per_token = np_topk_kd(teacher_logits, student_logits, top_k, TEMPERATURE)
        np.testing.assert_allclose(loss, (per_token * mask[:4]).sum() / mask[:4].sum(), rtol=1e-5)
    assert np.isfinite(loss)
    history = distiller.fit(cached, epochs=2, shuffle=False, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))


def test_memory_per_position_and_memory_mapping(tmp_path):
    teacher = _token_model(1, 16)
    x, labels, _ = _data()
    path = str(tmp_path / "cache")
    top_k = 3
    cache_teacher_logits(teacher, (x, labels), batch_size=5, dtype="float16", top_k=top_k,
                         path=path, verbose=0)
    positions = x.shape[0] * SEQUENCE
    # k x (2 bytes of float16 + 4 bytes of int32) + 16 bytes (the tail's log-mass at
    # four temperatures, float32) per position.
    assert os.path.getsize(os.path.join(path, "values.bin")) == positions * top_k * 2
    assert os.path.getsize(os.path.join(path, "indices.bin")) == positions * top_k * 4
    assert os.path.getsize(os.path.join(path, "tail.bin")) == positions * 4 * 4

    from keras_kd import _topk_cache, teacher_cache

    metadata = {"format": _topk_cache._FORMAT, "dtype": "float16", "top_k": top_k,
                "teacher_weights_sha256": teacher_cache._weights_fingerprint([teacher])}
    cache = _topk_cache._load(path, metadata)
    for array in (cache.values, cache.indices, cache.tail_log_masses):
        assert isinstance(array, np.memmap)
    expected = np.sort(keras.ops.convert_to_numpy(teacher(x)), axis=-1)[..., ::-1][..., :top_k]
    np.testing.assert_allclose(cache.values, expected.astype("float16"))


def test_reloads_without_running_the_teacher_and_rejects_another_teacher(tmp_path):
    teacher, other = _token_model(1, 16), _token_model(3, 16)
    data = _data()
    path = str(tmp_path / "cache")
    first = cache_teacher_logits(teacher, data, batch_size=4, top_k=5, path=path, verbose=0)
    again = cache_teacher_logits(teacher, data, batch_size=4, top_k=5, path=path, verbose=0)
    for (_, a, _), (_, b, _) in zip(first, again):
        np.testing.assert_array_equal(a["teacher_topk_indices"], b["teacher_topk_indices"])
    with pytest.raises(ValueError, match="another teacher weights"):
        cache_teacher_logits(other, data, batch_size=4, top_k=5, path=path, verbose=0)
    with pytest.raises(ValueError, match="another top_k"):
        cache_teacher_logits(teacher, data, batch_size=4, top_k=6, path=path, verbose=0)


def test_bad_top_k_uses_raise(tmp_path):
    teacher, student = _token_model(1, 16), _token_model(2, 4)
    data = _data()
    with pytest.raises(ValueError, match="`top_k` must be an integer >= 1, got 0"):
        cache_teacher_logits(teacher, data, batch_size=4, top_k=0, verbose=0)
    with pytest.raises(ValueError, match=f"exceeds the teacher's {NUM_CLASSES} classes"):
        cache_teacher_logits(
            teacher, data, batch_size=4, top_k=NUM_CLASSES + 1, path=str(tmp_path / "c"),
            verbose=0,
        )
    assert os.listdir(tmp_path) == []  # no cache, no partial directory left behind
    with pytest.raises(ValueError, match="ensemble"):
        cache_teacher_logits([teacher, teacher], data, batch_size=4, top_k=2, verbose=0)
    # Reverse KL is finite against the even tail, infinite against a renormalized top k.
    cached = cache_teacher_logits(teacher, data, batch_size=4, top_k=2, verbose=0)
    distiller = _distiller(teacher, student, divergence="reverse_kl")
    assert np.isfinite(_first_batch_loss(distiller, cached))
    x, y, _ = next(iter(cached))
    del y["teacher_topk_tail_log_mass"]
    with pytest.raises(ValueError, match="reverse_kl.*infinite"):
        distiller.compute_loss(x, y, distiller(x))


def np_interpolated_tail_log_mass(log_masses, num_tail, temperature):
    """The documented interpolation, float64: piecewise linear in s = 1 / T through
    (0, log(K - k)) and (1 / T_j, L(1 / T_j)) for T_j = 8, 4, 2, 1; the last segment's
    line past s = 1."""
    knots = np.array([0.0, 1 / 8, 1 / 4, 1 / 2, 1.0])
    log_masses = np.asarray(log_masses, np.float64)
    at_knots = np.concatenate(
        [np.full(log_masses.shape[:-1] + (1,), np.log(num_tail)), log_masses[..., ::-1]], -1
    )
    s = 1.0 / temperature
    j = min(int(np.searchsorted(knots, s, side="right")) - 1, len(knots) - 2)
    weight = (s - knots[j]) / (knots[j + 1] - knots[j])
    return at_knots[..., j] + weight * (at_knots[..., j + 1] - at_knots[..., j])


def _cached_batch(teacher, top_k, path):
    x, labels, mask = _data()
    cached = cache_teacher_logits(
        teacher, (x, labels, mask), batch_size=4, top_k=top_k, path=path, verbose=0
    )
    return cached, x[:4], mask[:4], next(iter(cached))


def test_the_even_tail_carries_the_tempered_tail_mass_exactly_at_the_stored_temperatures(
    tmp_path,
):
    teacher, student = _token_model(1, 16), _token_model(2, 4)
    top_k = 4
    _, x, _, (x0, y0, _) = _cached_batch(teacher, top_k, str(tmp_path / "c"))
    teacher_logits = keras.ops.convert_to_numpy(teacher(x)).astype(np.float64)
    in_top = np_in_top(teacher_logits, top_k)
    from keras_kd.targets import split_targets

    _, topk = split_targets(y0)
    student_logits = student(x0)
    num_tail = NUM_CLASSES - top_k
    for temperature in [0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 16.0]:
        dense = keras.ops.convert_to_numpy(
            _sequence.dense_teacher_logits(topk, student_logits, "kl", temperature)
        ).astype(np.float64)
        # The top k are the teacher's own logits; the tail is even.
        np.testing.assert_allclose(dense[in_top], teacher_logits[in_top], rtol=1e-6)
        rebuilt = np_tail_log_mass(dense, in_top, temperature)
        true = np_tail_log_mass(teacher_logits, in_top, temperature)
        if temperature in (1.0, 2.0, 4.0, 8.0):
            np.testing.assert_allclose(np.exp(rebuilt - true), 1.0, atol=1e-5)
            continue
        np.testing.assert_allclose(
            rebuilt,
            np_interpolated_tail_log_mass(np.asarray(topk["tail_log_mass"]), num_tail, temperature),
            atol=1e-5,
        )
        # The bounds the guide states: L is convex in s = 1 / T, so between the stored
        # temperatures the chord overstates the tail mass, past T = 1 the extended last
        # chord understates it, and both are closer than the one-number cache, the
        # chord from s = 0 to s = 1.
        s = 1.0 / temperature
        one_number = np.log(num_tail) + s * (
            np_tail_log_mass(teacher_logits, in_top, 1.0) - np.log(num_tail)
        )
        low, high = (true, one_number) if temperature > 1 else (one_number, true)
        assert np.all(rebuilt >= low - 1e-5) and np.all(rebuilt <= high + 1e-5), temperature
        assert np.any(np.abs(rebuilt - true) > 1e-4)  # an interpolation, not exact


def test_a_temperature_changed_after_tracing_takes_the_new_tail_without_a_retrace(tmp_path):
    import tensorflow as tf

    teacher, student = _token_model(1, 16), _token_model(2, 4)
    top_k = 4
    cached, x, mask, (x0, y0, w0) = _cached_batch(teacher, top_k, str(tmp_path / "c"))
    distiller = Distiller(teacher, student, 2.0, 1.0, reduction="mean_with_sample_weight")
    distiller.compile(optimizer="sgd")
    traces = []

    @tf.function
    def loss_of(x, y, sample_weight):
        traces.append(None)
        return distiller.compute_loss(x, y, distiller(x), sample_weight=sample_weight)

    teacher_logits = keras.ops.convert_to_numpy(teacher(x)).astype(np.float64)
    student_logits = keras.ops.convert_to_numpy(student(x)).astype(np.float64)
    in_top = np_in_top(teacher_logits, top_k)
    log_masses = np.asarray(y0["teacher_topk_tail_log_mass"], np.float64)
    for temperature in [2.0, 4.0, 3.0]:
        distiller.temperature = temperature
        tail_mass = np_interpolated_tail_log_mass(log_masses, NUM_CLASSES - top_k, temperature)
        approximate = np.where(
            in_top, teacher_logits / temperature,
            tail_mass[..., None] - np.log(NUM_CLASSES - top_k),
        )
        log_t = np_log_softmax(approximate)
        log_s = np_log_softmax(student_logits / temperature)
        per_token = temperature**2 * (np.exp(log_t) * (log_t - log_s)).sum(-1)
        np.testing.assert_allclose(
            float(loss_of(x0, y0, w0)), (per_token * mask).sum() / mask.sum(), rtol=1e-5
        )
    assert len(traces) == 1
    history = distiller.fit(cached, epochs=1, shuffle=False, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_a_cache_of_the_previous_format_is_refused_by_name(tmp_path):
    import json

    teacher = _token_model(1, 16)
    data = _data()
    path = str(tmp_path / "cache")
    cache_teacher_logits(teacher, data, batch_size=4, top_k=3, path=path, verbose=0)
    metadata_file = os.path.join(path, "metadata.json")
    with open(metadata_file) as file:
        metadata = json.load(file)
    # A /2 cache held one tail logit per position, not the tail's tempered log-masses
    # at four temperatures: its tail file is a quarter of the size.
    metadata["format"] = "keras_kd.teacher_topk/2"
    with open(metadata_file, "w") as file:
        json.dump(metadata, file)
    tail_file = os.path.join(path, "tail.bin")
    with open(tail_file, "r+b") as file:
        file.truncate(os.path.getsize(tail_file) // 4)
    with pytest.raises(ValueError, match="another file format.*teacher_topk/2"):
        cache_teacher_logits(teacher, data, batch_size=4, top_k=3, path=path, verbose=0)
