"""Full-int8 TFLite paths side by side on one trained student: agreement, accuracy, size, latency.

Contenders, all from the same float32 SavedModel of the student (`kdistill.serving`):

- `dynamic_int8`: kdistill's `tflite_dynamic_int8` (int8 weights, float activations): the
  latency reference.
- `litert_quantizer`: kdistill's `tflite_int8`: LiteRT's quantizer (`kdistill.int8`: static
  int8 recipe; layer norm, the residual additions and the attention products and softmax in
  float (`int8.FLOAT_OPS`); activation ranges clipped at their per-example 99.99th
  percentiles; masked-attention ranges repaired; int8 outputs).
- `litert_quantizer_moving_average`: the same with the quantizer's own activation ranges (a
  moving average of per-example min/max), `activation_percentile=None`.
- `litert_quantizer_min_max`: the same with plain min/max ranges (`activation_percentile=100`).
- `litert_quantizer_int8_residual`: the residual additions in int8 (the rest as the default).
- `litert_quantizer_int8_attention`: the attention products and softmax in int8.
- `litert_quantizer_layer_norm_only`: kdistill's default before: only layer norm's statistics
  (MEAN, SQUARED_DIFFERENCE, RSQRT) in float, the quantizer's own ranges.
- `litert_quantizer_all_int8`: every op in int8, percentile ranges.
- `litert_quantizer_a16`: the quantizer's `static_wi8_ai16` recipe (int8 weights, 16-bit
  activations), the default float ops.
- `tf_converter_legacy`: the path kdistill used before (TF's private calibrate-only conversion,
  the same mask repair, `mlir_quantize`), kept here only to compare against.
- `keras_litert`: Keras' own `model.export(path, format="litert", representative_dataset=...)`
  (the TF converter's full-int8 path, no mask repair).

Each is run at batch 1 with the LiteRT interpreter on the held-out texts and compared with the
Keras student (top-1 agreement, accuracy, max |logit diff|); batch-1 latency is timed in
interleaved rounds whose order rotates, and printed as ratios to `dynamic_int8` and to
`tf_converter_legacy` (compare ratios measured in one run, not absolute times).

Run (a student from `kdistill distill`, Rotten Tomatoes test snippets, 100 calibration
snippets from the training split):
    .venv/bin/python benchmarks/int8_paths.py runs/demo/student.keras --data rotten_tomatoes
    .venv/bin/python benchmarks/int8_paths.py student.keras --data my_test.csv \\
        --calibration my_train.csv --vocabulary vocab.txt --json bench/int8_paths.json
"""

import argparse
import functools
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

# kdistill.vocabulary registers the pruned-vocabulary student classes for loading.
from kdistill import evaluation, int8, parity, serving, tflite, vocabulary  # noqa: E402, F401
from kdistill.data import load, load_text_file, make_preprocessor  # noqa: E402

# A calibrated range beyond this can only come from the masking constant (see kdistill.int8).
MASK_CONSTANT_RANGE = int8.MASK_CONSTANT_RANGE


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("student", help="the trained student (.keras)")
    parser.add_argument("--data", default="rotten_tomatoes",
                        help="held-out labelled texts: rotten_tomatoes (its test split) or a "
                             "CSV/TSV/JSONL file with text,label columns")
    parser.add_argument("--calibration", default=None,
                        help="calibration texts (default: rotten_tomatoes' train split, or "
                             "--data's file)")
    parser.add_argument("--vocabulary", default="minilm",
                        help="vocab.txt of the student's tokenizer when the .keras file has no "
                             "preprocessor (default: minilm, the packaged BERT uncased one)")
    parser.add_argument("--sequence-length", type=int, default=64)
    parser.add_argument("--num-calibration", type=int, default=100)
    parser.add_argument("--limit", type=int, default=None, help="at most this many test texts")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--runs", type=int, default=20, help="batch-1 calls per round")
    parser.add_argument("--only", default=None, help="comma-separated contenders")
    parser.add_argument("--json", metavar="PATH", help="write the numbers to this JSON file")
    return parser.parse_args(argv)


def texts_of(spec, split):
    """`(texts, labels)` of `rotten_tomatoes` (a split) or a labelled text file."""
    dataset = load("rotten_tomatoes", split) if spec == "rotten_tomatoes" else (
        load_text_file(spec).dataset)
    texts, labels = [], []
    for text, label in dataset.as_numpy_iterator():
        texts.append(text.decode("utf-8"))
        labels.append(int(label))
    return texts, np.array(labels)


def tokenize(preprocessor, texts, specs):
    chunks = [preprocessor(tf.constant(texts[i:i + 256])) for i in range(0, len(texts), 256)]
    return {n: np.concatenate([np.asarray(c[n]) for c in chunks]).astype(specs[n].dtype.name)
            for n in specs}


# --------------------------------------------------------------------------------- contenders


def legacy_tf_converter(saved_model_dir, samples):
    """kdistill's full int8 before litert-quantizer: TF's private calibrate-then-quantize hooks
    with the masked-score range repair (for comparison only)."""
    from tensorflow.lite.python import convert as tfl_convert
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir,
                                                         signature_keys=["serving_default"])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: iter(samples)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                           tf.lite.OpsSet.TFLITE_BUILTINS]
    converter._experimental_calibrate_only = True
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(converter.convert()))
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]

    def stats(tensor):
        q = tensor.quantization
        if q is None or q.min is None or q.max is None or len(q.min) != 1:
            return None
        return float(q.min[0]), float(q.max[0])

    for graph in model.subgraphs:
        for op in graph.operators:
            if codes[op.opcodeIndex] != schema.BuiltinOperator.SELECT_V2:
                continue
            out = graph.tensors[op.outputs[0]]
            if stats(out) is None or max(map(abs, stats(out))) < MASK_CONSTANT_RANGE:
                continue
            data = [stats(graph.tensors[i]) for i in op.inputs[1:] if i >= 0]
            data = [r for r in data if r is not None and max(map(abs, r)) < MASK_CONSTANT_RANGE]
            if data:
                out.quantization.min = np.array([min(0.0, min(r[0] for r in data))], np.float32)
                out.quantization.max = np.array([max(0.0, max(r[1] for r in data))], np.float32)
    patched = bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    return bytes(tfl_convert.mlir_quantize(patched))


def keras_litert(student, specs, samples, work):
    path = os.path.join(work, "keras_litert.tflite")
    student.export(path, format="litert", input_signature=[dict(specs)], verbose=False,
                   optimizations=[tf.lite.Optimize.DEFAULT],
                   representative_dataset=lambda: iter(samples),
                   target_spec={"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                                  tf.lite.OpsSet.TFLITE_BUILTINS]})
    with open(path, "rb") as f:
        return f.read()


def build_contenders(names, student, specs, saved_model_dir, samples, held_out, work):
    """`{name: (bytes, seconds to build, details)}` for the contenders asked for."""
    @functools.cache
    def float32():  # the float32 file the quantizer variants start from, converted once
        return tflite.convert_saved_model(saved_model_dir, "tflite_float32")[0]  # (its time
        # counts in the first variant's build seconds)

    builders = {
        "dynamic_int8": lambda: tflite.convert_saved_model(saved_model_dir,
                                                           "tflite_dynamic_int8"),
        "litert_quantizer": lambda: tflite.convert_saved_model(
            saved_model_dir, "tflite_int8", lambda: iter(samples), validation_dataset=held_out),
        "litert_quantizer_moving_average": lambda: int8.quantize_full_int8(
            float32(), samples, activation_percentile=None),
        "litert_quantizer_min_max": lambda: int8.quantize_full_int8(
            float32(), samples, activation_percentile=100.0),
        "litert_quantizer_int8_residual": lambda: int8.quantize_full_int8(
            float32(), samples, float_ops=int8.LAYER_NORM_OPS + int8.ATTENTION_OPS),
        "litert_quantizer_int8_attention": lambda: int8.quantize_full_int8(
            float32(), samples, float_ops=int8.LAYER_NORM_OPS + int8.RESIDUAL_OPS),
        "litert_quantizer_layer_norm_only": lambda: int8.quantize_full_int8(
            float32(), samples, float_ops=int8.LAYER_NORM_STATISTICS,
            activation_percentile=None),
        "litert_quantizer_all_int8": lambda: int8.quantize_full_int8(
            float32(), samples, float_ops=()),
        "litert_quantizer_a16": lambda: int8.quantize_full_int8(
            float32(), samples, recipe_name="static_wi8_ai16"),
        "tf_converter_legacy": lambda: (legacy_tf_converter(saved_model_dir, samples), {}),
        "keras_litert": lambda: (keras_litert(student, specs, samples, work), {}),
    }
    built = {}
    for name in names:
        start = time.perf_counter()
        try:
            content, info = builders[name]()
        except Exception as error:  # a path that does not convert is reported, not fatal
            print(f"  {name}: FAILED {type(error).__name__}: {str(error)[:300]}")
            continue
        built[name] = (content, time.perf_counter() - start, info)
        print(f"  {name}: built in {built[name][1]:.1f} s, {len(content) / 1e6:.2f} MB")
    return built


# --------------------------------------------------------------------------------- main


def main(argv=None):
    args = parse_args(argv)
    loads = [os.getloadavg()[0]]
    loaded = evaluation.load_model(args.student)
    student = loaded.model
    preprocessor = loaded.preprocessor or make_preprocessor(args.vocabulary, args.sequence_length)
    preprocessor = serving.text_preprocessor(preprocessor, args.sequence_length)
    names = [n for n in student.input if n in ("token_ids", "padding_mask", "segment_ids")] if (
        isinstance(student.input, dict)) else ["token_ids", "padding_mask", "segment_ids"]
    specs = {n: tf.TensorSpec([None, args.sequence_length], tf.int32, name=n) for n in names}

    test_texts, labels = texts_of(args.data, "test")
    if args.limit:
        test_texts, labels = test_texts[:args.limit], labels[:args.limit]
    calibration_spec = args.calibration or args.data
    train_texts, _ = texts_of(calibration_spec, "train")
    pick = np.random.default_rng(0).choice(len(train_texts), min(args.num_calibration,
                                                                 len(train_texts)), replace=False)
    calibration = tokenize(preprocessor, [train_texts[i] for i in pick], specs)
    samples = [{k: v[i:i + 1] for k, v in calibration.items()} for i in range(len(pick))]
    test = tokenize(preprocessor, test_texts, specs)
    held_out = [{k: v[i:i + 1] for k, v in test.items()} for i in range(min(32, len(labels)))]
    print(f"{args.student}: {student.count_params():,} params; {len(labels)} test texts, "
          f"{len(samples)} calibration texts, sequence length {args.sequence_length}")

    def forward(flat):
        return evaluation.as_float32_logits(student(flat, training=False))

    reference = parity.batched_logits(
        lambda x: forward({k: tf.constant(v) for k, v in x.items()}).numpy(), test)
    keras_accuracy = float(np.mean(reference.argmax(-1) == labels))

    names_asked = (args.only.split(",") if args.only else
                   ["dynamic_int8", "litert_quantizer", "litert_quantizer_moving_average",
                    "litert_quantizer_min_max", "litert_quantizer_int8_residual",
                    "litert_quantizer_int8_attention", "litert_quantizer_layer_norm_only",
                    "litert_quantizer_all_int8", "litert_quantizer_a16",
                    "tf_converter_legacy", "keras_litert"])
    with tempfile.TemporaryDirectory() as work:
        saved_model_dir = os.path.join(work, "saved_model")
        serving.write_saved_model(saved_model_dir, student.weights, forward, specs)
        built = build_contenders(names_asked, student, specs, saved_model_dir, samples,
                                 held_out, work)

    rows, contenders = {}, []
    example = {k: v[:1] for k, v in test.items()}
    for name, (content, seconds, info) in built.items():
        interpreter, runner = tflite.signature_runner(content)
        signature = interpreter.get_signature_list()["serving_default"]
        inputs = signature["inputs"]  # Keras' export names its output "output_0"
        output = "logits" if "logits" in signature["outputs"] else signature["outputs"][0]

        def logits(x, runner=runner, inputs=inputs, output=output):
            feed = {n: x[next(k for k in x if k == n or k in n)] for n in inputs}
            return tflite.float_outputs(runner, runner(**feed))[output]

        rows[name] = dict(parity.compare(reference, parity.row_logits(logits, test), labels),
                          size_bytes=len(content), build_seconds=seconds,
                          validation=info.get("validation"),
                          mask_fix=info.get("attention_mask_fix"))
        contenders.append(common.CallableContender(
            name, lambda logits=logits: logits(example), units=1))
    wall, cpu = common.measure(contenders, args.rounds, args.runs, warmup_steps=5)
    loads.append(os.getloadavg()[0])
    stats = common.statistics_ms(wall, cpu)

    print(f"\nKeras student: accuracy {keras_accuracy:.2%} on {len(labels)} texts")
    header = (f"{'contender':<28}{'agreement':>10}{'accuracy':>10}{'Δacc pt':>9}"
              f"{'max|diff|':>10}{'MB':>7}{'ms b=1':>8}")
    print(header + "\n" + "-" * len(header))
    for name, row in rows.items():
        row["latency_ms"] = stats["median_ms"][name]
        print(f"{name:<28}{row['top1_agreement']:>10.2%}{row['accuracy']:>10.2%}"
              f"{100 * (row['accuracy'] - keras_accuracy):>+9.2f}{row['max_abs_diff']:>10.3f}"
              f"{row['size_bytes'] / 1e6:>7.2f}{row['latency_ms']:>8.3f}")
    ratios = {}
    for base in ("dynamic_int8", "tf_converter_legacy"):
        for name in rows:
            if name not in (base, "dynamic_int8") and base in rows:
                ratios[f"latency {name} / {base}"] = common.paired_ratio(
                    stats, wall, name, base)
    for name, row in rows.items():
        if row["validation"]:
            print(f"{name}: Quantizer.validate on {row['validation']['num_examples']} held-out "
                  f"texts: " + ", ".join(f"{k} {v}" for k, v in row["validation"].items()
                                         if k != "num_examples"))
    common.print_stats(stats, {})
    common.print_ratios(ratios)
    print("\n" + common.environment(loads))
    if args.json:
        common.write_json(args.json, {
            "command": common.command_line("int8_paths.py", argv), "git": common.git_state(),
            "student": args.student, "num_test": len(labels), "num_calibration": len(samples),
            "sequence_length": args.sequence_length, "keras_accuracy": keras_accuracy,
            "rows": rows, "stats": stats, "ratios": ratios, "wall": wall, "loads": loads})


if __name__ == "__main__":
    main()
