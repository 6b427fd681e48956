"""The cached-target protocol: how `y` carries precomputed teacher logits.

`keras_kd.cache_teacher_logits` writes it and the `Distiller` reads it, so it lives
in neither. `y` is either plain labels, or a dict

    {"labels": labels, "teacher_logits": (batch, K)}             # one teacher
    {"labels": labels, "teacher_member_logits": (batch, M, K)}   # an ensemble of M

    {"labels": labels, "teacher_topk_logits": (batch, ..., k),
     "teacher_topk_indices": (batch, ..., k),
     "teacher_topk_tail_log_mass": (batch, ..., 4)}               # a top-k cache

where "labels" may be absent for soft-targets-only training (alpha = 1).
"""

from __future__ import annotations

import difflib
from typing import Any
from typing import Final
from typing import Optional
from typing import Sequence

from keras import ops

from keras_kd import losses
from keras_kd._types import TensorLike

LABELS: Final = "labels"
TEACHER_LOGITS: Final = "teacher_logits"
# An ensemble's cache keeps each member's logits, (batch, M, K), folded at the
# Distiller's own temperature by `split_targets`.
TEACHER_MEMBER_LOGITS: Final = "teacher_member_logits"
# A top-k cache keeps, per position, the teacher's k largest logits, their class
# indices and the other classes' tempered log-mass `log sum_tail exp(z_i / T)` at each
# of TEACHER_TOPK_TAIL_TEMPERATURES (`keras_kd._sequence`); without the tail, the
# target is the renormalized top k.
TEACHER_TOPK_LOGITS: Final = "teacher_topk_logits"
TEACHER_TOPK_INDICES: Final = "teacher_topk_indices"
TEACHER_TOPK_TAIL_LOG_MASS: Final = "teacher_topk_tail_log_mass"
TEACHER_TOPK_TAIL_TEMPERATURES: Final = (1.0, 2.0, 4.0, 8.0)


# Every key a cached-target dict may carry.
CACHED_TARGET_KEYS: Final = (
    LABELS,
    TEACHER_LOGITS,
    TEACHER_MEMBER_LOGITS,
    TEACHER_TOPK_LOGITS,
    TEACHER_TOPK_INDICES,
    TEACHER_TOPK_TAIL_LOG_MASS,
)


def is_per_output(y: Any, output_names: Sequence[str] = ()) -> bool:
    """True when `y` is a multi-output model's labels: a dict keyed by its output names."""
    return isinstance(y, dict) and bool(output_names) and bool(y) and set(y) <= set(output_names)


def check_target_keys(y: Any, output_names: Sequence[str] = ()) -> None:
    """Raises when a dict `y` has a key outside the protocol (a misspelt one, say).

    Without this, `{"labels": y, "teacher_logit": t}` would be read as plain labels
    and the cached logits silently ignored (the teacher would run, or fail).
    """
    if not isinstance(y, dict) or is_per_output(y, output_names):
        return
    unknown = [key for key in y if key not in CACHED_TARGET_KEYS]
    if unknown or not y:
        key = unknown[0] if unknown else None
        close = difflib.get_close_matches(str(key), CACHED_TARGET_KEYS, n=1) if unknown else []
        suggestion = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"`y` is a dict with keys {sorted(map(str, y))}; cached targets use only "
            f"{list(CACHED_TARGET_KEYS)} (got {key!r}).{suggestion} Pass plain labels, or "
            "the dict keras_kd.cache_teacher_logits makes."
        )
    if TEACHER_LOGITS in y and TEACHER_MEMBER_LOGITS in y:
        raise ValueError(
            f"`y` has both {TEACHER_LOGITS!r} and {TEACHER_MEMBER_LOGITS!r}: pass one "
            "teacher's logits or an ensemble's member logits, not both."
        )


def split_targets(
    y: TensorLike,
    temperature: Optional[float] = None,
    output: str = "softmax",
    output_names: tuple = (),
) -> tuple[Optional[TensorLike], Optional[TensorLike]]:
    """Splits `y` into (labels, teacher logits or None).

    `y` is either plain labels, or a dict as made by `keras_kd.cache_teacher_logits`
    (labels may then be absent for soft-only training): `{"labels": ...,
    "teacher_logits": (batch, K)}` from one teacher, or `{"labels": ...,
    "teacher_member_logits": (batch, M, K)}` from an ensemble of M. An ensemble's fold
    depends on the temperature, so it is folded here, at `temperature`, by the same
    `losses.ensemble_logits` as a live ensemble (with `output`, "softmax" or
    "sigmoid"): one cache serves every temperature. A dict with any other key raises,
    unless its keys are among `output_names`: a multi-output model's labels.
    """
    if is_per_output(y, output_names):
        return y, None
    check_target_keys(y)
    if isinstance(y, dict) and TEACHER_LOGITS in y:
        return y.get(LABELS), ops.cast(y[TEACHER_LOGITS], "float32")
    if isinstance(y, dict) and TEACHER_MEMBER_LOGITS in y:
        if temperature is None:
            raise ValueError(
                f"`y` carries an ensemble's cached {TEACHER_MEMBER_LOGITS!r}, which are "
                "folded at a temperature; got temperature=None."
            )
        members = ops.unstack(ops.cast(y[TEACHER_MEMBER_LOGITS], "float32"), axis=1)
        return y.get(LABELS), losses.ensemble_logits(members, temperature, output)
    if isinstance(y, dict) and TEACHER_TOPK_LOGITS in y:
        # Densified against the student's logits, whose K the cache does not carry.
        topk = {"values": y[TEACHER_TOPK_LOGITS], "indices": y[TEACHER_TOPK_INDICES]}
        if TEACHER_TOPK_TAIL_LOG_MASS in y:
            topk["tail_log_mass"] = y[TEACHER_TOPK_TAIL_LOG_MASS]
        return y.get(LABELS), topk
    if isinstance(y, dict):  # {"labels": ...} alone: the teacher runs live
        return y[LABELS], None
    return y, None


def example_weights(sample_weight: Optional[TensorLike]) -> Optional[TensorLike]:
    """One weight per example, also when Keras spread it over a dict `y`.

    Keras' array adapter copies a flat `sample_weight` onto every entry of a nested
    `y`, so with cached teacher logits it arrives as `{"labels": w, "teacher_logits":
    w}`; both entries are the same per-example weights.
    """
    if isinstance(sample_weight, dict):
        for key in (LABELS, TEACHER_LOGITS, TEACHER_MEMBER_LOGITS, TEACHER_TOPK_LOGITS):
            if sample_weight.get(key) is not None:
                return sample_weight[key]
        return None
    return sample_weight
