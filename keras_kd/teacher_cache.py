"""`cache_teacher_logits`: run a frozen teacher once, then distil without it.

Live distillation pays a teacher forward on every batch of every epoch. When the
inputs are the same every epoch (no random augmentation), the teacher's logits are
too: computing them once turns each later epoch into plain student training plus a
cheap KL term. The cache keeps the teacher's logits only, in order, next to a
fingerprint of each batch's inputs. Arrays are batched here from a copy taken at
caching, so their inputs cannot change and are not re-checked; a `tf.data` pipeline is
re-read every epoch and checked against the fingerprints (see `check_inputs`), so a
cache is never silently paired with inputs the teacher did not see.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import zipfile
from typing import Any
from typing import Optional
from typing import Sequence
from typing import Union

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
# /2 adds the sampled fingerprints; a /1 file is refused by name, never misread.
_FORMAT = "keras_kd.teacher_logits/2"
# `tf.strings.to_hash_bucket_fast` takes a bucket count; the largest int64 keeps all
# 63 bits of FarmHash's fingerprint.
_FINGERPRINT_BUCKETS = 2**63 - 1
# Checks of a pipeline's inputs during `fit` (see `check_inputs` and `_sampled_fingerprint`).
_EVERY_BATCH = "every_batch"
_CHECK_MODES = (True, False, _EVERY_BATCH)
_FULL_HASH_VALUES_PER_ROW = 4096
_SAMPLED_VALUES_PER_ROW = 16


def cache_teacher_logits(
    teacher: Union[keras.Model, Sequence[keras.Model]],
    data: Any,
    batch_size: Optional[int] = None,
    path: Optional[Union[str, os.PathLike]] = None,
    dtype: str = "float32",
    check_inputs: Union[bool, str] = True,
    verbose: int = 1,
    top_k: Optional[int] = None,
) -> tf.data.Dataset:
    """Runs `teacher` once over `data` and returns a dataset that distils without it.

    Each element of the result is `(x, {"labels": y, "teacher_logits": t})`, plus the
    sample weights `w` when `data` has them, in `data`'s batches and order, where
    `t = teacher(x)` as float32 logits exactly as the `Distiller` computes them live
    (`log p` for a teacher ending in a softmax). An ensemble of M teachers is stored
    per member, `"teacher_member_logits"` of shape (batch, M, K), and folded by the
    `Distiller` at its own temperature, so one cache serves every temperature. Give
    the result to `Distiller.fit` in place of `data`: the teacher does not run.

    Memory: `samples x M x classes x bytes` for the logits (4 bytes, 2 with
    `dtype="float16"`), plus 24 bytes per batch, built in a transient 2x that. Arrays
    are copied once into the returned dataset (their own size again, the caller's
    copy can be freed); a `tf.data` pipeline is not copied but re-read each epoch.

    Requirements on `data`, checked:

    - It yields the same inputs, in the same order, on every pass. Random
      augmentation or a `shuffle(..., reshuffle_each_iteration=True)` before batching
      would make cached logits stale (the teacher saw other inputs). Arrays cannot
      change: they are copied into the returned dataset at caching. A pipeline is
      fingerprinted at caching (a FarmHash of every batch's inputs): a second pass
      over its first batch raises `ValueError`, and during `fit` the checks chosen by
      `check_inputs` fail the epoch with `InvalidArgumentError`. Shuffle *the
      returned* dataset instead (its elements keep their logits), e.g.
      `cached.shuffle(64)` or `unbatch().shuffle().batch()`; augmentation applied
      after caching is not detected and is wrong (the teacher would not have seen the
      augmented inputs): distil live for that.
    - It is finite and batched.

    What `check_inputs` protects against, and what it costs per epoch (measured in
    `keras-kd bench`, docs/benchmarks.md), for a `tf.data` pipeline (arrays are never
    re-checked: nothing can change them):

    - `True` (default): inputs of up to 4096 values per example hashed whole in every
      batch (one hash, about 0.14 ms per batch of 256 x 512 floats); larger inputs
      (images) hashed whole in the first batch of each pass and by their shapes and 16
      evenly spaced values of each row in the others. Catches augmentation and
      reshuffling (they change the first batch), rows reordered or replaced in any
      batch, and data that grew or shrank; for large inputs, misses a deterministic
      edit confined to unsampled values of a later batch.
    - `"every_batch"`: every batch hashed whole, whatever its size; catches any
      changed byte, at the cost of hashing all the inputs every epoch.
    - `False`: no check during `fit` (the one at caching stays), for a pipeline known
      to be deterministic.

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
            after checking it was made by a teacher with the same weights (a SHA-256
            of all teacher weights, computed only when `path` is given), with the
            same `dtype`, from the same data (first batch and batch count); it is
            written atomically, so an interrupted run leaves no partial cache.
        dtype: "float32" (default) or "float16", the storage type of the logits; the
            `Distiller` computes in float32 either way.
        check_inputs: how a `tf.data` pipeline's inputs are checked against the
            cache during `fit`: True (default), "every_batch" or False, as above.
            Ignored for arrays, whose copy cannot change.
        verbose: 0 (silent) or 1 (a progress bar over the teacher pass), default 1.
        top_k: None (default: every logit) or an int k >= 1: keep, per position, only
            the teacher's k largest logits (in `dtype`) and their int32 class indices,
            `k x (value bytes + 4) + 16` bytes per position instead of
            `K x value bytes`, as `{"teacher_topk_logits", "teacher_topk_indices",
            "teacher_topk_tail_log_mass"}` in `y`. `path` then
            names a directory whose arrays are memory-mapped, so memory does not grow
            with the cache. Also stored: the tail's tempered log-mass `log sum_tail
            exp(z_i / T)` at T = 1, 2, 4, 8 (four float32, 16 bytes), with which the
            Distiller trains on the top k plus an even tail carrying the tail's
            tempered mass at its temperature (exact at those four, interpolated
            between; exactly the dense target when k = K); one teacher only. See
            docs/guides/language-models.md for the approximation and its measured
            error.

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
    check_inputs = _check_mode(check_inputs)
    verbose = _validation.check_choice(verbose, "verbose", (0, 1))
    _fit_checks.check_cache_data(teachers, data)
    dataset, arrays = _as_batched_dataset(data, batch_size)
    _fit_checks.check_cache_first_batch(teachers, dataset)
    if top_k is not None:
        from keras_kd import _topk_cache  # the top-k cache reuses this module's helpers

        return _topk_cache.cache_teacher_topk(
            teachers, dataset, top_k, path, dtype, check_inputs, verbose
        )
    key = TEACHER_LOGITS if len(teachers) == 1 else TEACHER_MEMBER_LOGITS
    if path is not None and os.path.exists(path):
        cache = _load(path, _metadata(teachers, dtype))
        _check_data_unchanged(dataset, cache, f"the data the cache {path!r} was made from")
    else:
        cache = _run_teacher(teachers, dataset, dtype, verbose)
        if arrays is None:
            # Only a pipeline can yield other inputs on its second pass; arrays are a copy.
            _check_data_unchanged(dataset, cache, "the first pass over it")
        if path is not None:
            _save(path, cache, _metadata(teachers, dtype))
    if arrays is not None:
        return _attach_to_arrays(arrays, batch_size, cache, key)
    return _attach(dataset, cache, key, check_inputs)


def _check_mode(check_inputs):
    if check_inputs not in _CHECK_MODES or not isinstance(check_inputs, (bool, str)):
        raise ValueError(
            f"`check_inputs` must be True or False, or {_EVERY_BATCH!r}; got "
            f"{check_inputs!r}. True (default) checks a pipeline's first batch each epoch "
            "in full and a sample of every other batch."
        )
    return check_inputs


def _metadata(teachers, dtype):
    # The weight hash (a pass over every teacher weight) only serves a cache on disk,
    # which another teacher could later read; an in-memory cache dies with this call.
    return {
        "format": _FORMAT,
        "dtype": dtype,
        "num_members": len(teachers),
        "teacher_weights_sha256": _weights_fingerprint(teachers),
    }


class _Cache:
    """The stored part: logits of all batches, where each batch ends, and each batch's
    fingerprints (of all its inputs' bytes, and `_sampled_fingerprint`'s)."""

    def __init__(self, logits, batch_ends, input_fingerprints, sampled_fingerprints):
        self.logits = logits
        self.batch_ends = batch_ends
        self.input_fingerprints = input_fingerprints
        self.sampled_fingerprints = sampled_fingerprints

    @property
    def num_batches(self):
        return len(self.input_fingerprints)


def _as_batched_dataset(data, batch_size):
    """`(dataset, arrays)`: the batched dataset, and the arrays (x, y, sample_weight)
    it was made from (None for a `tf.data.Dataset`)."""
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
        return data, None
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
    # Converted to tensors (a copy) once: the teacher pass and the returned dataset
    # read the same snapshot, which later edits of the caller's arrays cannot reach.
    parts = tf.nest.map_structure(tf.convert_to_tensor, parts)
    dataset = tf.data.Dataset.from_tensor_slices(tuple(parts.values())).batch(batch_size)
    return dataset, (parts["x"], parts.get("y"), parts.get("sample_weight"))


def _unpack(element):
    return keras.utils.unpack_x_y_sample_weight(element)


def _full_fingerprint(x):
    """A 63-bit FarmHash of all the bytes of a batch's inputs `x`."""
    return _hash(tf.nest.flatten(x, expand_composites=True))


def _sampled_fingerprint(x, batch_index):
    """The default check's fingerprint of a batch's inputs `x`.

    Inputs of at most `_FULL_HASH_VALUES_PER_ROW` values per example are hashed whole:
    one hash op is the cheapest check there (measured at 512 values per row, 0.14 ms
    per batch of 256, against 0.35 ms for a sample behind a `tf.cond`). Larger inputs
    (images: hashing all of an ImageNet batch costs about 100 ms of CPU) are hashed
    whole in the first batch of each pass, and by their shapes and
    `_SAMPLED_VALUES_PER_ROW` evenly spaced values of each row in the others, which
    shows any reordering of rows and any change to whole inputs. Augmentation that
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
    return math.prod(math.inf if dim is None else dim for dim in leaf.shape[1:])


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
    """`(element, full fingerprint, sampled fingerprint)` for each batch of `dataset`.

    Both the caching pass and the checks hash inside tf.data, the same graph on the
    same device, so equal inputs give equal fingerprints bit for bit.
    """

    def fingerprint(index, element):
        x = _unpack(element)[0]
        return element, _full_fingerprint(x), _sampled_fingerprint(x, index)

    return dataset.enumerate().map(
        fingerprint, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
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
    logits, batch_ends, fingerprints, sampled = [], [0], [], []
    for step, (element, fingerprint, sampled_fingerprint) in enumerate(_fingerprinted(dataset)):
        batch_logits = forward(_unpack(element)[0])
        logits.append(_to_storage_dtype(batch_logits, dtype))
        batch_ends.append(batch_ends[-1] + batch_logits.shape[0])
        fingerprints.append(int(fingerprint))
        sampled.append(int(sampled_fingerprint))
        progress.update(step + 1)
    if not logits:
        raise ValueError("`data` yielded no batch: there is nothing to cache.")
    return _Cache(
        np.concatenate(logits, axis=0),
        np.asarray(batch_ends, dtype=np.int64),
        np.asarray(fingerprints, dtype=np.int64),
        np.asarray(sampled, dtype=np.int64),
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
    first = [int(fingerprint) for _, fingerprint, _ in _fingerprinted(dataset.take(1))]
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


def _attach_to_arrays(arrays, batch_size, cache, key):
    """The arrays and their logits as one in-memory dataset, batched as at caching.

    Nothing is checked per batch: the inputs are the snapshot the teacher saw, so each
    epoch costs what `student.fit` on the same data costs, plus the KL term.
    """
    x, y, sample_weight = arrays
    targets = {key: tf.convert_to_tensor(cache.logits)}
    if y is not None:
        targets[LABELS] = y
    parts = (x, targets) if sample_weight is None else (x, targets, sample_weight)
    return _split_into_batches(parts, cache.batch_ends).prefetch(tf.data.AUTOTUNE)


def _split_into_batches(tensors, batch_ends):
    """A dataset whose elements are the rows `batch_ends[i]:batch_ends[i + 1]` of each of
    `tensors` (a nest of equally long tensors), without a map over the batches.

    Batches of one size (but the last) are sliced from a `(batches, batch, ...)` view,
    which tf.data yields as cheaply as a `.cache()`d dataset; `batch()` over single
    examples, or a map slicing each batch, costs about 0.1-0.4 ms more per batch. Other
    batchings take a ragged view.
    """
    sizes = np.diff(batch_ends)
    if len(sizes) > 1 and np.any(sizes[:-1] != sizes[0]):
        return tf.data.Dataset.from_tensor_slices(
            tf.nest.map_structure(
                lambda tensor: tf.RaggedTensor.from_row_limits(tensor, batch_ends[1:]), tensors
            )
        )
    size, num_full = int(sizes[0]), len(sizes) - int(sizes[-1] != sizes[0])
    full_rows = size * num_full

    def full_batches(tensor):
        return tf.reshape(tensor[:full_rows], [num_full, size, *tensor.shape[1:]])

    batches = tf.data.Dataset.from_tensor_slices(tf.nest.map_structure(full_batches, tensors))
    last = tf.data.Dataset.from_tensors(
        tf.nest.map_structure(lambda tensor: tensor[full_rows:], tensors)
    )
    if num_full == len(sizes):
        # No short batch: an empty one's spec still makes the batch size `None`, as
        # `batch()` gives, so the shapes (and error messages) do not depend on the
        # number of examples.
        last = last.take(0)
    return batches.concatenate(last) if num_full else last


def _attach(dataset, cache, key, check_inputs):
    # Zipping with per-batch logits and fingerprints keeps the per-batch cost to one
    # small map. Past the cached batches comes an endless sentinel batch with
    # fingerprint -1 (real ones are >= 0), so data that grew fails loudly instead of
    # being cut short by `zip`.
    num_batches = cache.num_batches
    stored = tf.data.Dataset.zip(
        _split_into_batches(tf.convert_to_tensor(cache.logits), cache.batch_ends),
        tf.data.Dataset.from_tensor_slices(
            (cache.input_fingerprints, cache.sampled_fingerprints, np.arange(num_batches))
        ),
    )
    beyond = tf.data.Dataset.from_tensors(
        (cache.logits[:0], (np.int64(-1), np.int64(-1), np.int64(num_batches)))
    )
    stored = stored.concatenate(beyond.repeat())

    def attach(element, stored_batch):
        x, y, sample_weight = _unpack(element)
        batch_logits, (full_fingerprint, sampled_fingerprint, index) = stored_batch
        if check_inputs:
            # One unguarded Assert: `tf.debugging.Assert` wraps itself in a `cond`, which
            # costs more than the check. The sentinel's -1 matches no real fingerprint.
            if check_inputs == _EVERY_BATCH:
                same = tf.equal(_full_fingerprint(x), full_fingerprint)
            else:
                same = tf.equal(_sampled_fingerprint(x, index), sampled_fingerprint)
            same_inputs = tf.raw_ops.Assert(
                condition=same,
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
            sampled_fingerprints=cache.sampled_fingerprints,
        )
    os.replace(partial, path)


def _load(path, expected):
    if os.path.isdir(path):
        raise ValueError(f"`path` must name a file, got the directory {path!r}.")
    try:
        with np.load(path, allow_pickle=False) as stored:
            metadata = json.loads(str(stored["metadata"]))
            _check_metadata(path, metadata, expected)
            cache = _Cache(
                stored["logits"],
                stored["batch_ends"],
                stored["input_fingerprints"],
                stored["sampled_fingerprints"],
            )
    except _StaleCacheError:
        raise
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
        raise ValueError(
            f"`path`={path!r} exists but is not a keras_kd teacher-logit cache ({error}). "
            "Delete it or name another file."
        ) from error
    return cache


class _StaleCacheError(ValueError):
    """A readable cache made by another teacher, dtype or format."""


_METADATA_FIELDS = (
    ("format", "file format"),
    ("num_members", "number of teachers"),
    ("teacher_weights_sha256", "teacher weights"),
    ("dtype", "dtype"),
)


def _check_metadata(path, metadata, expected, fields=_METADATA_FIELDS):
    """Raises `_StaleCacheError` when a cache on disk was made for another call."""
    for field, what in fields:
        if metadata.get(field) != expected[field]:
            raise _StaleCacheError(
                f"The cache {path!r} was made with another {what} ({field}="
                f"{metadata.get(field)!r}, now {expected[field]!r}): its logits do not "
                "belong to this call. Delete it or name another path."
            )
