"""Stop training when calibration stops improving: `ECECallback` + `EarlyStopping`.

    python examples/ece_early_stopping.py           # digits, up to 200 epochs
    python examples/ece_early_stopping.py --quick   # up to 3 epochs

`ECECallback` adds `val_ece`, `val_mce`, `val_nll` and `val_brier` (and, with
`fit_temperature=True`, `val_ece_ts` and `val_temperature`) to the epoch logs. List
it before the callbacks that read them. ECE alone rewards an untrained model whose
near-uniform confidence matches its low accuracy, so early stopping starts watching
only after `start_from_epoch` epochs.
"""

import argparse

import keras

import keras_kd
from _digits import digits_splits

WARM_UP_EPOCHS = 20  # epochs before early stopping watches val_ece


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="at most 3 epochs")
    args = parser.parse_args(argv)
    (x_train, y_train), (x_val, y_val), _ = digits_splits()

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Flatten(),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(10),  # logits
    ])
    model.compile(keras.optimizers.Adam(3e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    history = model.fit(
        x_train, y_train,
        validation_data=(x_val, y_val),
        epochs=3 if args.quick else 200,
        batch_size=64,
        verbose=0,
        callbacks=[
            keras_kd.ECECallback((x_val, y_val), from_logits=True, fit_temperature=True),
            keras.callbacks.EarlyStopping(monitor="val_ece", mode="min", patience=10,
                                          start_from_epoch=WARM_UP_EPOCHS,
                                          restore_best_weights=True),
        ],
    )
    val_ece = history.history["val_ece"]
    watched = range(min(WARM_UP_EPOCHS, len(val_ece) - 1), len(val_ece))
    best_epoch = min(watched, key=val_ece.__getitem__)
    logs = {key: values[best_epoch] for key, values in history.history.items()}
    print(f"ran {len(val_ece)} epochs; kept epoch {best_epoch + 1}: val_ece {logs['val_ece']:.4f}, "
          f"val_accuracy {logs['val_accuracy']:.4f}, val_temperature {logs['val_temperature']:.2f}")
    return history.history


if __name__ == "__main__":
    main()
