"""keras_kd: knowledge distillation, label smoothing and calibration for Keras 3.

Public names are re-exported here; the modules say where each belongs:
`losses` (the formulas), `distiller` (the Distiller), `features` (hints from
intermediate layers), `teacher_cache` (precomputed teacher logits), `metrics`
(streaming ECE), `calibration` (ECE on arrays, temperature scaling, diagrams) and
`callbacks` (ECE during training).
"""

from keras_kd import calibration
from keras_kd import callbacks
from keras_kd import losses
from keras_kd import metrics
from keras_kd.calibration import TemperatureScaling
from keras_kd.calibration import expected_calibration_error
from keras_kd.calibration import reliability_diagram
from keras_kd.callbacks import ECECallback
from keras_kd.distiller import Distiller
from keras_kd.features import FeaturePair
from keras_kd.losses import DistillationLoss
from keras_kd.losses import LabelSmoothingLoss
from keras_kd.losses import LogitMatchingLoss
from keras_kd.losses import VirtualTeacherLoss
from keras_kd.metrics import ExpectedCalibrationError
from keras_kd.teacher_cache import cache_teacher_logits

__version__ = "0.1.0"

__all__ = [
    "Distiller",
    "DistillationLoss",
    "ECECallback",
    "ExpectedCalibrationError",
    "FeaturePair",
    "LabelSmoothingLoss",
    "LogitMatchingLoss",
    "TemperatureScaling",
    "VirtualTeacherLoss",
    "cache_teacher_logits",
    "calibration",
    "callbacks",
    "expected_calibration_error",
    "losses",
    "metrics",
    "reliability_diagram",
]
