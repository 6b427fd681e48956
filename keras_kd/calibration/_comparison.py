"""Fit several calibrators on a validation split and compare them on a test split."""

import functools
from typing import TYPE_CHECKING
from typing import NamedTuple
from typing import Optional

import numpy as np

from keras_kd import _validation
from keras_kd.calibration import _calibrators
from keras_kd.calibration import _inputs
from keras_kd.calibration import _measures
from keras_kd.calibration import _plotting
from keras_kd._types import TensorLike

if TYPE_CHECKING:  # matplotlib is imported lazily, where a figure is drawn
    import matplotlib.figure


class CalibratorResult(NamedTuple):
    """One calibrator's test measures, each an `Interval(estimate, low, high)`."""

    name: str
    ece: _measures.Interval
    nll: _measures.Interval
    brier: _measures.Interval
    accuracy: _measures.Interval
    probabilities: np.ndarray


class CalibratorComparison(NamedTuple):
    """What `compare_calibrators` returns: `results` plus the test labels."""

    results: list
    labels: np.ndarray
    num_bins: int
    level: float

    def to_markdown(self) -> str:
        """The results as a Markdown table, `estimate [low, high]` in each cell."""
        percent = int(round(self.level * 100))
        lines = [
            f"| calibrator | test ECE ({self.num_bins} bins) | NLL | Brier | accuracy |",
            "|---|---|---|---|---|",
        ]
        for result in self.results:
            cells = [_cell(getattr(result, key)) for key in ("ece", "nll", "brier", "accuracy")]
            lines.append(f"| {result.name} | " + " | ".join(cells) + " |")
        lines.append(f"\nIntervals: {percent} % percentile bootstrap over test examples.")
        return "\n".join(lines)

    def figure(self) -> "matplotlib.figure.Figure":
        """Reliability diagrams of every calibrator on the test split, side by side."""
        return _plotting.reliability_diagrams(
            {result.name: result.probabilities for result in self.results},
            self.labels, num_bins=self.num_bins,
        )


def _cell(interval):
    return f"{interval.estimate:.4f} [{interval.low:.4f}, {interval.high:.4f}]"


def default_calibrators() -> dict:
    """The calibrators `compare_calibrators` fits when given none."""
    return {
        "temperature": _calibrators.TemperatureScaling(),
        "vector": _calibrators.VectorScaling(),
        "matrix (ODIR)": _calibrators.MatrixScaling(),
        "histogram binning": _calibrators.HistogramBinning(),
        "isotonic": _calibrators.IsotonicCalibration(),
    }


def compare_calibrators(
    val_logits: TensorLike,
    val_labels: TensorLike,
    test_logits: TensorLike,
    test_labels: TensorLike,
    calibrators: Optional[dict] = None,
    from_probabilities: bool = False,
    num_bins: int = 15,
    num_resamples: int = 200,
    level: float = 0.95,
    seed: int = 0,
) -> CalibratorComparison:
    """Fits each calibrator on the validation split; measures all on the test split.

    The first row is the uncalibrated model ("none"). For each calibrator, test
    ECE (top-label, equal-width), NLL, Brier score and accuracy come with a
    percentile bootstrap interval over test examples (`bootstrap_interval`, the same
    resamples for every row, so rows are comparable).

    Args:
        val_logits, val_labels: the split the calibrators are fitted on.
        test_logits, test_labels: the split they are measured on.
        calibrators: dict `{name: unfitted calibrator}`, default
            `default_calibrators()` (temperature, vector, matrix with ODIR,
            histogram binning, isotonic).
        from_probabilities: bool, default False: whether the logits are
            probabilities.
        num_bins: ECE bins, default 15.
        num_resamples: bootstrap resamples, default 200.
        level: interval coverage, default 0.95.
        seed: bootstrap seed, default 0.

    Returns:
        A `CalibratorComparison`: `.results`, `.to_markdown()`, `.figure()`.

    Example:
        >>> comparison = compare_calibrators(val_logits, y_val, test_logits, y_test)
        >>> print(comparison.to_markdown())
        >>> comparison.figure().savefig("calibrators.png")
    """
    num_bins = _validation.check_positive_int(num_bins, "num_bins")
    calibrators = default_calibrators() if calibrators is None else dict(calibrators)
    test_predictions = _inputs.predictions_array(test_logits, "test_logits")
    labels = np.asarray(_inputs.labels_array(test_labels, test_predictions))
    uncalibrated = np.exp(_calibrators._to_logits(test_logits, from_probabilities, "test_logits"))
    uncalibrated = uncalibrated / np.sum(uncalibrated, axis=-1, keepdims=True)
    rows = [("none", uncalibrated)]
    for name, calibrator in calibrators.items():
        calibrator.fit(val_logits, val_labels, from_probabilities=from_probabilities)
        probs = calibrator.predict_proba(test_logits, from_probabilities=from_probabilities)
        probs = _inputs.expand_binary(np.asarray(probs, np.float64), from_logits=False)
        rows.append((name, probs / np.sum(probs, axis=-1, keepdims=True)))
    measures = {
        "ece": functools.partial(_measures.expected_calibration_error, num_bins=num_bins),
        "nll": functools.partial(_measures.negative_log_likelihood, from_logits=False),
        "brier": _measures.brier_score,
        "accuracy": _measures.accuracy,
    }
    results = []
    for name, probs in rows:
        intervals = {
            key: _measures.bootstrap_interval(measure, probs, labels, num_resamples=num_resamples,
                                              level=level, seed=seed)
            for key, measure in measures.items()
        }
        results.append(CalibratorResult(name=name, probabilities=probs, **intervals))
    return CalibratorComparison(results, labels, num_bins, level)
