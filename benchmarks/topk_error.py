"""The top-k teacher cache's approximation error on a trained language model's logits.

    python benchmarks/topk_error.py            # ~2k-word vocabulary, a few minutes of CPU
    python benchmarks/topk_error.py --reuse    # re-measure on the logits the last full run saved
    python benchmarks/topk_error.py --quick    # a smoke test

Trains a small word-level GPT-2 (KerasHub, built from config, no download) as the
teacher on text available offline (the docstrings of Python's standard library), and
a smaller one for a few steps as the student; a full run saves their held-out logits
to /tmp for `--reuse`. On held-out positions it reports, for each k and temperature T
(T = 1, 2, 4 stored in the cache; 0.5, 1.5, 3 interpolated), the teacher's tempered
probability mass outside its top k and, against the dense teacher, the relative error
of the mean per-token `T^2 KL` loss and the mean over tokens of the relative L2 error
of its gradient with respect to the student logits, `T (p_s - p_t)`, for four targets
a top-k cache can give:

- renormalized: the top k alone (no tail);
- one_number: the top k plus an even tail carrying the tail's mass at T = 1 (the
  format-2 cache; at other T, the chord of `L(s) = log sum_tail exp(s z_i)` from
  s = 0 to s = 1);
- tempered: what the Distiller trains on (`keras_kd._sequence.dense_teacher_logits`),
  an even tail carrying the tempered tail mass interpolated from T = 1, 2, 4, 8;
- bucket: KL over the k + 1 coarsened categories (the top k and the tail), the
  student's tail mass from its own logits.
"""

import argparse
import ast
import collections
import pathlib
import re
import sysconfig

import keras
import numpy as np

from keras_kd import _sequence
from keras_kd import losses
from keras_kd.targets import TEACHER_TOPK_TAIL_TEMPERATURES

TEACHER_FILE = "/tmp/keras_kd_topk_teacher_logits.npy"
STUDENT_FILE = "/tmp/keras_kd_topk_student_logits.npy"


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
    parser.add_argument(
        "--reuse", action="store_true",
        help=f"measure on the logits a full run saved ({TEACHER_FILE}, {STUDENT_FILE}) "
        "instead of training again",
    )
    args = parser.parse_args(argv)
    if args.reuse:
        teacher_logits, student_logits = np.load(TEACHER_FILE), np.load(STUDENT_FILE)
        print(f"Logits of {TEACHER_FILE} and {STUDENT_FILE}")
    else:
        teacher_logits, student_logits = train(args.quick)
    return measure(teacher_logits, student_logits)


def train(quick):
    """Held-out (teacher logits, student logits) of freshly trained GPT-2s."""
    vocabulary_size, sequence_length = (512, 32) if quick else (2048, 64)
    text = stdlib_text(40 if quick else 400)
    x, y = token_windows(text, vocabulary_size, sequence_length)
    held_out = max(len(x) // 10, 8)
    train, test = slice(held_out, None), slice(None, held_out)
    inputs = lambda part: {"token_ids": x[part], "padding_mask": np.ones_like(x[part], bool)}
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    teacher = language_model(vocabulary_size, sequence_length, 2, 128, seed=1)
    teacher.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss)
    teacher.fit(inputs(train), y[train], batch_size=32, epochs=1 if quick else 6, verbose=0)
    student = language_model(vocabulary_size, sequence_length, 1, 32, seed=2)
    student.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss)
    student.fit(inputs(train), y[train], batch_size=32, epochs=1, verbose=0)

    teacher_logits = np.asarray(teacher.predict(inputs(test), verbose=0), "float32")
    student_logits = np.asarray(student.predict(inputs(test), verbose=0), "float32")
    if not quick:
        # Held-out logits of the trained models, to re-measure with --reuse.
        np.save(TEACHER_FILE, teacher_logits)
        np.save(STUDENT_FILE, student_logits)
    teacher_nll = float(np.mean(loss(y[test], teacher_logits)))
    print(f"{x.shape[0]} windows of {sequence_length} tokens, K = {vocabulary_size}; "
          f"{held_out * sequence_length} held-out positions; teacher NLL {teacher_nll:.3f} nats, "
          f"student NLL {float(np.mean(loss(y[test], student_logits))):.3f}")
    return teacher_logits, student_logits


def targets(teacher_logits, student_logits, top_k, temperature):
    """The approximate dense targets a top-k cache can give, keyed by name."""
    num_classes = teacher_logits.shape[-1]
    values, indices = keras.ops.top_k(teacher_logits, top_k, sorted=True)
    indices = keras.ops.cast(indices, "int32")
    log_masses = _sequence.top_k_tail_log_masses(teacher_logits, indices)
    renormalized = {"values": values, "indices": indices}
    # What keras_kd trains on: an even tail with the tempered mass, interpolated.
    tempered = {**renormalized, "tail_log_mass": log_masses}
    # The format-2 cache's: an even tail with the mass at T = 1, L(1 / T) on the chord
    # from s = 0 to s = 1, i.e. the stored log-masses all replaced by the line through L(1).
    one_number_masses = keras.ops.stack(
        [log_masses[..., 0] / t + (1 - 1 / t) * np.log(num_classes - top_k)
         for t in TEACHER_TOPK_TAIL_TEMPERATURES], axis=-1,
    )
    one_number = {**renormalized, "tail_log_mass": one_number_masses}
    dense = {
        name: _sequence.dense_teacher_logits(target, student_logits, "kl", temperature)
        for name, target in (("renormalized", renormalized), ("one_number", one_number),
                             ("tempered", tempered))
    }
    # One tail bucket: KL between the (k + 1)-category coarsenings. As a dense target, the
    # tail takes the student's own tempered shape scaled to the teacher's tail mass; with
    # it stopped, its KL and gradient are the coarsened ones.
    in_top = _sequence._scatter_rows(keras.ops.ones_like(values), indices, num_classes) > 0
    student_tail = keras.ops.where(in_top, -np.inf, student_logits / temperature)
    shift = _sequence.interpolated_tail_log_mass(log_masses, num_classes - top_k, temperature)
    shift = shift - keras.ops.logsumexp(student_tail, axis=-1)
    dense["bucket"] = keras.ops.where(
        in_top, teacher_logits, student_logits + temperature * shift[..., None]
    )
    return dense


def measure(teacher_logits, student_logits, chunk=4096):
    num_classes = teacher_logits.shape[-1]
    teacher_logits = teacher_logits.reshape(-1, num_classes)
    student_logits = student_logits.reshape(-1, num_classes)
    names = ("renormalized", "one_number", "tempered", "bucket")
    print("Relative error of the mean per-token T^2 KL / mean relative L2 error of its "
          "gradient w.r.t. the student logits, against the dense teacher:")
    print(f"{'k':<5}{'T':<6}{'tail mass mean (max)':<22}{'dense T^2 KL':<14}"
          + "".join(f"{name:<22}" for name in names))
    rows = []
    for top_k in (8, 32, 128):
        for temperature in (1.0, 2.0, 4.0, 0.5, 1.5, 3.0):
            sums = collections.defaultdict(float)
            tail_max = 0.0
            for start in range(0, len(teacher_logits), chunk):
                teacher = keras.ops.convert_to_tensor(teacher_logits[start:start + chunk])
                student = keras.ops.convert_to_tensor(student_logits[start:start + chunk])
                student_probs = keras.ops.softmax(student / temperature, axis=-1)
                dense_probs = keras.ops.softmax(teacher / temperature, axis=-1)
                # The gradient of T^2 KL(p_t || p_s) w.r.t. the student logits.
                dense_gradient = temperature * (student_probs - dense_probs)
                dense_norm = np.linalg.norm(np.asarray(dense_gradient), axis=-1)
                sums["dense"] += float(np.sum(
                    losses.distillation_loss(teacher, student, temperature)))
                _, top = keras.ops.top_k(teacher, top_k)
                tail = 1.0 - np.take_along_axis(np.asarray(dense_probs), np.asarray(top), -1).sum(-1)
                sums["tail"] += float(tail.sum())
                tail_max = max(tail_max, float(tail.max()))
                for name, target in targets(teacher, student, top_k, temperature).items():
                    sums[name] += float(np.sum(
                        losses.distillation_loss(target, student, temperature)))
                    gradient = temperature * (
                        student_probs - keras.ops.softmax(target / temperature, axis=-1))
                    error = np.linalg.norm(np.asarray(gradient - dense_gradient), axis=-1)
                    sums[name + " gradient"] += float(np.sum(error / dense_norm))
            count = len(teacher_logits)
            dense = sums["dense"] / count
            errors = [(abs(sums[name] / count - dense) / dense, sums[name + " gradient"] / count)
                      for name in names]
            rows.append((top_k, temperature, sums["tail"] / count, tail_max, dense, *errors))
            print(f"{top_k:<5}{temperature:<6g}{sums['tail'] / count:>8.3f} ({tail_max:.3f})"
                  f"       {dense:<14.3f}"
                  + "".join(f"{value:>8.1%} / {grad:<11.1%}" for value, grad in errors))
    return rows


if __name__ == "__main__":
    main()
