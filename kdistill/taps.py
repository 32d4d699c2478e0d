"""Taps: the intermediate outputs of a model that distillation objectives read.

A tap set runs a model once and returns a dict `{tap_name: tensor}`. The `"logits"` tap is the
model's own output; intermediate taps (embeddings, hidden states, attention probabilities) are
exposed by functional sub-models over the same layers and weights (see `build_taps`).
"""

import keras

LOGITS = "logits"


class Taps:
    """Runs a model once per step and returns the taps the objectives asked for.

    Args:
        model: keras.Model. The teacher or the student.
        names: iterable of str. Tap names; `"logits"` is the model's output.

    Example:
    >>> import keras
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> taps = Taps(model, ["logits"])
    >>> taps(keras.ops.ones((2, 4)))["logits"].shape
    TensorShape([2, 3])
    """

    def __init__(self, model, names=(LOGITS,)):
        names = tuple(dict.fromkeys(names))
        unknown = [n for n in names if n != LOGITS]
        if unknown:
            raise ValueError(
                f"Unknown tap name(s) {unknown} for model {model.name!r}: this model only exposes "
                f"'{LOGITS}'. Intermediate taps need `kdistill.taps.build_taps` support for the model."
            )
        self.model = model
        self.names = names

    def __call__(self, inputs, training=False):
        return {LOGITS: self.model(inputs, training=training)}

    def output_shapes(self):
        """Static shapes `{tap: shape}` where the model is functional, else `{tap: None}`."""
        outputs = getattr(self.model, "outputs", None)
        if outputs and len(outputs) == 1:
            return {LOGITS: tuple(outputs[0].shape)}
        return {LOGITS: None}


def build_taps(model, names=(LOGITS,)):
    """Returns a `Taps` callable for `model` exposing `names`.

    Args:
        model: keras.Model.
        names: iterable of tap names.

    Returns:
        A callable `taps(inputs, training=False) -> dict`.

    Example:
    >>> import keras
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> sorted(build_taps(model)(keras.ops.ones((1, 4))))
    ['logits']
    """
    return Taps(model, names)
