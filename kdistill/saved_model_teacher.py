"""Teachers read from TensorFlow SavedModels (Keras 3, tf-keras / Keras 2, TFX), for logits KD.

`from_saved_model(path, endpoint=..., output_key=...)` wraps a SavedModel signature in a frozen,
built `SavedModelTeacher` (a keras.Model around `keras.layers.TFSMLayer`) and checks, before any
training, that the signature takes tensors (not serialized `tf.Example` strings), that the output
holds logits (not probabilities) over the expected number of classes. The Distiller refuses
intermediate-layer objectives with it: a SavedModel exposes its signature's outputs only.
"""

import os

import keras
import numpy as np

__all__ = ["SavedModelTeacher", "from_saved_model"]


def _saved_model_signatures(path):
    """`{signature name: ({input name: (shape, dtype)}, [output names])}` from saved_model.pb."""
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    signatures = {}
    for meta_graph in proto.meta_graphs:
        for name, sig in meta_graph.signature_def.items():
            inputs = {
                key: (tuple(None if d.size < 0 else d.size for d in t.tensor_shape.dim),
                      tf.dtypes.as_dtype(t.dtype))
                for key, t in sig.inputs.items()
            }
            signatures[name] = (inputs, sorted(sig.outputs))
    return signatures


class _SignatureLayer(keras.layers.TFSMLayer):
    """`TFSMLayer` that calls a signature with keyword inputs cast to its dtypes.

    With `from_probabilities=True` it returns `log(p)` of a probability output: softmax is
    invariant to a per-row constant, so `log softmax(z) = z - logsumexp(z)` are the logits up to
    that constant, and every tempered softmax of them equals the teacher's.
    """

    def __init__(self, filepath, input_dtypes, output_key, call_endpoint="serving_default",
                 from_probabilities=False, **kwargs):
        super().__init__(filepath, call_endpoint=call_endpoint, trainable=False, **kwargs)
        # The signature (keyword inputs by name), also where an attribute of the same name
        # exists (Keras exports have a `serve` tf.function taking positional inputs).
        self.call_endpoint_fn = self._reloaded_obj.signatures[call_endpoint]
        self._input_dtypes = input_dtypes
        self._output_key = output_key
        self._from_probabilities = from_probabilities

    def call(self, inputs, training=False):
        import tensorflow as tf

        if not isinstance(inputs, dict):
            (name,) = self._input_dtypes
            inputs = {name: inputs}
        kwargs = {k: tf.cast(inputs[k], self._input_dtypes[k]) for k in self._input_dtypes}
        outputs = self.call_endpoint_fn(**kwargs)
        outputs = outputs[self._output_key] if isinstance(outputs, dict) else outputs
        if self._from_probabilities:
            outputs = tf.math.log(tf.maximum(tf.cast(outputs, "float32"), 1e-30))
        return outputs


_SAVED_MODEL_HELP = (
    "See README 'Teachers from a SavedModel' for re-exporting a signature that takes the "
    "model's tensors."
)


def _check_saved_model_dir(path):
    if not os.path.exists(path):
        raise FileNotFoundError(f"No teacher at {path}: expected a .keras file or a SavedModel "
                                "directory (with saved_model.pb).")
    if not os.path.isfile(os.path.join(path, "saved_model.pb")):
        hint = ""
        if os.path.isfile(os.path.join(path, "config.json")):
            hint = (" It looks like a keras-hub / Hugging Face preset directory: load it with "
                    "keras_hub.models.BertTextClassifier.from_preset(path, num_classes=...).")
        raise ValueError(f"{path} is a directory but not a SavedModel (no saved_model.pb).{hint}")


def _signature(path, endpoint, output_key):
    """`(input specs, output key)` of the SavedModel signature `endpoint`, checked."""
    signatures = {k: v for k, v in _saved_model_signatures(path).items()
                  if not k.startswith("__")}
    if endpoint not in signatures:
        raise ValueError(
            f"The SavedModel at {path} has no {endpoint!r} signature (signatures found: "
            f"{sorted(signatures) or 'none'}). Pass endpoint= naming one, or re-export it with a "
            "serving signature, e.g. `keras_model.export(path)` or `tf.saved_model.save(obj, "
            "path, signatures={'serving_default': fn})`.")
    input_specs, output_names = signatures[endpoint]
    strings = sorted(k for k, (_, dtype) in input_specs.items() if dtype.name == "string")
    if strings:
        others = sorted(k for k, (inputs, _) in signatures.items()
                        if not any(d.name == "string" for _, d in inputs.values()))
        raise ValueError(
            f"The signature {endpoint!r} of {path} takes strings ({strings}): a serving "
            "signature that parses serialized tf.Example protos (and usually applies the TFX "
            "Transform graph) in-graph, as TFX Trainer exports do. Distillation feeds the model's "
            "tensors batch by batch, so it needs a signature over raw tensors"
            + (f"; this SavedModel has {others}: pass endpoint= naming one." if others
               else f". {_SAVED_MODEL_HELP}"))
    if output_key is None:
        if len(output_names) == 1:
            output_key = output_names[0]
        elif "logits" in output_names:
            output_key = "logits"
        else:
            raise ValueError(f"The signature {endpoint!r} of {path} has outputs {output_names}; "
                             "pass output_key= naming the logits.")
    elif output_key not in output_names:
        raise ValueError(f"output_key {output_key!r} is not an output of the signature "
                         f"{endpoint!r} of {path}; outputs: {output_names}.")
    return input_specs, output_key


def _probe_inputs(input_specs, batch_size=2, sequence_length=8, seed=0):
    """A small batch matching a signature: ones for integer/bool inputs (id 1 and mask 1 are
    valid for any vocabulary), seeded normal noise for float inputs."""
    rng = np.random.default_rng(seed)
    probe = {}
    for name, (shape, dtype) in input_specs.items():
        full = (batch_size,) + tuple(sequence_length if d is None else d for d in shape[1:])
        if dtype.is_floating:
            probe[name] = rng.normal(size=full).astype(dtype.as_numpy_dtype)
        else:
            probe[name] = np.ones(full, dtype.as_numpy_dtype)
    return probe


def _looks_like_probabilities(values):
    values = np.asarray(values, np.float64)
    return bool(values.ndim >= 2 and values.shape[-1] >= 2 and values.min() >= -1e-6
                and values.max() <= 1 + 1e-6 and np.allclose(values.sum(-1), 1.0, atol=1e-3))


@keras.saving.register_keras_serializable(package="kdistill")
class SavedModelTeacher(keras.Model):
    """A frozen teacher read from a TensorFlow SavedModel signature, for logits-only KD.

    Wraps `keras.layers.TFSMLayer` in a built functional keras.Model whose inputs are the
    signature's inputs (by name; values are cast to the signature's dtypes, so a bool
    `padding_mask` works) and whose output is the logits. Works for SavedModels written by Keras 3
    (`model.export`), by tf-keras / Keras 2 (`tf_keras.Model.save(path)` or
    `tf.saved_model.save`) and by TFX Trainers whose signature takes tensors. A signature over
    serialized `tf.Example` strings (the TFX default) is refused with an explanation; see README
    "Teachers from a SavedModel" for adding a tensor signature. Only the `logits` tap exists:
    intermediate-layer objectives (hidden states, attention) are refused by the Distiller.

    At construction the model runs once on a small probe batch (or `probe_inputs`) and refuses
    probabilities (non-negative rows summing to 1, e.g. a final softmax) unless
    `from_probabilities=True`, which distils from `log(p)` instead (exact up to float rounding,
    less precise where the teacher's softmax saturated).

    Args:
        filepath: str or path-like. The SavedModel directory.
        endpoint: str. The signature to call (default `"serving_default"`).
        output_key: str or None. The signature output holding the logits (default: the only
            output, or `"logits"`).
        num_classes: int or None. Expected number of classes; a different count is an error.
        from_probabilities: bool. The output holds probabilities; distil from their logarithm.
        probe_inputs: dict or array, or None. A batch for the output check (default: synthetic
            inputs from the signature's shapes and dtypes).
        name: str. Model name.

    Example:
    >>> import tempfile
    >>> from kdistill.testing import tiny_mlp
    >>> path = os.path.join(tempfile.mkdtemp(), "teacher")
    >>> tiny_mlp(num_classes=3).export(path, verbose=False)
    >>> teacher = SavedModelTeacher(path, num_classes=3)
    >>> teacher.output_shape, teacher.supported_taps
    ((None, 3), ('logits',))
    """

    supported_taps = ("logits",)

    def __init__(self, filepath, endpoint="serving_default", output_key=None, num_classes=None,
                 from_probabilities=False, probe_inputs=None, name="saved_model_teacher",
                 **kwargs):
        kwargs.pop("trainable", None)
        filepath = os.fspath(filepath)
        _check_saved_model_dir(filepath)
        input_specs, output_key = _signature(filepath, endpoint, output_key)

        # --- the functional graph: the signature's inputs -> TFSMLayer -> logits
        inputs = {name_: keras.Input(shape=shape[1:], dtype=dtype.name, name=name_)
                  for name_, (shape, dtype) in sorted(input_specs.items())}
        layer = _SignatureLayer(filepath, {k: d for k, (_, d) in input_specs.items()},
                                output_key, call_endpoint=endpoint,
                                from_probabilities=from_probabilities, name="saved_model")
        model_inputs = inputs if len(inputs) > 1 else next(iter(inputs.values()))
        super().__init__(inputs=model_inputs, outputs=layer(model_inputs), name=name, **kwargs)

        # --- config
        self.filepath, self.endpoint, self.output_key = filepath, endpoint, output_key
        self.num_classes = num_classes
        self.from_probabilities = bool(from_probabilities)
        self.trainable = False
        self._check_outputs(input_specs, probe_inputs)

    def call(self, inputs, training=None, mask=None):
        # Keras 3.15 maps a dict with extra keys (keras-hub's `segment_ids`) onto a functional
        # model's inputs by position, with only a warning: keep the signature's keys.
        if isinstance(inputs, dict):
            inputs = {k: inputs[k] for k in self._inputs_struct}
        return super().call(inputs, training=training, mask=mask)

    def _check_outputs(self, input_specs, probe_inputs):
        where = f"The signature {self.endpoint!r} output {self.output_key!r} of {self.filepath}"
        shape = tuple(self.output_shape)
        if len(shape) < 2:
            raise ValueError(f"{where} has shape {shape}; a teacher gives [batch, classes] "
                             "logits.")
        classes = shape[-1]
        if classes == 1:
            raise ValueError(
                f"{where} has one value per example (a binary classifier with a single "
                "sigmoid/logit). KD here needs one logit per class: re-export it with two-class "
                "logits, e.g. `tf.concat([tf.zeros_like(z), z], -1)` for a logit z.")
        if self.num_classes is not None and classes is not None and classes != self.num_classes:
            raise ValueError(f"{where} has {classes} classes but num_classes={self.num_classes}: "
                             "the teacher must share the student's label space.")
        if probe_inputs is None:
            probe_inputs = _probe_inputs(input_specs)
            if len(probe_inputs) == 1:  # a single-input model takes the tensor itself
                (probe_inputs,) = probe_inputs.values()
        import tensorflow as tf

        # In a replica context: inside a MirroredStrategy scope the SavedModel's variables are
        # distributed, and the restored functions cannot read them from the cross-replica one.
        strategy = tf.distribute.get_strategy()
        try:
            values = strategy.experimental_local_results(
                strategy.run(lambda: self(probe_inputs)))[0]
            values = keras.ops.convert_to_numpy(values)
        except Exception as e:  # noqa: BLE001 - report any failure of the probe call
            raise ValueError(
                f"Could not run {where} on a probe batch to check its outputs "
                f"({type(e).__name__}: {e}). Pass probe_inputs= with a real batch.") from e
        if not np.all(np.isfinite(values)):
            raise ValueError(f"{where} gives NaN/Inf on a probe batch; check the model.")
        if not self.from_probabilities and _looks_like_probabilities(values):
            raise ValueError(
                f"{where} looks like probabilities, not logits: every value is in [0, 1] and "
                "each row sums to 1 (a final softmax). Distillation needs logits: pass "
                "output_key= naming a logits output, re-export the model without its final "
                "softmax, or pass from_probabilities=True to distil from log(probabilities).")

    def get_config(self):
        return {"name": self.name, "filepath": self.filepath, "endpoint": self.endpoint,
                "output_key": self.output_key, "num_classes": self.num_classes,
                "from_probabilities": self.from_probabilities}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**config)


def from_saved_model(path, endpoint="serving_default", output_key=None, num_classes=None,
                     from_probabilities=False, probe_inputs=None):
    """A teacher from a TensorFlow SavedModel (Keras 3, tf-keras / Keras 2, TFX), logits only.

    See `SavedModelTeacher` for what is checked.

    Args:
        path: str or path-like. The SavedModel directory.
        endpoint: str. Signature to call (default `"serving_default"`).
        output_key: str or None. Signature output holding the logits.
        num_classes: int or None. Expected number of classes (checked).
        from_probabilities: bool. Accept a probability output and distil from its log.
        probe_inputs: a batch for the output check, or None for a synthetic one.

    Returns:
        A frozen, built `SavedModelTeacher` (a keras.Model).

    Example:
    >>> import tempfile
    >>> from kdistill.testing import tiny_mlp
    >>> path = os.path.join(tempfile.mkdtemp(), "teacher")
    >>> tiny_mlp(num_classes=3).export(path, verbose=False)
    >>> from_saved_model(path, endpoint="serve").output_shape
    (None, 3)
    """
    return SavedModelTeacher(path, endpoint=endpoint, output_key=output_key,
                             num_classes=num_classes, from_probabilities=from_probabilities,
                             probe_inputs=probe_inputs)
