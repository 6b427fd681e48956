"""Calibration on arrays in memory: ECE, NLL, Brier score, temperature scaling and
the reliability diagram.

These take NumPy arrays or tensors (a model's `predict()` output and the labels) and
return Python floats or NumPy arrays. The equal-width ECE goes through
`keras_kd._binning`, the same code as the streaming `ExpectedCalibrationError`
metric, so both give the same number on the same data. NLL, Brier score and the
temperature fit are NumPy float64: they run once per evaluation, where precision is
worth more than speed.

Labels are class indices (N,) / (N, 1) or one-hot (or soft) targets (N, K), decided
from the shapes as everywhere in keras_kd. A single prediction column is read as the
sigmoid probability (or logit) of class 1.

References:
    Naeini, Cooper, Hauskrecht. Obtaining Well Calibrated Probabilities Using
    Bayesian Binning. AAAI 2015.
    Guo, Pleiss, Sun, Weinberger. On Calibration of Modern Neural Networks. ICML 2017.
    Müller, Kornblith, Hinton. When Does Label Smoothing Help? NeurIPS 2019.
    Nixon, Dusenberry, Zhang, Jerfel, Tran. Measuring Calibration in Deep Learning.
    CVPR Workshops 2019.
"""

import math
import os
import warnings

import keras
import numpy as np
from keras import ops

from keras_kd import _binning
from keras_kd import _labels
from keras_kd import _validation

_PACKAGE = "keras_kd"
_BINNINGS = ("equal_width", "equal_mass")
# log(0) = -inf would poison the temperature fit; this floor is far below any
# probability a float32 softmax can represent (its smallest normal is ~1e-38).
_LOG_FLOOR = np.finfo(np.float64).tiny
_PROBABILITIES_HINT = (
    "Pass `from_probabilities=True`, or give the model's pre-softmax outputs."
)


def expected_calibration_error(
    probs,
    labels,
    num_bins=15,
    norm="l1",
    binning="equal_width",
    from_logits=False,
    sample_weight=None,
):
    """Expected (or maximum, or RMS) calibration error of top-label confidence.

    With confidence `c_i = max_k p_ik`, bins b holding `n_b` of the N examples, mean
    confidence `conf_b` and accuracy `acc_b` in each:
    `ECE = sum_b (n_b / N) |acc_b - conf_b|` (norm="l1"),
    `RMSCE = sqrt(sum_b (n_b / N) (acc_b - conf_b)^2)` (norm="l2"),
    `MCE = max_b |acc_b - conf_b|` over non-empty bins (norm="max").

    Binning:
        - "equal_width" (default): bin `min(floor(c * B), B - 1)`, i.e. [lo, hi) with
          the last bin closed, as TensorFlow Probability and netcal; identical to
          the `ExpectedCalibrationError` metric.
        - "equal_mass" (adaptive, Nixon et al. 2019): examples sorted by ascending
          confidence (ties broken by correctness, then weight, so the result does not
          depend on the input order); the example with cumulative weight `W_<i`
          before it goes to bin `floor(B * W_<i / W)`. With unit weights each bin
          holds floor(N / B) or ceil(N / B) examples, the larger bins first (as
          `numpy.array_split`); tied confidences may straddle two bins.

    Args:
        probs: probabilities (or logits with `from_logits=True`), shape (N, K).
        labels: class indices (N,) / (N, 1) or one-hot targets (N, K).
        num_bins: B, an integer >= 1, default 15 (Guo et al. 2017).
        norm: "l1" (default), "l2" or "max".
        binning: "equal_width" (default) or "equal_mass".
        from_logits: bool, default False.
        sample_weight: optional non-negative weights of shape (N,).

    Returns:
        A Python float in [0, 1].

    Example:
        >>> expected_calibration_error([[0.05, 0.95], [0.0, 1.0]], [1, 0], num_bins=10)
        0.475...

    References:
        Naeini et al. AAAI 2015; Guo et al. ICML 2017.
    """
    num_bins = _validation.check_positive_int(num_bins, "num_bins")
    _validation.check_choice(norm, "norm", _binning.NORMS)
    _validation.check_choice(binning, "binning", _BINNINGS)
    _validation.check_bool(from_logits, "from_logits")
    probs, labels, sample_weight = _as_tensors(probs, labels, sample_weight)
    if binning == "equal_width":
        statistics = _binning.bin_statistics(
            probs, labels, num_bins, sample_weight, from_logits=from_logits
        )
    else:
        confidences, correct = _binning.top_label(probs, labels, from_logits)
        weights = ops.ones_like(confidences)
        if sample_weight is not None:
            weights = _binning.flatten_weights(sample_weight, probs)
        bin_ids = _equal_mass_bins(
            ops.convert_to_numpy(confidences),
            ops.convert_to_numpy(correct),
            ops.convert_to_numpy(weights),
            num_bins,
        )
        statistics = _binning.sums_per_bin(
            ops.convert_to_tensor(bin_ids), confidences, correct, num_bins, weights
        )
    return float(ops.convert_to_numpy(_binning.calibration_error(*statistics, norm)))


def negative_log_likelihood(logits_or_probs, labels, from_logits, sample_weight=None):
    """Mean negative log-likelihood (cross-entropy) of the labels, in float64.

    `NLL = -(1 / N) sum_i sum_k y_ik log p_ik`, weighted by `sample_weight` if given.
    Logits go through a stable log-softmax; probabilities are normalised and clipped
    to [epsilon, 1 - epsilon] (`keras.config.epsilon()`, 1e-7) exactly as Keras'
    cross-entropy does, so the value matches `val_loss` of a model compiled with it.

    Args:
        logits_or_probs: shape (N, K).
        labels: class indices (N,) / (N, 1) or one-hot / soft targets (N, K).
        from_logits: bool, required: whether the first argument holds logits.
        sample_weight: optional non-negative weights of shape (N,).

    Returns:
        A Python float >= 0.

    Example:
        >>> negative_log_likelihood([[0.0, 0.0]], [1], from_logits=True)  # log 2
        0.693...
    """
    _validation.check_bool(from_logits, "from_logits")
    predictions, targets, weights = _as_arrays(logits_or_probs, labels, sample_weight)
    predictions = _expand_binary(predictions, from_logits)
    if from_logits:
        log_probs = _log_softmax(predictions)
    else:
        probs = predictions / np.sum(predictions, axis=-1, keepdims=True)
        epsilon = keras.config.epsilon()
        log_probs = np.log(np.clip(probs, epsilon, 1.0 - epsilon))
    return _weighted_mean(-np.sum(targets * log_probs, axis=-1), weights)


def brier_score(probs, labels, from_logits=False, sample_weight=None):
    """Multi-class Brier score: `(1 / N) sum_i sum_k (p_ik - y_ik)^2`, in [0, 2].

    Args:
        probs: probabilities (or logits with `from_logits=True`), shape (N, K).
        labels: class indices (N,) / (N, 1) or one-hot / soft targets (N, K).
        from_logits: bool, default False.
        sample_weight: optional non-negative weights of shape (N,).

    Returns:
        A Python float.

    Example:
        >>> brier_score([[0.5, 0.5]], [1])
        0.5

    References:
        Brier. Verification of Forecasts Expressed in Terms of Probability. 1950.
    """
    _validation.check_bool(from_logits, "from_logits")
    predictions, targets, weights = _as_arrays(probs, labels, sample_weight)
    predictions = _expand_binary(predictions, from_logits)
    if from_logits:
        predictions = np.exp(_log_softmax(predictions))
    return _weighted_mean(np.sum(np.square(predictions - targets), axis=-1), weights)


class TemperatureScaling:
    """Post-hoc calibration by one temperature: `p = softmax(z / T)` (Guo et al. 2017).

    `fit` chooses T > 0 minimising the negative log-likelihood of held-out labels.
    Dividing every logit by the same T > 0 keeps the argmax, so accuracy never
    changes; only the confidence does (T > 1 softens over-confident predictions).

    The NLL is convex in `beta = 1 / T`:
    `f(beta) = mean_i [logsumexp(beta z_i) - beta sum_k y_ik z_ik]` with
    `f'(beta) = mean_i [E_p[z_i] - sum_k y_ik z_ik]` and `f''(beta) = mean_i Var_p[z_i]
    >= 0`, where p = softmax(beta z_i). `fit` brackets the root of f' and solves it by
    Newton's method safeguarded with bisection, in NumPy float64; no SciPy needed.

    Args:
        temperature: initial T > 0, default 1.0 (identity until `fit`).

    Attributes:
        temperature: the fitted T.
        from_probabilities: what the last `fit` was given; `wrap` uses it.

    Example:
        >>> scaler = TemperatureScaling().fit(model.predict(x_val), y_val)
        >>> calibrated = scaler.predict_proba(model.predict(x_test))
        >>> deployable = scaler.wrap(model)  # outputs softmax(model(x) / T)

    References:
        Guo, Pleiss, Sun, Weinberger. On Calibration of Modern Neural Networks.
        ICML 2017.
    """

    def __init__(self, temperature=1.0):
        self.temperature = _validation.check_temperature(temperature)
        self.from_probabilities = False

    def fit(
        self,
        logits,
        labels,
        from_probabilities=False,
        sample_weight=None,
        max_iterations=100,
        tolerance=1e-10,
    ):
        """Sets `self.temperature` to the NLL minimiser on (logits, labels); returns self.

        Args:
            logits: validation logits of shape (N, K); probabilities with
                `from_probabilities=True`, which are turned into logits by `log`.
            labels: class indices (N,) / (N, 1) or one-hot / soft targets (N, K).
            from_probabilities: bool, default False.
            sample_weight: optional non-negative weights of shape (N,).
            max_iterations: integer >= 1, default 100; each halves the bracket at
                worst, Newton usually needs fewer than 10.
            tolerance: relative change of beta = 1/T at which to stop, in (0, 1),
                default 1e-10.

        Raises:
            ValueError: `logits` that look like probabilities; labels that make the
                NLL decrease all the way to T = 0 (every example already classified
                correctly) or to T = infinity (logits no better than chance), where
                no finite temperature is optimal.
        Warns:
            RuntimeWarning: when `max_iterations` ran out before `tolerance` was met.
        """
        _validation.check_bool(from_probabilities, "from_probabilities")
        max_iterations = _validation.check_positive_int(max_iterations, "max_iterations")
        tolerance = _validation.check_in_range(
            tolerance, "tolerance", 0.0, 1.0, low_inclusive=False, high_inclusive=False
        )
        predictions, targets, weights = _as_arrays(logits, labels, sample_weight)
        logits = _to_logits(predictions, from_probabilities, "logits")
        beta = _fit_inverse_temperature(logits, targets, weights, max_iterations, tolerance)
        self.temperature = float(1.0 / beta)
        self.from_probabilities = from_probabilities
        return self

    def transform(self, logits, from_probabilities=False):
        """Scaled logits `z / T` as a NumPy array of the input's shape.

        With `from_probabilities=True`, returns `log(p) / T` instead.
        """
        predictions = _to_numpy(logits)
        if from_probabilities:
            predictions = np.log(np.maximum(predictions, _LOG_FLOOR))
        else:
            _validation.check_not_probabilities(predictions, "logits", _PROBABILITIES_HINT)
        return predictions / self.temperature

    def predict_proba(self, logits, from_probabilities=False):
        """Calibrated probabilities `softmax(z / T)`, NumPy float32 of shape (N, K).

        A single column of binary logits gives `sigmoid(z / T)`, also one column.
        """
        predictions = _to_numpy(logits)
        expanded = _to_logits(predictions, from_probabilities, "logits")
        probs = np.exp(_log_softmax(expanded / self.temperature))
        if predictions.shape[-1] == 1:
            probs = probs[..., 1:]
        return probs.astype(np.float32)

    def wrap(self, model):
        """A Keras model outputting calibrated probabilities `softmax(model(x) / T)`.

        The scaling is a `TemperatureScalingLayer` appended to `model` (which must
        have a single output), so the result saves with `model.save()` and loads with
        `keras.models.load_model()` once `keras_kd` is imported. A model that outputs
        probabilities (fitted with `from_probabilities=True`) is handled by taking
        the log first.
        """
        layer = TemperatureScalingLayer(
            temperature=self.temperature,
            from_logits=not self.from_probabilities,
            name="temperature_scaling",
        )
        name = f"{model.name}_temperature_scaled"
        if getattr(model, "inputs", None):
            # Fresh inputs so the original model is nested whole, as one layer.
            # `model.input` keeps a functional model's list/dict structure; a
            # Sequential model only has the flat `inputs`.
            structure = model.inputs[0] if len(model.inputs) == 1 else model.input
            inputs = keras.tree.map_structure(
                lambda t: keras.Input(batch_shape=t.shape, dtype=t.dtype, name=t.name),
                structure,
            )
            return keras.Model(inputs, layer(model(inputs)), name=name)
        # Subclassed or not yet built models have no symbolic inputs to reuse.
        return keras.Sequential([model, layer], name=name)

    def __repr__(self):
        return f"TemperatureScaling(temperature={self.temperature!r})"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class TemperatureScalingLayer(keras.layers.Layer):
    """Outputs `softmax(z / T)` for logits z, in float32; T is fixed, not trained.

    Made by `TemperatureScaling.wrap`. A single input column is a binary logit and
    gives `sigmoid(z / T)`. With `from_logits=False` the inputs are probabilities and
    the output is `softmax(log(p) / T)`.

    Args:
        temperature: T > 0, default 1.0.
        from_logits: bool, default True.
        **kwargs: standard `keras.layers.Layer` arguments (name, dtype).
    """

    def __init__(self, temperature=1.0, from_logits=True, **kwargs):
        # float32 even under mixed precision: a float16 softmax rounds confident
        # probabilities to exactly 1, which is the over-confidence being corrected.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.temperature = _validation.check_temperature(temperature)
        self.from_logits = _validation.check_bool(from_logits, "from_logits")

    def call(self, inputs):
        inputs = ops.cast(inputs, "float32")
        if inputs.shape[-1] == 1:
            if not self.from_logits:
                inputs = ops.log(ops.maximum(inputs, 1e-30)) - ops.log(
                    ops.maximum(1.0 - inputs, 1e-30)
                )
            return ops.sigmoid(inputs / self.temperature)
        if not self.from_logits:
            inputs = ops.log(ops.maximum(inputs, 1e-30))
        return ops.softmax(inputs / self.temperature, axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "temperature": self.temperature,
            "from_logits": self.from_logits,
        }


def reliability_diagram(probs, labels, num_bins=15, ax=None, from_logits=False, title=None):
    """Draws accuracy against confidence per bin, with the gap to the diagonal shaded.

    Bars show `acc_b` for each equal-width bin (same bins as
    `expected_calibration_error`), the dashed diagonal is perfect calibration, and
    the shaded boxes between `acc_b` and `conf_b` are the gaps the ECE averages.
    Below it (or on a twin axis when `ax` is given) a histogram shows how many
    examples fall in each confidence bin. The ECE is in the title.

    Needs matplotlib (`pip install keras-kd[plots]`). Without `ax`, it builds a
    standalone `matplotlib.figure.Figure` on the Agg canvas, never touching pyplot's
    global state, so it works headless and in threads; `fig.savefig("x.png")`.

    Args:
        probs: probabilities (or logits with `from_logits=True`), shape (N, K).
        labels: class indices (N,) / (N, 1) or one-hot targets (N, K).
        num_bins: B, an integer >= 1, default 15.
        ax: optional matplotlib Axes to draw into; the histogram then goes on a twin
            y-axis.
        from_logits: bool, default False.
        title: optional title, to which "ECE = ..." is appended.

    Returns:
        The `matplotlib.figure.Figure`.

    Example:
        >>> fig = reliability_diagram(model.predict(x_val), y_val, from_logits=True)
        >>> fig.savefig("reliability.png")

    References:
        DeGroot, Fienberg. The Comparison and Evaluation of Forecasters. 1983;
        Guo et al. ICML 2017, figure 1.
    """
    num_bins = _validation.check_positive_int(num_bins, "num_bins")
    _validation.check_bool(from_logits, "from_logits")
    figure_module = _import_matplotlib_figure()
    probs, labels, _ = _as_tensors(probs, labels, None)
    counts, confidence_sums, correct_sums = (
        ops.convert_to_numpy(s)
        for s in _binning.bin_statistics(probs, labels, num_bins, from_logits=from_logits)
    )
    ece = float(
        ops.convert_to_numpy(
            _binning.calibration_error(counts, confidence_sums, correct_sums, "l1")
        )
    )
    nonempty = counts > 0
    safe_counts = np.where(nonempty, counts, 1.0)
    accuracy = np.where(nonempty, correct_sums / safe_counts, 0.0)
    confidence = np.where(nonempty, confidence_sums / safe_counts, 0.0)
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    width = 1.0 / num_bins

    if ax is None:
        figure = figure_module.Figure(figsize=(5, 6), layout="constrained")
        top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
        histogram_ax = bottom
    else:
        figure, top = ax.figure, ax
        histogram_ax = ax.twinx()
        # A twin axis is drawn on top; put the histogram behind the bars instead.
        top.set_zorder(histogram_ax.get_zorder() + 1)
        top.patch.set_visible(False)

    top.bar(edges[:-1], accuracy, width=width, align="edge", color="tab:blue",
            edgecolor="black", label="accuracy")
    # Gap boxes from acc_b to conf_b, only where the bin has examples.
    top.bar(edges[:-1][nonempty], (confidence - accuracy)[nonempty], width=width,
            bottom=accuracy[nonempty], align="edge", color="tab:red", alpha=0.3,
            edgecolor="tab:red", hatch="//", label="gap")
    top.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfect calibration")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.legend(loc="upper left")
    heading = f"ECE = {ece:.4f} ({num_bins} bins)"
    top.set_title(f"{title}: {heading}" if title else heading)

    histogram_ax.bar(edges[:-1], counts, width=width, align="edge", color="gray",
                     alpha=0.3 if ax is not None else 0.8, edgecolor="black")
    histogram_ax.set_ylabel("count")
    if ax is None:
        histogram_ax.set_xlabel("confidence")
    else:
        top.set_xlabel("confidence")
    return figure


def save_reliability_diagram(path, probs, labels, **kwargs):
    """Writes `reliability_diagram(probs, labels, **kwargs)` to `path` (PNG)."""
    figure = reliability_diagram(probs, labels, **kwargs)
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path


# ---------------------------------------------------------------------------
# Private helpers.
# ---------------------------------------------------------------------------


def _import_matplotlib_figure():
    try:
        import matplotlib.figure
    except ImportError as error:
        raise ImportError(
            "reliability_diagram needs matplotlib: pip install keras-kd[plots]"
        ) from error
    return matplotlib.figure


def _equal_mass_bins(confidences, correct, weights, num_bins):
    # Sorting on (confidence, correct, weight) makes the assignment a function of
    # the multiset of examples, hence independent of their order.
    order = np.lexsort((weights, correct, confidences))
    sorted_weights = weights[order].astype(np.float64)
    weight_before = np.cumsum(sorted_weights) - sorted_weights
    total = max(float(np.sum(sorted_weights)), np.finfo(np.float64).tiny)
    sorted_bins = np.minimum(np.floor(weight_before * num_bins / total), num_bins - 1)
    bin_ids = np.empty(len(order), dtype=np.int32)
    bin_ids[order] = sorted_bins.astype(np.int32)
    return bin_ids


def _fit_inverse_temperature(logits, targets, weights, max_iterations, tolerance):
    """Root of f'(beta) on (0, inf) for the NLL f; see `TemperatureScaling`."""
    weights = weights / np.sum(weights)
    target_logits = np.sum(targets * logits, axis=-1)
    slope_at_zero = weights @ (np.mean(logits, axis=-1) - target_logits)
    slope_at_infinity = weights @ (np.max(logits, axis=-1) - target_logits)
    if slope_at_zero >= 0:
        raise ValueError(
            "No finite temperature minimises the NLL: the logits rank the true class "
            "no better than chance on these labels, so the NLL keeps falling as "
            "T -> infinity. Check that `logits` and `labels` belong together."
        )
    if slope_at_infinity <= 0:
        raise ValueError(
            "No finite temperature minimises the NLL: every example's true class "
            "already has the largest logit, so the NLL keeps falling as T -> 0. Fit "
            "on held-out data that the model gets partly wrong."
        )

    def slope_and_curvature(beta):
        scaled = beta * logits
        scaled -= np.max(scaled, axis=-1, keepdims=True)
        probs = np.exp(scaled)
        probs /= np.sum(probs, axis=-1, keepdims=True)
        mean = np.sum(probs * logits, axis=-1)
        variance = np.sum(probs * np.square(logits - mean[:, None]), axis=-1)
        return weights @ (mean - target_logits), weights @ variance

    # Bracket the root: f' < 0 at `low`, f' > 0 at `high`.
    low, high = 0.0, 1.0
    slope, curvature = slope_and_curvature(high)
    for _ in range(1100):  # 2^1100 overflows float64; the loop ends well before.
        if slope > 0:
            break
        low, high = high, 2.0 * high
        slope, curvature = slope_and_curvature(high)
    else:
        raise RuntimeError("Could not bracket the optimal inverse temperature.")

    beta = high
    for _ in range(max_iterations):
        if slope > 0:
            high = beta
        else:
            low = beta
        step_ok = curvature > 0
        candidate = beta - slope / curvature if step_ok else np.nan
        if not (low < candidate < high):
            # Newton left the bracket (or f'' vanished): bisect instead.
            candidate = 0.5 * (low + high)
        converged = abs(candidate - beta) <= tolerance * candidate
        beta = candidate
        if converged or slope == 0:
            return beta
        slope, curvature = slope_and_curvature(beta)
    warnings.warn(
        f"TemperatureScaling.fit did not converge in {max_iterations} iterations "
        f"(T = {1.0 / beta:.6g}, bracket for T [{1.0 / high:.6g}, "
        f"{math.inf if low == 0 else 1.0 / low:.6g}], NLL slope {slope:.3g}). "
        f"Raise `max_iterations` or `tolerance`.",
        RuntimeWarning,
        stacklevel=3,
    )
    return beta


def _to_logits(predictions, from_probabilities, name):
    """float64 logits of shape (N, K >= 2), from logits or (with a log) probabilities."""
    if from_probabilities:
        probs = _expand_binary(predictions, from_logits=False)
        return np.log(np.maximum(probs, _LOG_FLOOR))
    _validation.check_not_probabilities(predictions, name, _PROBABILITIES_HINT)
    return _expand_binary(predictions, from_logits=True)


def _log_softmax(logits):
    shifted = logits - np.max(logits, axis=-1, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


def _weighted_mean(values, weights):
    return float(np.sum(weights * values) / np.sum(weights))


def _to_numpy(array):
    return np.asarray(ops.convert_to_numpy(array), dtype=np.float64)


def _as_tensors(probs, labels, sample_weight):
    """The inputs as tensors, after checking there are examples and usable weights.

    Whether labels and weights match the predictions is checked where they meet
    (`keras_kd._labels`, `_binning.flatten_weights`).
    """
    probs = ops.convert_to_tensor(probs)
    labels = ops.convert_to_tensor(labels)
    if sample_weight is not None:
        weights = _to_numpy(sample_weight)
        if np.any(weights < 0) or not np.sum(weights) > 0:
            raise ValueError(
                f"`sample_weight` must be non-negative with a positive sum, got values in "
                f"[{weights.min()}, {weights.max()}] summing to {weights.sum()}."
            )
        sample_weight = ops.convert_to_tensor(sample_weight)
    if len(probs.shape) < 1 or probs.shape[0] == 0:
        raise ValueError(
            f"Predictions must have shape (N, K) with N >= 1, got {tuple(probs.shape)}."
        )
    return probs, labels, sample_weight


def _as_arrays(predictions, labels, sample_weight):
    """NumPy float64 predictions (N, K), targets (N, max(K, 2)) and weights (N,).

    Predictions keep their width; a binary model's single column is widened later,
    by `_expand_binary`, once it is known whether it holds a logit or a probability.
    """
    predictions, labels, sample_weight = _as_tensors(predictions, labels, sample_weight)
    # Decide sparse/one-hot against two columns for a binary model, so 0/1 labels
    # of shape (N,) or (N, 1) are read as class indices.
    widened = predictions
    if predictions.shape[-1] == 1:
        widened = ops.concatenate([predictions, predictions], axis=-1)
    targets = _labels.to_one_hot(labels, widened)
    weights = ops.ones(ops.shape(widened)[:-1])
    if sample_weight is not None:
        weights = _binning.flatten_weights(sample_weight, widened)
    num_classes = widened.shape[-1]
    return (
        _to_numpy(predictions).reshape(-1, predictions.shape[-1]),
        _to_numpy(targets).reshape(-1, num_classes),
        _to_numpy(weights).reshape(-1),
    )


def _expand_binary(predictions, from_logits):
    """A single column of class-1 scores as two columns: [0, z] or [1 - p, p]."""
    if predictions.shape[-1] != 1:
        return predictions
    if from_logits:
        return np.concatenate([np.zeros_like(predictions), predictions], axis=-1)
    return np.concatenate([1.0 - predictions, predictions], axis=-1)
