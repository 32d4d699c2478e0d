"""Teacher inference at scale: an Apache Beam pipeline that writes kdistill teacher caches.

`cache_teacher_outputs_beam` reads sharded input files, tokenises them, runs the teacher with
Beam's `RunInference`, and writes the **same** cache as `kdistill.data.cache_teacher_outputs`
(sharded TFRecords of `encode_teacher_example` records plus `manifest.json`), so
`kdistill.data.load_teacher_cache` and `kdistill.Distiller(teacher=None)` read it unchanged. On
the DirectRunner it runs in the local process; with `--runner=DataflowRunner` (or Flink, Spark)
the teacher runs on many workers.

Inputs (one format per run):

- `"tfrecord"`: TFRecord files of `tf.train.Example` (ExampleGen output; `*.gz` is read as
  gzip) with a text feature and an integer label, or pre-tokenised `token_ids` features, read
  exactly as `kdistill.tfx.run_fn` reads them;
- `"jsonl"`: one JSON object per line; `"tsv"` / `"csv"`: a header line (the same in every file)
  then one example per line (no quoted newlines).

The teacher is loaded by `KerasTeacherModelHandler`, a Beam `ModelHandler` built on
`kdistill.teachers.load_teacher` and `kdistill.taps`. Beam's own
`apache_beam.ml.inference.tensorflow_inference.TFModelHandlerTensor` was tried and not used: its
module imports `tensorflow_hub` (not an apache-beam dependency), it stacks each batch into one
tensor while keras-hub teachers take a dict of three (`token_ids`, `padding_mask`,
`segment_ids`), it loads with `tf.keras.models.load_model`, which under Keras 3 reads `.keras`
files but not SavedModel directories, and it returns the model's outputs only, while the cache
may also hold hidden states and attention maps.

Requires the optional extra `kdistill[beam]` (`apache-beam>=2.77`). Note: apache-beam 2.77 pins
`protobuf<7`, `pyarrow<26` and `pillow<13`, older than what TF 2.21 installs by default here;
install it in its own environment (see the README, "Scaling out").
"""

import csv
import io
import json
import os

import numpy as np
import tensorflow as tf

try:
    import apache_beam as beam
    from apache_beam.ml.inference.base import ModelHandler, PredictionResult, RunInference
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "kdistill.beam needs Apache Beam: pip install 'kdistill[beam]' (apache-beam>=2.77). "
        "It pins protobuf<7; install it in its own virtualenv if your TF environment has "
        "protobuf 7 (see the README, 'Scaling out')."
    ) from error

from kdistill.data import teacher_cache as tc
from kdistill.data.tf_examples import FeatureNames, Features, first_example
from kdistill.taps import LOGITS, build_taps

INPUT_FORMATS = ("auto", "tfrecord", "jsonl", "tsv", "csv")
_DELIMITERS = {"tsv": "\t", "csv": ","}


# ----------------------------------------------------------------------------- the model handler


class _TeacherStep:
    """A loaded teacher: its taps model and a compiled forward step."""

    def __init__(self, teacher_path, taps, layer_names):
        from kdistill.teachers import load_teacher

        teacher = load_teacher(teacher_path)
        self.taps = build_taps(teacher, taps, layer_names=layer_names)
        self.step = tf.function(lambda x: self.taps(x, training=False), reduce_retracing=True)


class KerasTeacherModelHandler(ModelHandler):
    """A Beam `ModelHandler` running a kdistill teacher's taps on examples of token arrays.

    Each example is a dict `{"x": {"token_ids", "padding_mask", "segment_ids"}, ...}` of
    per-example NumPy arrays (what `cache_teacher_outputs_beam` produces after tokenising); the
    handler stacks a batch, runs the teacher once (`training=False`) and returns one
    `PredictionResult(example, {tap: array or list of per-layer arrays})` per example.

    Args:
        teacher_path: str. A `.keras` file or a SavedModel directory (logits only), loaded with
            `kdistill.teachers.load_teacher` on each worker.
        taps: sequence of str. The teacher taps to compute (`kdistill.taps.TAP_NAMES`).
        layer_names: dict or None. Layer names for non-keras-hub teachers' taps.
        min_batch_size: int. Smallest batch RunInference forms.
        max_batch_size: int. Largest batch RunInference forms.

    Example:
    >>> import tempfile
    >>> from kdistill import testing
    >>> path = os.path.join(tempfile.mkdtemp(), "teacher.keras")
    >>> testing.tiny_bert_classifier(num_classes=2).save(path)
    >>> handler = KerasTeacherModelHandler(path, taps=["logits"])
    >>> x, _ = testing.token_batch(batch_size=2)
    >>> examples = [{"x": {k: v[i] for k, v in x.items()}} for i in range(2)]
    >>> [r.inference["logits"].shape for r in handler.run_inference(examples,
    ...                                                             handler.load_model())]
    [(2,), (2,)]
    """

    def __init__(self, teacher_path, taps=(LOGITS,), layer_names=None, min_batch_size=1,
                 max_batch_size=64):
        super().__init__(min_batch_size=min_batch_size, max_batch_size=max_batch_size)
        self._teacher_path = os.fspath(teacher_path)
        self._taps = list(taps)
        self._layer_names = layer_names

    def load_model(self):
        return _TeacherStep(self._teacher_path, self._taps, self._layer_names)

    def run_inference(self, batch, model, inference_args=None):
        keys = sorted(batch[0]["x"])
        x = {k: tf.constant(np.stack([example["x"][k] for example in batch])) for k in keys}
        outputs = tf.nest.map_structure(lambda t: t.numpy(), model.step(x))
        for i, example in enumerate(batch):
            yield PredictionResult(example, tf.nest.map_structure(lambda a: a[i], outputs),
                                   model_id=self._teacher_path)

    def get_num_bytes(self, batch):
        return sum(a.nbytes for example in batch for a in example["x"].values())

    def get_metrics_namespace(self):
        return "kdistill_teacher"


# ----------------------------------------------------------------------------- input


def _input_format(files, setting):
    if setting != "auto":
        return setting
    name = files[0].lower().removesuffix(".gz")
    for ext, fmt in ((".jsonl", "jsonl"), (".json", "jsonl"), (".tsv", "tsv"), (".csv", "csv")):
        if name.endswith(ext):
            return fmt
    if ".tfrecord" in name or "tfrecord" in os.path.basename(name):
        return "tfrecord"
    raise ValueError(f"Cannot tell the input format of {files[0]}; pass input_format= one of "
                     f"{INPUT_FORMATS[1:]}.")


def _expand(patterns):
    if isinstance(patterns, (str, os.PathLike)):
        patterns = [patterns]
    files = []
    for pattern in patterns:
        matched = sorted(f for f in tf.io.gfile.glob(os.fspath(pattern))
                         if not tf.io.gfile.isdir(f))
        if not matched:
            raise FileNotFoundError(f"No input files match {os.fspath(pattern)!r}.")
        files += matched
    if not files:
        raise ValueError("input_patterns is empty: give at least one file pattern.")
    return files


def _open_text(path):
    raw = tf.io.gfile.GFile(path, "rb").read()
    if path.endswith(".gz"):
        import gzip

        raw = gzip.decompress(raw)
    return io.StringIO(raw.decode("utf-8"))


def _header(files, delimiter):
    headers = {}
    for path in files:
        with _open_text(path) as f:
            headers[path] = next(csv.reader([f.readline().rstrip("\r\n")], delimiter=delimiter),
                                 [])
    first = headers[files[0]]
    different = [p for p, h in headers.items() if h != first]
    if different:
        raise ValueError(f"The files do not share one header: {files[0]} has {first}, "
                         f"{different[0]} has {headers[different[0]]}.")
    return first


def _to_example(row, names):
    """A dict row -> serialized `tf.train.Example` with the `FeatureNames`' features."""
    feature = {}
    for name in filter(None, [names.text_feature, names.text_pair_feature]):
        if name not in row:
            raise ValueError(f"Row has no {name!r} field: {sorted(row)}.")
        feature[name] = tf.train.Feature(bytes_list=tf.train.BytesList(
            value=[str(row[name]).encode("utf-8")]))
    label = names.label_feature
    if label:
        if label not in row:
            raise ValueError(f"Row has no label field {label!r}: {sorted(row)}.")
        value = row[label]
        if isinstance(value, str) and names.label_names:
            feature[label] = tf.train.Feature(bytes_list=tf.train.BytesList(
                value=[value.encode("utf-8")]))
        else:
            try:
                value = int(value)
            except (TypeError, ValueError):
                raise ValueError(f"Label {value!r} is not an integer class id; pass label_names "
                                 "to map string labels.") from None
            feature[label] = tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _row_parser(fmt, header):
    if fmt == "jsonl":
        return json.loads
    delimiter = _DELIMITERS[fmt]

    def parse(line):
        values = next(csv.reader([line], delimiter=delimiter))
        if len(values) != len(header):
            raise ValueError(f"A {fmt} line has {len(values)} fields, the header "
                             f"{len(header)}: {line[:200]!r}")
        return dict(zip(header, values))

    return parse


def _first_record(files, fmt, names, header):
    if fmt == "tfrecord":
        compression = "GZIP" if files[0].endswith(".gz") else ""
        return first_example(files, compression, "input").SerializeToString()
    parse = _row_parser(fmt, header)
    for path in files:
        with _open_text(path) as f:
            if fmt != "jsonl":
                f.readline()
            for line in f:
                if line.strip():
                    return _to_example(parse(line.rstrip("\r\n")), names)
    raise ValueError(f"The input files ({files[0]}, ...) hold no examples.")


def _preprocessor(vocabulary, sequence_length, lowercase):
    """A WordPiece preprocessor from a `vocab.txt` on any filesystem TF reads, or None."""
    if vocabulary is None:
        return None
    import keras_hub

    vocabulary = os.fspath(vocabulary)
    if not tf.io.gfile.exists(vocabulary):
        raise FileNotFoundError(f"vocabulary {vocabulary!r} does not exist; give the teacher's "
                                "WordPiece vocab.txt.")
    with tf.io.gfile.GFile(vocabulary) as f:
        tokens = [line.rstrip("\n") for line in f if line.strip()]
    tokenizer = keras_hub.tokenizers.BertTokenizer(vocabulary=tokens, lowercase=lowercase)
    return keras_hub.models.BertTextClassifierPreprocessor(tokenizer,
                                                           sequence_length=sequence_length)


def _features(names, first_record, tokenizer):
    """The `kdistill.tfx.Features` of the first record; raises for text without a tokenizer."""
    vocabulary, sequence_length, lowercase = tokenizer
    example = tf.train.Example.FromString(first_record)
    preprocessor = _preprocessor(vocabulary, sequence_length or 128, lowercase)
    return Features(names, example, preprocessor, sequence_length).check_tokenizer()


class _Tokenize(beam.DoFn):
    """Batches of serialized tf.Examples -> per-example `{"x": arrays, "y": label}`."""

    def __init__(self, names, first_record, tokenizer):
        self._names = names
        self._first_record = first_record
        self._tokenizer = tokenizer  # (vocabulary, sequence_length, lowercase)

    def setup(self):
        features = _features(self._names, self._first_record, self._tokenizer)
        self._parse = tf.function(features.parse, reduce_retracing=True)

    def process(self, batch):
        parsed = self._parse(tf.constant(batch))
        x, y = parsed if self._names.label_feature else (parsed, None)
        x = {k: v.numpy() for k, v in x.items()}
        x["padding_mask"] = x["padding_mask"].astype(bool)  # as keras-hub preprocessors give it
        y = None if y is None else y.numpy().astype(np.int64)
        for i in range(len(batch)):
            yield {"x": {k: v[i] for k, v in x.items()}, "y": None if y is None else y[i]}


# ----------------------------------------------------------------------------- output


class _Encode(beam.DoFn):
    def __init__(self, dtype, top_k):
        self._dtype, self._top_k = dtype, top_k

    def process(self, result):
        example = result.example
        yield tc.encode_teacher_example(example["x"], result.inference, labels=example["y"],
                                        dtype=self._dtype, top_k=self._top_k)


class _CacheStats(beam.CombineFn):
    """Count, data fingerprint, longest unpadded length and record layout of the examples."""

    def __init__(self, dtype, top_k):
        self._dtype, self._top_k = dtype, top_k

    def create_accumulator(self):
        return {"fingerprint": tc.DataFingerprint(), "max_length": 0, "features": None,
                "sequence_length": None}

    def add_input(self, acc, result):
        x, y = result.example["x"], result.example["y"]
        acc["fingerprint"].add_example(x, y)
        real = np.flatnonzero(x["padding_mask"])
        acc["max_length"] = max(acc["max_length"], int(real[-1]) + 1 if real.size else 1)
        if acc["features"] is None:
            acc["features"] = tc.describe_teacher_example(x, result.inference, labels=y,
                                                          dtype=self._dtype, top_k=self._top_k)
            acc["sequence_length"] = int(x["padding_mask"].shape[0])
        return acc

    def merge_accumulators(self, accumulators):
        merged = self.create_accumulator()
        for acc in accumulators:
            merged["fingerprint"].merge(acc["fingerprint"])
            merged["max_length"] = max(merged["max_length"], acc["max_length"])
            if merged["features"] is None:
                merged["features"] = acc["features"]
                merged["sequence_length"] = acc["sequence_length"]
        return merged

    def extract_output(self, acc):
        return acc


def _write_manifest(directory, files, stats, teacher, taps, dtype, top_k):
    count = stats["fingerprint"].count
    if count == 0:
        raise ValueError("The inputs hold no examples: nothing was cached.")
    names = sorted(os.path.basename(f) for f in files)
    return tc.write_manifest(
        directory, stats["features"], count, teacher, stats["fingerprint"].hexdigest(), taps,
        dtype=dtype, top_k=top_k, shards=[{"path": n} for n in names],
        sequence_length=stats["sequence_length"], max_length=stats["max_length"])


# ----------------------------------------------------------------------------- the pipeline


def cache_teacher_outputs_beam(input_patterns, output_dir, teacher, taps=(LOGITS,), top_k=None,
                               dtype="float16", vocabulary=None, sequence_length=None,
                               input_format="auto", text_feature="text", text_pair_feature=None,
                               label_feature="label", label_names=None, token_features=None,
                               lowercase=True, batch_size=64, num_shards=0, layer_names=None,
                               overwrite=False, beam_args=None, pipeline=None):
    """Runs a teacher over sharded files with Beam `RunInference` and writes a teacher cache.

    The cache is the one `kdistill.data.cache_teacher_outputs` writes for the same examples
    (records from `encode_teacher_example`, `manifest.json` from `write_manifest` with the same
    teacher and order-independent data fingerprints), read back with
    `kdistill.data.load_teacher_cache`. Shards are named `shard-SSSSS-of-NNNNN.tfrecord`; the
    manifest is written last, by the pipeline, once every shard is final (an interrupted run
    leaves no manifest, which the loader reports).

    Args:
        input_patterns: str or list of str. File patterns (local or any filesystem TF and Beam
            read, e.g. `gs://`).
        output_dir: str. The cache directory; must not exist or be empty, unless `overwrite`
            (then it must hold a kdistill cache, which is replaced).
        teacher: str. A `.keras` file or a SavedModel directory (logits only), loaded on each
            worker (and once here, for the manifest's teacher fingerprint and tap shapes).
        taps: sequence of str. Teacher taps to store.
        top_k: int or None. Keep only the k largest logits.
        dtype: str. `"float16"` or `"float32"` storage of the taps.
        vocabulary: str or None. The teacher's WordPiece `vocab.txt` (needed for raw text).
        sequence_length: int or None. Tokens per example (default 128 for raw text).
        input_format: str. `"auto"` (from the first file's extension), `"tfrecord"`, `"jsonl"`,
            `"tsv"` or `"csv"`.
        text_feature, text_pair_feature, label_feature, label_names, token_features, lowercase:
            Feature (or column / JSON field) names and label mapping, as in
            `kdistill.tfx.FeatureNames` (and `lowercase` of the WordPiece tokenizer).
            `label_feature=None` caches unlabelled examples.
        batch_size: int. Largest teacher batch (RunInference's `max_batch_size`).
        num_shards: int. Output shards; 0 lets the runner choose.
        layer_names: dict or None. Layer names for a non-keras-hub teacher's taps.
        overwrite: bool. Replace an existing cache in `output_dir`.
        beam_args: list of str or None. Pipeline options, e.g. `["--runner=DataflowRunner",
            "--project=p", "--region=r", "--temp_location=gs://b/tmp"]`; default the
            DirectRunner.
        pipeline: `beam.Pipeline` or None. Add the transforms to this (not yet run) pipeline
            instead and return without running it.

    Returns:
        The manifest dict (None when `pipeline` is given: the pipeline writes it when run).

    Example:
    >>> import tempfile
    >>> from kdistill import testing
    >>> from kdistill.data import load_teacher_cache
    >>> root = tempfile.mkdtemp()
    >>> testing.tiny_bert_classifier(num_classes=2).save(os.path.join(root, "t.keras"))
    >>> vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "film"]
    >>> with open(os.path.join(root, "vocab.txt"), "w") as f:
    ...     _ = f.write("\\n".join(vocab))
    >>> with open(os.path.join(root, "train.jsonl"), "w") as f:
    ...     _ = f.write('{"text": "good film", "label": 1}\\n{"text": "bad film", "label": 0}\\n')
    >>> manifest = cache_teacher_outputs_beam(
    ...     os.path.join(root, "*.jsonl"), os.path.join(root, "cache"),
    ...     os.path.join(root, "t.keras"), vocabulary=os.path.join(root, "vocab.txt"),
    ...     sequence_length=8)
    >>> manifest["num_examples"], manifest["taps"]
    (2, ['logits'])
    >>> x, y, targets = next(iter(load_teacher_cache(os.path.join(root, "cache"), 2)))
    >>> targets["logits"].shape
    TensorShape([2, 2])
    """
    from apache_beam.options.pipeline_options import PipelineOptions

    from kdistill.teachers import load_teacher

    taps = list(dict.fromkeys(taps))
    files, fmt = _checked_inputs(input_patterns, dtype, input_format, top_k, taps,
                                 sequence_length, batch_size)
    names = FeatureNames(
        text_feature=text_feature, text_pair_feature=text_pair_feature,
        label_feature=label_feature, label_names=label_names, token_features=token_features,
        input_format="auto" if fmt == "tfrecord" else "text").validate()
    tokenizer = (vocabulary, sequence_length, lowercase)
    header = _header(files, _DELIMITERS[fmt]) if fmt in _DELIMITERS else None
    first = _first_record(files, fmt, names, header)
    # Fail here, not on the workers: the features, the tokenizer and the teacher's taps.
    _features(names, first, tokenizer)
    output_dir = os.fspath(output_dir)
    tc.check_cache_directory(output_dir, overwrite)
    tap_model = build_taps(load_teacher(teacher), taps, layer_names=layer_names)
    teacher_meta = tc.teacher_metadata(tap_model)
    if overwrite and tf.io.gfile.exists(output_dir):
        tf.io.gfile.rmtree(output_dir)  # allowed only a kdistill cache here
    tf.io.gfile.makedirs(output_dir)

    own_pipeline = pipeline is None
    if own_pipeline:
        pipeline = beam.Pipeline(options=PipelineOptions(beam_args or ["--runner=DirectRunner"]))
    records = _read_records(pipeline, files, fmt, header, names)
    results = (
        records
        | "BatchRecords" >> beam.BatchElements(min_batch_size=1, max_batch_size=256)
        | "Tokenize" >> beam.ParDo(_Tokenize(names, first, tokenizer))
        | "Teacher" >> RunInference(KerasTeacherModelHandler(
            teacher, taps=taps, layer_names=layer_names, max_batch_size=batch_size)))
    written = (
        results
        | "Encode" >> beam.ParDo(_Encode(dtype, top_k))
        | "Write" >> beam.io.WriteToTFRecord(
            os.path.join(output_dir, "shard"), file_name_suffix=".tfrecord",
            num_shards=num_shards, shard_name_template="-SSSSS-of-NNNNN"))
    stats = results | "Stats" >> beam.CombineGlobally(_CacheStats(dtype, top_k))
    _ = (pipeline
         | "Directory" >> beam.Create([output_dir])
         | "Manifest" >> beam.Map(_write_manifest, files=beam.pvalue.AsList(written),
                                  stats=beam.pvalue.AsSingleton(stats), teacher=teacher_meta,
                                  taps=taps, dtype=dtype, top_k=top_k))
    if not own_pipeline:
        return None
    pipeline.run().wait_until_finish()
    return tc.read_manifest(output_dir)


def _checked_inputs(input_patterns, dtype, input_format, top_k, taps, sequence_length,
                    batch_size):
    """`(files, format)` after checking the arguments that need no teacher."""
    if dtype not in ("float16", "float32"):
        raise ValueError(f"dtype must be 'float16' or 'float32', got {dtype!r}.")
    if input_format not in INPUT_FORMATS:
        raise ValueError(f"input_format must be one of {INPUT_FORMATS}, got {input_format!r}.")
    if top_k is not None and LOGITS not in taps:
        raise ValueError("top_k applies to the logits, but 'logits' is not among taps.")
    files = _expand(input_patterns)
    fmt = _input_format(files, input_format)
    for name, value, optional in (("sequence_length", sequence_length, True),
                                  ("batch_size", batch_size, False)):
        if (value is None and optional) or (not isinstance(value, bool)
                                            and isinstance(value, int) and value >= 1):
            continue
        raise ValueError(f"{name} must be a positive int{' or None' if optional else ''}, got "
                         f"{value!r}.")
    return files, fmt


def _read_records(pipeline, files, fmt, header, names):
    """The input files as serialized tf.Examples (TFRecord) or rows turned into tf.Examples."""
    paths = pipeline | "Files" >> beam.Create(files)
    if fmt == "tfrecord":  # gzip detected from the *.gz names, as ExampleGen writes them
        return paths | "Read" >> beam.io.ReadAllFromTFRecord()
    parse = _row_parser(fmt, header)
    return (
        paths
        | "Read" >> beam.io.ReadAllFromText(skip_header_lines=0 if fmt == "jsonl" else 1)
        | "NonEmpty" >> beam.Filter(lambda line: bool(line.strip()))
        | "ToExample" >> beam.Map(lambda line: _to_example(parse(line), names)))


def main(argv=None):
    """`python -m kdistill.beam --input ... --output ... --teacher ... [-- beam options]`."""
    import argparse

    parser = argparse.ArgumentParser(
        description="Cache a teacher's outputs with Apache Beam RunInference. Options after "
                    "`--` go to Beam (e.g. --runner=DataflowRunner --project=...).")
    parser.add_argument("--input", required=True, action="append",
                        help="input file pattern (repeatable)")
    parser.add_argument("--output", required=True, help="cache directory")
    parser.add_argument("--teacher", required=True, help=".keras file or SavedModel dir")
    parser.add_argument("--vocabulary", help="the teacher's WordPiece vocab.txt (raw text)")
    parser.add_argument("--sequence-length", type=int)
    parser.add_argument("--input-format", default="auto", choices=INPUT_FORMATS)
    parser.add_argument("--text-feature", default="text")
    parser.add_argument("--label-feature", default="label")
    parser.add_argument("--taps", default=LOGITS, help="comma-separated teacher taps")
    parser.add_argument("--top-k", type=int)
    parser.add_argument("--dtype", default="float16", choices=("float16", "float32"))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-shards", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true")
    args, beam_args = parser.parse_known_args(argv)
    manifest = cache_teacher_outputs_beam(
        args.input, args.output, args.teacher, taps=args.taps.split(","), top_k=args.top_k,
        dtype=args.dtype, vocabulary=args.vocabulary, sequence_length=args.sequence_length,
        input_format=args.input_format, text_feature=args.text_feature,
        label_feature=args.label_feature or None, batch_size=args.batch_size,
        num_shards=args.num_shards, overwrite=args.overwrite,
        beam_args=[a for a in beam_args if a != "--"] or None)
    print(f"{manifest['num_examples']} examples, {len(manifest['shards'])} shards, "
          f"{manifest['bytes'] / 1e6:.2f} MB in {args.output}")


if __name__ == "__main__":
    main()
