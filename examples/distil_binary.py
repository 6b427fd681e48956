"""Distil a binary classifier (one logit) and a multi-label one (independent sigmoids).

    python examples/distil_binary.py           # digits, 30 epochs
    python examples/distil_binary.py --quick   # 3 epochs, a few seconds

Binary task: "is the digit >= 5?" from 8x8 digits. Multi-label task: three
independent yes/no labels per image (>= 5, even, a multiple of 3). The teacher ends in
a sigmoid (`activation="sigmoid"`): the Distiller sees it and converts its
probabilities to logits exactly. The students output logits (`Dense(k)`, no
activation) and train on the Bernoulli soft targets `sigmoid(z_t / T)`.
"""

import argparse

import keras
import numpy as np

import keras_kd
from _digits import digits_splits


def multi_labels(digits):
    return np.stack([digits >= 5, digits % 2 == 0, digits % 3 == 0], axis=-1).astype("float32")


def build_model(outputs, hidden, activation=None):
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Flatten(),
        keras.layers.Dense(hidden, activation="relu"),
        keras.layers.Dense(outputs, activation=activation),
    ])


def agreement(student, teacher_probabilities, x):
    """Share of labels on which the student's sign agrees with the teacher's."""
    student_says = student.predict(x, verbose=0) > 0.0  # logits
    return float(np.mean(student_says == (teacher_probabilities > 0.5)))


def run(task, y_train, y_test, epochs, num_labels_for_student=60):
    (x_train, _), _, (x_test, _) = digits_splits()
    outputs = y_train.shape[-1]
    output = "sigmoid" if outputs > 1 else "softmax"  # one logit is binary either way
    keras.utils.set_random_seed(0)
    teacher = build_model(outputs, 128, activation="sigmoid")
    teacher.compile("adam", loss="binary_crossentropy")
    teacher.fit(x_train, y_train, epochs=epochs, batch_size=32, verbose=0)
    teacher_probabilities = teacher.predict(x_test, verbose=0)

    # The student sees only a few labels, plus the teacher's soft targets on every input.
    few = np.arange(num_labels_for_student)
    bce = keras.losses.BinaryCrossentropy(from_logits=True)
    keras.utils.set_random_seed(1)
    labels_only = build_model(outputs, 8)
    labels_only.compile("adam", loss=bce)
    labels_only.fit(x_train[few], y_train[few], epochs=epochs * 10, batch_size=32, verbose=0)

    keras.utils.set_random_seed(1)
    student = build_model(outputs, 8)
    distiller = keras_kd.Distiller(teacher, student, temperature=2.0, alpha=1.0, output=output)
    distiller.compile(optimizer="adam", loss=None)
    history = distiller.fit(x_train, epochs=epochs, batch_size=32, verbose=0).history

    result = {
        "distillation_loss": history["distillation_loss"],
        "distilled_agreement": agreement(student, teacher_probabilities, x_test),
        "labels_only_agreement": agreement(labels_only, teacher_probabilities, x_test),
        "teacher_accuracy": float(np.mean((teacher_probabilities > 0.5) == (y_test > 0.5))),
    }
    print(
        f"{task}: teacher accuracy {result['teacher_accuracy']:.3f}; agreement with the "
        f"teacher: distilled {result['distilled_agreement']:.3f}, "
        f"{num_labels_for_student} labels only {result['labels_only_agreement']:.3f}; "
        f"distillation loss {history['distillation_loss'][0]:.4f} -> "
        f"{history['distillation_loss'][-1]:.4f}"
    )
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 epochs")
    args = parser.parse_args(argv)
    epochs = 3 if args.quick else 30
    (_, y_train), _, (_, y_test) = digits_splits()
    return {
        "binary": run(
            "binary", (y_train >= 5).astype("float32")[:, None], (y_test >= 5)[:, None], epochs
        ),
        "multi-label": run("multi-label", multi_labels(y_train), multi_labels(y_test), epochs),
    }


if __name__ == "__main__":
    main()
