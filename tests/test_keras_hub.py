"""KerasHub models through the Distiller: a tiny GPT-2 causal LM built from config
(offline) is distilled per real token and its distillation loss falls; raw strings
for a task with an attached preprocessor get a clear error; the student ships with
`save_to_preset` and reloads to the same logits."""

import importlib.util
import pathlib

import keras
import numpy as np
import pytest
from _numpy_reference import log_softmax
import tensorflow as tf

import keras_kd

keras_hub = pytest.importorskip("keras_hub", reason="the `lm` extra (keras-hub) is not installed")

# A teacher and three students built and compiled: about 40 s of 2 busy cores.
pytestmark = pytest.mark.slow

_EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "distil_language_model.py"


@pytest.fixture(scope="module")
def example():
    # The example's model builders: a character-level GPT-2 built from config.
    spec = importlib.util.spec_from_file_location("distil_language_model", _EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def trained_teacher(example):
    texts, _ = example.corpus(48)
    teacher = example.causal_lm(num_layers=1, hidden_dim=32, seed=1)
    teacher.compile(optimizer=keras.optimizers.Adam(1e-2), loss=example.per_token_loss())
    teacher.fit(texts, batch_size=16, epochs=4, verbose=0)  # its own fit preprocesses
    return teacher, texts


def test_causal_lm_per_token_distillation_loss_falls(example, trained_teacher, tmp_path):
    teacher, texts = trained_teacher
    student = example.causal_lm(num_layers=1, hidden_dim=16, seed=2)
    data = tf.data.Dataset.from_tensor_slices(texts).batch(16).map(student.preprocessor)
    distiller = keras_kd.Distiller(teacher, student, temperature=2.0, alpha=1.0)
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2), loss=example.per_token_loss())
    history = distiller.fit(data, epochs=3, verbose=0)
    losses = history.history["distillation_loss"]
    assert losses[-1] < 0.8 * losses[0], losses
    # The soft term followed the compiled loss's per-real-token reduction.
    assert distiller.distillation_terms["distillation_loss"].reduction == "mean_with_sample_weight"

    x, labels, mask = next(iter(data))
    preset = str(tmp_path / "student")
    student.save_to_preset(preset)
    reloaded = keras_hub.models.CausalLM.from_preset(preset)
    np.testing.assert_allclose(reloaded(x), student(x), rtol=1e-5, atol=1e-5)


def test_per_token_loss_matches_numpy_on_a_causal_lm(example, trained_teacher):
    teacher, texts = trained_teacher
    student = example.causal_lm(num_layers=1, hidden_dim=16, seed=2)
    x, labels, mask = next(iter(
        tf.data.Dataset.from_tensor_slices(texts).batch(8).map(student.preprocessor)
    ))
    distiller = keras_kd.Distiller(teacher, student, temperature=2.0, alpha=1.0,
                                   reduction="mean_with_sample_weight")
    distiller.compile(optimizer="sgd")
    value = float(distiller.compute_loss(x, labels, distiller(x), sample_weight=mask))
    log_t, log_s = log_softmax(teacher(x), 2.0), log_softmax(student(x), 2.0)  # T = 2
    per_token = 4.0 * (np.exp(log_t) * (log_t - log_s)).sum(-1)
    weights = np.asarray(mask, np.float64)
    np.testing.assert_allclose(value, (per_token * weights).sum() / weights.sum(), rtol=1e-4)


def test_raw_strings_for_an_attached_preprocessor_raise_with_the_map_line(example, trained_teacher):
    teacher, texts = trained_teacher
    student = example.causal_lm(num_layers=1, hidden_dim=16, seed=2)
    distiller = keras_kd.Distiller(teacher, student, temperature=2.0, alpha=1.0)
    distiller.compile(optimizer="sgd", loss=example.per_token_loss())
    for raw in (np.asarray(texts), tf.data.Dataset.from_tensor_slices(texts).batch(4)):
        with pytest.raises(ValueError, match=r"(?s)holds strings.*GPT2CausalLMPreprocessor.*"
                                             r"\.map\(student\.preprocessor\)"):
            distiller.fit(raw, epochs=1, verbose=0)
