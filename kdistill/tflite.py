"""TFLite (LiteRT) files from a SavedModel signature: converting in four precisions, running.

`convert_saved_model` converts one signature of a SavedModel to a `.tflite` flatbuffer as
float32, float16 weights, dynamic-range int8 weights or full integer int8 (calibrated on a
`representative_dataset`), with the narrowest op set that converts (Select TF ops only as a
recorded fallback). Full int8 repairs the calibrated range of Keras' masked attention scores
before quantizing (see `convert_saved_model`). `signature_runner` runs a flatbuffer with the LiteRT
interpreter (`ai_edge_litert`; `tf.lite.Interpreter` is deprecated) and `op_summary` counts its ops
and the ops that still compute in float. `kdistill.export.export_student` uses them for its TFLite
artifacts.
"""

import warnings

import numpy as np
import tensorflow as tf

SIGNATURE_KEY = tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY  # "serving_default"

FORMATS = ("tflite_float32", "tflite_float16", "tflite_dynamic_int8", "tflite_int8")

_OPS_BUILTINS = [tf.lite.OpsSet.TFLITE_BUILTINS]
_OPS_SELECT = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
_OPS_INT8 = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
_OPS_INT8_FLOAT = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
_OPS_INT8_SELECT = _OPS_INT8_FLOAT + [tf.lite.OpsSet.SELECT_TF_OPS]

# A calibrated range beyond this magnitude can only come from a masking constant (Keras' Softmax
# fills masked attention scores with a huge negative number), never from real activations.
_MASK_CONSTANT_RANGE = 1e6


def representative_dataset(examples):
    """A converter's `representative_dataset`: each example as a batch-1 `{name: array}` dict.

    Args:
        examples: dict. `{input name: np.ndarray [n, ...]}`, the same `n` for every input.

    Returns:
        A callable returning a generator of `{input name: np.ndarray [1, ...]}`, one per example.

    Example:
    >>> gen = representative_dataset({"x": np.arange(6).reshape(3, 2)})
    >>> [batch["x"].tolist() for batch in gen()]
    [[[0, 1]], [[2, 3]], [[4, 5]]]
    """
    n = next(iter(examples.values())).shape[0]

    def gen():
        for i in range(n):
            yield {name: array[i:i + 1] for name, array in examples.items()}

    return gen


def _converter(saved_model_dir, fmt, representative, ops, signature_key):
    """A `TFLiteConverter` set up for one format and op set; returns `(converter, info)`."""
    converter = tf.lite.TFLiteConverter.from_saved_model(
        saved_model_dir, signature_keys=[signature_key]
    )
    info = {"quantization": "none"}
    if fmt == "tflite_float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
        info["quantization"] = "float16 weights"
    elif fmt == "tflite_dynamic_int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        info["quantization"] = "dynamic-range int8 weights, float activations"
    elif fmt == "tflite_int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        info["quantization"] = (
            "full integer: int8 weights and activations; float32 I/O (int inputs stay int32)"
        )
    converter.target_spec.supported_ops = ops
    return converter, info


def convert_saved_model(saved_model_dir, fmt, representative_dataset=None,
                        signature_key=SIGNATURE_KEY):
    """Converts a SavedModel signature to TFLite with the narrowest op set that works.

    The op sets are tried in order: builtin ops, then builtins plus Select TF ops (which an app
    must link the Flex delegate for; a warning says why it was needed). Full int8 tries int8
    kernels only, then int8 plus float builtins, then plus Select TF ops. Before quantizing to full
    int8, the calibrated range of each masked attention-score tensor (Keras' masked softmax,
    `where(mask, scores, -huge)`, a SELECT_V2 op) is clipped to the range of the scores: otherwise
    the masking constant sets the int8 scale of the scores (~1e36), every score rounds to 0 and
    attention becomes uniform. Inputs and outputs stay float32 (integer inputs stay int32).

    Args:
        saved_model_dir: str. The SavedModel to convert.
        fmt: str. One of `FORMATS`: `"tflite_float32"`, `"tflite_float16"`,
            `"tflite_dynamic_int8"`, `"tflite_int8"`.
        representative_dataset: callable or None. Calibration inputs for `"tflite_int8"` (see
            `representative_dataset`); ignored by the other formats.
        signature_key: str. The signature to convert.

    Returns:
        `(content, info)`: the flatbuffer as bytes, and a dict with `quantization`,
        `supported_ops`, `select_tf_ops`, `fallback_reason` (the errors of the op sets tried
        first, when any) and, for `"tflite_int8"`, `attention_mask_fix` (`applied` and the
        clipped tensors).

    Raises:
        ValueError: an unknown `fmt`.
        RuntimeError: no op set converts the model.

    Example:
    >>> import os, tempfile
    >>> from kdistill import testing
    >>> path = os.path.join(tempfile.mkdtemp(), "mlp")
    >>> testing.tiny_mlp().export(path, format="tf_saved_model", verbose=False)
    >>> content, info = convert_saved_model(path, "tflite_dynamic_int8")
    >>> info["supported_ops"], info["select_tf_ops"], content[4:8]
    (['TFLITE_BUILTINS'], False, b'TFL3')
    """
    if fmt not in FORMATS:
        raise ValueError(f"Unknown TFLite format {fmt!r}; valid formats are {list(FORMATS)}.")
    if fmt == "tflite_int8":
        attempts = [_OPS_INT8, _OPS_INT8_FLOAT, _OPS_INT8_SELECT]
    else:
        attempts = [_OPS_BUILTINS, _OPS_SELECT]
    errors = []
    for ops in attempts:
        converter, info = _converter(saved_model_dir, fmt, representative_dataset, ops,
                                     signature_key)
        try:
            with warnings.catch_warnings():  # the calibrator uses tf.lite.Interpreter
                warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
                if fmt == "tflite_int8":
                    content, fix = _convert_full_int8(converter)
                    info["attention_mask_fix"] = fix
                else:
                    content = converter.convert()
        except Exception as error:  # ConverterError and friends: try the next op set
            errors.append(f"{[o.name for o in ops]}: {str(error).splitlines()[0][:300]}")
            continue
        info["supported_ops"] = [o.name for o in ops]
        info["select_tf_ops"] = tf.lite.OpsSet.SELECT_TF_OPS in ops
        if errors:
            info["fallback_reason"] = errors
        if info["select_tf_ops"]:
            warnings.warn(
                f"{fmt}: the model needs Select TF ops (the TFLite Flex delegate must be linked "
                "into the app). Reasons: " + " | ".join(errors)
            )
        return content, info
    raise RuntimeError(f"TFLite conversion to {fmt} failed with every op set: {errors}")


def _convert_full_int8(converter):
    """Full-integer conversion with the attention-mask ranges repaired; returns `(bytes, fix)`.

    Keras' masked softmax is `where(mask, scores, <huge negative>)` (a SELECT_V2 op in TFLite).
    The calibrator records that huge constant in the SELECT_V2 output's range (about -2.4e38 for
    keras-hub BERT), and int8 SELECT_V2 shares one scale between its inputs and output, so the
    attention scores themselves get a scale of ~1e36: every score quantizes to 0 and attention
    becomes uniform over the unmasked tokens (docs/results.md, "Export latency": the agreement
    this costs without the fix).
    Keeping SELECT_V2/SOFTMAX in float (denylisting) does not help: the shared scale is still
    propagated to the score matmul. Instead we calibrate, clip each such SELECT_V2 output's range
    to the range of its data input (the scores), and quantize. Masked positions then saturate at
    the smallest calibrated score, so softmax gives them weight ~exp(min - max) ~ 0.

    Uses the same private hooks as `tf.lite.experimental.QuantizationDebugger` (calibrate-only
    conversion, then `mlir_quantize`); falls back to the plain conversion if they are missing.
    """
    try:
        from tensorflow.lite.python import convert as tfl_convert
        from tensorflow.lite.tools import flatbuffer_utils
    except ImportError as error:  # pragma: no cover - TF internals moved
        return converter.convert(), {"applied": False, "reason": f"unavailable: {error}"}
    if not hasattr(converter, "_experimental_calibrate_only"):  # pragma: no cover
        return converter.convert(), {"applied": False, "reason": "no calibrate-only converter"}
    converter._experimental_calibrate_only = True
    calibrated = converter.convert()
    patched, clipped = _clip_mask_ranges(calibrated, flatbuffer_utils)
    content = tfl_convert.mlir_quantize(
        patched, disable_per_channel=bool(getattr(converter, "_experimental_disable_per_channel",
                                                  False)))
    if not isinstance(content, (bytes, bytearray)):  # pragma: no cover
        raise RuntimeError(f"mlir_quantize returned {type(content).__name__}")
    return bytes(content), {"applied": bool(clipped), "clipped_select_v2_outputs": clipped}


def _clip_mask_ranges(calibrated, flatbuffer_utils):
    """Clips SELECT_V2 outputs whose calibrated range holds a masking constant; returns
    `(model_bytes, [tensor names])`."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(calibrated))
    codes = []
    for code in model.operatorCodes:
        codes.append(max(code.builtinCode, code.deprecatedBuiltinCode))

    def stats(tensor):
        q = tensor.quantization
        if q is None or q.min is None or q.max is None or len(q.min) != 1:
            return None
        return float(q.min[0]), float(q.max[0])

    clipped = []
    for graph in model.subgraphs:
        for op in graph.operators:
            if codes[op.opcodeIndex] != schema.BuiltinOperator.SELECT_V2:
                continue
            out = graph.tensors[op.outputs[0]]
            out_range = stats(out)
            if out_range is None or max(map(abs, out_range)) < _MASK_CONSTANT_RANGE:
                continue
            data = [stats(graph.tensors[i]) for i in op.inputs[1:] if i >= 0]
            data = [r for r in data if r is not None and max(map(abs, r)) < _MASK_CONSTANT_RANGE]
            if not data:
                continue
            low = min(0.0, min(r[0] for r in data))
            high = max(0.0, max(r[1] for r in data))
            out.quantization.min = np.array([low], np.float32)
            out.quantization.max = np.array([high], np.float32)
            clipped.append(out.name.decode() if isinstance(out.name, bytes) else str(out.name))
    if not clipped:
        return calibrated, clipped
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)), clipped


def signature_runner(content, num_threads=None, signature_key=SIGNATURE_KEY):
    """A LiteRT interpreter for a `.tflite` flatbuffer, and the runner of one of its signatures.

    Args:
        content: bytes. The flatbuffer (`convert_saved_model`'s `content`, or a file's bytes).
        num_threads: int or None. Interpreter threads (None: the interpreter's default).
        signature_key: str. The signature to run.

    Returns:
        `(interpreter, runner)`: an `ai_edge_litert.interpreter.Interpreter`, and its signature
        runner, called with the inputs as keyword NumPy arrays; it returns `{output name: array}`.

    Example:
    >>> import os, tempfile
    >>> from kdistill import testing
    >>> path = os.path.join(tempfile.mkdtemp(), "mlp")
    >>> testing.tiny_mlp().export(path, format="tf_saved_model", verbose=False)
    >>> interpreter, runner = signature_runner(convert_saved_model(path, "tflite_float32")[0])
    >>> name = interpreter.get_signature_list()[SIGNATURE_KEY]["inputs"][0]
    >>> [out.shape for out in runner(**{name: np.zeros((1, 8), "float32")}).values()]
    [(1, 3)]
    """
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=content, num_threads=num_threads)
    return interpreter, interpreter.get_signature_runner(signature_key)


def op_summary(interpreter):
    """Op counts of an interpreter's model, and the ops that still compute in float.

    Reads the interpreter's op details (a private LiteRT API, so best effort only).

    Args:
        interpreter: an `ai_edge_litert.interpreter.Interpreter` (`signature_runner` makes one).

    Returns:
        dict. `op_counts` (`{op name: count}`) and `float32_ops` (`{op name: count}` of the ops
        with a float32 input, QUANTIZE/DEQUANTIZE left out: for a quantized model, the ops
        without int8 kernels); `{}` when the op details cannot be read.

    Example:
    >>> @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32, name="x")])
    ... def double(x):
    ...     return {"y": 2.0 * x}
    >>> converter = tf.lite.TFLiteConverter.from_concrete_functions(
    ...     [double.get_concrete_function()], double)
    >>> from ai_edge_litert.interpreter import Interpreter
    >>> op_summary(Interpreter(model_content=converter.convert()))
    {'op_counts': {'MUL': 1}, 'float32_ops': {'MUL': 1}}
    """
    try:
        ops = interpreter._get_ops_details()
        tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    except Exception:  # private API: best effort only
        return {}
    counts, float_ops = {}, {}
    for op in ops:
        name = op["op_name"]
        counts[name] = counts.get(name, 0) + 1
        dtypes = {tensors[i]["dtype"] for i in op["inputs"] if i in tensors}
        if np.float32 in dtypes and name not in ("QUANTIZE", "DEQUANTIZE"):
            float_ops[name] = float_ops.get(name, 0) + 1
    return {"op_counts": dict(sorted(counts.items())),
            "float32_ops": dict(sorted(float_ops.items()))}
