"""Teacher-free KD (Tf-KD_reg, Yuan et al. 2020): distil from a virtual teacher.

    python examples/teacher_free.py           # digits, 60 epochs
    python examples/teacher_free.py --quick   # 3 epochs

`VirtualTeacherLoss` puts `correct_prob` on the true class and spreads the rest
evenly, then distils that at a high temperature: no teacher network is trained.
"""

import argparse

import keras

import keras_kd
from _digits import digits_splits


def build_model():
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Flatten(),
        keras.layers.Dense(32, activation="relu"),
        keras.layers.Dense(10),  # logits
    ])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 epochs")
    args = parser.parse_args(argv)
    (x_train, y_train), _, (x_test, y_test) = digits_splits()

    losses = {
        "cross-entropy": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        # Paper mode: (1 - alpha) H(y, p) + alpha T^2 KL(virtual teacher^T || p^T).
        "virtual teacher": keras_kd.VirtualTeacherLoss(correct_prob=0.9, temperature=20.0, alpha=0.5),
    }
    results = {}
    for name, loss in losses.items():
        keras.utils.set_random_seed(0)
        model = build_model()
        model.compile("adam", loss=loss, metrics=["accuracy"])
        model.fit(x_train, y_train, epochs=3 if args.quick else 60, batch_size=64, verbose=0)
        results[name] = model.evaluate(x_test, y_test, verbose=0, return_dict=True)["accuracy"]
        print(f"{name}: test accuracy {results[name]:.4f}")
    return results


if __name__ == "__main__":
    main()
