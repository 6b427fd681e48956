"""The top-k teacher cache: equal to the dense cache at k = K, the renormalized top-k
teacher against NumPy at k < K, its memory per position, memory-mapping, reloading,
and its errors."""

import os

import keras
import numpy as np
import pytest
from _numpy_reference import log_softmax as np_log_softmax

from keras_kd import Distiller
from keras_kd import cache_teacher_logits

SEQUENCE, VOCABULARY, NUM_CLASSES = 5, 17, 19
TEMPERATURE, ALPHA = 2.0, 0.6


def np_topk_kd(teacher_logits, student_logits, top_k, temperature):
    """T^2 KL(top-k teacher with an even tail || student), per position, float64.

    The K - k tail classes share the tail's probability mass at T = 1 equally: each
    gets the logit log((Z - sum_top exp z) / (K - k)).
    """
    teacher_logits = np.asarray(teacher_logits, np.float64)
    num_classes = teacher_logits.shape[-1]
    top = np.argsort(-teacher_logits, axis=-1)[..., :top_k]
    in_top = np.zeros(teacher_logits.shape, bool)
    np.put_along_axis(in_top, top, True, -1)
    tail_sum = np.where(in_top, 0.0, np.exp(teacher_logits)).sum(-1, keepdims=True)
    approximate = np.where(in_top, teacher_logits, np.log(tail_sum / (num_classes - top_k)))
    log_t = np_log_softmax(approximate / temperature)
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


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_top_k_equal_to_the_vocabulary_is_exactly_the_dense_cache(tmp_path, dtype):
    teacher, student = _token_model(1, 16), _token_model(2, 4)
    data = _data()
    dense = cache_teacher_logits(teacher, data, batch_size=4, dtype=dtype, verbose=0)
    topk = cache_teacher_logits(
        teacher, data, batch_size=4, dtype=dtype, top_k=NUM_CLASSES,
        path=str(tmp_path / "topk"), verbose=0,
    )
    distiller = _distiller(teacher, student)
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
    # At T = 1 the even tail keeps the tail's exact mass.
    tail = np.asarray(y0["teacher_topk_tail_logit"], np.float64)
    top_sum = np.exp(np.asarray(y0["teacher_topk_logits"], np.float64)).sum(-1)
    np.testing.assert_allclose(
        top_sum + (NUM_CLASSES - top_k) * np.exp(tail),
        np.exp(np.asarray(teacher_logits, np.float64)).sum(-1),
        rtol=1e-5,
    )
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
    # k x (2 bytes of float16 + 4 bytes of int32) + 4 bytes (the tail logit) per position.
    assert os.path.getsize(os.path.join(path, "values.bin")) == positions * top_k * 2
    assert os.path.getsize(os.path.join(path, "indices.bin")) == positions * top_k * 4
    assert os.path.getsize(os.path.join(path, "tail.bin")) == positions * 4  # one float32

    from keras_kd import _topk_cache, teacher_cache

    metadata = {"format": _topk_cache._FORMAT, "dtype": "float16", "top_k": top_k,
                "teacher_weights_sha256": teacher_cache._weights_fingerprint([teacher])}
    cache = _topk_cache._load(path, metadata)
    for array in (cache.values, cache.indices, cache.tail_logits):
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
    del y["teacher_topk_tail_logit"]
    with pytest.raises(ValueError, match="reverse_kl.*infinite"):
        distiller.compute_loss(x, y, distiller(x))
