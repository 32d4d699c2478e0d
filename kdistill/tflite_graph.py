"""Reading a `.tflite` flatbuffer's graph: its operators, their tensors, what computes in float.

`operators` lists each operator of a model with the names and types of its input and output
tensors, read with LiteRT's own flatbuffer tools
(`ai_edge_litert.tools.flatbuffer_utils`, a public module of ai-edge-litert); `op_summary`
counts the operators and those that still compute in float. `kdistill.int8` uses `operators`
to find the masked attention scores, `kdistill.export` puts `op_summary` in its report.
"""

# Quantize / dequantize ops sit at the float/int boundaries of a quantized model: not "float ops".
_BOUNDARY_OPS = ("QUANTIZE", "DEQUANTIZE")


def _names(enum):
    return {v: k for k, v in vars(enum).items() if not k.startswith("_")}


def operators(content):
    """The operators of every subgraph of a `.tflite` model, in graph order.

    Args:
        content: bytes. The flatbuffer.

    Returns:
        list of dict. `op` (the builtin name, e.g. `"FULLY_CONNECTED"`), `subgraph`, and
        `inputs` / `outputs`: lists of `{"name", "type"}` (`type` e.g. `"FLOAT32"`, `"INT8"`;
        optional inputs that are absent are left out).

    Example:
    >>> import tensorflow as tf
    >>> @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32, name="x")])
    ... def double(x):
    ...     return {"y": 2.0 * x}
    >>> converter = tf.lite.TFLiteConverter.from_concrete_functions(
    ...     [double.get_concrete_function()], double)
    >>> [(o["op"], [t["type"] for t in o["inputs"]]) for o in operators(converter.convert())]
    [('MUL', ['FLOAT32', 'FLOAT32'])]
    """
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    op_names, type_names = _names(schema.BuiltinOperator), _names(schema.TensorType)
    codes = [flatbuffer_utils.get_builtin_code_from_operator_code(c) for c in model.operatorCodes]

    def tensors(graph, indices):
        found = []
        for i in [] if indices is None else indices:
            if i < 0:
                continue
            tensor = graph.tensors[i]
            name = tensor.name.decode("utf-8") if isinstance(tensor.name, bytes) else tensor.name
            found.append({"name": name, "type": type_names.get(tensor.type, str(tensor.type))})
        return found

    result = []
    for index, graph in enumerate(model.subgraphs):
        for op in graph.operators or []:
            result.append({"op": op_names.get(codes[op.opcodeIndex], str(codes[op.opcodeIndex])),
                           "subgraph": index, "inputs": tensors(graph, op.inputs),
                           "outputs": tensors(graph, op.outputs)})
    return result


def op_summary(content):
    """Op counts of a `.tflite` model, and the ops that still compute in float.

    Args:
        content: bytes. The flatbuffer.

    Returns:
        dict. `op_counts` (`{op name: count}`) and `float32_ops` (`{op name: count}` of the ops
        with a float32 input, QUANTIZE/DEQUANTIZE left out: for a quantized model, the ops
        kept in float).

    Example:
    >>> import os, tempfile
    >>> from kdistill import testing, tflite
    >>> path = os.path.join(tempfile.mkdtemp(), "mlp")
    >>> testing.tiny_mlp().export(path, format="tf_saved_model", verbose=False)
    >>> op_summary(tflite.convert_saved_model(path, "tflite_float32")[0])["op_counts"]
    {'FULLY_CONNECTED': 2}
    """
    counts, float_ops = {}, {}
    for op in operators(content):
        name = op["op"]
        counts[name] = counts.get(name, 0) + 1
        if name not in _BOUNDARY_OPS and any(t["type"] == "FLOAT32" for t in op["inputs"]):
            float_ops[name] = float_ops.get(name, 0) + 1
    return {"op_counts": dict(sorted(counts.items())),
            "float32_ops": dict(sorted(float_ops.items()))}

