"""Temperature scaling of a trained model (Guo et al. 2017), then ship it calibrated.

    python examples/temperature_scaling.py           # digits, 150 epochs
    python examples/temperature_scaling.py --quick   # 3 epochs
    python examples/temperature_scaling.py --save calibrated.keras

Fits one temperature T on the validation split by NLL, reports test ECE before and
after (accuracy cannot change: z / T keeps the argmax), and wraps the model so it
outputs softmax(z / T).
"""

import argparse

import keras

import keras_kd
from keras_kd import calibration
from _digits import digits_splits


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 epochs")
    parser.add_argument("--save", metavar="PATH", help="save the calibrated model (.keras)")
    args = parser.parse_args(argv)
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = digits_splits()

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Flatten(),
        keras.layers.Dense(256, activation="relu"),
        keras.layers.Dense(10),  # logits
    ])
    model.compile("adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x_train, y_train, epochs=3 if args.quick else 150, batch_size=64, verbose=0)

    scaler = keras_kd.TemperatureScaling().fit(model.predict(x_val, verbose=0), y_val)
    test_logits = model.predict(x_test, verbose=0)
    calibrated_probs = scaler.predict_proba(test_logits)
    ece_before = keras_kd.expected_calibration_error(test_logits, y_test, from_logits=True)
    ece_after = keras_kd.expected_calibration_error(calibrated_probs, y_test)
    print(f"T = {scaler.temperature:.3f}; test ECE {ece_before:.4f} -> {ece_after:.4f}; "
          f"NLL {calibration.negative_log_likelihood(test_logits, y_test, from_logits=True):.4f} -> "
          f"{calibration.negative_log_likelihood(calibrated_probs, y_test, from_logits=False):.4f}")

    calibrated_model = scaler.wrap(model)  # outputs softmax(model(x) / T)
    if args.save:
        calibrated_model.save(args.save)
    return {
        "temperature": scaler.temperature,
        "test_logits": test_logits,
        "calibrated_probs": calibrated_probs,
        "wrapped_probs": calibrated_model.predict(x_test, verbose=0),
        "y_test": y_test,
        "ece_before": ece_before,
        "ece_after": ece_after,
    }


if __name__ == "__main__":
    main()
