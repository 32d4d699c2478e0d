"""kdistill: knowledge distillation of Transformer text models in TensorFlow/Keras."""

__version__ = "0.1.0"

from kdistill import data, losses, objectives, taps, teachers  # noqa: E402, F401
from kdistill.distiller import Distiller  # noqa: E402
from kdistill.export import export_student  # noqa: E402
from kdistill.objectives import LogitsKD  # noqa: E402

__all__ = ["Distiller", "export_student", "LogitsKD", "losses", "objectives", "taps", "__version__"]
