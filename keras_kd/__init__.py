"""keras_kd: knowledge distillation, label smoothing and calibration for Keras 3.

Public names are re-exported here; the modules say where each belongs:
`losses` (the formulas), `distiller` (the Distiller), `features` (hints from
intermediate layers), `teacher_cache` (precomputed teacher logits), `metrics`
(streaming ECE), `calibration` (ECE on arrays, temperature scaling, diagrams),
`callbacks` (ECE during training) and `schedules` (the Distiller's temperature, alpha
and term weights during training).
"""

import importlib
from typing import Any

from keras_kd import calibration
from keras_kd import callbacks
from keras_kd import losses
from keras_kd import metrics
from keras_kd import schedules
from keras_kd.calibration import HistogramBinning
from keras_kd.calibration import IsotonicCalibration
from keras_kd.calibration import MatrixScaling
from keras_kd.calibration import TemperatureScaling
from keras_kd.calibration import VectorScaling
from keras_kd.calibration import compare_calibrators
from keras_kd.calibration import expected_calibration_error
from keras_kd.calibration import reliability_diagram
from keras_kd.callbacks import ECECallback
from keras_kd.distiller import Distiller
from keras_kd.features import FeaturePair
from keras_kd.losses import DecoupledDistillationLoss
from keras_kd.losses import DistillationLoss
from keras_kd.losses import DistillationTerm
from keras_kd.losses import DISTLoss
from keras_kd.losses import LabelSmoothingLoss
from keras_kd.losses import LogitMatchingLoss
from keras_kd.losses import VirtualTeacherLoss
from keras_kd.metrics import BrierScore
from keras_kd.metrics import ExpectedCalibrationError

__version__ = "0.2.0"


def __getattr__(name: str) -> Any:
    # The teacher-logit cache builds tf.data pipelines and so imports TensorFlow: loaded
    # on first use, `import keras_kd` does not start TensorFlow (and claim GPU memory)
    # beside JAX or PyTorch.
    if name in ("cache_teacher_logits", "teacher_cache"):
        teacher_cache = importlib.import_module("keras_kd.teacher_cache")
        return teacher_cache if name == "teacher_cache" else teacher_cache.cache_teacher_logits
    raise AttributeError(f"module 'keras_kd' has no attribute {name!r}")

__all__ = [
    "BrierScore",
    "DISTLoss",
    "DecoupledDistillationLoss",
    "Distiller",
    "DistillationLoss",
    "DistillationTerm",
    "ECECallback",
    "ExpectedCalibrationError",
    "FeaturePair",
    "HistogramBinning",
    "IsotonicCalibration",
    "LabelSmoothingLoss",
    "LogitMatchingLoss",
    "MatrixScaling",
    "TemperatureScaling",
    "VectorScaling",
    "VirtualTeacherLoss",
    "cache_teacher_logits",
    "calibration",
    "callbacks",
    "compare_calibrators",
    "expected_calibration_error",
    "losses",
    "metrics",
    "reliability_diagram",
    "schedules",
    "teacher_cache",
]
