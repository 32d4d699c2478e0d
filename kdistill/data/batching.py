"""Batches for training: trimmed padding, batches of similar length, restartable epoch orders.

Rotten Tomatoes snippets average ~25 tokens, so at sequence length 64 most of a random batch is
padding. Both models mask padding, so cutting it changes no result and roughly halves the cost of
a step; grouping examples of similar length into a batch halves it again. Everything here keeps
the number of batches of an epoch known in advance (progress bars, learning-rate schedules) and,
for `training_dataset`, the batches a function of the seed and the epoch only, so a run killed
mid-epoch restarts on exactly the batches it would have seen.
"""

import math

import numpy as np
import tensorflow as tf


def trim_padding(dataset, multiple=16):
    """Cuts each batch's trailing all-padding columns, rounding its length up to `multiple`.

    The sequence dimension becomes dynamic (`fit` traces once per length).

    Args:
        dataset: batched `(inputs, ...)` or `inputs` with a keras-hub `padding_mask`.
        multiple: int. Lengths are rounded up to a multiple of this.

    Returns:
        The mapped `tf.data.Dataset`.

    Example:
    >>> from kdistill import testing
    >>> x, y = testing.token_batch(batch_size=4, sequence_length=64, min_length=3)
    >>> x["padding_mask"][:, 20:] = False  # every example is at most 20 tokens long
    >>> ds = trim_padding(tf.data.Dataset.from_tensor_slices((x, y)).batch(4))
    >>> next(iter(ds))[0]["token_ids"].shape
    TensorShape([4, 32])
    """

    def trim(x, *rest):
        used = tf.reduce_max(tf.reduce_sum(tf.cast(x["padding_mask"], tf.int32), axis=1))
        length = tf.minimum((used + multiple - 1) // multiple * multiple,
                            tf.shape(x["padding_mask"])[1])
        x = {k: v[:, :length] for k, v in x.items()}
        return (x, *rest) if rest else x

    return dataset.map(trim, num_parallel_calls=tf.data.AUTOTUNE)


def bucket_by_length(dataset, batch_size, boundaries=(16, 24, 32, 40, 48)):
    """Re-batches tokenised examples so each batch holds similar lengths, trimmed to its longest.

    Use it where the order does not matter (a teacher pass over a corpus) or after shuffling.

    Args:
        dataset: batched `(inputs, labels)` or `inputs` with a keras-hub `padding_mask`.
        batch_size: int. Examples per batch.
        boundaries: lengths (in tokens) between buckets.

    Returns:
        A batched `tf.data.Dataset`.

    Example:
    >>> from kdistill import testing
    >>> x, y = testing.token_batch(batch_size=8, sequence_length=64, min_length=3)
    >>> x["padding_mask"][:] = False
    >>> x["padding_mask"][:4, :10] = True  # four short examples, four long ones
    >>> x["padding_mask"][4:, :40] = True
    >>> ds = bucket_by_length(tf.data.Dataset.from_tensor_slices((x, y)).batch(8), 4)
    >>> sorted(int(b[0]["token_ids"].shape[1]) for b in ds)
    [16, 40]
    """

    def length(x, *rest):
        return tf.reduce_sum(tf.cast(x["padding_mask"], tf.int32))

    bucketed = dataset.unbatch().bucket_by_sequence_length(
        length, bucket_boundaries=list(boundaries),
        bucket_batch_sizes=[batch_size] * (len(boundaries) + 1))
    return trim_padding(bucketed, multiple=8)


def grouped_by_length(dataset, batch_size):
    """`bucket_by_length` with its number of batches counted once and asserted.

    The count does not depend on the shuffling (each length bucket yields
    `ceil(examples / batch_size)` batches every epoch), so `fit` gets a progress bar and a
    learning-rate schedule its exact number of steps. Counting reads the dataset once.

    Raises:
        ValueError: the dataset yields no batch.

    Example:
    >>> from kdistill import testing
    >>> x, y = testing.token_batch(batch_size=8, sequence_length=64, min_length=3)
    >>> ds = grouped_by_length(tf.data.Dataset.from_tensor_slices((x, y)).batch(8), 4)
    >>> int(ds.cardinality()) == sum(1 for _ in ds)
    True
    """
    grouped = bucket_by_length(dataset, batch_size)
    count = int(grouped.reduce(tf.constant(0, tf.int64), lambda n, *_: n + 1))
    if count == 0:
        raise ValueError("The training dataset is empty: no batch to train on.")
    return grouped.apply(tf.data.experimental.assert_cardinality(count))


def epoch_batches(lengths, batch_size, seed, epoch, group_by_length=False, window=50):
    """The batches (arrays of example indices) of one epoch: a function of `seed` and `epoch`.

    The examples are visited in the order `np.random.default_rng([seed, epoch]).permutation`.
    With `group_by_length` that order is cut into windows of `window` batches, each window is
    sorted by length (so a batch holds examples of similar length), and the batches are then
    shuffled: every epoch still sees every example once, in random company, and the number of
    batches is `ceil(examples / batch_size)` either way.

    Args:
        lengths: np.ndarray `[examples]`. Tokens of each example (used when grouping).
        batch_size: int.
        seed: int.
        epoch: int.
        group_by_length: bool.
        window: int. Batches per sorted window.

    Returns:
        list of np.ndarray.

    Example:
    >>> lengths = np.array([5, 30, 6, 31, 7, 32, 8, 33])
    >>> batches = epoch_batches(lengths, 2, seed=0, epoch=0, group_by_length=True)
    >>> len(batches), sorted(int(lengths[b].max() - lengths[b].min()) for b in batches)
    (4, [1, 1, 1, 1])
    >>> sorted(np.concatenate(batches).tolist()) == list(range(8))
    True
    """
    n = len(lengths)
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(n)
    if not group_by_length:
        return [order[i:i + batch_size] for i in range(0, n, batch_size)]
    chunk = window * batch_size
    batches = []
    for start in range(0, n, chunk):
        part = order[start:start + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def training_dataset(split, batch_size, epochs, seed, start=0, stop=None, trim=True,
                     group_by_length=False):
    """The batches of `epochs` passes over `split`, from global step `start` to `stop`.

    Epoch `e`'s batches are `epoch_batches(lengths, batch_size, seed, e, group_by_length)`, a
    function of the seed and the epoch only, so the stream can be restarted at any step
    (`start`) and yields exactly the batches an uninterrupted pass would have yielded from there.
    When the split carries teacher outputs (`split.teacher`, e.g. cached logits), each batch
    carries them as its last element (`(x, y, {"logits": ...})`), as `kdistill.Distiller`
    expects from a teacher cache.

    Args:
        split: `kdistill.data.Split`. With labels: `(inputs, labels)` batches; without: `inputs`.
        batch_size: int. Global batch size.
        epochs: int. Number of passes.
        seed: int. Seed of the order.
        start: int. First global step (batch index over all epochs).
        stop: int or None. One past the last global step (default: the end).
        trim: bool. Cut each batch's trailing all-padding columns (`trim_padding`).
        group_by_length: bool. Batches of similar length (see `epoch_batches`).

    Returns:
        `(dataset, steps_per_epoch)`.

    Example:
    >>> from kdistill.data import Split
    >>> split = Split({"token_ids": np.arange(10).reshape(5, 2)}, np.arange(5, dtype="int32"))
    >>> ds, steps = training_dataset(split, 2, epochs=2, seed=0, trim=False)
    >>> batches = [y.tolist() for _, y in ds.as_numpy_iterator()]
    >>> steps, sorted(len(b) for b in batches), sorted(sum(batches[:3], []))
    (3, [1, 1, 2, 2, 2, 2], [0, 1, 2, 3, 4])
    >>> tail, _ = training_dataset(split, 2, epochs=2, seed=0, start=4, trim=False)
    >>> [y.tolist() for _, y in tail.as_numpy_iterator()] == batches[4:]
    True
    """
    n = len(split)
    if n == 0:
        raise ValueError("The training split is empty: no batch to train on.")
    steps = math.ceil(n / batch_size)
    mask = split.inputs.get("padding_mask")
    lengths = (np.asarray(mask).sum(axis=1) if mask is not None
               else np.zeros((n,), "int64"))
    table = np.zeros((epochs * steps, batch_size), "int32")
    sizes = np.zeros((epochs * steps,), "int32")
    for epoch in range(epochs):
        for b, chunk in enumerate(epoch_batches(lengths, batch_size, seed, epoch,
                                                group_by_length and mask is not None)):
            table[epoch * steps + b, :len(chunk)] = chunk
            sizes[epoch * steps + b] = len(chunk)
    stop = epochs * steps if stop is None else stop
    inputs = {k: tf.constant(v) for k, v in split.inputs.items()}
    labels = None if split.labels is None else tf.constant(split.labels)
    teacher = None if not split.teacher else {k: tf.constant(v) for k, v in split.teacher.items()}

    def gather(index, size):
        index = index[:size]
        x = {k: tf.gather(v, index) for k, v in inputs.items()}
        element = (x,) if labels is None else (x, tf.gather(labels, index))
        if teacher is not None:
            element += ({k: tf.gather(v, index) for k, v in teacher.items()},)
        return element if len(element) > 1 else element[0]

    dataset = tf.data.Dataset.from_tensor_slices((table[start:stop], sizes[start:stop]))
    dataset = dataset.map(gather)
    if trim and mask is not None:
        dataset = trim_padding(dataset, multiple=8 if group_by_length else 16)
    return dataset.prefetch(2), steps
