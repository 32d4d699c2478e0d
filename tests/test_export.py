"""Edge export: SavedModel + TFLite round trips, parity, student-only, guards and errors.

Also the two modules `export_student` is built on: `kdistill.tflite` and `kdistill.export_report`.
"""

import json
import os
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import kdistill
from kdistill import export_report, int8, testing, tflite, tflite_graph
from kdistill.export import VALID_FORMATS, export_student, format_report_table

FAST = dict(latency_warmup=1, latency_runs=2, verbose=False)


def _tiny_pair():
    # A 1000-token vocabulary makes the embeddings dominate the size: a doubled checkpoint shows.
    teacher = testing.tiny_bert_classifier(vocabulary_size=1000, hidden_dim=16,
                                           intermediate_dim=32, num_classes=3)
    student = testing.tiny_bert_classifier(vocabulary_size=1000, num_layers=1, hidden_dim=8,
                                           intermediate_dim=16, num_classes=3)
    x, _ = testing.token_batch(batch_size=2)
    teacher(x)
    student(x)
    return teacher, student


def _data():
    train = testing.token_dataset(num_examples=32, batch_size=8, seed=0)
    val = testing.token_dataset(num_examples=24, batch_size=8, seed=1)
    return train, val


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One export of a tiny Distiller's student in all five formats, shared by the tests."""
    keras.utils.set_random_seed(0)
    teacher, student = _tiny_pair()
    distiller = kdistill.Distiller(teacher, student)
    train, val = _data()
    path = str(tmp_path_factory.mktemp("export") / "tiny")
    report = export_student(distiller, path, representative_data=train, validation_data=val,
                            num_calibration_batches=16, **FAST)
    return {"report": report, "path": path, "student": student, "teacher": teacher, "val": val}


def _val_arrays(val):
    xs, ys = zip(*val.as_numpy_iterator())
    x = {k: np.concatenate([b[k] for b in xs]) for k in xs[0]}
    return x, np.concatenate(ys)


def test_writes_every_format_and_meets_the_targets(exported):
    report, path = exported["report"], exported["path"]
    assert list(report["artifacts"]) == list(VALID_FORMATS)
    for fmt, entry in report["artifacts"].items():
        assert os.path.exists(entry["path"]), fmt
        assert entry["size_bytes"] > 0
        assert entry["latency_ms"] > 0
        if fmt == "tflite_int8":
            # A random-init tiny model has near-tied logits (|logit| ~ 1e-3), so int8 noise can
            # flip an argmax; the >= 98% target is measured on a trained model (benchmarks/).
            assert entry["top1_agreement"] >= 0.9 and entry["target"]["met"] in (True, False)
            assert entry["max_abs_diff"] <= 5e-2  # masked-score range repaired (was ~uniform attn)
        else:
            assert entry["target"]["met"] is True, (fmt, entry)
        assert not entry.get("select_tf_ops"), fmt
    assert report["artifacts"]["saved_model"]["max_abs_diff"] <= 1e-5
    assert report["artifacts"]["tflite_float32"]["max_abs_diff"] <= 1e-4
    assert report["num_validation_examples"] == 24
    assert report["sequence_length"] == 8
    assert report["teacher"]["params"] == exported["teacher"].count_params()
    assert report["student"]["latency_ms"] > 0 and report["teacher"]["latency_ms"] > 0
    assert os.path.exists(os.path.join(path, "report.png"))
    with open(os.path.join(path, "report.json")) as f:
        assert json.load(f) == json.loads(json.dumps(report))
    table = format_report_table(report)
    for fmt in VALID_FORMATS:
        assert fmt in table


def test_saved_model_is_student_only_with_named_signature(exported):
    student, teacher = exported["student"], exported["teacher"]
    sm_dir = os.path.join(exported["path"], "saved_model")
    loaded = tf.saved_model.load(sm_dir)
    values = sum(int(np.prod(v.shape)) for v in loaded.variables)
    assert values == student.count_params()
    assert values < student.count_params() + teacher.count_params()
    variables_bytes = sum(os.path.getsize(os.path.join(sm_dir, "variables", f))
                          for f in os.listdir(os.path.join(sm_dir, "variables")))
    assert 4 * values <= variables_bytes < 1.2 * 4 * values + 8_000  # each weight once

    signature = loaded.signatures["serving_default"]
    _, inputs = signature.structured_input_signature
    assert sorted(inputs) == ["padding_mask", "segment_ids", "token_ids"]
    assert inputs["token_ids"].shape.as_list() == [None, 8]
    assert sorted(signature.structured_outputs) == ["logits", "probabilities"]

    x, _ = _val_arrays(exported["val"])
    out = signature(**{k: tf.constant(v[:5], inputs[k].dtype) for k, v in x.items()})
    expected = student(x, training=False).numpy()[:5]
    np.testing.assert_allclose(out["logits"].numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(out["probabilities"].numpy(),
                               tf.nn.softmax(expected).numpy(), atol=1e-5)


@pytest.mark.parametrize("fmt,tol", [("tflite_float32", 1e-4), ("tflite_float16", 5e-2),
                                     ("tflite_dynamic_int8", 5e-2), ("tflite_int8", 5e-2)])
def test_tflite_round_trip(exported, fmt, tol):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=exported["report"]["artifacts"][fmt]["path"])
    runner = interpreter.get_signature_runner("serving_default")
    details = interpreter.get_signature_list()["serving_default"]
    assert sorted(details["inputs"]) == ["padding_mask", "segment_ids", "token_ids"]
    assert sorted(details["outputs"]) == ["logits", "probabilities"]
    x, _ = _val_arrays(exported["val"])
    expected = exported["student"](x, training=False).numpy()
    for i in range(4):
        out = runner(**{k: v[i:i + 1].astype("int32") for k, v in x.items()})
        out = tflite.float_outputs(runner, out)  # full int8: int8 outputs, dequantized
        np.testing.assert_allclose(out["logits"][0], expected[i], atol=tol)
        np.testing.assert_allclose(out["probabilities"].sum(), 1.0, atol=1e-2)
        np.testing.assert_allclose(out["probabilities"][0],
                                   tf.nn.softmax(expected[i]).numpy(), atol=1e-2)


def test_full_int8_records_ops(exported):
    from ai_edge_litert.interpreter import Interpreter

    entry = exported["report"]["artifacts"]["tflite_int8"]
    assert entry["quantizer"].startswith("litert-quantizer ")
    assert entry["recipe"] == "static_wi8_ai8"
    assert entry["supported_ops"] == ["TFLITE_BUILTINS"] and not entry["select_tf_ops"]
    assert entry["op_counts"] and "FULLY_CONNECTED" in entry["op_counts"]
    # The dense layers, GELU and the masking are int8; layer norm (its statistics, scale and
    # shift), the residual additions and the attention products and softmax are float.
    for op in ("FULLY_CONNECTED", "GELU", "SELECT_V2", "GATHER"):
        assert op not in entry["float32_ops"], (op, entry["float32_ops"])
    assert entry["float_ops"] == [n if isinstance(n, str) else f"{n[0]} ({n[1]})"
                                  for n in int8.FLOAT_OPS]
    floats = entry["float32_ops"]
    assert {"MEAN", "SQUARED_DIFFERENCE", "RSQRT", "BATCH_MATMUL"} <= set(floats), floats
    # One attention layer: its softmax (the output's probabilities stay int8); its two
    # residual additions, the embeddings' two and each layer norm's two (shift, epsilon).
    assert floats["SOFTMAX"] == 1 and floats["BATCH_MATMUL"] == 2, floats
    assert floats["ADD"] == 2 + 2 + 3 * 2 and floats["MUL"] == 3 * 3, floats
    assert entry["activation_ranges"].startswith("per-example 99.99th percentiles")
    # The masked-softmax range repair ran on the one attention layer's SELECT_V2.
    fix = entry["attention_mask_fix"]
    assert fix["applied"] and len(fix["clipped_select_v2_outputs"]) == 1
    assert exported["report"]["num_calibration_examples"] == 16
    assert entry["num_calibration_examples"] == 16
    # The quantizer's own check against the float32 file, on held-out examples.
    validation = entry["validation"]
    assert validation["num_examples"] == 24 and set(validation["logits"]) == {"MSE", "SNR"}
    # No attention-score tensor is left with a masking-constant-sized int8 scale.
    interpreter = Interpreter(model_path=entry["path"])
    scales = [t["quantization"][0] for t in interpreter.get_tensor_details()]
    assert max(scales) < 1e3, max(scales)
    # Int32 token ids in, int8 logits and probabilities out (with their scale and zero point).
    runner = interpreter.get_signature_runner("serving_default")
    assert {d["dtype"].__name__ for d in runner.get_input_details().values()} == {"int32"}
    assert {d["dtype"].__name__ for d in runner.get_output_details().values()} == {"int8"}


def test_full_int8_op_rules_float_by_name_and_16_bit_activations(exported):
    """`float_ops` takes `(op, tensor regex)` pairs; `int16_ops` gives ops 16-bit activations."""
    from ai_edge_litert.interpreter import Interpreter

    content, _ = tflite.convert_saved_model(os.path.join(exported["path"], "saved_model"),
                                            "tflite_float32")
    samples = [{k: np.asarray(v[i:i + 1]).astype("int32") for k, v in
                testing.token_batch(batch_size=8)[0].items()} for i in range(8)]
    quantized, info = int8.quantize_full_int8(
        content, samples, float_ops=("MEAN", ("SOFTMAX", ".*self_attention.*")),
        int16_ops=("ADD",))
    assert info["float_ops"] == ["MEAN", "SOFTMAX (.*self_attention.*)"]
    assert info["int16_ops"] == ["ADD"] and "ADD with 16-bit activations" in info["quantization"]
    ops = tflite_graph.operators(quantized)
    softmax = {o["outputs"][0]["name"]: o["outputs"][0]["type"] for o in ops
               if o["op"] == "SOFTMAX"}
    attention = [t for name, t in softmax.items() if "self_attention" in name]
    assert attention and set(attention) == {"FLOAT32"}, softmax  # the attention one in float
    assert [t for name, t in softmax.items() if "self_attention" not in name] == ["INT8"]
    assert {o["outputs"][0]["type"] for o in ops if o["op"] == "ADD"} >= {"INT16"}
    runner = Interpreter(model_content=quantized).get_signature_runner("serving_default")
    assert set(runner(**samples[0])) == {"logits", "probabilities"}
    with pytest.raises(ValueError, match=r"'BATCHMATMUL' is not a TFLite op .* BATCH_MATMUL"):
        int8.quantize_full_int8(content, samples, float_ops=("BATCHMATMUL",))


def test_export_student_passes_int8_options_to_the_quantizer(exported, tmp_path):
    """`export.int8_float_ops` / `int8_recipe` / `int8_activation_percentile` reach the
    quantizer through `export_student`."""
    from kdistill.config import ExportConfig

    layer_norm = ["MEAN", "SQUARED_DIFFERENCE", "RSQRT"]
    options = ExportConfig(int8_float_ops=layer_norm,
                           int8_activation_percentile=None).int8_options()
    assert options == {"recipe_name": "static_wi8_ai8", "float_ops": tuple(layer_norm),
                       "activation_percentile": None}
    assert ExportConfig().int8_options() == {"recipe_name": "static_wi8_ai8",
                                             "activation_percentile": int8.ACTIVATION_PERCENTILE}
    train, val = _data()
    report = export_student(exported["student"], str(tmp_path / "int8"), formats=["tflite_int8"],
                            representative_data=train, validation_data=val,
                            num_calibration_batches=8, int8_options=options, **FAST)
    entry = report["artifacts"]["tflite_int8"]
    assert entry["float_ops"] == layer_norm
    assert entry["activation_ranges"].startswith("the quantizer's moving average")
    assert "BATCH_MATMUL" not in entry["float32_ops"], entry["float32_ops"]
    assert "BATCH_MATMUL" in exported["report"]["artifacts"]["tflite_int8"]["float32_ops"]


def test_full_int8_activation_ranges_are_outlier_clipped_percentiles(exported):
    """`percentile_ranges`: per example the (100 - p)-th and p-th percentiles of each computed
    tensor, then their min / max over the examples (checked against NumPy on the logits)."""
    from ai_edge_litert.interpreter import Interpreter

    content, _ = tflite.convert_saved_model(os.path.join(exported["path"], "saved_model"),
                                            "tflite_float32")
    x, _ = testing.token_batch(batch_size=6, seed=3)
    samples = [{k: np.asarray(v[i:i + 1]).astype("int32") for k, v in x.items()}
               for i in range(6)]
    full = int8.percentile_ranges(content, samples, 100.0)
    clipped = int8.percentile_ranges(content, samples, 90.0)
    assert set(full) == set(clipped) and len(full) > 20
    for name, (low, high) in clipped.items():
        assert full[name][0] <= low <= 0.0 <= high <= full[name][1], name
    assert sum(clipped[n][1] < full[n][1] for n in full) > len(full) // 2
    interpreter = Interpreter(model_content=content)
    runner = interpreter.get_signature_runner("serving_default")
    index = runner.get_output_details()["logits"]["index"]
    name = next(d["name"] for d in interpreter.get_tensor_details() if d["index"] == index)
    logits = np.stack([runner(**s)["logits"] for s in samples])
    per_example = np.percentile(logits.reshape(6, -1), [10.0, 90.0], axis=1)
    np.testing.assert_allclose(clipped[name], (min(0.0, per_example[0].min()),
                                               max(0.0, per_example[1].max())), rtol=1e-5)
    for bad in (50, 100.5, True, "99"):
        with pytest.raises(ValueError, match=r"activation_percentile must be a number in "
                                             r"\(50, 100\], got"):
            int8.quantize_full_int8(content, samples, activation_percentile=bad)


def test_full_int8_has_no_silent_fallback(exported, monkeypatch):
    sm_dir = os.path.join(exported["path"], "saved_model")
    with pytest.raises(ValueError, match="representative_dataset"):
        tflite.convert_saved_model(sm_dir, "tflite_int8")
    monkeypatch.setitem(sys.modules, "litert_quantizer", None)
    examples = tflite.representative_dataset(testing.token_batch(batch_size=2)[0])
    with pytest.raises(ImportError, match=r"pip install 'litert-quantizer>=0.11,<0.12'"):
        tflite.convert_saved_model(sm_dir, "tflite_int8", examples)


def test_overwrite_guard_keeps_other_files(tmp_path):
    model = testing.tiny_mlp()
    x = np.random.default_rng(0).normal(size=(6, 8)).astype("float32")
    out = tmp_path / "mlp"
    report = export_student(model, out, formats=["saved_model", "tflite_float32"],
                            validation_data=(x, np.arange(6) % 3), **FAST)
    assert report["teacher"] is None
    assert report["inputs"] == {"features": {"shape": [None, 8], "dtype": "float32"}}
    assert report["artifacts"]["tflite_float32"]["max_abs_diff"] <= 1e-4
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export_student(model, out, formats=["saved_model"], validation_data=x, **FAST)
    (out / "notes.txt").write_text("mine")
    export_student(model, out, formats=["saved_model"], validation_data=x, overwrite=True, **FAST)
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "saved_model" / "saved_model.pb").exists()


def test_sequence_length_argument_pads_the_data(tmp_path):
    _, student = _tiny_pair()
    _, val = _data()
    report = export_student(student, tmp_path / "s12", formats=["tflite_float32"],
                            validation_data=val, sequence_length=12, **FAST)
    assert report["inputs"]["token_ids"]["shape"] == [None, 12]
    assert report["artifacts"]["tflite_float32"]["max_abs_diff"] <= 1e-4
    assert not (tmp_path / "s12" / "saved_model").exists()  # not asked for: temporary only


def test_bad_inputs_give_clear_errors(tmp_path):
    _, student = _tiny_pair()
    train, val = _data()
    with pytest.raises(ValueError, match="valid formats are.*tflite_int8"):
        export_student(student, tmp_path / "a", formats=["onnx"], validation_data=val)
    with pytest.raises(ValueError, match="representative_data"):
        export_student(student, tmp_path / "b", formats=["tflite_int8"], validation_data=val)
    with pytest.raises(ValueError, match="validation_data is an empty dataset"):
        export_student(student, tmp_path / "c", validation_data=val.take(0),
                       representative_data=train)
    with pytest.raises(ValueError, match="representative_data is an empty dataset"):
        export_student(student, tmp_path / "d", validation_data=val,
                       representative_data=train.take(0))
    with pytest.raises(ValueError, match="representative_data yielded no examples"):
        export_student(student, tmp_path / "e", validation_data=val,
                       representative_data=train.filter(lambda x, y: False))
    with pytest.raises(ValueError, match="held-out"):
        export_student(student, tmp_path / "f", validation_data=train, representative_data=train)

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    with pytest.raises(ValueError, match="Cannot trace the inputs"):
        export_student(Subclassed(), tmp_path / "g", formats=["saved_model"],
                       validation_data=np.zeros((2, 4), "float32"))
    with pytest.raises(ValueError, match="keras.Model"):
        export_student("model.keras", tmp_path / "h", formats=["saved_model"])
    assert not any((tmp_path / n).exists() for n in "abcdefgh")  # nothing written on error


def test_a_student_with_nan_weights_is_not_exported(tmp_path):
    teacher, student = _tiny_pair()
    _, val = _data()
    kernel = student.backbone.get_layer("token_embedding").embeddings
    kernel.assign(np.where(np.arange(kernel.shape[0])[:, None] == 5, np.nan, kernel.numpy()))
    message = (r"Refusing to export the model '.*': its weight '.*token_embedding/embeddings' "
               r"holds 8 NaN/Inf value\(s\)")
    for model in (student, kdistill.Distiller(teacher, student)):
        with pytest.raises(ValueError, match=message):
            export_student(model, tmp_path / "nan", formats=["saved_model"],
                           validation_data=val, **FAST)
    assert not (tmp_path / "nan").exists()


def test_tflite_converts_a_saved_model_alone(exported):
    sm_dir = os.path.join(exported["path"], "saved_model")
    with pytest.raises(ValueError, match="valid formats are.*tflite_int8"):
        tflite.convert_saved_model(sm_dir, "saved_model")
    content, info = tflite.convert_saved_model(sm_dir, "tflite_float32")
    assert info == {"quantization": "none", "supported_ops": ["TFLITE_BUILTINS"],
                    "select_tf_ops": False}
    _, runner = tflite.signature_runner(content)
    assert "float32_ops" in tflite_graph.op_summary(content)
    x, _ = _val_arrays(exported["val"])
    out = runner(**{k: v[:1].astype("int32") for k, v in x.items()})
    np.testing.assert_allclose(out["logits"], exported["student"](x, training=False)[:1],
                               atol=1e-4)


def test_missed_targets_warn_with_a_hint():
    artifacts = {"tflite_int8": {"top1_agreement": 0.5}, "saved_model": {"max_abs_diff": 1.0}}
    with pytest.warns(UserWarning, match="tflite_int8: top1_agreement=0.5 .*attention_mask_fix"):
        export_report.check_targets(artifacts)
    assert [e["target"]["met"] for e in artifacts.values()] == [False, False]
    assert "MISSED" in format_report_table({"student": {
        "name": "s", "params": 1, "weights_bytes": 4, "latency_ms": 1.0, "accuracy": None},
        "artifacts": {fmt: dict(e, size_bytes=1, latency_ms=1.0) for fmt, e in artifacts.items()}})
