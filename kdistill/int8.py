"""Full-integer int8 `.tflite` files with LiteRT's own quantizer (the `litert-quantizer` package).

`quantize_full_int8` takes a float32 `.tflite` model and returns its full-integer version through
the quantizer's public API: its static-range recipe (`static_wi8_ai8`: int8 weights per channel,
int8 activations per tensor) with `FLOAT_OPS` and the model's float inputs left in float,
`Quantizer.calibrate` on the calibration examples, the masked attention ranges repaired in the
calibration result (see `quantize_full_int8`), `Quantizer.quantize`, and `Quantizer.validate`
against the float model on held-out examples. `kdistill.tflite.convert_saved_model` uses it for
`tflite_int8`; there is no other path: without the package it raises, naming it.
"""

import contextlib
import io
import os
import warnings

import numpy as np

from kdistill.tflite_graph import operators

PACKAGE = "litert-quantizer"
PIP_REQUIREMENT = "litert-quantizer>=0.11,<0.12"
RECIPE = "static_wi8_ai8"

# Layer norm (MEAN, SQUARED_DIFFERENCE, RSQRT in TFLite) stays in float: as accurate, and faster
# on x86 CPUs than its int8 kernels (benchmarks/int8_paths.py measures both). The rest is int8.
FLOAT_OPS = ("MEAN", "SQUARED_DIFFERENCE", "RSQRT")

# A calibrated range beyond this magnitude can only come from a masking constant (Keras' masked
# softmax fills masked attention scores with a huge negative number), never from activations.
MASK_CONSTANT_RANGE = 1e6

VALIDATION_METRICS = ("MSE", "SNR")


def _quantizer_modules():
    try:
        from litert_quantizer import qtyping, quantizer, recipe
        from litert_quantizer.algorithm_manager import AlgorithmName
    except ImportError as error:
        raise ImportError(
            f"tflite_int8 needs LiteRT's quantizer: pip install '{PIP_REQUIREMENT}' (a kdistill "
            f"dependency; it installs next to TensorFlow 2.21 and ai-edge-litert 2.3). "
            f"({error})") from error
    return quantizer, recipe, qtyping, AlgorithmName


def _magnitude(qsv):
    if not qsv or "min" not in qsv or "max" not in qsv:
        return None
    return float(max(np.max(np.abs(qsv["min"])), np.max(np.abs(qsv["max"]))))


def mask_range_fixes(content, calibration):
    """The calibrated ranges of masked attention scores to clip, and what to clip them to.

    Keras' masked softmax is `where(mask, scores, <huge negative>)`, a SELECT_V2 op. Calibration
    records the masking constant in its output's range, and the quantizer gives SELECT_V2's
    inputs the output's scale, so the scores would get a scale of ~1e36: every score rounds to
    0 and attention becomes uniform. Clipping the output's range to the range of its data
    inputs (the scores) keeps their resolution; masked positions then saturate at the smallest
    score, so softmax gives them a weight of about exp(min - max), about 0.

    Args:
        content: bytes. The float `.tflite` model.
        calibration: dict. `{tensor name: {"min", "max"}}` (`Quantizer.calibrate`'s result).

    Returns:
        dict. `{SELECT_V2 output tensor name: (low, high)}`.

    Example:
    >>> import tensorflow as tf
    >>> @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32, name="x"),
    ...                               tf.TensorSpec([1, 4], tf.bool, name="m")])
    ... def masked(x, m):
    ...     return {"y": tf.where(m, x, -1e9)}
    >>> content = tf.lite.TFLiteConverter.from_concrete_functions(
    ...     [masked.get_concrete_function()], masked).convert()
    >>> select = [o for o in operators(content) if o["op"] == "SELECT_V2"][0]
    >>> ranges = {select["outputs"][0]["name"]: {"min": np.array([-1e9]), "max": np.array([3.])},
    ...           select["inputs"][1]["name"]: {"min": np.array([-2.]), "max": np.array([3.])}}
    >>> list(mask_range_fixes(content, ranges).values())
    [(-2.0, 3.0)]
    """
    fixes = {}
    for op in operators(content):
        if op["op"] != "SELECT_V2" or not op["outputs"]:
            continue
        out = op["outputs"][0]["name"]
        size = _magnitude(calibration.get(out))
        if size is None or size < MASK_CONSTANT_RANGE:
            continue
        data = [calibration.get(t["name"]) for t in op["inputs"][1:]]
        data = [r for r in data if (_magnitude(r) or np.inf) < MASK_CONSTANT_RANGE]
        if data:
            fixes[out] = (min(0.0, min(float(np.min(r["min"])) for r in data)),
                          max(0.0, max(float(np.max(r["max"])) for r in data)))
    return fixes


def _widen_output_ranges(content, calibration, signature_key, samples):
    """Sets each model output's range to its min/max over all calibration examples.

    `Quantizer.calibrate` keeps a moving average of each tensor's per-example range, which
    suits activations but clips the logits of a confident classifier (their int8 output would
    saturate well inside the logits' range). Outputs of SOFTMAX/LOGISTIC keep their fixed range.
    """
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=content)
    runner = interpreter.get_signature_runner(signature_key)
    tensors = {d["index"]: d["name"] for d in interpreter.get_tensor_details()}
    names = {output: tensors[d["index"]] for output, d in runner.get_output_details().items()}
    fixed = {t["name"] for o in operators(content) if o["op"] in ("SOFTMAX", "LOGISTIC")
             for t in o["outputs"]}
    low, high = {}, {}
    for sample in samples:
        for output, value in runner(**sample).items():
            low[output] = min(low.get(output, np.inf), float(np.min(value)))
            high[output] = max(high.get(output, -np.inf), float(np.max(value)))
    for output, name in names.items():
        qsv = calibration.get(name)
        if not qsv or name in fixed:
            continue
        calibration[name] = dict(qsv, min=np.minimum(qsv["min"], low[output]).astype(np.float32),
                                 max=np.maximum(qsv["max"], high[output]).astype(np.float32))


def quantizer_op_names():
    """The TFLite op names LiteRT's quantizer takes in `float_ops` / `int16_ops`, sorted.

    Example:
    >>> "BATCH_MATMUL" in quantizer_op_names()
    True
    """
    _, _, qtyping, _ = _quantizer_modules()
    return sorted(o.value for o in qtyping.TFLOperationName if o.value != "*")


def _op_rules(entries, valid=None):
    """`(op name, tensor-name regex)` pairs from names (every op of that kind) or pairs; with
    `valid` (the quantizer's op names), an unknown name raises a ValueError that lists them."""
    rules = [(e, ".*") if isinstance(e, str) else tuple(e) for e in entries]
    for name, _ in rules:
        if valid is not None and name not in valid:
            raise ValueError(f"tflite_int8: {name!r} is not a TFLite op the quantizer knows "
                             f"(export.int8_float_ops / float_ops, int16_ops); valid: "
                             f"{', '.join(sorted(valid))}.")
    return rules


def _rule_names(entries):
    return [name if regex == ".*" else f"{name} ({regex})" for name, regex in _op_rules(entries)]


def _samples(examples):
    """Batch-1 `{input name: array}` dicts from a list of them or a representative-dataset
    callable (`kdistill.tflite.representative_dataset`)."""
    if examples is None:
        return None
    if callable(examples):
        examples = examples()
    return [{k: np.asarray(v) for k, v in sample.items()} for sample in examples]


def quantize_full_int8(content, calibration_examples, signature_key="serving_default",
                       validation_examples=None, float_ops=FLOAT_OPS, num_threads=None,
                       recipe_name=RECIPE, int16_ops=()):
    """Full-integer int8 version of a float `.tflite` model, with LiteRT's quantizer.

    Int8 weights (per channel) and activations (per tensor) for every op the quantizer supports
    except `float_ops`; outputs are int8 (with their scale and zero point; each output's range is
    its min/max over the calibration examples), float inputs stay float32 and integer inputs
    (token ids) int32. The masked attention ranges are repaired before quantizing
    (`mask_range_fixes`).

    Args:
        content: bytes. The float32 `.tflite` model (`kdistill.tflite.convert_saved_model(...,
            "tflite_float32")`).
        calibration_examples: list of batch-1 `{input name: array}` dicts, or a callable
            returning an iterable of them (`kdistill.tflite.representative_dataset`).
        signature_key: str. The signature the examples feed.
        validation_examples: like `calibration_examples`, or None. Held-out examples for
            `Quantizer.validate` (the quantized outputs against the float model's); None skips it.
        float_ops: sequence of str or `(op name, tensor-name regex)`. TFLite ops kept in
            float (`FLOAT_OPS`: layer norm); a bare name means every op of that kind.
        num_threads: int or None. Threads for calibrating and validating (None: all CPUs).
        recipe_name: str. The quantizer's recipe: `static_wi8_ai8` (`RECIPE`, full int8) or
            `static_wi8_ai16` (int8 weights, 16-bit activations; `benchmarks/int8_paths.py`
            compares them).
        int16_ops: sequence like `float_ops`. Ops whose activations are quantized to 16 bits
            (int8 weights) inside the int8 recipe: mixed precision.

    Returns:
        `(content, info)`: the quantized flatbuffer as bytes, and a dict with `quantization`,
        `quantizer` (`"litert-quantizer <version>"`), `recipe`, `float_ops`,
        `num_calibration_examples`, `attention_mask_fix` (`applied`, `clipped_select_v2_outputs`)
        and `validation` (`{"num_examples", output name: {"MSE", "SNR"}}`, or None).

    Raises:
        ImportError: litert-quantizer is not installed (the message has the pip command).
        ValueError: no calibration examples.

    Example:
    >>> import os, tempfile
    >>> from kdistill import testing, tflite
    >>> path = os.path.join(tempfile.mkdtemp(), "mlp")
    >>> testing.tiny_mlp().export(path, format="tf_saved_model", verbose=False)
    >>> content, _ = tflite.convert_saved_model(path, "tflite_float32")
    >>> examples = [{"features": np.random.default_rng(i).normal(size=(1, 8)).astype("float32")}
    ...             for i in range(8)]
    >>> quantized, info = quantize_full_int8(content, examples, validation_examples=examples)
    >>> info["recipe"], sorted(info["validation"]["output_0"])
    ('static_wi8_ai8', ['MSE', 'SNR'])
    >>> sorted({t["type"] for o in operators(quantized) if o["op"] == "FULLY_CONNECTED"
    ...         for t in o["inputs"]})
    ['INT8']
    """
    import importlib.metadata

    quantizer, recipe, qtyping, AlgorithmName = _quantizer_modules()
    samples = _samples(calibration_examples)
    if not samples:
        raise ValueError("tflite_int8 needs calibration examples (representative_data).")
    threads = num_threads or os.cpu_count() or 1
    qt = quantizer.Quantizer(bytearray(content))
    qt.load_quantization_recipe(getattr(recipe, recipe_name)())
    # Float inputs stay float. Outputs stay int8 (scale and zero point in the file): with the
    # outputs left in float (OUTPUT: NO_QUANTIZE) litert-quantizer 0.11 feeds the dequantized
    # logits to an int8 SOFTMAX, and `probabilities` comes out wrong.
    valid = set(quantizer_op_names())
    for name, regex in _op_rules(int16_ops, valid):
        qt.add_static_config(regex=regex, operation_name=qtyping.TFLOperationName(name),
                             activation_num_bits=16, weight_num_bits=8)
    for name, regex in _op_rules(tuple(float_ops) + ("INPUT",), valid):
        qt.update_quantization_recipe(regex=regex, operation_name=qtyping.TFLOperationName(name),
                                      algorithm_key=AlgorithmName.NO_QUANTIZE)
    with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # progress bars; "preserve_all_tensors is for debugging"
        calibration = qt.calibrate({signature_key: samples}, num_threads=threads)
    _widen_output_ranges(content, calibration, signature_key, samples)
    fixes = mask_range_fixes(content, calibration)
    for name, (low, high) in fixes.items():
        calibration[name] = dict(calibration[name], min=np.full_like(calibration[name]["min"], low),
                                 max=np.full_like(calibration[name]["max"], high))
    with contextlib.redirect_stderr(io.StringIO()):
        quantized = qt.quantize(calibration, enable_progress_bar=False,
                                enable_progress_report=False).quantized_model
    info = {
        "quantization": ("full integer: int8 weights (per channel) and "
                         f"{'int16' if recipe_name.endswith('ai16') else 'int8'} activations "
                         "(per tensor); "
                         f"{', '.join(_rule_names(float_ops)) or 'no ops'} in float; "
                         + (f"{', '.join(_rule_names(int16_ops))} with 16-bit activations; "
                            if int16_ops else "")
                         + "int8 outputs (see "
                         "their scale and zero point); float inputs stay float32, int inputs "
                         "int32"),
        "quantizer": f"{PACKAGE} {importlib.metadata.version(PACKAGE)}",
        "recipe": recipe_name,
        "float_ops": _rule_names(float_ops),
        "int16_ops": _rule_names(int16_ops),
        "num_calibration_examples": len(samples),
        "attention_mask_fix": {"applied": bool(fixes), "clipped_select_v2_outputs": sorted(fixes)},
        "validation": _validate(qt, content, signature_key, _samples(validation_examples),
                                threads, quantizer),
    }
    return bytes(quantized), info


def _validate(qt, content, signature_key, samples, threads, quantizer):
    """`Quantizer.validate` on held-out examples: each output's MSE and SNR vs the float model."""
    if not samples:
        return None
    from ai_edge_litert.interpreter import Interpreter

    metrics = [getattr(quantizer.ValidationErrorMetric, m) for m in VALIDATION_METRICS]
    with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = qt.validate(test_data={signature_key: samples}, error_metrics=metrics,
                             num_threads=threads, validate_output_tensors_only=True)
    by_tensor = result.get_signature_comparison_result(signature_key).output_tensors
    # The results are keyed by tensor name; name them by the signature's output names.
    interpreter = Interpreter(model_content=content)
    details = interpreter.get_signature_runner(signature_key).get_output_details()
    tensors = {d["index"]: d["name"] for d in interpreter.get_tensor_details()}
    names = {tensors.get(d["index"]): output for output, d in details.items()}
    validation = {"num_examples": len(samples)}
    for tensor, values in by_tensor.items():
        validation[names.get(tensor, tensor)] = {
            str(getattr(k, "name", k)).upper(): float(v) for k, v in values.items()}
    return validation
