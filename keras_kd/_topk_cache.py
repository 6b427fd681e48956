"""The top-k teacher cache: per position, the teacher's k largest logits, their
class indices and the tail's tempered log-mass at four temperatures, memory-mapped
from disk.

A language model's dense logits do not fit: 1M tokens of a 256k vocabulary are 954
GiB in float32. Keeping the k largest per position costs `k x (value bytes + 4) + 16`
bytes (float16 values, int32 indices, four float32 tail log-masses: 400 bytes at k
= 64) and, with a `path`, lives in flat files read through `np.memmap`, batch by
batch, so the process's memory does not grow with the cache.

The Distiller trains on the top k plus an even tail (`keras_kd._sequence.
dense_teacher_logits`): the k logits as they are, and the other K - k classes at one
"tail logit" that carries the tail's tempered mass `sum_tail exp(z_i / T)` at the
training temperature T, exact at the stored T = 1, 2, 4, 8 (`L(1 / T) = log
sum_tail exp(z_i / T)`, interpolated between them in 1 / T). Chosen over
renormalizing the top k because an LM's tail holds much of the mass (measured on a
small trained GPT-2: 38-62 % outside the top 32-8 at T = 1, 84-98 % at T = 2-4),
which renormalizing moves onto the top k; and over one tail logit for T = 1, the
format-2 cache, whose even tail overstates the tail's mass at T > 1: the per-token
loss error at k = 32 goes from 17 % to 2.4 % at T = 2, from 23 % to 13 % at T = 4
(docs/guides/language-models.md, which also gives the gradient's error: at T > 1
the tail's lost shape dominates it). With k = K it is exactly the dense target.
"""

import json
import os
import shutil

import keras
import numpy as np
import tensorflow as tf

from keras_kd import _sequence
from keras_kd import _teacher
from keras_kd import _validation
from keras_kd.targets import LABELS
from keras_kd.targets import TEACHER_TOPK_INDICES
from keras_kd.targets import TEACHER_TOPK_LOGITS
from keras_kd.targets import TEACHER_TOPK_TAIL_LOG_MASS
from keras_kd.targets import TEACHER_TOPK_TAIL_TEMPERATURES

_FORMAT = "keras_kd.teacher_topk/3"
_VALUES_FILE, _INDICES_FILE, _TAIL_FILE = "values.bin", "indices.bin", "tail.bin"
_INDEX_FILE = "batches.npz"
_METADATA_FILE = "metadata.json"


# What a top-k cache on disk must have been made with (see teacher_cache._check_metadata).
_METADATA_FIELDS = (
    ("format", "file format"),
    ("top_k", "top_k"),
    ("teacher_weights_sha256", "teacher weights"),
    ("dtype", "dtype"),
)


class _TopKCache:
    """Top-k values, indices and tail log-masses of all positions, batch ends and hashes."""

    def __init__(self, values, indices, tail_log_masses, batch_ends, input_fingerprints):
        self.values = values
        self.indices = indices
        self.tail_log_masses = tail_log_masses
        self.batch_ends = batch_ends
        self.input_fingerprints = input_fingerprints

    @property
    def num_batches(self):
        return len(self.input_fingerprints)


def cache_teacher_topk(teachers, dataset, top_k, path, dtype, check_inputs, verbose):
    """`keras_kd.cache_teacher_logits(..., top_k=k)`: see its docstring."""
    # Imported here: teacher_cache imports this module lazily, for its top_k hook.
    from keras_kd import teacher_cache

    top_k = _validation.check_positive_int(top_k, "top_k")
    if len(teachers) > 1:
        raise ValueError(
            f"top_k={top_k} caches one teacher, got an ensemble of {len(teachers)}: the "
            "ensemble's average depends on the temperature, so its top k does too. Cache "
            "it densely (top_k=None), or distil it live."
        )
    metadata = {
        "format": _FORMAT,
        "dtype": dtype,
        "top_k": top_k,
        # Hashed only for a cache on disk, which can outlive the teacher's weights.
        "teacher_weights_sha256": (
            teacher_cache._weights_fingerprint(teachers) if path is not None else None
        ),
    }
    if path is not None and os.path.exists(path):
        cache = _load(path, metadata)
        teacher_cache._check_data_unchanged(
            dataset, cache, f"the data the cache {path!r} was made from"
        )
    else:
        cache = _run_teacher(teachers[0], dataset, top_k, dtype, path, metadata, verbose)
        teacher_cache._check_data_unchanged(dataset, cache, "the first pass over it")
    return _attach(dataset, cache, check_inputs)


def _topk_forward(teacher, top_k):
    """Batch inputs -> the teacher's (top-k logits, int32 indices, tail log-masses) in NumPy.

    Computed on the device, so only k + G numbers per position come back. The tail
    log-masses are `log sum_tail exp(z_i / T_j)` at the G temperatures of
    `TEACHER_TOPK_TAIL_TEMPERATURES` (`_sequence.top_k_tail_log_masses`; `-inf` when
    k = K: no tail).
    """

    def forward(x):
        logits = _teacher.member_logits([teacher], x)[0]
        if logits.shape[-1] is not None and top_k > logits.shape[-1]:
            raise ValueError(
                f"`top_k`={top_k} exceeds the teacher's {logits.shape[-1]} classes; use "
                f"top_k <= {logits.shape[-1]} (top_k equal to it keeps every logit)."
            )
        values, indices = keras.ops.top_k(logits, top_k, sorted=True)
        indices = keras.ops.cast(indices, "int32")
        return values, indices, _sequence.top_k_tail_log_masses(logits, indices)

    if keras.backend.backend() == "tensorflow":
        compiled = tf.function(forward, reduce_retracing=True)
        return lambda x: tuple(part.numpy() for part in compiled(x))
    return lambda x: tuple(
        keras.ops.convert_to_numpy(part)
        for part in forward(tf.nest.map_structure(lambda tensor: tensor.numpy(), x))
    )


def _run_teacher(teacher, dataset, top_k, dtype, path, metadata, verbose):
    from keras_kd import teacher_cache

    forward = _topk_forward(teacher, top_k)
    num_batches = int(dataset.cardinality())
    progress = keras.utils.Progbar(
        num_batches if num_batches >= 0 else None, verbose=verbose, unit_name="batch"
    )
    writer = _Writer(path)
    batch_ends, fingerprints = [0], []
    try:
        for step, (element, fingerprint, _) in enumerate(teacher_cache._fingerprinted(dataset)):
            values, indices, tail_log_masses = forward(teacher_cache._unpack(element)[0])
            writer.append(
                teacher_cache._to_storage_dtype(values, dtype), indices, tail_log_masses
            )
            batch_ends.append(batch_ends[-1] + values.shape[0])
            fingerprints.append(int(fingerprint))
            progress.update(step + 1)
        if not fingerprints:
            raise ValueError("`data` yielded no batch: there is nothing to cache.")
        batch_ends = np.asarray(batch_ends, np.int64)
        fingerprints = np.asarray(fingerprints, np.int64)
        return writer.finish(batch_ends, fingerprints, metadata, dtype)
    except BaseException:
        writer.discard()
        raise


class _Writer:
    """Appends batches to flat files under `path + ".partial"` (or to lists without a path)
    and publishes the directory atomically, so an interrupted run leaves no cache."""

    def __init__(self, path):
        self.path = path
        self.values, self.indices, self.tail_log_masses = [], [], []
        self.row_shape = None
        if path is not None:
            if os.path.isfile(path):
                raise ValueError(
                    f"`path` for a top-k cache names a directory; got the file {path!r}."
                )
            self.partial = f"{path}.partial"
            shutil.rmtree(self.partial, ignore_errors=True)
            os.makedirs(self.partial)
            self.value_file = open(os.path.join(self.partial, _VALUES_FILE), "wb")
            self.index_file = open(os.path.join(self.partial, _INDICES_FILE), "wb")
            self.tail_file = open(os.path.join(self.partial, _TAIL_FILE), "wb")

    def append(self, values, indices, tail_log_masses):
        self.row_shape = values.shape[1:]
        if self.path is None:
            self.values.append(values)
            self.indices.append(indices)
            self.tail_log_masses.append(tail_log_masses)
        else:
            self.value_file.write(np.ascontiguousarray(values).tobytes())
            self.index_file.write(np.ascontiguousarray(indices, np.int32).tobytes())
            self.tail_file.write(np.ascontiguousarray(tail_log_masses, np.float32).tobytes())

    def finish(self, batch_ends, fingerprints, metadata, dtype):
        if self.path is None:
            return _TopKCache(
                np.concatenate(self.values),
                np.concatenate(self.indices),
                np.concatenate(self.tail_log_masses).astype(np.float32),
                batch_ends,
                fingerprints,
            )
        self._close()
        metadata = {**metadata, "row_shape": list(self.row_shape), "rows": int(batch_ends[-1])}
        with open(os.path.join(self.partial, _METADATA_FILE), "w") as file:
            json.dump(metadata, file)
        np.savez(
            os.path.join(self.partial, _INDEX_FILE),
            batch_ends=batch_ends,
            input_fingerprints=fingerprints,
        )
        os.replace(self.partial, self.path)
        return _load(self.path, metadata)

    def discard(self):
        if self.path is not None:
            self._close()
            shutil.rmtree(self.partial, ignore_errors=True)

    def _close(self):
        for file in (self.value_file, self.index_file, self.tail_file):
            file.close()


def _load(path, expected):
    """The cache at `path`, its values and indices memory-mapped (read on demand)."""
    from keras_kd import teacher_cache  # imported here, as in cache_teacher_topk

    def not_a_cache(error):
        return ValueError(
            f"`path`={path!r} exists but is not a keras_kd top-k teacher cache ({error}). "
            "Delete it or name another path."
        )

    try:
        with open(os.path.join(path, _METADATA_FILE)) as file:
            metadata = json.load(file)
        if not isinstance(metadata, dict):
            raise ValueError(f"{_METADATA_FILE} holds no dict")
    except (OSError, ValueError) as error:
        raise not_a_cache(error) from error
    # Before mapping the files: another format's files have other sizes, which would
    # read as "not a cache" rather than "made with another file format".
    teacher_cache._check_metadata(path, metadata, expected, _METADATA_FIELDS)
    try:
        with np.load(os.path.join(path, _INDEX_FILE)) as index:
            batch_ends, fingerprints = index["batch_ends"], index["input_fingerprints"]
        shape = (metadata["rows"], *metadata["row_shape"])
        values = np.memmap(
            os.path.join(path, _VALUES_FILE), dtype=metadata["dtype"], mode="r", shape=shape
        )
        indices = np.memmap(
            os.path.join(path, _INDICES_FILE), dtype=np.int32, mode="r", shape=shape
        )
        tail_log_masses = np.memmap(
            os.path.join(path, _TAIL_FILE),
            dtype=np.float32,
            mode="r",
            shape=(*shape[:-1], len(TEACHER_TOPK_TAIL_TEMPERATURES)),
        )
    except (OSError, KeyError, ValueError, TypeError) as error:
        raise not_a_cache(error) from error
    return _TopKCache(values, indices, tail_log_masses, batch_ends, fingerprints)


def _attach(dataset, cache, check_inputs):
    """`(x, {"labels", "teacher_topk_logits", "teacher_topk_indices",
    "teacher_topk_tail_log_mass"}[, w])` per batch.

    Each batch's slice is read from the (memory-mapped) arrays when tf.data asks for
    it, so only the batches in flight are in memory. Past the cached batches comes an
    endless sentinel with fingerprint -1, so data that grew fails loudly.
    """
    from keras_kd import teacher_cache

    num_batches = cache.num_batches
    row_shape = cache.values.shape[1:]
    value_dtype = tf.as_dtype(cache.values.dtype)
    tail_shape = (*row_shape[:-1], len(TEACHER_TOPK_TAIL_TEMPERATURES))

    def read(index):
        index = int(index)
        if index >= num_batches:
            empty = (0, *row_shape)
            return (
                np.zeros(empty, cache.values.dtype),
                np.zeros(empty, np.int32),
                np.zeros((0, *tail_shape), np.float32),
            )
        start, end = cache.batch_ends[index], cache.batch_ends[index + 1]
        return (
            np.asarray(cache.values[start:end]),
            np.asarray(cache.indices[start:end]),
            np.asarray(cache.tail_log_masses[start:end]),
        )

    stored = tf.data.Dataset.from_tensor_slices(
        (cache.input_fingerprints, np.arange(num_batches, dtype=np.int64))
    ).concatenate(
        tf.data.Dataset.from_tensor_slices(
            (np.full(1, -1, np.int64), np.full(1, num_batches, np.int64))
        ).repeat()
    )

    def attach(element, stored_batch):
        x, y, sample_weight = teacher_cache._unpack(element)
        fingerprint, index = stored_batch
        values, indices, tail_log_masses = tf.numpy_function(
            read, [index], (value_dtype, tf.int32, tf.float32), stateful=False
        )
        values.set_shape((None, *row_shape))
        indices.set_shape((None, *row_shape))
        tail_log_masses.set_shape((None, *tail_shape))
        if check_inputs:
            same_inputs = tf.raw_ops.Assert(
                condition=tf.equal(teacher_cache._full_fingerprint(x), fingerprint),
                data=[
                    "keras_kd.cache_teacher_logits(top_k=...): this batch's inputs differ "
                    "from those the teacher saw (random augmentation, reshuffling before "
                    f"batching, or data changed or grown since caching; {num_batches} "
                    "batches were cached), so its cached logits are stale; batch index:",
                    index,
                ],
            )
            with tf.control_dependencies([same_inputs]):
                values = tf.identity(values)
        targets = {
            TEACHER_TOPK_LOGITS: values,
            TEACHER_TOPK_INDICES: indices,
            TEACHER_TOPK_TAIL_LOG_MASS: tail_log_masses,
        }
        if y is not None:
            targets[LABELS] = y
        return (x, targets) if sample_weight is None else (x, targets, sample_weight)

    return (
        tf.data.Dataset.zip(dataset, stored)
        .map(attach, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .prefetch(tf.data.AUTOTUNE)
    )
