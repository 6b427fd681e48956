"""Every keras_kd calibrator on real predictions: a small CNN on MNIST-1D.

MNIST-1D (Greydanus 2020) is generated offline from templates by the `mnist1d`
package, so this needs no download. 20 000 examples: 12 000 train, 4 000
validation (the calibrators are fitted there), 4 000 test (measured there). The
model is trained past its best validation loss on purpose, so that it is
over-confident, as the networks of Guo et al. 2017 are.

    python benchmarks/calibrators.py [--json results.json] [--figure calibrators.png]

Deterministic on CPU (fixed seeds, single-threaded TensorFlow ops); about two
minutes on one core. Prints a Markdown table (test ECE with 15 bins, NLL, Brier,
accuracy, each with a 95 % bootstrap interval over test examples).
"""

import argparse
import json
import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from keras_kd import calibration  # noqa: E402

SEED = 0


def load_mnist1d(num_samples=20000):
    from mnist1d.data import get_dataset_args
    from mnist1d.data import make_dataset

    args = get_dataset_args()
    args.num_samples = num_samples
    data = make_dataset(args)  # 80 % train / 20 % test, seeded by args.seed = 42
    x, y = data["x"].astype("float32"), data["y"].astype("int64")
    num_val = len(data["x_test"])
    return ((x[:-num_val], y[:-num_val]), (x[-num_val:], y[-num_val:]),
            (data["x_test"].astype("float32"), data["y_test"].astype("int64")))


def train(x, y, epochs):
    keras.utils.set_random_seed(SEED)
    model = keras.Sequential([
        keras.Input((40,)),
        keras.layers.Reshape((40, 1)),
        keras.layers.Conv1D(32, 5, padding="same", activation="relu"),
        keras.layers.Conv1D(32, 5, strides=2, padding="same", activation="relu"),
        keras.layers.Conv1D(32, 5, strides=2, padding="same", activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(10),
    ])
    model.compile(keras.optimizers.Adam(2e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=epochs, batch_size=128, verbose=0, shuffle=True)
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--resamples", type=int, default=200)
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--figure", default=None, help="write the diagrams here (PNG)")
    args = parser.parse_args(argv)
    import tensorflow as tf

    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    start = time.time()
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = load_mnist1d()
    model = train(x_train, y_train, args.epochs)
    val_logits = model.predict(x_val, verbose=0)
    test_logits = model.predict(x_test, verbose=0)
    comparison = calibration.compare_calibrators(
        val_logits, y_val, test_logits, y_test, num_resamples=args.resamples, seed=SEED
    )
    floor = calibration.perfectly_calibrated_ece(test_logits, from_logits=True, seed=SEED)
    print(comparison.to_markdown())
    print(f"\nNoise floor (expected test ECE of a perfectly calibrated model with the "
          f"raw model's confidences): {floor:.4f}")
    print(f"{len(x_train)} train / {len(x_val)} validation / {len(x_test)} test examples, "
          f"{args.epochs} epochs, {time.time() - start:.0f} s")
    if args.json:
        rows = {
            result.name: {key: list(getattr(result, key)) for key in
                          ("ece", "nll", "brier", "accuracy")}
            for result in comparison.results
        }
        with open(args.json, "w") as file:
            json.dump({"results": rows, "noise_floor": floor, "epochs": args.epochs}, file,
                      indent=2)
    if args.figure:
        comparison.figure().savefig(args.figure, dpi=90)


if __name__ == "__main__":
    main()
