"""Type aliases shared by the public API's annotations."""

from typing import Any

# A backend tensor, a NumPy array or anything `keras.ops` converts; Keras has no
# public tensor type to name instead.
TensorLike = Any
