"""A distillation term of your own, weighted beside DKD, with a warm-up schedule.

    python examples/custom_term.py           # digits, 30 epochs
    python examples/custom_term.py --quick   # 2 epochs

`CosineLogitTerm` subclasses `keras_kd.DistillationTerm`: it implements
`compute(teacher_logits, student_logits, temperature, labels=None)`, the per-example
loss, and follows the Distiller's temperature. The Distiller weighs it with DKD:

    L = (1 - alpha) CE + alpha * (w_dkd * DKD + w_cos * cosine)

and `DistillationSchedule` warms DKD's weight up over the first epochs (Zhao et al.).
"""

import argparse

import keras
from keras import ops

import keras_kd
from _digits import digits_splits
from keras_kd.schedules import DistillationSchedule
from keras_kd.schedules import LinearWarmup


@keras.saving.register_keras_serializable(package="examples")
class CosineLogitTerm(keras_kd.DistillationTerm):
    """`1 - cos(softmax(t / T), softmax(s / T))` per example."""

    def __init__(self, temperature=4.0, name="cosine_term", **kwargs):
        super().__init__(temperature=temperature, name=name, **kwargs)

    def compute(self, teacher_logits, student_logits, temperature, labels=None):
        teacher = ops.softmax(ops.cast(teacher_logits, "float32") / temperature, axis=-1)
        student = ops.softmax(ops.cast(student_logits, "float32") / temperature, axis=-1)
        cosine = ops.sum(teacher * student, axis=-1) / (
            ops.norm(teacher, axis=-1) * ops.norm(student, axis=-1)
        )
        return 1.0 - cosine


def build_model(hidden):
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Flatten(),
        keras.layers.Dense(hidden, activation="relu"),
        keras.layers.Dense(10),  # logits
    ])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 epochs")
    args = parser.parse_args(argv)
    epochs = 2 if args.quick else 30
    (x_train, y_train), _, (x_test, y_test) = digits_splits()
    sparse_ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    keras.utils.set_random_seed(0)
    teacher = build_model(128)
    teacher.compile("adam", loss=sparse_ce, metrics=["accuracy"])
    teacher.fit(x_train, y_train, epochs=epochs, batch_size=64, verbose=0)

    distiller = keras_kd.Distiller(
        teacher,
        build_model(16),
        alpha=0.5,
        distillation_loss=[
            keras_kd.DecoupledDistillationLoss(temperature=4.0, beta=8.0),
            (CosineLogitTerm(temperature=4.0), 2.0),
        ],
    )
    distiller.compile("adam", loss=sparse_ce, metrics=["accuracy"])
    warmup = DistillationSchedule(
        term_weights={"decoupled_distillation_loss": LinearWarmup(1.0, max(1, epochs // 3))}
    )
    history = distiller.fit(
        x_train, y_train, epochs=epochs, batch_size=64, verbose=0, callbacks=[warmup]
    )
    accuracy = distiller.evaluate(x_test, y_test, verbose=0, return_dict=True)["accuracy"]
    print(f"student test accuracy {accuracy:.4f}; last epoch's terms:",
          {key: round(values[-1], 4) for key, values in history.history.items()})
    return {"history": history.history, "accuracy": accuracy, "term_weights": distiller.term_weights}


if __name__ == "__main__":
    main()
