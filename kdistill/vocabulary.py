"""Vocabulary pruning: students that read the teacher's token ids but embed only those a task uses.

In a small BERT student the word-embedding table is most of the model (30,522 x 128 = 3.9M of a
4.4M-parameter BERT-tiny). A task corpus uses a fraction of the vocabulary (17k of BERT's 30,522
word pieces for the Rotten Tomatoes snippets), so dropping the rows it never uses buys width and
depth at the same size. The student keeps the teacher's **tokenizer and token ids**: a
`VocabularyMap` layer in front of its backbone maps each teacher id to a row of the smaller table,
and ids outside the kept set to the `[UNK]` row. Teacher and student still read the same batches,
position by position, so every intermediate-layer objective applies unchanged, and the exported
SavedModel/TFLite takes the same inputs as the teacher (the map is one int32 `GATHER`).

References:
    - [Load What You Need: Smaller Versions of Multilingual BERT](
      https://arxiv.org/abs/2010.05609) (Abdaoui et al., 2020): vocabulary reduction.
    - [TextPruner: A Model Pruning Toolkit for Pre-Trained Language Models](
      https://arxiv.org/abs/2203.15996) (Yang et al., 2022): vocabulary pruning by corpus counts.
"""

import keras
import numpy as np

from kdistill.taps import find_backbone


def _token_ids_of(batch):
    if isinstance(batch, (tuple, list)):
        batch = batch[0]
    if isinstance(batch, dict):
        if "token_ids" not in batch:
            raise ValueError(f"A batch dict without 'token_ids' (keys {sorted(batch)}): give "
                             "keras-hub style token dicts or integer id arrays.")
        batch = batch["token_ids"]
    return np.asarray(keras.ops.convert_to_numpy(batch))


def special_token_ids(tokenizer):
    """The ids a pruned vocabulary must keep: a keras-hub tokenizer's special and `[UNK]` tokens.

    Args:
        tokenizer: keras-hub tokenizer (e.g. `BertTokenizer`, or a preprocessor's `.tokenizer`).

    Returns:
        A sorted list of int ids, and the unknown token's id (`(ids, unknown_id)`).

    Example:
    >>> import keras_hub
    >>> vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "film"]
    >>> special_token_ids(keras_hub.tokenizers.BertTokenizer(vocabulary=vocab))
    ([0, 1, 2, 3, 4], 1)
    """
    ids = {int(i) for i in getattr(tokenizer, "special_token_ids", [])}
    oov = getattr(tokenizer, "oov_token", None) or "[UNK]"
    unknown_id = int(tokenizer.token_to_id(oov))
    return sorted(ids | {unknown_id}), unknown_id


def corpus_vocabulary(dataset, vocabulary_size, keep_ids, min_count=1):
    """The token ids a corpus uses at least `min_count` times, plus `keep_ids`, sorted.

    Count on the text the student will learn from (training and unlabelled splits), never on the
    test split.

    Args:
        dataset: iterable of batches: keras-hub token dicts (`token_ids`), `(inputs, labels)`
            tuples of those, or integer id arrays (e.g. a tokenised `tf.data.Dataset`).
        vocabulary_size: int. Size of the full (teacher's) vocabulary; every id must be below it.
        keep_ids: iterable of int. Ids always kept (special tokens and `[UNK]`, see
            `special_token_ids`).
        min_count: int >= 1. Minimum number of occurrences of a kept token.

    Returns:
        A sorted int32 NumPy array of kept ids.

    Raises:
        ValueError: an empty corpus, an id outside `[0, vocabulary_size)`, `min_count < 1`.

    Example:
    >>> import numpy as np
    >>> batches = [np.array([[2, 7, 7, 3, 0]]), np.array([[2, 9, 3, 0, 0]])]
    >>> corpus_vocabulary(batches, vocabulary_size=12, keep_ids=[0, 1, 2, 3]).tolist()
    [0, 1, 2, 3, 7, 9]
    >>> corpus_vocabulary(batches, 12, keep_ids=[0, 1, 2, 3], min_count=2).tolist()
    [0, 1, 2, 3, 7]
    """
    if int(min_count) < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count}.")
    counts = np.zeros(int(vocabulary_size), dtype="int64")
    seen = 0
    for batch in dataset:
        ids = _token_ids_of(batch).ravel()
        if ids.size and (ids.min() < 0 or ids.max() >= vocabulary_size):
            raise ValueError(
                f"Token id {int(ids.max() if ids.max() >= vocabulary_size else ids.min())} is "
                f"outside the vocabulary [0, {vocabulary_size}): tokenise with the teacher's "
                "tokenizer.")
        counts += np.bincount(ids, minlength=vocabulary_size)
        seen += ids.size
    if seen == 0:
        raise ValueError("The corpus is empty: corpus_vocabulary needs the tokenised training "
                         "text.")
    keep = counts >= int(min_count)
    keep_ids = np.asarray(list(keep_ids), dtype="int64")
    if keep_ids.size and (keep_ids.min() < 0 or keep_ids.max() >= vocabulary_size):
        raise ValueError(f"keep_ids must be in [0, {vocabulary_size}), got {keep_ids.tolist()}.")
    keep[keep_ids] = True
    return np.flatnonzero(keep).astype("int32")


@keras.saving.register_keras_serializable(package="kdistill")
class VocabularyMap(keras.layers.Layer):
    """Maps token ids of a full vocabulary to the rows of a pruned one (`[UNK]` for the rest).

    The map is a non-trainable int32 weight of `input_vocabulary_size` entries, saved with the
    model: `output[i] = position of token_ids[i] in kept_ids`, or the position of `unknown_id`.

    Args:
        kept_ids: sorted int array of the kept ids of the full vocabulary, or None when the layer
            is restored from a saved model (its map is then loaded with the weights).
        input_vocabulary_size: int. Size of the full vocabulary (the teacher's).
        unknown_id: int. The full vocabulary's `[UNK]` id; must be in `kept_ids`.

    Example:
    >>> import numpy as np
    >>> layer = VocabularyMap([0, 1, 7, 9], input_vocabulary_size=12, unknown_id=1)
    >>> layer(np.array([[7, 9, 8, 0]])).numpy().tolist()
    [[2, 3, 1, 0]]
    """

    def __init__(self, kept_ids=None, input_vocabulary_size=None, unknown_id=None,
                 output_vocabulary_size=None, **kwargs):
        super().__init__(**kwargs)
        if input_vocabulary_size is None or unknown_id is None:
            raise ValueError("VocabularyMap needs input_vocabulary_size and unknown_id.")
        self.input_vocabulary_size = int(input_vocabulary_size)
        self.unknown_id = int(unknown_id)
        self._kept_ids = None
        if kept_ids is not None:
            kept = np.asarray(kept_ids, dtype="int64")
            if kept.ndim != 1 or kept.size == 0:
                raise ValueError("kept_ids must be a non-empty 1-D list of token ids.")
            if np.any(np.diff(kept) <= 0):
                raise ValueError("kept_ids must be sorted and without repeats.")
            if kept[0] < 0 or kept[-1] >= self.input_vocabulary_size:
                raise ValueError(f"kept_ids must lie in [0, {self.input_vocabulary_size}).")
            if self.unknown_id not in set(kept.tolist()):
                raise ValueError(f"unknown_id {self.unknown_id} must be one of kept_ids: pruned "
                                 "tokens are mapped to it.")
            self._kept_ids = kept
            output_vocabulary_size = kept.size
        if output_vocabulary_size is None:
            raise ValueError("VocabularyMap needs kept_ids (or output_vocabulary_size when "
                             "restored from a config).")
        self.output_vocabulary_size = int(output_vocabulary_size)
        self.table = self.add_weight(
            name="table", shape=(self.input_vocabulary_size,), dtype="int32", trainable=False,
            initializer=keras.initializers.Constant(self._mapping()))

    def _mapping(self):
        if self._kept_ids is None:
            return np.zeros(self.input_vocabulary_size, dtype="int32")
        unknown_row = int(np.searchsorted(self._kept_ids, self.unknown_id))
        table = np.full(self.input_vocabulary_size, unknown_row, dtype="int32")
        table[self._kept_ids] = np.arange(self._kept_ids.size, dtype="int32")
        return table

    @property
    def kept_ids(self):
        """The kept ids of the full vocabulary, read back from the map (a NumPy array)."""
        table = keras.ops.convert_to_numpy(self.table)
        unknown_row = table[self.unknown_id]
        kept = np.flatnonzero(table != unknown_row)
        return np.sort(np.append(kept, self.unknown_id)).astype("int32")

    def call(self, token_ids):
        return keras.ops.take(self.table, keras.ops.cast(token_ids, "int32"), axis=0)

    def compute_output_shape(self, input_shape):
        return input_shape

    def compute_output_spec(self, token_ids):
        return keras.KerasTensor(token_ids.shape, dtype="int32")

    def get_config(self):
        config = super().get_config()
        config.update(input_vocabulary_size=self.input_vocabulary_size,
                      unknown_id=self.unknown_id,
                      output_vocabulary_size=self.output_vocabulary_size)
        return config


@keras.saving.register_keras_serializable(package="kdistill")
class VocabularyMappedClassifier(keras.Model):
    """A keras-hub BERT classifier whose backbone embeds a pruned vocabulary.

    The same graph as `keras_hub.models.BertTextClassifier` (backbone `pooled_output` -> dropout
    -> dense logits) with a `VocabularyMap` on `token_ids` in front of the backbone. Inputs are
    the full vocabulary's keras-hub token dict, so it drops in wherever the teacher's inputs go
    (`kdistill.Distiller`, `kdistill.export_student`, a TFLite app using the teacher's
    tokenizer). `input_vocabulary_size` is the full vocabulary's size.

    Args:
        backbone: `keras_hub.models.BertBackbone` with `vocabulary_size == len(kept_ids)`.
        num_classes: int. Number of classes.
        vocabulary_map: `VocabularyMap` from the full vocabulary to the backbone's.
        dropout: float. Dropout before the classification layer.

    Example:
    >>> import keras_hub, numpy as np
    >>> backbone = keras_hub.models.BertBackbone(vocabulary_size=4, num_layers=1, num_heads=2,
    ...     hidden_dim=8, intermediate_dim=16, max_sequence_length=8)
    >>> model = VocabularyMappedClassifier(
    ...     backbone, 2, VocabularyMap([0, 1, 7, 9], input_vocabulary_size=12, unknown_id=1))
    >>> x = {"token_ids": np.array([[7, 9, 8, 0]]), "segment_ids": np.zeros((1, 4), "int32"),
    ...      "padding_mask": np.array([[1, 1, 1, 0]])}
    >>> model(x).shape, model.input_vocabulary_size
    (TensorShape([1, 2]), 12)
    """

    def __init__(self, backbone, num_classes, vocabulary_map, dropout=0.1, **kwargs):
        from keras_hub.src.models.bert.bert_backbone import bert_kernel_initializer

        if vocabulary_map.output_vocabulary_size != backbone.vocabulary_size:
            raise ValueError(
                f"The vocabulary map has {vocabulary_map.output_vocabulary_size} rows but the "
                f"backbone's vocabulary {backbone.vocabulary_size}: build the backbone with "
                "vocabulary_size=len(kept_ids).")
        # === Layers ===
        self.backbone = backbone
        self.vocabulary_map = vocabulary_map
        self.output_dropout = keras.layers.Dropout(dropout, name="classifier_dropout")
        self.output_dense = keras.layers.Dense(
            num_classes, kernel_initializer=bert_kernel_initializer(), name="logits")
        # === Functional model ===
        inputs = {name: keras.Input(shape=(None,), dtype="int32", name=name)
                  for name in ("token_ids", "segment_ids", "padding_mask")}
        mapped = dict(inputs, token_ids=vocabulary_map(inputs["token_ids"]))
        pooled = backbone(mapped)["pooled_output"]
        outputs = self.output_dense(self.output_dropout(pooled))
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        # === Config ===
        self.num_classes = int(num_classes)
        self.dropout = dropout

    @property
    def input_vocabulary_size(self):
        """Size of the full vocabulary the inputs are drawn from (the teacher's)."""
        return self.vocabulary_map.input_vocabulary_size

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "vocabulary_map": keras.saving.serialize_keras_object(self.vocabulary_map),
            "num_classes": self.num_classes,
            "dropout": self.dropout,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        config["vocabulary_map"] = keras.saving.deserialize_keras_object(config["vocabulary_map"])
        return cls(**config)


def input_vocabulary_size(model):
    """The size of the vocabulary a model's `token_ids` are drawn from, or None if unknown.

    For a `VocabularyMappedClassifier` the full (teacher's) vocabulary; for keras-hub models the
    backbone's `vocabulary_size`.

    Example:
    >>> from kdistill.testing import tiny_bert_classifier
    >>> input_vocabulary_size(tiny_bert_classifier())
    64
    """
    size = getattr(model, "input_vocabulary_size", None)
    if size is not None:
        return int(size)
    backbone = find_backbone(model)
    return getattr(backbone, "vocabulary_size", None)
