"""`kdistill.tfx.run_fn` against the TFX Trainer contract, without tfx installed.

Inputs are laid out as ExampleGen writes them (`<examples>/Split-train/*.gz`, gzipped TFRecords of
`tf.train.Example`), and `FnArgs` below has the attribute names of
`tfx.components.trainer.fn_args_utils.FnArgs` (tfx 1.21).
"""

import dataclasses
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from kdistill import tfx as ktfx
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


def _fn_args(tmp_path, train, evaluation, **config):
    custom = {"teacher": config.pop("teacher"), "student": "test_tiny", "batch_size": 8,
              "export_args": {"latency_runs": 1, "latency_warmup": 0, "teacher": None,
                              "plot": False}}
    custom.update(config)
    return FnArgs(train_files=[train], eval_files=[evaluation],
                  serving_model_dir=str(tmp_path / "model" / "Format-Serving"),
                  model_run_dir=str(tmp_path / "model_run"), custom_config=custom)


def _serialized(pattern, n=8):
    files = sorted(tf.io.gfile.glob(pattern))
    return next(iter(tf.data.TFRecordDataset(files, compression_type="GZIP").batch(n)))


def _count(variables):
    return int(sum(np.prod(v.shape) for v in variables))


def test_run_fn_raw_text(workspace, tmp_path):
    args = _fn_args(tmp_path, workspace["text_train"], workspace["text_eval"],
                    teacher=workspace["teacher"], vocabulary=workspace["vocab"],
                    sequence_length=SEQ, epochs=2, learning_rate=1e-2)
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
    # The student's weights only (no teacher, no projections), each stored once.
    from kdistill import students, teachers

    student = students.student_for(teachers.load_teacher(workspace["teacher"]), "test_tiny")
    assert _count(loaded.variables) == student.count_params() < workspace["teacher_params"] / 2

    serving = report["serving_model"]
    for name in ("serving_default", "serving_tokens"):
        assert serving[name]["max_abs_diff"] < 1e-5
        assert serving[name]["top1_agreement"] == 1.0
    assert serving["input_format"] == "text" and report["reader"] == "tfrecord"
    assert len(report["history"]["loss"]) == 2 and "val_accuracy" in report["history"]
    assert report["artifacts"]["saved_model"]["max_abs_diff"] < 1e-5
    run_dir = args.model_run_dir
    with open(os.path.join(run_dir, "export", "report.json")) as f:
        assert json.load(f)["serving_model"] == json.loads(json.dumps(serving))
    assert os.path.isfile(os.path.join(args.serving_model_dir, "assets.extra",
                                       "kdistill_report.json"))
    assert os.path.isfile(os.path.join(run_dir, "training_log.csv"))
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        pass  # not a dependency of TF 2.21; TFX images have it
    else:
        events = [f for _, _, files in os.walk(run_dir) for f in files if "tfevents" in f]
        assert events, "no TensorBoard logs under model_run_dir"

    # The serving dir is never replaced without overwrite=True.
    with pytest.raises(FileExistsError, match="overwrite"):
        ktfx.run_fn(dataclasses.replace(args, model_run_dir=str(tmp_path / "run2")))


def test_run_fn_pretokenised_with_train_steps(workspace, tmp_path):
    args = _fn_args(
        tmp_path, workspace["tok_train"], workspace["tok_eval"], teacher=workspace["teacher"],
        token_features={"token_ids": "input_ids", "padding_mask": "attention_mask"},
        objectives="logits_kd", objective_args={"temperature": 3.0, "alpha": 0.2},
        export_formats=[])
    args.train_steps, args.eval_steps = 3, 1
    report = ktfx.run_fn(args)
    assert report["serving_model"]["input_format"] == "tokens"
    assert report["serving_model"]["sequence_length"] == SEQ
    assert report["history"]["loss"] and len(report["history"]["loss"]) == 1
    assert "artifacts" not in report  # export_formats=[]: no export_student run
    loaded = tf.saved_model.load(args.serving_model_dir)
    out = loaded.signatures["serving_default"](examples=_serialized(workspace["tok_eval"], 4))
    assert out["logits"].shape == (4, 2)
    assert report["serving_model"]["serving_default"]["max_abs_diff"] < 1e-5


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


def test_data_accessor_reader_matches_tfrecord_reader(workspace, tmp_path):
    """With fn_args.data_accessor and schema_path, the examples are read through TFXIO's
    factory; the batches are the same as reading the TFRecord files directly."""
    schema_path = tmp_path / "schema.pbtxt"
    schema_path.write_text('feature { name: "text" type: BYTES }\n'
                           'feature { name: "label" type: INT }\n')
    accessor = _FakeDataAccessor()
    args = _fn_args(tmp_path, workspace["text_train"], workspace["text_eval"],
                    teacher=workspace["teacher"], vocabulary=workspace["vocab"],
                    sequence_length=SEQ)
    config = ktfx.TrainerConfig.from_custom_config(args.custom_config)
    files = ktfx._expand(args.eval_files, "eval")
    preprocessor = ktfx._preprocessor(config, None, SEQ)
    features = ktfx._Features(config, ktfx._first_example(files, "GZIP", "eval"), preprocessor)
    direct = ktfx._Reader(args, config, features, "GZIP")
    args.data_accessor, args.schema_path = accessor, str(schema_path)
    via_tfxio = ktfx._Reader(args, config, features, "GZIP")
    assert (direct.name, via_tfxio.name) == ("tfrecord", "data_accessor")

    batches = [list(r.dataset(files, training=False).as_numpy_iterator())
               for r in (direct, via_tfxio)]
    assert len(batches[0]) == len(batches[1]) == 2

    def rows(batches):  # order-independent: the readers may interleave the two shards apart
        table = np.concatenate([np.concatenate([y[:, None]] + [x[k] for k in ktfx.TOKEN_INPUTS],
                                               axis=1) for x, y in batches])
        return table[np.lexsort(table.T[::-1])]

    np.testing.assert_array_equal(rows(batches[0]), rows(batches[1]))
    file_list, options, schema = accessor.calls[-1]
    assert file_list == files and options.label_key == "label" and options.batch_size == 8
    assert options.num_epochs == 1 and not options.shuffle
    assert [f.name for f in schema.feature] == ["text", "label"]
    np.testing.assert_array_equal(np.concatenate(list(via_tfxio.labels(files))),
                                  np.concatenate([y for _, y in batches[1]]))

    args.schema_path = None
    config.reader = "data_accessor"
    with pytest.raises(ValueError, match="needs fn_args.data_accessor and fn_args.schema_path"):
        ktfx._Reader(args, config, features, "GZIP")


# ----------------------------------------------------------------------------- clear errors


def _error(tmp_path, workspace, exc, match, train=None, evaluation=None, **config):
    config.setdefault("teacher", workspace["teacher"])
    config.setdefault("vocabulary", workspace["vocab"])
    args = _fn_args(tmp_path, train or workspace["text_train"],
                    evaluation or workspace["text_eval"], **config)
    with pytest.raises(exc, match=match):
        ktfx.run_fn(args)
    assert not os.path.exists(args.serving_model_dir)


def test_config_errors(workspace, tmp_path):
    with pytest.raises(ValueError, match="no 'teacher'"):
        ktfx.run_fn(FnArgs(custom_config={"student": "test_tiny"}))
    with pytest.raises(ValueError, match=r"Unknown custom_config key\(s\) \['batchsize'\]"):
        ktfx.TrainerConfig.from_custom_config({"teacher": "t.keras", "batchsize": 8})
    with pytest.raises(ValueError, match="fn_args.custom_config is missing"):
        ktfx.run_fn(FnArgs())
    config = ktfx.TrainerConfig.from_custom_config(  # the Vertex extension's keys pass through
        {"teacher": "t.keras", "ai_platform_training_args": {"project": "p"},
         "ai_platform_enable_vertex": True})
    assert config.teacher == "t.keras"
    with pytest.raises(ValueError, match="'reader'"):
        ktfx.TrainerConfig.from_custom_config({"teacher": "t", "reader": "parquet"})
    _error(tmp_path, workspace, ValueError, "Unknown student 'huge'", student="huge")
    _error(tmp_path, workspace, ValueError, "Unknown objectives preset", objectives="nope")
    _error(tmp_path, workspace, FileNotFoundError, "No teacher at",
           teacher=str(tmp_path / "missing.keras"))
    _error(tmp_path, workspace, ValueError, "transform_output",
           transform_output="/tmp/transform_graph")


def test_input_errors(workspace, tmp_path):
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
    _error(tmp_path, workspace, ValueError, "no tokenizer", vocabulary=None)
    _error(tmp_path, workspace, ValueError, "outputs 2 logits", num_classes=3)
    _error(tmp_path, workspace, ValueError, "holds int64_list; expected|not bytes_list",
           text_feature="label", input_format="text")


def test_label_count_mismatch(workspace, tmp_path):
    rows = [{"text": "w2 w3", "label": y} for y in (0, 1, 2, 1)]
    bad = _write_split(tmp_path / "bad", "eval", rows, shards=1)
    _error(tmp_path, workspace, ValueError, r"labels in \[0, 2\] but the teacher has 2 classes",
           evaluation=bad)
