"""Edge export: a distilled student as a SavedModel and TFLite files, each checked against Keras.

`export_student` writes the **student only** (never the teacher or the distillation projections)
as a TF Serving style SavedModel with a `serving_default` signature, converts that SavedModel to
up to four TFLite variants (float32, float16, dynamic-range int8, full int8), and checks every
artifact against the Keras student on held-out validation examples: max abs logit difference,
top-1 agreement, task accuracy, batch-1 latency and file size. The figures go to `report.json`,
a PNG plot and a printed table.

Layout of `export_dir`:

    saved_model/               # tf.saved_model.load(...).signatures["serving_default"]
    model_float32.tflite
    model_float16.tflite
    model_dynamic_int8.tflite
    model_int8.tflite
    report.json
    report.png
"""

import hashlib
import json
import os
import shutil
import statistics
import tempfile
import time
import warnings

import keras
import numpy as np
import tensorflow as tf

from kdistill.evaluation import as_float32_logits, dir_size, weights_bytes

SIGNATURE_KEY = "serving_default"
OUTPUT_NAMES = ("logits", "probabilities")

VALID_FORMATS = (
    "saved_model",
    "tflite_float32",
    "tflite_float16",
    "tflite_dynamic_int8",
    "tflite_int8",
)

_FILENAMES = {
    "saved_model": "saved_model",
    "tflite_float32": "model_float32.tflite",
    "tflite_float16": "model_float16.tflite",
    "tflite_dynamic_int8": "model_dynamic_int8.tflite",
    "tflite_int8": "model_int8.tflite",
}

# Targets from issue 6: (metric, comparison, threshold).
TARGETS = {
    "saved_model": ("max_abs_diff", "<=", 1e-5),
    "tflite_float32": ("max_abs_diff", "<=", 1e-4),
    "tflite_float16": ("top1_agreement", ">=", 0.99),
    "tflite_dynamic_int8": ("top1_agreement", ">=", 0.99),
    "tflite_int8": ("top1_agreement", ">=", 0.98),
}

REPORT_FILENAME = "report.json"
PLOT_FILENAME = "report.png"


# ----------------------------------------------------------------------------- model inputs


def _resolve_models(model, teacher):
    from kdistill.distiller import Distiller

    if isinstance(model, Distiller):
        student = model.student
        if teacher is None:
            teacher = model.teacher
    else:
        student = model
    if not isinstance(student, keras.Model):
        raise ValueError(
            f"export_student needs a kdistill.Distiller or a keras.Model (Keras 3), got "
            f"{type(model).__name__}."
        )
    if teacher is not None and not isinstance(teacher, keras.Model):
        raise ValueError(f"teacher must be a keras.Model or None, got {type(teacher).__name__}.")
    return student, teacher


def _input_structure(model):
    """Returns `(structure, names, keras_tensors)` of a model's symbolic inputs."""
    try:
        structure = model.input
    except (AttributeError, ValueError) as error:
        raise ValueError(
            f"Cannot trace the inputs of model {model.name!r} ({type(model).__name__}): it has no "
            "symbolic inputs (an unbuilt model, or a subclassed model). Build it as a functional "
            "model, e.g. `inputs = keras.Input(...)` then "
            f"`keras.Model(inputs, student(inputs))`, and export that. ({error})"
        ) from None
    if isinstance(structure, dict):
        names = list(structure)
        tensors = [structure[n] for n in names]
    elif isinstance(structure, (list, tuple)):
        tensors = list(structure)
        names = [getattr(t, "name", None) or f"input_{i}" for i, t in enumerate(tensors)]
    else:
        tensors = [structure]
        names = [getattr(structure, "name", None) or "inputs"]
    if len(set(names)) != len(names):
        raise ValueError(f"The model's inputs have duplicate names {names}; name each keras.Input.")
    return structure, names, tensors


def _pack(structure, names, flat):
    """Turns `{name: value}` back into the structure the model is called with."""
    if isinstance(structure, dict):
        return {n: flat[n] for n in names}
    if isinstance(structure, (list, tuple)):
        return [flat[n] for n in names]
    return flat[names[0]]


def _flatten_x(x, structure, names):
    """Turns a batch's `x` (dict, list or array) into `{name: np.ndarray}`."""
    if isinstance(structure, dict):
        if not isinstance(x, dict):
            raise ValueError(
                f"The model takes a dict of inputs {names} but the data gives "
                f"{type(x).__name__}; yield `({{name: array}}, labels)` batches."
            )
        missing = [n for n in names if n not in x]
        if missing:
            raise ValueError(
                f"The data lacks model inputs {missing} (it has {sorted(x)}); every batch must "
                f"provide {names}."
            )
        return {n: np.asarray(x[n]) for n in names}
    if isinstance(structure, (list, tuple)):
        if isinstance(x, dict):
            return {n: np.asarray(x[n]) for n in names}
        return {n: np.asarray(v) for n, v in zip(names, x)}
    if isinstance(x, dict):
        if len(x) != 1:
            raise ValueError(f"The model takes one input but the data gives a dict {sorted(x)}.")
        x = next(iter(x.values()))
    return {names[0]: np.asarray(x)}


def _input_specs(names, tensors, sequence_length, first_batch):
    """TensorSpecs with a dynamic batch dim and every other unknown dim fixed."""
    specs = {}
    for name, tensor in zip(names, tensors):
        shape = list(tensor.shape)
        for axis in range(1, len(shape)):
            if shape[axis] is not None:
                continue
            if axis == 1 and sequence_length is not None:
                shape[axis] = int(sequence_length)
            elif first_batch is not None and first_batch[name].ndim == len(shape):
                shape[axis] = int(first_batch[name].shape[axis])
            else:
                raise ValueError(
                    f"Input {name!r} has an unknown dimension {axis} (shape {tuple(tensor.shape)});"
                    " pass `sequence_length=` or validation/representative data to fix it."
                )
        dtype = tf.as_dtype(keras.backend.standardize_dtype(tensor.dtype))
        specs[name] = tf.TensorSpec([None] + shape[1:], dtype, name=name)
    return specs


def _conform(array, spec):
    """Casts to the spec's dtype and pads (zeros) or truncates the fixed dims to its shape."""
    array = np.asarray(array)
    target = spec.shape.as_list()
    if array.ndim != len(target):
        raise ValueError(
            f"Input {spec.name!r} has rank {array.ndim} in the data but the model expects rank "
            f"{len(target)} (shape {tuple(target)})."
        )
    for axis in range(1, len(target)):
        size = target[axis]
        if array.shape[axis] > size:
            array = np.take(array, np.arange(size), axis=axis)
        elif array.shape[axis] < size:
            pad = [(0, 0)] * array.ndim
            pad[axis] = (0, size - array.shape[axis])
            array = np.pad(array, pad)
    return array.astype(spec.dtype.as_numpy_dtype)


# ----------------------------------------------------------------------------- data


def _check_data_not_empty(data, what):
    if data is None:
        return
    if isinstance(data, tf.data.Dataset) and int(data.cardinality()) == 0:
        raise ValueError(
            f"{what} is an empty dataset (cardinality 0). Check the files, filters and "
            "`take`/`skip` that built it."
        )


def _iter_batches(data):
    """Yields `(x, y_or_None)` NumPy batches from a tf.data.Dataset, `(x, y)` tuple or `x`."""
    if isinstance(data, tf.data.Dataset):
        for batch in data.as_numpy_iterator():
            if isinstance(batch, tuple):
                yield batch[0], (batch[1] if len(batch) > 1 else None)
            else:
                yield batch, None
    elif isinstance(data, tuple) and len(data) in (2, 3):
        yield data[0], data[1]
    elif isinstance(data, tuple) and len(data) == 1:
        yield data[0], None
    else:
        yield data, None


def _collect(data, structure, names, specs, limit, what):
    """Up to `limit` single examples: `({name: array[n, ...]}, labels_or_None)`."""
    inputs = {n: [] for n in names}
    labels = []
    have_labels = True
    count = 0
    for x, y in _iter_batches(data):
        flat = _flatten_x(x, structure, names)
        rows = next(iter(flat.values())).shape[0]
        take = min(rows, limit - count)
        for n in names:
            inputs[n].append(_conform(flat[n][:take], specs[n]))
        if y is None:
            have_labels = False
        else:
            labels.append(np.asarray(y)[:take])
        count += take
        if count >= limit:
            break
    if count == 0:
        raise ValueError(f"{what} yielded no examples; give at least one batch.")
    inputs = {n: np.concatenate(v) for n, v in inputs.items()}
    y = np.concatenate(labels) if have_labels and labels else None
    return inputs, y


def _first_batch(data, structure, names):
    for x, _ in _iter_batches(data):
        return _flatten_x(x, structure, names)
    return None


def _row_hashes(inputs, names):
    n = next(iter(inputs.values())).shape[0]
    hashes = []
    for i in range(n):
        digest = hashlib.sha1()
        for name in names:
            digest.update(np.ascontiguousarray(inputs[name][i]).tobytes())
        hashes.append(digest.hexdigest())
    return hashes


def _labels_to_ids(y):
    if y is None:
        return None
    y = np.asarray(y)
    if y.ndim >= 2 and y.shape[-1] > 1:
        return np.argmax(y, axis=-1).reshape(-1)
    return y.reshape(-1).astype("int64")


# ----------------------------------------------------------------------------- measuring


def _median_ms(fn, warmup, runs):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, runs)):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def _keras_forward(model, structure, names):
    @tf.function(reduce_retracing=True)
    def forward(flat):
        return as_float32_logits(model(_pack(structure, names, flat), training=False))

    return forward


def _keras_logits(forward, inputs, batch_size=64):
    n = next(iter(inputs.values())).shape[0]
    chunks = []
    for start in range(0, n, batch_size):
        chunk = {k: tf.constant(v[start:start + batch_size]) for k, v in inputs.items()}
        chunks.append(forward(chunk).numpy())
    return np.concatenate(chunks)


def _one_example(inputs, i=0):
    return {k: v[i:i + 1] for k, v in inputs.items()}


def _compare(reference, logits, labels):
    result = {
        "max_abs_diff": float(np.max(np.abs(reference - logits))),
        "top1_agreement": float(np.mean(np.argmax(reference, -1) == np.argmax(logits, -1))),
        "accuracy": None,
    }
    if labels is not None:
        result["accuracy"] = float(np.mean(np.argmax(logits, -1) == labels))
    return result


def _keras_entry(model, structure, names, inputs, labels, example, warmup, runs):
    forward = _keras_forward(model, structure, names)
    logits = _keras_logits(forward, inputs) if inputs is not None else None
    one = {k: tf.constant(v) for k, v in example.items()}
    entry = {
        "name": model.name,
        "params": int(model.count_params()),
        "weights_bytes": weights_bytes(model),
        "latency_ms": _median_ms(lambda: forward(one).numpy(), warmup, runs),
        "accuracy": None,
    }
    if logits is not None and labels is not None:
        entry["accuracy"] = float(np.mean(np.argmax(logits, -1) == labels))
    return entry, logits


# ----------------------------------------------------------------------------- writing


def _write_saved_model(student, structure, names, specs, path):
    """Writes the student's forward as a `serving_default` signature.

    Only the student's variables are tracked (as plain `tf.Variable`s), so each weight is stored
    once: Keras' `ExportArchive`/`model.export` in Keras 3.15 store every variable twice (under
    the model and under `_all_variables`), doubling the SavedModel on disk.
    """
    root = tf.__internal__.tracking.AutoTrackable()
    weights = student.trainable_variables + student.non_trainable_variables
    root.variables = [getattr(v, "value", v) for v in weights]  # loaded.variables

    @tf.function(input_signature=[dict(specs)])
    def serve(flat):
        logits = as_float32_logits(student(_pack(structure, names, flat), training=False))
        return {"logits": logits, "probabilities": tf.nn.softmax(logits, axis=-1)}

    root.serve = serve
    tf.saved_model.save(root, path, signatures={SIGNATURE_KEY: serve})


def _representative_gen(calibration, names, specs):
    n = next(iter(calibration.values())).shape[0]

    def gen():
        for i in range(n):
            yield {name: calibration[name][i:i + 1] for name in names}

    return gen


_OPS_BUILTINS = [tf.lite.OpsSet.TFLITE_BUILTINS]
_OPS_SELECT = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
_OPS_INT8 = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
_OPS_INT8_FLOAT = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
_OPS_INT8_SELECT = _OPS_INT8_FLOAT + [tf.lite.OpsSet.SELECT_TF_OPS]


def _convert(saved_model_dir, fmt, representative):
    """Converts with the narrowest op set that works; returns `(bytes, info)`."""
    if fmt == "tflite_int8":
        attempts = [_OPS_INT8, _OPS_INT8_FLOAT, _OPS_INT8_SELECT]
    else:
        attempts = [_OPS_BUILTINS, _OPS_SELECT]
    errors = []
    for ops in attempts:
        converter = tf.lite.TFLiteConverter.from_saved_model(
            saved_model_dir, signature_keys=[SIGNATURE_KEY]
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


# A calibrated range beyond this magnitude can only come from a masking constant (Keras' Softmax
# fills masked attention scores with a huge negative number), never from real activations.
_MASK_CONSTANT_RANGE = 1e6


def _convert_full_int8(converter):
    """Full-integer conversion with the attention-mask ranges repaired; returns `(bytes, fix)`.

    Keras' masked softmax is `where(mask, scores, <huge negative>)` (a SELECT_V2 op in TFLite).
    The calibrator records that huge constant in the SELECT_V2 output's range (about -2.4e38 for
    keras-hub BERT), and int8 SELECT_V2 shares one scale between its inputs and output, so the
    attention scores themselves get a scale of ~1e36: every score quantizes to 0 and attention
    becomes uniform over the unmasked tokens (79% top-1 agreement on the TinyBERT-4 benchmark).
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


def _tflite_op_summary(interpreter):
    """Op counts, and the ops that still compute in float (for quantized models)."""
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


def _tflite_runner(content, num_threads):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=content, num_threads=num_threads)
    return interpreter, interpreter.get_signature_runner(SIGNATURE_KEY)


def _run_rows(run_one, inputs):
    n = next(iter(inputs.values())).shape[0]
    return np.concatenate([np.asarray(run_one(_one_example(inputs, i))) for i in range(n)])


# ----------------------------------------------------------------------------- public API


def export_student(
    model,
    export_dir,
    formats=VALID_FORMATS,
    representative_data=None,
    validation_data=None,
    overwrite=False,
    teacher=None,
    sequence_length=None,
    num_calibration_batches=100,
    num_validation_examples=256,
    latency_warmup=5,
    latency_runs=50,
    num_threads=None,
    plot=True,
    verbose=True,
):
    """Exports a (distilled) student for servers and phones, and checks every artifact.

    Writes the **student only** as a SavedModel whose `serving_default` signature takes the
    student's named inputs (for keras-hub encoders `token_ids`, `padding_mask`, `segment_ids`) with
    a dynamic batch dim and a fixed sequence length, and returns `logits` and `probabilities`
    (softmax of the logits, float32). TFLite files are converted from that SavedModel with builtin
    ops (Select TF ops only as a recorded fallback). Each artifact is run on held-out examples from
    `validation_data` (examples also in the calibration set are dropped) and compared with the
    Keras student: max abs logit difference, top-1 agreement, accuracy when labels exist, median
    batch-1 latency (LiteRT interpreter for TFLite) and size on disk. The Keras student and, when
    known, the Keras teacher are timed at batch 1 in the same run. The report is written to
    `export_dir/report.json` and `export_dir/report.png`, printed as a table, and returned.

    Full-integer int8 (`tflite_int8`) is calibrated on `num_calibration_batches` batch-1 examples
    and quantized with int8 kernels (`TFLITE_BUILTINS_INT8`); ops without int8 kernels stay float
    builtins (`TFLITE_BUILTINS`), which the report records in `supported_ops` and `float32_ops`.
    Before quantizing, the calibrated range of each masked attention-score tensor (Keras' masked
    softmax, `where(mask, scores, -huge)`) is clipped to the range of the scores themselves:
    otherwise the masking constant sets the int8 scale of the scores (~1e36), every score rounds
    to 0 and attention becomes uniform. `report["artifacts"]["tflite_int8"]["attention_mask_fix"]`
    lists the clipped tensors. Inputs and outputs stay float32 (integer inputs such as token ids
    stay int32).

    Args:
        model: `kdistill.Distiller` or keras.Model. A Distiller exports its `.student`; the teacher
            and projection layers are never written. The model must have symbolic inputs (a
            functional model, or a keras-hub task model).
        export_dir: str. Output directory; must not exist unless `overwrite=True`.
        formats: sequence of str. Any of `"saved_model"`, `"tflite_float32"`, `"tflite_float16"`,
            `"tflite_dynamic_int8"`, `"tflite_int8"`. TFLite formats are converted from a
            SavedModel (written to a temporary directory when `"saved_model"` is not asked for).
        representative_data: tf.data.Dataset, `(x, y)` tuple or `x`. Calibration inputs for
            `tflite_int8` (required for it); labels are ignored.
        validation_data: tf.data.Dataset, `(x, y)` tuple or `x`. Held-out inputs for the parity
            checks; labels, when present, give accuracies. If None, parity is not checked.
        overwrite: bool. Replace the artifacts in an existing `export_dir`. Only the files this
            function writes are replaced; nothing else is deleted.
        teacher: keras.Model or None. Timed at batch 1 next to the student; defaults to the
            Distiller's teacher.
        sequence_length: int or None. Fixed length of the exported inputs' unknown dim 1. Defaults
            to the length of the first batch of `validation_data` (else `representative_data`).
            Shorter data is zero-padded and longer data truncated to it.
        num_calibration_batches: int. Number of batch-1 calibration samples drawn from
            `representative_data` for `tflite_int8`.
        num_validation_examples: int. Maximum number of validation examples checked.
        latency_warmup: int. Untimed warm-up runs before timing.
        latency_runs: int. Timed batch-1 runs; the median is reported (milliseconds).
        num_threads: int or None. Threads of the LiteRT interpreter (None: its default).
        plot: bool. Write `report.png` (size vs accuracy vs latency).
        verbose: bool. Print the report table.

    Returns:
        dict. The report (also in `report.json`): `"artifacts"` maps each format to its `path`,
        `size_bytes`, `max_abs_diff`, `top1_agreement`, `accuracy`, `latency_ms`, conversion
        details and `target` (threshold and whether it was met); `"student"` and `"teacher"`
        hold the Keras models' `params`, `latency_ms` and `accuracy`.

    Example:
    >>> import tempfile, os, kdistill
    >>> from kdistill import testing
    >>> student = testing.tiny_bert_classifier(num_classes=2)
    >>> val = testing.token_dataset(num_examples=16, batch_size=8, num_classes=2, seed=1)
    >>> out = os.path.join(tempfile.mkdtemp(), "tiny")
    >>> report = kdistill.export_student(student, out, formats=("saved_model", "tflite_float32"),
    ...                                  validation_data=val, latency_runs=3, verbose=False)
    >>> report["artifacts"]["tflite_float32"]["max_abs_diff"] < 1e-4
    True
    """
    # ---- validate everything before touching the disk
    if isinstance(formats, str):
        formats = (formats,)
    formats = tuple(formats)
    unknown = [f for f in formats if f not in VALID_FORMATS]
    if unknown or not formats:
        raise ValueError(
            f"Unknown export format(s) {unknown or formats}; valid formats are "
            f"{list(VALID_FORMATS)}."
        )
    formats = tuple(f for f in VALID_FORMATS if f in formats)
    if "tflite_int8" in formats and representative_data is None:
        raise ValueError(
            "tflite_int8 (full-integer quantization) needs `representative_data` to calibrate "
            "activation ranges: pass ~100 typical training examples, or drop 'tflite_int8' from "
            "formats."
        )
    if num_calibration_batches < 1 or num_validation_examples < 1 or latency_runs < 1:
        raise ValueError(
            "num_calibration_batches, num_validation_examples and latency_runs must be >= 1."
        )
    _check_data_not_empty(representative_data, "representative_data")
    _check_data_not_empty(validation_data, "validation_data")
    export_dir = os.fspath(export_dir)
    if os.path.exists(export_dir) and not overwrite:
        raise FileExistsError(
            f"{export_dir} exists; pass overwrite=True to replace the exported files in it, or "
            "choose another directory."
        )
    if os.path.exists(export_dir) and not os.path.isdir(export_dir):
        raise FileExistsError(f"{export_dir} exists and is a file, not a directory.")

    student, teacher = _resolve_models(model, teacher)
    structure, names, tensors = _input_structure(student)
    first = None
    for data in (validation_data, representative_data):
        if data is not None and first is None:
            first = _first_batch(data, structure, names)
    specs = _input_specs(names, tensors, sequence_length, first)

    calibration = None
    if representative_data is not None:
        calibration, _ = _collect(representative_data, structure, names, specs,
                                  num_calibration_batches, "representative_data")
    val_inputs, val_labels, excluded = None, None, 0
    if validation_data is not None:
        val_inputs, val_labels = _collect(validation_data, structure, names, specs,
                                          num_validation_examples, "validation_data")
        val_labels = _labels_to_ids(val_labels)
        if calibration is not None:
            seen = set(_row_hashes(calibration, names))
            keep = np.array([h not in seen for h in _row_hashes(val_inputs, names)])
            excluded = int((~keep).sum())
            if not keep.any():
                raise ValueError(
                    "Every validation example is also in representative_data; parity must be "
                    "checked on held-out data. Pass a validation split."
                )
            val_inputs = {k: v[keep] for k, v in val_inputs.items()}
            val_labels = None if val_labels is None else val_labels[keep]
    if val_inputs is None:
        warnings.warn("validation_data is None: the exported artifacts are not checked for parity.")
    if val_inputs is not None:
        example = _one_example(val_inputs)
    elif calibration is not None:
        example = _one_example(calibration)
    else:
        example = {n: np.zeros([1] + s.shape.as_list()[1:], s.dtype.as_numpy_dtype)
                   for n, s in specs.items()}

    # ---- Keras references, measured in this run
    student_entry, reference = _keras_entry(student, structure, names, val_inputs, val_labels,
                                            example, latency_warmup, latency_runs)
    teacher_entry = None
    if teacher is not None:
        t_structure, t_names, _ = _input_structure(teacher)
        teacher_entry, _ = _keras_entry(teacher, t_structure, t_names,
                                        _pick(val_inputs, t_names), val_labels,
                                        _pick(example, t_names), latency_warmup, latency_runs)

    os.makedirs(export_dir, exist_ok=True)
    artifacts = {}
    with tempfile.TemporaryDirectory(prefix="kdistill_export_") as scratch:
        if "saved_model" in formats:
            sm_dir = os.path.join(export_dir, _FILENAMES["saved_model"])
            if os.path.exists(sm_dir):  # overwrite=True: replace our own artifact only
                shutil.rmtree(sm_dir)
        else:
            sm_dir = os.path.join(scratch, "saved_model")
        _write_saved_model(student, structure, names, specs, sm_dir)

        if "saved_model" in formats:
            artifacts["saved_model"] = _check_saved_model(
                sm_dir, names, val_inputs, val_labels, reference, example, student,
                latency_warmup, latency_runs)

        representative = None
        if calibration is not None:
            representative = _representative_gen(calibration, names, specs)
        for fmt in formats:
            if fmt == "saved_model":
                continue
            content, info = _convert(sm_dir, fmt, representative)
            path = os.path.join(export_dir, _FILENAMES[fmt])
            with open(path, "wb") as f:
                f.write(content)
            interpreter, runner = _tflite_runner(content, num_threads)
            entry = {"path": path, "size_bytes": dir_size(path)}
            entry.update(info)
            summary = _tflite_op_summary(interpreter)
            if fmt != "tflite_int8":
                summary.pop("float32_ops", None)
            elif summary.get("float32_ops") and entry["supported_ops"] == ["TFLITE_BUILTINS_INT8"]:
                # Quantizing a calibrated model leaves ops without int8 kernels in float.
                entry["supported_ops"] = ["TFLITE_BUILTINS_INT8", "TFLITE_BUILTINS"]
            entry.update(summary)
            if val_inputs is not None:
                logits = _run_rows(lambda x: runner(**x)["logits"], val_inputs)
                entry.update(_compare(reference, logits, val_labels))
            entry["latency_ms"] = _median_ms(lambda: runner(**example), latency_warmup,
                                             latency_runs)
            artifacts[fmt] = entry

    for fmt, entry in artifacts.items():
        metric, op, threshold = TARGETS[fmt]
        value = entry.get(metric)
        met = None if value is None else (value <= threshold if op == "<=" else value >= threshold)
        entry["target"] = {"metric": metric, "op": op, "threshold": threshold, "met": met}
        if met is False:
            hint = ""
            if fmt == "tflite_int8":
                hint = (" Check `attention_mask_fix` and `float32_ops` in the report, calibrate on "
                        "more representative batches (num_calibration_batches), or ship "
                        "tflite_dynamic_int8, which keeps activations in float.")
            warnings.warn(f"{fmt}: {metric}={value:.4g} misses the target {op} {threshold}.{hint}")

    report = {
        "export_dir": export_dir,
        "signature": SIGNATURE_KEY,
        "inputs": {n: {"shape": s.shape.as_list(), "dtype": s.dtype.name}
                   for n, s in specs.items()},
        "outputs": list(OUTPUT_NAMES),
        "sequence_length": _sequence_length(specs),
        "num_validation_examples": 0 if val_inputs is None else int(len(next(iter(
            val_inputs.values())))),
        "validation_excluded_as_in_calibration": excluded,
        "num_calibration_examples": 0 if calibration is None else int(len(next(iter(
            calibration.values())))),
        "latency": {"batch_size": 1, "warmup": latency_warmup, "runs": latency_runs,
                    "statistic": "median", "tflite_runtime": "ai_edge_litert",
                    "num_threads": num_threads},
        "student": student_entry,
        "teacher": teacher_entry,
        "artifacts": artifacts,
    }
    with open(os.path.join(export_dir, REPORT_FILENAME), "w") as f:
        json.dump(report, f, indent=2)
    if plot:
        _plot(report, os.path.join(export_dir, PLOT_FILENAME))
    if verbose:
        print(format_report_table(report))
    return report


def _pick(inputs, names):
    if inputs is None:
        return None
    return {n: inputs[n] for n in names if n in inputs}


def _sequence_length(specs):
    lengths = {s.shape[1] for s in specs.values() if s.shape.rank and s.shape.rank >= 2}
    return lengths.pop() if len(lengths) == 1 else None


def _check_saved_model(path, names, val_inputs, val_labels, reference, example, student,
                       warmup, runs):
    loaded = tf.saved_model.load(path)
    signature = loaded.signatures[SIGNATURE_KEY]
    # Dropout layers save their random-seed state (two int counters each) with the weights;
    # those are not parameters, so they are left out of the student-only check.
    variables = [v for v in loaded.variables if "seed_generator" not in v.name]
    num_values = int(sum(np.prod(v.shape) for v in variables))
    entry = {
        "path": path,
        "size_bytes": dir_size(path),
        "signature": SIGNATURE_KEY,
        "params": num_values,
        "num_variables": len(variables),
        "student_only": num_values == int(student.count_params()),
    }

    def run(x):
        return signature(**{k: tf.constant(v) for k, v in x.items()})["logits"]

    if val_inputs is not None:
        n = next(iter(val_inputs.values())).shape[0]
        logits = np.concatenate([
            run({k: v[i:i + 64] for k, v in val_inputs.items()}).numpy() for i in range(0, n, 64)
        ])
        entry.update(_compare(reference, logits, val_labels))
    entry["latency_ms"] = _median_ms(lambda: run(example).numpy(), warmup, runs)
    return entry


def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


def format_report_table(report):
    """Formats an `export_student` report as a plain-text table.

    Args:
        report: dict. The report returned by `export_student` (or loaded from `report.json`).

    Returns:
        str. One row per Keras model and exported artifact: size, parameters, max abs logit
        difference and top-1 agreement vs the Keras student, accuracy, batch-1 latency, and
        whether the issue's target was met.

    Example:
    >>> from kdistill.export import format_report_table
    >>> report = {"student": {"name": "s", "params": 10, "weights_bytes": 40, "latency_ms": 1.0,
    ...                       "accuracy": 0.5}, "teacher": None, "artifacts": {}}
    >>> print(format_report_table(report).splitlines()[0].split()[:3])
    ['model', 'size', 'MB']
    """
    header = (f"{'model':<22}{'size MB':>10}{'params':>12}{'max|diff|':>12}{'top-1 agr':>11}"
              f"{'accuracy':>10}{'ms (b=1)':>10}  target")
    lines = [header, "-" * len(header)]

    def row(label, size, params, diff, agree, acc, ms, target=""):
        lines.append(
            f"{label:<22}{_fmt(None if size is None else size / 1e6, '.3f'):>10}"
            f"{_fmt(params, ','):>12}{_fmt(diff, '.2e'):>12}{_fmt(agree, '.2%'):>11}"
            f"{_fmt(acc, '.2%'):>10}{_fmt(ms, '.3f'):>10}  {target}"
        )

    teacher = report.get("teacher")
    if teacher:
        row("keras teacher*", teacher["weights_bytes"], teacher["params"], None, None,
            teacher["accuracy"], teacher["latency_ms"])
    student = report["student"]
    row("keras student*", student["weights_bytes"], student["params"], 0.0, 1.0,
        student["accuracy"], student["latency_ms"])
    for fmt, entry in report["artifacts"].items():
        target = entry.get("target") or {}
        text = ""
        if target:
            status = {True: "ok", False: "MISSED", None: "unchecked"}[target["met"]]
            text = f"{target['metric']} {target['op']} {target['threshold']:g}: {status}"
        if entry.get("select_tf_ops"):
            text += " [Select TF ops]"
        row(fmt, entry["size_bytes"], entry.get("params"), entry.get("max_abs_diff"),
            entry.get("top1_agreement"), entry.get("accuracy"), entry["latency_ms"], text)
    lines.append("* in-memory weights; diff/agreement are vs the Keras student; "
                 "latency is the median at batch 1.")
    return "\n".join(lines)


def _plot(report, path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    points = []
    if report.get("teacher"):
        t = report["teacher"]
        points.append(("keras teacher", t["weights_bytes"], t["accuracy"], None, t["latency_ms"]))
    s = report["student"]
    points.append(("keras student", s["weights_bytes"], s["accuracy"], 1.0, s["latency_ms"]))
    for fmt, e in report["artifacts"].items():
        points.append((fmt, e["size_bytes"], e.get("accuracy"), e.get("top1_agreement"),
                       e["latency_ms"]))
    use_accuracy = all(p[2] is not None for p in points)
    figure = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    sizes = [p[1] for p in points]
    biggest = max(sizes) or 1
    for label, size, acc, agree, ms in points:
        y = acc if use_accuracy else agree
        if y is None:
            continue
        axes.scatter([size / 1e6], [y], s=30 + 400 * ms / max(p[4] for p in points), alpha=0.6)
        axes.annotate(f"{label}\n{ms:.2f} ms", (size / 1e6, y), fontsize=7,
                      textcoords="offset points", xytext=(4, 4))
    axes.set_xscale("log" if biggest / max(min(sizes), 1) > 20 else "linear")
    axes.set_xlabel("size (MB; Keras models: in-memory weights)")
    axes.set_ylabel("accuracy" if use_accuracy else "top-1 agreement with Keras student")
    axes.set_title("Export: size vs accuracy (marker area ~ batch-1 latency)")
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
