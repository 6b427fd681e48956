"""Process memory while building and reading a memory-mapped top-k teacher cache.

    python benchmarks/topk_cache_memory.py            # 400k positions, K = 8192, k = 64
    python benchmarks/topk_cache_memory.py --quick

A token-level teacher (an embedding and a dense layer to K logits) is cached with
`cache_teacher_logits(top_k=k, dtype="float16", path=...)`; the script prints the
files' size per position against the formula `k x (2 + 4) + 16`, and the process's
anonymous resident memory (`RssAnon`, Linux: what the process itself holds; the
memory-mapped cache pages are file-backed and reclaimable, so not counted) before
caching, after caching, and after reading every batch of the cache twice. Run it
with two sizes (`--examples 4000` and `8000`): the growth is the teacher pass's
working memory per batch (a batch of dense logits and its top-k), not the cache.
"""

import argparse
import os
import tempfile


def anonymous_rss_mib():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--examples", type=int, default=4000, help="sequences of 100 tokens")
    args = parser.parse_args(argv)
    import keras
    import numpy as np
    import tensorflow as tf

    import keras_kd

    examples, sequence, classes, top_k = (
        (200, 50, 1024, 16) if args.quick else (args.examples, 100, 8192, 64)
    )
    keras.utils.set_random_seed(0)
    teacher = keras.Sequential([
        keras.Input((sequence,), dtype="int32"),
        keras.layers.Embedding(1000, 32),
        keras.layers.Dense(classes),
    ])
    x = np.random.default_rng(0).integers(0, 1000, (examples, sequence)).astype("int32")
    data = tf.data.Dataset.from_tensor_slices(x).batch(50)
    before = anonymous_rss_mib()
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "cache")
        cached = keras_kd.cache_teacher_logits(
            teacher, data, top_k=top_k, dtype="float16", path=path, verbose=0
        )
        after_caching = anonymous_rss_mib()
        for _ in range(2):
            for _ in cached:
                pass
        after_reading = anonymous_rss_mib()
        size = sum(os.path.getsize(os.path.join(path, name)) for name in os.listdir(path))
    positions = examples * sequence
    print(f"{positions} positions, K = {classes}, k = {top_k}, float16")
    print(f"cache on disk: {size / 2**20:.1f} MiB = {size / positions:.2f} bytes per position "
          f"(formula k x 6 + 16 = {top_k * 6 + 16}; dense float16 would be "
          f"{positions * classes * 2 / 2**30:.2f} GiB)")
    print(f"RssAnon MiB: before {before:.0f}, after caching {after_caching:.0f}, "
          f"after reading the cache twice {after_reading:.0f}")
    return {"bytes_per_position": size / positions, "rss": (before, after_caching, after_reading)}


if __name__ == "__main__":
    main()
