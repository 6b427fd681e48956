"""Calibration on arrays in memory: measures, calibrators and reliability diagrams.

These take NumPy arrays or tensors (a model's `predict()` output and the labels) and
return Python floats, NumPy arrays or figures. The equal-width ECE goes through
`keras_kd._binning`, the same code as the streaming `ExpectedCalibrationError`
metric, so both give the same number on the same data. NLL, Brier score and every
calibrator fit are NumPy float64: they run once per evaluation, where precision is
worth more than speed.

- measures: `expected_calibration_error` (ECE/MCE/RMS-CE, top-label or classwise,
  equal-width or equal-mass), `negative_log_likelihood`, `brier_score`, `accuracy`,
  `bootstrap_interval`, `perfectly_calibrated_ece`;
- calibrators: `TemperatureScaling`, `VectorScaling`, `MatrixScaling` (ODIR),
  `HistogramBinning`, `IsotonicCalibration`, and `compare_calibrators`;
- plotting: `reliability_diagram`, `reliability_diagrams`, `save_reliability_diagram`.

Labels are class indices (N,) / (N, 1) or one-hot (or soft) targets (N, K), decided
from the shapes as everywhere in keras_kd. Predictions of shape (N, 1) or (N,) are a
binary model's probability (or logit) of class 1; `from_logits` is always said, never
guessed, and inputs that contradict it raise (see `keras_kd.calibration._inputs`).

References:
    Naeini, Cooper, Hauskrecht. Obtaining Well Calibrated Probabilities Using
    Bayesian Binning. AAAI 2015.
    Guo, Pleiss, Sun, Weinberger. On Calibration of Modern Neural Networks. ICML 2017.
    Kull et al. Beyond temperature scaling: Dirichlet calibration. NeurIPS 2019.
    Müller, Kornblith, Hinton. When Does Label Smoothing Help? NeurIPS 2019.
    Nixon, Dusenberry, Zhang, Jerfel, Tran. Measuring Calibration in Deep Learning.
    CVPR Workshops 2019.
"""

from keras_kd.calibration._calibrators import AffineCalibrationLayer
from keras_kd.calibration._calibrators import HistogramBinning
from keras_kd.calibration._calibrators import IsotonicCalibration
from keras_kd.calibration._calibrators import MatrixScaling
from keras_kd.calibration._calibrators import StepCalibrationLayer
from keras_kd.calibration._calibrators import TemperatureScaling
from keras_kd.calibration._calibrators import TemperatureScalingLayer
from keras_kd.calibration._calibrators import VectorScaling
from keras_kd.calibration._comparison import CalibratorComparison
from keras_kd.calibration._comparison import compare_calibrators
from keras_kd.calibration._comparison import default_calibrators
from keras_kd.calibration._measures import Interval
from keras_kd.calibration._measures import accuracy
from keras_kd.calibration._measures import bootstrap_interval
from keras_kd.calibration._measures import brier_score
from keras_kd.calibration._measures import expected_calibration_error
from keras_kd.calibration._measures import negative_log_likelihood
from keras_kd.calibration._measures import perfectly_calibrated_ece
from keras_kd.calibration._plotting import reliability_diagram
from keras_kd.calibration._plotting import reliability_diagrams
from keras_kd.calibration._plotting import save_reliability_diagram

__all__ = [
    "AffineCalibrationLayer",
    "CalibratorComparison",
    "HistogramBinning",
    "Interval",
    "IsotonicCalibration",
    "MatrixScaling",
    "StepCalibrationLayer",
    "TemperatureScaling",
    "TemperatureScalingLayer",
    "VectorScaling",
    "accuracy",
    "bootstrap_interval",
    "brier_score",
    "compare_calibrators",
    "default_calibrators",
    "expected_calibration_error",
    "negative_log_likelihood",
    "perfectly_calibrated_ece",
    "reliability_diagram",
    "reliability_diagrams",
    "save_reliability_diagram",
]
