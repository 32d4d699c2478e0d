"""Turn text into keras-hub model inputs: preprocessors, tokenised batches, in-memory splits."""

import dataclasses
import os

import numpy as np
import tensorflow as tf

from kdistill.data.files import check_vocabulary


def _has_label(element_spec):
    """`(x, y)` with a numeric `y` is labelled; a string pair `(text, text_pair)` is not."""
    if not isinstance(element_spec, tuple) or len(element_spec) != 2:
        return False
    last = element_spec[1]
    return isinstance(last, tf.TensorSpec) and last.dtype != tf.string


def tokenize_dataset(dataset, preprocessor, batch_size=32, shuffle_buffer=None, seed=0,
                     drop_remainder=False, cache=False):
    """Batch a text dataset and map it through a keras-hub preprocessor.

    `(text, label)` or `((text, text_pair), label)` elements become
    `({"token_ids", "padding_mask", "segment_ids"}, label)` batches; unlabelled `text` (or
    `(text, text_pair)`) elements become the input dict alone. Tokenisation runs batched inside
    `tf.data` (`num_parallel_calls=AUTOTUNE`) and the result is prefetched.

    Args:
        dataset: `tf.data.Dataset`. Unbatched text elements as above.
        preprocessor: callable. E.g. `keras_hub.models.BertTextClassifierPreprocessor`; it is
            called as `preprocessor(x, y)` (labelled) or `preprocessor(x)`.
        batch_size: int. Examples per batch.
        shuffle_buffer: int or None. Shuffle the text before batching (reshuffled each epoch,
            seeded) with this buffer size; None keeps the order.
        seed: int. Shuffle seed.
        drop_remainder: bool. Drop the last incomplete batch.
        cache: bool. Cache the tokenised batches in memory after the first epoch (only
            sensible without shuffling).

    Returns:
        A batched `tf.data.Dataset`.

    Example:
    >>> import keras_hub
    >>> vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "film"]
    >>> preprocessor = keras_hub.models.BertTextClassifierPreprocessor(
    ...     keras_hub.tokenizers.BertTokenizer(vocabulary=vocab), sequence_length=6)
    >>> ds = tf.data.Dataset.from_tensor_slices((["good film", "film"], [1, 0]))
    >>> x, y = next(iter(tokenize_dataset(ds, preprocessor, batch_size=2)))
    >>> x["token_ids"].numpy().tolist()
    [[2, 5, 6, 3, 0, 0], [2, 6, 3, 0, 0, 0]]
    """
    labelled = _has_label(dataset.element_spec)
    if shuffle_buffer:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    if labelled:
        def fn(x, y):
            return preprocessor(x, y)
    else:
        def fn(*x):
            return preprocessor(x[0] if len(x) == 1 else tuple(x))
    dataset = dataset.map(fn, num_parallel_calls=tf.data.AUTOTUNE)
    if cache:
        dataset = dataset.cache()
    return dataset.prefetch(tf.data.AUTOTUNE)


def as_numpy(dataset):
    """Materialise an unbatched `(text, label)` dataset as Python strings and a label array.

    Args:
        dataset: `tf.data.Dataset`. Unbatched `(text, label)` (or `text`) elements.

    Returns:
        `(texts, labels)`: a list of str and an int64 NumPy array (None without labels). For
        `((text, text_pair), label)` elements `texts` is a list of `(text, text_pair)` tuples.

    Example:
    >>> ds = tf.data.Dataset.from_tensor_slices((["a", "b"], [0, 1]))
    >>> as_numpy(ds)
    (['a', 'b'], array([0, 1]))
    """
    labelled = _has_label(dataset.element_spec)
    texts, labels = [], []

    def decode(column):
        return [v.decode("utf-8") for v in column]

    for element in dataset.batch(4096).as_numpy_iterator():  # batched: far fewer Python steps
        if labelled:
            x, y = element
            labels.extend(int(v) for v in y)
        else:
            x = element
        texts.extend(zip(*map(decode, x)) if isinstance(x, tuple) else decode(x))
    return texts, (np.asarray(labels, np.int64) if labelled else None)


def make_preprocessor(vocabulary, sequence_length, lowercase=True):
    """A BERT WordPiece preprocessor from a `vocab.txt` file, or `"minilm"` (the packaged one).

    Args:
        vocabulary: str. A vocabulary file (one token per line) or `"minilm"`.
        sequence_length: int. Tokens per example (with `[CLS]` and `[SEP]`).
        lowercase: bool. Lower-case the text first.

    Returns:
        A `keras_hub.models.BertTextClassifierPreprocessor`.

    Example:
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "vocab.txt")
    >>> with open(path, "w") as f:
    ...     _ = f.write("\\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "film"]))
    >>> make_preprocessor(path, 4)(["Film"])["token_ids"].numpy().tolist()
    [[2, 5, 3, 0]]
    """
    import keras_hub

    if vocabulary == "minilm":
        from kdistill.teachers import packaged_model_dir

        vocabulary = os.path.join(packaged_model_dir(), "vocab.txt")
    check_vocabulary(vocabulary)  # an empty or wrong file is named, not a keras-hub error
    tokenizer = keras_hub.tokenizers.BertTokenizer(vocabulary=vocabulary, lowercase=lowercase)
    return keras_hub.models.BertTextClassifierPreprocessor(tokenizer,
                                                           sequence_length=sequence_length)


@dataclasses.dataclass
class Split:
    """Tokenised examples held in memory.

    Attributes:
        inputs: dict of str -> np.ndarray. `token_ids`, `padding_mask`, `segment_ids`, each
            `[examples, sequence_length]`.
        labels: np.ndarray or None. Integer class ids `[examples]`, None for unlabelled text.
        teacher: dict of str -> np.ndarray, or None. The teacher's outputs on these examples
            (e.g. `{"logits": [examples, classes]}`), carried by every batch when set.

    Example:
    >>> split = Split({"token_ids": np.zeros((3, 4), "int32")}, np.array([0, 1, 1]))
    >>> len(split), split.example()["token_ids"].shape
    (3, (1, 4))
    """

    inputs: dict
    labels: np.ndarray | None = None
    teacher: dict | None = None

    def __len__(self):
        return int(next(iter(self.inputs.values())).shape[0])

    def dataset(self, batch_size):
        """A batched, cached `tf.data.Dataset` in file order: `(inputs, labels)` or `inputs`,
        with the teacher's outputs as a last element when the split carries them."""
        elements = (self.inputs,) if self.labels is None else (self.inputs, self.labels)
        if self.teacher:
            elements += (self.teacher,)
        elements = elements if len(elements) > 1 else elements[0]
        return tf.data.Dataset.from_tensor_slices(elements).batch(batch_size).cache().prefetch(2)

    def take(self, indices):
        """The examples at `indices` (an array of positions) as a new `Split`."""
        def pick(d):
            return None if d is None else {k: v[indices] for k, v in d.items()}
        return Split(pick(self.inputs), None if self.labels is None else self.labels[indices],
                     pick(self.teacher) if self.teacher else None)

    def concatenate(self, other):
        """This split's examples followed by `other`'s (same inputs; both labelled or not).

        Example:
        >>> a = Split({"token_ids": np.zeros((2, 3), "int32")}, np.array([0, 1]))
        >>> len(a.concatenate(a)), a.concatenate(a).labels.tolist()
        (4, [0, 1, 0, 1])
        """
        if set(self.inputs) != set(other.inputs) or (self.labels is None) != (
                other.labels is None) or bool(self.teacher) != bool(other.teacher):
            raise ValueError("Cannot concatenate splits with different inputs, labels or "
                             "teacher outputs.")

        def join(a, b):
            return {k: np.concatenate([a[k], b[k]]) for k in a}

        return Split(join(self.inputs, other.inputs),
                     None if self.labels is None else np.concatenate([self.labels,
                                                                      other.labels]),
                     join(self.teacher, other.teacher) if self.teacher else None)

    def lengths(self):
        """Tokens of each example (`padding_mask` sums), `[examples]`."""
        mask = self.inputs.get("padding_mask")
        if mask is None:
            return np.full((len(self),), next(iter(self.inputs.values())).shape[1])
        return np.asarray(mask).sum(axis=1)

    def example(self, i=0):
        """One example as a batch of 1 (`{name: array [1, seq]}`)."""
        return {k: v[i:i + 1] for k, v in self.inputs.items()}


_EAGER_TOKENIZE = 2048  # examples


def tokenize(texts, preprocessor, limit=None):
    """Tokenises an unbatched text dataset (`(text, label)` or `text`) into a `Split`.

    Elements that are already token inputs (`{"token_ids": ..., ...}`, with or without a label)
    are gathered as they are.

    Args:
        texts: `tf.data.Dataset`. Elements `(text, label)`, `((text, pair), label)`, `text`, or
            token dicts (`(dict, label)` or `dict`).
        preprocessor: a keras-hub text classifier preprocessor (None for token dicts).
        limit: int or None. Keep only the first `limit` examples.

    Returns:
        A `Split`.

    Example:
    >>> import keras_hub
    >>> vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "film"]
    >>> preprocessor = keras_hub.models.BertTextClassifierPreprocessor(
    ...     keras_hub.tokenizers.BertTokenizer(vocabulary=vocab), sequence_length=6)
    >>> split = tokenize(tf.data.Dataset.from_tensor_slices((["good film", "film"], [1, 0])),
    ...                  preprocessor)
    >>> len(split), split.inputs["token_ids"][0].tolist(), split.labels.tolist()
    (2, [2, 5, 6, 3, 0, 0], [1, 0])
    """
    if limit is not None:
        texts = texts.take(limit)
    spec = texts.element_spec
    if isinstance(spec, dict) or (isinstance(spec, tuple) and isinstance(spec[0], dict)):
        chunks = list(texts.batch(4096).as_numpy_iterator())  # already token inputs
    elif preprocessor is None:
        raise ValueError("The examples are text but there is no tokenizer: set data.vocabulary "
                         "(the teacher's vocab.txt, or minilm).")
    elif 0 <= int(texts.cardinality()) <= _EAGER_TOKENIZE:
        # Small data: calling the preprocessor eagerly beats tracing it inside tf.data (~2 s).
        labelled = isinstance(texts.element_spec, tuple) and texts.element_spec[-1].dtype != (
            tf.string)
        chunks = [(preprocessor(b[0]), b[1]) if labelled else preprocessor(b)
                  for b in texts.batch(512)]
        chunks = tf.nest.map_structure(lambda t: t.numpy(), chunks)
    else:
        chunks = list(tokenize_dataset(texts, preprocessor, batch_size=512).as_numpy_iterator())
    if not chunks:
        raise ValueError("No examples to tokenise (an empty split or file).")
    labelled = isinstance(chunks[0], tuple)
    xs = [c[0] for c in chunks] if labelled else chunks
    inputs = {k: np.concatenate([x[k] for x in xs]) for k in xs[0]}
    labels = np.concatenate([c[1] for c in chunks]) if labelled else None
    return Split(inputs, labels)
