"""Teacher output cache: run the teacher once, stream its targets back for every epoch.

`cache_teacher_outputs` runs a frozen teacher over a batched dataset and writes, per example, the
model inputs, the labels (and sample weights) and the teacher's taps (`logits`, `embeddings`,
`hidden_states`, `attention_scores`, `attention_values`) to sharded TFRecord files, with a JSON
manifest. `load_teacher_cache` streams them back as `(inputs, labels, teacher_targets)` batches
that `kdistill.Distiller(teacher=None, ...)` (or `teacher=CachedTeacher(directory)`) trains on
with no teacher forward at all.

The file format is public so other writers (e.g. an Apache Beam `RunInference` pipeline) produce
the same caches: each record is a `tf.train.Example` made by `encode_teacher_example`, and the
directory holds a `manifest.json` made by `write_manifest`.

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
import uuid

import numpy as np
import tensorflow as tf

from kdistill.taps import (
    ATTENTION_SCORES,
    ATTENTION_VALUES,
    EMBEDDINGS,
    HIDDEN_STATES,
    LOGITS,
    TAP_NAMES,
    build_taps,
)
from kdistill.teachers import canonical_config, weights_digest

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
_LENGTH = "length"
_REBUILD = "Rebuild it with cache_teacher_outputs(..., overwrite=True)."
_FLOAT_DTYPES = ("float16", "float32")


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
    if dtype not in _FLOAT_DTYPES:
        raise ValueError(f"dtype must be one of {_FLOAT_DTYPES}, got {dtype!r}.")
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
    return _serialize(*_flatten_example(inputs, outputs, labels, sample_weight, dtype, top_k))


def _serialize(items, length):
    feature = {key: tf.train.Feature(bytes_list=tf.train.BytesList(value=[array.tobytes()]))
               for key, (array, _) in items.items()}
    if length is not None:
        feature[_LENGTH] = tf.train.Feature(int64_list=tf.train.Int64List(value=[length]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


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
    items, _ = _flatten_example(inputs, outputs, labels, sample_weight, dtype, top_k)
    return {key: spec for key, (_, spec) in items.items()}


class DataFingerprint:
    """An order-independent fingerprint of the examples a cache was made from.

    The sum (mod 2^256) of each example's sha256 over its stored inputs, labels and sample
    weights (trailing padding cut), so it does not depend on the order, the batch size or the
    padded length, and partial fingerprints merge (e.g. across Beam workers).

    Example:
    >>> a, b = DataFingerprint(), DataFingerprint()
    >>> a.add({"x": np.array([1, 2])}); a.add({"x": np.array([3, 4])})
    >>> b.add({"x": np.array([3, 4])}); b.add({"x": np.array([1, 2])})
    >>> a.hexdigest() == b.hexdigest()
    True
    """

    def __init__(self):
        self.total = 0
        self.count = 0

    def add(self, stored_inputs):
        """Adds one example given as `{key: stored array}` (the `x/`, `y`, `sample_weight` keys)."""
        h = hashlib.sha256()
        for key in sorted(stored_inputs):
            array = np.ascontiguousarray(stored_inputs[key])
            h.update(f"{key}:{array.dtype.name}:{array.shape};".encode())
            h.update(array.tobytes())
        self.total = (self.total + int.from_bytes(h.digest(), "big")) % (1 << 256)
        self.count += 1

    def add_example(self, inputs, labels=None, sample_weight=None):
        """Adds one example given as model inputs, labels and sample weight (no batch axis)."""
        items, _ = _flatten_example(inputs, {}, labels, sample_weight)
        self.add({k: a for k, (a, _) in items.items()})

    def merge(self, other):
        """Adds the examples counted by another `DataFingerprint`."""
        self.total = (self.total + other.total) % (1 << 256)
        self.count += other.count

    def hexdigest(self):
        """The fingerprint as a hex string."""
        return hashlib.sha256(f"{self.count}:{self.total:064x}".encode()).hexdigest()


def _input_items(items):
    return {k: a for k, (a, _) in items.items() if not k.startswith("t/")}


# ----------------------------------------------------------------------------- batches


def _split_batch(batch):
    from keras.src.trainers.data_adapters import data_adapter_utils

    x, y, sample_weight = data_adapter_utils.unpack_x_y_sample_weight(batch)
    return x, y, sample_weight


def _batch_size(x):
    first = x[sorted(x)[0]] if isinstance(x, dict) else x
    return int(first.shape[0])


def _check_batched(x):
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


def _example(structure, i):
    if structure is None:
        return None
    return tf.nest.map_structure(lambda v: v[i], structure)


def dataset_fingerprint(dataset):
    """The `DataFingerprint` hex digest of a batched dataset, as a cache made from it records.

    Compare it with a cache's manifest (`load_teacher_cache(..., expected_fingerprint=...)`) to
    check the cache was made from this data.

    Args:
        dataset: `tf.data.Dataset` (or iterable) of batched `(inputs, labels)`,
            `(inputs, labels, sample_weight)` or `inputs`.

    Returns:
        str: hex digest.

    Example:
    >>> from kdistill import testing
    >>> a = dataset_fingerprint(testing.token_dataset(num_examples=8, batch_size=4))
    >>> b = dataset_fingerprint(testing.token_dataset(num_examples=8, batch_size=8))
    >>> a == b
    True
    """
    fingerprint = DataFingerprint()
    for batch in dataset:
        x, y, sample_weight = _split_batch(batch)
        _check_batched(x)
        for i in range(_batch_size(x)):
            fingerprint.add_example(_example(x, i), _example(y, i), _example(sample_weight, i))
    return fingerprint.hexdigest()


def teacher_fingerprint(model):
    """A hash of a model's architecture (config, names normalised) and weights.

    Args:
        model: keras.Model.

    Returns:
        str: hex digest; equal for two models with the same config and weights.

    Example:
    >>> from kdistill import testing
    >>> a, b = testing.tiny_mlp(seed=0), testing.tiny_mlp(seed=0)
    >>> teacher_fingerprint(a) == teacher_fingerprint(b)
    True
    """
    def drop_trainable(c):  # freezing a teacher (trainable=False) does not change its outputs
        if isinstance(c, dict):
            return {k: drop_trainable(v) for k, v in c.items() if k != "trainable"}
        if isinstance(c, list):
            return [drop_trainable(v) for v in c]
        return c

    try:
        config = json.dumps(drop_trainable(canonical_config(model.get_config())),
                            sort_keys=True, default=str)
    except NotImplementedError:  # subclassed model without get_config: weights only
        config = type(model).__name__
    h = hashlib.sha256(config.encode())
    h.update(weights_digest(model).encode())
    return h.hexdigest()


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
            f"version {FORMAT_VERSION}. {_REBUILD}"
        )
    return manifest


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


# ----------------------------------------------------------------------------- writing


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
    if dtype not in _FLOAT_DTYPES:
        raise ValueError(f"dtype must be one of {_FLOAT_DTYPES}, got {dtype!r}.")
    if int(examples_per_shard) < 1:
        raise ValueError(f"examples_per_shard must be >= 1, got {examples_per_shard}.")
    if not getattr(teacher, "built", False):
        raise ValueError("The teacher is not built: call it once on a batch of inputs first.")
    directory = os.path.abspath(directory) if "://" not in directory else directory
    check_cache_directory(directory, overwrite)

    tap_model = build_taps(teacher, taps, layer_names=layer_names)
    step = _teacher_step(tap_model)
    fingerprint = DataFingerprint()
    parent = os.path.dirname(directory.rstrip("/"))
    if parent:
        tf.io.gfile.makedirs(parent)
    tmp = f"{directory.rstrip('/')}.tmp-{uuid.uuid4().hex[:8]}"
    tf.io.gfile.makedirs(tmp)
    shards, writer, features = [], None, None
    count, in_shard, max_length, sequence_length = 0, 0, 0, None
    try:
        for batch in dataset:
            x, y, sample_weight = _split_batch(batch)
            _check_batched(x)
            outputs = tf.nest.map_structure(lambda t: t.numpy(), step(x))
            x_np = tf.nest.map_structure(_as_array, x)
            y_np = None if y is None else tf.nest.map_structure(_as_array, y)
            w_np = None if sample_weight is None else _as_array(sample_weight)
            if isinstance(x_np, dict) and "padding_mask" in x_np:
                sequence_length = int(x_np["padding_mask"].shape[1])
            for i in range(_batch_size(x_np)):
                items, length = _flatten_example(
                    _example(x_np, i), _example(outputs, i), _example(y_np, i),
                    _example(w_np, i), dtype, top_k)
                if features is None:
                    features = {k: spec for k, (_, spec) in items.items()}
                max_length = max(max_length, length or 0)
                fingerprint.add(_input_items(items))
                if writer is None:
                    name = f"shard-{len(shards):05d}.tfrecord"
                    writer = tf.io.TFRecordWriter(os.path.join(tmp, name))
                    shards.append({"path": name, "num_examples": 0})
                writer.write(_serialize(items, length))
                count += 1
                in_shard += 1
                shards[-1]["num_examples"] = in_shard
                if in_shard == examples_per_shard:
                    writer.close()
                    writer, in_shard = None, 0
        if writer is not None:
            writer.close()
            writer = None
        if count == 0:
            raise ValueError(
                "The dataset is empty: no example to run the teacher on. Check the file paths, "
                "filters and `take`/`skip` that built it."
            )
        manifest = write_manifest(
            tmp, features, count, teacher_metadata(tap_model),
            data_fingerprint or fingerprint.hexdigest(), taps, dtype=dtype, top_k=top_k,
            shards=shards, sequence_length=sequence_length, max_length=max_length or None)
        _move_into_place(tmp, directory, overwrite)
    except BaseException:
        if writer is not None:
            writer.close()
        if tf.io.gfile.exists(tmp):
            tf.io.gfile.rmtree(tmp)
        raise
    return manifest


# ----------------------------------------------------------------------------- reading


def _check_shards(directory, manifest, verify_checksums):
    files = []
    for shard in manifest["shards"]:
        path = os.path.join(directory, shard["path"])
        if not tf.io.gfile.exists(path):
            raise ValueError(
                f"The cache in {directory} is incomplete: shard {shard['path']} is missing. "
                + _REBUILD
            )
        size = tf.io.gfile.stat(path).length
        if size != shard["bytes"]:
            raise ValueError(
                f"The cache in {directory} is damaged: shard {shard['path']} has {size} bytes, "
                f"the manifest says {shard['bytes']} (truncated or rewritten). {_REBUILD}"
            )
        if verify_checksums and _shard_info(directory, shard["path"])["sha256"] != shard["sha256"]:
            raise ValueError(
                f"The cache in {directory} is damaged: shard {shard['path']} does not match its "
                f"sha256 in the manifest. {_REBUILD}"
            )
        files.append(path)
    return files


def _check_fresh(directory, manifest, teacher, expected_fingerprint):
    if teacher is not None:
        cached = manifest["teacher"].get("fingerprint")
        current = teacher_fingerprint(teacher)
        if cached != current:
            raise ValueError(
                f"Stale teacher cache in {directory}: it was written by teacher "
                f"{manifest['teacher'].get('name')!r} ({manifest['teacher'].get('class')}) with "
                f"fingerprint {str(cached)[:12]}, but the given teacher {teacher.name!r} has "
                f"{current[:12]}: its weights or config changed. {_REBUILD}"
            )
    if expected_fingerprint is not None and manifest["data_fingerprint"] != expected_fingerprint:
        raise ValueError(
            f"Stale teacher cache in {directory}: it was made from data with fingerprint "
            f"{manifest['data_fingerprint'][:12]}, expected {expected_fingerprint[:12]}: the "
            "examples differ. Rebuild the cache from the current data with overwrite=True."
        )


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


def _decoder(features, taps):
    """A function: serialized record -> `(inputs, labels, sample_weight, teacher_targets)`."""
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
    `expected_fingerprint`, a missing shard, or a shard whose size (or, with
    `verify_checksums`, sha256) differs from the manifest.

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
    files = _check_shards(directory, manifest, verify_checksums)

    decode = _decoder(manifest["features"], taps)
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
    return batches.prefetch(2).with_options(_NO_AUTOTUNE)
