"""Distil a small CNN teacher into an MLP student on MNIST with `keras_kd.Distiller`.

    python examples/distil_mnist.py           # MNIST through tensorflow_datasets
    python examples/distil_mnist.py --quick   # offline: tfds.testing.mock_data, 1 epoch

`--quick` runs the very same code on tensorflow_datasets' mock data (random images of
MNIST's shape, no download), so the numbers it prints mean nothing; it checks that
the script runs.
"""

import argparse
import contextlib

import keras
import numpy as np
import tensorflow_datasets as tfds

import keras_kd


def load_mnist(split):
    """MNIST `split` as float32 images in [0, 1] and integer labels."""
    dataset = tfds.load("mnist", split=split, as_supervised=True)
    images, labels = zip(*tfds.as_numpy(dataset.batch(4096)))
    return np.concatenate(images).astype("float32") / 255.0, np.concatenate(labels)


def build_teacher():
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(64, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dropout(0.3),
        keras.layers.Dense(10),  # logits: the Distiller needs them
    ], name="teacher")


def build_student():
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Flatten(),
        keras.layers.Dense(32, activation="relu"),
        keras.layers.Dense(10),
    ], name="student")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="offline mock data, 1 epoch")
    args = parser.parse_args(argv)
    epochs = 1 if args.quick else 3
    keras.utils.set_random_seed(0)

    data_source = tfds.testing.mock_data(num_examples=256) if args.quick else contextlib.nullcontext()
    with data_source:
        x_train, y_train = load_mnist("train")
        x_test, y_test = load_mnist("test")

    hard_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    teacher = build_teacher()
    teacher.compile("adam", loss=hard_loss, metrics=["accuracy"])
    teacher.fit(x_train, y_train, epochs=epochs, batch_size=128, verbose=2)

    # alpha weights the distillation term: 90 % soft targets at T = 4, 10 % labels.
    distiller = keras_kd.Distiller(teacher=teacher, student=build_student(),
                                   temperature=4.0, alpha=0.9)
    distiller.compile("adam", loss=hard_loss, metrics=["accuracy"])
    distiller.fit(x_train, y_train, epochs=epochs, batch_size=128, verbose=2)

    # evaluate() runs the student only, as distiller.student.evaluate() would.
    results = {
        "teacher_accuracy": teacher.evaluate(x_test, y_test, verbose=0, return_dict=True)["accuracy"],
        "student_accuracy": distiller.evaluate(x_test, y_test, verbose=0, return_dict=True)["accuracy"],
    }
    print(f"teacher {results['teacher_accuracy']:.4f}, distilled student {results['student_accuracy']:.4f}")
    return results


if __name__ == "__main__":
    main()
