"""The top-k teacher cache's approximation error on a trained language model's logits.

    python benchmarks/topk_error.py            # ~2k-word vocabulary, a few minutes of CPU
    python benchmarks/topk_error.py --quick    # a smoke test

Trains a small word-level GPT-2 (KerasHub, built from config, no download) as the
teacher on text available offline (the docstrings of Python's standard library), and
a smaller one for a few steps as the student. On held-out positions it reports, for
each k and temperature T, the teacher's tempered probability mass outside its top k
(what the renormalized top-k target moves onto the top k) and the relative error of
the per-token `T^2 KL` loss, mean over tokens, between the renormalized top-k target
and the dense one (the loss the Distiller trains on with `cache_teacher_logits(top_k=k)`
against `top_k=None`).
"""

import argparse
import ast
import collections
import pathlib
import re
import sysconfig

import keras
import numpy as np

from keras_kd import losses
from keras_kd import _sequence


def stdlib_text(max_files):
    texts = []
    for path in sorted(pathlib.Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))[:max_files]:
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.Module)):
                docstring = ast.get_docstring(node)
                if docstring:
                    texts.append(docstring)
    return " ".join(texts)


def token_windows(text, vocabulary_size, sequence_length):
    words = re.findall(r"[a-z]+|[^\sa-z]", text.lower())
    common = [w for w, _ in collections.Counter(words).most_common(vocabulary_size - 1)]
    index = {w: i + 1 for i, w in enumerate(common)}  # 0: any rarer word
    ids = np.asarray([index.get(w, 0) for w in words], "int32")
    num = len(ids) // (sequence_length + 1)
    windows = ids[: num * (sequence_length + 1)].reshape(num, sequence_length + 1)
    return windows[:, :-1], windows[:, 1:]


def language_model(vocabulary_size, sequence_length, num_layers, hidden_dim, seed):
    import keras_hub

    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=vocabulary_size, num_layers=num_layers, num_heads=2,
        hidden_dim=hidden_dim, intermediate_dim=2 * hidden_dim,
        max_sequence_length=sequence_length, dropout=0.0,
    )
    return keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    vocabulary_size, sequence_length = (512, 32) if args.quick else (2048, 64)
    text = stdlib_text(40 if args.quick else 400)
    x, y = token_windows(text, vocabulary_size, sequence_length)
    held_out = max(len(x) // 10, 8)
    train, test = slice(held_out, None), slice(None, held_out)
    inputs = lambda part: {"token_ids": x[part], "padding_mask": np.ones_like(x[part], bool)}
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    teacher = language_model(vocabulary_size, sequence_length, 2, 128, seed=1)
    teacher.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss)
    teacher.fit(inputs(train), y[train], batch_size=32, epochs=1 if args.quick else 6, verbose=0)
    student = language_model(vocabulary_size, sequence_length, 1, 32, seed=2)
    student.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss)
    student.fit(inputs(train), y[train], batch_size=32, epochs=1, verbose=0)

    teacher_logits = np.asarray(teacher.predict(inputs(test), verbose=0), "float32")
    if not args.quick:
        # Held-out logits of the trained teacher, to re-measure without retraining.
        np.save("/tmp/keras_kd_topk_teacher_logits.npy", teacher_logits)
    student_logits = np.asarray(student.predict(inputs(test), verbose=0), "float32")
    teacher_nll = float(np.mean(loss(y[test], teacher_logits)))
    print(f"{x.shape[0]} windows of {sequence_length} tokens, K = {vocabulary_size}; "
          f"{held_out * sequence_length} held-out positions; teacher NLL {teacher_nll:.3f} nats, "
          f"student NLL {float(np.mean(loss(y[test], student_logits))):.3f}")
    print("k     T   tail mass mean (max)   T^2 KL dense   "
          "relative error: renormalized   uniform tail")
    rows = []
    num_classes = teacher_logits.shape[-1]
    log_partition = np.asarray(keras.ops.logsumexp(teacher_logits, axis=-1))
    for top_k in (8, 32, 128):
        order = np.argsort(-teacher_logits, axis=-1)[..., :top_k]
        values = np.take_along_axis(teacher_logits, order, -1)
        renormalized = {"values": values, "indices": order}
        # The tail's log-mass at T = 1, spread evenly over its K - k classes.
        top_log_mass = np.asarray(keras.ops.logsumexp(values, axis=-1)) - log_partition
        tail_logit = log_partition + np.log1p(-np.exp(top_log_mass)) - np.log(num_classes - top_k)
        uniform_tail = {**renormalized, "tail_logit": tail_logit.astype("float32")}
        approximations = [
            np.asarray(_sequence.dense_teacher_logits(target, student_logits, "kl"))
            for target in (renormalized, uniform_tail)
        ]
        for temperature in (1.0, 2.0, 4.0):
            tempered = np.exp(np.asarray(losses.tempered_log_softmax(teacher_logits, temperature)))
            tail = 1.0 - np.take_along_axis(tempered, order, -1).sum(-1)
            def mean_loss(target):
                return float(np.mean(losses.distillation_loss(target, student_logits, temperature)))

            dense = mean_loss(teacher_logits)
            errors = [abs(mean_loss(target) - dense) / dense for target in approximations]
            rows.append((top_k, temperature, float(tail.mean()), float(tail.max()), dense, *errors))
            print(f"{top_k:<5} {temperature:<3g} {tail.mean():>9.4f} ({tail.max():.4f})"
                  f"   {dense:>12.4f}   {errors[0]:>27.2%}   {errors[1]:>12.2%}")
    return rows


if __name__ == "__main__":
    main()
