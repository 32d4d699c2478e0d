"""TFLite (LiteRT) files from a SavedModel signature: converting in four precisions, running.

`convert_saved_model` converts one signature of a SavedModel to a `.tflite` flatbuffer as
float32, float16 weights or dynamic-range int8 weights with the TFLite converter and the
narrowest op set that converts (Select TF ops only as a recorded fallback), or as full integer
int8: the float32 file quantized by LiteRT's own quantizer, calibrated on a
`representative_dataset` (`kdistill.int8`). `signature_runner` runs a flatbuffer with the LiteRT
interpreter (`ai_edge_litert`; `tf.lite.Interpreter` is deprecated) and `float_outputs`
dequantizes the int8 outputs of full int8 files; `kdistill.tflite_graph` reads their ops.
`kdistill.export.export_student` uses them for its TFLite artifacts.
"""

import warnings

import numpy as np
import tensorflow as tf

from kdistill import int8

SIGNATURE_KEY = tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY  # "serving_default"

FORMATS = ("tflite_float32", "tflite_float16", "tflite_dynamic_int8", "tflite_int8")

_OPS_BUILTINS = [tf.lite.OpsSet.TFLITE_BUILTINS]
_OPS_SELECT = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]


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


def _converter(saved_model_dir, fmt, ops, signature_key):
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
    converter.target_spec.supported_ops = ops
    return converter, info


def convert_saved_model(saved_model_dir, fmt, representative_dataset=None,
                        signature_key=SIGNATURE_KEY, validation_dataset=None, int8_options=None):
    """Converts a SavedModel signature to TFLite with the narrowest op set that works.

    The op sets are tried in order: builtin ops, then builtins plus Select TF ops (which an app
    must link the Flex delegate for; a warning says why it was needed). Full int8 converts to
    float32 that way, then quantizes the float32 file with LiteRT's quantizer
    (`kdistill.int8.quantize_full_int8`: int8 weights and activations, `int8.FLOAT_OPS` in
    float, outlier-clipped activation ranges, the masked attention ranges repaired, validated
    against the float model on `validation_dataset`). Full int8 outputs are int8
    (`float_outputs` dequantizes them); the other formats' are float32. Float inputs stay
    float32 and integer inputs int32.

    Args:
        saved_model_dir: str. The SavedModel to convert.
        fmt: str. One of `FORMATS`: `"tflite_float32"`, `"tflite_float16"`,
            `"tflite_dynamic_int8"`, `"tflite_int8"`.
        representative_dataset: callable or None. Calibration inputs for `"tflite_int8"` (see
            `representative_dataset`); ignored by the other formats.
        signature_key: str. The signature to convert.
        validation_dataset: callable or None. Held-out inputs `"tflite_int8"` is validated on
            (`Quantizer.validate`); ignored by the other formats.
        int8_options: dict or None. More keyword arguments of `kdistill.int8.quantize_full_int8`
            for `"tflite_int8"` (`recipe_name`, `float_ops`, `int16_ops`).

    Returns:
        `(content, info)`: the flatbuffer as bytes, and a dict with `quantization`,
        `supported_ops`, `select_tf_ops`, `fallback_reason` (the errors of the op sets tried
        first, when any) and, for `"tflite_int8"`, the quantizer's details (`quantizer`,
        `recipe`, `float_ops`, `attention_mask_fix`, `validation`; see `kdistill.int8`).

    Raises:
        ValueError: an unknown `fmt`, or `"tflite_int8"` without a `representative_dataset`.
        RuntimeError: no op set converts the model.
        ImportError: `"tflite_int8"` without the litert-quantizer package (named, with the pip
            command).

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
        if representative_dataset is None:
            raise ValueError("tflite_int8 needs a representative_dataset to calibrate on.")
        content, info = convert_saved_model(saved_model_dir, "tflite_float32",
                                            signature_key=signature_key)
        quantized, details = int8.quantize_full_int8(
            content, representative_dataset, signature_key, validation_examples=validation_dataset,
            **(int8_options or {}))
        info.update(details)
        return quantized, info
    errors = []
    for ops in [_OPS_BUILTINS, _OPS_SELECT]:
        converter, info = _converter(saved_model_dir, fmt, ops, signature_key)
        try:
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


def float_outputs(runner, outputs):
    """A signature runner's outputs as float32, integer (quantized) outputs dequantized.

    Full int8 files (`tflite_int8`) return int8 `logits` and `probabilities`: the value is
    `scale * (q - zero_point)`, with the tensor's own scale and zero point.

    Args:
        runner: an `ai_edge_litert` signature runner (`signature_runner`).
        outputs: dict. What `runner(**inputs)` returned.

    Returns:
        dict. `{output name: float32 np.ndarray}`.

    Example:
    >>> class Runner:  # stands in for a LiteRT signature runner
    ...     def get_output_details(self):
    ...         return {"logits": {"quantization": (0.5, -2)}}
    >>> float_outputs(Runner(), {"logits": np.array([[-2, 0, 4]], np.int8)})["logits"].tolist()
    [[0.0, 1.0, 3.0]]
    """
    details = runner.get_output_details()
    result = {}
    for name, value in outputs.items():
        value = np.asarray(value)
        if np.issubdtype(value.dtype, np.integer):
            scale, zero_point = details[name]["quantization"]
            value = (value.astype(np.float32) - zero_point) * np.float32(scale or 1.0)
        result[name] = value.astype(np.float32)
    return result
