"""The teacher cache's file format: one `tf.train.Example` record per example, and a manifest.

A cache directory holds sharded TFRecord files of records made by `encode_teacher_example` and a
`manifest.json` made by `write_manifest`. The format is public so other writers (e.g. an Apache
Beam `RunInference` pipeline, `kdistill.beam`) produce the same caches as
`kdistill.data.teacher_cache.cache_teacher_outputs`, and `kdistill.data.load_teacher_cache` reads
them all (its records through `record_decoder`).

Record layout (format version 1). Every array is stored as raw little-endian bytes of its stored
dtype in a `bytes_list` feature:

- `x/<name>` (dict inputs) or `x` (a single input tensor); `y` (labels); `sample_weight`;
- `t/<tap>` for `logits` / `embeddings`, `t/<tap>/<layer>` for per-layer taps; with `top_k`,
  `t/logits/indices` (int32) and `t/logits/values` instead of `t/logits`;
- `length` (int64): the example's unpadded length. Sequence axes (the token axis of
  `token_ids`, `padding_mask`, `segment_ids` and of the sequence taps, both token axes of
  attention scores) are cut to it, so disk use follows the real text length, not the padded one.

The unpadded length is one past the last position the `padding_mask` marks (trailing padding is
cut, nothing else). Booleans are stored as uint8; floating-point taps in `dtype` (float16 by
default) and read back as float32.
"""

import hashlib
import json
import os
import time

import keras
import numpy as np
import tensorflow as tf

from kdistill.taps import (
    ATTENTION_SCORES,
    ATTENTION_VALUES,
    EMBEDDINGS,
    HIDDEN_STATES,
    LOGITS,
    TAP_NAMES,
)

FORMAT = "kdistill-teacher-cache"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SEQUENCE_INPUTS = ("token_ids", "padding_mask", "segment_ids")
# Per tap: the per-example axes that run over tokens (cut to the unpadded length).
SEQUENCE_AXES = {LOGITS: (), EMBEDDINGS: (0,), HIDDEN_STATES: (0,), ATTENTION_SCORES: (1, 2),
                 ATTENTION_VALUES: (0,)}
PER_LAYER_TAPS = (HIDDEN_STATES, ATTENTION_SCORES, ATTENTION_VALUES)
# With top_k, the logit given to every class outside the k kept ones: softmax(t / T) is then
# exactly the teacher's distribution renormalised over its top k classes, at any temperature.
TOP_K_FILL = -1e9
# Storage dtypes of floating-point arrays.
FLOAT_DTYPES = ("float16", "float32")
# How the errors that refuse a stale or damaged cache end.
REBUILD_HINT = "Rebuild it with cache_teacher_outputs(..., overwrite=True)."
_LENGTH = "length"


# ----------------------------------------------------------------------------- one example


def _as_array(value):
    return np.asarray(value.numpy() if hasattr(value, "numpy") else value)


def _unpadded_length(inputs):
    """One past the last real token of `inputs["padding_mask"]`, or None without a mask."""
    if not isinstance(inputs, dict) or "padding_mask" not in inputs:
        return None
    mask = _as_array(inputs["padding_mask"]).astype(bool)
    if mask.ndim != 1:
        raise ValueError(
            f"padding_mask of one example must be 1-D [sequence], got shape {mask.shape}; "
            "pass a batched dataset (`.batch(n)`) to cache_teacher_outputs."
        )
    real = np.flatnonzero(mask)
    return max(int(real[-1]) + 1 if real.size else 0, 1)


def _cut(array, axes, length):
    index = [slice(None)] * array.ndim
    for axis in axes:
        index[axis] = slice(0, length)
    return array[tuple(index)]


def _stored(array, float_dtype=None):
    """`(array as stored, dtype the loader returns)`; taps' floats go to `float_dtype`."""
    if array.dtype == bool:
        return array.astype(np.uint8), "bool"
    if float_dtype is not None and array.dtype.kind not in "biu":  # float16/32, bfloat16
        return array.astype(float_dtype), "float32"
    return array, array.dtype.name


def _top_k(logits, k):
    """Indices (int32) and values of the k largest logits along the last axis, largest first."""
    if k >= logits.shape[-1]:
        raise ValueError(
            f"top_k={k} keeps every class (the teacher has {logits.shape[-1]} logits); use "
            "top_k=None to store the full logits."
        )
    part = np.argpartition(-logits, k - 1, axis=-1)[..., :k]
    values = np.take_along_axis(logits, part, axis=-1)
    order = np.argsort(-values, axis=-1, kind="stable")
    return (np.take_along_axis(part, order, axis=-1).astype(np.int32),
            np.take_along_axis(values, order, axis=-1))


def _tap_items(outputs):
    """`(key, tap, array)` for every array of a per-example taps dict, in a fixed order."""
    unknown = sorted(set(outputs) - set(TAP_NAMES))
    if unknown:
        raise ValueError(f"Unknown tap(s) {unknown} in the teacher outputs; valid taps are "
                         f"{list(TAP_NAMES)}.")
    for tap in TAP_NAMES:
        if tap not in outputs:
            continue
        value = outputs[tap]
        if tap in PER_LAYER_TAPS:
            for i, layer in enumerate(value):
                yield f"t/{tap}/{i}", tap, _as_array(layer)
        else:
            yield f"t/{tap}", tap, _as_array(value)


def _flatten_example(inputs, outputs, labels=None, sample_weight=None, dtype="float16",
                     top_k=None):
    """`({key: (stored array, spec)}, length)` for one example; see `encode_teacher_example`."""
    if dtype not in FLOAT_DTYPES:
        raise ValueError(f"dtype must be one of {FLOAT_DTYPES}, got {dtype!r}.")
    length = _unpadded_length(inputs)
    items = {}

    def add(key, array, axes, float_dtype=None):
        if length is not None and axes:
            for axis in axes:
                if array.shape[axis] < length:
                    raise ValueError(
                        f"{key}: axis {axis} has {array.shape[axis]} positions but the "
                        f"padding_mask marks {length}; the tap does not run over the tokens."
                    )
            array = _cut(array, axes, length)
        else:
            axes = ()
        stored, returned = _stored(array, float_dtype)
        shape = [-1 if a in axes else int(n) for a, n in enumerate(array.shape)]
        items[key] = (np.ascontiguousarray(stored),
                      {"dtype": returned, "stored": stored.dtype.name, "shape": shape})

    if isinstance(inputs, dict):
        for name in sorted(inputs):
            array = _as_array(inputs[name])
            add(f"x/{name}", array, (0,) if name in SEQUENCE_INPUTS else ())
    else:
        add("x", _as_array(inputs), ())
    if labels is not None:
        add("y", _as_array(labels), ())
    if sample_weight is not None:
        add("sample_weight", _as_array(sample_weight), ())
    for key, tap, array in _tap_items(outputs):
        if tap == LOGITS and top_k:
            indices, values = _top_k(array.astype(np.float32), int(top_k))
            add(key + "/indices", indices, ())
            items[key + "/indices"][1]["num_classes"] = int(array.shape[-1])
            add(key + "/values", values, (), dtype)
        else:
            add(key, array, SEQUENCE_AXES[tap], dtype)
    return items, length


class CacheRecord:
    """One example and its teacher outputs as the arrays a cache record stores.

    `encode_teacher_example` is `CacheRecord(...).serialize()` and `describe_teacher_example` its
    `features`; a writer that needs both, or the stored inputs for a `DataFingerprint`, builds
    the record once.

    Args:
        inputs, outputs, labels, sample_weight, dtype, top_k: as in `encode_teacher_example`.

    Attributes:
        arrays: dict `{feature: stored array}`, sequence axes cut to the unpadded length.
        features: dict `{feature: {"dtype", "stored", "shape"}}` (see `describe_teacher_example`).
        length: int or None. The unpadded length (None without a `padding_mask`).

    Example:
    >>> x = {"token_ids": np.array([2, 7, 3, 0]), "padding_mask": np.array([1, 1, 1, 0], bool)}
    >>> record = CacheRecord(x, {"logits": np.array([0.5, -1.0])}, labels=1)
    >>> record.length, record.arrays["x/token_ids"].tolist(), sorted(record.input_arrays())
    (3, [2, 7, 3], ['x/padding_mask', 'x/token_ids', 'y'])
    >>> record.serialize() == encode_teacher_example(x, {"logits": np.array([0.5, -1.0])}, 1)
    True
    """

    def __init__(self, inputs, outputs, labels=None, sample_weight=None, dtype="float16",
                 top_k=None):
        items, self.length = _flatten_example(inputs, outputs, labels, sample_weight, dtype,
                                              top_k)
        self.arrays = {key: array for key, (array, _) in items.items()}
        self.features = {key: spec for key, (_, spec) in items.items()}

    def input_arrays(self):
        """The stored inputs, labels and sample weight (no teacher taps), by feature."""
        return {k: a for k, a in self.arrays.items() if not k.startswith("t/")}

    def serialize(self):
        """The record: a serialised `tf.train.Example` (bytes)."""
        feature = {key: tf.train.Feature(bytes_list=tf.train.BytesList(value=[array.tobytes()]))
                   for key, array in self.arrays.items()}
        if self.length is not None:
            feature[_LENGTH] = tf.train.Feature(int64_list=tf.train.Int64List(value=[self.length]))
        return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def encode_teacher_example(inputs, outputs, labels=None, sample_weight=None, dtype="float16",
                           top_k=None):
    """Serialises one example and its teacher outputs as a cache record (`tf.train.Example`).

    The building block of `cache_teacher_outputs`; other writers (e.g. a Beam pipeline) call it
    on each example and `write_manifest` once, and produce the same caches.

    Args:
        inputs: dict of arrays (keras-hub style `token_ids`, `padding_mask`, `segment_ids`, ...)
            or one array: the model inputs of **one** example (no batch axis).
        outputs: dict. The teacher's taps for this example: `{"logits": [classes],
            "hidden_states": [[seq, hidden], ...], ...}` (arrays or tensors, no batch axis).
        labels: array or None. The example's label(s).
        sample_weight: array or None.
        dtype: str. `"float16"` or `"float32"`: storage dtype of floating-point arrays.
        top_k: int or None. Keep only the `top_k` largest logits (indices and values).

    Returns:
        bytes: the serialised `tf.train.Example`.

    Example:
    >>> import numpy as np
    >>> x = {"token_ids": np.array([2, 7, 3, 0]), "padding_mask": np.array([1, 1, 1, 0], bool)}
    >>> record = encode_teacher_example(x, {"logits": np.array([0.5, -1.0])}, labels=1)
    >>> sorted(tf.train.Example.FromString(record).features.feature)
    ['length', 't/logits', 'x/padding_mask', 'x/token_ids', 'y']
    """
    return CacheRecord(inputs, outputs, labels, sample_weight, dtype, top_k).serialize()


def describe_teacher_example(inputs, outputs, labels=None, sample_weight=None, dtype="float16",
                             top_k=None):
    """The feature specs of the records `encode_teacher_example` writes for such examples.

    Call it once, on any one example, and pass the result to `write_manifest`.

    Args:
        inputs, outputs, labels, sample_weight, dtype, top_k: as in `encode_teacher_example`.

    Returns:
        dict `{feature: {"dtype", "stored", "shape"}}`: the dtype the loader returns, the dtype
        on disk, and the per-example shape with `-1` for axes cut to the unpadded length.

    Example:
    >>> import numpy as np
    >>> x = {"token_ids": np.array([2, 7, 3, 0]), "padding_mask": np.array([1, 1, 1, 0], bool)}
    >>> describe_teacher_example(x, {"logits": np.zeros(2, "float32")})["t/logits"]
    {'dtype': 'float32', 'stored': 'float16', 'shape': [2]}
    """
    return CacheRecord(inputs, outputs, labels, sample_weight, dtype, top_k).features


# ----------------------------------------------------------------------------- batches


def unpack_batch(batch):
    """`(inputs, labels, sample_weight)` of a batch (as Keras unpacks it), checked to be batched.

    Args:
        batch: `inputs`, `(inputs, labels)` or `(inputs, labels, sample_weight)`, with a batch
            axis.

    Returns:
        A tuple `(inputs, labels or None, sample_weight or None)`.

    Raises:
        ValueError: the inputs have no batch axis (an unbatched dataset).

    Example:
    >>> x, y, w = unpack_batch(({"token_ids": np.zeros((2, 4), "int32")}, np.array([0, 1])))
    >>> x["token_ids"].shape, y.tolist(), w
    ((2, 4), [0, 1], None)
    >>> unpack_batch(np.zeros(4))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: The inputs have shape (4,); expected [batch, ...]. Pass a batched dataset ...
    """
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(batch)
    if isinstance(x, dict):
        for name in SEQUENCE_INPUTS:
            if name in x and len(x[name].shape) != 2:
                raise ValueError(
                    f"Input {name!r} has shape {tuple(x[name].shape)}; expected [batch, sequence]. "
                    "Pass a batched dataset (`dataset.batch(n)`)."
                )
    elif len(x.shape) < 2:
        raise ValueError(
            f"The inputs have shape {tuple(x.shape)}; expected [batch, ...]. Pass a batched "
            "dataset (`dataset.batch(n)`)."
        )
    return x, y, sample_weight


def split_examples(*structures):
    """Yields the examples of a batch: per row, each structure's row as NumPy arrays.

    Args:
        *structures: nests (dicts, tuples) of batched arrays or tensors, e.g. the inputs, the
            teacher's taps, the labels and the sample weights; None stays None. The first one
            gives the batch size.

    Yields:
        One tuple per example, with a value per structure.

    Example:
    >>> x = {"token_ids": np.array([[2, 7], [2, 9]])}
    >>> [(row["token_ids"].tolist(), int(y), w)
    ...  for row, y, w in split_examples(x, np.array([1, 0]), None)]
    [([2, 7], 1, None), ([2, 9], 0, None)]
    """
    arrays = [None if s is None else tf.nest.map_structure(_as_array, s) for s in structures]
    first = arrays[0][sorted(arrays[0])[0]] if isinstance(arrays[0], dict) else arrays[0]
    for i in range(int(first.shape[0])):
        yield tuple(None if a is None else tf.nest.map_structure(lambda v: v[i], a)
                    for a in arrays)


# ----------------------------------------------------------------------------- manifest


def _shard_info(directory, name, num_examples=None):
    path = os.path.join(directory, name)
    h = hashlib.sha256()
    with tf.io.gfile.GFile(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    info = {"path": name, "bytes": int(tf.io.gfile.stat(path).length), "sha256": h.hexdigest()}
    if num_examples is not None:
        info["num_examples"] = int(num_examples)
    return info


def write_manifest(directory, features, num_examples, teacher, data_fingerprint, taps,
                   dtype="float16", top_k=None, shards=None, sequence_length=None,
                   max_length=None):
    """Writes `manifest.json` of a cache directory whose shards are written.

    Args:
        directory: str. The cache directory.
        features: dict. `describe_teacher_example(...)` of one example.
        num_examples: int. Examples in all shards.
        teacher: dict. `{"fingerprint": teacher_fingerprint(model), "name", "class",
            "num_layers", "num_heads", "output_shapes"}` (see `teacher_metadata`).
        data_fingerprint: str. `DataFingerprint.hexdigest()` of the examples.
        taps: list of str. The teacher taps stored.
        dtype: str. Storage dtype of floating-point arrays.
        top_k: int or None.
        shards: list of dicts `{"path", "num_examples"}` in reading order, or None to list the
            directory's `*.tfrecord` files in name order. Sizes and sha256 are added here.
        sequence_length: int or None. The padded sequence length of the source batches.
        max_length: int or None. The longest unpadded length in the cache.

    Returns:
        The manifest dict.

    Example:
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> with tf.io.TFRecordWriter(d + "/shard-00000.tfrecord") as w:
    ...     w.write(encode_teacher_example(np.ones(2), {"logits": np.zeros(2)}))
    >>> m = write_manifest(d, describe_teacher_example(np.ones(2), {"logits": np.zeros(2)}),
    ...                    1, {"fingerprint": "t"}, "d", ["logits"])
    >>> m["num_examples"], m["shards"][0]["path"]
    (1, 'shard-00000.tfrecord')
    """
    if shards is None:
        names = sorted(n for n in tf.io.gfile.listdir(directory) if ".tfrecord" in n)
        shards = [{"path": n} for n in names]
    if not shards:
        raise ValueError(f"No shard files (*.tfrecord) in {directory}.")
    shard_list = [_shard_info(directory, s["path"], s.get("num_examples")) for s in shards]
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "teacher": dict(teacher),
        "data_fingerprint": data_fingerprint,
        "taps": list(taps),
        "dtype": dtype,
        "top_k": None if top_k is None else int(top_k),
        "features": features,
        "num_examples": int(num_examples),
        "sequence_length": sequence_length,
        "max_length": max_length,
        "shards": shard_list,
        "bytes": int(sum(s["bytes"] for s in shard_list)),
        "bytes_per_example": sum(s["bytes"] for s in shard_list) / max(int(num_examples), 1),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    with tf.io.gfile.GFile(os.path.join(directory, MANIFEST), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
    return manifest


def read_manifest(directory):
    """Reads and checks the manifest of a cache directory.

    Args:
        directory: str.

    Returns:
        The manifest dict.

    Raises:
        FileNotFoundError: no cache there. ValueError: another format or format version.

    Example:
    >>> import tempfile
    >>> from kdistill import testing
    >>> from kdistill.data.teacher_cache import cache_teacher_outputs
    >>> directory = tempfile.mkdtemp() + "/cache"
    >>> _ = cache_teacher_outputs(testing.tiny_mlp(), [(np.ones((2, 8)), np.zeros(2))], directory)
    >>> manifest = read_manifest(directory)
    >>> manifest["num_examples"], manifest["taps"], manifest["teacher"]["output_shapes"]
    (2, ['logits'], {'logits': [None, 3]})
    """
    path = os.path.join(directory, MANIFEST)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(
            f"{directory} is not a teacher cache: {MANIFEST} is missing (an interrupted write "
            "leaves no manifest). Create it with kdistill.data.cache_teacher_outputs."
        )
    with tf.io.gfile.GFile(path) as f:
        try:
            manifest = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON ({e}); rebuild the cache.") from None
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path} is not a kdistill teacher cache manifest.")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"The cache in {directory} has format version {version}; this kdistill reads "
            f"version {FORMAT_VERSION}. {REBUILD_HINT}"
        )
    missing = [k for k in ("taps", "features", "shards", "num_examples", "teacher",
                           "data_fingerprint") if k not in manifest]
    if missing:
        raise ValueError(f"{path} lacks {missing}: it was edited or damaged. {REBUILD_HINT}")
    return manifest


def check_shards(directory, manifest, verify_checksums=False):
    """Checks a cache's shard files against its manifest; returns their paths in reading order.

    Args:
        directory: str. The cache directory.
        manifest: dict. Its manifest (`read_manifest(directory)`).
        verify_checksums: bool. Also check each shard's sha256 (reads the whole cache once).

    Returns:
        list of str: the shard paths.

    Raises:
        ValueError: a shard is missing, its size (or sha256) differs from the manifest's, or
            the shards' example counts do not add up to the manifest's `num_examples`.

    Example:
    >>> import tempfile
    >>> from kdistill import testing
    >>> from kdistill.data.teacher_cache import cache_teacher_outputs
    >>> directory = tempfile.mkdtemp() + "/cache"
    >>> manifest = cache_teacher_outputs(testing.tiny_mlp(), [(np.ones((2, 8)), None)], directory)
    >>> shard, = check_shards(directory, manifest, verify_checksums=True)
    >>> with open(shard, "ab") as f:
    ...     _ = f.write(b"more")
    >>> check_shards(directory, manifest)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: The cache in ... is damaged: shard shard-00000.tfrecord has ... bytes, the ...
    """
    counts = [s.get("num_examples") for s in manifest["shards"]]
    if None not in counts and sum(counts) != manifest["num_examples"]:
        listed = ", ".join(f"{s['path']}: {n}" for s, n in zip(manifest["shards"], counts))
        raise ValueError(
            f"The cache in {directory} is inconsistent: its manifest says "
            f"{manifest['num_examples']} examples but its shards hold {sum(counts)} ({listed}); "
            f"the manifest was edited or belongs to other shards. {REBUILD_HINT}"
        )
    files = []
    for shard in manifest["shards"]:
        path = os.path.join(directory, shard["path"])
        if not tf.io.gfile.exists(path):
            raise ValueError(
                f"The cache in {directory} is incomplete: shard {shard['path']} is missing. "
                + REBUILD_HINT
            )
        size = tf.io.gfile.stat(path).length
        if size != shard["bytes"]:
            raise ValueError(
                f"The cache in {directory} is damaged: shard {shard['path']} has {size} bytes, "
                f"the manifest says {shard['bytes']} (truncated or rewritten). {REBUILD_HINT}"
            )
        if verify_checksums and _shard_info(directory, shard["path"])["sha256"] != shard["sha256"]:
            raise ValueError(
                f"The cache in {directory} is damaged: shard {shard['path']} does not match its "
                f"sha256 in the manifest. {REBUILD_HINT}"
            )
        files.append(path)
    return files


# ---------------------------------------------------------------------------- decoding


def _top_k_logits(indices, values, num_classes):
    """Dense logits `[..., num_classes]`: `values` at `indices`, `TOP_K_FILL` elsewhere."""
    k = indices.shape[-1]
    flat = tf.reshape(indices, [-1, k])
    rows = tf.range(tf.shape(flat)[0])[:, None] * num_classes
    shape = tf.concat([tf.shape(indices)[:-1], [num_classes]], 0)
    dense = tf.fill([tf.reduce_prod(shape)], tf.constant(TOP_K_FILL, values.dtype))
    dense = tf.tensor_scatter_nd_update(dense, tf.reshape(rows + flat, [-1, 1]),
                                        tf.reshape(values, [-1]))
    return tf.reshape(dense, shape)


def record_decoder(features, taps):
    """A function: serialized record -> `(inputs, labels, sample_weight, teacher_targets)`.

    Args:
        features: dict. The manifest's `features` (`describe_teacher_example`).
        taps: list of str. The taps to decode (a subset of the cached ones).

    Returns:
        A function of a scalar string tensor, for `tf.data.Dataset.map`; labels and sample weight
        are None when the records have none, per-layer taps are tuples of tensors.

    Example:
    >>> x, outputs = np.array([2.0, 3.0]), {"logits": np.array([0.5, -1.0])}
    >>> decode = record_decoder(describe_teacher_example(x, outputs), ["logits"])
    >>> inputs, labels, weights, targets = decode(encode_teacher_example(x, outputs))
    >>> inputs.numpy().tolist(), labels, targets["logits"].numpy().tolist()
    ([2.0, 3.0], None, [0.5, -1.0])
    """
    keys = [k for k in features if not k.startswith("t/") or k.split("/")[1] in taps]
    has_length = any(-1 in features[k]["shape"] for k in keys)
    spec = {k: tf.io.FixedLenFeature([], tf.string) for k in keys}
    if has_length:
        spec[_LENGTH] = tf.io.FixedLenFeature([], tf.int64)

    def decode(record):
        parsed = tf.io.parse_single_example(record, spec)
        length = tf.cast(parsed[_LENGTH], tf.int32) if has_length else None
        values = {}
        for key in keys:
            f = features[key]
            value = tf.io.decode_raw(parsed[key], tf.dtypes.as_dtype(f["stored"]))
            value = tf.reshape(value, [length if d == -1 else d for d in f["shape"]])
            values[key] = tf.cast(value, f["dtype"]) if f["stored"] != f["dtype"] else value
        if "t/logits/indices" in values:
            values["t/logits"] = _top_k_logits(
                values.pop("t/logits/indices"), values.pop("t/logits/values"),
                features["t/logits/indices"]["num_classes"])
        inputs = values.pop("x", None)
        if inputs is None:
            inputs = {k[2:]: v for k, v in values.items() if k.startswith("x/")}
        targets = {}
        for tap in taps:
            if f"t/{tap}" in values:
                targets[tap] = values[f"t/{tap}"]
            else:  # per-layer taps: a tuple (tf.data would stack a list into one tensor)
                layers = sorted((int(k.rsplit("/", 1)[1]), v) for k, v in values.items()
                                if k.startswith(f"t/{tap}/"))
                targets[tap] = tuple(v for _, v in layers)
        return inputs, values.get("y"), values.get("sample_weight"), targets

    return decode
