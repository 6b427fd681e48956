"""Streaming calibration metrics for `compile(metrics=...)`.

Each metric keeps sufficient statistics and computes its value in `result()`, so the
value over many batches (and over replicas, whose statistics are summed) equals the
value over all the data at once. Used in `compile(metrics=...)`, the values come from
Keras' own validation pass as `val_<name>`, which every callback sees whatever its
place in the callbacks list. The binning lives in `keras_kd._binning`, shared with
`keras_kd.calibration.expected_calibration_error`.

The negative log-likelihood needs no keras_kd metric: Keras'
`keras.metrics.SparseCategoricalCrossentropy(from_logits=True, name="nll")` (or
`CategoricalCrossentropy` for one-hot labels) computes the same number as
`keras_kd.calibration.negative_log_likelihood`.
"""

from __future__ import annotations

from typing import Any
from typing import Optional

import keras
import numpy as np
from keras import ops

from keras_kd import _binning
from keras_kd import _keras_compat
from keras_kd import _labels
from keras_kd import _validation
from keras_kd._types import TensorLike

_PACKAGE = "keras_kd"
_BINNINGS = ("equal_width", "equal_mass")


def _resolve_from_logits(from_logits, y_pred, metric_name):
    """`from_logits` as a bool; None is allowed only where values can be checked.

    Inside a compiled `fit`/`evaluate` the values cannot be checked without a device
    sync per step, so an unset `from_logits` there raises instead of guessing.
    """
    if from_logits is not None:
        return from_logits
    if _labels._eager_values(y_pred) is None:
        raise ValueError(
            f"{metric_name} inside a compiled model needs `from_logits` set explicitly: "
            f"`from_logits=True` for a model that outputs logits, False for "
            f"probabilities. It was left unset (None), and values cannot be checked "
            f"without a device sync per step."
        )
    return False


def _check_eager_values(y_true, y_pred, sample_weight, from_logits):
    """Checks predictions, one-hot labels and weights where their values are at hand
    (eager calls); compiled steps skip this, which would cost a device sync each."""
    from keras_kd.calibration import _inputs

    values = _labels._eager_values(y_pred)
    if values is not None:
        values = values.reshape(-1, values.shape[-1]).astype("float64")
        _inputs.check_predictions(values, from_logits, "y_pred")
        labels = _labels._eager_values(y_true)
        if labels is not None and np.asarray(labels).dtype.kind not in "fiub":
            raise ValueError(
                f"`y_true` must hold numbers (class indices or one-hot targets), got "
                f"dtype {np.asarray(labels).dtype}. Map names to indices first."
            )
        if labels is not None and labels.ndim == len(y_pred.shape) and labels.shape[-1] > 1:
            labels = labels.reshape(-1, labels.shape[-1]).astype("float64")
            sums = labels.sum(-1)
            if (labels < 0).any() or (abs(sums - 1.0) > _inputs.PROBABILITY_TOLERANCE).any():
                worst = sums[abs(sums - 1.0).argmax()]
                raise ValueError(
                    f"One-hot or soft `y_true` must be rows of non-negative numbers "
                    f"summing to 1, got a row summing to {worst!r}."
                )
    if sample_weight is not None:
        weights = _labels._eager_values(sample_weight)
        if weights is not None and weights.size:
            weights = weights.astype("float64").reshape(-1)
            bad = ~(weights >= 0) | (weights == float("inf"))
            if bad.any():
                raise ValueError(
                    f"`sample_weight` must be finite and non-negative, got "
                    f"{weights[bad][0]!r}."
                )


def _binary_as_column(y_pred):
    """A binary model's predictions of shape (N,) as (N, 1): N examples, not N classes."""
    return ops.expand_dims(y_pred, -1) if len(y_pred.shape) == 1 else y_pred


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ExpectedCalibrationError(keras.metrics.Metric):
    """Expected calibration error, streamed over batches: top-label or classwise,
    equal-width or (approximately) equal-mass bins.

    With confidence `c_i = max_k p_ik`, equal-width bins `b = min(floor(c * B), B - 1)`
    and, per bin, the count `n_b`, mean confidence `conf_b` and accuracy `acc_b`:

        ECE = sum_b (n_b / N) |acc_b - conf_b|            (norm="l1")
        RMSCE = sqrt(sum_b (n_b / N) (acc_b - conf_b)^2)  (norm="l2")
        MCE = max_b |acc_b - conf_b| over non-empty bins  (norm="max")

    `classwise=True` bins every class's probability `p_ik` against `y_i = k` and
    averages the K errors (Kull et al. 2019; SCE of Nixon et al. 2019); it needs
    `num_classes` (2 for a binary model), which fixes the state's shape.

    `binning="equal_mass"` (ACE, Nixon et al. 2019) streams a fine equal-width
    histogram of `num_fine_bins` bins and merges it into B equal-mass bins in
    `result()` by the rule of `expected_calibration_error` applied per fine bin.
    A fine bin is never split, so the value differs from the exact per-example
    equal-mass ECE by at most `2 sum_{fine bins j straddling a boundary} n_j / N <=
    2 (B - 1) max_j n_j / N` (`_binning.equal_mass_error_bound`; tested).

    Binary models: predictions of shape (N,) or (N, 1) are the sigmoid probability
    (or logit) of class 1, confidence `max(p, 1 - p)`. NaN predictions (a diverged
    model) make the value NaN, never 0, so `ModelCheckpoint(monitor="val_ece",
    save_best_only=True)` never keeps such a model.

    Lower is better: the metric declares so for Keras' `EarlyStopping`,
    `ModelCheckpoint` and `ReduceLROnPlateau` in `mode="auto"`.

    State: three float32 arrays of shape (bins,) or (num_classes, bins) (weighted
    count, sum of confidences, sum of correct predictions) declared with
    `aggregation="sum"`, so `tf.distribute` and the JAX/PyTorch trainers add them
    across replicas. Counts are exact up to 2^24 (about 16.7 million) samples of
    unit weight.

    Args:
        num_bins: number of bins B, an integer >= 1, default 15 (Guo et al. 2017).
        from_logits: True when `y_pred` are logits, False for probabilities.
            Required inside a compiled model (values cannot be checked there
            without a device sync); left unset (None) it is accepted only in eager
            `update_state` calls, where it means False and the values are checked.
            In eager calls, logits that are probability rows (with True) and
            values outside [0, 1] or rows not summing to 1 (with False) raise.
        norm: "l1" (ECE, default), "l2" (RMS calibration error) or "max" (MCE).
        binning: "equal_width" (default) or "equal_mass".
        classwise: bool, default False.
        num_classes: K, required with `classwise=True`, else ignored.
        num_fine_bins: fine histogram size for `binning="equal_mass"`, integer
            >= num_bins, default 1000.
        name: default "ece".
        dtype: dtype of `result()`; the state is always float32.

    `update_state(y_true, y_pred, sample_weight=None)` takes class indices, shape
    (N,) or (N, 1), or one-hot targets (N, K); predictions (N, K), (N, 1) or (N,);
    optional non-negative weights (N,).

    Example:
        >>> model.compile("adam", loss=keras.losses.SparseCategoricalCrossentropy(
        ...     from_logits=True), metrics=[ExpectedCalibrationError(from_logits=True)])
        >>> model.fit(x, y, validation_data=(x_val, y_val),
        ...           callbacks=[keras.callbacks.EarlyStopping(monitor="val_ece")])

    References:
        Naeini, Cooper, Hauskrecht. Obtaining Well Calibrated Probabilities Using
        Bayesian Binning. AAAI 2015.
        Guo, Pleiss, Sun, Weinberger. On Calibration of Modern Neural Networks.
        ICML 2017. Kull et al. NeurIPS 2019. Nixon et al. CVPR Workshops 2019.
    """

    def __init__(
        self,
        num_bins: int = 15,
        from_logits: Optional[bool] = None,
        norm: str = "l1",
        name: str = "ece",
        dtype: Any = None,
        binning: str = "equal_width",
        classwise: bool = False,
        num_classes: Optional[int] = None,
        num_fine_bins: int = 1000,
    ) -> None:
        super().__init__(name=name, dtype=dtype)
        self.num_bins = _validation.check_positive_int(num_bins, "num_bins")
        self.norm = _validation.check_choice(norm, "norm", _binning.NORMS)
        if from_logits is not None:
            _validation.check_bool(from_logits, "from_logits")
        self.from_logits = from_logits
        self.binning = _validation.check_choice(binning, "binning", _BINNINGS)
        self.classwise = _validation.check_bool(classwise, "classwise")
        self.num_fine_bins = _validation.check_positive_int(num_fine_bins, "num_fine_bins")
        if self.binning == "equal_mass" and self.num_fine_bins < self.num_bins:
            raise ValueError(
                f"`num_fine_bins` must be >= `num_bins` ({self.num_bins}), got "
                f"{num_fine_bins}."
            )
        if self.classwise:
            num_classes = _validation.check_positive_int(num_classes, "num_classes")
            if num_classes < 2:
                raise ValueError(
                    f"`num_classes` must be >= 2 for the classwise ECE (2 for a binary "
                    f"model), got {num_classes}."
                )
        self.num_classes = num_classes if self.classwise else None
        _keras_compat.declare_lower_is_better(self)
        self.bin_counts = self._add_bin_variable("bin_counts")
        self.bin_confidence_sums = self._add_bin_variable("bin_confidence_sums")
        self.bin_correct_sums = self._add_bin_variable("bin_correct_sums")

    def _add_bin_variable(self, name):
        bins = self.num_fine_bins if self.binning == "equal_mass" else self.num_bins
        shape = (self.num_classes, bins) if self.classwise else (bins,)
        return self.add_variable(
            shape=shape, initializer="zeros", dtype="float32", aggregation="sum", name=name
        )

    def update_state(
        self,
        y_true: TensorLike,
        y_pred: TensorLike,
        sample_weight: Optional[TensorLike] = None,
    ) -> None:
        y_pred = _binary_as_column(ops.convert_to_tensor(y_pred))
        y_true = ops.convert_to_tensor(y_true)
        if sample_weight is not None:
            sample_weight = ops.convert_to_tensor(sample_weight)
        from_logits = _resolve_from_logits(self.from_logits, y_pred, type(self).__name__)
        _check_eager_values(y_true, y_pred, sample_weight, from_logits)
        bins = self.bin_counts.shape[-1]
        if self.classwise:
            statistics = self._classwise_statistics(y_true, y_pred, sample_weight, from_logits,
                                                    bins)
        else:
            statistics = _binning.bin_statistics(
                y_pred, y_true, bins, sample_weight, from_logits=from_logits
            )
        for variable, value in zip(self.variables, statistics):
            variable.assign_add(value)

    def _classwise_statistics(self, y_true, y_pred, sample_weight, from_logits, bins):
        y_pred = ops.cast(y_pred, "float32")
        if y_pred.shape[-1] == 1:
            y_pred = ops.concatenate(
                [ops.zeros_like(y_pred) if from_logits else 1.0 - y_pred, y_pred], axis=-1
            )
        if y_pred.shape[-1] != self.num_classes:
            raise ValueError(
                f"ExpectedCalibrationError(classwise=True, num_classes={self.num_classes}) "
                f"got predictions with {y_pred.shape[-1]} classes."
            )
        probs = ops.softmax(y_pred, axis=-1) if from_logits else y_pred
        targets = _labels.to_one_hot(y_true, y_pred)
        weights = None
        if sample_weight is not None:
            weights = _binning.flatten_weights(sample_weight, y_pred)
        probs = ops.reshape(probs, (-1, self.num_classes))
        targets = ops.reshape(targets, (-1, self.num_classes))
        return _binning.classwise_statistics(probs, targets, bins, weights)

    def result(self) -> TensorLike:
        statistics = (self.bin_counts, self.bin_confidence_sums, self.bin_correct_sums)
        if self.binning == "equal_mass":
            statistics = _binning.equal_mass_groups(*statistics, self.num_bins)
        error = _binning.calibration_error(*statistics, self.norm)
        if self.classwise:
            error = ops.mean(error)
        return ops.cast(error, self.dtype)

    def reset_state(self) -> None:
        for variable in self.variables:
            variable.assign(ops.zeros(variable.shape, dtype=variable.dtype))

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "num_bins": self.num_bins,
            "from_logits": self.from_logits,
            "norm": self.norm,
            "binning": self.binning,
            "classwise": self.classwise,
            "num_classes": self.num_classes,
            "num_fine_bins": self.num_fine_bins,
        }


@keras.saving.register_keras_serializable(package=_PACKAGE)
class BrierScore(keras.metrics.Metric):
    """Multi-class Brier score `(1 / N) sum_i sum_k (p_ik - y_ik)^2`, streamed.

    The same number as `keras_kd.calibration.brier_score`; a binary model's single
    column (or 1-D output) counts both classes, `2 (p - y)^2`. NaN predictions give
    NaN. State: the weighted sum of squared errors and the total weight, summed
    across replicas.

    Args:
        from_logits: as in `ExpectedCalibrationError` (required inside a compiled
            model).
        name: default "brier".
        dtype: dtype of `result()`.

    Example:
        >>> model.compile("adam", loss=..., metrics=[BrierScore(from_logits=True)])

    References:
        Brier. Verification of Forecasts Expressed in Terms of Probability. 1950.
    """

    def __init__(
        self,
        from_logits: Optional[bool] = None,
        name: str = "brier",
        dtype: Any = None,
    ) -> None:
        super().__init__(name=name, dtype=dtype)
        if from_logits is not None:
            _validation.check_bool(from_logits, "from_logits")
        self.from_logits = from_logits
        _keras_compat.declare_lower_is_better(self)
        self.total = self.add_variable(shape=(), initializer="zeros", dtype="float32",
                                       aggregation="sum", name="total")
        self.weight = self.add_variable(shape=(), initializer="zeros", dtype="float32",
                                        aggregation="sum", name="weight")

    def update_state(
        self,
        y_true: TensorLike,
        y_pred: TensorLike,
        sample_weight: Optional[TensorLike] = None,
    ) -> None:
        y_pred = ops.cast(_binary_as_column(ops.convert_to_tensor(y_pred)), "float32")
        y_true = ops.convert_to_tensor(y_true)
        if sample_weight is not None:
            sample_weight = ops.convert_to_tensor(sample_weight)
        from_logits = _resolve_from_logits(self.from_logits, y_pred, type(self).__name__)
        _check_eager_values(y_true, y_pred, sample_weight, from_logits)
        if y_pred.shape[-1] == 1:
            y_pred = ops.concatenate(
                [ops.zeros_like(y_pred) if from_logits else 1.0 - y_pred, y_pred], axis=-1
            )
        probs = ops.softmax(y_pred, axis=-1) if from_logits else y_pred
        targets = _labels.to_one_hot(y_true, y_pred)
        squared = ops.reshape(ops.sum(ops.square(probs - targets), axis=-1), (-1,))
        weights = ops.ones_like(squared)
        if sample_weight is not None:
            weights = _binning.flatten_weights(sample_weight, y_pred)
        self.total.assign_add(ops.sum(weights * squared))
        self.weight.assign_add(ops.sum(weights))

    def result(self) -> TensorLike:
        return ops.cast(self.total / ops.maximum(self.weight, 1e-30), self.dtype)

    def reset_state(self) -> None:
        for variable in self.variables:
            variable.assign(ops.zeros(variable.shape, dtype=variable.dtype))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "from_logits": self.from_logits}
