"""Streaming calibration metric for `compile(metrics=...)`.

The metric keeps per-bin sufficient statistics and computes the error from them in
`result()`, so the value over many batches (and over replicas, whose statistics are
summed) equals the value over all the data at once. The arithmetic lives in
`keras_kd._binning`, shared with `keras_kd.calibration.expected_calibration_error`.
"""

import keras
from keras import ops

from keras_kd import _binning
from keras_kd import _validation

_PACKAGE = "keras_kd"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ExpectedCalibrationError(keras.metrics.Metric):
    """Expected calibration error of the top-label confidence, streamed over batches.

    With confidence `c_i = max_k p_ik`, equal-width bins `b = min(floor(c * B), B - 1)`
    and, per bin, the count `n_b`, mean confidence `conf_b` and accuracy `acc_b`:

        ECE = sum_b (n_b / N) |acc_b - conf_b|            (norm="l1")
        RMSCE = sqrt(sum_b (n_b / N) (acc_b - conf_b)^2)  (norm="l2")
        MCE = max_b |acc_b - conf_b| over non-empty bins  (norm="max")

    Lower is better: the metric declares `_direction = "down"`, which Keras'
    `EarlyStopping`, `ModelCheckpoint` and `ReduceLROnPlateau` read in `mode="auto"`.

    State is three float32 vectors of shape (num_bins,) (weighted count, sum of
    confidences, sum of correct predictions) declared with `aggregation="sum"`, so
    `tf.distribute` and the JAX/PyTorch trainers add them across replicas. Counts are
    exact up to 2^24 (about 16.7 million) samples of unit weight.

    Args:
        num_bins: number of equal-width bins B, an integer >= 1, default 15 (Guo et
            al. 2017).
        from_logits: bool, default False. True when `y_pred` are logits; the softmax
            is then taken in float32 through `log_softmax`. A single output column is
            read as a sigmoid probability (or logit) of class 1.
        norm: "l1" (ECE, default), "l2" (RMS calibration error) or "max" (MCE).
        name: default "ece".
        dtype: dtype of `result()`; the state is always float32.

    `update_state(y_true, y_pred, sample_weight=None)` takes class indices, shape
    (N,) or (N, 1), or one-hot targets (N, K); predictions (N, K); optional
    non-negative weights (N,).

    Example:
        >>> model.compile("adam", loss=keras.losses.SparseCategoricalCrossentropy(
        ...     from_logits=True), metrics=[ExpectedCalibrationError(from_logits=True)])
        >>> model.fit(x, y, validation_data=(x_val, y_val),
        ...           callbacks=[keras.callbacks.EarlyStopping(monitor="val_ece")])

    References:
        Naeini, Cooper, Hauskrecht. Obtaining Well Calibrated Probabilities Using
        Bayesian Binning. AAAI 2015.
        Guo, Pleiss, Sun, Weinberger. On Calibration of Modern Neural Networks.
        ICML 2017.
    """

    def __init__(self, num_bins=15, from_logits=False, norm="l1", name="ece", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.num_bins = _validation.check_positive_int(num_bins, "num_bins")
        self.norm = _validation.check_choice(norm, "norm", _binning.NORMS)
        self.from_logits = _validation.check_bool(from_logits, "from_logits")
        # Read by keras.callbacks.MonitorCallback when mode="auto".
        self._direction = "down"
        self.bin_counts = self._add_bin_variable("bin_counts")
        self.bin_confidence_sums = self._add_bin_variable("bin_confidence_sums")
        self.bin_correct_sums = self._add_bin_variable("bin_correct_sums")

    def _add_bin_variable(self, name):
        return self.add_variable(
            shape=(self.num_bins,),
            initializer="zeros",
            dtype="float32",
            aggregation="sum",
            name=name,
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = ops.convert_to_tensor(y_pred)
        y_true = ops.convert_to_tensor(y_true)
        if sample_weight is not None:
            sample_weight = ops.convert_to_tensor(sample_weight)
        counts, confidence_sums, correct_sums = _binning.bin_statistics(
            y_pred, y_true, self.num_bins, sample_weight, from_logits=self.from_logits
        )
        self.bin_counts.assign_add(counts)
        self.bin_confidence_sums.assign_add(confidence_sums)
        self.bin_correct_sums.assign_add(correct_sums)

    def result(self):
        error = _binning.calibration_error(
            self.bin_counts, self.bin_confidence_sums, self.bin_correct_sums, self.norm
        )
        return ops.cast(error, self.dtype)

    def reset_state(self):
        for variable in self.variables:
            variable.assign(ops.zeros(variable.shape, dtype=variable.dtype))

    def get_config(self):
        return {
            **super().get_config(),
            "num_bins": self.num_bins,
            "from_logits": self.from_logits,
            "norm": self.norm,
        }
