"""Token-level distillation: (batch, sequence, K) logits with padding masks as
`sample_weight`, through the Distiller, against float64 NumPy.

The reduction convention: by default the soft term is reduced exactly as the compiled
hard-label loss is; an explicit `reduction=` overrides it; logs follow.
"""

import keras
import numpy as np
import pytest
from _numpy_reference import distillation_loss as np_kd
from _numpy_reference import log_softmax as np_log_softmax

import keras_kd
from keras_kd import Distiller

SEQUENCE, VOCABULARY, NUM_CLASSES = 6, 13, 11
TEMPERATURE, ALPHA = 2.0, 0.7


def np_cross_entropy(labels, logits):
    return -np.take_along_axis(np_log_softmax(logits), labels[..., None], -1)[..., 0]


def np_reduce(per_token, mask, reduction):
    if reduction == "mean_with_sample_weight":
        return (per_token * mask).sum() / mask.sum()
    return (per_token * mask).sum() / mask.size  # sum_over_batch_size


def _token_model(seed, width):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((SEQUENCE,), dtype="int32"),
            # Logits of order 1-10, so that the soft term is not vanishingly small.
            keras.layers.Embedding(
                VOCABULARY,
                width,
                embeddings_initializer=keras.initializers.RandomNormal(stddev=2.0),
            ),
            keras.layers.Dense(NUM_CLASSES),
        ]
    )


def _data():
    rng = np.random.default_rng(0)
    x = rng.integers(0, VOCABULARY, size=(4, SEQUENCE)).astype("int32")
    labels = rng.integers(0, NUM_CLASSES, size=(4, SEQUENCE)).astype("int32")
    lengths = np.array([6, 2, 4, 1])
    mask = (np.arange(SEQUENCE)[None, :] < lengths[:, None]).astype("float32")
    return x, labels, mask


@pytest.mark.parametrize(
    "hard_reduction,reduction,expected_soft_reduction",
    [
        ("mean_with_sample_weight", None, "mean_with_sample_weight"),
        ("sum_over_batch_size", None, "sum_over_batch_size"),
        ("mean_with_sample_weight", "sum_over_batch_size", "sum_over_batch_size"),
        ("sum_over_batch_size", "mean_with_sample_weight", "mean_with_sample_weight"),
    ],
)
def test_soft_term_follows_the_hard_loss_reduction(
    hard_reduction, reduction, expected_soft_reduction
):
    teacher, student = _token_model(1, 16), _token_model(2, 4)
    x, labels, mask = _data()
    distiller = Distiller(teacher, student, TEMPERATURE, ALPHA, reduction=reduction)
    distiller.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.0),  # logs the initial loss
        loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction=hard_reduction
        ),
    )
    teacher_logits = keras.ops.convert_to_numpy(teacher(x))
    student_logits = keras.ops.convert_to_numpy(student(x))
    per_token_soft = np_kd(teacher_logits, student_logits, TEMPERATURE)
    soft = np_reduce(per_token_soft, mask, expected_soft_reduction)
    hard = np_reduce(np_cross_entropy(labels, student_logits), mask, hard_reduction)

    total = distiller.compute_loss(x, labels, distiller(x), sample_weight=mask, training=True)
    np.testing.assert_allclose(float(total), ALPHA * soft + (1 - ALPHA) * hard, rtol=1e-5)

    history = distiller.fit(x, labels, sample_weight=mask, batch_size=4, epochs=1, verbose=0)
    np.testing.assert_allclose(history.history["distillation_loss"][0], soft, rtol=1e-5)
    np.testing.assert_allclose(history.history["student_loss"][0], hard, rtol=1e-5)
    np.testing.assert_allclose(
        history.history["loss"][0], ALPHA * soft + (1 - ALPHA) * hard, rtol=1e-5
    )


def test_per_token_mean_does_not_drift_with_padding():
    # Appending pure padding changes nothing under the default convention.
    teacher, student = _token_model(1, 16), _token_model(2, 4)
    x, labels, mask = _data()
    distiller = Distiller(teacher, student, TEMPERATURE, ALPHA)
    distiller.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction="mean_with_sample_weight"
        ),
    )
    padded = (np.concatenate([x, x]), np.concatenate([labels, labels]))
    padded_mask = np.concatenate([mask, np.zeros_like(mask)])
    loss = distiller.compute_loss(x, labels, distiller(x), sample_weight=mask)
    padded_loss = distiller.compute_loss(
        padded[0], padded[1], distiller(padded[0]), sample_weight=padded_mask
    )
    np.testing.assert_allclose(float(loss), float(padded_loss), rtol=1e-6)


def test_distiller_divergence_and_reduction_round_trip(tmp_path):
    teacher, student = _token_model(1, 16), _token_model(2, 4)
    distiller = Distiller(
        teacher, student, TEMPERATURE, 1.0, divergence="jsd", beta=0.3,
        reduction="mean_with_sample_weight",
    )
    distiller.compile(optimizer="sgd")
    path = str(tmp_path / "distiller.keras")
    distiller.save(path)
    restored = keras.saving.load_model(path)
    assert (restored.divergence, restored.beta, restored.reduction) == (
        "jsd", 0.3, "mean_with_sample_weight",
    )


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"reduction": "none"}, "`reduction` must be one of"),
        ({"divergence": "forward"}, "`divergence` must be one of"),
        ({"beta": 1.5}, "`beta` must be in"),
    ],
)
def test_bad_distiller_arguments_raise(kwargs, message):
    teacher = _token_model(1, 4)
    with pytest.raises(ValueError, match=message):
        Distiller(teacher, _token_model(2, 4), **kwargs)
    assert teacher.trainable  # rejected before anything was frozen


# --- the ECE metric and the calibration tools on token-level predictions -----------


def _token_predictions():
    rng = np.random.default_rng(3)
    logits = (rng.normal(size=(4, SEQUENCE, NUM_CLASSES)) * 3).astype("float32")
    _, labels, mask = _data()
    return logits, labels, mask


def test_ece_metric_honours_a_token_mask(reference_calibration_error):
    from keras_kd.metrics import ExpectedCalibrationError

    logits, labels, mask = _token_predictions()
    metric = ExpectedCalibrationError(num_bins=10, from_logits=True)
    metric.update_state(labels, logits, sample_weight=mask)
    probs = np.exp(np_log_softmax(logits))
    expected = reference_calibration_error(probs, labels, 10, sample_weight=mask)
    np.testing.assert_allclose(float(metric.result()), expected, rtol=1e-5, atol=1e-7)
    # Padding positions carry no weight: dropping them gives the same number.
    real = mask.astype(bool)
    np.testing.assert_allclose(
        expected, reference_calibration_error(probs[real], labels[real], 10), rtol=1e-6
    )


def test_expected_calibration_error_function_honours_a_token_mask(reference_calibration_error):
    from keras_kd.calibration import expected_calibration_error

    logits, labels, mask = _token_predictions()
    value = expected_calibration_error(
        logits, labels, num_bins=10, from_logits=True, sample_weight=mask
    )
    probs = np.exp(np_log_softmax(logits))
    expected = reference_calibration_error(probs, labels, 10, sample_weight=mask)
    np.testing.assert_allclose(float(value), expected, rtol=1e-5, atol=1e-7)


def test_ece_callback_honours_a_token_mask(reference_calibration_error):
    from keras_kd.callbacks import ECECallback

    x, labels, mask = _data()
    model = _token_model(1, 16)
    model.compile(
        optimizer=keras.optimizers.SGD(0.0),  # the weights, hence the logits, stay as built
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    callback = ECECallback(validation_data=(x, labels, mask), num_bins=10, from_logits=True)
    history = model.fit(x, labels, epochs=1, verbose=0, callbacks=[callback])
    probs = np.exp(np_log_softmax(keras.ops.convert_to_numpy(model(x))))
    expected = reference_calibration_error(probs, labels, 10, sample_weight=mask)
    np.testing.assert_allclose(history.history["val_ece"][0], expected, rtol=1e-5, atol=1e-7)


def test_reliability_diagrams_of_token_logits_honour_the_padding_mask(tmp_path):
    """(batch, sequence, K) logits with a (batch, sequence) mask: the diagram (from the
    function and from `ECECallback`) is that of the real tokens alone."""
    pytest.importorskip("matplotlib")
    rng = np.random.default_rng(3)
    batch, sequence, classes = 6, 5, 4
    logits = rng.normal(scale=3.0, size=(batch, sequence, classes)).astype("float32")
    labels = rng.integers(0, classes, (batch, sequence))
    mask = (rng.random((batch, sequence)) > 0.4).astype("float32")
    real = mask.reshape(-1) > 0
    masked_ece = keras_kd.expected_calibration_error(
        logits, labels, from_logits=True, sample_weight=mask
    )
    real_only_ece = keras_kd.expected_calibration_error(
        logits.reshape(-1, classes)[real], labels.reshape(-1)[real], from_logits=True
    )
    # The same float32 numbers summed over arrays of other lengths: equal to rounding.
    assert masked_ece == pytest.approx(real_only_ece, rel=1e-6, abs=1e-9)
    figure = keras_kd.reliability_diagram(logits, labels, from_logits=True, sample_weight=mask)
    assert f"ECE = {real_only_ece:.4f}" in figure.axes[0].get_title()
    # The callback draws the same diagram from the validation data it streams.
    inputs = keras.Input((sequence, 3))
    model = keras.Model(inputs, keras.layers.Dense(classes)(inputs))
    model.compile("sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = rng.normal(size=(batch, sequence, 3)).astype("float32")
    callback = keras_kd.ECECallback((x, labels, mask), from_logits=True, diagram_dir=tmp_path)
    model.fit(x, labels, sample_weight=mask, epochs=1, verbose=0, callbacks=[callback])
    assert [path.name for path in tmp_path.iterdir()] == ["reliability_final.png"]


def test_a_term_with_its_own_reduction_is_refused_not_overridden():
    # The Distiller reduces every term itself; a term's own "sum" would be lost silently.
    teacher, student = _token_model(0, 8), _token_model(1, 4)
    term = keras_kd.DistillationLoss(TEMPERATURE, reduction="sum")
    with pytest.raises(ValueError, match=r"has reduction='sum'.*Pass reduction='sum'"):
        Distiller(teacher, student, distillation_loss=term)
    distiller = Distiller(teacher, student, distillation_loss=term, reduction="sum")
    assert distiller.reduction == "sum"
