"""kdistill: knowledge distillation of Transformer text models in TensorFlow/Keras."""

__version__ = "0.1.0"

from kdistill import (  # noqa: E402
    data,
    losses,
    mapping,
    objectives,
    students,
    taps,
    teachers,
)
from kdistill.distiller import Distiller  # noqa: E402
from kdistill.export import export_student  # noqa: E402
from kdistill.mapping import LayerMap  # noqa: E402
from kdistill.objectives import (  # noqa: E402
    AttentionKD,
    EmbeddingKD,
    HiddenStateKD,
    LogitsKD,
    MiniLMKD,
    PKDHiddenKD,
)

__all__ = [
    "AttentionKD",
    "Distiller",
    "EmbeddingKD",
    "HiddenStateKD",
    "LayerMap",
    "LogitsKD",
    "MiniLMKD",
    "PKDHiddenKD",
    "__version__",
    "data",
    "export_student",
    "losses",
    "mapping",
    "objectives",
    "students",
    "taps",
    "teachers",
]
