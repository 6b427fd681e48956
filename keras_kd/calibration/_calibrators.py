"""Post-hoc calibrators: temperature, vector and matrix (ODIR) scaling, histogram
binning and isotonic regression, all with one API.

Every calibrator has `fit(logits, labels, sample_weight=None, from_probabilities=
False)`, `transform` (calibrated logits or log-probabilities), `predict_proba`,
`wrap(model)` (a Keras model that saves and loads) and `get_config`/`from_config`.
Fits run in NumPy float64. Vector and matrix scaling minimise a smooth convex NLL
over K or K^2 + K parameters with an analytic gradient: SciPy's L-BFGS-B does that
robustly in a few dozen iterations, where a hand-written solver would be code to
maintain, so they import `scipy` (installed with scikit-learn, the `reproduce`
extra) lazily; temperature scaling, histogram binning and isotonic regression need
only NumPy.

A binary model's single column (a logit z, or a probability p) is read as the two
classes `[0, z]` (`[1 - p, p]`) and calibrated outputs keep the single column.
"""

from __future__ import annotations

import math
import warnings
from typing import Any
from typing import Optional

import keras
import numpy as np
from keras import ops

from keras_kd import _validation
from keras_kd.calibration import _inputs
from keras_kd._types import TensorLike

_PACKAGE = "keras_kd"
# log(0) = -inf would poison the fits; this floor is far below any probability a
# float32 softmax can represent (its smallest normal is ~1e-38).
_LOG_FLOOR = np.finfo(np.float64).tiny
_PROBABILITIES_HINT = "Pass `from_probabilities=True`, or give the model's pre-softmax outputs."


def _to_logits(predictions, from_probabilities, name="logits"):
    """float64 logits (N, max(K, 2)) from logits, or from probabilities by a log.

    Raises on logits that are probability rows, probabilities that are not, +inf
    and NaN (no calibrator can be fitted to a diverged model).
    """
    _validation.check_bool(from_probabilities, "from_probabilities")
    predictions = _inputs.predictions_array(predictions, name)
    if np.any(np.isnan(predictions)):
        raise ValueError(
            f"`{name}` holds NaN (a diverged model?): no calibration can be fitted to it."
        )
    if from_probabilities:
        _inputs.check_predictions(predictions, False, name)
        probs = _inputs.expand_binary(predictions, from_logits=False)
        return np.log(np.maximum(probs, _LOG_FLOOR))
    if np.any(predictions == np.inf):
        raise ValueError(f"`{name}` holds +inf logits; only -inf (a masked class) is valid.")
    _validation.check_not_probabilities(predictions, name, _PROBABILITIES_HINT)
    return _inputs.expand_binary(predictions, from_logits=True)


def _fit_inputs(logits, labels, sample_weight, from_probabilities):
    expanded = _to_logits(logits, from_probabilities)
    width = _inputs.predictions_array(logits).shape[-1]
    targets = _inputs.labels_array(labels, np.zeros((expanded.shape[0], width)))
    weights = _inputs.weights_array(sample_weight, expanded.shape[0])
    return expanded, targets, weights / np.sum(weights), width


def _safe_products(logits):
    """Logits with -inf (masked classes, probability 0) replaced by 0 for products."""
    return np.where(np.isfinite(logits), logits, 0.0)


class _Calibrator:
    """Shared API: subclasses implement `_fit` and `_calibrated_log_probs`."""

    layer_name = "calibration"

    def __init__(self) -> None:
        self.from_probabilities = False
        self.num_classes = None  # the width of the model's output, 1 for binary

    def fit(
        self,
        logits: TensorLike,
        labels: TensorLike,
        sample_weight: Optional[TensorLike] = None,
        from_probabilities: bool = False,
    ) -> _Calibrator:
        """Fits on held-out (logits, labels); returns self.

        Args:
            logits: validation logits (N, K), (N, 1) or (N,); probabilities with
                `from_probabilities=True`. `-inf` marks a masked class.
            labels: class indices (N,) / (N, 1) or one-hot / soft targets (N, K).
            sample_weight: optional finite non-negative weights (N,).
            from_probabilities: bool, default False.
        """
        logits_, targets, weights, width = _fit_inputs(
            logits, labels, sample_weight, from_probabilities
        )
        self._fit(logits_, targets, weights)
        self.from_probabilities = from_probabilities
        self.num_classes = width
        return self

    def transform(
        self,
        logits: TensorLike,
        from_probabilities: Optional[bool] = None,
    ) -> np.ndarray:
        """Calibrated log-probabilities (N, max(K, 2)), NumPy float64."""
        if from_probabilities is None:
            from_probabilities = self.from_probabilities
        return self._calibrated_log_probs(_to_logits(logits, from_probabilities))

    def predict_proba(
        self,
        logits: TensorLike,
        from_probabilities: Optional[bool] = None,
    ) -> np.ndarray:
        """Calibrated probabilities, float32; a binary single column stays one column."""
        width = _inputs.predictions_array(logits).shape[-1]
        probs = np.exp(self.transform(logits, from_probabilities))
        if width == 1:
            probs = probs[:, 1:]
        return probs.astype(np.float32)

    def wrap(self, model: keras.Model) -> keras.Model:
        """A Keras model outputting calibrated probabilities of `model(x)`.

        The calibrator becomes a layer appended to `model` (which must have a single
        output), so the result saves with `model.save()` and loads with
        `keras.models.load_model()` once `keras_kd` is imported.
        """
        if self.num_classes is None:
            raise ValueError(f"Call `{type(self).__name__}.fit` before `wrap`.")
        return _wrap(model, self.layer(), f"{model.name}_{self.layer_name}")

    def get_config(self) -> dict[str, Any]:
        return {"from_probabilities": self.from_probabilities, "num_classes": self.num_classes}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> _Calibrator:
        config = dict(config)
        state = {key: config.pop(key) for key in ("from_probabilities", "num_classes")}
        instance = cls(**{k: v for k, v in config.items() if not k.endswith("_")})
        instance.from_probabilities = state["from_probabilities"]
        instance.num_classes = state["num_classes"]
        for key, value in config.items():
            if key.endswith("_"):
                setattr(instance, key, None if value is None else np.asarray(value))
        return instance


def _wrap(model, layer, name):
    if getattr(model, "inputs", None):
        # Fresh inputs so the original model is nested whole, as one layer.
        # `model.input` keeps a functional model's list/dict structure; a
        # Sequential model only has the flat `inputs`.
        structure = model.inputs[0] if len(model.inputs) == 1 else model.input
        inputs = keras.tree.map_structure(
            lambda t: keras.Input(batch_shape=t.shape, dtype=t.dtype, name=t.name), structure
        )
        return keras.Model(inputs, layer(model(inputs)), name=name)
    # Subclassed or not yet built models have no symbolic inputs to reuse.
    return keras.Sequential([model, layer], name=name)


# ---------------------------------------------------------------------------
# Temperature scaling.
# ---------------------------------------------------------------------------


class TemperatureScaling(_Calibrator):
    """Post-hoc calibration by one temperature: `p = softmax(z / T)` (Guo et al. 2017).

    `fit` chooses T > 0 minimising the negative log-likelihood of held-out labels.
    Dividing every logit by the same T > 0 keeps the argmax, so accuracy never
    changes; only the confidence does (T > 1 softens over-confident predictions).

    The NLL is convex in `beta = 1 / T`:
    `f(beta) = mean_i [logsumexp(beta z_i) - beta sum_k y_ik z_ik]` with
    `f'(beta) = mean_i [E_p[z_i] - sum_k y_ik z_ik]` and `f''(beta) = mean_i Var_p[z_i]
    >= 0`, where p = softmax(beta z_i). `fit` brackets the root of f' and solves it by
    Newton's method safeguarded with bisection, in NumPy float64; no SciPy needed.
    Masked classes (`-inf` logits) keep probability 0 at every T and are left out,
    as in Keras' cross-entropy.

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

    layer_name = "temperature_scaled"

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        self.temperature = _validation.check_temperature(temperature)

    def fit(
        self,
        logits: TensorLike,
        labels: TensorLike,
        sample_weight: Optional[TensorLike] = None,
        from_probabilities: bool = False,
        max_iterations: int = 100,
        tolerance: float = 1e-10,
    ) -> TemperatureScaling:
        """Sets `self.temperature` to the NLL minimiser on (logits, labels); returns self.

        Args:
            logits: validation logits of shape (N, K), (N, 1) or (N,); probabilities
                with `from_probabilities=True`, which are turned into logits by `log`.
            labels: class indices (N,) / (N, 1) or one-hot / soft targets (N, K).
            sample_weight: optional finite non-negative weights of shape (N,).
            from_probabilities: bool, default False.
            max_iterations: integer >= 1, default 100; each halves the bracket at
                worst, Newton usually needs fewer than 10.
            tolerance: relative change of beta = 1/T at which to stop, in (0, 1),
                default 1e-10.

        Raises:
            ValueError: `logits` that look like probabilities or hold NaN; labels
                on a masked class; labels that make the NLL decrease all the way to
                T = 0 (every example already classified correctly) or to
                T = infinity (logits no better than chance), where no finite
                temperature is optimal.
        Warns:
            RuntimeWarning: when `max_iterations` ran out before `tolerance` was met.
        """
        _validation.check_bool(from_probabilities, "from_probabilities")
        max_iterations = _validation.check_positive_int(max_iterations, "max_iterations")
        tolerance = _validation.check_in_range(
            tolerance, "tolerance", 0.0, 1.0, low_inclusive=False, high_inclusive=False
        )
        logits_, targets, weights, width = _fit_inputs(
            logits, labels, sample_weight, from_probabilities
        )
        beta = _fit_inverse_temperature(logits_, targets, weights, max_iterations, tolerance)
        self.temperature = float(1.0 / beta)
        self.from_probabilities = from_probabilities
        self.num_classes = width
        return self

    def transform(self, logits: TensorLike, from_probabilities: bool = False) -> np.ndarray:
        """Scaled logits `z / T` as a NumPy array of the input's shape.

        With `from_probabilities=True`, returns `log(p) / T` instead.
        """
        predictions = _inputs.to_numpy(logits)
        if from_probabilities:
            predictions = np.log(np.maximum(predictions, _LOG_FLOOR))
        else:
            _validation.check_not_probabilities(predictions, "logits", _PROBABILITIES_HINT)
        return predictions / self.temperature

    def predict_proba(self, logits: TensorLike, from_probabilities: bool = False) -> np.ndarray:
        """Calibrated probabilities `softmax(z / T)`, NumPy float32 of shape (N, K).

        A single column (or 1-D array) of binary logits gives `sigmoid(z / T)`, as
        one column.
        """
        width = _inputs.predictions_array(logits).shape[-1]
        expanded = _to_logits(logits, from_probabilities)
        probs = np.exp(_inputs.log_softmax(expanded / self.temperature))
        if width == 1:
            probs = probs[..., 1:]
        return probs.astype(np.float32)

    def layer(self) -> TemperatureScalingLayer:
        return TemperatureScalingLayer(
            temperature=self.temperature,
            from_logits=not self.from_probabilities,
            name="temperature_scaling",
        )

    def wrap(self, model: keras.Model) -> keras.Model:
        """A Keras model outputting calibrated probabilities `softmax(model(x) / T)`.

        The scaling is a `TemperatureScalingLayer` appended to `model` (which must
        have a single output), so the result saves with `model.save()` and loads with
        `keras.models.load_model()` once `keras_kd` is imported. A model that outputs
        probabilities (fitted with `from_probabilities=True`) is handled by taking
        the log first.
        """
        return _wrap(model, self.layer(), f"{model.name}_temperature_scaled")

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "temperature": self.temperature}

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

    def __init__(self, temperature: float = 1.0, from_logits: bool = True, **kwargs: Any) -> None:
        # float32 even under mixed precision: a float16 softmax rounds confident
        # probabilities to exactly 1, which is the over-confidence being corrected.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.temperature = _validation.check_temperature(temperature)
        self.from_logits = _validation.check_bool(from_logits, "from_logits")

    def call(self, inputs: TensorLike) -> TensorLike:
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

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "temperature": self.temperature,
            "from_logits": self.from_logits,
        }


def _fit_inverse_temperature(logits, targets, weights, max_iterations, tolerance):
    """Root of f'(beta) on (0, inf) for the NLL f; see `TemperatureScaling`."""
    weights = weights / np.sum(weights)
    finite = np.isfinite(logits)
    safe = _safe_products(logits)
    target_logits = np.sum(np.where(targets > 0, targets * safe, 0.0), axis=-1)
    if np.any((targets > 0) & ~finite):
        raise ValueError(
            "A label falls on a masked class (logit -inf): its NLL is infinite at every "
            "temperature. Check that the mask and the labels agree."
        )
    # As beta -> 0, softmax(beta z) is uniform over the unmasked classes.
    unmasked_mean = np.sum(safe, axis=-1) / np.maximum(np.sum(finite, axis=-1), 1)
    slope_at_zero = weights @ (unmasked_mean - target_logits)
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
        mean = np.sum(probs * safe, axis=-1)
        variance = np.sum(probs * np.square(safe - mean[:, None]), axis=-1)
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
        raise ValueError("Could not bracket the optimal inverse temperature.")

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


# ---------------------------------------------------------------------------
# Vector and matrix scaling.
# ---------------------------------------------------------------------------


def _minimize(objective, initial, max_iterations):
    try:
        from scipy import optimize
    except ImportError as error:  # pragma: no cover - scipy comes with scikit-learn
        raise ImportError(
            "Vector and matrix scaling need scipy: pip install keras-kd[reproduce]"
        ) from error
    result = optimize.minimize(
        objective, initial, jac=True, method="L-BFGS-B",
        options={"maxiter": max_iterations, "gtol": 1e-9, "ftol": 1e-15},
    )
    return result.x


def _affine_nll(inputs, targets, weights, kernel, bias):
    """Weighted NLL of softmax(inputs @ kernel.T + bias) and its gradient (kernel, bias)."""
    scores = inputs @ kernel.T + bias
    log_probs = _inputs.log_softmax(scores)
    nll = weights @ _inputs.cross_entropy_terms(targets, log_probs)
    # d NLL / d scores = w (p - y); masked classes have p = 0 and y = 0.
    grad_scores = weights[:, None] * (np.exp(log_probs) - targets)
    return nll, grad_scores.T @ inputs, np.sum(grad_scores, axis=0)


class VectorScaling(_Calibrator):
    """Per-class scale and bias: `p = softmax(w * z + b)` (Guo et al. 2017).

    `w, b` (K each) minimise the weighted NLL on held-out labels, from `w = 1,
    b = 0`, by L-BFGS in float64. Unlike temperature scaling it can change the
    argmax. For a binary logit it is Platt scaling, `sigmoid(a z + c)`. Masked
    (`-inf`) logits stay masked. Given probabilities (`from_probabilities=True`) it
    scales `log p`, which differs from scaling the logits unless w is uniform.

    Args:
        max_iterations: L-BFGS iterations, integer >= 1, default 500.

    Example:
        >>> calibrated = VectorScaling().fit(val_logits, y_val).predict_proba(test_logits)

    References:
        Guo, Pleiss, Sun, Weinberger. On Calibration of Modern Neural Networks.
        ICML 2017. Platt. Probabilistic Outputs for Support Vector Machines. 1999.
    """

    layer_name = "vector_scaled"

    def __init__(self, max_iterations: int = 500) -> None:
        super().__init__()
        self.max_iterations = _validation.check_positive_int(max_iterations, "max_iterations")
        self.scale_ = None
        self.bias_ = None

    def _fit(self, logits, targets, weights):
        num_classes = logits.shape[-1]
        inputs = _safe_products(logits)
        mask = np.where(np.isfinite(logits), 0.0, -np.inf)

        def objective(params):
            scale, bias = params[:num_classes], params[num_classes:]
            scores = inputs * scale + bias + mask
            log_probs = _inputs.log_softmax(scores)
            nll = weights @ _inputs.cross_entropy_terms(targets, log_probs)
            grad = weights[:, None] * (np.exp(log_probs) - targets)
            return nll, np.concatenate([np.sum(grad * inputs, axis=0), np.sum(grad, axis=0)])

        initial = np.concatenate([np.ones(num_classes), np.zeros(num_classes)])
        params = _minimize(objective, initial, self.max_iterations)
        self.scale_, self.bias_ = params[:num_classes], params[num_classes:]

    def _calibrated_log_probs(self, logits):
        mask = np.where(np.isfinite(logits), 0.0, -np.inf)
        return _inputs.log_softmax(_safe_products(logits) * self.scale_ + self.bias_ + mask)

    def layer(self) -> keras.layers.Layer:
        kernel = np.diag(self.scale_)
        return AffineCalibrationLayer(kernel, self.bias_, from_logits=not self.from_probabilities,
                                      log_softmax_inputs=False, name="vector_scaling")

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "max_iterations": self.max_iterations,
                "scale_": _listed(self.scale_), "bias_": _listed(self.bias_)}


class MatrixScaling(_Calibrator):
    """Matrix scaling with off-diagonal and intercept regularisation (ODIR).

    `p = softmax(W log_softmax(z) + b)`: full K x K matrix W and bias b on the
    log-probabilities, i.e. Dirichlet calibration (Kull et al. 2019), which equals
    Guo et al.'s matrix scaling `softmax(W z + b)` up to a per-row shift of the
    logits that softmax ignores only when W's rows sum alike; using log-probs makes
    the result independent of how the model shifts its logits. Fitted by L-BFGS,
    from W = I and b = 0, on

        NLL + lambda / (K (K - 1)) sum_{i != j} W_ij^2 + mu / K sum_j b_j^2,

    which keeps the K^2 parameters from over-fitting with many classes (Kull et al.
    2019, ODIR). `off_diagonal = intercept = 0` is plain matrix scaling.

    Args:
        off_diagonal: lambda >= 0, default 0.01.
        intercept: mu >= 0, default 0.01.
        max_iterations: L-BFGS iterations, integer >= 1, default 500.

    References:
        Guo et al. ICML 2017. Kull, Perello-Nieto, Kängsepp, Silva Filho, Song,
        Flach. Beyond temperature scaling: Obtaining well-calibrated multiclass
        probabilities with Dirichlet calibration. NeurIPS 2019.
    """

    layer_name = "matrix_scaled"

    def __init__(
        self,
        off_diagonal: float = 0.01,
        intercept: float = 0.01,
        max_iterations: int = 500,
    ) -> None:
        super().__init__()
        self.off_diagonal = _validation.check_in_range(off_diagonal, "off_diagonal", 0.0, math.inf)
        self.intercept = _validation.check_in_range(intercept, "intercept", 0.0, math.inf)
        self.max_iterations = _validation.check_positive_int(max_iterations, "max_iterations")
        self.kernel_ = None
        self.bias_ = None

    def _fit(self, logits, targets, weights):
        num_classes = logits.shape[-1]
        inputs = _safe_products(_inputs.log_softmax(logits))
        mask = np.where(np.isfinite(logits), 0.0, -np.inf)
        off = 1.0 - np.eye(num_classes)
        off_scale = self.off_diagonal / max(num_classes * (num_classes - 1), 1)
        bias_scale = self.intercept / num_classes

        def objective(params):
            kernel = params[: num_classes**2].reshape(num_classes, num_classes)
            bias = params[num_classes**2:]
            scores = inputs @ kernel.T + bias + mask
            log_probs = _inputs.log_softmax(scores)
            nll = weights @ _inputs.cross_entropy_terms(targets, log_probs)
            grad = weights[:, None] * (np.exp(log_probs) - targets)
            penalty = off_scale * np.sum(np.square(kernel * off)) + bias_scale * np.sum(bias**2)
            grad_kernel = grad.T @ inputs + 2.0 * off_scale * kernel * off
            grad_bias = np.sum(grad, axis=0) + 2.0 * bias_scale * bias
            return nll + penalty, np.concatenate([grad_kernel.ravel(), grad_bias])

        initial = np.concatenate([np.eye(num_classes).ravel(), np.zeros(num_classes)])
        params = _minimize(objective, initial, self.max_iterations)
        self.kernel_ = params[: num_classes**2].reshape(num_classes, num_classes)
        self.bias_ = params[num_classes**2:]

    def _calibrated_log_probs(self, logits):
        mask = np.where(np.isfinite(logits), 0.0, -np.inf)
        inputs = _safe_products(_inputs.log_softmax(logits))
        return _inputs.log_softmax(inputs @ self.kernel_.T + self.bias_ + mask)

    def layer(self) -> keras.layers.Layer:
        return AffineCalibrationLayer(self.kernel_, self.bias_,
                                      from_logits=not self.from_probabilities,
                                      log_softmax_inputs=True, name="matrix_scaling")

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "off_diagonal": self.off_diagonal,
                "intercept": self.intercept, "max_iterations": self.max_iterations,
                "kernel_": _listed(self.kernel_), "bias_": _listed(self.bias_)}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class AffineCalibrationLayer(keras.layers.Layer):
    """Outputs `softmax(x W^T + b)` with x the logits (or their log-softmax), float32.

    Made by `VectorScaling.wrap` (diagonal W, x = logits) and `MatrixScaling.wrap`
    (full W, x = log_softmax(logits)). A single input column is a binary logit read
    as `[0, z]`, and the output is the calibrated probability of class 1 (one
    column). W and b are non-trainable weights, saved with the model.

    Args:
        kernel: (K, K) array, K >= 2 (K = 2 for a binary model).
        bias: (K,) array.
        from_logits: bool, default True; False takes the log of probabilities first.
        log_softmax_inputs: bool, default False.
    """

    def __init__(
        self,
        kernel: TensorLike,
        bias: TensorLike,
        from_logits: bool = True,
        log_softmax_inputs: bool = False,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.from_logits = _validation.check_bool(from_logits, "from_logits")
        self.log_softmax_inputs = _validation.check_bool(log_softmax_inputs, "log_softmax_inputs")
        kernel, bias = np.asarray(kernel, np.float32), np.asarray(bias, np.float32)
        self.kernel = self.add_weight(shape=kernel.shape, initializer=keras.initializers.Constant(
            kernel), trainable=False, name="kernel")
        self.bias = self.add_weight(shape=bias.shape, initializer=keras.initializers.Constant(
            bias), trainable=False, name="bias")

    def call(self, inputs: TensorLike) -> TensorLike:
        inputs, binary = _layer_logits(inputs, self.from_logits)
        if self.log_softmax_inputs:
            inputs = ops.log_softmax(inputs, axis=-1)
        finite = ops.isfinite(inputs)
        safe = ops.where(finite, inputs, 0.0)
        scores = ops.matmul(safe, ops.transpose(self.kernel)) + self.bias
        scores = ops.where(finite, scores, float("-inf"))
        probs = ops.softmax(scores, axis=-1)
        return probs[..., 1:] if binary else probs

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "kernel": ops.convert_to_numpy(self.kernel).tolist(),
            "bias": ops.convert_to_numpy(self.bias).tolist(),
            "from_logits": self.from_logits,
            "log_softmax_inputs": self.log_softmax_inputs,
        }


def _layer_logits(inputs, from_logits):
    """float32 logits (..., max(K, 2)) in a layer, and whether the input was binary."""
    inputs = ops.cast(inputs, "float32")
    binary = inputs.shape[-1] == 1
    if binary:
        if from_logits:
            inputs = ops.concatenate([ops.zeros_like(inputs), inputs], axis=-1)
        else:
            inputs = ops.concatenate([1.0 - inputs, inputs], axis=-1)
    if not from_logits:
        inputs = ops.log(ops.maximum(inputs, 1e-30))
    return inputs, binary


# ---------------------------------------------------------------------------
# Histogram binning and isotonic regression (one-vs-rest, then renormalised).
# ---------------------------------------------------------------------------


class _OneVsRestStep(_Calibrator):
    """Per class k a non-decreasing step function `g_k(p_k)`, then renormalised.

    `p'_k = g_k(p_k) / sum_j g_j(p_j)`; a row where every `g_j` is 0 falls back to
    the uncalibrated probabilities. Step k has thresholds `t_k` (sorted) and values
    `v_k` (one more): `g_k(p) = v_k[#{t in t_k : p >= t}]`.
    """

    def _fit(self, logits, targets, weights):
        probs = np.exp(_inputs.log_softmax(logits))
        thresholds, values = [], []
        for k in range(probs.shape[-1]):
            t, v = self._fit_class(probs[:, k], targets[:, k], weights)
            thresholds.append(t)
            values.append(v)
        width = max(len(t) for t in thresholds)
        # Padding thresholds with +inf (never reached) gives every class one shape.
        self.thresholds_ = np.stack(
            [np.concatenate([t, np.full(width - len(t), np.inf)]) for t in thresholds]
        )
        self.values_ = np.stack(
            [np.concatenate([v, np.full(width + 1 - len(v), v[-1])]) for v in values]
        )

    def _calibrated_log_probs(self, logits):
        probs = np.exp(_inputs.log_softmax(logits))
        index = np.sum(probs[:, :, None] >= self.thresholds_[None], axis=-1)
        mapped = np.take_along_axis(self.values_[None], index[:, :, None], axis=-1)[..., 0]
        total = np.sum(mapped, axis=-1, keepdims=True)
        calibrated = np.where(total > 0, mapped / np.where(total > 0, total, 1.0), probs)
        with np.errstate(divide="ignore"):
            return np.log(calibrated)

    def layer(self) -> keras.layers.Layer:
        return StepCalibrationLayer(self.thresholds_, self.values_,
                                    from_logits=not self.from_probabilities, name=self.layer_name)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "thresholds_": _listed(self.thresholds_),
                "values_": _listed(self.values_)}


class HistogramBinning(_OneVsRestStep):
    """Histogram binning (Zadrozny & Elkan 2001), one-vs-rest then renormalised.

    For class k, `p_k` is put in B equal-width bins (`min(floor(p B), B - 1)`, the
    ECE's convention) and mapped to the weighted frequency of `y = k` in its bin on
    the validation set; an empty bin keeps its midpoint. The K results are
    divided by their sum, as netcal does for K classes. It can change the argmax.

    Args:
        num_bins: B, integer >= 1, default 15.

    References:
        Zadrozny, Elkan. Obtaining calibrated probability estimates from decision
        trees and naive Bayesian classifiers. ICML 2001.
    """

    layer_name = "histogram_binning"

    def __init__(self, num_bins: int = 15) -> None:
        super().__init__()
        self.num_bins = _validation.check_positive_int(num_bins, "num_bins")
        self.thresholds_ = None
        self.values_ = None

    def _fit_class(self, scores, targets, weights):
        bins = np.minimum((scores * self.num_bins).astype(np.int64), self.num_bins - 1)
        counts = np.bincount(bins, weights=weights, minlength=self.num_bins)
        positives = np.bincount(bins, weights=weights * targets, minlength=self.num_bins)
        midpoints = (np.arange(self.num_bins) + 0.5) / self.num_bins
        values = np.where(counts > 0, positives / np.where(counts > 0, counts, 1.0), midpoints)
        return np.arange(1, self.num_bins) / self.num_bins, values

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "num_bins": self.num_bins}


class IsotonicCalibration(_OneVsRestStep):
    """Isotonic regression (Zadrozny & Elkan 2002), one-vs-rest then renormalised.

    For class k, the non-decreasing step function g minimising
    `sum_i w_i (g(p_ik) - y_ik)^2` (pool-adjacent-violators, in float64), then the K
    results divided by their sum, as netcal does. A score between two fitted blocks
    takes the value of the nearer block's edge (a step halfway between them, where
    scikit-learn interpolates linearly); on fitted scores both agree. It can change
    the argmax.

    References:
        Zadrozny, Elkan. Transforming classifier scores into accurate multiclass
        probability estimates. KDD 2002. Barlow et al. Statistical inference under
        order restrictions. 1972 (PAV).
    """

    layer_name = "isotonic_calibration"

    def __init__(self) -> None:
        super().__init__()
        self.thresholds_ = None
        self.values_ = None

    def _fit_class(self, scores, targets, weights):
        order = np.argsort(scores, kind="stable")
        return _pool_adjacent_violators(scores[order], targets[order], weights[order])


def _pool_adjacent_violators(scores, targets, weights):
    """Weighted isotonic fit of scores: (thresholds between blocks, block values)."""
    # Ties share one block first, so equal scores always get one value.
    unique, inverse = np.unique(scores, return_inverse=True)
    block_weight = np.bincount(inverse, weights=weights)
    block_sum = np.bincount(inverse, weights=weights * targets)
    stack_weight, stack_sum, stack_start, stack_end = [], [], [], []
    for score, weight, total in zip(unique, block_weight, block_sum):
        stack_weight.append(weight)
        stack_sum.append(total)
        stack_start.append(score)
        stack_end.append(score)
        while len(stack_weight) > 1 and (
            stack_sum[-2] * stack_weight[-1] >= stack_sum[-1] * stack_weight[-2]
        ):
            weight, total, end = stack_weight.pop(), stack_sum.pop(), stack_end.pop()
            stack_start.pop()
            stack_weight[-1] += weight
            stack_sum[-1] += total
            stack_end[-1] = end
    block_weights = np.asarray(stack_weight)
    values = np.where(block_weights > 0,
                      np.asarray(stack_sum) / np.where(block_weights > 0, block_weights, 1), 0.0)
    # Steps halfway between blocks: a float32 deployment rounds no fitted score
    # across a step, as it could with steps on the scores themselves.
    thresholds = 0.5 * (np.asarray(stack_end[:-1]) + np.asarray(stack_start[1:]))
    return thresholds, values


@keras.saving.register_keras_serializable(package=_PACKAGE)
class StepCalibrationLayer(keras.layers.Layer):
    """One-vs-rest step functions on softmax probabilities, renormalised; float32.

    Made by `HistogramBinning.wrap` and `IsotonicCalibration.wrap`: class k's
    probability p goes to `values[k, #{t in thresholds[k] : p >= t}]`, then the row
    is divided by its sum (the uncalibrated probabilities where the sum is 0).

    Args:
        thresholds: (K, M) array, each row sorted (+inf for padding).
        values: (K, M + 1) array.
        from_logits: bool, default True.
    """

    def __init__(
        self,
        thresholds: TensorLike,
        values: TensorLike,
        from_logits: bool = True,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.from_logits = _validation.check_bool(from_logits, "from_logits")
        thresholds = np.asarray(thresholds, np.float32)
        values = np.asarray(values, np.float32)
        self.thresholds = self.add_weight(shape=thresholds.shape, trainable=False,
                                          initializer=keras.initializers.Constant(thresholds),
                                          name="thresholds")
        self.step_values = self.add_weight(shape=values.shape, trainable=False,
                                           initializer=keras.initializers.Constant(values),
                                           name="values")

    def call(self, inputs: TensorLike) -> TensorLike:
        inputs, binary = _layer_logits(inputs, self.from_logits)
        probs = ops.softmax(inputs, axis=-1)
        above = ops.cast(ops.expand_dims(probs, -1) >= self.thresholds, "int32")
        index = ops.sum(above, axis=-1)  # (..., K)
        num_values = self.step_values.shape[-1]
        mapped = ops.sum(ops.one_hot(index, num_values) * self.step_values, axis=-1)
        total = ops.sum(mapped, axis=-1, keepdims=True)
        calibrated = ops.where(total > 0, mapped / ops.where(total > 0, total, 1.0), probs)
        return calibrated[..., 1:] if binary else calibrated

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "thresholds": ops.convert_to_numpy(self.thresholds).tolist(),
            "values": ops.convert_to_numpy(self.step_values).tolist(),
            "from_logits": self.from_logits,
        }


def _listed(array):
    return None if array is None else np.asarray(array).tolist()
