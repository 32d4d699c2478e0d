"""Taps: the intermediate outputs of a model that distillation objectives read.

A tap model runs a model **once** and returns a dict of its intermediates:

- `logits`: the model's own output (class logits, or masked-LM token logits).
- `embeddings`: the embedding output that enters the first encoder layer, `[batch, seq, hidden]`.
- `hidden_states`: a list with each encoder layer's output, `[batch, seq, hidden]`.
- `attention_scores`: a list with each layer's attention probabilities, `[batch, heads, q, k]`.
- `attention_values`: a list with each layer's value vectors, `[batch, seq, heads, head_dim]`
  (MiniLM's value relation).

For keras-hub models (a `Backbone` with `transformer_layers`, or a `Task` such as
`BertTextClassifier` / `BertMaskedLM` built on one) the tap model is a functional model over the
**same layers and weights**: it replays the model's own graph and re-calls each encoder layer with
`return_attention_scores=True`, so the forward pass is the model's, not a copy. For any other
functional model, `layer_names` names the layers whose outputs are the embeddings and hidden states.
"""

import keras

LOGITS = "logits"
EMBEDDINGS = "embeddings"
HIDDEN_STATES = "hidden_states"
ATTENTION_SCORES = "attention_scores"
ATTENTION_VALUES = "attention_values"
TAP_NAMES = (LOGITS, EMBEDDINGS, HIDDEN_STATES, ATTENTION_SCORES, ATTENTION_VALUES)


def find_backbone(model):
    """The keras-hub encoder backbone of `model` (itself, or `model.backbone`), or None.

    Example:
    >>> from kdistill import testing
    >>> find_backbone(testing.tiny_bert_classifier()).num_layers
    2
    """
    for candidate in (model, getattr(model, "backbone", None)):
        if candidate is not None and getattr(candidate, "transformer_layers", None):
            return candidate
    return None


def _input_like(tensor, name):
    return keras.Input(batch_shape=tensor.shape, dtype=tensor.dtype, name=name)


def _input_names(model):
    struct = getattr(model, "_inputs_struct", None)
    return list(struct) if isinstance(struct, dict) else None


def _fresh_inputs(model):
    struct = model._inputs_struct
    if isinstance(struct, dict):
        return {name: _input_like(t, name) for name, t in struct.items()}
    flat = keras.tree.flatten(struct)
    fresh = [_input_like(t, getattr(t, "name", None)) for t in flat]
    return keras.tree.pack_sequence_as(struct, fresh)


class _ValueTap(keras.layers.Layer):
    """Value vectors `[batch, seq, heads, head_dim]` of a keras-hub `TransformerEncoder`.

    Re-applies the layer's own value projection (same weights) to the layer's input; used by
    MiniLM's value-relation loss.
    """

    def __init__(self, encoder, **kwargs):
        super().__init__(name=f"{encoder.name}_value_tap", dtype=encoder.dtype_policy, **kwargs)
        self.encoder = encoder

    def call(self, x):
        if getattr(self.encoder, "normalize_first", False):
            x = self.encoder._self_attention_layer_norm(x)
        return self.encoder._self_attention_layer._value_dense(x)

    def compute_output_spec(self, x):
        attention = self.encoder._self_attention_layer
        shape = (x.shape[0], x.shape[1], attention.num_heads, attention.key_dim)
        return keras.KerasTensor(shape, dtype=self.compute_dtype)


class _AttentionTap(keras.layers.Layer):
    """Calls an encoder layer with `return_attention_scores=True` (no weights of its own).

    Needed because a symbolic call of a keras-hub `TransformerEncoder` declares one output, while
    with attention scores it returns two; this layer declares both.
    """

    def __init__(self, encoder, **kwargs):
        super().__init__(name=f"{encoder.name}_attention_tap", dtype=encoder.dtype_policy, **kwargs)
        self.encoder = encoder
        self.num_heads = encoder.num_heads

    def call(self, x, *args, training=None, **kwargs):
        return self.encoder(x, *args, return_attention_scores=True, training=training, **kwargs)

    def compute_output_spec(self, x, *args, **kwargs):
        batch, seq = x.shape[0], x.shape[1]
        scores = keras.KerasTensor((batch, self.num_heads, seq, seq), dtype=self.compute_dtype)
        return keras.KerasTensor(x.shape, dtype=x.dtype), scores


class _EncoderRecorder:
    """Replays a backbone's graph, recording each encoder layer's input, output and attention."""

    def __init__(self, backbone, names):
        self.backbone = backbone
        self.layers = {id(layer): i for i, layer in enumerate(backbone.transformer_layers)}
        self.want_attention = ATTENTION_SCORES in names
        self.want_values = ATTENTION_VALUES in names
        n = len(backbone.transformer_layers)
        self.taps = [_AttentionTap(layer) for layer in backbone.transformer_layers]
        self.value_taps = [_ValueTap(layer) for layer in backbone.transformer_layers]
        self.embeddings = None
        self.hidden = [None] * n
        self.attention = [None] * n
        self.values = [None] * n

    def _layer_fn(self, op):
        index = self.layers.get(id(op))
        if index is None:
            return op

        def call(x, *args, **kwargs):
            if index == 0:
                self.embeddings = x
            if self.want_values:
                self.values[index] = self.value_taps[index](x)
            if self.want_attention:
                out, scores = self.taps[index](x, *args, **kwargs)
                self.attention[index] = scores
            else:
                out = op(x, *args, **kwargs)
            self.hidden[index] = out
            return out

        return call

    def run_backbone(self, inputs):
        return self.backbone._run_through_graph(inputs, operation_fn=self._layer_fn)

    def task_fn(self, op):
        if op is self.backbone:
            return lambda inputs, *args, **kwargs: self.run_backbone(inputs)
        return op


def _keras_hub_tap_model(model, backbone, names):
    recorder = _EncoderRecorder(backbone, names)
    inputs = _fresh_inputs(model)
    if model is backbone:
        out = recorder.run_backbone(inputs)
        logits = out
    else:
        logits = model._run_through_graph(inputs, operation_fn=recorder.task_fn)
    outputs = {}
    if LOGITS in names:
        outputs[LOGITS] = logits
    if EMBEDDINGS in names:
        outputs[EMBEDDINGS] = recorder.embeddings
    if HIDDEN_STATES in names:
        outputs[HIDDEN_STATES] = list(recorder.hidden)
    if ATTENTION_SCORES in names:
        outputs[ATTENTION_SCORES] = list(recorder.attention)
    if ATTENTION_VALUES in names:
        outputs[ATTENTION_VALUES] = list(recorder.values)
    missing = [k for k, v in outputs.items() if v is None or (isinstance(v, list) and None in v)]
    if missing:
        raise ValueError(
            f"Could not tap {missing} of {model.name!r}: its encoder layers are not all reached "
            "by the model's graph."
        )
    return keras.Model(inputs, outputs, name=f"{model.name}_taps")


def _functional_tap_model(model, names, layer_names):
    if getattr(model, "_inputs_struct", None) is None or not hasattr(model, "_run_through_graph"):
        raise ValueError(
            f"Intermediate taps {sorted(set(names) - {LOGITS})} need a functional model (or a "
            f"keras-hub encoder); {model.name!r} is a subclassed model. Distil its logits only, or "
            "rebuild it with the functional API."
        )
    layer_names = dict(layer_names or {})
    outputs = {}
    if LOGITS in names:
        outputs[LOGITS] = model.output
    for tap in (EMBEDDINGS, HIDDEN_STATES):
        if tap not in names:
            continue
        if tap not in layer_names:
            raise ValueError(
                f"Tap {tap!r} of the functional model {model.name!r} needs "
                f"layer_names={{'{tap}': ...}} naming the layer(s) whose output it is."
            )
        wanted = layer_names[tap]
        if tap == EMBEDDINGS:
            outputs[tap] = model.get_layer(wanted).output
        else:
            outputs[tap] = [model.get_layer(n).output for n in wanted]
    for tap in (ATTENTION_SCORES, ATTENTION_VALUES):
        if tap in names:
            raise ValueError(
                f"Tap {tap!r} needs keras-hub encoder layers (TransformerEncoder); "
                f"{model.name!r} has none."
            )
    return keras.Model(model.inputs, outputs, name=f"{model.name}_taps")


class Taps:
    """Runs a model once and returns the taps the objectives asked for.

    Args:
        model: keras.Model. A keras-hub encoder task or backbone, or any functional model.
        names: iterable of str. Tap names from `TAP_NAMES`.
        layer_names: dict. For non-keras-hub functional models: `{"embeddings": "layer",
            "hidden_states": ["layer_1", "layer_2"]}`.

    Example:
    >>> from kdistill import testing
    >>> model = testing.tiny_bert_classifier(num_layers=2, hidden_dim=8, num_heads=2)
    >>> taps = Taps(model, ["logits", "hidden_states", "attention_scores"])
    >>> x, _ = testing.token_batch(batch_size=2, sequence_length=8)
    >>> out = taps(x)
    >>> len(out["hidden_states"]), tuple(out["attention_scores"][0].shape)
    (2, (2, 2, 8, 8))
    """

    def __init__(self, model, names=(LOGITS,), layer_names=None):
        names = tuple(dict.fromkeys(names))
        unknown = [n for n in names if n not in TAP_NAMES]
        if unknown:
            raise ValueError(f"Unknown tap name(s) {unknown}; valid taps are {list(TAP_NAMES)}.")
        self.model = model
        self.names = names
        self.backbone = find_backbone(model)
        if set(names) <= {LOGITS}:
            self.tap_model = None
        elif self.backbone is not None:
            self.tap_model = _keras_hub_tap_model(model, self.backbone, names)
        else:
            self.tap_model = _functional_tap_model(model, names, layer_names)
        if self.tap_model is not None:
            self._outputs_struct = self.tap_model._outputs_struct

    @property
    def num_layers(self):
        """Number of encoder layers (hidden states), or None if unknown."""
        if self.backbone is not None:
            return len(self.backbone.transformer_layers)
        hidden = self.output_shapes().get(HIDDEN_STATES)
        if hidden is not None:
            return len(hidden)
        return None

    @property
    def num_heads(self):
        """Attention heads per layer (keras-hub encoders), or None."""
        return getattr(self.backbone, "num_heads", None)

    def __call__(self, inputs, training=False):
        model = self.model if self.tap_model is None else self.tap_model
        if isinstance(inputs, dict):
            # Keras 3.15 matches a dict with extra keys to a functional model's inputs by
            # position (with a warning only): a DistilBERT fed a BERT batch would read
            # `segment_ids` as its token ids. Keep only the keys the model declares.
            names = _input_names(model)
            if names and set(names) < set(inputs):
                inputs = {name: inputs[name] for name in names}
        if self.tap_model is None:
            return {LOGITS: model(inputs, training=training)}
        return model(inputs, training=training)

    def output_shapes(self):
        """Static shapes `{tap: shape or [shapes]}`; `None` where not statically known."""
        if self.tap_model is None:
            outputs = getattr(self.model, "outputs", None)
            shape = tuple(outputs[0].shape) if outputs and len(outputs) == 1 else None
            return {LOGITS: shape}
        return keras.tree.map_structure(lambda t: tuple(t.shape), self._outputs_struct)


def build_taps(model, names=(LOGITS,), layer_names=None):
    """Returns a `Taps` callable for `model` exposing `names` (see `Taps`).

    Args:
        model: keras.Model.
        names: iterable of tap names.
        layer_names: dict, for non-keras-hub functional models.

    Returns:
        A `Taps` object: `taps(inputs, training=False) -> dict`.

    Example:
    >>> import keras
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> sorted(build_taps(model)(keras.ops.ones((1, 4))))
    ['logits']
    """
    return Taps(model, names, layer_names=layer_names)
