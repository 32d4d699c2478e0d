"""Edge export: a distilled student as a SavedModel and TFLite files, each checked against Keras.

`export_student` writes the **student only** (never the teacher or the distillation projections)
as a TF Serving style SavedModel with a `serving_default` signature, converts that SavedModel to
up to four TFLite variants (float32, float16, dynamic-range int8, full int8; the conversion and
the LiteRT runners live in `kdistill.tflite`), and checks every artifact against the Keras
student on held-out validation examples: max abs logit difference, top-1 agreement, task
accuracy, batch-1 latency and file size. The figures go to `report.json`, a PNG plot and a
printed table (`format_report_table`).

Layout of `export_dir`:

    saved_model/               # signatures "serving_default" (token ids) and "serve_text" (strings)
    model_float32.tflite
    model_float16.tflite
    model_dynamic_int8.tflite
    model_int8.tflite
    model_<format>.json        # next to each .tflite: what an app feeds it (tflite_sidecar.py)
    vocab.txt                  # the tokenizer's vocabulary, when a preprocessor is given
    labels.json                # the class names, when given
    report.json
    report.png
"""

import dataclasses
import hashlib
import os
import shutil
import tempfile
import warnings

import keras
import numpy as np
import tensorflow as tf

from kdistill import serving, tflite, tflite_sidecar
from kdistill.evaluation import (
    as_float32_logits,
    dir_size,
    weights_bytes,
    write_label_names,
)
from kdistill.export_report import (
    PLOT_FILENAME,
    REPORT_FILENAME,
    TARGETS,
    check_targets,
    format_report_table,
    write_report,
)
from kdistill.parity import batched_logits, compare, labels_to_ids, median_ms, row_logits
from kdistill.tflite_graph import op_summary
from kdistill.training_state import check_finite_weights

__all__ = ["OUTPUT_NAMES", "PLOT_FILENAME", "REPORT_FILENAME", "SIGNATURE_KEY", "TARGETS",
           "TEXT_SIGNATURE_KEY", "VALID_FORMATS", "export_student", "format_report_table"]

SIGNATURE_KEY = serving.SIGNATURE_KEY  # "serving_default"
TEXT_SIGNATURE_KEY = serving.TEXT_SIGNATURE_KEY  # "serve_text"
OUTPUT_NAMES = serving.OUTPUT_NAMES

VALID_FORMATS = ("saved_model",) + tflite.FORMATS

# Held-out examples full int8 is validated on against its float32 model (`Quantizer.validate`).
_INT8_VALIDATION_EXAMPLES = 32

_FILENAMES = {
    "saved_model": "saved_model",
    "tflite_float32": "model_float32.tflite",
    "tflite_float16": "model_float16.tflite",
    "tflite_dynamic_int8": "model_dynamic_int8.tflite",
    "tflite_int8": "model_int8.tflite",
}


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


# ----------------------------------------------------------------------------- measuring


def _student_logits(model, structure, names):
    """`{input name: tensor} -> float32 logits` of a Keras model (in inference mode)."""
    def forward(flat):
        return as_float32_logits(model(_pack(structure, names, flat), training=False))

    return forward


def _keras_forward(model, structure, names):
    return tf.function(_student_logits(model, structure, names), reduce_retracing=True)


def _keras_logits(forward, inputs, batch_size=64):
    return batched_logits(lambda x: forward({k: tf.constant(v) for k, v in x.items()}).numpy(),
                          inputs, batch_size)


def _one_example(inputs, i=0):
    return {k: v[i:i + 1] for k, v in inputs.items()}


def _keras_entry(model, structure, names, inputs, labels, example, warmup, runs):
    forward = _keras_forward(model, structure, names)
    logits = _keras_logits(forward, inputs) if inputs is not None else None
    one = {k: tf.constant(v) for k, v in example.items()}
    entry = {
        "name": model.name,
        "params": int(model.count_params()),
        "weights_bytes": weights_bytes(model),
        "latency_ms": median_ms(lambda: forward(one).numpy(), warmup, runs),
        "accuracy": None,
    }
    if logits is not None and labels is not None:
        entry["accuracy"] = float(np.mean(np.argmax(logits, -1) == labels))
    return entry, logits


# ----------------------------------------------------------------------------- raw text


@dataclasses.dataclass
class _Text:
    """How the export serves raw text: the keras-hub preprocessor at the exported length (None:
    token ids only), the class names, the sidecar's tokenizer settings and held-out texts."""

    preprocessor: object
    label_names: list
    tokenizer: dict | None
    texts: list | None
    labels: np.ndarray | None


def _texts_of(validation_texts, limit):
    """`(texts, label ids or None)` from a list of str, a `(texts, labels)` tuple or a dataset."""
    if isinstance(validation_texts, tf.data.Dataset):
        from kdistill.data.text import as_numpy

        texts, labels = as_numpy(validation_texts.take(limit))
    elif isinstance(validation_texts, tuple) and len(validation_texts) == 2:
        texts, labels = list(validation_texts[0]), validation_texts[1]
    elif isinstance(validation_texts, str):
        raise ValueError("validation_texts is one string; give a list of texts.")
    else:
        texts, labels = list(validation_texts), None
    if not texts:
        raise ValueError("validation_texts holds no texts; give held-out raw texts (or None).")
    if not all(isinstance(t, str) for t in texts):
        kinds = sorted({type(t).__name__ for t in texts if not isinstance(t, str)})
        raise ValueError(f"validation_texts must be strings, got {kinds} (the serve_text "
                         "signature takes one text per example).")
    labels = None if labels is None else labels_to_ids(labels)[:limit]
    return texts[:limit], labels


def _resolve_text(student, specs, preprocessor, label_names, validation_texts, limit):
    """The `_Text` of an export; checks the tokenizer's vocabulary against the student's."""
    from kdistill.evaluation import num_outputs
    from kdistill.vocabulary import input_vocabulary_size

    classes = num_outputs(student)
    if label_names is not None:
        label_names = [str(n) for n in label_names]
        if classes is not None and len(label_names) != classes:
            raise ValueError(f"{len(label_names)} label_names {label_names} for a student with "
                             f"{classes} classes; give one name per class, in label-index order.")
    names = label_names or [str(i) for i in range(classes or 0)]
    if preprocessor is None:
        preprocessor = getattr(student, "preprocessor", None)
    if preprocessor is None:
        if validation_texts is not None:
            raise ValueError("validation_texts needs the preprocessor that tokenises them: pass "
                             "preprocessor= (the keras-hub preprocessor of training).")
        return _Text(None, names, None, None, None)
    length = _sequence_length(specs)
    if length is None:
        raise ValueError(f"A text preprocessor needs one fixed sequence length; the inputs are "
                         f"{ {n: s.shape.as_list() for n, s in specs.items()} }.")
    preprocessor = serving.text_preprocessor(preprocessor, length)
    size, expected = preprocessor.tokenizer.vocabulary_size(), input_vocabulary_size(student)
    if expected is not None and size != expected:
        raise ValueError(
            f"The preprocessor's vocabulary has {size:,} tokens but the student reads token ids "
            f"from a vocabulary of {expected:,}: pass the tokenizer the student was trained with "
            "(for a pruned vocabulary, the teacher's full one: the student maps its ids).")
    try:
        tokenizer = tflite_sidecar.tokenizer_settings(preprocessor)
    except ValueError as error:
        warnings.warn(f"The .tflite sidecars will not describe the tokenizer: {error}")
        tokenizer = None
    texts, labels = (None, None) if validation_texts is None else _texts_of(validation_texts,
                                                                             limit)
    return _Text(preprocessor, names, tokenizer, texts, labels)


def _text_reference(student, structure, names, specs):
    """`{input name: array} -> logits` of the Keras student, inputs cast to the exported dtypes."""
    forward = _keras_forward(student, structure, names)

    def run(tokens):
        flat = {n: tf.cast(tokens[n], specs[n].dtype) for n in names}
        return forward(flat).numpy()

    return run


# ----------------------------------------------------------------------------- export steps


@dataclasses.dataclass
class _Examples:
    """The examples an export is calibrated, checked and timed on, conformed to the input specs.

    `calibration` and `inputs` are `{name: array[n, ...]}` or None; `labels` are class ids or
    None; `excluded` counts the validation examples dropped as also in `calibration`; `example`
    is the batch-1 input the latencies are measured on.
    """

    calibration: dict | None
    inputs: dict | None
    labels: np.ndarray | None
    excluded: int
    example: dict


@dataclasses.dataclass
class _Parity:
    """What every artifact is checked against: the Keras student's logits and the timing runs."""

    examples: _Examples
    reference: np.ndarray | None
    warmup: int
    runs: int

    def measure(self, entry, predict, run_example):
        """Adds parity figures (from `predict(inputs) -> logits`) and batch-1 latency to `entry`."""
        if self.examples.inputs is not None:
            logits = predict(self.examples.inputs)
            entry.update(compare(self.reference, logits, self.examples.labels))
        entry["latency_ms"] = median_ms(run_example, self.warmup, self.runs)
        return entry


def _check_arguments(formats, export_dir, overwrite, representative_data, validation_data,
                     num_calibration_batches, num_validation_examples, latency_runs):
    """Validates everything before touching the disk; returns `(formats, export_dir)`."""
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
    return formats, export_dir


def _examples(structure, names, specs, representative_data, validation_data,
              num_calibration_batches, num_validation_examples):
    """Collects the calibration and held-out validation examples; returns `_Examples`."""
    calibration = None
    if representative_data is not None:
        calibration, _ = _collect(representative_data, structure, names, specs,
                                  num_calibration_batches, "representative_data")
    val_inputs, val_labels, excluded = None, None, 0
    if validation_data is not None:
        val_inputs, val_labels = _collect(validation_data, structure, names, specs,
                                          num_validation_examples, "validation_data")
        val_labels = labels_to_ids(val_labels)
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
    return _Examples(calibration, val_inputs, val_labels, excluded, example)


def _write_artifacts(student, structure, names, specs, formats, export_dir, parity, num_threads,
                     text, int8_options=None):
    """Writes the SavedModel (to a scratch directory when not asked for), converts the TFLite
    files from it with their sidecars, and checks each one; returns `{format: report entry}`."""
    artifacts = {}
    with tempfile.TemporaryDirectory(prefix="kdistill_export_") as scratch:
        if "saved_model" in formats:
            sm_dir = os.path.join(export_dir, _FILENAMES["saved_model"])
            if os.path.exists(sm_dir):  # overwrite=True: replace our own artifact only
                shutil.rmtree(sm_dir)
        else:
            sm_dir = os.path.join(scratch, "saved_model")
        serving.write_saved_model(
            sm_dir, student.trainable_variables + student.non_trainable_variables,
            _student_logits(student, structure, names), specs,
            text.preprocessor if "saved_model" in formats else None, text.label_names)

        if "saved_model" in formats:
            artifacts["saved_model"] = _check_saved_model(sm_dir, student, parity)
            if text.preprocessor is not None:
                artifacts["saved_model_text"] = serving.check_text_signature(
                    sm_dir, _text_reference(student, structure, names, specs), text.preprocessor,
                    text.texts, text.labels, text.label_names, parity.warmup, parity.runs)
        if text.tokenizer is not None and any(f != "saved_model" for f in formats):
            tflite_sidecar.write_vocabulary(export_dir, text.preprocessor.tokenizer)

        representative = None
        if parity.examples.calibration is not None:
            representative = tflite.representative_dataset(parity.examples.calibration)
        for fmt in formats:
            if fmt != "saved_model":
                artifacts[fmt] = _tflite_artifact(fmt, sm_dir, export_dir, representative,
                                                  parity, num_threads, text, int8_options)
    return artifacts



def _check_saved_model(path, student, parity):
    """The report entry of the written SavedModel: size, student-only check, parity, latency."""
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
        return signature(**{k: tf.constant(v) for k, v in x.items()})["logits"].numpy()

    example = parity.examples.example
    return parity.measure(entry, lambda inputs: batched_logits(run, inputs),
                          lambda: run(example))


def _tflite_artifact(fmt, saved_model_dir, export_dir, representative, parity, num_threads,
                     text, int8_options=None):
    """Converts, writes and checks one TFLite format, writes its sidecar; returns its entry."""
    held_out = parity.examples.inputs
    if held_out is not None:  # for the quantizer's own check of full int8 against float32
        held_out = tflite.representative_dataset({k: v[:_INT8_VALIDATION_EXAMPLES]
                                                  for k, v in held_out.items()})
    content, info = tflite.convert_saved_model(saved_model_dir, fmt, representative,
                                               signature_key=SIGNATURE_KEY,
                                               validation_dataset=held_out,
                                               int8_options=int8_options)
    path = os.path.join(export_dir, _FILENAMES[fmt])
    with open(path, "wb") as f:
        f.write(content)
    interpreter, runner = tflite.signature_runner(content, num_threads,
                                                  signature_key=SIGNATURE_KEY)
    entry = {"path": path, "size_bytes": dir_size(path),
             "sidecar": tflite_sidecar.write_sidecar(path, interpreter, SIGNATURE_KEY,
                                                     text.label_names, text.tokenizer)}
    entry.update(info)
    summary = op_summary(content)
    if fmt != "tflite_int8":
        summary.pop("float32_ops", None)
    entry.update(summary)
    example = parity.examples.example
    def logits(x):
        return tflite.float_outputs(runner, runner(**x))["logits"]

    return parity.measure(entry, lambda inputs: row_logits(logits, inputs),
                          lambda: runner(**example))


def _pick(inputs, names):
    if inputs is None:
        return None
    return {n: inputs[n] for n in names if n in inputs}


def _sequence_length(specs):
    lengths = {s.shape[1] for s in specs.values() if s.shape.rank and s.shape.rank >= 2}
    return lengths.pop() if len(lengths) == 1 else None


def _num_examples(inputs):
    return 0 if inputs is None else int(len(next(iter(inputs.values()))))


def _report(export_dir, specs, examples, parity, num_threads, student_entry, teacher_entry,
            artifacts, text):
    """The report dict that `export_student` returns and writes to `report.json`."""
    return {
        "export_dir": export_dir,
        "signature": SIGNATURE_KEY,
        "text_signature": None if text.preprocessor is None else TEXT_SIGNATURE_KEY,
        "label_names": text.label_names,
        "tokenizer": text.tokenizer,
        "inputs": {n: {"shape": s.shape.as_list(), "dtype": s.dtype.name}
                   for n, s in specs.items()},
        "outputs": list(OUTPUT_NAMES),
        "sequence_length": _sequence_length(specs),
        "num_validation_examples": _num_examples(examples.inputs),
        "validation_excluded_as_in_calibration": examples.excluded,
        "num_calibration_examples": _num_examples(examples.calibration),
        "latency": {"batch_size": 1, "warmup": parity.warmup, "runs": parity.runs,
                    "statistic": "median", "tflite_runtime": "ai_edge_litert",
                    "num_threads": num_threads},
        "student": student_entry,
        "teacher": teacher_entry,
        "artifacts": artifacts,
    }


# ----------------------------------------------------------------------------- public API


def export_student(model, export_dir, formats=VALID_FORMATS, representative_data=None,
                   validation_data=None, overwrite=False, teacher=None, sequence_length=None,
                   num_calibration_batches=100, num_validation_examples=256, latency_warmup=5,
                   latency_runs=50, num_threads=None, plot=True, verbose=True, preprocessor=None,
                   label_names=None, validation_texts=None, int8_options=None):
    """Exports a (distilled) student for servers and phones, and checks every artifact.

    Writes the **student only** as a SavedModel whose `serving_default` signature takes the
    student's named inputs (for keras-hub encoders `token_ids`, `padding_mask`, `segment_ids`) with
    a dynamic batch dim and a fixed sequence length, and returns `logits` and `probabilities`
    (softmax of the logits, float32). TFLite files are converted from that SavedModel with builtin
    ops (Select TF ops only as a recorded fallback; `kdistill.tflite.convert_saved_model`). Each
    artifact is run on held-out examples from `validation_data` (examples also in the calibration
    set are dropped) and compared with the Keras student: max abs logit difference, top-1
    agreement, accuracy when labels exist, median batch-1 latency (LiteRT interpreter for TFLite)
    and size on disk. The Keras student and, when known, the Keras teacher are timed at batch 1 in
    the same run. The report is written to `export_dir/report.json` and `export_dir/report.png`,
    printed as a table, and returned.

    With the keras-hub `preprocessor` the student was trained with, the SavedModel also has a
    `serve_text` signature (a batch of strings -> `logits`, `probabilities`, `label_id`, `label`,
    `label_names`; tokenised in the graph, `kdistill.serving`), checked against the Keras student
    on `validation_texts` (report entry `saved_model_text`). Next to every `.tflite` file goes a
    sidecar JSON (`model_<format>.json`, `kdistill.tflite_sidecar`): its signature's inputs and
    outputs, the label names and, with a WordPiece preprocessor, the tokenizer settings and the
    vocabulary (`vocab.txt`) an app needs to turn a string into the ids the file expects.

    Full-integer int8 (`tflite_int8`) is the float32 file quantized by LiteRT's quantizer
    (`kdistill.int8`, package `litert-quantizer`): calibrated on `num_calibration_batches`
    batch-1 examples with outlier-clipped activation ranges, int8 weights and activations
    except layer norm, the residual additions and attention (`float32_ops` in the report), and
    validated against the float32 file on held-out examples (`validation`). The
    calibrated range of each masked attention-score tensor is clipped to that of the scores
    before quantizing (else the masking constant makes attention uniform);
    `report["artifacts"]["tflite_int8"]["attention_mask_fix"]` lists the clipped tensors. Inputs
    stay int32 token ids; its outputs are int8 with their scale and zero point (in the sidecar;
    `kdistill.tflite.float_outputs` dequantizes them).

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
        int8_options: dict or None. Keyword arguments of `kdistill.int8.quantize_full_int8`
            for `tflite_int8` (`recipe_name`, `float_ops`, `int16_ops`); None: its defaults.
        plot: bool. Write `report.png` (size vs accuracy vs latency).
        verbose: bool. Print the report table.
        preprocessor: keras-hub text classifier preprocessor (or `BertTokenizer`) or None. The
            tokenizer the student's token ids come from (for a pruned-vocabulary student, the
            teacher's full one); defaults to the student's own `preprocessor` attribute. Enables
            `serve_text` and the sidecars' tokenizer; it is rebuilt at the exported length.
        label_names: list of str or None. Class names in label-index order, for the sidecars,
            `serve_text`'s `label` and `labels.json`; None numbers them `"0"`, `"1"`, ...
        validation_texts: list of str, `(texts, labels)` or an unbatched `tf.data.Dataset` of
            `text` or `(text, label)`, or None. Held-out raw texts `serve_text` is checked on
            (at most `num_validation_examples`); needs `preprocessor`.

    Raises:
        ValueError: bad arguments, empty data, a preprocessor whose vocabulary is not the one
            the student reads, or a student weight that is NaN or Inf (the message names the
            first one; nothing is written).

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
    formats, export_dir = _check_arguments(
        formats, export_dir, overwrite, representative_data, validation_data,
        num_calibration_batches, num_validation_examples, latency_runs)
    student, teacher = _resolve_models(model, teacher)
    check_finite_weights(student, "export")
    structure, names, tensors = _input_structure(student)
    first = None
    for data in (validation_data, representative_data):
        if data is not None and first is None:
            first = _first_batch(data, structure, names)
    specs = _input_specs(names, tensors, sequence_length, first)
    examples = _examples(structure, names, specs, representative_data, validation_data,
                         num_calibration_batches, num_validation_examples)
    text = _resolve_text(student, specs, preprocessor, label_names, validation_texts,
                         num_validation_examples)

    # Keras references, measured in this run.
    student_entry, reference = _keras_entry(student, structure, names, examples.inputs,
                                            examples.labels, examples.example, latency_warmup,
                                            latency_runs)
    teacher_entry = None
    if teacher is not None:
        t_structure, t_names, _ = _input_structure(teacher)
        teacher_entry, _ = _keras_entry(teacher, t_structure, t_names,
                                        _pick(examples.inputs, t_names), examples.labels,
                                        _pick(examples.example, t_names), latency_warmup,
                                        latency_runs)

    os.makedirs(export_dir, exist_ok=True)
    parity = _Parity(examples, reference, latency_warmup, latency_runs)
    artifacts = _write_artifacts(student, structure, names, specs, formats, export_dir, parity,
                                 num_threads, text, int8_options)
    if label_names is not None:
        write_label_names(export_dir, text.label_names)
    check_targets(artifacts)
    report = _report(export_dir, specs, examples, parity, num_threads, student_entry,
                     teacher_entry, artifacts, text)
    write_report(report, export_dir, plot=plot, verbose=verbose)
    return report
