"""`cache_teacher_logits`: run a frozen teacher once, then distil without it.

Live distillation pays a teacher forward on every batch of every epoch. When the
inputs are the same every epoch (no random augmentation), the teacher's logits are
too: computing them once turns each later epoch into plain student training plus a
cheap KL term. The cache keeps the teacher's logits only, in order, next to a
fingerprint of each batch's inputs; the returned dataset re-reads the user's pipeline
and checks every batch against its fingerprint, so a cache can never be paired with
inputs the teacher did not see.
"""

import hashlib
import json
import math
import os
import zipfile

import keras
import numpy as np
import tensorflow as tf

from keras_kd import _fit_checks
from keras_kd import _teacher
from keras_kd import _validation
from keras_kd.targets import LABELS
from keras_kd.targets import TEACHER_LOGITS
from keras_kd.targets import TEACHER_MEMBER_LOGITS

_DTYPES = ("float32", "float16")
_FORMAT = "keras_kd.teacher_logits/1"
# `tf.strings.to_hash_bucket_fast` takes a bucket count; the largest int64 keeps all
# 63 bits of FarmHash's fingerprint.
_FINGERPRINT_BUCKETS = 2**63 - 1
# Per-batch fingerprints: cheap enough to check every batch (see `_input_fingerprint`).
_FULL_HASH_VALUES_PER_ROW = 4096
_SAMPLED_VALUES_PER_ROW = 16


def cache_teacher_logits(
    teacher,
    data,
    batch_size=None,
    path=None,
    dtype="float32",
    check_inputs=True,
    verbose=1,
    top_k=None,
):
    """Runs `teacher` once over `data` and returns a dataset that distils without it.

    Each element of the result is `(x, {"labels": y, "teacher_logits": t})`, plus the
    sample weights `w` when `data` has them, in `data`'s batches and order, where
    `t = teacher(x)` as float32 logits exactly as the `Distiller` computes them live
    (`log p` for a teacher ending in a softmax). An ensemble of M teachers is stored
    per member, `"teacher_member_logits"` of shape (batch, M, K), and folded by the
    `Distiller` at its own temperature, so one cache serves every temperature. Give
    the result to `Distiller.fit` in place of `data`: the teacher does not run.

    Memory: `samples x M x classes x bytes` for the logits (4 bytes, 2 with
    `dtype="float16"`), plus 16 bytes per batch; the inputs are not copied but
    re-read from `data` each epoch, and the cache is built in a transient 2x that.

    Requirements on `data`, checked:

    - It yields the same inputs, in the same order, on every pass. Random
      augmentation or a `shuffle(..., reshuffle_each_iteration=True)` before batching
      would make cached logits stale (the teacher saw other inputs). Every batch's
      inputs are fingerprinted (a FarmHash of all the bytes of each pass's first
      batch, of a sample of every row of the others): a second pass over the first
      batch at caching raises `ValueError`, and any later mismatch fails `fit` with
      `InvalidArgumentError`. Shuffle *the returned* dataset instead (its elements
      keep their logits), e.g. `cached.shuffle(64)` or `unbatch().shuffle().batch()`;
      augmentation applied after caching is not detected and is wrong (the teacher
      would not have seen the augmented inputs): distil live for that.
    - It is finite and batched.

    Float16 storage halves the memory; the teacher logits are then rounded to 11
    significant bits (relative error <= 2^-11 = 4.9e-4 per logit). Measured at T = 4
    on trained classifiers' logits (|z| up to 31), the `T^2 KL` loss changes by under
    1e-5 relative on a batch mean and under 2e-3 on any one example. Logits beyond
    float16's range (|z| > 65504) raise `ValueError` rather than become `inf`.

    Args:
        teacher: a `keras.Model`, or a list of them (an ensemble).
        data: a batched, finite `tf.data.Dataset` of `x`, `(x, y)` or
            `(x, y, sample_weight)`; or arrays in one of those tuple forms, batched
            in order by `batch_size`.
        batch_size: int >= 1, required for arrays and rejected for a dataset (its
            batches are kept), default None.
        path: a file (`.npz`) to keep the logits in across runs, default None
            (memory only). If it exists it is loaded instead of running the teacher,
            after checking it was made by a teacher with the same weights, with the
            same `dtype`, from the same data (first batch and batch count); it is
            written atomically, so an interrupted run leaves no partial cache.
        dtype: "float32" (default) or "float16", the storage type of the logits; the
            `Distiller` computes in float32 either way.
        check_inputs: True (default) to check every batch's inputs against its
            fingerprint during `fit`, about 0.5 ms of CPU per batch; False skips that
            check (the one at caching time stays) for a pipeline known to be
            deterministic, where that cost matters against a fast student step.
        verbose: 0 (silent) or 1 (a progress bar over the teacher pass), default 1.
        top_k: None (default: every logit) or an int k >= 1: keep, per position, only
            the teacher's k largest logits (in `dtype`) and their int32 class indices,
            `k x (value bytes + 4) + 4` bytes per position instead of
            `K x value bytes`, as `{"teacher_topk_logits", "teacher_topk_indices",
            "teacher_topk_tail_logit"}` in `y`. `path` then
            names a directory whose arrays are memory-mapped, so memory does not grow
            with the cache. Also stored: one float32 "tail logit" per position (4
            bytes), with which the Distiller trains on the top k plus an even tail
            carrying the tail's exact mass at T = 1 (exactly the dense target when
            k = K); one teacher only. See docs/guides/language-models.md for the
            approximation and its measured error.

    Returns:
        A `tf.data.Dataset` of `(x, targets)` or `(x, targets, sample_weight)`.

    Raises:
        ValueError: bad arguments, data that changes between passes, a cache file from
            another teacher or data, or logits that overflow float16.

    Example:
        >>> cached = keras_kd.cache_teacher_logits(teacher, (x_train, y_train), batch_size=128)
        >>> distiller = keras_kd.Distiller(teacher, student, temperature=4.0, alpha=0.9)
        >>> distiller.compile(
        ...     optimizer="adam",
        ...     loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        ... )
        >>> distiller.fit(cached.shuffle(64), epochs=10)  # no teacher forward

    References:
        Hinton, Vinyals, Dean. Distilling the Knowledge in a Neural Network. 2015.
    """
    teachers = _teacher.as_teacher_list(teacher)
    dtype = _validation.check_choice(dtype, "dtype", _DTYPES)
    check_inputs = _validation.check_bool(check_inputs, "check_inputs")
    verbose = _validation.check_choice(verbose, "verbose", (0, 1))
    _fit_checks.check_cache_data(teachers, data)
    dataset = _as_batched_dataset(data, batch_size)
    _fit_checks.check_cache_first_batch(teachers, dataset)
    if top_k is not None:
        from keras_kd import _topk_cache  # the top-k cache reuses this module's helpers

        return _topk_cache.cache_teacher_topk(
            teachers, dataset, top_k, path, dtype, check_inputs, verbose
        )
    key = TEACHER_LOGITS if len(teachers) == 1 else TEACHER_MEMBER_LOGITS
    metadata = {
        "format": _FORMAT,
        "dtype": dtype,
        "num_members": len(teachers),
        "teacher_weights_sha256": _weights_fingerprint(teachers),
    }
    if path is not None and os.path.exists(path):
        cache = _load(path, metadata)
        _check_data_unchanged(dataset, cache, f"the data the cache {path!r} was made from")
    else:
        cache = _run_teacher(teachers, dataset, dtype, verbose)
        _check_data_unchanged(dataset, cache, "the first pass over it")
        if path is not None:
            _save(path, cache, metadata)
    return _attach(dataset, cache, key, check_inputs)


class _Cache:
    """The stored part: logits of all batches, where each batch ends, each batch's hash."""

    def __init__(self, logits, batch_ends, input_fingerprints):
        self.logits = logits
        self.batch_ends = batch_ends
        self.input_fingerprints = input_fingerprints

    @property
    def num_batches(self):
        return len(self.input_fingerprints)


def _as_batched_dataset(data, batch_size):
    if isinstance(data, tf.data.Dataset):
        if batch_size is not None:
            raise ValueError(
                f"`batch_size` is for arrays; `data` is a tf.data.Dataset, whose batches "
                f"are kept. Got batch_size={batch_size!r}: batch the dataset instead."
            )
        if data.cardinality() == tf.data.INFINITE_CARDINALITY:
            raise ValueError(
                "`data` is an infinite tf.data.Dataset (e.g. `.repeat()`): the teacher "
                "pass would never end. Cache one epoch, then repeat the returned dataset."
            )
        return data
    if batch_size is None:
        raise ValueError(
            f"`batch_size` is required when `data` is arrays, got batch_size=None for "
            f"data of type {type(data).__name__}."
        )
    batch_size = _validation.check_positive_int(batch_size, "batch_size")
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    if y is None and sample_weight is not None:
        raise ValueError("`data` has sample weights but no labels: pass (x, y, sample_weight).")
    parts = {"x": x, "y": y, "sample_weight": sample_weight}
    parts = {name: part for name, part in parts.items() if part is not None}
    _validation.check_same_length(
        **{name: tf.nest.flatten(part)[0] for name, part in parts.items()}
    )
    arrays = tuple(parts.values())
    return tf.data.Dataset.from_tensor_slices(arrays).batch(batch_size)


def _unpack(element):
    return keras.utils.unpack_x_y_sample_weight(element)


def _input_fingerprint(x, batch_index):
    """A 63-bit FarmHash of a batch's inputs `x`.

    Inputs of at most `_FULL_HASH_VALUES_PER_ROW` values per example are hashed whole.
    Larger ones (images) would cost about 100 ms of CPU per 37 MiB ImageNet batch, so
    they are hashed whole in the first batch of each pass, and by a sample in the
    others: the shapes and `_SAMPLED_VALUES_PER_ROW` evenly spaced values of each row,
    which show any reordering of rows and any change to whole inputs. Augmentation that
    touches few values (cutout) applies to every batch, so the first batch shows it.
    """
    leaves = tf.nest.flatten(x, expand_composites=True)
    if all(_values_per_row(leaf) <= _FULL_HASH_VALUES_PER_ROW for leaf in leaves):
        return _hash(leaves)
    return tf.cond(
        tf.equal(batch_index, 0),
        lambda: _hash(leaves),
        lambda: _hash([part for leaf in leaves for part in (tf.shape(leaf), _row_sample(leaf))]),
    )


def _values_per_row(leaf):
    """Values per example, from the static shape; infinite when unknown."""
    if leaf.shape.rank is None:
        return math.inf
    if leaf.shape.rank == 0:
        return 1
    values = 1
    for dim in leaf.shape[1:]:
        if dim is None:
            return math.inf
        values *= dim
    return values


def _row_sample(leaf):
    if leaf.shape.rank == 0:
        return leaf
    rows = tf.reshape(leaf, [tf.shape(leaf)[0], -1])
    stride = tf.maximum(tf.shape(rows)[1] // _SAMPLED_VALUES_PER_ROW, 1)
    return rows[:, ::stride]


def _hash(tensors):
    serialized = [tf.io.serialize_tensor(tensor) for tensor in tensors]
    joined = serialized[0] if len(serialized) == 1 else tf.strings.join(serialized)
    return tf.strings.to_hash_bucket_fast(joined, _FINGERPRINT_BUCKETS)


def _fingerprinted(dataset):
    """`(element, fingerprint of its inputs)` for each batch of `dataset`.

    Both the caching pass and the checks hash inside tf.data, the same graph on the
    same device, so equal inputs give equal fingerprints bit for bit.
    """
    return dataset.enumerate().map(
        lambda index, element: (element, _input_fingerprint(_unpack(element)[0], index)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )


def _teacher_forward(teachers):
    """A function from one batch's inputs (tf tensors) to the teachers' logits in NumPy.

    On TensorFlow it is a `tf.function`; on JAX and PyTorch a `tf.function` cannot
    trace the teacher's ops, so the batch is handed over as NumPy and run eagerly.
    """

    def forward(x):
        logits = _teacher.member_logits(teachers, x)
        return logits[0] if len(logits) == 1 else keras.ops.stack(logits, axis=1)

    if keras.backend.backend() == "tensorflow":
        compiled = tf.function(forward, reduce_retracing=True)
        return lambda x: compiled(x).numpy()
    return lambda x: keras.ops.convert_to_numpy(
        forward(tf.nest.map_structure(lambda tensor: tensor.numpy(), x))
    )


def _run_teacher(teachers, dataset, dtype, verbose):
    forward = _teacher_forward(teachers)
    num_batches = int(dataset.cardinality())
    progress = keras.utils.Progbar(
        num_batches if num_batches >= 0 else None, verbose=verbose, unit_name="batch"
    )
    logits, batch_ends, fingerprints = [], [0], []
    for step, (element, fingerprint) in enumerate(_fingerprinted(dataset)):
        batch_logits = forward(_unpack(element)[0])
        logits.append(_to_storage_dtype(batch_logits, dtype))
        batch_ends.append(batch_ends[-1] + batch_logits.shape[0])
        fingerprints.append(int(fingerprint))
        progress.update(step + 1)
    if not logits:
        raise ValueError("`data` yielded no batch: there is nothing to cache.")
    return _Cache(
        np.concatenate(logits, axis=0),
        np.asarray(batch_ends, dtype=np.int64),
        np.asarray(fingerprints, dtype=np.int64),
    )


def _to_storage_dtype(logits, dtype):
    with np.errstate(over="ignore"):
        stored = logits.astype(dtype)
    # float16 tops out at 65504: larger logits would silently become inf.
    overflowed = np.isfinite(logits) & ~np.isfinite(stored)
    if overflowed.any():
        largest = float(np.max(np.abs(logits[overflowed])))
        raise ValueError(
            f"Teacher logits up to |z| = {largest:g} overflow dtype={dtype!r} (max 65504); "
            "use dtype='float32'."
        )
    return stored


def _check_data_unchanged(dataset, cache, reference):
    cardinality = int(dataset.cardinality())
    if cardinality >= 0 and cardinality != cache.num_batches:
        raise ValueError(
            f"`data` has {cardinality} batches, but {reference} had {cache.num_batches}."
        )
    first = [int(fingerprint) for _, fingerprint in _fingerprinted(dataset).take(1)]
    if not first:
        raise ValueError(f"`data` yielded no batch, but {reference} had {cache.num_batches}.")
    if first[0] != cache.input_fingerprints[0]:
        raise ValueError(
            f"`data`'s first batch differs from {reference}: random augmentation, or a "
            "shuffle before batching that reshuffles each pass, would pair cached logits "
            "with inputs the teacher never saw. Cache a pipeline that yields the same "
            "inputs every pass (shuffle the returned dataset instead, or use "
            "reshuffle_each_iteration=False), or distil live with the teacher."
        )


def _attach(dataset, cache, key, check_inputs):
    # Zipping with per-batch slices of the stored logits (a ragged view, no copy per
    # epoch) keeps the per-batch cost to one small map. Past the cached batches comes an
    # endless sentinel batch with fingerprint -1 (real ones are >= 0), so data that grew
    # fails loudly instead of being cut short by `zip`.
    num_batches = cache.num_batches
    stored = tf.data.Dataset.from_tensor_slices(
        (
            tf.RaggedTensor.from_row_limits(cache.logits, cache.batch_ends[1:]),
            cache.input_fingerprints,
            np.arange(num_batches, dtype=np.int64),
        )
    )
    sentinel = tf.RaggedTensor.from_row_limits(cache.logits[:0], np.zeros(1, np.int64))
    beyond = tf.data.Dataset.from_tensor_slices(
        (sentinel, np.full(1, -1, np.int64), np.full(1, num_batches, np.int64))
    )
    stored = stored.concatenate(beyond.repeat())

    def attach(element, stored_batch):
        x, y, sample_weight = _unpack(element)
        batch_logits, fingerprint, index = stored_batch
        if check_inputs:
            # One unguarded Assert: `tf.debugging.Assert` wraps itself in a `cond`, which
            # costs more than the check. The sentinel's -1 matches no real fingerprint.
            same_inputs = tf.raw_ops.Assert(
                condition=tf.equal(_input_fingerprint(x, index), fingerprint),
                data=[
                    "keras_kd.cache_teacher_logits: this batch's inputs differ from those "
                    "the teacher saw (random augmentation, reshuffling before batching, or "
                    f"data changed or grown since caching; {num_batches} batches were "
                    "cached), so its cached logits are stale; batch index:",
                    index,
                ],
            )
            with tf.control_dependencies([same_inputs]):
                batch_logits = tf.identity(batch_logits)
        targets = {key: batch_logits}
        if y is not None:
            targets[LABELS] = y
        return (x, targets) if sample_weight is None else (x, targets, sample_weight)

    return (
        tf.data.Dataset.zip(dataset, stored)
        .map(attach, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .prefetch(tf.data.AUTOTUNE)
    )


def _weights_fingerprint(teachers):
    digest = hashlib.sha256()
    for model in teachers:
        for weight in model.weights:
            value = np.ascontiguousarray(keras.ops.convert_to_numpy(weight))
            digest.update(f"{value.dtype}{value.shape}".encode())
            digest.update(value.tobytes())
    return digest.hexdigest()


def _save(path, cache, metadata):
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    partial = f"{path}.partial"
    with open(partial, "wb") as file:
        np.savez(
            file,
            metadata=np.array(json.dumps(metadata)),
            logits=cache.logits,
            batch_ends=cache.batch_ends,
            input_fingerprints=cache.input_fingerprints,
        )
    os.replace(partial, path)


def _load(path, expected):
    if os.path.isdir(path):
        raise ValueError(f"`path` must name a file, got the directory {path!r}.")
    try:
        with np.load(path, allow_pickle=False) as stored:
            metadata = json.loads(str(stored["metadata"]))
            cache = _Cache(stored["logits"], stored["batch_ends"], stored["input_fingerprints"])
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
        raise ValueError(
            f"`path`={path!r} exists but is not a keras_kd teacher-logit cache ({error}). "
            "Delete it or name another file."
        ) from error
    for field, what in (
        ("format", "file format"),
        ("num_members", "number of teachers"),
        ("teacher_weights_sha256", "teacher weights"),
        ("dtype", "dtype"),
    ):
        if metadata.get(field) != expected[field]:
            raise ValueError(
                f"The cache {path!r} was made with another {what} ({field}="
                f"{metadata.get(field)!r}, now {expected[field]!r}): its logits do not "
                "belong to this call. Delete it or name another file."
            )
    return cache
