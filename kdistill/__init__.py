"""kdistill: knowledge distillation of Transformer text models in TensorFlow/Keras.

The submodules and public names below are imported on first use (PEP 562 module `__getattr__`),
so `import kdistill` and `kdistill --help` do not import TensorFlow. `kdistill.Distiller`,
`from kdistill import objectives` etc. work as usual. Import `kdistill.data` to register the
TFDS builder `rotten_tomatoes_snippets`.
"""

import importlib

__version__ = "0.1.0"

_SUBMODULES = ("cached_teacher", "callbacks", "config", "config_files", "config_sections",
               "configs", "data", "distiller", "evaluation", "export", "export_report",
               "int8", "layer_objectives", "logits_kd", "losses", "mapping", "metrics",
               "multi_teacher", "objective", "objective_presets", "objectives", "paired_inputs",
               "parity", "plots", "pruning", "report", "runner", "saved_model_teacher", "seeds",
               "serving", "students", "taps", "teacher_outputs", "teachers", "testing", "tflite",
               "tflite_graph", "tflite_sidecar", "tfx", "training_state", "vocabulary")
_NAMES = {
    "Distiller": "kdistill.distiller",
    "RunConfig": "kdistill.config",
    "load_config": "kdistill.config",
    "run": "kdistill.runner",
    "export_student": "kdistill.export",
    "LayerMap": "kdistill.mapping",
    "AttentionKD": "kdistill.objectives",
    "EmbeddingKD": "kdistill.objectives",
    "HiddenStateKD": "kdistill.objectives",
    "LogitsKD": "kdistill.objectives",
    "MiniLMKD": "kdistill.objectives",
    "PKDHiddenKD": "kdistill.objectives",
    "MultiTeacher": "kdistill.multi_teacher",
    "MultiTeacherKD": "kdistill.multi_teacher",
    "KDScheduler": "kdistill.callbacks",
    "temperature_sweep": "kdistill.callbacks",
}


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"kdistill.{name}")
    if name in _NAMES:
        value = getattr(importlib.import_module(_NAMES[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'kdistill' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "AttentionKD",
    "Distiller",
    "EmbeddingKD",
    "HiddenStateKD",
    "KDScheduler",
    "LayerMap",
    "LogitsKD",
    "MiniLMKD",
    "MultiTeacher",
    "MultiTeacherKD",
    "PKDHiddenKD",
    "__version__",
    "callbacks",
    "data",
    "export_student",
    "losses",
    "mapping",
    "metrics",
    "multi_teacher",
    "objectives",
    "pruning",
    "students",
    "taps",
    "teachers",
    "temperature_sweep",
]
