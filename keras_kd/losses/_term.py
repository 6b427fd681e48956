"""`DistillationTerm`: the contract a `Distiller` term implements."""

from __future__ import annotations

from typing import Any
from typing import Optional
from typing import Union

from keras_kd import _validation
from keras_kd.losses._core import CheckedLoss
from keras_kd.losses._core import check_teacher_logits
# A module reference, not names: `keras_kd.targets` imports the losses package.
from keras_kd import targets
from keras_kd._types import TensorLike


class DistillationTerm(CheckedLoss):
    """Base class of a temperature-based distillation term (a `keras.losses.Loss`).

    The contract: a subclass implements

        compute(teacher_logits, student_logits, temperature, labels=None) -> (...,)

    the per-example loss, in float32, for the temperature given (a Python float, or a
    scalar tensor when the `Distiller` trains with a scheduled temperature: use
    `keras.ops` on it). It sets `needs_labels = True` when `compute` reads `labels`
    (class indices or one-hot), and passes its hyperparameters to `get_config`.
    Everything else is Keras': `sample_weight`, the reduction, serialization.

    Standalone it is an ordinary loss whose `y_true` is the teacher's logits, or the
    cached-target dict `{"labels": ..., "teacher_logits": ...}` when it needs labels:
    `student.compile(loss=term)`. In a `keras_kd.Distiller` it receives the labels and
    the teacher's logits (live or cached) and follows the Distiller's `temperature`
    property, so a schedule that changes the temperature changes every term's.

    A `keras.losses.Loss` that is not a `DistillationTerm` is a term too: the
    Distiller calls it as `loss(teacher_logits, student_logits, sample_weight)` (or
    with the dict above as `y_true` if it has `needs_labels = True`); it has no
    temperature of its own.

    Args:
        temperature: T, float > 0 (the subclass chooses the default).
        reduction, name, dtype: as for any `keras.losses.Loss`.
    """

    needs_labels = False

    def __init__(
        self,
        temperature: float,
        reduction: str = "sum_over_batch_size",
        name: Optional[str] = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.temperature = _validation.check_temperature(temperature)
        # Set only for the duration of `distill`: the Distiller's (scheduled) temperature.
        self._temperature_in_use = None
        self._in_distiller = False

    def compute(
        self,
        teacher_logits: TensorLike,
        student_logits: TensorLike,
        temperature: TensorLike,
        labels: Optional[TensorLike] = None,
    ) -> TensorLike:
        raise NotImplementedError(
            f"{type(self).__name__} must implement compute(teacher_logits, "
            "student_logits, temperature, labels=None), the per-example loss."
        )

    def call(self, y_true: TensorLike, y_pred: TensorLike) -> TensorLike:
        labels, teacher_logits = split_term_targets(y_true, self)
        if not self._in_distiller:
            # Standalone (`student.fit(x, teacher.predict(x))`): the targets may be a
            # softmax teacher's probabilities. A Distiller checks its first batch once
            # instead of paying this pass every step.
            teacher_logits = check_teacher_logits(
                teacher_logits, getattr(self, "output", "softmax"), name="y_true"
            )
        temperature = self._temperature_in_use
        if temperature is None:
            temperature = self.temperature
        return self.compute(teacher_logits, y_pred, temperature, labels)

    def distill(
        self,
        labels: Optional[TensorLike],
        teacher_logits: TensorLike,
        student_logits: TensorLike,
        sample_weight: Optional[TensorLike] = None,
        temperature: Optional[TensorLike] = None,
    ) -> TensorLike:
        """The reduced loss at `temperature` (default: the term's own); what the Distiller calls."""
        y_true = term_targets(self, labels, teacher_logits)
        self._temperature_in_use = temperature
        self._in_distiller = True
        try:
            return self(y_true, student_logits, sample_weight=sample_weight)
        finally:
            self._temperature_in_use = None
            self._in_distiller = False

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "temperature": self.temperature}


def check_weight(value: float, name: str) -> float:
    """Returns `value` as a float after checking it is finite and >= 0 (a term's weight)."""
    return _validation.check_in_range(value, name, 0.0, float("inf"), high_inclusive=False)


def term_targets(
    term: DistillationTerm,
    labels: Optional[TensorLike],
    teacher_logits: TensorLike,
) -> Union[TensorLike, dict[str, TensorLike]]:
    """What a term receives as `y_true`: the teacher's logits, with the labels if it needs them."""
    if not getattr(term, "needs_labels", False):
        return teacher_logits
    if labels is None:
        raise ValueError(
            f"The distillation term {term.name!r} needs labels (needs_labels=True), but "
            "`y` has none. Pass labels as `y` (or under 'labels' with cached teacher logits)."
        )
    return {targets.LABELS: labels, targets.TEACHER_LOGITS: teacher_logits}


def split_term_targets(
    y_true: TensorLike,
    term: DistillationTerm,
) -> tuple[Optional[TensorLike], TensorLike]:
    """(labels or None, teacher logits) from a term's `y_true`."""
    if isinstance(y_true, dict):
        missing = [key for key in (targets.LABELS, targets.TEACHER_LOGITS) if key not in y_true]
        if missing or set(y_true) - {targets.LABELS, targets.TEACHER_LOGITS}:
            raise ValueError(
                f"{type(term).__name__}: a dict `y_true` must have exactly the keys "
                f"{[targets.LABELS, targets.TEACHER_LOGITS]}, got {sorted(y_true)}."
            )
        return y_true[targets.LABELS], y_true[targets.TEACHER_LOGITS]
    if getattr(term, "needs_labels", False):
        raise ValueError(
            f"{type(term).__name__} needs labels: pass `y_true` as "
            f"{{{targets.LABELS!r}: labels, {targets.TEACHER_LOGITS!r}: teacher_logits}}, got a "
            f"{type(y_true).__name__}."
        )
    return None, y_true
