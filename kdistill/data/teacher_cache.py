"""Teacher output cache: run the teacher once, stream its targets back for every epoch.

`cache_teacher_outputs` runs a frozen teacher over a batched dataset and writes, per example, the
model inputs, the labels (and sample weights) and the teacher's taps (`logits`, `embeddings`,
`hidden_states`, `attention_scores`, `attention_values`) to sharded TFRecord files, with a JSON
manifest. `load_teacher_cache` streams them back as `(inputs, labels, teacher_targets)` batches
that `kdistill.Distiller(teacher=None, ...)` (or `teacher=CachedTeacher(directory)`) trains on
with no teacher forward at all.

This module writes caches; the other parts of the cache live in their own modules and are
importable from here too:

- `kdistill.data.cache_format`: the file format (records, `encode_teacher_example`,
  `describe_teacher_example`, the manifest: `write_manifest`, `read_manifest`), public so other
  writers (e.g. the Apache Beam pipeline of `kdistill.beam`) produce the same caches;
- `kdistill.data.fingerprints`: `DataFingerprint`, `dataset_fingerprint`, `teacher_fingerprint`
  (what a cache was made from);
- `kdistill.data.cache_reader`: `load_teacher_cache`.
"""

import os
import uuid

import tensorflow as tf

from kdistill.data.cache_format import (
    FLOAT_DTYPES,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    PER_LAYER_TAPS,
    SEQUENCE_AXES,
    SEQUENCE_INPUTS,
    TOP_K_FILL,
    CacheRecord,
    describe_teacher_example,
    encode_teacher_example,
    read_manifest,
    split_examples,
    unpack_batch,
    write_manifest,
)
from kdistill.data.cache_reader import load_teacher_cache
from kdistill.data.fingerprints import DataFingerprint, dataset_fingerprint, teacher_fingerprint
from kdistill.taps import LOGITS, TAP_NAMES, build_taps

# Defined here; then, importable from here as before the split, the cache's other parts.
__all__ = ["cache_teacher_outputs", "check_cache_directory", "teacher_metadata",
           "FORMAT", "FORMAT_VERSION", "MANIFEST", "PER_LAYER_TAPS", "SEQUENCE_AXES",
           "SEQUENCE_INPUTS", "TOP_K_FILL", "DataFingerprint", "dataset_fingerprint",
           "describe_teacher_example", "encode_teacher_example", "load_teacher_cache",
           "read_manifest", "teacher_fingerprint", "write_manifest"]


def teacher_metadata(taps):
    """The `teacher` entry of a manifest from a `kdistill.taps.Taps` of the live teacher.

    Records what objectives need to build without the teacher: tap shapes (batch and token axes
    as None), number of layers and heads, and the teacher's fingerprint.

    Example:
    >>> from kdistill import testing
    >>> meta = teacher_metadata(build_taps(testing.tiny_mlp(), ["logits"]))
    >>> meta["output_shapes"]
    {'logits': [None, 3]}
    """
    def to_list(shape):
        return None if shape is None else [None if d is None else int(d) for d in shape]

    shapes = {}
    for tap, shape in taps.output_shapes().items():
        if isinstance(shape, (list, tuple)) and shape and isinstance(shape[0], (list, tuple)):
            shapes[tap] = [to_list(s) for s in shape]
        else:
            shapes[tap] = to_list(shape)
    return {
        "fingerprint": teacher_fingerprint(taps.model),
        "name": taps.model.name,
        "class": type(taps.model).__name__,
        "num_layers": taps.num_layers,
        "num_heads": taps.num_heads,
        "output_shapes": shapes,
    }


def check_cache_directory(directory, overwrite=False):
    """Checks that a teacher cache may be written to `directory`, before any work is done.

    A missing or empty directory is fine; an existing cache only with `overwrite=True`; anything
    else (a file, a non-empty directory without a manifest) never. `cache_teacher_outputs` calls
    it first, and so should other writers of caches (the Beam pipeline of `kdistill.beam`).

    Args:
        directory: str. The cache directory to be written.
        overwrite: bool. Whether an existing cache there may be replaced.

    Raises:
        FileExistsError: naming why the directory cannot be used.

    Example:
    >>> import tempfile
    >>> directory = tempfile.mkdtemp()
    >>> check_cache_directory(directory)  # empty: fine
    >>> open(os.path.join(directory, "notes.txt"), "w").close()
    >>> check_cache_directory(directory, overwrite=True)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileExistsError: ... is not empty and is not a teacher cache (no manifest.json); ...
    """
    if not tf.io.gfile.exists(directory):
        return
    if not tf.io.gfile.isdir(directory):
        raise FileExistsError(f"{directory} exists and is a file; choose another directory.")
    if not tf.io.gfile.listdir(directory):
        return
    if not overwrite:
        raise FileExistsError(
            f"{directory} exists and is not empty; pass overwrite=True to replace a teacher "
            "cache there, or choose another directory."
        )
    if not tf.io.gfile.exists(os.path.join(directory, MANIFEST)):
        raise FileExistsError(
            f"{directory} is not empty and is not a teacher cache (no {MANIFEST}); overwrite=True "
            "only replaces caches. Remove it yourself or choose another directory."
        )


def _move_into_place(tmp, directory, overwrite):
    check_cache_directory(directory, overwrite)
    old = None
    if tf.io.gfile.exists(directory):
        if tf.io.gfile.listdir(directory):
            old = f"{directory}.old-{uuid.uuid4().hex[:8]}"
            tf.io.gfile.rename(directory, old)
        else:
            tf.io.gfile.rmtree(directory)
    tf.io.gfile.rename(tmp, directory)
    if old is not None:
        tf.io.gfile.rmtree(old)


def _teacher_step(taps):
    @tf.function(reduce_retracing=True)
    def step(x):
        return taps(x, training=False)

    return step


class _ShardWriter:
    """Writes records to TFRecord shards of `per_shard` examples; keeps what the manifest needs."""

    def __init__(self, directory, per_shard):
        self.directory, self.per_shard = directory, per_shard
        self.shards, self.features, self.count, self.max_length = [], None, 0, 0
        self.fingerprint = DataFingerprint()
        self._file, self._in_shard = None, 0

    def write(self, record):
        """Appends one `CacheRecord`, in a new shard when the last one is full."""
        if self.features is None:
            self.features = record.features
        self.max_length = max(self.max_length, record.length or 0)
        self.fingerprint.add(record.input_arrays())
        if self._file is None:
            name = f"shard-{len(self.shards):05d}.tfrecord"
            self._file = tf.io.TFRecordWriter(os.path.join(self.directory, name))
            self.shards.append({"path": name, "num_examples": 0})
        self._file.write(record.serialize())
        self.count += 1
        self._in_shard += 1
        self.shards[-1]["num_examples"] = self._in_shard
        if self._in_shard == self.per_shard:
            self.close()

    def close(self):
        if self._file is not None:
            self._file.close()
            self._file, self._in_shard = None, 0


def _check_arguments(teacher, taps, top_k, dtype, examples_per_shard):
    """Checks `cache_teacher_outputs`' arguments before any work; returns the taps, deduplicated."""
    taps = list(dict.fromkeys(taps))
    if not taps:
        raise ValueError("taps is empty: name at least one teacher tap, e.g. ('logits',).")
    unknown = [t for t in taps if t not in TAP_NAMES]
    if unknown:
        raise ValueError(f"Unknown tap(s) {unknown}; valid taps are {list(TAP_NAMES)}.")
    if top_k is not None and (int(top_k) != top_k or top_k < 1):
        raise ValueError(f"top_k must be a positive integer or None, got {top_k!r}.")
    if top_k is not None and LOGITS not in taps:
        raise ValueError("top_k applies to the logits, but 'logits' is not among taps.")
    if dtype not in FLOAT_DTYPES:
        raise ValueError(f"dtype must be one of {FLOAT_DTYPES}, got {dtype!r}.")
    if int(examples_per_shard) < 1:
        raise ValueError(f"examples_per_shard must be >= 1, got {examples_per_shard}.")
    if not getattr(teacher, "built", False):
        raise ValueError("The teacher is not built: call it once on a batch of inputs first.")
    return taps


def _temporary_directory(directory):
    """A new directory next to `directory`, renamed into place when the cache is complete."""
    parent = os.path.dirname(directory.rstrip("/"))
    if parent:
        tf.io.gfile.makedirs(parent)
    tmp = f"{directory.rstrip('/')}.tmp-{uuid.uuid4().hex[:8]}"
    tf.io.gfile.makedirs(tmp)
    return tmp


def cache_teacher_outputs(teacher, dataset, directory, taps=(LOGITS,), top_k=None,
                          dtype="float16", examples_per_shard=4096, overwrite=False,
                          layer_names=None, data_fingerprint=None):
    """Runs the teacher once over a dataset and writes its outputs to a sharded TFRecord cache.

    Each record holds one example's model inputs, labels (and sample weights) and the teacher's
    taps, so the cache alone is a training set for `load_teacher_cache`. Sequence inputs and
    taps are cut to the example's unpadded length. The files are written to a temporary
    directory next to `directory` and renamed into place at the end, so an interrupted run
    leaves no half-written cache.

    With `top_k`, only the k largest logits of each example (or position, for token-level
    logits) are kept; `load_teacher_cache` rebuilds logits with `TOP_K_FILL` (-1e9) elsewhere,
    so `softmax(t / T)` is the teacher's distribution **renormalised over its top k classes**,
    at every temperature `T`. The KD term is then `T² · KL(p̃_t ‖ p_s)` with
    `p̃_t(c) = exp(t_c/T) / Σ_{j∈topk} exp(t_j/T)` for `c` in the top k and 0 elsewhere: the
    student's log-probabilities of the kept classes are pulled towards the teacher's relative
    ones; classes outside the top k get no direct target (only through the normalisation of
    `p_s`). It equals full KD when the other classes carry negligible mass.

    Args:
        teacher: keras.Model. The trained teacher (run with `training=False`).
        dataset: `tf.data.Dataset` of batched `(inputs, labels)`, `(inputs, labels,
            sample_weight)` or `inputs`; keras-hub style dict inputs with a `padding_mask` get
            their trailing padding cut.
        directory: str. Output directory; must not exist or be empty, unless `overwrite`.
        taps: iterable of str. Teacher taps to store (`kdistill.taps.TAP_NAMES`).
        top_k: int or None. Keep only the k largest logits.
        dtype: str. `"float16"` (default) or `"float32"` storage of floating-point arrays.
            float16 halves disk use; keep float32 for bit-exact reproduction of live-teacher
            training.
        examples_per_shard: int. Records per TFRecord file.
        overwrite: bool. Replace an existing cache in `directory` (only a kdistill cache).
        layer_names: dict. For non-keras-hub functional teachers (see `kdistill.taps.Taps`).
        data_fingerprint: str or None. Identity of the data recorded in the manifest; default
            the `DataFingerprint` of the examples written.

    Returns:
        The manifest dict (also written to `directory/manifest.json`).

    Example:
    >>> import tempfile
    >>> from kdistill import testing
    >>> teacher = testing.tiny_bert_classifier()
    >>> data = testing.token_dataset(num_examples=8, batch_size=4)
    >>> directory = tempfile.mkdtemp() + "/cache"
    >>> manifest = cache_teacher_outputs(teacher, data, directory, taps=["logits"])
    >>> manifest["num_examples"], manifest["taps"]
    (8, ['logits'])
    """
    taps = _check_arguments(teacher, taps, top_k, dtype, examples_per_shard)
    directory = os.path.abspath(directory) if "://" not in directory else directory
    check_cache_directory(directory, overwrite)

    tap_model = build_taps(teacher, taps, layer_names=layer_names)
    step = _teacher_step(tap_model)
    tmp = _temporary_directory(directory)
    shards = _ShardWriter(tmp, examples_per_shard)
    sequence_length = None
    try:
        for batch in dataset:
            x, y, sample_weight = unpack_batch(batch)
            outputs = step(x)
            if isinstance(x, dict) and "padding_mask" in x:
                sequence_length = int(x["padding_mask"].shape[1])
            for example in split_examples(x, outputs, y, sample_weight):
                shards.write(CacheRecord(*example, dtype=dtype, top_k=top_k))
        shards.close()
        if shards.count == 0:
            raise ValueError(
                "The dataset is empty: no example to run the teacher on. Check the file paths, "
                "filters and `take`/`skip` that built it."
            )
        manifest = write_manifest(
            tmp, shards.features, shards.count, teacher_metadata(tap_model),
            data_fingerprint or shards.fingerprint.hexdigest(), taps, dtype=dtype, top_k=top_k,
            shards=shards.shards, sequence_length=sequence_length,
            max_length=shards.max_length or None)
        _move_into_place(tmp, directory, overwrite)
    except BaseException:
        shards.close()
        if tf.io.gfile.exists(tmp):
            tf.io.gfile.rmtree(tmp)
        raise
    return manifest
