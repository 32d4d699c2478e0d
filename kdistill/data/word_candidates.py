"""Word replacement candidates for TinyBERT augmentation: masked-LM words, embedding neighbours.

`kdistill.data.augment.Augmenter` asks a candidate source for the words that may replace a word
of a sentence. TinyBERT (Jiao et al. 2020, Algorithm 1 and the released `data_augmentation.py`)
uses two:

* `MaskedLMCandidates`, for a word that the tokenizer keeps as **one piece** (`"film"`): the word
  is masked and a masked language model predicts the top-K words at that position (the masked
  sentence is paired with the original one, as in the released code);
* `EmbeddingNeighbours`, for a word split into **several pieces** (`"unwatchable"` ->
  `un ##watch ##able`): its K nearest neighbours (cosine) in a word-embedding table.

A source is any callable taking a list of `WordQuery` and returning a list of candidate lists.

Differences from the released code, on purpose:

* The original word is never one of its own candidates, and the top-K is taken over valid words
  only (alphabetic vocabulary entries; no `##` pieces, punctuation or special tokens), so a
  "replace" draw always changes the word.
* The teacher's table has no row for a multi-piece word; its query vector is the mean of its
  pieces' rows. With a word-level table (e.g. GloVe, as TinyBERT used) and its word list, the
  word's own row is used.

References:
    Jiao et al., "TinyBERT: Distilling BERT for Natural Language Understanding", Findings of
    EMNLP 2020, [arXiv:1909.10351](https://arxiv.org/abs/1909.10351).
"""

import dataclasses
import numbers

import keras
import numpy as np
import tensorflow as tf

_NEG = -1e9  # logit/score of tokens that may not be candidates (finite: no inf - inf NaN)
_EXTRA = 4  # top-k slack for candidates dropped after the search (case variants of the word)


@dataclasses.dataclass(frozen=True)
class WordQuery:
    """One word of a sentence that needs replacement candidates.

    Candidate sources receive lists of these. All words of the sentence (punctuation included)
    and their word pieces are given, so a source can rebuild the sentence's token sequence.

    Attributes:
        words: tuple of str. The sentence's words and punctuation marks, in order, as written.
        pieces: tuple of tuples of str. The tokenizer's word pieces of each of `words`.
        index: int. Which word to replace.
        unknown: bool. True when a piece of the word is the tokenizer's out-of-vocabulary token.

    Example:
    >>> query = WordQuery(words=("An", "unwatchable", "film"),
    ...                   pieces=(("an",), ("un", "##watch", "##able"), ("film",)), index=1)
    >>> query.word, len(query.pieces[query.index])
    ('unwatchable', 3)
    """

    words: tuple
    pieces: tuple
    index: int
    unknown: bool = False

    @property
    def word(self):
        """The word to replace (str)."""
        return self.words[self.index]


def check_integer(value, name, minimum):
    """Checks a count or seed argument: an int (not a bool) >= `minimum`.

    Args:
        value: the argument.
        name: str. Its name, quoted in the error.
        minimum: int. The smallest value allowed.

    Returns:
        int: the value.

    Raises:
        ValueError: the value is not such an integer.

    Example:
    >>> check_integer(15, "num_candidates", 1)
    15
    >>> check_integer(0, "num_candidates", 1)
    Traceback (most recent call last):
    ...
    ValueError: `num_candidates` must be an integer >= 1, got 0.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def wordpiece_tokenizer(tokenizer):
    """The WordPiece tokenizer of a keras-hub tokenizer or preprocessor (which stands for its own).

    Args:
        tokenizer: a keras-hub tokenizer (callable, with `get_vocabulary`), or a preprocessor
            with one as `.tokenizer`.

    Returns:
        The tokenizer.

    Raises:
        ValueError: neither a tokenizer nor a preprocessor that has one.

    Example:
    >>> import keras_hub
    >>> vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "film"]
    >>> tokenizer = keras_hub.tokenizers.BertTokenizer(vocabulary=vocab)
    >>> preprocessor = keras_hub.models.BertTextClassifierPreprocessor(tokenizer)
    >>> wordpiece_tokenizer(preprocessor) is tokenizer
    True
    """
    if not hasattr(tokenizer, "get_vocabulary") and hasattr(tokenizer, "tokenizer"):
        tokenizer = tokenizer.tokenizer
    if not (callable(tokenizer) and hasattr(tokenizer, "get_vocabulary")):
        raise ValueError(
            f"Expected a keras-hub WordPiece tokenizer (e.g. keras_hub.tokenizers.BertTokenizer) "
            f"or a preprocessor that has one, got {type(tokenizer).__name__}.")
    return tokenizer


def _vocabulary_list(vocabulary):
    if hasattr(vocabulary, "get_vocabulary") or hasattr(vocabulary, "tokenizer"):
        return list(wordpiece_tokenizer(vocabulary).get_vocabulary())
    if isinstance(vocabulary, (str, bytes)) or not hasattr(vocabulary, "__len__"):
        raise ValueError("`vocabulary` must be a list of tokens (row i of the table is token i) "
                         f"or a tokenizer, got {type(vocabulary).__name__}.")
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in vocabulary]


def _is_candidate_token(token):
    """A whole alphabetic word: no `##` piece, punctuation, number or `[SPECIAL]` token."""
    return token.isalpha()


def _keep(candidates, query, k):
    """Candidates that differ from the word (case-insensitively), first `k`, in order."""
    word = query.word.lower()
    kept = []
    for c in candidates:
        if c.lower() != word and c not in kept:
            kept.append(c)
            if len(kept) == k:
                break
    return kept


class EmbeddingNeighbours:
    """Replacement candidates: the K nearest words (cosine) in a word-embedding table.

    The table is a teacher's token-embedding matrix with the tokenizer's vocabulary (row i is
    token i), or any word-level table (e.g. GloVe) with its word list. Only whole alphabetic
    words are candidates. A word with its own row (as written or lower-cased) uses that row; any
    other word uses the mean of its word pieces' rows (when all pieces are in the table);
    out-of-vocabulary words (`[UNK]` pieces) get no candidates. Results are cached per word.

    Args:
        embeddings: array-like `[vocabulary_size, dim]`, or a keras Variable.
        vocabulary: list of str, or a tokenizer whose vocabulary indexes the rows.
        num_candidates: int. K, candidates per word (TinyBERT: 15).
        batch_size: int. Query words per similarity matmul.

    Example:
    >>> vocab = ["[PAD]", "[UNK]", "good", "great", "fine", "film", "movie"]
    >>> table = [[0, 0], [0, 0], [1, .1], [1, .2], [1, .5], [.1, 1], [.2, 1]]
    >>> neighbours = EmbeddingNeighbours(table, vocab, num_candidates=2)
    >>> neighbours([WordQuery(("good", "film"), (("good",), ("film",)), 0)])
    [['great', 'fine']]

    References:
        Jiao et al. 2020, [arXiv:1909.10351](https://arxiv.org/abs/1909.10351).
    """

    def __init__(self, embeddings, vocabulary, num_candidates=15, batch_size=256):
        self.num_candidates = check_integer(num_candidates, "num_candidates", 1)
        self.batch_size = check_integer(batch_size, "batch_size", 1)
        table = np.asarray(keras.ops.convert_to_numpy(embeddings), dtype=np.float32)
        if table.ndim != 2:
            raise ValueError(f"`embeddings` must be a 2-D table [vocabulary_size, dim], got shape "
                             f"{table.shape}.")
        vocabulary = _vocabulary_list(vocabulary)
        if len(vocabulary) != table.shape[0]:
            raise ValueError(
                f"The vocabulary has {len(vocabulary)} tokens but the embedding table has "
                f"{table.shape[0]} rows: row i must be the vector of token i. Pass the "
                "vocabulary the table was trained with (e.g. the teacher's tokenizer).")
        if not np.all(np.isfinite(table)):
            raise ValueError("The embedding table contains NaN or Inf values.")
        self.vocabulary = vocabulary
        self._row = {}
        for i, token in enumerate(vocabulary):
            self._row.setdefault(token, i)
        rows = [i for i, token in enumerate(vocabulary) if _is_candidate_token(token)]
        if not rows:
            raise ValueError("The vocabulary has no whole alphabetic words to use as candidates.")
        norms = np.linalg.norm(table, axis=1, keepdims=True)
        self._table = table
        self._unit = tf.constant(table[rows] / np.maximum(norms[rows], 1e-12))
        self._words = [vocabulary[i] for i in rows]
        self._cache = {}

    @classmethod
    def from_model(cls, model, vocabulary, num_candidates=15, **kwargs):
        """Use a keras-hub model's token-embedding table and its tokenizer's vocabulary.

        Args:
            model: keras.Model. A keras-hub backbone (`token_embedding` layer) or a task model
                on one (`model.backbone`), e.g. a `BertTextClassifier` teacher.
            vocabulary: the model's tokenizer, its preprocessor, or its vocabulary (list).
            num_candidates: int. K.
            **kwargs: passed to the constructor.

        Returns:
            An `EmbeddingNeighbours`.

        Example:
        >>> import keras_hub
        >>> backbone = keras_hub.models.BertBackbone(vocabulary_size=4, num_layers=1,
        ...     num_heads=1, hidden_dim=4, intermediate_dim=8, max_sequence_length=8)
        >>> source = EmbeddingNeighbours.from_model(backbone, ["[PAD]", "a", "b", "c"])
        >>> source([WordQuery(("b",), (("b",),), 0)])[0] in (["a", "c"], ["c", "a"])
        True
        """
        owner = getattr(model, "backbone", model)
        layer = getattr(owner, "token_embedding", None)
        weights = getattr(layer, "embeddings", None)
        if weights is None:
            raise ValueError(
                f"{getattr(model, 'name', type(model).__name__)!r} has no token-embedding table "
                "(expected a keras-hub backbone with `token_embedding`, or a task model with "
                "`.backbone`). Pass the table itself: EmbeddingNeighbours(table, vocabulary).")
        return cls(weights, vocabulary, num_candidates=num_candidates, **kwargs)

    def _vector(self, query):
        if query.unknown:
            return None
        for key in (query.word, query.word.lower()):
            if key in self._row:
                return self._table[self._row[key]]
        pieces = query.pieces[query.index]
        if pieces and all(p in self._row for p in pieces):
            return self._table[[self._row[p] for p in pieces]].mean(axis=0)
        return None

    def __call__(self, queries):
        """Candidates for each query (list of lists of str, possibly empty)."""
        if len(self._cache) > 500_000:  # bound memory on huge corpora
            self._cache.clear()
        keys = [(q.word, q.pieces[q.index], q.unknown) for q in queries]
        todo = {}
        for key, query in zip(keys, queries):
            if key not in self._cache and key not in todo:
                todo[key] = query
        missing = []
        for key, query in todo.items():
            vector = self._vector(query)
            if vector is None or not np.any(vector):
                self._cache[key] = []
            else:
                missing.append((key, query, vector))
        k = min(self.num_candidates + _EXTRA, len(self._words))
        for start in range(0, len(missing), self.batch_size):
            chunk = missing[start:start + self.batch_size]
            vectors = np.stack([v for _, _, v in chunk])
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            scores = tf.linalg.matmul(tf.constant(vectors), self._unit, transpose_b=True)
            top = tf.math.top_k(scores, k=k).indices.numpy()
            for (key, query, _), ids in zip(chunk, top):
                self._cache[key] = _keep([self._words[i] for i in ids], query,
                                         self.num_candidates)
        return [list(self._cache[key]) for key in keys]


class MaskedLMCandidates:
    """Replacement candidates: the top-K words a masked language model predicts at the word.

    For each query the word is replaced by one `[MASK]` and the model sees
    `[CLS] masked sentence [SEP] original sentence [SEP]` (segment ids 0 then 1, as TinyBERT's
    released code), truncated to `sequence_length` around the mask. Queries are packed into
    batches of `batch_size` rows: one model call per batch, not per word. Only whole alphabetic
    words other than the masked one are candidates.

    Args:
        masked_lm: keras.Model. A keras-hub masked LM without preprocessor (e.g.
            `keras_hub.models.BertMaskedLM(backbone, preprocessor=None)`) or any Keras model
            taking a dict with `token_ids`, `mask_positions` (and optionally `padding_mask`,
            `segment_ids`) and returning logits `[batch, num_masks, vocabulary_size]`.
        tokenizer: The WordPiece tokenizer the model was trained with (or its preprocessor).
        num_candidates: int. K, candidates per word (TinyBERT: 15).
        batch_size: int. Masked sequences per model call.
        sequence_length: int. Maximum tokens per sequence (at most the backbone's
            `max_sequence_length`).
        pair_with_original: bool. Append the unmasked sentence as a second segment.

    Example:
    >>> import keras_hub
    >>> vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "film", "movie"]
    >>> tokenizer = keras_hub.tokenizers.BertTokenizer(vocabulary=vocab)
    >>> backbone = keras_hub.models.BertBackbone(vocabulary_size=8, num_layers=1, num_heads=1,
    ...     hidden_dim=4, intermediate_dim=8, max_sequence_length=16)
    >>> mlm = keras_hub.models.BertMaskedLM(backbone, preprocessor=None)
    >>> source = MaskedLMCandidates(mlm, tokenizer, num_candidates=2)
    >>> words = ("good", "film")
    >>> sorted(source([WordQuery(words, (("good",), ("film",)), 1)])[0])
    ['good', 'movie']

    References:
        Jiao et al. 2020, [arXiv:1909.10351](https://arxiv.org/abs/1909.10351).
    """

    def __init__(self, masked_lm, tokenizer, num_candidates=15, batch_size=64,
                 sequence_length=128, pair_with_original=True):
        self.num_candidates = check_integer(num_candidates, "num_candidates", 1)
        self.batch_size = check_integer(batch_size, "batch_size", 1)
        self.sequence_length = check_integer(sequence_length, "sequence_length", 4)
        self.pair_with_original = bool(pair_with_original)
        if not isinstance(masked_lm, keras.Model):
            raise ValueError(f"`masked_lm` must be a keras.Model, got {type(masked_lm).__name__}.")
        tokenizer = wordpiece_tokenizer(tokenizer)
        self.vocabulary = list(tokenizer.get_vocabulary())
        self._check_vocabulary(masked_lm, self.vocabulary)
        limit = getattr(getattr(masked_lm, "backbone", None), "max_sequence_length", None)
        if limit:  # the model's position table bounds the sequence
            self.sequence_length = min(self.sequence_length, int(limit))
        inputs = masked_lm.input if isinstance(masked_lm.input, dict) else {}
        if not {"token_ids", "mask_positions"} <= set(inputs):
            raise ValueError(
                f"The masked LM {masked_lm.name!r} must take a dict of inputs with at least "
                f"'token_ids' and 'mask_positions' (the keras-hub MaskedLM convention, built "
                f"with preprocessor=None); its inputs are {sorted(inputs) or masked_lm.input}.")
        self._input_dtypes = {name: inputs[name].dtype for name in inputs}
        unknown = set(inputs) - {"token_ids", "mask_positions", "padding_mask", "segment_ids"}
        if unknown:
            raise ValueError(f"The masked LM takes inputs {sorted(unknown)} this source cannot "
                             "fill; expected token_ids, padding_mask, segment_ids, "
                             "mask_positions.")
        self._id = {}
        for i, token in enumerate(self.vocabulary):
            self._id.setdefault(token, i)
        self._special = self._special_ids(tokenizer)
        self.masked_lm = masked_lm
        valid = np.array([_is_candidate_token(t) for t in self.vocabulary])
        if not valid.any():
            raise ValueError("The vocabulary has no whole alphabetic words to use as candidates.")
        self._invalid = tf.constant(np.where(valid, 0.0, _NEG).astype(np.float32))
        self._k = min(self.num_candidates + _EXTRA, len(self.vocabulary))
        self._predict = tf.function(self._predict_fn, reduce_retracing=True)

    @staticmethod
    def _check_vocabulary(masked_lm, vocabulary):
        sizes = {}
        backbone_size = getattr(getattr(masked_lm, "backbone", None), "vocabulary_size", None)
        if backbone_size is not None:
            sizes["backbone vocabulary_size"] = int(backbone_size)
        output_shape = getattr(masked_lm, "output_shape", None)
        if isinstance(output_shape, tuple) and output_shape and output_shape[-1] is not None:
            sizes["logits width"] = int(output_shape[-1])
        for what, size in sizes.items():
            if size != len(vocabulary):
                raise ValueError(
                    f"The masked LM's {what} is {size} but the tokenizer has {len(vocabulary)} "
                    "tokens: the model was trained with another vocabulary. Use the tokenizer "
                    "of the masked LM's preset (its preprocessor.tokenizer).")
        own = getattr(getattr(masked_lm, "preprocessor", None), "tokenizer", None)
        if own is not None and hasattr(own, "get_vocabulary"):
            theirs = list(own.get_vocabulary())
            if theirs != vocabulary:
                first = next((i for i, (a, b) in enumerate(zip(theirs, vocabulary)) if a != b),
                             min(len(theirs), len(vocabulary)))
                raise ValueError(
                    "The masked LM's own tokenizer has a different vocabulary from the one "
                    f"given (first difference at id {first}); pass masked_lm.preprocessor."
                    "tokenizer, or a masked LM trained with this tokenizer.")

    def _special_ids(self, tokenizer):
        def first(*names):
            for name in names:
                value = getattr(tokenizer, name, None)
                if value is not None:
                    return int(value)
            return None

        ids = {"mask": first("mask_token_id"), "cls": first("cls_token_id", "start_token_id"),
               "sep": first("sep_token_id", "end_token_id"), "pad": first("pad_token_id")}
        ids["unk"] = self._id.get(getattr(tokenizer, "oov_token", "[UNK]"), ids["pad"])
        missing = [name for name in ("mask", "cls", "sep") if ids[name] is None]
        if missing:
            raise ValueError(f"The tokenizer has no {missing} token id(s); a masked LM needs "
                             "[MASK], [CLS] and [SEP] (use a BERT-style WordPiece tokenizer).")
        ids["pad"] = 0 if ids["pad"] is None else ids["pad"]
        return ids

    def _predict_fn(self, inputs, exclude):
        logits = self.masked_lm(inputs, training=False)
        if len(logits.shape) == 3:
            logits = logits[:, 0, :]
        logits = tf.cast(logits, tf.float32) + self._invalid
        logits += tf.one_hot(exclude, tf.shape(logits)[-1], on_value=_NEG, off_value=0.0)
        return tf.math.top_k(logits, k=self._k)

    def _encode(self, query):
        """`(token_ids, segment_ids, mask_position, excluded id)` of one query."""
        ids = [[self._id.get(p, self._special["unk"]) for p in pieces] for pieces in query.pieces]
        before = sum(len(x) for x in ids[:query.index])
        first = [t for x in ids[:query.index] for t in x] + [self._special["mask"]] + [
            t for x in ids[query.index + 1:] for t in x]
        room = self.sequence_length - 2
        offset = max(0, min(before - room // 2, len(first) - room))
        first = first[offset:offset + room]
        tokens = [self._special["cls"]] + first + [self._special["sep"]]
        segments = [0] * len(tokens)
        room = self.sequence_length - len(tokens) - 1
        if self.pair_with_original and room > 0:
            second = [t for x in ids for t in x][:room] + [self._special["sep"]]
            tokens += second
            segments += [1] * len(second)
        exclude = ids[query.index][0] if len(ids[query.index]) == 1 else -1
        return tokens, segments, 1 + before - offset, exclude

    def _run_batch(self, rows):
        """One model call on up to `batch_size` encoded rows; returns top ids and scores."""
        length = max(len(r[0]) for r in rows)
        length = min(self.sequence_length, -(-length // 16) * 16)  # few distinct shapes
        token_ids = np.full((self.batch_size, length), self._special["pad"], np.int32)
        segment_ids = np.zeros((self.batch_size, length), np.int32)
        padding_mask = np.zeros((self.batch_size, length), bool)
        positions = np.zeros((self.batch_size, 1), np.int32)
        exclude = np.full((self.batch_size,), -1, np.int32)
        for i, (tokens, segments, position, excluded) in enumerate(rows):
            token_ids[i, :len(tokens)] = tokens
            segment_ids[i, :len(segments)] = segments
            padding_mask[i, :len(tokens)] = True
            positions[i, 0] = position
            exclude[i] = excluded
        padding_mask[len(rows):, 0] = True  # filler rows: one visible token
        arrays = {"token_ids": token_ids, "segment_ids": segment_ids,
                  "padding_mask": padding_mask, "mask_positions": positions}
        inputs = {name: tf.constant(arrays[name], dtype=dtype)
                  for name, dtype in self._input_dtypes.items()}
        top = self._predict(inputs, tf.constant(exclude))
        return top.indices.numpy()[:len(rows)], top.values.numpy()[:len(rows)]

    def __call__(self, queries):
        """Candidates for each query (list of lists of str, possibly empty)."""
        rows = [self._encode(q) for q in queries]
        out = []
        for start in range(0, len(rows), self.batch_size):
            ids, scores = self._run_batch(rows[start:start + self.batch_size])
            for query, row_ids, row_scores in zip(queries[start:], ids, scores):
                words = [self.vocabulary[i] for i, s in zip(row_ids, row_scores) if s > _NEG / 2]
                out.append(_keep(words, query, self.num_candidates))
        return out
