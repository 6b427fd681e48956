"""keras_kd: knowledge distillation, label smoothing and calibration for Keras 3."""

from keras_kd import losses
from keras_kd.distiller import Distiller
from keras_kd.losses import DistillationLoss
from keras_kd.losses import LabelSmoothingLoss
from keras_kd.losses import LogitMatchingLoss
from keras_kd.losses import VirtualTeacherLoss

__version__ = "0.1.0"

__all__ = [
    "Distiller",
    "DistillationLoss",
    "LabelSmoothingLoss",
    "LogitMatchingLoss",
    "VirtualTeacherLoss",
    "losses",
]
