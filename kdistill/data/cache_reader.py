"""Reading a teacher cache: `load_teacher_cache` streams it as batches for `kdistill.Distiller`.

The batches are `(inputs, labels, teacher_targets)`, which `kdistill.Distiller(teacher=None,
...)` (or `teacher=CachedTeacher(directory)`) trains on with no teacher forward at all. A stale
or damaged cache is refused with an error that names what differs; a shard found damaged only
while reading (TF's `DataLossError`, no file named) is named by `explain_read_error`. The files
are those of `kdistill.data.cache_format`, written by
`kdistill.data.teacher_cache.cache_teacher_outputs` (or another writer, e.g. `kdistill.beam`).
"""

import gc
import os
import re
import weakref

import tensorflow as tf

from kdistill.data.cache_format import (
    MANIFEST,
    REBUILD_HINT,
    check_shards,
    read_manifest,
    record_decoder,
)
from kdistill.data.fingerprints import teacher_fingerprint


def _check_fresh(directory, manifest, teacher, expected_fingerprint):
    if teacher is not None:
        cached = manifest["teacher"].get("fingerprint")
        current = teacher_fingerprint(teacher)
        if cached != current:
            raise ValueError(
                f"Stale teacher cache in {directory}: it was written by teacher "
                f"{manifest['teacher'].get('name')!r} ({manifest['teacher'].get('class')}) with "
                f"fingerprint {str(cached)[:12]}, but the given teacher {teacher.name!r} has "
                f"{current[:12]}: its weights or config changed. {REBUILD_HINT}"
            )
    if expected_fingerprint is not None and manifest["data_fingerprint"] != expected_fingerprint:
        raise ValueError(
            f"Stale teacher cache in {directory}: it was made from data with fingerprint "
            f"{manifest['data_fingerprint'][:12]}, expected {expected_fingerprint[:12]}: the "
            "examples differ. Rebuild the cache from the current data with overwrite=True."
        )


# Checked before training instead of after a read error (named in the read errors' messages).
CHECKSUM_HINT = ("Pass verify_checksums=True to load_teacher_cache to check every shard before "
                 "training.")

# `(directory, weak reference to the dataset)` of each `load_teacher_cache` call in this process,
# oldest first: a read error in `fit` names no file, so `explain_read_error` looks for the damaged
# cache among those whose datasets are still in use.
_STREAMED = []

# The TF errors a damaged cache gives when read: a corrupt record, a wrong record count.
READ_ERRORS = (tf.errors.DataLossError, tf.errors.FailedPreconditionError)


class CacheReadError(ValueError):
    """A damaged teacher cache, named: its directory, the shard, and how to rebuild it.

    Raised instead of TF's `DataLossError` ("corrupted record at 12", no file named) or
    `FailedPreconditionError` (a wrong record count) when a cache's batches are read.

    Attributes:
        directory: str. The cache directory.
        shard: str or None. The damaged file, relative to `directory`: a shard, or the
            manifest when its counts are wrong; None when none was found damaged.

    Example:
    >>> error = CacheReadError("cache", "shard-00000.tfrecord", "shard-00000.tfrecord is damaged.")
    >>> error.shard, isinstance(error, ValueError)
    ('shard-00000.tfrecord', True)
    """

    def __init__(self, directory, shard, message):
        self.directory, self.shard = directory, shard
        super().__init__(message)


def diagnose_read_error(directory, error):
    """A `CacheReadError` naming the damaged shard of a cache whose reading failed with `error`.

    TF reports a corrupt record (`tf.errors.DataLossError`, "corrupted record at 12") or a
    wrong example count (`tf.errors.FailedPreconditionError`) without naming a file; this
    checks each shard's sha256 and records and says which one is damaged, how to rebuild, and
    that `verify_checksums=True` finds it before training. `load_teacher_cache` checks shard
    sizes and counts up front; a flipped byte is only found when reading, or up front with
    `verify_checksums=True`.

    Args:
        directory: str. The cache directory.
        error: the exception raised while reading its batches.

    Returns:
        CacheReadError (a `ValueError`). Raise it `from error`. Its `shard` is None when every
        shard matches the manifest (the error came from elsewhere).

    Example:
    >>> import tempfile
    >>> from kdistill import testing
    >>> from kdistill.data.teacher_cache import cache_teacher_outputs
    >>> directory = tempfile.mkdtemp() + "/cache"
    >>> _ = cache_teacher_outputs(testing.tiny_bert_classifier(),
    ...                           testing.token_dataset(num_examples=4, batch_size=4), directory)
    >>> shard = os.path.join(directory, "shard-00000.tfrecord")
    >>> data = bytearray(open(shard, "rb").read()); data[40] ^= 1
    >>> _ = open(shard, "wb").write(bytes(data))
    >>> try:
    ...     _ = list(load_teacher_cache(directory, batch_size=2))
    ... except tf.errors.DataLossError as e:
    ...     print(diagnose_read_error(directory, e))  # doctest: +ELLIPSIS
    The cache in ... is damaged: shard shard-00000.tfrecord does not match its sha256 ...
    """
    manifest = read_manifest(directory)
    try:
        check_shards(directory, manifest, verify_checksums=True)
    except ValueError as damaged:
        shard = next((s["path"] for s in manifest["shards"] if f" {s['path']} " in str(damaged)),
                     MANIFEST)
        return CacheReadError(directory, shard, f"{damaged} {CHECKSUM_HINT}")
    for shard in manifest["shards"]:
        path = os.path.join(directory, shard["path"])
        try:
            count = sum(1 for _ in tf.data.TFRecordDataset(path))
        except tf.errors.DataLossError:
            return CacheReadError(directory, shard["path"],
                                  f"The cache in {directory} is damaged: shard {shard['path']} "
                                  f"has a corrupt record. {REBUILD_HINT} {CHECKSUM_HINT}")
        if shard.get("num_examples") is not None and count != shard["num_examples"]:
            return CacheReadError(
                directory, shard["path"],
                f"The cache in {directory} is inconsistent: shard {shard['path']} holds {count} "
                f"records, its manifest says {shard['num_examples']}. {REBUILD_HINT}")
    return CacheReadError(directory, None,
                          f"Reading the cache in {directory} failed ({type(error).__name__}: "
                          f"{str(error).strip()[:200]}) although its shards match the manifest.")


def explain_read_error(error):
    """The `CacheReadError` behind a TF read error, among the caches streamed in this process.

    `fit` on `load_teacher_cache` batches that meet a damaged shard fails with TF's
    `DataLossError`, which names no file; this looks for the damaged cache among those whose
    `load_teacher_cache` datasets are still in use (most recent first), checks that its damage
    gives this very error (the offset of the corrupt record, or the expected example count),
    and names the shard. Costs nothing until an error: it reads the caches only then.

    Args:
        error: an exception raised while reading batches.

    Returns:
        A `CacheReadError` naming the damaged shard, or None (not a read error, or no cache in
        use is damaged that way: the error came from other data).

    Example:
    >>> import tempfile
    >>> from kdistill import testing
    >>> from kdistill.data.teacher_cache import cache_teacher_outputs
    >>> directory = tempfile.mkdtemp() + "/cache"
    >>> _ = cache_teacher_outputs(testing.tiny_bert_classifier(),
    ...                           testing.token_dataset(num_examples=4, batch_size=4), directory)
    >>> batches = load_teacher_cache(directory, batch_size=2)
    >>> shard = os.path.join(directory, "shard-00000.tfrecord")
    >>> data = bytearray(open(shard, "rb").read()); data[40] ^= 1
    >>> _ = open(shard, "wb").write(bytes(data))
    >>> try:
    ...     _ = list(batches)
    ... except tf.errors.DataLossError as e:
    ...     print(explain_read_error(e).shard)
    shard-00000.tfrecord
    >>> explain_read_error(KeyError("x")) is None
    True
    """
    if not isinstance(error, READ_ERRORS):
        return None
    gc.collect()  # datasets no longer in use are not suspects
    for directory in dict.fromkeys(d for d, dataset in reversed(_STREAMED) if dataset()):
        try:
            diagnosis = diagnose_read_error(directory, error)
            if diagnosis.shard is not None and _fails_alike(directory, diagnosis.shard, error):
                return diagnosis
        except (OSError, ValueError):  # the cache has gone or was replaced meanwhile
            continue
    return None


def _corrupt_offset(error):
    found = re.search(r"corrupted record at (\d+)", str(error))
    return None if found is None else int(found.group(1))


def _fails_alike(directory, shard, error):
    """Whether reading `shard` fails as `error` did (the same corrupt offset or example count)."""
    if isinstance(error, tf.errors.FailedPreconditionError):
        expected = read_manifest(directory)["num_examples"]
        return f"expected to contain {expected} elements" in str(error)
    if shard == MANIFEST:
        return False
    try:
        for _ in tf.data.TFRecordDataset(os.path.join(directory, shard)):
            pass
    except tf.errors.DataLossError as again:
        return _corrupt_offset(again) == _corrupt_offset(error)
    return False


def _note_streamed(directory, dataset):
    _STREAMED[:] = [entry for entry in _STREAMED if entry[1]() is not None]
    _STREAMED.append((directory, weakref.ref(dataset)))


def _padded_shapes(element_spec, sequence_length):
    def shape(spec):
        dims = [sequence_length if d is None else d for d in spec.shape.as_list()]
        return tf.TensorShape(dims)

    return tf.nest.map_structure(shape, element_spec)


def _no_autotune():
    # tf.data's autotuning thread (TF 2.21) is not woken when an iterator is destroyed: every
    # `fit` epoch (a new iterator) then ends by waiting for its next wake-up, which comes at
    # 10 ms * (2^k - 1) after the iterator was made (2.55 s, 5.1 s, 10.2 s, 20.5 s, 41 s, ...).
    # Without it, `num_parallel_calls=AUTOTUNE` means one call per core.
    options = tf.data.Options()
    options.autotune.enabled = False
    return options


_NO_AUTOTUNE = _no_autotune()


def load_teacher_cache(directory, batch_size, teacher=None, expected_fingerprint=None,
                       shuffle_seed=None, shuffle_buffer=10_000, sequence_length=None,
                       drop_remainder=False, taps=None, verify_checksums=False):
    """Streams a teacher cache as batches for `kdistill.Distiller` (no teacher needed).

    Elements are `(inputs, labels, teacher_targets)` (`(inputs, labels, sample_weight,
    teacher_targets)` when sample weights were cached, `(inputs, teacher_targets)` for
    unlabelled data), with `teacher_targets` a dict `{tap: tensor or tuple of per-layer
    tensors}` batched like the live teacher's taps (floats as float32). Sequences are padded per
    batch to the batch's longest example (or to `sequence_length`), with zeros.

    The cache is refused with a `ValueError` naming what differs when it is stale or damaged: a
    format version this kdistill does not read, a `teacher` whose fingerprint (config and
    weights) differs from the one that wrote it, a data fingerprint other than
    `expected_fingerprint`, a missing shard, a shard whose size (or, with
    `verify_checksums`, sha256) differs from the manifest, or shard example counts that do not
    add up to the manifest's. A flipped byte inside a shard (same size) is found only with
    `verify_checksums=True`, or when reading fails with TF's `DataLossError`:
    `kdistill.Distiller`'s `fit` then raises a `CacheReadError` naming the shard (in your own
    loop, `explain_read_error(error)` or `diagnose_read_error(directory, error)` gives it).

    Args:
        directory: str. A directory written by `cache_teacher_outputs` (or `write_manifest`).
        batch_size: int. Examples per batch.
        teacher: keras.Model or None. If given, must be the teacher that wrote the cache.
        expected_fingerprint: str or None. If given, must equal the manifest's data fingerprint
            (e.g. `dataset_fingerprint(current_dataset)`).
        shuffle_seed: int or None. None reads in the written order; an int shuffles the shards
            and the examples (buffer of `shuffle_buffer` records, reshuffled every epoch,
            deterministic for a given seed).
        shuffle_buffer: int. Records held for shuffling (serialized, so memory is about
            `shuffle_buffer * bytes_per_example`).
        sequence_length: int or None. Pad sequences to this fixed length (static shapes for XLA
            and TPUs) instead of the batch's longest example.
        drop_remainder: bool. Drop the last incomplete batch.
        taps: iterable of str or None. Read only these cached taps (default: all).
        verify_checksums: bool. Also check each shard's sha256 (reads the whole cache once).

    Returns:
        A batched `tf.data.Dataset` with known cardinality. Parsing runs one call per core and
        two batches are prefetched; tf.data autotuning is off (see benchmarks/README.md: with
        it, TF 2.21 makes every epoch end with a wait of up to its tuning period).

    Example:
    >>> import tempfile
    >>> from kdistill import testing
    >>> from kdistill.data.teacher_cache import cache_teacher_outputs
    >>> teacher = testing.tiny_bert_classifier()
    >>> directory = tempfile.mkdtemp() + "/cache"
    >>> _ = cache_teacher_outputs(teacher, testing.token_dataset(num_examples=8, batch_size=4),
    ...                           directory, taps=["logits", "hidden_states"])
    >>> x, y, targets = next(iter(load_teacher_cache(directory, batch_size=8, teacher=teacher)))
    >>> len(targets["hidden_states"]), targets["logits"].shape
    (2, TensorShape([8, 3]))
    """
    manifest = read_manifest(directory)
    batch_size = int(batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    cached = manifest["taps"]
    taps = list(cached if taps is None else dict.fromkeys(taps))
    missing = [t for t in taps if t not in cached]
    if missing:
        raise ValueError(f"The cache in {directory} holds taps {cached}, not {missing}.")
    max_length = manifest.get("max_length")
    if sequence_length is not None and max_length and sequence_length < max_length:
        raise ValueError(
            f"sequence_length={sequence_length} is shorter than the longest cached example "
            f"({max_length} tokens); use at least {max_length}."
        )
    _check_fresh(directory, manifest, teacher, expected_fingerprint)
    files = check_shards(directory, manifest, verify_checksums)

    decode = record_decoder(manifest["features"], taps)
    has_labels, has_weights = "y" in manifest["features"], "sample_weight" in manifest["features"]

    def element(record):
        inputs, labels, weights, targets = decode(record)
        if has_labels and has_weights:
            return inputs, labels, weights, targets
        if has_labels:
            return inputs, labels, targets
        return inputs, targets

    if shuffle_seed is None:
        records = tf.data.TFRecordDataset(files)
    else:
        records = tf.data.Dataset.from_tensor_slices(files).shuffle(
            len(files), seed=shuffle_seed, reshuffle_each_iteration=True)
        records = records.flat_map(tf.data.TFRecordDataset)
        records = records.shuffle(int(shuffle_buffer), seed=shuffle_seed,
                                  reshuffle_each_iteration=True)
    records = records.apply(tf.data.experimental.assert_cardinality(manifest["num_examples"]))
    examples = records.map(element, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    padded = None
    if sequence_length is not None:
        padded = _padded_shapes(examples.element_spec, int(sequence_length))
    batches = examples.padded_batch(batch_size, padded_shapes=padded,
                                    drop_remainder=drop_remainder)
    batches = batches.prefetch(2).with_options(_NO_AUTOTUNE)
    _note_streamed(os.path.abspath(directory), batches)
    return batches
