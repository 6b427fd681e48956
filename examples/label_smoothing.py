"""Label smoothing in `model.compile`: `keras_kd.LabelSmoothingLoss`, with ECE as a metric.

    python examples/label_smoothing.py           # digits, 60 epochs
    python examples/label_smoothing.py --quick   # 3 epochs

Trains the same MLP with eps = 0 and eps = 0.1 and prints test accuracy and ECE.
LabelSmoothingLoss smooths integer labels too (Keras' SparseCategoricalCrossentropy
has no label_smoothing).
"""

import argparse

import keras

import keras_kd
from _digits import digits_splits


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 epochs")
    args = parser.parse_args(argv)
    (x_train, y_train), _, (x_test, y_test) = digits_splits()

    results = {}
    for smoothing in (0.0, 0.1):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10),  # logits
        ])
        model.compile(
            optimizer="adam",
            loss=keras_kd.LabelSmoothingLoss(smoothing, from_logits=True),
            metrics=["accuracy", keras_kd.ExpectedCalibrationError(from_logits=True)],
        )
        model.fit(x_train, y_train, epochs=3 if args.quick else 60, batch_size=64, verbose=0)
        results[smoothing] = model.evaluate(x_test, y_test, verbose=0, return_dict=True)
        print(f"smoothing {smoothing}: accuracy {results[smoothing]['accuracy']:.4f}, "
              f"ECE {results[smoothing]['ece']:.4f}")
    return results


if __name__ == "__main__":
    main()
