"""The top-k teacher cache: per position, the teacher's k largest logits and their
class indices, memory-mapped from disk.

A language model's dense logits do not fit: 1M tokens of a 256k vocabulary are 954
GiB in float32. Keeping the k largest per position costs `k x (value bytes + 4)`
bytes (float16 values and int32 indices: 6k bytes; 600 bytes at k = 100) and, with a
`path`, lives in two flat files read through `np.memmap`, batch by batch, so the
process's memory does not grow with the cache.

The Distiller trains on the *renormalized* top-k teacher (`keras_kd._sequence`):
the teacher's tempered softmax restricted to its k classes. Chosen over "top-k plus
one tail bucket" because it needs nothing but the k logits at every temperature: the
tail's mass at temperature T depends on every tail logit, so one stored number (the
tail's log-mass at T = 1) would tie the cache to one temperature, while this cache,
like the dense one, serves any. Its error is the tail mass moved onto the top k,
measured in docs/guides/language-models.md; with k = K it is exactly the dense target.
"""

import json
import os
import shutil

import keras
import numpy as np
import tensorflow as tf

from keras_kd import _teacher
from keras_kd import _validation
from keras_kd.targets import LABELS
from keras_kd.targets import TEACHER_TOPK_INDICES
from keras_kd.targets import TEACHER_TOPK_LOGITS

_FORMAT = "keras_kd.teacher_topk/1"
_VALUES_FILE, _INDICES_FILE, _INDEX_FILE = "values.bin", "indices.bin", "batches.npz"
_METADATA_FILE = "metadata.json"


class _TopKCache:
    """Top-k values and indices of all positions, where each batch ends, batch hashes."""

    def __init__(self, values, indices, batch_ends, input_fingerprints):
        self.values = values
        self.indices = indices
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
        "teacher_weights_sha256": teacher_cache._weights_fingerprint(teachers),
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
    """Batch inputs -> the teacher's (top-k logits, int32 indices) in NumPy, on device."""

    def forward(x):
        logits = _teacher.member_logits([teacher], x)[0]
        if logits.shape[-1] is not None and top_k > logits.shape[-1]:
            raise ValueError(
                f"`top_k`={top_k} exceeds the teacher's {logits.shape[-1]} classes; use "
                f"top_k <= {logits.shape[-1]} (top_k equal to it keeps every logit)."
            )
        values, indices = keras.ops.top_k(logits, top_k, sorted=True)
        return values, keras.ops.cast(indices, "int32")

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
        for step, (element, fingerprint) in enumerate(teacher_cache._fingerprinted(dataset)):
            values, indices = forward(teacher_cache._unpack(element)[0])
            writer.append(teacher_cache._to_storage_dtype(values, dtype), indices)
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
        self.values, self.indices = [], []
        self.row_shape = None
        if path is not None:
            if os.path.isfile(path):
                raise ValueError(f"`path` for a top-k cache names a directory; got the file {path!r}.")
            self.partial = f"{path}.partial"
            shutil.rmtree(self.partial, ignore_errors=True)
            os.makedirs(self.partial)
            self.value_file = open(os.path.join(self.partial, _VALUES_FILE), "wb")
            self.index_file = open(os.path.join(self.partial, _INDICES_FILE), "wb")

    def append(self, values, indices):
        self.row_shape = values.shape[1:]
        if self.path is None:
            self.values.append(values)
            self.indices.append(indices)
        else:
            self.value_file.write(np.ascontiguousarray(values).tobytes())
            self.index_file.write(np.ascontiguousarray(indices, np.int32).tobytes())

    def finish(self, batch_ends, fingerprints, metadata, dtype):
        if self.path is None:
            return _TopKCache(
                np.concatenate(self.values), np.concatenate(self.indices), batch_ends, fingerprints
            )
        self.value_file.close()
        self.index_file.close()
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
            self.value_file.close()
            self.index_file.close()
            shutil.rmtree(self.partial, ignore_errors=True)


def _load(path, expected):
    """The cache at `path`, its values and indices memory-mapped (read on demand)."""
    try:
        with open(os.path.join(path, _METADATA_FILE)) as file:
            metadata = json.load(file)
        with np.load(os.path.join(path, _INDEX_FILE)) as index:
            batch_ends, fingerprints = index["batch_ends"], index["input_fingerprints"]
        shape = (metadata["rows"], *metadata["row_shape"])
        values = np.memmap(
            os.path.join(path, _VALUES_FILE), dtype=metadata["dtype"], mode="r", shape=shape
        )
        indices = np.memmap(os.path.join(path, _INDICES_FILE), dtype=np.int32, mode="r", shape=shape)
    except (OSError, KeyError, ValueError, TypeError) as error:
        raise ValueError(
            f"`path`={path!r} exists but is not a keras_kd top-k teacher cache ({error}). "
            "Delete it or name another path."
        ) from error
    for field, what in (
        ("format", "file format"),
        ("top_k", "top_k"),
        ("teacher_weights_sha256", "teacher weights"),
        ("dtype", "dtype"),
    ):
        if metadata.get(field) != expected[field]:
            raise ValueError(
                f"The cache {path!r} was made with another {what} ({field}="
                f"{metadata.get(field)!r}, now {expected[field]!r}): its logits do not "
                "belong to this call. Delete it or name another path."
            )
    return _TopKCache(values, indices, batch_ends, fingerprints)


def _attach(dataset, cache, check_inputs):
    """`(x, {"labels", "teacher_topk_logits", "teacher_topk_indices"}[, w])` per batch.

    Each batch's slice is read from the (memory-mapped) arrays when tf.data asks for
    it, so only the batches in flight are in memory. Past the cached batches comes an
    endless sentinel with fingerprint -1, so data that grew fails loudly.
    """
    from keras_kd import teacher_cache

    num_batches = cache.num_batches
    row_shape = cache.values.shape[1:]
    value_dtype = tf.as_dtype(cache.values.dtype)

    def read(index):
        index = int(index)
        if index >= num_batches:
            empty = (0, *row_shape)
            return np.zeros(empty, cache.values.dtype), np.zeros(empty, np.int32)
        start, end = cache.batch_ends[index], cache.batch_ends[index + 1]
        return np.asarray(cache.values[start:end]), np.asarray(cache.indices[start:end])

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
        values, indices = tf.numpy_function(read, [index], (value_dtype, tf.int32), stateful=False)
        values.set_shape((None, *row_shape))
        indices.set_shape((None, *row_shape))
        if check_inputs:
            same_inputs = tf.raw_ops.Assert(
                condition=tf.equal(teacher_cache._input_fingerprint(x, index), fingerprint),
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
        targets = {TEACHER_TOPK_LOGITS: values, TEACHER_TOPK_INDICES: indices}
        if y is not None:
            targets[LABELS] = y
        return (x, targets) if sample_weight is None else (x, targets, sample_weight)

    return (
        tf.data.Dataset.zip(dataset, stored)
        .map(attach, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .prefetch(tf.data.AUTOTUNE)
    )
