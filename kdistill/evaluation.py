"""Load, evaluate and time any model artifact: Keras model, `.keras`, SavedModel or `.tflite`.

`load_model(path)` puts each kind behind one interface (`LoadedModel.predict`: token inputs ->
logits); `evaluate_model` measures accuracy and loss on a tokenised `kdistill.data.Split`;
`benchmark_models` times several models at batch 1 in interleaved rounds. The runner
(`kdistill distill`), `kdistill.export` and the `evaluate` / `benchmark` commands share them.
"""

import contextlib
import dataclasses
import json
import logging
import os
import statistics
import time

import keras
import numpy as np
import tensorflow as tf

# The class names of a model, in label-index order, kept next to it (`student.keras`, `export/`).
LABELS_FILE = "labels.json"


def num_outputs(model):
    """The width of a model's output (its number of classes), or None when it cannot be told.

    Example:
    >>> from kdistill import testing
    >>> num_outputs(testing.tiny_bert_classifier(num_classes=3))
    3
    """
    try:
        return int(model.output.shape[-1])
    except (AttributeError, ValueError, TypeError):
        return None


def as_float32_logits(outputs):
    """A model's logits as float32: its output tensor, or the `logits` entry of a dict output.

    Raises:
        ValueError: a dict without `logits`, or several outputs.

    Example:
    >>> as_float32_logits({"logits": tf.constant([[1, 2]], tf.float16)}).dtype.name
    'float32'
    """
    if isinstance(outputs, dict):
        if "logits" not in outputs:
            raise ValueError(f"The model returns a dict {sorted(outputs)} without 'logits'.")
        outputs = outputs["logits"]
    if isinstance(outputs, (list, tuple)):
        raise ValueError("The model must return one logits tensor, got a list/tuple of outputs.")
    return tf.cast(outputs, tf.float32)


def detach_preprocessor(model):
    """Takes the keras-hub preprocessor off a model (`model.preprocessor = None`) and returns it.

    kdistill tokenises the data once, outside the model, so models take token dicts.

    Example:
    >>> from kdistill import testing
    >>> detach_preprocessor(testing.tiny_bert_classifier()) is None
    True
    """
    preprocessor = getattr(model, "preprocessor", None)
    if preprocessor is not None:
        model.preprocessor = None
    return preprocessor


@dataclasses.dataclass
class LoadedModel:
    """A model from disk behind one interface: logits for a batch of token inputs.

    Attributes:
        name: str. Shown in tables (the file name).
        kind: str. `"keras"`, `"saved_model"` or `"tflite"`.
        path: str or None.
        predict: callable. `{input name: np.ndarray [batch, seq]} -> np.ndarray logits`.
        input_names: list of str.
        sequence_length: int or None. Fixed by the file (SavedModel, TFLite), or None.
        size_bytes: int. On disk (or the in-memory weights of a Keras model).
        params: int or None.
        model: the underlying object (keras.Model, signature or interpreter runner).
        preprocessor: the keras-hub preprocessor saved with a `.keras` model, or None.
        max_length: int or None. The longest input a keras-hub model takes (its position
            table), or None.
        label_names: list of str or None. The class names the model was trained on, in
            label-index order, from a `labels.json` next to the file (see `read_label_names`).
        labels_path: str or None. The `labels.json` they came from.

    Example:
    >>> m = LoadedModel("zeros", "keras", None, lambda x: np.zeros((len(x["token_ids"]), 2)),
    ...                 ["token_ids"], None, size_bytes=0)
    >>> m.predict({"token_ids": np.ones((3, 4))}).shape, m.describe()["kind"]
    ((3, 2), 'keras')
    """

    name: str
    kind: str
    path: str | None
    predict: object
    input_names: list
    sequence_length: int | None
    size_bytes: int
    params: int | None = None
    model: object = None
    preprocessor: object = None
    max_length: int | None = None
    label_names: list | None = None
    labels_path: str | None = None

    def describe(self):
        """`{name, kind, path, size_bytes, params}` for tables and JSON."""
        return {"name": self.name, "kind": self.kind, "path": self.path,
                "size_bytes": self.size_bytes, "params": self.params}


def write_label_names(directory, label_names):
    """Writes a model's class names to `directory/labels.json`; returns the file's path.

    The runner writes it next to `student.keras` and into `export/`, and `kdistill export`
    into its output directory, so that `kdistill evaluate` / `benchmark` / `export` number the
    labels of any file as the model was trained (see `read_label_names`).

    Example:
    >>> import tempfile
    >>> path = write_label_names(tempfile.mkdtemp(), ["neg", "pos"])
    >>> read_label_names(path.replace("labels.json", "student.keras"))[0]
    ['neg', 'pos']
    """
    path = os.path.join(directory, LABELS_FILE)
    scratch = path + ".tmp"
    with open(scratch, "w") as f:
        json.dump({"label_names": [str(n) for n in label_names]}, f, indent=2)
    os.replace(scratch, path)
    return path


def read_label_names(model_path):
    """The class names kept with a model: `(label_names, labels.json path)` or `(None, None)`.

    Looks for `labels.json` inside a SavedModel directory, then next to the model (the run
    directory of a `student.keras`, the export directory of a `.tflite` file or SavedModel).

    Raises:
        ValueError: a `labels.json` that is not `{"label_names": [str, ...]}` (naming it).

    Example:
    >>> import tempfile
    >>> read_label_names(os.path.join(tempfile.mkdtemp(), "student.keras"))
    (None, None)
    """
    model_path = os.path.normpath(os.fspath(model_path))
    candidates = [os.path.join(os.path.dirname(model_path), LABELS_FILE)]
    if os.path.isdir(model_path):
        candidates.insert(0, os.path.join(model_path, LABELS_FILE))
    for path in candidates:
        if not os.path.isfile(path):
            continue
        try:
            with open(path) as f:
                names = json.load(f).get("label_names")
        except (ValueError, AttributeError, OSError) as error:
            raise ValueError(f"{path} is not a labels file ({error}); expected "
                             '{"label_names": ["neg", "pos", ...]}. Fix or remove it.') from None
        if (not isinstance(names, list) or not names
                or not all(isinstance(n, str) for n in names)):
            raise ValueError(f"{path}: label_names must be a non-empty list of strings, got "
                             f"{names!r}. Fix or remove it.")
        return names, path
    return None, None


def _with_label_names(loaded, path):
    loaded.label_names, loaded.labels_path = read_label_names(path)
    return loaded


def _check_keras_file(path):
    import zipfile

    if path.endswith(".keras") and not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            head = f.read(64)
        what = ("it looks like text" if head and all(32 <= b < 127 or b in b"\t\r\n"
                                                       for b in head)
                else "truncated or not a zip archive")
        raise ValueError(f"{path} exists but is not a valid .keras archive ({what}); a .keras "
                         "file is the zip archive `model.save(...)` writes. Save the model "
                         "again, or pass the right file.")


def _check_tflite_file(path):
    with open(path, "rb") as f:
        head = f.read(8)
    if head[4:8] != b"TFL3":
        raise ValueError(f"{path} is not a valid .tflite file (no TFLite flatbuffer header; "
                         "truncated, or another kind of file). Export it again with `kdistill "
                         "export`, or pass the right file.")


def dir_size(path):
    """Bytes on disk of a file, or of every file under a directory.

    Example:
    >>> dir_size(__file__) > 0
    True
    """
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path)
               for f in files)


def weights_bytes(model):
    """Bytes of a model's weights in memory (their dtypes' sizes).

    Example:
    >>> from kdistill import testing
    >>> weights_bytes(testing.tiny_mlp()) > 0
    True
    """
    return int(sum(np.prod(v.shape) * np.dtype(v.dtype).itemsize for v in model.weights))


def conform_length(array, length, dtype):
    """Cuts or zero-pads `array` `[batch, seq, ...]` to `length` columns and casts it to `dtype`.

    Example:
    >>> conform_length(np.ones((1, 3)), 5, "int32").tolist()
    [[1, 1, 1, 0, 0]]
    """
    array = np.asarray(array)
    if length is not None and array.ndim >= 2:
        if array.shape[1] > length:
            array = array[:, :length]
        elif array.shape[1] < length:
            array = np.pad(array, [(0, 0), (0, length - array.shape[1])])
    return array.astype(dtype)


class _ExpectedTraces(logging.Filter):
    """Drops TensorFlow's "triggered tf.function retracing" warning.

    TF counts the traces of every `tf.function` made from the same code together, so the
    first trace of each `keras_model` wrapper (one per model and evaluation) looks like a
    retrace of the previous one's. Within a wrapper's own calls those traces are expected.
    """

    def filter(self, record):
        return "triggered tf.function retracing" not in record.getMessage()


@contextlib.contextmanager
def _expected_traces():
    logger, quiet = tf.get_logger(), _ExpectedTraces()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def keras_model(model, name=None, path=None):
    """Wraps an in-memory keras.Model as a `LoadedModel` (batched, compiled forward).

    Example:
    >>> from kdistill import testing
    >>> m = keras_model(testing.tiny_bert_classifier(num_classes=2), name="tiny")
    >>> x, _ = testing.token_batch(batch_size=3)
    >>> m.predict(x).shape
    (3, 2)
    """
    inputs = model.input
    names = list(inputs) if isinstance(inputs, dict) else [getattr(inputs, "name", "inputs")]

    @tf.function(reduce_retracing=True)
    def forward(x):
        out = model(x if isinstance(inputs, dict) else x[names[0]], training=False)
        return tf.cast(out["logits"] if isinstance(out, dict) else out, tf.float32)

    def predict(x):
        with _expected_traces():  # (not the caller's own retracing: only during this call)
            return forward({k: tf.constant(x[k]) for k in names}).numpy()

    backbone = getattr(model, "backbone", None)
    return LoadedModel(name or model.name, "keras", path, predict, names, None,
                       weights_bytes(model) if path is None else dir_size(path),
                       int(model.count_params()), model,
                       max_length=getattr(backbone, "max_sequence_length", None))


def load_model(path):
    """Loads a `.keras` file, a SavedModel directory or a `.tflite` file for evaluation.

    Args:
        path: str.

    Returns:
        A `LoadedModel`.

    Raises:
        FileNotFoundError: nothing at `path`.
        ValueError: not one of the three kinds, a file that is not a valid archive of its kind
            (a truncated or renamed `.keras`, a `.tflite` that is not a TFLite flatbuffer),
            no `serving_default` signature, or a `labels.json` that does not fit the model.

    Example:
    >>> import tempfile
    >>> from kdistill import testing
    >>> path = os.path.join(tempfile.mkdtemp(), "tiny.keras")
    >>> testing.tiny_bert_classifier(num_classes=2).save(path)
    >>> model = load_model(path)
    >>> model.kind, sorted(model.input_names)
    ('keras', ['padding_mask', 'segment_ids', 'token_ids'])
    """
    path = os.fspath(path)
    name = os.path.basename(os.path.normpath(path))
    if not os.path.exists(path):
        raise FileNotFoundError(f"No model at {path}: expected a .keras file, a SavedModel "
                                "directory or a .tflite file.")
    if path.endswith(".tflite"):
        from ai_edge_litert.interpreter import Interpreter

        from kdistill.tflite import float_outputs

        _check_tflite_file(path)
        try:
            interpreter = Interpreter(model_path=path)
        except ValueError as error:
            raise ValueError(f"{path} is not a valid .tflite file ({error}). Export it again "
                             "with `kdistill export`, or pass the right file.") from None
        if "serving_default" not in interpreter.get_signature_list():
            raise ValueError(f"{path} has no serving_default signature; export it with "
                             "`kdistill export` (or kdistill.export_student).")
        runner = interpreter.get_signature_runner("serving_default")
        details = runner.get_input_details()
        lengths = {d["shape"][1] for d in details.values() if len(d["shape"]) >= 2}
        length = lengths.pop() if len(lengths) == 1 else None
        dtypes = {k: d["dtype"] for k, d in details.items()}

        def predict(x):
            rows = []
            for i in range(len(next(iter(x.values())))):
                row = {k: conform_length(x[k][i:i + 1], length, dtypes[k]) for k in dtypes}
                rows.append(float_outputs(runner, runner(**row))["logits"])  # int8: scaled
            return np.concatenate(rows).astype("float32")

        return _with_label_names(LoadedModel(name, "tflite", path, predict, sorted(dtypes),
                                             length, dir_size(path), None, runner), path)
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "saved_model.pb")):
            raise ValueError(f"{path} is a directory but not a SavedModel (no saved_model.pb).")
        loaded = tf.saved_model.load(path)
        if "serving_default" not in loaded.signatures:
            raise ValueError(f"The SavedModel {path} has no serving_default signature.")
        signature = loaded.signatures["serving_default"]
        specs = signature.structured_input_signature[1]
        lengths = {s.shape[1] for s in specs.values() if s.shape.rank and s.shape.rank >= 2}
        length = lengths.pop() if len(lengths) == 1 else None
        outputs = list(signature.structured_outputs)
        key = "logits" if "logits" in outputs else outputs[0]

        def predict(x):
            feed = {k: tf.constant(conform_length(x[k], length, s.dtype.as_numpy_dtype))
                    for k, s in specs.items()}
            return signature(**feed)[key].numpy().astype("float32")

        params = int(sum(np.prod(v.shape) for v in loaded.variables if v.dtype.is_floating))
        return _with_label_names(LoadedModel(name, "saved_model", path, predict, sorted(specs),
                                             length, dir_size(path), params, loaded), path)
    if not path.endswith((".keras", ".h5")):
        raise ValueError(f"{path}: unknown model file; use a .keras file, a SavedModel "
                         "directory or a .tflite file.")
    import keras_hub  # noqa: F401 - registers keras-hub classes for deserialisation

    import kdistill.vocabulary  # noqa: F401 - registers the pruned-vocabulary layers

    _check_keras_file(path)
    import zipfile

    try:
        model = keras.saving.load_model(path, compile=False)
    except (ValueError, OSError, KeyError, zipfile.BadZipFile) as error:
        if isinstance(error, ValueError) and "File not found" not in str(error):
            raise  # a real model problem (e.g. an unknown layer): Keras says which
        raise ValueError(f"{path} exists but is not a valid .keras archive ({error}). Save the "
                         "model again, or pass the right file.") from None
    loaded = keras_model(model, name=name, path=path)
    loaded.preprocessor = detach_preprocessor(model)
    _with_label_names(loaded, path)
    outputs = num_outputs(model)
    if loaded.label_names and outputs and outputs != len(loaded.label_names):
        raise ValueError(f"{loaded.labels_path} names {len(loaded.label_names)} classes "
                         f"{loaded.label_names} but {path} outputs {outputs}; the labels file "
                         "belongs to another model. Fix or remove it.")
    return loaded


def evaluate_model(model, split, batch_size=64):
    """Accuracy and mean cross-entropy of a `LoadedModel`'s logits on a labelled `Split`.

    Args:
        model: `LoadedModel`.
        split: `Split` with labels.
        batch_size: int.

    Returns:
        dict: `accuracy`, `loss`, `num_examples`.

    Example:
    >>> from kdistill import testing
    >>> from kdistill.data import Split
    >>> x, y = testing.token_batch(batch_size=8, num_classes=2)
    >>> m = keras_model(testing.tiny_bert_classifier(num_classes=2))
    >>> sorted(evaluate_model(m, Split(x, y)))
    ['accuracy', 'loss', 'num_examples']
    """
    if split.labels is None:
        raise ValueError("evaluate_model needs labelled data.")
    logits = np.concatenate([
        model.predict({k: v[i:i + batch_size] for k, v in split.inputs.items()})
        for i in range(0, len(split), batch_size)])
    labels = split.labels.astype("int64")
    if labels.max(initial=0) >= logits.shape[-1]:
        raise ValueError(f"{model.name} outputs {logits.shape[-1]} classes but the data has "
                         f"labels up to {labels.max()}.")
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return {"accuracy": float(np.mean(np.argmax(logits, -1) == labels)),
            "loss": float(-np.mean(log_probs[np.arange(len(labels)), labels])),
            "num_examples": int(len(labels))}


def benchmark_models(models, example, runs=50, warmup=5):
    """Median batch-1 latency of several models, measured in interleaved rounds.

    Each round runs every model once on the same example, so load changes on a shared machine
    hit all models alike; ratios between the medians are what to compare.

    Args:
        models: list of `LoadedModel`.
        example: dict of `[1, seq]` arrays.
        runs: int. Timed rounds.
        warmup: int. Untimed rounds first.

    Returns:
        list of float. Median milliseconds per model, in order.

    Example:
    >>> from kdistill import testing
    >>> m = keras_model(testing.tiny_bert_classifier(num_classes=2))
    >>> x, _ = testing.token_batch(batch_size=1)
    >>> [ms > 0 for ms in benchmark_models([m, m], x, runs=3, warmup=1)]
    [True, True]
    """
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}.")
    for _ in range(warmup):
        for model in models:
            model.predict(example)
    times = [[] for _ in models]
    for _ in range(runs):
        for i, model in enumerate(models):
            start = time.perf_counter()
            model.predict(example)
            times[i].append(time.perf_counter() - start)
    return [1000.0 * statistics.median(t) for t in times]



def format_table(entries, baseline=None):
    """Formats model measurements as a text table (used by the CLI commands).

    Args:
        entries: list of dict with `name` and any of `kind`, `size_bytes`, `params`,
            `accuracy`, `loss`, `latency_ms`.
        baseline: int or None. Index of the entry that latency ratios are relative to.

    Returns:
        str.

    Example:
    >>> print(format_table([{"name": "a", "size_bytes": 2e6, "latency_ms": 4.0},
    ...                     {"name": "b", "size_bytes": 1e6, "latency_ms": 1.0}], baseline=0))
    model  kind  size MB  params  accuracy  loss  ms (b=1)  speed-up
    a      -     2.000    -       -         -     4.000     1.00x
    b      -     1.000    -       -         -     1.000     4.00x
    """
    def fmt(value, spec):
        return "-" if value is None else format(value, spec)

    width = max([22] + [len(e["name"]) for e in entries])
    header = (f"{'model':<{width}} {'kind':<12}{'size MB':>9}{'params':>12}{'accuracy':>10}"
              f"{'loss':>10}{'ms (b=1)':>10}")
    if baseline is not None:
        header += f"{'speed-up':>11}"
    lines = [header]
    base = entries[baseline].get("latency_ms") if baseline is not None else None
    for e in entries:
        size = e.get("size_bytes")
        line = (f"{e['name']:<{width}} {e.get('kind') or '-':<12}"
                f"{fmt(None if size is None else size / 1e6, '.3f'):>9}"
                f"{fmt(e.get('params'), ','):>12}{fmt(e.get('accuracy'), '.2%'):>10}"
                f"{fmt(e.get('loss'), '.4f'):>10}{fmt(e.get('latency_ms'), '.3f'):>10}")
        if baseline is not None:
            ms = e.get("latency_ms")
            line += f"{fmt(None if not (base and ms) else base / ms, '.2f') + 'x':>11}"
        lines.append(line)
    return "\n".join(lines)
