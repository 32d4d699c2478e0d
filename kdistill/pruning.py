"""Structured pruning of a teacher into a student: fewer layers, channels, heads and FFN units.

`prune_teacher` builds a student that *is* a slice of the fine-tuned teacher, in the manner of
Minitron (Muralidharan et al. 2024) and CoFi: it keeps

* a subset of the teacher's **layers** (as `kdistill.students.from_teacher`),
* the `hidden_dim` most important **channels** of the residual stream (the same channels in
  every layer, the embedding tables, the pooler and the classifier),
* in each kept layer the most important **attention heads** (`hidden_dim / head_size` of them,
  so heads keep the teacher's size) and **FFN units** (`intermediate_dim`),
* optionally only the **word pieces** of a corpus (`vocabulary`, as `kdistill.vocabulary`),

and copies the kept slices of the teacher's weights. Importance is measured on calibration
data by running the teacher once (`importance_scores`): a channel's importance is its mean
absolute value after the layer norms (embeddings, and after attention and after the FFN in each
layer); a head's is the mean norm of its contribution to the attention output; an FFN unit's is
its mean absolute activation. Padding tokens are left out of every mean.

The slice keeps most of what the teacher learnt during pre-training and fine-tuning, so task
distillation (`kdistill.Distiller` with `LogitsKD`) starts from a good model instead of random
weights. Layer norms over fewer channels and dropped layers change the activations, so the
pruned student is not accurate before distillation; distillation recovers it.

References:
    - Muralidharan et al., "Compact Language Models via Pruning and Knowledge Distillation"
      (Minitron), [arXiv:2407.14679](https://arxiv.org/abs/2407.14679).
    - Xia et al., "Structured Pruning Learns Compact and Accurate Models" (CoFi),
      [arXiv:2204.00408](https://arxiv.org/abs/2204.00408).
    - Sanh et al., DistilBERT (initialisation from teacher layers),
      [arXiv:1910.01108](https://arxiv.org/abs/1910.01108).
"""

import dataclasses

import keras
import numpy as np

from kdistill.students import select_layers

_SUPPORTED = "keras_hub.models.BertTextClassifier (post-layer-norm BERT encoders)"


@dataclasses.dataclass
class Importance:
    """Importance scores of a teacher's prunable units (from `importance_scores`).

    Attributes:
        channels: float array `[hidden_dim]`.
        heads: float array `[num_layers, num_heads]`.
        units: float array `[num_layers, intermediate_dim]`.
        num_tokens: int. Non-padding tokens the scores average over.
        max_error: float. Largest absolute difference between the teacher's layer outputs and
            their recomputation from the weights (a check that the scores describe this model).

    Example:
    >>> from kdistill import testing
    >>> teacher = testing.tiny_bert_classifier(num_layers=1, hidden_dim=8, num_heads=2,
    ...                                        intermediate_dim=16)
    >>> scores = importance_scores(teacher, testing.token_dataset(num_examples=4, batch_size=4))
    >>> scores.heads.shape, scores.num_tokens > 0, scores.max_error < 1e-3
    ((1, 2), True, True)
    >>> student = prune_teacher(teacher, None, hidden_dim=4, intermediate_dim=8, num_layers=1,
    ...                         importance=scores)  # no second calibration pass
    >>> student.backbone.hidden_dim
    4
    """

    channels: np.ndarray
    heads: np.ndarray
    units: np.ndarray
    num_tokens: int
    max_error: float


def _teacher_backbone(teacher):
    import keras_hub

    if not isinstance(teacher, keras_hub.models.BertTextClassifier):
        raise ValueError(f"prune_teacher supports {_SUPPORTED}; got {type(teacher).__name__}. "
                         "For other models use kdistill.students.from_teacher (layers only) or "
                         "student_for (a fresh student).")
    backbone = teacher.backbone
    for layer in backbone.transformer_layers:
        if getattr(layer, "normalize_first", False):
            raise ValueError(f"prune_teacher supports {_SUPPORTED}; layer {layer.name!r} "
                             "normalises first (pre-layer-norm).")
    return backbone


def _np(x):
    return np.asarray(keras.ops.convert_to_numpy(x), dtype="float32")


def _layer_norm(x, layer):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + layer.epsilon) * _np(layer.gamma) + _np(layer.beta)


def _activation(layer):
    fn = layer.activation if callable(layer.activation) else keras.activations.get(
        layer.activation)
    return lambda x: _np(fn(keras.ops.convert_to_tensor(x.astype("float32"))))


def importance_scores(teacher, dataset, max_batches=None):
    """Runs the teacher over calibration data and scores its channels, heads and FFN units.

    Each encoder layer is recomputed from its weights (post-layer-norm BERT: `x1 = LN(x +
    attention(x))`, `out = LN(x1 + FFN(x1))`) from the teacher's own taps; the result must
    match the teacher's layer output, else a `ValueError` says the model is not a supported
    BERT layer.

    Args:
        teacher: `keras_hub.models.BertTextClassifier`.
        dataset: iterable of batches `inputs` or `(inputs, labels, ...)` with keras-hub inputs
            (`token_ids`, `segment_ids`, `padding_mask`), e.g. a few hundred training examples.
        max_batches: int or None. Stop after this many batches.

    Returns:
        An `Importance`.

    Example:
    >>> from kdistill import testing
    >>> teacher = testing.tiny_bert_classifier(hidden_dim=8, num_heads=2, intermediate_dim=16)
    >>> scores = importance_scores(teacher, testing.token_dataset(num_examples=8, batch_size=4))
    >>> scores.channels.shape, scores.heads.shape, scores.units.shape
    ((8,), (2, 2), (2, 16))
    """
    from kdistill.taps import (
        ATTENTION_SCORES,
        ATTENTION_VALUES,
        EMBEDDINGS,
        HIDDEN_STATES,
        build_taps,
    )

    backbone = _teacher_backbone(teacher)
    layers = backbone.transformer_layers
    num_layers, width = len(layers), backbone.hidden_dim
    taps = build_taps(teacher, (EMBEDDINGS, HIDDEN_STATES, ATTENTION_SCORES, ATTENTION_VALUES))
    channels = np.zeros(width)
    heads = np.zeros((num_layers, layers[0].num_heads))
    units = np.zeros((num_layers, layers[0].intermediate_dim))
    tokens, max_error = 0, 0.0
    for n, batch in enumerate(dataset):
        if max_batches is not None and n >= max_batches:
            break
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        if not isinstance(x, dict) or "padding_mask" not in x:
            raise ValueError("Calibration batches must be keras-hub input dicts with "
                             "`token_ids`, `segment_ids` and `padding_mask` (e.g. from "
                             "kdistill.data.tokenize_dataset), got "
                             f"{type(x).__name__}.")
        out = taps(x, training=False)
        mask = np.asarray(keras.ops.convert_to_numpy(x["padding_mask"])).astype(bool)
        tokens += int(mask.sum())
        # Only the real tokens, as [tokens, width] rows: padding is left out of every mean.
        hidden = _np(out[EMBEDDINGS])[mask]
        channels += np.abs(hidden).sum(0)
        for i, layer in enumerate(layers):
            attention = layer._self_attention_layer
            probs = _np(out[ATTENTION_SCORES][i])                        # [b, h, q, k]
            values = _np(out[ATTENTION_VALUES][i]).transpose(0, 2, 1, 3)  # [b, h, k, d]
            context = np.matmul(probs, values).transpose(0, 2, 1, 3)[mask]  # [n, h, d]
            wo = _np(attention._output_dense.kernel)                     # [h, d, width]
            attended = np.zeros_like(hidden) + _np(attention._output_dense.bias)
            for h in range(wo.shape[0]):
                contribution = context[:, h] @ wo[h]                     # [n, width]
                heads[i, h] += np.linalg.norm(contribution, axis=-1).sum()
                attended += contribution
            x1 = _layer_norm(hidden + attended, layer._self_attention_layer_norm)
            inner = _activation(layer)(
                x1 @ _np(layer._feedforward_intermediate_dense.kernel)
                + _np(layer._feedforward_intermediate_dense.bias))
            units[i] += np.abs(inner).sum(0)
            x2 = _layer_norm(x1 + inner @ _np(layer._feedforward_output_dense.kernel)
                             + _np(layer._feedforward_output_dense.bias),
                             layer._feedforward_layer_norm)
            hidden = _np(out[HIDDEN_STATES][i])[mask]
            max_error = max(max_error, float(np.abs(x2 - hidden).max(initial=0.0)))
            channels += np.abs(x1).sum(0) + np.abs(hidden).sum(0)
    if tokens == 0:
        raise ValueError("The calibration data is empty (or all padding): importance_scores "
                         "needs a few batches of real examples.")
    scale = 1e-3 * max(1.0, float(np.abs(hidden).max(initial=1.0)))
    if max_error > scale:
        raise ValueError(f"Recomputing the teacher's layers from their weights differs from its "
                         f"outputs by {max_error:.3g}: {_SUPPORTED} only.")
    return Importance(channels / (tokens * (2 * num_layers + 1)), heads / tokens,
                      units / tokens, tokens, max_error)


def _top(scores, k):
    """Indices of the k largest scores, in increasing index order (stable for ties)."""
    order = np.argsort(-scores, kind="stable")[:k]
    return np.sort(order)


def _kept_heads(backbone, hidden_dim):
    """Heads a `hidden_dim`-wide slice keeps: whole heads of the teacher's size."""
    head_size = backbone.hidden_dim // backbone.num_heads
    if hidden_dim < head_size or hidden_dim % head_size:
        raise ValueError(
            f"`hidden_dim` ({hidden_dim}) must be a multiple of the teacher's head size "
            f"({head_size}): pruning keeps whole heads of that size, hidden_dim / {head_size} "
            f"of them per layer. Try {max(head_size, hidden_dim // head_size * head_size)}.")
    return hidden_dim // head_size


def prune_teacher(teacher, calibration_data, hidden_dim, intermediate_dim, num_layers=None,
                  layers=None, strategy="first", vocabulary=None, unknown_id=None, dropout=None,
                  max_sequence_length=None, max_batches=None, importance=None):
    """Builds a student that is a structured slice of a BERT classifier teacher (Minitron style).

    The student is a `keras_hub.models.BertTextClassifier` (or, with `vocabulary`, a
    `kdistill.vocabulary.VocabularyMappedClassifier` that reads the teacher's token ids) with
    `len(layers)` layers, `hidden_dim` channels, `hidden_dim / head_size` heads of the teacher's
    head size and `intermediate_dim` FFN units, every weight copied from the teacher's kept
    slices (see the module docstring). Train it with `kdistill.Distiller`.

    Args:
        teacher: `keras_hub.models.BertTextClassifier` (fine-tuned).
        calibration_data: batches of the teacher's inputs (see `importance_scores`).
        hidden_dim: int. Kept channels; a multiple of the teacher's head size (the number of
            heads kept per layer is `hidden_dim // head_size`), at most the teacher's width.
        intermediate_dim: int. Kept FFN units per layer, at most the teacher's.
        num_layers, layers, strategy: the kept layers, as in `kdistill.students.from_teacher`
            (default `strategy="first"`: the first `num_layers`).
        vocabulary: int array or None. The teacher token ids the student embeds (e.g.
            `kdistill.vocabulary.corpus_vocabulary`); others map to `unknown_id`.
        unknown_id: int. The `[UNK]` id (required with `vocabulary`).
        dropout: float or None. Dropout of the student (default: the teacher's).
        max_sequence_length: int or None. Rows of the position table kept (default: the
            teacher's).
        max_batches: int or None. Calibration batches to use.
        importance: `Importance` or None. Precomputed scores (skips the calibration pass).

    Returns:
        The built student.

    Raises:
        ValueError: unsupported teacher; sizes out of range or not a multiple of the head size;
            bad layer selection; empty calibration data.

    Example:
    >>> from kdistill import testing
    >>> teacher = testing.tiny_bert_classifier(num_layers=2, hidden_dim=8, num_heads=2,
    ...                                        intermediate_dim=16)
    >>> data = testing.token_dataset(num_examples=8, batch_size=4)
    >>> student = prune_teacher(teacher, data, hidden_dim=4, intermediate_dim=8, num_layers=1)
    >>> b = student.backbone
    >>> b.num_layers, b.hidden_dim, b.num_heads, b.intermediate_dim
    (1, 4, 1, 8)
    """
    import keras_hub

    backbone = _teacher_backbone(teacher)
    num_heads = _check_sizes(backbone, hidden_dim, intermediate_dim)
    selected = select_layers(backbone.num_layers, num_layers, strategy, layers)
    if importance is None:
        importance = importance_scores(teacher, calibration_data, max_batches=max_batches)
    keep_c = _top(importance.channels, hidden_dim)
    config = _student_config(backbone, len(selected), hidden_dim, num_heads, intermediate_dim,
                             dropout, max_sequence_length)
    vocabulary_map = _vocabulary_map(backbone, vocabulary, unknown_id)
    rows = None
    if vocabulary_map is not None:
        rows = vocabulary_map.kept_ids
        config["vocabulary_size"] = len(rows)
    student_backbone = keras_hub.models.BertBackbone(**config)
    _copy_embeddings(backbone, student_backbone, keep_c, rows)
    for j, i in enumerate(selected):
        _copy_layer(backbone.transformer_layers[i], student_backbone.transformer_layers[j],
                    keep_c, _top(importance.heads[i], num_heads),
                    _top(importance.units[i], intermediate_dim))
    return _classifier(teacher, student_backbone, vocabulary_map, dropout, keep_c)


def _check_sizes(backbone, hidden_dim, intermediate_dim):
    """Checks the kept sizes against the teacher's; returns the number of heads kept."""
    first = backbone.transformer_layers[0]
    for value, name, limit in ((hidden_dim, "hidden_dim", backbone.hidden_dim),
                               (intermediate_dim, "intermediate_dim", first.intermediate_dim)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
            raise ValueError(f"`{name}` must be an integer in [1, {limit}] (the teacher's), got "
                             f"{value!r}.")
    return _kept_heads(backbone, hidden_dim)


def _student_config(backbone, num_layers, hidden_dim, num_heads, intermediate_dim, dropout,
                    max_sequence_length):
    """The student backbone's config: the teacher's, with the kept sizes."""
    config = backbone.get_config()
    config.pop("name", None)
    config.update(num_layers=num_layers, hidden_dim=hidden_dim, num_heads=num_heads,
                  intermediate_dim=intermediate_dim)
    if dropout is not None:
        config["dropout"] = dropout
    if max_sequence_length is not None:
        if not 1 <= max_sequence_length <= backbone.max_sequence_length:
            raise ValueError(f"`max_sequence_length` must be in [1, "
                             f"{backbone.max_sequence_length}], got {max_sequence_length!r}.")
        config["max_sequence_length"] = int(max_sequence_length)
    return config


def _vocabulary_map(backbone, vocabulary, unknown_id):
    """The `VocabularyMap` of a pruned vocabulary, or None to keep the teacher's."""
    if vocabulary is None:
        return None
    from kdistill.vocabulary import VocabularyMap

    if unknown_id is None:
        raise ValueError("`vocabulary` needs `unknown_id` (the [UNK] id pruned tokens map "
                         "to).")
    return VocabularyMap(vocabulary, input_vocabulary_size=backbone.vocabulary_size,
                         unknown_id=unknown_id)


def _take(weight, *index):
    """A weight's values with only the `kept` indices along each `(axis, kept)`."""
    value = keras.ops.convert_to_numpy(weight)
    for axis, kept in index:
        value = np.take(value, kept, axis=axis)
    return value


def _copy_embeddings(t, s, keep_c, rows):
    """Token (kept `rows` only), position and segment tables and their layer norm."""
    tokens = _take(t.token_embedding.embeddings, (1, keep_c))
    s.token_embedding.embeddings.assign(tokens if rows is None else tokens[rows])
    s.position_embedding.position_embeddings.assign(
        _take(t.position_embedding.position_embeddings, (1, keep_c))[: s.max_sequence_length])
    s.segment_embedding.embeddings.assign(_take(t.segment_embedding.embeddings, (1, keep_c)))
    for name in ("gamma", "beta"):
        getattr(s.embeddings_layer_norm, name).assign(
            _take(getattr(t.embeddings_layer_norm, name), (0, keep_c)))


def _copy_layer(src, dst, keep_c, keep_h, keep_u):
    """One encoder layer: kept channels, heads (`keep_h`) and FFN units (`keep_u`)."""
    sa, da = src._self_attention_layer, dst._self_attention_layer
    for name in ("_query_dense", "_key_dense", "_value_dense"):
        getattr(da, name).kernel.assign(
            _take(getattr(sa, name).kernel, (0, keep_c), (1, keep_h)))
        getattr(da, name).bias.assign(_take(getattr(sa, name).bias, (0, keep_h)))
    da._output_dense.kernel.assign(_take(sa._output_dense.kernel, (0, keep_h), (2, keep_c)))
    da._output_dense.bias.assign(_take(sa._output_dense.bias, (0, keep_c)))
    for norm in ("_self_attention_layer_norm", "_feedforward_layer_norm"):
        for name in ("gamma", "beta"):
            getattr(getattr(dst, norm), name).assign(
                _take(getattr(getattr(src, norm), name), (0, keep_c)))
    dst._feedforward_intermediate_dense.kernel.assign(
        _take(src._feedforward_intermediate_dense.kernel, (0, keep_c), (1, keep_u)))
    dst._feedforward_intermediate_dense.bias.assign(
        _take(src._feedforward_intermediate_dense.bias, (0, keep_u)))
    dst._feedforward_output_dense.kernel.assign(
        _take(src._feedforward_output_dense.kernel, (0, keep_u), (1, keep_c)))
    dst._feedforward_output_dense.bias.assign(
        _take(src._feedforward_output_dense.bias, (0, keep_c)))


def _classifier(teacher, backbone, vocabulary_map, dropout, keep_c):
    """The student classifier on `backbone`; its pooler and head sliced from the teacher's."""
    import keras_hub

    pooler = teacher.backbone.pooled_dense
    backbone.pooled_dense.kernel.assign(_take(pooler.kernel, (0, keep_c), (1, keep_c)))
    backbone.pooled_dense.bias.assign(_take(pooler.bias, (0, keep_c)))

    head_dropout = teacher.dropout if dropout is None else dropout
    if vocabulary_map is not None:
        from kdistill.vocabulary import VocabularyMappedClassifier

        student = VocabularyMappedClassifier(backbone, teacher.num_classes, vocabulary_map,
                                             dropout=head_dropout)
    else:
        student = keras_hub.models.BertTextClassifier(
            backbone=backbone, num_classes=teacher.num_classes, preprocessor=None,
            activation=teacher.activation, dropout=head_dropout)
    student.output_dense.kernel.assign(_take(teacher.output_dense.kernel, (0, keep_c)))
    student.output_dense.bias.assign(keras.ops.convert_to_numpy(teacher.output_dense.bias))
    return student


def pruned_params(teacher, hidden_dim, intermediate_dim, num_layers, vocabulary_size=None,
                  max_sequence_length=None):
    """Parameters of `prune_teacher`'s student, without building it (to pick sizes).

    Equals the student's `count_params()`. With `vocabulary_size` (a pruned vocabulary) that
    includes the `VocabularyMap`'s lookup table, one int32 per teacher word piece.

    Example:
    >>> from kdistill import testing
    >>> teacher = testing.tiny_bert_classifier(num_layers=2, hidden_dim=8, num_heads=2,
    ...                                        intermediate_dim=16)
    >>> data = testing.token_dataset(num_examples=8, batch_size=4)
    >>> student = prune_teacher(teacher, data, hidden_dim=4, intermediate_dim=8, num_layers=1)
    >>> pruned_params(teacher, 4, 8, 1) == student.count_params()
    True
    """
    from kdistill.students import count_params

    backbone = _teacher_backbone(teacher)
    num_heads = _kept_heads(backbone, hidden_dim)
    lookup = backbone.vocabulary_size if vocabulary_size else 0
    return lookup + count_params(
        "test_tiny", vocabulary_size or backbone.vocabulary_size,
        num_classes=teacher.num_classes,
        max_sequence_length=max_sequence_length or backbone.max_sequence_length,
        num_layers=num_layers, hidden_dim=hidden_dim,
        num_heads=num_heads, intermediate_dim=intermediate_dim,
        num_segments=backbone.num_segments)
