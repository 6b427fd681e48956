"""The two architectures of `keras-kd reproduce`: a small CNN teacher, an MLP student.

Both output logits and name their last hidden layer "penultimate" (the FitNets hint
and the Müller et al. projection read it) and their output layer "logits" (whose
kernel columns are the class templates of the projection).
"""

import keras
import numpy as np

PENULTIMATE = "penultimate"
LOGITS = "logits"


def build_teacher(input_shape, num_classes, config, name="teacher"):
    """Two unpadded 3x3 convolutions, max-pooling down to at most 8x8, dense, dropout."""
    inputs = keras.Input(shape=input_shape)
    x = keras.layers.Conv2D(config.teacher_filters, 3, activation="relu")(inputs)
    x = keras.layers.Conv2D(2 * config.teacher_filters, 3, activation="relu")(x)
    # 8x8 digits -> 4x4 (no pooling); 28x28 -> 24x24 -> 6x6; 32x32 -> 28x28 -> 7x7:
    # the dense layer stays small on every dataset.
    height = input_shape[0] - 4
    while height > 8:
        x = keras.layers.MaxPooling2D(2)(x)
        height //= 2
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(config.teacher_units, activation="relu", name=PENULTIMATE)(x)
    x = keras.layers.Dropout(config.teacher_dropout)(x)
    outputs = keras.layers.Dense(num_classes, name=LOGITS)(x)
    return keras.Model(inputs, outputs, name=name)


def build_student(input_shape, num_classes, config, name="student"):
    """Flatten, one ReLU hidden layer of `config.student_units`, logits."""
    inputs = keras.Input(shape=input_shape)
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(config.student_units, activation="relu", name=PENULTIMATE)(x)
    outputs = keras.layers.Dense(num_classes, name=LOGITS)(x)
    return keras.Model(inputs, outputs, name=name)


def penultimate_features(model, x):
    """The activations of `model`'s penultimate layer on `x`, as NumPy."""
    extractor = keras.Model(model.input, model.get_layer(PENULTIMATE).output)
    return predict_in_batches(extractor, x)


def predict_in_batches(model, x, batch_size=1024):
    """`model(x, training=False)` as float32 NumPy, batch by batch.

    Eager calls rather than `model.predict`: predict traces a new function for
    every model, which costs more than the forward pass of these small models.
    """
    outputs = [
        keras.ops.convert_to_numpy(model(x[start : start + batch_size], training=False))
        for start in range(0, len(x), batch_size)
    ]
    return np.concatenate(outputs).astype(np.float32)


def class_templates(model):
    """The logits layer's (kernel, bias): column k of the kernel is class k's template."""
    kernel, bias = model.get_layer(LOGITS).get_weights()
    return kernel, bias
