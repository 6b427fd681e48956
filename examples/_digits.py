"""scikit-learn's bundled 8x8 digits as train / validation / test arrays (offline).

Shared by the examples; copy it along with the one you use.
"""

from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split


def digits_splits(seed=0):
    """(x_train, y_train), (x_val, y_val), (x_test, y_test): 60 / 15 / 25 %, stratified.

    Images are float32 in [0, 1] of shape (8, 8, 1); labels are integers 0..9.
    """
    digits = load_digits()
    images = (digits.images / 16.0).astype("float32")[..., None]
    labels = digits.target
    x_rest, x_test, y_rest, y_test = train_test_split(
        images, labels, test_size=0.25, stratify=labels, random_state=seed
    )
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=0.2, stratify=y_rest, random_state=seed
    )
    return (x_train, y_train), (x_val, y_val), (x_test, y_test)
