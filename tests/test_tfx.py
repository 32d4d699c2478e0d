"""`kdistill.tfx.run_fn` against the TFX Trainer contract, without tfx installed.

Inputs are laid out as ExampleGen writes them (`<examples>/Split-train/*.gz`, gzipped TFRecords of
`tf.train.Example`), and `FnArgs` below has the attribute names of
`tfx.components.trainer.fn_args_utils.FnArgs` (tfx 1.21). `custom_config["config"]` is the same
RunConfig `kdistill distill` reads; the runs are tiny (one epoch, a 2-layer teacher of width 16, a
`test_tiny` student, 48 training examples).
"""

import dataclasses
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from kdistill import tfx as ktfx
from kdistill.config import ConfigError
from kdistill.data import tf_examples
from kdistill.testing import tiny_bert_classifier

WORDS = [f"w{i}" for i in range(59)]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS  # 64 = the teacher's vocabulary
SEQ = 12


@dataclasses.dataclass
class FnArgs:
    """The attributes of tfx.components.FnArgs (tfx 1.21), as the Trainer executor fills them."""

    working_dir: str = None
    train_files: list = None
    eval_files: list = None
    train_steps: int = None
    eval_steps: int = None
    schema_path: str = None
    schema_file: str = None
    transform_graph_path: str = None
    transform_output: str = None
    data_accessor: object = None
    serving_model_dir: str = None
    eval_model_dir: str = None
    model_run_dir: str = None
    base_model: str = None
    hyperparameters: dict = None
    custom_config: dict = None


def _feature(value):
    if isinstance(value, str):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode()]))
    values = list(np.atleast_1d(value))
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def _rows(n, seed):
    """Texts with a learnable label: 1 when the text mentions w1."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        words = list(rng.choice(WORDS[2:], size=rng.integers(2, 8)))
        label = i % 2
        if label:
            words[rng.integers(len(words))] = "w1"
        rows.append((" ".join(words), label))
    return rows


def _write_split(root, split, examples, shards=2):
    """ExampleGen layout: <root>/Split-<split>/data_tfrecord-0000i-of-0000n.gz."""
    directory = os.path.join(root, f"Split-{split}")
    os.makedirs(directory, exist_ok=True)
    options = tf.io.TFRecordOptions(compression_type="GZIP")
    writers = [tf.io.TFRecordWriter(
        os.path.join(directory, f"data_tfrecord-{i:05d}-of-{shards:05d}.gz"), options)
        for i in range(shards)]
    for i, example in enumerate(examples):
        writers[i % shards].write(tf.train.Example(features=tf.train.Features(
            feature={k: _feature(v) for k, v in example.items()})).SerializeToString())
    for writer in writers:
        writer.close()
    return os.path.join(directory, "*")


def _tokenize(text):
    ids = [2] + [VOCAB.index(w) for w in text.split()][:SEQ - 2] + [3]
    return ids + [0] * (SEQ - len(ids))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("tfx")
    train, evaluation = _rows(48, seed=0), _rows(16, seed=1)
    paths = {"root": root}
    paths["text_train"] = _write_split(root / "text", "train",
                                       [{"text": t, "label": y} for t, y in train])
    paths["text_eval"] = _write_split(root / "text", "eval",
                                      [{"text": t, "label": y} for t, y in evaluation])

    def tokens(rows):  # HF-style feature names, mapped with custom_config["token_features"]
        return [{"input_ids": _tokenize(t), "attention_mask": np.array(_tokenize(t)) > 0,
                 "label": y} for t, y in rows]

    paths["tok_train"] = _write_split(root / "tokens", "train", tokens(train))
    paths["tok_eval"] = _write_split(root / "tokens", "eval", tokens(evaluation))
    paths["vocab"] = str(root / "vocab.txt")
    (root / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    import keras

    keras.utils.set_random_seed(1)
    teacher = tiny_bert_classifier(vocabulary_size=64, num_classes=2, hidden_dim=16,
                                   max_sequence_length=SEQ)
    paths["teacher"] = str(root / "teacher.keras")
    teacher.save(paths["teacher"])
    paths["teacher_params"] = teacher.count_params()
    return paths


def _run_config(workspace, **data):
    """A tiny RunConfig mapping: the keys of a `kdistill distill` YAML."""
    return {"teacher": {"model": workspace["teacher"]},
            "student": {"preset": "test_tiny"},
            "data": dict({"sequence_length": SEQ, "batch_size": 8, "eval_batch_size": 8,
                          "trim_padding": False},
                         **data),
            "stages": {"task": {"epochs": 1, "learning_rate": 1e-2, "schedule": "constant"}},
            "metrics": ["accuracy"], "latency_runs": 1, "jit_compile": False}


def _fn_args(tmp_path, train, evaluation, config, **custom):
    return FnArgs(train_files=[train], eval_files=[evaluation],
                  serving_model_dir=str(tmp_path / "model" / "Format-Serving"),
                  model_run_dir=str(tmp_path / "model_run"),
                  custom_config=dict(custom, config=config))


def _serialized(pattern, n=8):
    files = sorted(tf.io.gfile.glob(pattern))
    return next(iter(tf.data.TFRecordDataset(files, compression_type="GZIP").batch(n)))


def _count(variables):
    return int(sum(np.prod(v.shape) for v in variables))


def test_run_fn_raw_text(workspace, tmp_path):
    config = _run_config(workspace, vocabulary=workspace["vocab"])
    args = _fn_args(tmp_path, workspace["text_train"], workspace["text_eval"], config)
    report = ktfx.run_fn(args)

    # What Evaluator and Pusher read: a SavedModel at serving_model_dir.
    loaded = tf.saved_model.load(args.serving_model_dir)
    assert set(loaded.signatures) == {"serving_default", "serving_tokens"}
    serialized = _serialized(workspace["text_eval"])
    by_example = loaded.signatures["serving_default"](examples=serialized)
    assert by_example["logits"].shape == (8, 2)
    np.testing.assert_allclose(tf.reduce_sum(by_example["probabilities"], -1), 1.0, rtol=1e-5)
    texts = [tf.train.Example.FromString(s).features.feature["text"].bytes_list.value[0].decode()
             for s in serialized.numpy()]
    ids = np.array([_tokenize(t) for t in texts], "int32")
    by_tokens = loaded.signatures["serving_tokens"](
        token_ids=ids, padding_mask=(ids > 0).astype("int32"), segment_ids=np.zeros_like(ids))
    np.testing.assert_allclose(by_example["logits"], by_tokens["logits"], atol=1e-5)
    # The student's weights only (no teacher, no projections), each stored once; the same
    # weights as the runner's student.keras.
    import keras

    student = keras.saving.load_model(report["student_path"], compile=False)
    assert _count(loaded.variables) == student.count_params() < workspace["teacher_params"] / 2
    x = {"token_ids": ids, "padding_mask": ids > 0, "segment_ids": np.zeros_like(ids)}
    np.testing.assert_allclose(by_tokens["logits"], student(x), atol=1e-5)

    serving = report["serving_model"]
    for name in ("serving_default", "serving_tokens"):
        assert serving[name]["max_abs_diff"] < 1e-5
        assert serving[name]["top1_agreement"] == 1.0
    assert serving["input_format"] == "text" and report["reader"] == "tfrecord"
    # The runner's report: one task epoch on all 48 examples, measured on the eval split.
    run_dir = args.model_run_dir
    assert report["stages"]["task"]["epochs"] == 1
    assert report["stages"]["task"]["examples"] == 48
    assert report["student"]["accuracy"] is not None and "relative_accuracy" in report["ratios"]
    assert report["config"]["output"] == os.path.join(run_dir, "kdistill")
    assert report["config"]["teacher"]["cache_dir"] == os.path.join(run_dir, "teacher_cache")
    with open(os.path.join(run_dir, "report.json")) as f:
        assert json.load(f)["serving_model"] == json.loads(json.dumps(serving))
    assert os.path.isfile(os.path.join(run_dir, "kdistill", "report.json"))
    assert os.path.isfile(os.path.join(args.serving_model_dir, "assets.extra",
                                       "kdistill_report.json"))
    events = [f for _, _, files in os.walk(run_dir) for f in files if "tfevents" in f]
    assert events, "no TensorBoard logs under model_run_dir"

    # The serving dir is never replaced without overwrite=True (checked before training).
    with pytest.raises(FileExistsError, match="overwrite"):
        ktfx.run_fn(dataclasses.replace(args, model_run_dir=str(tmp_path / "run2")))
    assert not os.path.exists(tmp_path / "run2")


def test_run_fn_pretokenised_with_train_steps(workspace, tmp_path):
    config = _run_config(workspace)
    del config["data"]["sequence_length"]  # taken from the token features
    config["stages"]["task"]["objectives"] = {"preset": "logits_kd", "temperature": 3.0,
                                              "alpha": 0.2}
    args = _fn_args(tmp_path, workspace["tok_train"], workspace["tok_eval"], config,
                    token_features={"token_ids": "input_ids", "padding_mask": "attention_mask"},
                    signatures={"tokens": "tokens"})
    args.model_run_dir = "ram://kdistill_tfx_test/model_run"  # a remote run dir gets a copy
    args.train_steps, args.eval_steps = 7, 1  # 6 steps per epoch: rounded up to 2 epochs
    report = ktfx.run_fn(args)
    assert report["tfx"]["steps_per_epoch"] == 6 and report["tfx"]["epochs"] == 2
    assert report["stages"]["task"]["epochs"] == 2 and report["stages"]["task"]["steps"] == 12
    assert report["tfx"]["max_eval_examples"] == 8 and report["student"]["num_examples"] == 8
    assert report["serving_model"]["input_format"] == "tokens"
    assert report["serving_model"]["sequence_length"] == SEQ
    assert report["config"]["data"]["sequence_length"] == SEQ
    assert "export" not in report  # export.formats is empty
    loaded = tf.saved_model.load(args.serving_model_dir)
    assert set(loaded.signatures) == {"serving_default", "tokens"}
    out = loaded.signatures["serving_default"](examples=_serialized(workspace["tok_eval"], 4))
    assert out["logits"].shape == (4, 2)
    assert report["serving_model"]["serving_default"]["max_abs_diff"] < 1e-5
    assert report["serving_model"]["tokens"]["max_abs_diff"] < 1e-5
    for name in ("report.json", "kdistill/report.json", "kdistill/student.keras"):
        assert tf.io.gfile.exists(f"{args.model_run_dir}/{name}"), name


class _FakeDataAccessor:
    """`DataAccessor.tf_dataset_factory(file_pattern, options, schema)` as TFXIO behaves: a
    batched `(features, label)` dataset, features without a fixed shape in the schema as
    SparseTensors (VarLenFeature), with `options.label_key` split out."""

    def __init__(self):
        self.calls = []

    def tf_dataset_factory(self, file_pattern, options, schema):
        self.calls.append((list(file_pattern), options, schema))
        files = sorted(f for p in file_pattern for f in tf.io.gfile.glob(p))
        spec = {}
        for feature in schema.feature:
            dtype = tf.string if feature.type == 1 else tf.int64  # schema_pb2.BYTES == 1
            spec[feature.name] = tf.io.VarLenFeature(dtype)
        dataset = tf.data.TFRecordDataset(files, compression_type="GZIP")
        dataset = dataset.batch(options.batch_size).map(lambda s: tf.io.parse_example(s, spec))
        return dataset.map(lambda f: ({k: v for k, v in f.items() if k != options.label_key},
                                      f[options.label_key]))


@pytest.mark.parametrize("kind", ["text", "tok"])
def test_data_accessor_reader_matches_tfrecord_reader(workspace, tmp_path, kind):
    """With fn_args.data_accessor and schema_path, the examples are read through TFXIO's
    factory; the elements are the same as reading the TFRecord files directly."""
    schema_path = tmp_path / "schema.pbtxt"
    inputs = ('feature { name: "text" type: BYTES }\n' if kind == "text" else
              'feature { name: "input_ids" type: INT }\n'
              'feature { name: "attention_mask" type: INT }\n')
    schema_path.write_text(inputs + 'feature { name: "label" type: INT }\n')
    accessor = _FakeDataAccessor()
    names = tf_examples.FeatureNames(token_features={"token_ids": "input_ids",
                                              "padding_mask": "attention_mask"})
    files = sorted(tf.io.gfile.glob(workspace[f"{kind}_eval"]))
    features = tf_examples.Features(names, tf_examples.first_example(files, "GZIP", "eval"))
    args = FnArgs()
    direct = tf_examples.ExampleReader.for_fn_args(args, "auto", features, "GZIP")
    args.data_accessor, args.schema_path = accessor, str(schema_path)
    via_tfxio = tf_examples.ExampleReader.for_fn_args(args, "auto", features, "GZIP")
    assert (direct.name, via_tfxio.name) == ("tfrecord", "data_accessor")

    def rows(reader):  # order-independent: the readers may interleave the two shards apart
        def key(element):
            x, y = element
            x = x if isinstance(x, bytes) else tuple(np.concatenate(
                [x[k].astype("int64") for k in tf_examples.TOKEN_INPUTS]).tolist())
            return x, int(y)
        return sorted(map(key, reader.dataset(files).as_numpy_iterator()))

    assert len(rows(direct)) == 16 and rows(direct) == rows(via_tfxio)
    file_list, options, schema = accessor.calls[-1]
    assert file_list == files and options.label_key == "label"
    assert options.num_epochs == 1 and not options.shuffle
    assert [f.name for f in schema.feature][-1] == "label"
    np.testing.assert_array_equal(np.sort(np.concatenate(list(via_tfxio.labels(files)))),
                                  np.sort(np.concatenate(list(direct.labels(files)))))

    args.schema_path = None
    with pytest.raises(ValueError, match="needs fn_args.data_accessor and fn_args.schema_path"):
        tf_examples.ExampleReader.for_fn_args(args, "data_accessor", features, "GZIP")


# ----------------------------------------------------------------------------- clear errors


def test_custom_config_keys(workspace, tmp_path):
    base = {"config": _run_config(workspace, vocabulary=workspace["vocab"])}

    def error(match, **custom):
        with pytest.raises(ConfigError, match=match):
            ktfx.TfxConfig.from_custom_config(dict(base, **custom))

    error(r"custom_config\['label_featur'\]: unknown key. Did you mean 'label_feature'\?",
          label_featur="y")
    error(r"\['batch_size'\]: a RunConfig setting; put it in custom_config\['config'\] "
          r"\(as data.batch_size\)", batch_size=8)
    error(r"\['stages'\]: a RunConfig setting", stages={})
    error(r"custom_config\['reader'\] = 'parquet'", reader="parquet")
    error(r"custom_config\['strategy'\]", strategy="tpu")
    error(r"custom_config\['overwrite'\] must be true or false", overwrite="yes")
    error(r"custom_config\['signatures'\] needs at least one", signatures={"examples": None,
                                                                             "tokens": None})
    error(r"custom_config\['token_features'\] maps model inputs", token_features={"ids": "x"})
    error(r"custom_config\['label_names'\] has duplicates", label_names=["a", "a"])
    with pytest.raises(ConfigError, match="has no 'config'"):
        ktfx.TfxConfig.from_custom_config({"text_feature": "text"})
    # The Vertex extension's keys pass through.
    config = ktfx.TfxConfig.from_custom_config(
        dict(base, ai_platform_training_args={"project": "p"}, ai_platform_enable_vertex=True))
    assert config.features == {} and config.strategy == "auto"

    # A config file is the same RunConfig as the mapping; its relative paths resolve against
    # the file's directory, and its data files are replaced by the Trainer's examples.
    import yaml

    on_disk = dict(base["config"], teacher={"model": "teacher.keras"})
    on_disk["data"] = dict(on_disk["data"], vocabulary="vocab.txt", train="train.csv",
                           text_column="sentence")
    path = workspace["root"] / "run.yaml"
    path.write_text(yaml.safe_dump(on_disk))
    from_file = ktfx.TfxConfig.from_custom_config({"config": str(path)})
    run = from_file.run_config([(("output",), str(tmp_path / "out"), "test")])
    assert run.teacher.model == workspace["teacher"] and run.data.vocabulary == workspace["vocab"]
    assert run.data.train is None
    assert from_file.resolve_features(run.data).text_feature == "sentence"  # data.text_column
    path.write_text(yaml.safe_dump(dict(on_disk, student={"preset": "huge"})))
    with pytest.raises(ConfigError, match=r"run.yaml, line \d+: student.preset: unknown value"):
        ktfx.TfxConfig.from_custom_config({"config": str(path)}).run_config()


def _error(tmp_path, workspace, exc, match, train=None, evaluation=None, config=None,
           **custom):
    config = config or _run_config(workspace, vocabulary=workspace["vocab"])
    args = _fn_args(tmp_path, train or workspace["text_train"],
                    evaluation or workspace["text_eval"], config, **custom)
    with pytest.raises(exc, match=match):
        ktfx.run_fn(args)
    assert not os.path.exists(args.serving_model_dir)
    assert not os.path.exists(os.path.join(args.model_run_dir, "kdistill", "student.keras"))


def test_run_fn_config_errors(workspace, tmp_path):
    with pytest.raises(ValueError, match="fn_args.custom_config is missing"):
        ktfx.run_fn(FnArgs())
    with pytest.raises(ConfigError, match=r"\['teacher'\]: a RunConfig setting"):
        ktfx.run_fn(FnArgs(custom_config={"teacher": "t.keras"}))
    config = _run_config(workspace, vocabulary=workspace["vocab"])
    _error(tmp_path, workspace, ConfigError, "student.preset: unknown value 'huge'",
           config=dict(config, student={"preset": "huge"}))
    _error(tmp_path, workspace, ConfigError, "teacher.model: no teacher at",
           config=dict(config, teacher={"model": str(tmp_path / "missing.keras")}))
    _error(tmp_path, workspace, ValueError, "transform_output",
           transform_output="/tmp/transform_graph")
    _error(tmp_path, workspace, ConfigError, r"\['label_feature'\] is None", label_feature=None)
    with_steps = _fn_args(tmp_path, workspace["text_train"], workspace["text_eval"],
                          dict(config, stages={"task": {"epochs": 0},
                                               "finetune": {"epochs": 1}}))
    with_steps.train_steps = 10
    with pytest.raises(ConfigError, match="stages.task.epochs is 0"):
        ktfx.run_fn(with_steps)


def test_run_fn_input_errors(workspace, tmp_path):
    _error(tmp_path, workspace, FileNotFoundError, "No train files match",
           train=str(tmp_path / "Split-train" / "*"))
    empty = tmp_path / "empty" / "Split-eval"
    empty.mkdir(parents=True)
    with tf.io.TFRecordWriter(str(empty / "data_tfrecord-00000-of-00001.gz"), "GZIP"):
        pass
    _error(tmp_path, workspace, ValueError, "The eval split is empty",
           evaluation=str(empty / "*"))
    _error(tmp_path, workspace, ValueError, r"lack the feature\(s\) \['review'\]",
           text_feature="review", input_format="text")
    _error(tmp_path, workspace, ValueError, "no tokenizer", config=_run_config(workspace))
    _error(tmp_path, workspace, ValueError, "holds int64_list, not bytes_list",
           text_feature="label", input_format="text")
    config = _run_config(workspace)  # sequence_length 12 given, and the tokens hold 12: fine;
    config["data"]["sequence_length"] = 16  # 16 is a contradiction
    _error(tmp_path, workspace, ConfigError, "data.sequence_length is 16 but the token features "
           "hold 12", train=workspace["tok_train"], evaluation=workspace["tok_eval"],
           config=config, token_features={"token_ids": "input_ids"})


def test_label_count_mismatch(workspace, tmp_path):
    rows = [{"text": "w2 w3", "label": y} for y in (0, 1, 2, 1)]
    bad = _write_split(tmp_path / "bad", "eval", rows, shards=1)
    _error(tmp_path, workspace, ValueError, r"labels in \[0, 2\] but the teacher has 2 classes",
           evaluation=bad)
    strings = [_write_split(tmp_path / "strings", split,
                            [{"text": "w2", "label": n} for n in names], shards=1)
               for split, names in (("train", ("neg", "pos")), ("eval", ("neg", "pos", "meh")))]
    _error(tmp_path, workspace, ValueError, r"eval split has labels in \[-1, 1\] \(-1: a string "
           r"label not in label_names\)", train=strings[0], evaluation=strings[1],
           label_names=["neg", "pos"])
