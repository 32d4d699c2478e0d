"""Raw text in, labels out: the SavedModel's `serve_text` and the sidecar JSON of every .tflite.

One export of a small pruned-vocabulary student (`VocabularyMappedClassifier`) that reads the
packaged MiniLM's real WordPiece vocabulary, checked on real Rotten Tomatoes snippets. The two
snippets of docs/export.md run as written there: `serve_text` with `tf.saved_model.load`, and
the sidecar one that classifies a string with `ai_edge_litert` alone.
"""

import json
import os
import pathlib
import re
import subprocess
import sys

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

from kdistill import serving, students, tflite_sidecar
from kdistill.data import LABEL_NAMES, make_preprocessor, rotten_tomatoes_splits
from kdistill.export import export_student
from kdistill.vocabulary import corpus_vocabulary, special_token_ids

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXPORT_DOCS = ROOT / "docs" / "export.md"
FAST = dict(latency_warmup=1, latency_runs=2, verbose=False, plot=False)
LENGTH = 32

# Strings where a hand-written tokenizer most often parts from keras-hub's.
AWKWARD = [
    "Café déjà vu, naïve and ÜBER-cool!", "ﬁne ﬁlm: Ⅻ stars", "ＦＵＬＬ　ｗｉｄｔｈ ＡＢＣ！",
    "中文字符 mixed with 𠀀 and 한국어", "emoji ❤️ and 👍🏽 😂", "zero\u200bwidth soft\u00adhyphen",
    "tab\tand\nnew\r\nlines\x0bvt", "İstanbul Straße ǅ", "a" * 150, "word " * 40,
    "$100 & 50% off!!! don't e.g. U.S.A.", "Ω≈ç√∫ «quotes» — dash…", "\u00a0nbsp\u00a0inside",
    "e\u0301 decomposed", "مرحبا بالعالم", "สวัสดี", "[CLS] [SEP] [MASK] literal", "",
    "   ", "unbelievablyunforgettableness", "x" * 101,
]


def _tokens(preprocessor, texts):
    return {k: np.asarray(v) for k, v in preprocessor(tf.constant(texts)).items()}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    keras.utils.set_random_seed(0)
    splits = rotten_tomatoes_splits()
    train_texts, train_labels = map(list, zip(*splits["train"][:512]))
    test_texts, test_labels = map(list, zip(*splits["test"][:48]))
    preprocessor = make_preprocessor("minilm", LENGTH)
    train = _tokens(preprocessor, train_texts)
    keep, unknown_id = special_token_ids(preprocessor.tokenizer)
    kept = corpus_vocabulary([train], preprocessor.tokenizer.vocabulary_size(), keep)
    student = students.build_student("test_tiny", preprocessor.tokenizer.vocabulary_size(),
                                     num_classes=2, max_sequence_length=LENGTH, dropout=0.0,
                                     vocabulary=kept, unknown_id=unknown_id)
    student.compile(optimizer=keras.optimizers.Adam(3e-3),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    student.fit(train, np.array(train_labels), batch_size=64, epochs=3, verbose=0)
    out = tmp_path_factory.mktemp("text") / "student_export"
    test = _tokens(preprocessor, test_texts)
    report = export_student(
        student, out, formats=("saved_model", "tflite_float32", "tflite_dynamic_int8",
                               "tflite_int8"),
        representative_data={k: v[:32] for k, v in train.items()}, num_calibration_batches=32,
        validation_data=(test, np.array(test_labels)), preprocessor=preprocessor,
        label_names=list(LABEL_NAMES), validation_texts=(test_texts, test_labels), **FAST)
    return {"report": report, "path": out, "student": student, "preprocessor": preprocessor,
            "texts": test_texts, "kept": kept}


def _probabilities(exported, texts):
    logits = exported["student"](_tokens(exported["preprocessor"], texts), training=False)
    return tf.nn.softmax(logits).numpy()


def _docs_block(marker):
    after = EXPORT_DOCS.read_text(encoding="utf-8").split(marker, 1)[1]
    return re.match(r"\s*```python\n(.*?)\n```", after, re.S).group(1)


# ----------------------------------------------------------------------------- serve_text


def test_serve_text_matches_the_keras_student_in_the_report(exported):
    report = exported["report"]
    entry = report["artifacts"]["saved_model_text"]
    assert entry["target"]["met"] is True, entry
    assert entry["num_validation_texts"] == 48 and entry["labels_match"] is True
    assert entry["top1_agreement"] == 1.0 and entry["accuracy"] is not None
    assert entry["latency_ms"] > 0
    assert report["text_signature"] == "serve_text"
    assert report["label_names"] == list(LABEL_NAMES)


def test_serve_text_loads_in_a_plain_tensorflow_process(exported, tmp_path):
    # Only TensorFlow and TF Text: no kdistill, no keras-hub, as a server would load it.
    texts = exported["texts"][:5] + AWKWARD[:5]
    script = tmp_path / "serve.py"
    script.write_text(
        "import json, sys\nimport tensorflow as tf\nimport tensorflow_text  # noqa: F401\n"
        f"fn = tf.saved_model.load({str(exported['path'] / 'saved_model')!r})"
        ".signatures['serve_text']\n"
        f"out = fn(text=tf.constant({texts!r}))\n"
        "out = {k: v.numpy().tolist() for k, v in out.items()}\n"
        "print(json.dumps(out, default=bytes.decode))\n")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    expected = _probabilities(exported, texts)
    np.testing.assert_allclose(out["probabilities"], expected, atol=1e-5)
    assert out["label"] == [LABEL_NAMES[i] for i in expected.argmax(-1)]
    assert out["label_names"] == [list(LABEL_NAMES)] * len(texts)
    assert out["label_id"] == expected.argmax(-1).tolist()


def test_docs_serve_text_snippet_runs(exported, monkeypatch, capsys):
    monkeypatch.chdir(exported["path"].parent)
    exec(compile(_docs_block("<!-- serve-text-snippet -->"), "export.md", "exec"), {})
    assert "[b'" in capsys.readouterr().out


def test_token_signature_is_unchanged_beside_the_text_one(exported):
    loaded = tf.saved_model.load(str(exported["path"] / "saved_model"))
    assert sorted(loaded.signatures) == ["serve_text", "serving_default"]
    _, inputs = loaded.signatures["serving_default"].structured_input_signature
    assert sorted(inputs) == ["padding_mask", "segment_ids", "token_ids"]
    assert exported["report"]["artifacts"]["saved_model"]["student_only"] is True


def test_text_preprocessor_keeps_the_given_one():
    preprocessor = make_preprocessor("minilm", 16)
    longer = serving.text_preprocessor(preprocessor, 24)
    assert preprocessor.sequence_length == 16 and longer.sequence_length == 24
    assert longer.tokenizer is preprocessor.tokenizer
    assert serving.text_preprocessor(preprocessor, 16) is preprocessor
    with pytest.raises(ValueError, match="keras-hub text classifier preprocessor"):
        serving.text_preprocessor("vocab.txt", 16)


# ----------------------------------------------------------------------------- sidecars


def test_every_tflite_has_a_sidecar_with_the_full_vocabulary(exported):
    from ai_edge_litert.interpreter import Interpreter

    path = exported["path"]
    vocabulary = (path / "vocab.txt").read_text(encoding="utf-8").splitlines()
    tokenizer = exported["preprocessor"].tokenizer
    # The pruned student maps the teacher's ids inside the graph: the app feeds the full ones.
    assert vocabulary == tokenizer.get_vocabulary() and len(vocabulary) == 30522
    assert len(exported["kept"]) < len(vocabulary)
    for fmt in ("tflite_float32", "tflite_dynamic_int8", "tflite_int8"):
        entry = exported["report"]["artifacts"][fmt]
        sidecar = tflite_sidecar.read_sidecar(entry["path"])
        assert entry["sidecar"] == tflite_sidecar.sidecar_path(entry["path"])
        assert sidecar["model"] == os.path.basename(entry["path"])
        assert sidecar["labels"] == list(LABEL_NAMES)
        settings = sidecar["tokenizer"]
        assert settings["vocabulary_file"] == "vocab.txt"
        assert settings["vocabulary_size"] == 30522 and settings["sequence_length"] == LENGTH
        assert settings["lowercase"] is True and settings["unknown_token"] == "[UNK]"
        assert {k: v["id"] for k, v in settings["special_tokens"].items()} == {
            "start": 101, "end": 102, "pad": 0, "cls": 101, "sep": 102, "mask": 103}
        interpreter = Interpreter(model_path=entry["path"])
        details = interpreter.get_signature_runner(sidecar["signature"]).get_input_details()
        assert [i["name"] for i in sidecar["inputs"]] == (
            interpreter.get_signature_list()[sidecar["signature"]]["inputs"])
        for spec in sidecar["inputs"]:
            assert spec["dtype"] == details[spec["name"]]["dtype"].__name__
            assert spec["shape"] == [-1, LENGTH] and spec["feed"]
        assert [o["name"] for o in sidecar["outputs"]] == ["logits", "probabilities"]
        quantized = [o for o in sidecar["outputs"] if "quantization" in o]
        assert len(quantized) == (2 if fmt == "tflite_int8" else 0), sidecar["outputs"]


@pytest.mark.parametrize("fmt,atol", [("dynamic_int8", 2e-2), ("int8", 5e-2)])
def test_docs_sidecar_snippet_tokenises_and_classifies_like_keras(exported, monkeypatch, capsys,
                                                                   fmt, atol):
    monkeypatch.chdir(exported["path"].parent)
    code = _docs_block("<!-- tflite-sidecar-snippet -->")
    assert "model_dynamic_int8.json" in code
    namespace = {}
    exec(compile(code.replace("model_dynamic_int8.json", f"model_{fmt}.json"), "export.md",
                 "exec"), namespace)
    assert capsys.readouterr().out.startswith("('")
    preprocessor = exported["preprocessor"]
    texts = exported["texts"] + AWKWARD
    expected = _tokens(preprocessor, texts)
    for i, text in enumerate(texts):
        ids = namespace["encode"](text)
        for name in ("token_ids", "padding_mask", "segment_ids"):
            np.testing.assert_array_equal(ids[name][0].astype("int32"),
                                          expected[name][i].astype("int32"),
                                          err_msg=f"{name} of {text!r}")
    probabilities = _probabilities(exported, texts)
    for text, expected_p in zip(texts, probabilities):
        label, p = namespace["classify"](text)
        np.testing.assert_allclose(p, expected_p, atol=atol)
        assert label in LABEL_NAMES


def test_a_pruned_tokenizer_is_refused(exported, tmp_path):
    # The kept ids are rows of the student's table, not what its .tflite reads.
    full = exported["preprocessor"].tokenizer.get_vocabulary()
    pruned = keras_hub.tokenizers.BertTokenizer([full[i] for i in exported["kept"]],
                                                lowercase=True)
    x = _tokens(exported["preprocessor"], exported["texts"][:4])
    with pytest.raises(ValueError, match=r"30,522.*pruned vocabulary, the teacher's full one"):
        export_student(exported["student"], tmp_path / "bad", formats=["tflite_float32"],
                       validation_data=x, preprocessor=pruned, **FAST)
    assert not (tmp_path / "bad").exists()


def test_text_arguments_are_checked(exported, tmp_path):
    student, x = exported["student"], _tokens(exported["preprocessor"], exported["texts"][:4])
    cases = [
        (dict(validation_texts=["a film"]), "needs the preprocessor"),
        (dict(label_names=["only one"]), "1 label_names"),
        (dict(preprocessor=exported["preprocessor"], validation_texts="a film"), "one string"),
        (dict(preprocessor=exported["preprocessor"], validation_texts=[1, 2]), "must be strings"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            export_student(student, tmp_path / "x", formats=["saved_model"], validation_data=x,
                           **FAST, **kwargs)
    assert not (tmp_path / "x").exists()


def test_a_sidecar_without_tokenizer_says_so(tmp_path):
    from kdistill import testing

    model = testing.tiny_mlp()
    x = np.zeros((4, 8), "float32")
    report = export_student(model, tmp_path / "mlp", formats=["tflite_float32"],
                            validation_data=x, **FAST)
    sidecar = tflite_sidecar.read_sidecar(report["artifacts"]["tflite_float32"]["path"])
    assert sidecar["tokenizer"] is None and "preprocessor=None" in sidecar["note"]
    assert sidecar["labels"] == ["0", "1", "2"]
    assert sidecar["inputs"][0]["name"] == "features" and "feed" not in sidecar["inputs"][0]
    assert not (tmp_path / "mlp" / "vocab.txt").exists()
    with pytest.raises(ValueError, match="version"):
        (tmp_path / "old.json").write_text(json.dumps({"format": sidecar["format"],
                                                       "version": 0}))
        tflite_sidecar.read_sidecar(tmp_path / "old.json")
