"""Full-integer int8 `.tflite` files with LiteRT's own quantizer (the `litert-quantizer` package).

`quantize_full_int8` takes a float32 `.tflite` model and returns its full-integer version through
the quantizer's public API: its static-range recipe (`static_wi8_ai8`: int8 weights per channel,
int8 activations per tensor) with `FLOAT_OPS` and the model's float inputs left in float,
`Quantizer.calibrate` on the calibration examples, each activation's range replaced by its
outlier-clipped range (`percentile_ranges`), the masked attention ranges repaired in the
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

# What stays in float by default: the ops whose int8 versions cost agreement or speed on a BERT
# (docs/export.md has the measurements, benchmarks/int8_paths.py repeats them). Entries are op
# names (every op of that kind) or (op name, output-tensor regex) pairs; the scoped ones name
# keras-hub's layers (a model with other names keeps those ops in int8). The matrix products
# of the dense layers and the embeddings, GELU and the classifier head are int8.
# Layer norm: its statistics (kdistill's whole default until the percentile ranges), then its
# scale and shift.
LAYER_NORM_STATISTICS = ("MEAN", "SQUARED_DIFFERENCE", "RSQRT")
LAYER_NORM_OPS = LAYER_NORM_STATISTICS + (("MUL", ".*layer_norm.*"), ("ADD", ".*layer_norm.*"))
# The residual additions feeding each layer norm: the residual stream of a BERT carries a few
# outlier channels (above 100 at [CLS] where the rest is within +-5), too wide for one int8 scale.
RESIDUAL_OPS = (("ADD", r".*(transformer_layer_\d+[^/]*/add|embeddings_add).*"),)
# The attention products and softmax: int8 BATCH_MATMUL runs outside XNNPACK, twice as slow.
ATTENTION_OPS = ("BATCH_MATMUL", ("SOFTMAX", ".*self_attention.*"))
FLOAT_OPS = LAYER_NORM_OPS + RESIDUAL_OPS + ATTENTION_OPS

# Activation ranges: per calibration example the (100 - p)-th and p-th percentiles of each
# tensor, then their min and max over the examples (`percentile_ranges`). It drops the one or
# two extreme values an example puts in a tensor, which would otherwise set its int8 scale.
ACTIVATION_PERCENTILE = 99.99

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


def _check_percentile(percentile):
    if isinstance(percentile, bool) or not isinstance(percentile, (int, float)) or not (
            50.0 < percentile <= 100.0):
        raise ValueError(f"activation_percentile must be a number in (50, 100], got "
                         f"{percentile!r} (100: plain min/max ranges; None: the quantizer's own "
                         "ranges).")


def percentile_ranges(content, samples, percentile=ACTIVATION_PERCENTILE,
                      signature_key="serving_default"):
    """Outlier-clipped ranges of a float `.tflite` model's activations over calibration examples.

    For each float tensor an op computes, the `(100 - percentile)`-th and `percentile`-th
    percentiles of its values in each example, then the smallest and the largest of those over
    the examples. A Transformer puts a few extreme values in some activations (a BERT's
    residual stream has channels above 100 at [CLS] where everything else is within +-5): a
    range that includes them leaves the other values a handful of int8 steps, and the
    quantizer's moving average of per-example ranges still follows them. 99.99 drops about one
    value per example in a 64 x 160 tensor.

    Args:
        content: bytes. The float `.tflite` model.
        samples: list of batch-1 `{input name: array}` dicts.
        percentile: float. In (50, 100]; 100 gives each tensor's min and max.
        signature_key: str. The signature the samples feed.

    Returns:
        dict. `{tensor name: (low, high)}`, each range widened to include 0.

    Raises:
        ValueError: `percentile` outside (50, 100], or no samples.

    Example:
    >>> import os, tempfile, keras
    >>> from kdistill import tflite
    >>> path = os.path.join(tempfile.mkdtemp(), "relu")
    >>> keras.Sequential([keras.Input((1000,), name="x"), keras.layers.ReLU()]).export(
    ...     path, format="tf_saved_model", verbose=False)
    >>> content, _ = tflite.convert_saved_model(path, "tflite_float32")
    >>> x = np.linspace(-1.0, 1.0, 1000, dtype="float32")[None]
    >>> x[0, 0] = 50.0  # one outlier
    >>> ranges = percentile_ranges(content, [{"x": x}], percentile=99.0)
    >>> [(low, round(high, 2)) for low, high in ranges.values()]
    [(0.0, 0.98)]
    >>> [high for _, high in percentile_ranges(content, [{"x": x}], 100.0).values()]
    [50.0]
    """
    from ai_edge_litert.interpreter import Interpreter

    _check_percentile(percentile)
    if not samples:
        raise ValueError("percentile_ranges needs calibration samples.")
    computed = {t["name"] for o in operators(content) for t in o["outputs"]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "preserve_all_tensors is for debugging"
        interpreter = Interpreter(model_content=content, experimental_preserve_all_tensors=True)
    runner = interpreter.get_signature_runner(signature_key)
    tensors = [d for d in interpreter.get_tensor_details() if d["name"] in computed
               and np.issubdtype(d["dtype"], np.floating)]
    low, high = {}, {}
    for sample in samples:
        runner(**sample)
        for d in tensors:
            value = interpreter.get_tensor(d["index"])
            if value.size == 0:
                continue
            lo, hi = np.percentile(value, [100.0 - percentile, percentile])
            name = d["name"]
            low[name] = min(low.get(name, 0.0), float(lo))
            high[name] = max(high.get(name, 0.0), float(hi))
    return {name: (low[name], high[name]) for name in low}


def _clip_activation_ranges(content, calibration, samples, percentile, signature_key):
    """Replaces the per-tensor activation ranges of `calibration` by `percentile_ranges`; the
    masking constants' ranges are left for `mask_range_fixes`. Returns how many changed."""
    changed = 0
    for name, (low, high) in percentile_ranges(content, samples, percentile,
                                               signature_key).items():
        qsv = calibration.get(name)
        if (not qsv or "min" not in qsv or np.size(qsv["min"]) != 1
                or not np.isfinite([low, high]).all()
                or max(abs(low), abs(high)) >= MASK_CONSTANT_RANGE):
            continue
        calibration[name] = dict(qsv, min=np.full_like(qsv["min"], low),
                                 max=np.full_like(qsv["max"], high))
        changed += 1
    return changed


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
                       recipe_name=RECIPE, int16_ops=(),
                       activation_percentile=ACTIVATION_PERCENTILE):
    """Full-integer int8 version of a float `.tflite` model, with LiteRT's quantizer.

    Int8 weights (per channel) and activations (per tensor) for every op the quantizer supports
    except `float_ops`; outputs are int8 (with their scale and zero point; each output's range is
    its min/max over the calibration examples), float inputs stay float32 and integer inputs
    (token ids) int32. Activation ranges are clipped to their outliers (`percentile_ranges`)
    and the masked attention ranges repaired (`mask_range_fixes`) before quantizing.

    Args:
        content: bytes. The float32 `.tflite` model (`kdistill.tflite.convert_saved_model(...,
            "tflite_float32")`).
        calibration_examples: list of batch-1 `{input name: array}` dicts, or a callable
            returning an iterable of them (`kdistill.tflite.representative_dataset`).
        signature_key: str. The signature the examples feed.
        validation_examples: like `calibration_examples`, or None. Held-out examples for
            `Quantizer.validate` (the quantized outputs against the float model's); None skips it.
        float_ops: sequence of str or `(op name, tensor-name regex)`. TFLite ops kept in
            float (`FLOAT_OPS`: layer norm, the residual additions, the attention products and
            softmax); a bare name means every op of that kind.
        num_threads: int or None. Threads for calibrating and validating (None: all CPUs).
        recipe_name: str. The quantizer's recipe: `static_wi8_ai8` (`RECIPE`, full int8) or
            `static_wi8_ai16` (int8 weights, 16-bit activations; `benchmarks/int8_paths.py`
            compares them).
        int16_ops: sequence like `float_ops`. Ops whose activations are quantized to 16 bits
            (int8 weights) inside the int8 recipe: mixed precision.
        activation_percentile: float or None. Activation ranges from `percentile_ranges` at
            this percentile (`ACTIVATION_PERCENTILE`); 100 for plain min/max; None keeps the
            quantizer's own ranges (a moving average of each example's min and max).

    Returns:
        `(content, info)`: the quantized flatbuffer as bytes, and a dict with `quantization`,
        `quantizer` (`"litert-quantizer <version>"`), `recipe`, `float_ops`,
        `num_calibration_examples`, `activation_ranges` (how they were set),
        `attention_mask_fix` (`applied`, `clipped_select_v2_outputs`) and `validation`
        (`{"num_examples", output name: {"MSE", "SNR"}}`, or None).

    Raises:
        ImportError: litert-quantizer is not installed (the message has the pip command).
        ValueError: no calibration examples, or `activation_percentile` outside (50, 100].

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
    if activation_percentile is not None:
        _check_percentile(activation_percentile)
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
    ranges = "the quantizer's moving average of per-example min/max"
    if activation_percentile is not None:
        clipped = _clip_activation_ranges(content, calibration, samples, activation_percentile,
                                          signature_key)
        ranges = (f"per-example {activation_percentile:g}th percentiles, min/max over the "
                  f"examples ({clipped} tensors)")
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
        "activation_ranges": ranges,
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
