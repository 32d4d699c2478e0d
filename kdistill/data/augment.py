"""TinyBERT data augmentation: replace words with masked-LM predictions or embedding neighbours.

For every word of a sentence that is alphabetic and not a stop word, TinyBERT (Jiao et al. 2020,
Algorithm 1 and the released `data_augmentation.py`) collects candidate replacements:

* a word that the tokenizer keeps as **one piece** (`"film"`) is masked and a masked language
  model predicts the top-K words at that position (the masked sentence is paired with the
  original one, as in the released code);
* a word split into **several pieces** (`"unwatchable"` -> `un ##watch ##able`) gets its K
  nearest neighbours (cosine) in a word-embedding table.

Each of the N augmented samples then replaces every such word, independently with probability
`p`, by one of its candidates drawn uniformly. The original sentence comes first.

Both candidate sources are pluggable objects (`MaskedLMCandidates`, `EmbeddingNeighbours`, or
any callable taking a list of `WordQuery` and returning a list of candidate lists). A teacher
without an MLM head (e.g. the packaged all-MiniLM-L6-v2 encoder) uses `EmbeddingNeighbours` on its
own token-embedding table for both kinds of words.

Differences from the released code, on purpose:

* The original word is never one of its own candidates, and the top-K is taken over valid words
  only (alphabetic vocabulary entries; no `##` pieces, punctuation or special tokens), so a
  "replace" draw always changes the word and the replacement rate is `p`.
* The teacher's table has no row for a multi-piece word; its query vector is the mean of its
  pieces' rows. With a word-level table (e.g. GloVe, as TinyBERT used) and its word list, the
  word's own row is used.
* Words are replaced in place in the original string: untouched words keep their spelling,
  case and spacing, and a replacement follows the case of the word it replaces (`Film` ->
  `Movie`). The released code re-joins lower-cased tokens with spaces.
* Randomness comes from a generator seeded with `(seed, example index)`: the output does not
  depend on the batch size or on other examples.

References:
    Jiao et al., "TinyBERT: Distilling BERT for Natural Language Understanding", Findings of
    EMNLP 2020, [arXiv:1909.10351](https://arxiv.org/abs/1909.10351).
"""

import dataclasses
import json
import math
import numbers
import os
import tempfile
import unicodedata

import keras
import numpy as np
import tensorflow as tf

from kdistill.data.files import iter_jsonl

# The English stop-word list TinyBERT's released code skips (the NLTK list).
STOP_WORDS = frozenset("""
i me my myself we our ours ourselves you you're you've you'll you'd your yours yourself
yourselves he him his himself she she's her hers herself it it's its itself they them their
theirs themselves this that that'll these those am is are was were be been being have has had
having do does did doing a an the and but if or because as until while of at by for with about
against between into through during before after above below to from up down in out on off
over under again further then once here there all any both each few more most other some such
no nor not only own same so than too very s t can will just don don't should should've now d
ll m o re ve y ain aren aren't couldn couldn't didn didn't doesn doesn't hadn hadn't hasn
hasn't haven haven't isn isn't ma mightn mightn't mustn mustn't needn needn't shan shan't
shouldn shouldn't wasn wasn't weren weren't won won't wouldn wouldn't 's 're
""".split())

_NEG = -1e9  # logit/score of tokens that may not be candidates (finite: no inf - inf NaN)
_EXTRA = 4  # top-k slack for candidates dropped after the search (case variants of the word)
_CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
               (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


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
    """

    words: tuple
    pieces: tuple
    index: int
    unknown: bool = False

    @property
    def word(self):
        """The word to replace (str)."""
        return self.words[self.index]


def _check_int(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _check_probability(value, name):
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not math.isfinite(value) or not 0.0 <= value <= 1.0):
        raise ValueError(f"`{name}` must be a probability in [0, 1], got {value!r}.")
    return float(value)


def _as_tokenizer(tokenizer):
    """A keras-hub preprocessor stands for its tokenizer."""
    if not hasattr(tokenizer, "get_vocabulary") and hasattr(tokenizer, "tokenizer"):
        tokenizer = tokenizer.tokenizer
    if not (callable(tokenizer) and hasattr(tokenizer, "get_vocabulary")):
        raise ValueError(
            f"Expected a keras-hub WordPiece tokenizer (e.g. keras_hub.tokenizers.BertTokenizer) "
            f"or a preprocessor that has one, got {type(tokenizer).__name__}.")
    return tokenizer


def _vocabulary_list(vocabulary):
    if hasattr(vocabulary, "get_vocabulary") or hasattr(vocabulary, "tokenizer"):
        return list(_as_tokenizer(vocabulary).get_vocabulary())
    if isinstance(vocabulary, (str, bytes)) or not hasattr(vocabulary, "__len__"):
        raise ValueError("`vocabulary` must be a list of tokens (row i of the table is token i) "
                         f"or a tokenizer, got {type(vocabulary).__name__}.")
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in vocabulary]


def _is_candidate_token(token):
    """A whole alphabetic word: no `##` piece, punctuation, number or `[SPECIAL]` token."""
    return token.isalpha()


def _char_kind(char):
    code = ord(char)
    if char.isspace() or unicodedata.category(char) in ("Cc", "Cf"):
        return "space"
    if (33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126
            or unicodedata.category(char).startswith("P")):
        return "punct"
    if any(lo <= code <= hi for lo, hi in _CJK_RANGES):
        return "cjk"
    return "word"


def split_words(text, special_tokens=()):
    """Split text into words and punctuation marks the way BERT's basic tokenizer does.

    Whitespace separates words; every punctuation character and CJK character is a word of
    its own; a special token written in the text (e.g. `"[SEP]"`) is kept whole.

    Args:
        text: str. The text.
        special_tokens: iterable of str. Tokens to keep whole (and never replace).

    Returns:
        list of `(start, end, kind)`: character spans into `text` with kind `"word"`,
        `"punct"` or `"special"`.

    Example:
    >>> text = "It's [SEP] great!"
    >>> [text[s:e] for s, e, _ in split_words(text, special_tokens=["[SEP]"])]
    ['It', "'", 's', '[SEP]', 'great', '!']
    """
    specials = sorted({t for t in special_tokens if t}, key=len, reverse=True)
    spans, start, i = [], None, 0
    while i < len(text):
        special = next((t for t in specials if text.startswith(t, i)), None)
        kind = "special" if special else _char_kind(text[i])
        if kind == "word":
            start = i if start is None else start
            i += 1
            continue
        if start is not None:
            spans.append((start, i, "word"))
            start = None
        if kind == "special":
            spans.append((i, i + len(special), "special"))
            i += len(special)
            continue
        if kind != "space":
            spans.append((i, i + 1, "punct" if kind == "punct" else "word"))
        i += 1
    if start is not None:
        spans.append((start, len(text), "word"))
    return spans


def _match_case(candidate, word):
    if len(word) > 1 and word.isupper():
        return candidate.upper()
    if word[:1].isupper():
        return candidate[:1].upper() + candidate[1:]
    return candidate


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
        self.num_candidates = _check_int(num_candidates, "num_candidates", 1)
        self.batch_size = _check_int(batch_size, "batch_size", 1)
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
        self.num_candidates = _check_int(num_candidates, "num_candidates", 1)
        self.batch_size = _check_int(batch_size, "batch_size", 1)
        self.sequence_length = _check_int(sequence_length, "sequence_length", 4)
        self.pair_with_original = bool(pair_with_original)
        if not isinstance(masked_lm, keras.Model):
            raise ValueError(f"`masked_lm` must be a keras.Model, got {type(masked_lm).__name__}.")
        tokenizer = _as_tokenizer(tokenizer)
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


class Augmenter:
    """TinyBERT data augmentation (Algorithm 1): N word-replacement variants per example.

    Each alphabetic, non-stop word gets candidates from `single_piece` (words the tokenizer
    keeps whole) or `multi_piece` (words it splits); each sample replaces each such word with
    probability `replace_probability` by a uniformly drawn candidate. Punctuation, numbers,
    special tokens written in the text and words without candidates stay as they are.

    Args:
        tokenizer: The teacher's WordPiece tokenizer (e.g. `keras_hub.tokenizers.BertTokenizer`)
            or its preprocessor. It decides single- vs multi-piece words.
        single_piece: candidate source for single-piece words: `MaskedLMCandidates` (TinyBERT),
            `EmbeddingNeighbours`, or a callable `list[WordQuery] -> list[list[str]]`.
        multi_piece: candidate source for multi-piece words (TinyBERT: `EmbeddingNeighbours`).
        num_samples: int. N, augmented samples per example (TinyBERT: 20 for SST-2, 30 for
            small tasks, 10 for MNLI/QQP).
        replace_probability: float. p, probability of replacing each word (TinyBERT: 0.4).
        stop_words: iterable of str. Lower-cased words never replaced (default `STOP_WORDS`).
        deduplicate: bool. Drop samples equal to the original or an earlier sample, as the
            released code does (so an example yields at most N + 1 texts). False yields exactly
            N + 1 texts per example.
        seed: int. Random seed; example i uses a generator seeded with `(seed, i)`, so the
            output does not depend on `batch_size` (with a masked LM, up to float rounding of
            its scores in differently padded batches).
        batch_size: int. Examples processed together by `transform` and `write`.

    Example:
    >>> import keras_hub
    >>> vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "good", "great", "fine",
    ...          "film", "movie", "show", "."]
    >>> tokenizer = keras_hub.tokenizers.BertTokenizer(vocabulary=vocab, lowercase=True)
    >>> table = np.array([[0, 0]] * 6 + [[1, .1], [1, .2], [1, .5], [.1, 1], [.2, 1], [.5, 1],
    ...                   [0, 0]])
    >>> neighbours = EmbeddingNeighbours(table, vocab, num_candidates=2)
    >>> augmenter = Augmenter(tokenizer, neighbours, neighbours, num_samples=3, seed=1)
    >>> augmenter.augment(["A good film."])
    [['A good film.', 'A good show.', 'A great film.']]

    References:
        Jiao et al. 2020, [arXiv:1909.10351](https://arxiv.org/abs/1909.10351).
    """

    def __init__(self, tokenizer, single_piece, multi_piece, num_samples=20,
                 replace_probability=0.4, stop_words=STOP_WORDS, deduplicate=True, seed=0,
                 batch_size=256):
        self.tokenizer = _as_tokenizer(tokenizer)
        for name, source in (("single_piece", single_piece), ("multi_piece", multi_piece)):
            if not callable(source):
                raise ValueError(f"`{name}` must be a candidate source (MaskedLMCandidates, "
                                 "EmbeddingNeighbours or a callable taking a list of WordQuery), "
                                 f"got {type(source).__name__}.")
        self.single_piece = single_piece
        self.multi_piece = multi_piece
        self.num_samples = _check_int(num_samples, "num_samples", 1)
        self.replace_probability = _check_probability(replace_probability, "replace_probability")
        if isinstance(stop_words, str):
            raise ValueError("`stop_words` must be a collection of words, not one string.")
        self.stop_words = frozenset(str(w).lower() for w in stop_words)
        self.deduplicate = bool(deduplicate)
        self.seed = _check_int(seed, "seed", 0)
        self.batch_size = _check_int(batch_size, "batch_size", 1)
        self._vocabulary = list(self.tokenizer.get_vocabulary())
        self._oov = getattr(self.tokenizer, "oov_token", "[UNK]")
        special = set(getattr(self.tokenizer, "special_tokens", None) or ())
        special |= {t for t in self._vocabulary if len(t) > 2 and t[0] == "[" and t[-1] == "]"
                    and t[1:-1].isalpha() and t[1:-1].isupper()}
        self._special_tokens = tuple(sorted(special))
        self._pad_id = getattr(self.tokenizer, "pad_token_id", None)
        self._pieces = {}

    @classmethod
    def for_teacher(cls, teacher, tokenizer, masked_lm=None, num_candidates=15, **kwargs):
        """TinyBERT's setup from a teacher: masked-LM candidates if given, else embeddings.

        Args:
            teacher: keras.Model. A keras-hub backbone or task model; its token-embedding table
                gives the neighbours of multi-piece words (and of single-piece words when there
                is no `masked_lm`).
            tokenizer: the teacher's tokenizer or preprocessor.
            masked_lm: keras.Model or None. A masked LM sharing the tokenizer (see
                `MaskedLMCandidates`).
            num_candidates: int. K for both sources (TinyBERT: 15).
            **kwargs: passed to `Augmenter` (`num_samples`, `replace_probability`, `seed`...).

        Returns:
            An `Augmenter`.

        Example:
        >>> import keras_hub
        >>> from kdistill.testing import tiny_bert_classifier
        >>> words = [chr(97 + i // 8) + chr(97 + i % 8) for i in range(59)]  # aa, ab, ...
        >>> vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
        >>> tokenizer = keras_hub.tokenizers.BertTokenizer(vocabulary=vocab)
        >>> augmenter = Augmenter.for_teacher(tiny_bert_classifier(), tokenizer, num_samples=4,
        ...                                   deduplicate=False)
        >>> len(augmenter.augment(["aa ab ac"])[0])
        5
        """
        neighbours = EmbeddingNeighbours.from_model(teacher, tokenizer, num_candidates)
        single = neighbours if masked_lm is None else MaskedLMCandidates(
            masked_lm, tokenizer, num_candidates=num_candidates)
        return cls(tokenizer, single, neighbours, **kwargs)

    def _tokenize(self, words):
        """Fill the word -> pieces cache for `words` with one tokenizer call."""
        new = sorted({w for w in words if w not in self._pieces})
        if not new:
            return
        out = self.tokenizer(new)
        out = out.to_list() if hasattr(out, "to_list") else out
        out = out.tolist() if hasattr(out, "tolist") else out
        if len(self._pieces) > 500_000:
            self._pieces.clear()
        for word, ids in zip(new, out):
            ids = [int(i) for i in ids if self._pad_id is None or int(i) != self._pad_id]
            self._pieces[word] = tuple(self._vocabulary[i] for i in ids)

    def _slots(self, texts):
        """Per text: its spans and, per replaceable word, `(span index, candidates)`."""
        parsed = [split_words(t, self._special_tokens) for t in texts]
        self._tokenize([t[s:e] for t, spans in zip(texts, parsed) for s, e, _ in spans])
        queries = {"single": [], "multi": []}
        owners = {"single": [], "multi": []}
        slots = []
        for n, (text, spans) in enumerate(zip(texts, parsed)):
            words = tuple(text[s:e] for s, e, _ in spans)
            pieces = tuple(self._pieces[w] for w in words)
            slots.append([])
            for j, ((_, _, kind), word) in enumerate(zip(spans, words)):
                if (kind != "word" or not word.isalpha() or word.lower() in self.stop_words
                        or not pieces[j]):
                    continue
                route = "single" if len(pieces[j]) == 1 else "multi"
                queries[route].append(WordQuery(words, pieces, j, self._oov in pieces[j]))
                owners[route].append((n, len(slots[n])))
                slots[n].append([j, []])
        for route, source in (("single", self.single_piece), ("multi", self.multi_piece)):
            if not queries[route]:
                continue
            answers = source(queries[route])
            if len(answers) != len(queries[route]):
                raise ValueError(f"The {route}_piece source returned {len(answers)} candidate "
                                 f"lists for {len(queries[route])} queries.")
            for (n, k), candidates in zip(owners[route], answers):
                slots[n][k][1] = [str(c) for c in candidates]
        return parsed, slots

    def _samples(self, text, spans, slots, index):
        rng = np.random.default_rng([self.seed, index])
        draws = rng.random((self.num_samples, len(slots), 2))
        out, seen = [text], {text}
        for sample in draws:
            replaced = {}
            for (j, candidates), (u, r) in zip(slots, sample):
                if candidates and u < self.replace_probability:
                    word = text[spans[j][0]:spans[j][1]]
                    replaced[j] = _match_case(candidates[int(r * len(candidates))], word)
            new = text
            for j in sorted(replaced, reverse=True):
                start, end, _ = spans[j]
                new = new[:start] + replaced[j] + new[end:]
            if self.deduplicate and new in seen:
                continue
            seen.add(new)
            out.append(new)
        return out

    def augment(self, texts, start_index=0):
        """Augment a list of texts.

        Args:
            texts: list of str (or bytes). The examples.
            start_index: int. Index of `texts[0]` in the whole dataset (seeds the generators, so
                augmenting in pieces gives the same result as all at once).

        Returns:
            A list with, per text, a list of texts: the original first, then its samples.
        """
        if isinstance(texts, (str, bytes)):
            raise ValueError("`texts` must be a list of strings; wrap a single text: [text].")
        texts = [t.decode("utf-8") if isinstance(t, bytes) else t for t in texts]
        bad = next((t for t in texts if not isinstance(t, str)), None)
        if bad is not None:
            raise ValueError(f"`texts` must hold strings, got a {type(bad).__name__}: {bad!r}.")
        _check_int(start_index, "start_index", 0)
        parsed, slots = self._slots(texts)
        return [self._samples(t, spans, s, start_index + n)
                for n, (t, spans, s) in enumerate(zip(texts, parsed, slots))]

    def _iterate(self, dataset):
        """Yields `(text, label, source index, is_augmented)` over an unbatched dataset."""
        labelled = _check_dataset(dataset)
        index = 0
        for batch in dataset.batch(self.batch_size).as_numpy_iterator():
            texts, labels = batch if labelled else (batch, None)
            for n, samples in enumerate(self.augment(list(texts), start_index=index)):
                for k, text in enumerate(samples):
                    yield text, (labels[n] if labelled else None), index + n, k > 0
            index += len(texts)

    def transform(self, dataset):
        """Augment a `tf.data.Dataset` lazily: `dataset.apply(augmenter.transform)`.

        The augmentation runs in Python (`Dataset.from_generator`) each time the result is
        iterated; for several epochs, `write` the result once, or `.cache()` it.

        Args:
            dataset: `tf.data.Dataset`. Unbatched `(text, label)` or `text` elements.

        Returns:
            An unbatched `tf.data.Dataset` of the same structure: each original example, then
            its samples, with the original's label.

        Example:
        >>> import keras_hub
        >>> vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "great", "film",
        ...          "movie"]
        >>> tokenizer = keras_hub.tokenizers.BertTokenizer(vocabulary=vocab)
        >>> table = [[0, 0]] * 5 + [[1, .1], [1, .2], [.1, 1], [.2, 1]]
        >>> neighbours = EmbeddingNeighbours(table, vocab, num_candidates=1)
        >>> augmenter = Augmenter(tokenizer, neighbours, neighbours, num_samples=4,
        ...                       replace_probability=1.0)
        >>> ds = tf.data.Dataset.from_tensor_slices((["good film"], [1]))
        >>> [(t.decode(), int(y)) for t, y in augmenter.transform(ds).as_numpy_iterator()]
        [('good film', 1), ('great movie', 1)]
        """
        labelled = _check_dataset(dataset)
        text_spec = tf.TensorSpec((), tf.string)
        signature = (text_spec, dataset.element_spec[1]) if labelled else text_spec

        def generator():
            for text, label, _, _ in self._iterate(dataset):
                yield (text, label) if labelled else text

        return tf.data.Dataset.from_generator(generator, output_signature=signature)

    def write(self, dataset, path, overwrite=False):
        """Augment a dataset once and write it as JSON Lines; read it with `load_augmented`.

        Each line is `{"text", "label", "source", "augmented"}` (`label` only for labelled
        data; `source` is the index of the original example). The file is written to a
        temporary name and renamed when complete.

        Args:
            dataset: `tf.data.Dataset`. Unbatched `(text, label)` or `text` elements.
            path: str or path-like. The `.jsonl` file to write.
            overwrite: bool. Replace an existing file.

        Returns:
            int. The number of lines written.

        Raises:
            FileExistsError: `path` exists and `overwrite` is False.

        Example:
        >>> import keras_hub
        >>> vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "great", "film"]
        >>> tokenizer = keras_hub.tokenizers.BertTokenizer(vocabulary=vocab)
        >>> neighbours = EmbeddingNeighbours(np.eye(8), vocab, num_candidates=1)
        >>> augmenter = Augmenter(tokenizer, neighbours, neighbours, num_samples=2,
        ...                       deduplicate=False)
        >>> path = os.path.join(tempfile.mkdtemp(), "train_aug.jsonl")
        >>> augmenter.write(tf.data.Dataset.from_tensor_slices((["good film"], [1])), path)
        3
        """
        path = os.fspath(path)
        if os.path.isdir(path):
            raise IsADirectoryError(f"{path} is a directory; pass a file path such as "
                                    f"{os.path.join(path, 'train_aug.jsonl')}.")
        if os.path.exists(path) and not overwrite:
            raise FileExistsError(f"{path} exists; pass overwrite=True to replace it.")
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".augment-", suffix=".jsonl")
        count = 0
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                for text, label, source, augmented in self._iterate(dataset):
                    row = {"text": text}
                    if label is not None:
                        row["label"] = _json_value(label)
                    row.update(source=int(source), augmented=bool(augmented))
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
                    count += 1
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
        return count


def _json_value(label):
    value = np.asarray(label)
    if value.dtype.kind in "SO":  # tf.string labels arrive as bytes
        return np.vectorize(lambda v: v.decode("utf-8") if isinstance(v, bytes) else str(v),
                            otypes=[object])(value).tolist()
    return value.tolist()


def _check_dataset(dataset):
    """True for `(text, label)` elements, False for `text`; clear errors otherwise."""
    if not isinstance(dataset, tf.data.Dataset):
        raise ValueError(f"Expected a tf.data.Dataset, got {type(dataset).__name__}.")
    spec = dataset.element_spec
    labelled = isinstance(spec, tuple) and len(spec) == 2
    text = spec[0] if labelled else spec
    if isinstance(text, tuple):
        raise ValueError("Text pairs ((text, text_pair), label) are not supported: augment each "
                         "segment column as its own (text, label) dataset, or keep pairs as "
                         "they are.")
    if not isinstance(text, tf.TensorSpec) or text.dtype != tf.string:
        raise ValueError(f"Expected unbatched (text, label) or text elements with string text, "
                         f"got element_spec {spec}.")
    if text.shape.rank != 0:
        raise ValueError(f"The text must be a scalar string per element, got shape {text.shape}: "
                         "call .unbatch() first.")
    if labelled and not isinstance(spec[1], tf.TensorSpec):
        raise ValueError(f"The label must be a tensor, got {spec[1]}.")
    return labelled


def load_augmented(path):
    """Read a file written by `Augmenter.write` as a `(text, label)` (or `text`) dataset.

    Args:
        path: str or path-like. The `.jsonl` file.

    Returns:
        An unbatched `tf.data.Dataset`; integer labels are int64, other numbers float32,
        strings tf.string.

    Example:
    >>> path = os.path.join(tempfile.mkdtemp(), "aug.jsonl")
    >>> with open(path, "w") as f:
    ...     _ = f.write('{"text": "good film", "label": 1, "source": 0, "augmented": false}\\n')
    >>> [(t.decode(), int(y)) for t, y in load_augmented(path).as_numpy_iterator()]
    [('good film', 1)]
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No such file: {path} (write it with Augmenter.write).")
    texts, labels = [], []
    for line_number, row, _ in iter_jsonl(path):
        if not isinstance(row.get("text"), str):
            raise ValueError(f"{path}, line {line_number}: no string 'text'; not a file written "
                             "by Augmenter.write.")
        texts.append(row["text"])
        labels.append(row.get("label"))
    if not texts:
        raise ValueError(f"{path} has no rows.")
    has_label = [label is not None for label in labels]
    if any(has_label) and not all(has_label):
        raise ValueError(f"{path}: some rows have a label and some do not.")
    if not any(has_label):
        return tf.data.Dataset.from_tensor_slices(tf.constant(texts, tf.string))
    values = np.asarray(labels)
    if np.issubdtype(values.dtype, np.integer):
        values = values.astype(np.int64)
    elif np.issubdtype(values.dtype, np.number) or values.dtype == bool:
        values = values.astype(np.float32)
    else:
        values = tf.constant(values.astype(str), tf.string)
    return tf.data.Dataset.from_tensor_slices((tf.constant(texts, tf.string), values))
