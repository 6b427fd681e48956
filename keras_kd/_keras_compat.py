"""The few private Keras attributes keras_kd relies on, each with the behaviour used.

Everything else goes through Keras' public API. Keep this module small: each item
says which Keras behaviour it depends on, so a Keras upgrade that changes it breaks
here, visibly, and nowhere else.
"""


def layer_call_count(layer):
    """How many times `layer` was called on symbolic inputs (its graph nodes).

    Keras 3 records one `Node` per symbolic call in `Layer._inbound_nodes`; a layer
    applied twice in a Functional model (weight sharing, a block reused in a loop)
    has two, and `layer.output` silently returns the first call's tensor. There is no
    public count.
    """
    return len(getattr(layer, "_inbound_nodes", None) or ())
