"""`kdistill.beam`: the Beam RunInference pipeline writes the same teacher cache as
`kdistill.data.cache_teacher_outputs` (DirectRunner, small slice)."""

import doctest
import json
import os

import numpy as np
import pytest
import tensorflow as tf

beam = pytest.importorskip(
    "apache_beam",
    reason="apache-beam is not installed (pip install 'kdistill[beam]'); it pins protobuf<7, so "
           "`make test-beam` runs these tests in a separate environment (.cache/venv-beam)")

from kdistill import data  # noqa: E402
from kdistill.data import teacher_cache as tc  # noqa: E402
from kdistill.testing import tiny_bert_classifier  # noqa: E402

WORDS = [f"w{i}" for i in range(59)]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
SEQ = 10


def _rows(n, seed=0):
    rng = np.random.default_rng(seed)
    return [(" ".join(rng.choice(WORDS, size=rng.integers(1, 12))), int(i % 3)) for i in range(n)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    import keras
    import keras_hub

    root = tmp_path_factory.mktemp("beam")
    (root / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    keras.utils.set_random_seed(3)
    teacher = tiny_bert_classifier(vocabulary_size=64, num_classes=3, max_sequence_length=SEQ)
    teacher.save(root / "teacher.keras")
    tokenizer = keras_hub.tokenizers.BertTokenizer(vocabulary=VOCAB, lowercase=True)
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(tokenizer,
                                                                    sequence_length=SEQ)
    return {"root": root, "teacher": teacher, "preprocessor": preprocessor,
            "teacher_path": str(root / "teacher.keras"), "vocab": str(root / "vocab.txt")}


def _sorted_examples(directory):
    """All cached examples as NumPy, sorted by (label, token ids): order-independent."""
    manifest = tc.read_manifest(directory)
    x, y, targets = next(iter(tc.load_teacher_cache(directory, manifest["num_examples"],
                                                    sequence_length=SEQ)))
    keys = np.concatenate([y.numpy()[:, None], x["token_ids"].numpy()], axis=1)
    order = np.lexsort(keys.T[::-1])
    return (
        {k: v.numpy()[order] for k, v in x.items()}, y.numpy()[order],
        tf.nest.map_structure(lambda t: t.numpy()[order], targets))


def test_beam_cache_equals_local_cache(setup, tmp_path):
    rows = _rows(22)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for shard in range(2):  # two JSONL shards
        with open(inputs / f"part-{shard}.jsonl", "w") as f:
            for text, label in rows[shard::2]:
                f.write(json.dumps({"sentence": text, "label": label}) + "\n")
    taps = ["logits", "hidden_states"]
    beam_dir = str(tmp_path / "beam_cache")
    manifest = pytest.importorskip("kdistill.beam").cache_teacher_outputs_beam(
        str(inputs / "*.jsonl"), beam_dir, setup["teacher_path"], taps=taps, dtype="float32",
        vocabulary=setup["vocab"], sequence_length=SEQ, text_feature="sentence", batch_size=4,
        num_shards=3)
    assert manifest["num_examples"] == 22 and len(manifest["shards"]) == 3
    assert [s["path"] for s in manifest["shards"]] == [
        f"shard-{i:05d}-of-00003.tfrecord" for i in range(3)]

    texts = [t for t, _ in rows]
    labels = np.array([y for _, y in rows], np.int64)
    local = data.tokenize_dataset(tf.data.Dataset.from_tensor_slices((texts, labels)),
                                  setup["preprocessor"], batch_size=5)
    local_dir = str(tmp_path / "local_cache")
    reference = tc.cache_teacher_outputs(setup["teacher"], local, local_dir, taps=taps,
                                         dtype="float32")

    # Same examples, same teacher, same record layout: equal fingerprints and features.
    for key in ("data_fingerprint", "teacher", "features", "taps", "dtype", "num_examples",
                "sequence_length", "max_length"):
        assert manifest[key] == reference[key], key
    (bx, by, bt), (lx, ly, lt) = _sorted_examples(beam_dir), _sorted_examples(local_dir)
    np.testing.assert_array_equal(by, ly)
    for key in lx:
        np.testing.assert_array_equal(bx[key], lx[key])
    np.testing.assert_allclose(bt["logits"], lt["logits"], atol=1e-5)
    for b, a in zip(bt["hidden_states"], lt["hidden_states"]):
        np.testing.assert_allclose(b, a, atol=1e-5)
    # The cache trains a Distiller with no teacher (a smoke check of the format).
    import keras

    import kdistill

    student = tiny_bert_classifier(vocabulary_size=64, num_classes=3, hidden_dim=4,
                                   max_sequence_length=SEQ)
    distiller = kdistill.Distiller(None, student)
    distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    history = distiller.fit(tc.load_teacher_cache(beam_dir, 8), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def _example(token_ids, label):
    return tf.train.Example(features=tf.train.Features(feature={
        "input_ids": tf.train.Feature(int64_list=tf.train.Int64List(value=token_ids)),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
    })).SerializeToString()


def test_beam_reads_examplegen_tfrecords_with_top_k(setup, tmp_path):
    from kdistill import beam as kbeam

    split = tmp_path / "Split-train"
    split.mkdir()
    rng = np.random.default_rng(1)
    count = 0
    for shard in range(2):
        path = split / f"data_tfrecord-{shard:05d}-of-00002.gz"
        with tf.io.TFRecordWriter(str(path), "GZIP") as writer:
            for _ in range(5):
                length = int(rng.integers(3, SEQ + 1))
                ids = [2] + list(rng.integers(5, 64, length - 2)) + [3] + [0] * (SEQ - length)
                writer.write(_example(ids, count % 3))
                count += 1
    out = str(tmp_path / "cache")
    manifest = kbeam.cache_teacher_outputs_beam(
        str(split / "*"), out, setup["teacher_path"], top_k=2,
        token_features={"token_ids": "input_ids"})
    assert manifest["num_examples"] == 10 and manifest["top_k"] == 2
    x, y, targets = _sorted_examples(out)
    assert targets["logits"].shape == (10, 3)
    assert (targets["logits"] == tc.TOP_K_FILL).sum(axis=1).tolist() == [1] * 10
    # The teacher's own logits on the same tokens, top 2 kept (float16 storage).
    logits = setup["teacher"]({k: tf.constant(v) for k, v in x.items()}).numpy()
    kept = targets["logits"] != tc.TOP_K_FILL
    np.testing.assert_allclose(targets["logits"][kept], logits[kept], atol=2e-3)

    with pytest.raises(FileExistsError, match="overwrite=True"):
        kbeam.cache_teacher_outputs_beam(str(split / "*"), out, setup["teacher_path"],
                                         token_features={"token_ids": "input_ids"})
    with pytest.raises(FileNotFoundError, match="No input files match"):
        kbeam.cache_teacher_outputs_beam(str(tmp_path / "nothing" / "*"), str(tmp_path / "c2"),
                                         setup["teacher_path"])
    (tmp_path / "rows.tsv").write_text("text\tlabel\nw1 w2\t1\n")
    with pytest.raises(ValueError, match="no tokenizer"):
        kbeam.cache_teacher_outputs_beam(str(tmp_path / "rows.tsv"), str(tmp_path / "c3"),
                                         setup["teacher_path"])
    assert not os.path.exists(tmp_path / "c3")


def test_docstring_examples():
    from kdistill import beam as kbeam

    result = doctest.testmod(kbeam, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
