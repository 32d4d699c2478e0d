"""What kdistill refuses at the door, and what it says: label names, files and paths.

Each test feeds one bad or awkward input (a file of one class, an unknown label, a latin-1 CSV,
a renamed or truncated model file, an unwritable directory, a corrupt teacher cache ...) and
checks the message names the file and the fix.
"""

import json
import os
import shutil

import numpy as np
import pytest

from kdistill import evaluation, testing
from kdistill.data import load_text_file
from tests.test_cli import run_cli
from tests.test_runner import VOCAB

# ----------------------------------------------------------------------------- label names


@pytest.fixture(scope="module")
def neg_model(tmp_path_factory):
    """A tiny classifier that answers `neg` (class 0) to everything, with its labels.json."""
    root = tmp_path_factory.mktemp("labels")
    with open(root / "vocab.txt", "w") as f:
        f.write("\n".join(VOCAB) + "\n")
    model = testing.tiny_bert_classifier(vocabulary_size=len(VOCAB), num_classes=2)
    dense = model.output_dense
    dense.set_weights([np.zeros_like(dense.kernel.numpy()), np.array([10.0, -10.0], "float32")])
    run = root / "run"
    run.mkdir()
    model.save(str(run / "student.keras"))
    evaluation.write_label_names(str(run), ["neg", "pos"])
    bare = root / "bare"
    bare.mkdir()
    shutil.copy(run / "student.keras", bare / "student.keras")
    for name, labels in (("pos_only.csv", ["pos"] * 4), ("odd.csv", ["pos", "maybe"]),
                         ("both.csv", ["neg", "pos"])):
        with open(root / name, "w") as f:
            f.write("text,label\n" + "".join(f"a good film,{y}\n" for y in labels))
    return root


def _evaluate(root, model, data, *flags):
    out = root / "eval.json"
    status, _, err = run_cli(["evaluate", str(model), "--data", str(root / data),
                              "--vocabulary", str(root / "vocab.txt"), "--json", str(out),
                              "--overwrite", *flags])
    if status:
        return status, err, None
    with open(out) as f:
        return status, err, json.load(f)["models"][0]


def test_evaluate_numbers_labels_as_the_model_was_trained(neg_model):
    # Only `pos` rows: the model (always `neg`) scores 0%, not 100% (`pos` is class 1).
    status, err, entry = _evaluate(neg_model, neg_model / "run" / "student.keras",
                                   "pos_only.csv")
    assert status == 0, err
    assert entry["accuracy"] == 0.0
    loaded = evaluation.load_model(str(neg_model / "run" / "student.keras"))
    assert loaded.label_names == ["neg", "pos"]
    assert loaded.labels_path == str(neg_model / "run" / "labels.json")


def test_evaluate_refuses_a_label_the_model_does_not_know(neg_model):
    status, err, _ = _evaluate(neg_model, neg_model / "run" / "student.keras", "odd.csv")
    assert status == 1
    assert (f"{neg_model / 'odd.csv'}, line 3: label 'maybe' is not one the model knows: "
            f"student.keras (from {neg_model / 'run' / 'labels.json'}) has the classes "
            "['neg', 'pos']") in err


def test_evaluate_without_label_names_refuses_a_file_of_fewer_classes(neg_model):
    bare = neg_model / "bare" / "student.keras"
    status, err, _ = _evaluate(neg_model, bare, "pos_only.csv")
    assert status == 1
    assert (f"{neg_model / 'pos_only.csv'} has the labels ['pos'] but the model outputs 2 "
            "classes, and no label names came with it (no labels.json next to it): cannot "
            "tell which class each label is. Pass --label-names") in err
    status, err, entry = _evaluate(neg_model, bare, "pos_only.csv", "--label-names", "neg,pos")
    assert status == 0 and entry["accuracy"] == 0.0, err
    # As many labels as outputs: numbered in sorted order, with a note saying so.
    status, err, entry = _evaluate(neg_model, bare, "both.csv")
    assert status == 0 and entry["accuracy"] == 0.5
    assert "the label names of the models are not known" in err


def test_label_names_that_contradict_the_model_are_refused(neg_model):
    status, err, _ = _evaluate(neg_model, neg_model / "run" / "student.keras", "pos_only.csv",
                               "--label-names", "pos,neg")
    assert status == 2
    assert ("--label-names ['pos', 'neg'] differ from the labels student.keras (from "
            f"{neg_model / 'run' / 'labels.json'}) was trained on: ['neg', 'pos']") in err


def test_a_broken_labels_file_is_named(neg_model, tmp_path):
    shutil.copy(neg_model / "bare" / "student.keras", tmp_path / "student.keras")
    (tmp_path / "labels.json").write_text('{"label_names": ["neg", "pos", "maybe"]}')
    with pytest.raises(ValueError, match=r"labels.json names 3 classes .* outputs 2; the labels "
                                         r"file belongs to another model"):
        evaluation.load_model(str(tmp_path / "student.keras"))
    (tmp_path / "labels.json").write_text("[1, 2")
    with pytest.raises(ValueError, match="labels.json is not a labels file"):
        evaluation.load_model(str(tmp_path / "student.keras"))


# ----------------------------------------------------------------------------- text files


def test_a_latin1_csv_names_the_file_line_and_the_encoding_option(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_bytes("text,label\nfine,pos\nun film très bon,pos\n".encode("latin-1"))
    with pytest.raises(ValueError) as error:
        load_text_file(str(path))
    assert str(error.value) == (
        f"{path}, line 3, column 11: byte 0xe8 is not valid utf-8 text (invalid continuation "
        "byte). Save the file as UTF-8, or pass the encoding it was saved in, e.g. "
        "encoding='latin-1' or 'cp1252'.")
    data = load_text_file(str(path), encoding="latin-1")
    texts = [t.decode() for t, _ in data.dataset.as_numpy_iterator()]
    assert texts[1] == "un film très bon"
    with pytest.raises(ValueError, match="Unknown encoding 'latin-42'"):
        load_text_file(str(path), encoding="latin-42")


def test_a_utf8_byte_order_mark_is_not_part_of_the_header(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes("text,label\nbon,pos\n".encode("utf-8-sig"))
    assert load_text_file(str(path)).num_examples == 1
    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_bytes(b'{"text": "a", "label": 1}\n{"text": "\xff", "label": 0}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl, line 2, column 11: byte 0xff"):
        load_text_file(str(jsonl))


def _latin1_csv(path, labels=("pos", "neg")):
    rows = "".join(f"{text},{label}\n" for text, label in zip(("bon", "un film très bon"),
                                                               labels))
    path.write_bytes(("text,label\n" + rows).encode("latin-1"))
    return path


def test_data_encoding_reads_a_latin1_file_and_without_it_the_error_names_the_key(tmp_path):
    from kdistill.config import load_data_config
    from kdistill.data import text_splits

    train = _latin1_csv(tmp_path / "train.csv")
    config = tmp_path / "run.yaml"
    config.write_text(f"data:\n  train: {train}\n")
    with pytest.raises(ValueError) as error:
        text_splits(load_data_config(str(config)))
    assert str(error.value) == (
        f"{train}, line 3, column 11: byte 0xe8 is not valid utf-8 text (invalid continuation "
        "byte). Save the file as UTF-8, or set the config key data.encoding to the encoding it "
        "was saved in (e.g. `data.encoding: latin-1` or `cp1252`).")
    config.write_text(f"data:\n  train: {train}\n  encoding: latin-1\n")
    texts = text_splits(load_data_config(str(config)))
    assert [t.decode() for t, _ in texts.train.as_numpy_iterator()] == ["bon",
                                                                        "un film très bon"]


def test_evaluate_names_the_encoding_flag_or_key(neg_model, tmp_path):
    path = _latin1_csv(tmp_path / "latin1.csv", labels=("pos", "pos"))
    status, err, _ = _evaluate(neg_model, neg_model / "run" / "student.keras", path)
    assert status == 1
    assert (f"{path}, line 3, column 11: byte 0xe8 is not valid utf-8 text (invalid "
            "continuation byte). Save the file as UTF-8, or pass --encoding with the encoding "
            "it was saved in (e.g. --encoding latin-1 or cp1252).") in err
    status, err, entry = _evaluate(neg_model, neg_model / "run" / "student.keras", path,
                                   "--encoding", "latin-1")
    assert status == 0 and entry["accuracy"] == 0.0, err
    config = tmp_path / "run.yaml"
    config.write_text(f"data:\n  train: {_latin1_csv(tmp_path / 'both.csv')}\n"
                      f"  vocabulary: {neg_model / 'vocab.txt'}\n")
    model = str(neg_model / "run" / "student.keras")
    status, _, err = run_cli(["evaluate", model, "--config", str(config)])
    assert status == 2  # the config's sequence_length (64) is longer than the model's 16
    assert (f"data.sequence_length of {config} is 64, longer than the position table of "
            "student.keras (16 positions): pass --sequence-length 16 (or less).") in err
    flags = ["--config", str(config), "--split", "train", "--sequence-length", "16"]
    status, _, err = run_cli(["evaluate", model, *flags])
    assert status == 1
    assert f"Save the file as UTF-8, or pass --encoding, or set data.encoding in {config}." in err
    status, _, err = run_cli(["evaluate", model, *flags, "--encoding", "latin-1"])
    assert status == 0, err


def test_a_latin1_project_trains_with_data_encoding_and_a_short_run_plots_its_losses(tmp_path):
    """`data.encoding: latin-1` reads every split of a run; a run shorter than `log_every`
    still logs its last step and writes loss_terms.png."""
    from kdistill import config as C
    from kdistill import runner
    from kdistill.plots import read_history
    from tests.test_runner import write_tiny_project

    project = write_tiny_project(str(tmp_path / "project"), train=8, dev=8, test=8)
    for name in ("train", "dev", "test"):
        path = os.path.join(project, f"{name}.csv")
        with open(path, encoding="utf-8") as f:
            rows = f.read().replace("film", "café film")
        with open(path, "wb") as f:
            f.write(rows.encode("latin-1"))
    raw = {"teacher": {"model": os.path.join(project, "teacher.keras")},
           "student": {"num_layers": 1, "hidden_dim": 8, "num_heads": 2, "intermediate_dim": 16},
           "data": {"train": os.path.join(project, "train.csv"),
                    "validation": os.path.join(project, "dev.csv"),
                    "test": os.path.join(project, "test.csv"),
                    "vocabulary": os.path.join(project, "vocab.txt"), "sequence_length": 16,
                    "batch_size": 4},
           "stages": {"task": {"epochs": 1}}, "log_every": 1000, "latency_runs": 1,
           "jit_compile": False, "output": str(tmp_path / "run")}
    with pytest.raises(ValueError, match=r"train.csv, line \d+, column \d+: byte 0xe9 is not "
                                         r"valid utf-8 text .* data.encoding"):
        runner.run(C.config_from_dict(raw), quiet=True)
    raw["data"]["encoding"] = "latin-1"
    # (The failed run left an unfinished run directory with another config: start over.)
    report = runner.run(C.config_from_dict(raw), quiet=True, overwrite=True)
    assert report["stages"]["task"]["steps"] == 2
    records = read_history(str(tmp_path / "run" / "history.jsonl"))
    assert [(r["step"], r["kind"]) for r in records] == [(2, "step"), (2, "epoch")]
    assert os.path.getsize(tmp_path / "run" / "loss_terms.png") > 0


# ----------------------------------------------------------------------- other label encodings


@pytest.mark.parametrize("name, body, names, labels", [
    ("floats.csv", "text,label\na,1.0\nb,2.0\nc,0.0\n", ["0", "1", "2"], [1, 2, 0]),
    ("ten.csv", "text,label\n" + "".join(f"t,{i}.0\n" for i in (0, 2, 10, 1, 3, 4, 5, 6, 7, 8, 9)),
     [str(i) for i in range(11)], [0, 2, 10, 1, 3, 4, 5, 6, 7, 8, 9]),  # by value, not as text
    ("signs.csv", "text,label\na,-1\nb,1\nc,-2\n", ["-2", "-1", "1"], [1, 2, 0]),
    ("bools.jsonl", '{"text": "a", "label": true}\n{"text": "b", "label": false}\n',
     ["0", "1"], [1, 0]),
    ("mixed.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": "1"}\n'
     '{"text": "c", "label": 0}\n', ["0", "1"], [1, 1, 0]),
])
def test_numeric_labels_are_numbered_by_value(tmp_path, name, body, names, labels):
    data = load_text_file(str(_write(tmp_path / name, body)))
    assert data.label_names == names
    assert [int(y) for _, y in data.dataset.as_numpy_iterator()] == labels


def _write(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize("name, body, message", [
    ("empty.csv", "text,label\na,pos\nb,\n", "{}, line 3: empty label in column 'label'. Fill "
     "it or remove the row (unlabelled text goes in a file of its own, e.g. data.unlabelled)."),
    ("null.jsonl", '{"text": "a", "label": null}\n', "{}, line 1: empty label in column "
     "'label'. Fill it or remove the row"),
    ("list.jsonl", '{"text": "a", "label": [1]}\n', "{}, line 1: the value in column 'label' "
     "is a JSON list; expected a string or a number (a class name or id)."),
    ("text.jsonl", '{"text": ["a"], "label": 1}\n', "{}, line 1: the value in column 'text' is "
     "a JSON list; expected a string (a text)."),
    ("scores.csv", "text,label\na,0.5\nb,1.5\n", "{}, line 2: the label '0.5' in column "
     "'label' is a number with a fractional part: labels must be class names or whole class "
     "ids (a regression target cannot be distilled as classes). Map the values to classes."),
])
def test_labels_that_are_no_class_are_refused(tmp_path, name, body, message):
    path = _write(tmp_path / name, body)
    with pytest.raises(ValueError) as error:
        load_text_file(str(path))
    assert str(error.value).startswith(message.format(path))


def test_integer_labels_with_gaps_get_a_warning(tmp_path):
    from kdistill.data.files import LabelGapWarning

    path = _write(tmp_path / "gaps.csv", "text,label\na,0\nb,1\nc,2\nd,5\n")
    with pytest.warns(LabelGapWarning) as caught:
        assert load_text_file(str(path)).num_classes == 6
    assert str(caught[0].message) == (
        f"{path}: the integer labels in column 'label' are [0, 1, 2, 5]: as class ids 0..5 they "
        "make 6 classes, and [3, 4] have no example. Renumber the labels 0..3; or, if the "
        "classes are meant, pass them all in order as label_names (config key "
        "data.label_names, flag --label-names) to say so.")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_text_file(str(path), label_names=[str(i) for i in range(6)])  # said so: quiet


def test_evaluate_reads_class_ids_as_the_models_outputs(neg_model, tmp_path):
    bare = neg_model / "bare" / "student.keras"  # no labels.json
    status, err, entry = _evaluate(neg_model, bare, _write(tmp_path / "ones.csv",
                                                           "text,label\nfilm,1\nfilm,1\n"))
    assert status == 0 and entry["accuracy"] == 0.0, err  # class 1 of 2, although 0 is absent
    assert "no example" not in err
    status, err, _ = _evaluate(neg_model, bare, _write(tmp_path / "five.csv",
                                                       "text,label\nfilm,0\nfilm,5\n"))
    assert status == 1
    assert (f"{tmp_path / 'five.csv'} has the class ids 0..5 but the model outputs 2 classes: "
            "evaluate on data with its classes (ids 0..1).") in err


# ----------------------------------------------------------------------------- vocabularies


@pytest.mark.parametrize("content, message", [
    ("", "{} is empty: a WordPiece vocab.txt has one token per line. Pass the vocab.txt of the "
         "teacher's tokenizer, or minilm."),
    ("the\nfilm\n", "{} lacks the special tokens ['[PAD]', '[UNK]', '[CLS]', '[SEP]', "
     "'[MASK]']: it is not a BERT WordPiece vocab.txt"),
    (None, "No vocabulary file {}: pass the vocab.txt of the teacher's tokenizer "
           "(data.vocabulary / --vocabulary), or minilm."),
])
def test_a_vocabulary_that_is_not_one_is_named(tmp_path, content, message):
    from kdistill.data import make_preprocessor

    path = tmp_path / "vocab.txt"
    if content is not None:
        path.write_text(content)
    with pytest.raises((ValueError, FileNotFoundError)) as error:
        make_preprocessor(str(path), 16)
    assert str(error.value).startswith(message.format(path))


# ----------------------------------------------------------------------------- model files


@pytest.mark.parametrize("content", ["csv", "truncated"])
def test_a_file_that_is_not_a_keras_archive_is_named(tmp_path, content):
    path = tmp_path / "model.keras"
    if content == "csv":
        path.write_text("text,label\ngood,pos\n")
        what = "it looks like text"
    else:
        testing.tiny_bert_classifier(num_classes=2).save(str(path))
        data = path.read_bytes()
        path.write_bytes(data[:len(data) // 2])
        what = "truncated or not a zip archive"
    with pytest.raises(ValueError) as error:
        evaluation.load_model(str(path))
    assert str(error.value) == (
        f"{path} exists but is not a valid .keras archive ({what}); a .keras file is the zip "
        "archive `model.save(...)` writes. Save the model again, or pass the right file.")
    status, _, err = run_cli(["evaluate", str(path), "--data", "rotten_tomatoes"])
    assert status == 1 and "not a valid .keras archive" in err and "File not found" not in err


def test_random_bytes_as_tflite_are_named(tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(np.random.default_rng(0).bytes(3000))
    with pytest.raises(ValueError) as error:
        evaluation.load_model(str(path))
    assert str(error.value) == (
        f"{path} is not a valid .tflite file (no TFLite flatbuffer header; truncated, or "
        "another kind of file). Export it again with `kdistill export`, or pass the right file.")


# ----------------------------------------------------------------------------- teacher caches


@pytest.fixture
def cache_dir(tmp_path):
    from kdistill.data.teacher_cache import cache_teacher_outputs

    directory = str(tmp_path / "cache")
    cache_teacher_outputs(testing.tiny_bert_classifier(),
                          testing.token_dataset(num_examples=8, batch_size=4), directory)
    return directory


def _flip_a_byte(cache_dir, where=40):
    shard = os.path.join(cache_dir, "shard-00000.tfrecord")
    data = bytearray(open(shard, "rb").read())
    data[where if where >= 0 else len(data) + where] ^= 1
    with open(shard, "wb") as f:
        f.write(bytes(data))


DAMAGED = ("The cache in {} is damaged: shard shard-00000.tfrecord does not match its sha256 in "
           "the manifest. Rebuild it with cache_teacher_outputs(..., overwrite=True).")
CHECK_FIRST = (" Pass verify_checksums=True to load_teacher_cache to check every shard before "
               "training.")


def test_a_flipped_byte_in_a_shard_is_named(cache_dir):
    import tensorflow as tf

    from kdistill.data import load_teacher_cache
    from kdistill.data.cache_reader import CacheReadError, diagnose_read_error
    from kdistill.input_checks import named_read_errors

    _flip_a_byte(cache_dir)
    with pytest.raises(ValueError) as error:
        load_teacher_cache(cache_dir, 4, verify_checksums=True)
    assert str(error.value) == DAMAGED.format(cache_dir)
    with pytest.raises(tf.errors.DataLossError) as error:
        list(load_teacher_cache(cache_dir, 4))
    assert str(diagnose_read_error(cache_dir, error.value)) == (DAMAGED.format(cache_dir)
                                                                + CHECK_FIRST)
    with pytest.raises(CacheReadError) as error, named_read_errors():
        list(load_teacher_cache(cache_dir, 4))
    assert str(error.value) == DAMAGED.format(cache_dir) + CHECK_FIRST
    assert error.value.shard == "shard-00000.tfrecord"


def _cached_distiller(cache_dir):
    import kdistill

    distiller = kdistill.Distiller(kdistill.data.CachedTeacher(cache_dir),
                                   testing.tiny_bert_classifier())
    distiller.compile(optimizer="adam")
    return distiller


def test_fit_on_a_cache_with_a_damaged_first_batch_names_the_shard(cache_dir):
    from kdistill.data import load_teacher_cache
    from kdistill.data.cache_reader import CacheReadError

    batches = load_teacher_cache(cache_dir, 4)
    _flip_a_byte(cache_dir)
    with pytest.raises(CacheReadError) as error:
        _cached_distiller(cache_dir).fit(batches, epochs=1, verbose=0)
    assert str(error.value) == DAMAGED.format(cache_dir) + CHECK_FIRST


def test_fit_on_a_cache_with_a_damaged_later_batch_names_the_shard(cache_dir):
    from kdistill.data import load_teacher_cache
    from kdistill.data.cache_reader import CacheReadError

    _flip_a_byte(cache_dir, -20)  # in the last record: the first batch reads fine
    with pytest.raises(CacheReadError) as error:
        _cached_distiller(cache_dir).fit(load_teacher_cache(cache_dir, 4), epochs=1, verbose=0)
    assert str(error.value) == DAMAGED.format(cache_dir) + CHECK_FIRST
    with pytest.raises(CacheReadError) as error:
        _cached_distiller(cache_dir).evaluate(load_teacher_cache(cache_dir, 4), verbose=0)
    assert error.value.shard == "shard-00000.tfrecord"


def test_a_read_error_of_other_data_passes_unchanged(cache_dir):
    import tensorflow as tf

    from kdistill.data import load_teacher_cache
    from kdistill.input_checks import named_read_errors

    batches = load_teacher_cache(cache_dir, 4)  # in use, and damaged (its first record) ...
    _flip_a_byte(cache_dir)
    other = os.path.join(os.path.dirname(cache_dir), "other.tfrecord")
    with tf.io.TFRecordWriter(other) as writer:
        for record in (b"one", b"two", b"three"):
            writer.write(record)
    data = bytearray(open(other, "rb").read())
    data[-6] ^= 1
    with open(other, "wb") as f:
        f.write(bytes(data))
    # ... but other data fails at another offset: not blamed on the cache.
    with pytest.raises(tf.errors.DataLossError, match="corrupted record at 50"), \
            named_read_errors():
        list(tf.data.TFRecordDataset(other))
    assert batches is not None


def test_a_manifest_whose_example_count_was_edited_is_refused(cache_dir):
    from kdistill.data import load_teacher_cache

    path = os.path.join(cache_dir, "manifest.json")
    with open(path) as f:
        manifest = json.load(f)
    manifest["num_examples"] = 10
    with open(path, "w") as f:
        json.dump(manifest, f)
    with pytest.raises(ValueError) as error:
        load_teacher_cache(cache_dir, 4)
    assert str(error.value) == (
        f"The cache in {cache_dir} is inconsistent: its manifest says 10 examples but its "
        "shards hold 8 (shard-00000.tfrecord: 8); the manifest was edited or belongs to other "
        "shards. Rebuild it with cache_teacher_outputs(..., overwrite=True).")


@pytest.mark.parametrize("damage, message", [
    (lambda text: text[:len(text) // 2], "{}/manifest.json is not valid JSON"),
    (lambda text: text.replace('"shards"', '"shardz"'), "{}/manifest.json lacks ['shards']: it "
     "was edited or damaged. Rebuild it with cache_teacher_outputs(..., overwrite=True)."),
    (lambda text: "{}", "{}/manifest.json is not a kdistill teacher cache manifest."),
])
def test_a_damaged_manifest_is_named(cache_dir, damage, message):
    from kdistill.data import load_teacher_cache

    path = os.path.join(cache_dir, "manifest.json")
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(damage(text))
    with pytest.raises(ValueError) as error:
        load_teacher_cache(cache_dir, 4)
    assert str(error.value).startswith(message.format(cache_dir))


# ----------------------------------------------------------------------------- the command line


@pytest.fixture
def rt_config(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("data:\n  dataset: rotten_tomatoes\n")
    return str(path)


def test_an_unwritable_output_directory_is_named(rt_config, tmp_path, monkeypatch):
    from kdistill import runner

    target = str(tmp_path / "locked" / "run")

    def refuse(config, **kwargs):
        raise PermissionError(13, "Permission denied", target)

    monkeypatch.setattr(runner, "run", refuse)
    status, _, err = run_cli(["distill", rt_config, "--output", target])
    assert status == 2
    assert err.strip() == (
        f"kdistill distill: error: cannot write {target}: permission denied. Choose a "
        "directory you can write with --output, or fix its permissions.")


def test_sigterm_says_how_to_resume(rt_config, tmp_path, monkeypatch):
    import signal

    from kdistill import runner

    def terminated(config, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(runner, "run", terminated)
    out = str(tmp_path / "run")
    status, _, err = run_cli(["distill", rt_config, "--output", out])
    assert status == 130
    assert err.strip() == (f"kdistill distill: error: terminated (SIGTERM); run the same "
                           f"command again to resume from the last backup in {out}.")
    assert signal.getsignal(signal.SIGTERM) is before  # restored after the run


def test_outputs_are_checked_before_the_work(tmp_path):
    existing = tmp_path / "eval.json"
    existing.write_text("{}")
    missing_model = str(tmp_path / "missing.keras")
    status, _, err = run_cli(["evaluate", missing_model, "--data", "rotten_tomatoes",
                              "--json", str(existing)])
    assert status == 2 and f"{existing} exists; pass --overwrite to replace it." in err
    status, _, err = run_cli(["benchmark", missing_model, "--json", str(existing)])
    assert status == 2 and "exists; pass --overwrite" in err
    status, _, err = run_cli(["evaluate", missing_model, "--data", "rotten_tomatoes",
                              "--json", str(tmp_path / "no" / "eval.json")])
    assert status == 2 and f"no directory {tmp_path / 'no'}" in err


def test_export_refusal_names_the_flag(tmp_path):
    (tmp_path / "edge").mkdir()
    status, _, err = run_cli(["export", str(tmp_path / "student.keras"), "--output",
                              str(tmp_path / "edge")])
    assert status == 2
    assert "pass --overwrite" in err and "overwrite=True" not in err


@pytest.mark.parametrize("command", ["distill", "demo"])
def test_an_unwritable_teacher_cache_dir_is_named(rt_config, tmp_path, monkeypatch, command):
    from kdistill import runner

    cache = tmp_path / "locked"
    target = str(cache / "teachers" / "abc" / "teacher.keras")

    def refuse(config, **kwargs):
        raise PermissionError(13, "Permission denied", target)

    monkeypatch.setattr(runner, "run", refuse)
    argv = ([command, rt_config, "--set", f"teacher.cache_dir={cache}"] if command == "distill"
            else [command, "--cache-dir", str(cache)]) + ["--output", str(tmp_path / "run")]
    status, _, err = run_cli(argv)
    flag = "--set teacher.cache_dir=DIR" if command == "distill" else "--cache-dir"
    assert status == 2
    assert err.strip() == (
        f"kdistill {command}: error: cannot write {target}: permission denied. Choose a "
        f"directory you can write with {flag}, or fix its permissions.")


def test_an_unwritable_export_directory_is_named(neg_model, tmp_path, monkeypatch):
    from kdistill import export

    out = tmp_path / "edge"
    target = str(out / "saved_model")

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", target)

    monkeypatch.setattr(export, "export_student", refuse)
    status, _, err = run_cli(["export", str(neg_model / "run" / "student.keras"), "--output",
                              str(out), "--json", str(tmp_path / "report.json")])
    assert status == 2
    assert err.strip() == (
        f"kdistill export: error: cannot write {target}: permission denied. Choose a directory "
        "you can write with --output, or fix its permissions.")


def test_benchmark_without_data_fits_the_models_position_table(neg_model):
    model = str(neg_model / "run" / "student.keras")  # 16 positions
    status, out, err = run_cli(["benchmark", model, "--runs", "1", "--warmup", "0"])
    assert status == 0, err
    status, _, err = run_cli(["benchmark", model, "--runs", "1", "--sequence-length", "32"])
    assert status == 1
    assert ("--sequence-length 32 is longer than the position table of student.keras (16 "
            "positions): pass --sequence-length 16, or benchmark the models separately.") in err


def test_changing_only_latency_runs_resumes_an_unfinished_run(tmp_path):
    from kdistill import run_directory

    out = str(tmp_path / "run")
    run_directory.prepare_run_dir(out, {"seed": 0, "latency_runs": 20, "output": out})
    assert run_directory.prepare_run_dir(out, {"seed": 0, "latency_runs": 5, "output": out,
                                        "targets": {"speedup": 10}})["resumed"]
    with open(os.path.join(out, "config.json")) as f:
        assert json.load(f)["latency_runs"] == 5  # the new values are recorded
    with pytest.raises(FileExistsError, match=r"differs in: seed\)"):
        run_directory.prepare_run_dir(out, {"seed": 1, "latency_runs": 5, "output": out})
