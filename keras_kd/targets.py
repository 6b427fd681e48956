"""The cached-target protocol: how `y` carries precomputed teacher logits.

`keras_kd.cache_teacher_logits` writes it and the `Distiller` reads it, so it lives
in neither. `y` is either plain labels, or a dict

    {"labels": labels, "teacher_logits": (batch, K)}             # one teacher
    {"labels": labels, "teacher_member_logits": (batch, M, K)}   # an ensemble of M

    {"labels": labels, "teacher_topk_logits": (batch, ..., k),
     "teacher_topk_indices": (batch, ..., k),
     "teacher_topk_tail_logit": (batch, ...)}                     # a top-k cache

where "labels" may be absent for soft-targets-only training (alpha = 1).
"""

from keras import ops

from keras_kd import losses

LABELS = "labels"
TEACHER_LOGITS = "teacher_logits"
# An ensemble's cache keeps each member's logits, (batch, M, K), folded at the
# Distiller's own temperature by `split_targets`.
TEACHER_MEMBER_LOGITS = "teacher_member_logits"
# A top-k cache keeps, per position, the teacher's k largest logits, their class
# indices and one logit for the other classes (`keras_kd._sequence`); without the
# tail logit, the target is the renormalized top k.
TEACHER_TOPK_LOGITS = "teacher_topk_logits"
TEACHER_TOPK_INDICES = "teacher_topk_indices"
TEACHER_TOPK_TAIL_LOGIT = "teacher_topk_tail_logit"


def split_targets(y, temperature=None):
    """Splits `y` into (labels, teacher logits or None).

    `y` is either plain labels, or a dict as made by `keras_kd.cache_teacher_logits`
    (labels may then be absent for soft-only training): `{"labels": ...,
    "teacher_logits": (batch, K)}` from one teacher, or `{"labels": ...,
    "teacher_member_logits": (batch, M, K)}` from an ensemble of M. An ensemble's fold
    depends on the temperature, so it is folded here, at `temperature`, by the same
    `losses.ensemble_logits` as a live ensemble: one cache serves every temperature.
    """
    if isinstance(y, dict) and TEACHER_LOGITS in y:
        return y.get(LABELS), ops.cast(y[TEACHER_LOGITS], "float32")
    if isinstance(y, dict) and TEACHER_MEMBER_LOGITS in y:
        if temperature is None:
            raise ValueError(
                f"`y` carries an ensemble's cached {TEACHER_MEMBER_LOGITS!r}, which are "
                "folded at a temperature; got temperature=None."
            )
        members = ops.unstack(ops.cast(y[TEACHER_MEMBER_LOGITS], "float32"), axis=1)
        return y.get(LABELS), losses.ensemble_logits(members, temperature)
    if isinstance(y, dict) and TEACHER_TOPK_LOGITS in y:
        # Densified against the student's logits, whose K the cache does not carry.
        topk = {"values": y[TEACHER_TOPK_LOGITS], "indices": y[TEACHER_TOPK_INDICES]}
        if TEACHER_TOPK_TAIL_LOGIT in y:
            topk["tail_logit"] = y[TEACHER_TOPK_TAIL_LOGIT]
        return y.get(LABELS), topk
    return y, None


def example_weights(sample_weight):
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
