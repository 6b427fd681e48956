"""Distil KerasHub models: a small causal language model and a small text classifier.

    python examples/distil_language_model.py           # 30 + 20 epochs
    python examples/distil_language_model.py --quick   # a few epochs each

Both models are built from config (no download, no preset): a character-level GPT-2
on a toy corpus, and a one-layer BERT classifier. Each teacher is trained with its
own `fit` (its preprocessor attached, on raw strings); the student, with the same
preprocessor attached, is distilled on the preprocessed data, per real token: the
causal-LM preprocessor yields `(token ids, next-token labels, padding mask)`, which
the Distiller takes as `(x, y, sample_weight)`, and
`SparseCategoricalCrossentropy(reduction="mean_with_sample_weight")` makes both terms
means over real tokens. The causal LM is also distilled from a top-k teacher cache.
Each student is shipped with `save_to_preset` (reloadable with `from_preset`).

Needs the `lm` extra: `pip install "keras-kd[lm]"` (keras-hub).
"""

import argparse
import os
import string
import tempfile

import keras
import numpy as np
import tensorflow as tf

import keras_kd

try:
    import keras_hub
except ImportError as error:  # the optional `lm` extra
    raise ImportError(
        "examples/distil_language_model.py needs keras-hub: pip install 'keras-kd[lm]'"
    ) from error

SEQUENCE_LENGTH = 24
WORDS = ["the", "cat", "dog", "sat", "ran", "on", "to", "mat", "park", "a", "red", "big"]


def corpus(num_sentences, seed=0):
    """Toy sentences with structure a causal LM can learn: subject, verb, place."""
    rng = np.random.default_rng(seed)
    subjects, verbs, places = ["cat", "dog"], {"cat": "sat on", "dog": "ran to"}, ["mat", "park"]
    sentences, labels = [], []
    for _ in range(num_sentences):
        subject = subjects[rng.integers(2)]
        adjective = ["red", "big"][rng.integers(2)]
        sentences.append(f"the {adjective} {subject} {verbs[subject]} a {places[rng.integers(2)]}")
        labels.append(int(subject == "dog"))
    return sentences, np.asarray(labels, "int32")


def character_preprocessor():
    """A GPT-2 causal-LM preprocessor whose BPE vocabulary is single characters."""
    letters = list(string.ascii_lowercase)
    vocabulary = {"<|endoftext|>": 0, **{c: i + 1 for i, c in enumerate(letters)}}
    vocabulary.update({"Ġ": len(vocabulary), "Ġa": len(vocabulary) + 1})
    tokenizer = keras_hub.models.GPT2Tokenizer(vocabulary=vocabulary, merges=["Ġ a"])
    return keras_hub.models.GPT2CausalLMPreprocessor(tokenizer, sequence_length=SEQUENCE_LENGTH)


def causal_lm(num_layers, hidden_dim, seed):
    keras.utils.set_random_seed(seed)
    preprocessor = character_preprocessor()
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=preprocessor.tokenizer.vocabulary_size(),
        num_layers=num_layers,
        num_heads=2,
        hidden_dim=hidden_dim,
        intermediate_dim=2 * hidden_dim,
        max_sequence_length=SEQUENCE_LENGTH,
        dropout=0.0,
    )
    return keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=preprocessor)


def text_classifier(hidden_dim, seed):
    keras.utils.set_random_seed(seed)
    tokenizer = keras_hub.models.BertTokenizer(
        vocabulary=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    )
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(tokenizer, sequence_length=12)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=tokenizer.vocabulary_size(),
        num_layers=1,
        num_heads=2,
        hidden_dim=hidden_dim,
        intermediate_dim=2 * hidden_dim,
        max_sequence_length=12,
        dropout=0.0,
    )
    # activation=None (the default): the classifier outputs logits, as the Distiller needs.
    return keras_hub.models.BertTextClassifier(
        backbone=backbone, num_classes=2, preprocessor=preprocessor, dropout=0.0
    )


def per_token_loss():
    return keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, reduction="mean_with_sample_weight"
    )


def distil_causal_lm(texts, teacher_epochs, student_epochs, preset_dir, sample=True):
    teacher = causal_lm(num_layers=2, hidden_dim=64, seed=1)
    # The task's own fit applies its preprocessor to the raw strings.
    teacher.compile(optimizer=keras.optimizers.Adam(3e-3), loss=per_token_loss())
    teacher.fit(texts, batch_size=16, epochs=teacher_epochs, verbose=0)

    student = causal_lm(num_layers=1, hidden_dim=16, seed=2)
    # The Distiller does not: map the preprocessor over the strings first.
    data = tf.data.Dataset.from_tensor_slices(texts).batch(16).map(student.preprocessor)
    distiller = keras_kd.Distiller(teacher, student, temperature=2.0, alpha=0.5)
    distiller.compile(optimizer=keras.optimizers.Adam(3e-3), loss=per_token_loss())
    history = distiller.fit(data, epochs=student_epochs, verbose=0)

    # The same, from a top-k cache: 8 logits of the 29-token vocabulary per position,
    # memory-mapped from disk; the teacher does not run during fit.
    with tempfile.TemporaryDirectory() as cache_dir:
        cached = keras_kd.cache_teacher_logits(
            teacher, data, top_k=8, dtype="float16", path=os.path.join(cache_dir, "topk"),
            verbose=0,
        )
        cached_student = causal_lm(num_layers=1, hidden_dim=16, seed=2)
        cached_distiller = keras_kd.Distiller(teacher, cached_student, temperature=2.0, alpha=0.5)
        cached_distiller.compile(optimizer=keras.optimizers.Adam(3e-3), loss=per_token_loss())
        cached_history = cached_distiller.fit(cached, epochs=student_epochs, verbose=0)

    student.save_to_preset(preset_dir)
    return {
        "distillation_loss": history.history["distillation_loss"],
        "student_loss": history.history["student_loss"],
        "topk_cache_distillation_loss": cached_history.history["distillation_loss"],
        # Generation compiles a sampler: skipped in --quick.
        "sample": student.generate("the", max_length=SEQUENCE_LENGTH) if sample else None,
        "preset": preset_dir,
    }


def distil_text_classifier(texts, labels, teacher_epochs, student_epochs, preset_dir):
    teacher = text_classifier(hidden_dim=32, seed=3)
    teacher.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    teacher.fit(texts, labels, batch_size=16, epochs=teacher_epochs, verbose=0)

    student = text_classifier(hidden_dim=8, seed=4)
    data = tf.data.Dataset.from_tensor_slices((texts, labels)).batch(16).map(student.preprocessor)
    distiller = keras_kd.Distiller(teacher, student, temperature=2.0, alpha=0.9)
    distiller.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = distiller.fit(data, epochs=student_epochs, verbose=0)
    student.save_to_preset(preset_dir)
    return {
        "distillation_loss": history.history["distillation_loss"],
        "accuracy": history.history["accuracy"][-1],
        "preset": preset_dir,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few epochs each")
    parser.add_argument("--output", default=None, help="where to save the student presets")
    args = parser.parse_args(argv)
    output = args.output or tempfile.mkdtemp(prefix="keras_kd_lm_")
    texts, labels = corpus(32 if args.quick else 512)
    epochs = (3, 2) if args.quick else (30, 20)
    results = {
        "causal_lm": distil_causal_lm(
            texts, *epochs, os.path.join(output, "causal_lm"), sample=not args.quick
        ),
        "text_classifier": distil_text_classifier(
            texts, labels, *epochs, os.path.join(output, "text_classifier")
        ),
    }
    for name, result in results.items():
        print(f"{name}: distillation loss per epoch "
              f"{[round(value, 4) for value in result['distillation_loss']]}, "
              f"student preset in {result['preset']}")
    if results["causal_lm"]["sample"] is not None:
        print(f"causal LM student samples: {results['causal_lm']['sample']!r}")
    return results


if __name__ == "__main__":
    main()
