"""The three architectures of `keras-kd reproduce`: a convolutional teacher, a thinner
student of the same family (the main student), and an MLP (the capacity-gap student).

Sequences (MNIST-1D, shape (length, channels)) get strided 1-D convolutions, images
(shape (height, width, channels)) 3x3 2-D ones. Every model outputs logits and names
its last hidden layer "penultimate" (the FitNets hint and the Müller et al.
projection read it) and its output layer "logits" (whose kernel columns are the class
templates of the projection).
"""

import keras
import numpy as np

PENULTIMATE = "penultimate"
LOGITS = "logits"


def build_teacher(input_shape, num_classes, config, name="teacher"):
    """The teacher: convolutions of `teacher_filters`, a dense layer, dropout."""
    return _convolutional(input_shape, num_classes, config.teacher_filters,
                          config.teacher_units, config.teacher_dropout, name,
                          sequence_convolutions=3)


def build_student(input_shape, num_classes, config, name="student"):
    """The main student: the teacher's family, thinner (`student_filters`,
    `student_units`), one convolution fewer on sequences, no dropout."""
    return _convolutional(input_shape, num_classes, config.student_filters,
                          config.student_units, 0.0, name, sequence_convolutions=2)


def build_mlp(input_shape, num_classes, config, name="mlp"):
    """The capacity-gap student: flatten, two ReLU layers of `mlp_units`, logits."""
    inputs = keras.Input(shape=input_shape)
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(config.mlp_units, activation="relu")(x)
    x = keras.layers.Dense(config.mlp_units, activation="relu", name=PENULTIMATE)(x)
    outputs = keras.layers.Dense(num_classes, name=LOGITS)(x)
    return keras.Model(inputs, outputs, name=name)


def is_convolutional(build):
    return build in (build_teacher, build_student)


def _convolutional(input_shape, num_classes, filters, units, dropout, name,
                   sequence_convolutions):
    inputs = keras.Input(shape=input_shape)
    if len(input_shape) == 2:
        # MNIST-1D's 40 steps -> 20 -> 10 (-> 5): MNIST-1D's own CNN baseline shape.
        x = inputs
        for _ in range(sequence_convolutions):
            x = keras.layers.Conv1D(filters, 5, strides=2, padding="same", activation="relu")(x)
    else:
        x = keras.layers.Conv2D(filters, 3, activation="relu")(inputs)
        x = keras.layers.Conv2D(2 * filters, 3, activation="relu")(x)
        # 8x8 digits -> 4x4 (no pooling); 28x28 -> 24x24 -> 6x6; 32x32 -> 28x28 -> 7x7:
        # the dense layer stays small on every dataset.
        height = input_shape[0] - 4
        while height > 8:
            x = keras.layers.MaxPooling2D(2)(x)
            height //= 2
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(units, activation="relu", name=PENULTIMATE)(x)
    if dropout:
        x = keras.layers.Dropout(dropout)(x)
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
