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

Both candidate sources are pluggable objects, defined in `kdistill.data.word_candidates`
(`MaskedLMCandidates`, `EmbeddingNeighbours`, or any callable taking a list of `WordQuery` and
returning a list of candidate lists; importable from here too). A teacher without an MLM head
(e.g. the packaged all-MiniLM-L6-v2 encoder) uses `EmbeddingNeighbours` on its own
token-embedding table for both kinds of words. `Augmenter.write` saves the augmented data once
as JSON Lines, and `load_augmented` reads it back.

Differences from the released code, on purpose:

* A candidate is never the original word (see `kdistill.data.word_candidates`), so a "replace"
  draw always changes the word and the replacement rate is `p`.
* Words are replaced in place in the original string: untouched words keep their spelling,
  case and spacing, and a replacement follows the case of the word it replaces (`Film` ->
  `Movie`). The released code re-joins lower-cased tokens with spaces.
* Randomness comes from a generator seeded with `(seed, example index)`: the output does not
  depend on the batch size or on other examples.

References:
    Jiao et al., "TinyBERT: Distilling BERT for Natural Language Understanding", Findings of
    EMNLP 2020, [arXiv:1909.10351](https://arxiv.org/abs/1909.10351).
"""

import json
import math
import numbers
import os
import tempfile
import unicodedata

import numpy as np
import tensorflow as tf

from kdistill.data.files import iter_jsonl
from kdistill.data.word_candidates import (
    EmbeddingNeighbours,
    MaskedLMCandidates,
    WordQuery,
    check_integer,
    wordpiece_tokenizer,
)

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

# `data.augment_samples: fill` asks for at most this many variants per example (TinyBERT's N).
FILL_MAX_SAMPLES = 20


def fill_samples(target, available, train_size, max_samples=FILL_MAX_SAMPLES):
    """Variants per training example that bring the teacher-labelled text up to `target`.

    `data.augment_samples: fill`: unlabelled in-domain text comes first; when there is less of
    it than `target` (`data.transfer_examples`), TinyBERT augmentation of the training split
    makes up the difference, at most `max_samples` variants per example. With enough unlabelled
    text, or no target (`0` or `None`: all of it), nothing is augmented.

    Args:
        target: int or None. Teacher-labelled examples wanted (`data.transfer_examples`).
        available: int. Unlabelled texts there are (after de-duplication).
        train_size: int. Labelled training examples (each gets the same number of variants).
        max_samples: int. The cap on variants per example.

    Returns:
        int. N for `Augmenter(num_samples=N)`; 0 for none.

    Example:
    >>> fill_samples(20000, 3561, 736)  # a small dataset with a little unlabelled text: capped
    20
    >>> fill_samples(20000, 18000, 736), fill_samples(20000, 25000, 10201)
    (3, 0)
    """
    if not target or train_size <= 0 or available >= target:
        return 0
    return min(int(max_samples), -(-(int(target) - int(available)) // int(train_size)))


_CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
               (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


def _check_probability(value, name):
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not math.isfinite(value) or not 0.0 <= value <= 1.0):
        raise ValueError(f"`{name}` must be a probability in [0, 1], got {value!r}.")
    return float(value)


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
        self.tokenizer = wordpiece_tokenizer(tokenizer)
        for name, source in (("single_piece", single_piece), ("multi_piece", multi_piece)):
            if not callable(source):
                raise ValueError(f"`{name}` must be a candidate source (MaskedLMCandidates, "
                                 "EmbeddingNeighbours or a callable taking a list of WordQuery), "
                                 f"got {type(source).__name__}.")
        self.single_piece = single_piece
        self.multi_piece = multi_piece
        self.num_samples = check_integer(num_samples, "num_samples", 1)
        self.replace_probability = _check_probability(replace_probability, "replace_probability")
        if isinstance(stop_words, str):
            raise ValueError("`stop_words` must be a collection of words, not one string.")
        self.stop_words = frozenset(str(w).lower() for w in stop_words)
        self.deduplicate = bool(deduplicate)
        self.seed = check_integer(seed, "seed", 0)
        self.batch_size = check_integer(batch_size, "batch_size", 1)
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
        check_integer(start_index, "start_index", 0)
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
