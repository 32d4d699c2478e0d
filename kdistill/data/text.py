"""Turn text datasets into batches of keras-hub model inputs."""

import numpy as np
import tensorflow as tf


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
