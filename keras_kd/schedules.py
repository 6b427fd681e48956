"""Schedules for a `Distiller`'s temperature, alpha and term weights during `fit`.

`DistillationSchedule` is a callback that assigns the Distiller's validated
properties (`temperature`, `alpha`, `term_weights`) per epoch or per step. They are
backed by non-trainable variables read inside the train step, so a new value takes
effect at the next step without retracing, and the current values are saved with the
model (a resumed `fit(initial_epoch=...)` recomputes them from the epoch).

Schedules are callables of the epoch (0-based) or of the global step: `LinearWarmup`,
`LinearDecay`, any `keras.optimizers.schedules.LearningRateSchedule`, or a function.

Example, DKD's recipe (Zhao et al. 2022: the KD part warmed up linearly over 20
epochs) with a temperature decay:

    >>> distiller = keras_kd.Distiller(
    ...     teacher, student, distillation_loss=keras_kd.DecoupledDistillationLoss())
    >>> distiller.compile(
    ...     "sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> schedule = DistillationSchedule(
    ...     term_weights={"decoupled_distillation_loss": LinearWarmup(1.0, 20)},
    ...     temperature=LinearDecay(8.0, 4.0, 100),
    ... )
    >>> distiller.fit(x, y, epochs=240, callbacks=[schedule])
"""

from __future__ import annotations

import math
import numbers
from typing import Any
from typing import Callable
from typing import Dict
from typing import Optional

import keras

from keras_kd import _validation

_UNITS = ("epoch", "step")


@keras.saving.register_keras_serializable(package="keras_kd")
class LinearWarmup:
    """`value * min(1, (t + 1) / warmup)`: from `value / warmup` at t = 0 to `value`.

    With epochs as t this is mdistiller's DKD warm-up `min(epoch / warmup, 1)` (its
    epochs count from 1).

    Args:
        value: the value after the warm-up, a finite float.
        warmup: number of epochs (or steps), an integer >= 1.
    """

    def __init__(self, value: float, warmup: int) -> None:
        self.value = _finite(value, "value")
        self.warmup = _validation.check_positive_int(warmup, "warmup")

    def __call__(self, t: int) -> float:
        return self.value * min(1.0, (t + 1) / self.warmup)

    def get_config(self) -> dict[str, Any]:
        return {"value": self.value, "warmup": self.warmup}


@keras.saving.register_keras_serializable(package="keras_kd")
class LinearDecay:
    """`start + (end - start) * min(1, t / duration)`: linear from `start` to `end`, then `end`.

    Args:
        start: the value at t = 0, a finite float.
        end: the value from t = duration on, a finite float.
        duration: number of epochs (or steps), an integer >= 1.
    """

    def __init__(self, start: float, end: float, duration: int) -> None:
        self.start = _finite(start, "start")
        self.end = _finite(end, "end")
        self.duration = _validation.check_positive_int(duration, "duration")

    def __call__(self, t: int) -> float:
        return self.start + (self.end - self.start) * min(1.0, t / self.duration)

    def get_config(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "duration": self.duration}


class DistillationSchedule(keras.callbacks.Callback):
    """Sets a `Distiller`'s `temperature`, `alpha` and term weights from schedules.

    Before each epoch (`unit="epoch"`, t = the 0-based epoch) or each training step
    (`unit="step"`, t = the optimizer's step count), each given schedule is evaluated
    at t and assigned to the Distiller's property of the same name, which validates it
    (a schedule that leaves the valid range raises a `ValueError` naming the property)
    and makes it effective at the next step without retracing. Under
    `compile(steps_per_execution=n)` Keras runs n steps per call, so a step schedule
    is applied every n steps (at t = 0, n, 2n, ...).

    Args:
        alpha: schedule for `Distiller.alpha` (values in [0, 1]), default None (fixed).
        temperature: schedule for `Distiller.temperature` (values > 0), default None.
        term_weights: dict of term name -> schedule for `Distiller.term_weights`
            (values >= 0), default None.
        unit: "epoch" (default) or "step".

    A schedule is a callable of t returning a number: `LinearWarmup`, `LinearDecay`,
    a `keras.optimizers.schedules.LearningRateSchedule`, or a plain function.
    """

    def __init__(
        self,
        alpha: Optional[Callable] = None,
        temperature: Optional[Callable] = None,
        term_weights: Optional[Dict[str, Callable]] = None,
        unit: str = "epoch",
    ) -> None:
        super().__init__()
        self.unit = _validation.check_choice(unit, "unit", _UNITS)
        if term_weights is not None and not isinstance(term_weights, dict):
            raise ValueError(
                f"`term_weights` must be a dict of term name -> schedule, got {term_weights!r}."
            )
        schedules = {"alpha": alpha, "temperature": temperature}
        for name, schedule in {**schedules, **(term_weights or {})}.items():
            if schedule is not None and not callable(schedule):
                raise ValueError(
                    f"The schedule for {name!r} must be callable (t -> value), e.g. "
                    f"LinearWarmup(1.0, 20), got {schedule!r}."
                )
        if alpha is None and temperature is None and not term_weights:
            raise ValueError("DistillationSchedule needs at least one schedule; got none.")
        self.schedules = {name: s for name, s in schedules.items() if s is not None}
        self.term_weight_schedules = dict(term_weights or {})

    def on_train_begin(self, logs: Optional[dict[str, Any]] = None) -> None:
        distiller = self.model
        for attribute in ("temperature", "alpha", "term_weights"):
            if not hasattr(type(distiller), attribute):
                raise ValueError(
                    f"DistillationSchedule schedules a keras_kd.Distiller; the model "
                    f"{distiller.name!r} has no {attribute!r}."
                )
        unknown = set(self.term_weight_schedules) - set(distiller.term_weights)
        if unknown:
            raise ValueError(
                f"`term_weights` schedules terms {sorted(unknown)}, but the Distiller's "
                f"terms are {sorted(distiller.term_weights)}."
            )

    def on_epoch_begin(self, epoch: int, logs: Optional[dict[str, Any]] = None) -> None:
        if self.unit == "epoch":
            self._apply(epoch)

    def on_train_batch_begin(self, batch: int, logs: Optional[dict[str, Any]] = None) -> None:
        if self.unit == "step":
            # The optimizer's own count, not a count of calls: with
            # `compile(steps_per_execution=n)` Keras calls this hook once per n steps.
            self._apply(int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)))

    def _apply(self, t):
        distiller = self.model
        for name, schedule in self.schedules.items():
            value = _as_float(schedule(t), name)
            if value != getattr(distiller, name):
                setattr(distiller, name, value)
        if self.term_weight_schedules:
            weights = {
                name: _as_float(schedule(t), name)
                for name, schedule in self.term_weight_schedules.items()
            }
            if any(distiller.term_weights[name] != value for name, value in weights.items()):
                distiller.term_weights = weights


def _as_float(value, name):
    value = float(keras.ops.convert_to_numpy(value))
    if not math.isfinite(value):
        raise ValueError(f"The schedule for {name!r} gave {value!r}, not a finite number.")
    return value


def _finite(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"`{name}` must be a finite number, got {value!r}.")
    return float(value)
