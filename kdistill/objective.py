"""The `Objective` base class of distillation objectives, and the checks of their arguments.

An objective names the teacher taps and student taps it reads, owns any learnable projection it
needs (built once, when the `Distiller` is constructed, so the optimizer tracks it), and returns
one or more named terms, each a per-example loss with its weight. The `Distiller` adds the weighted
terms into the training loss and logs every term under its name.

The objectives kdistill ships are in `kdistill.logits_kd` (`LogitsKD`),
`kdistill.layer_objectives` (hidden states, embeddings, attention, MiniLM, PKD) and
`kdistill.objective_presets` (the published recipes); `kdistill.objectives` gathers them all.
"""

import math

import keras
import numpy as np

from kdistill.taps import LOGITS


def _number(name, value, expected):
    """`value` as a float; a ValueError naming `name` for bools, non-numbers, NaN and Inf."""
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(
            f"{name} must be a number ({expected}), got the bool {bool(value)}: pass a number, not "
            "True/False."
        )
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must be a number ({expected}), got {value!r} ({type(value).__name__})."
        ) from None
    if not math.isfinite(number):
        raise ValueError(
            f"{name} must be a finite number ({expected}), got {number}. NaN or Inf here makes "
            "every loss NaN: pass a finite value."
        )
    return number


def check_temperature(value):
    """Checks a softmax temperature: a finite float > 0 (not a bool).

    Shared by the objectives and the callbacks that anneal them (`kdistill.callbacks`).

    Args:
        value: number. The temperature `T`.

    Returns:
        float: the value.

    Raises:
        ValueError: the value is not a finite number > 0, or is a bool (the message quotes it).

    Example:
    >>> check_temperature(4)
    4.0
    >>> check_temperature(0)
    Traceback (most recent call last):
    ...
    ValueError: temperature must be > 0, got 0.0. Typical values are 1 to 8 (Hinton KD uses 2-4).
    >>> check_temperature(float("inf"))
    Traceback (most recent call last):
    ...
    ValueError: temperature must be a finite number (> 0, typically 1 to 8), got inf. ...
    """
    value = _number("temperature", value, "> 0, typically 1 to 8")
    if not value > 0:
        raise ValueError(
            f"temperature must be > 0, got {value}. Typical values are 1 to 8 (Hinton KD uses 2-4)."
        )
    return value


def check_fraction(name, value):
    """Checks a weight share such as `alpha`: a float in [0, 1] (not a bool, not NaN).

    Args:
        name: str. The argument's name, quoted in the error.
        value: number.

    Returns:
        float: the value.

    Raises:
        ValueError: the value is outside [0, 1], NaN, or a bool.

    Example:
    >>> check_fraction("alpha", 0.25)
    0.25
    >>> check_fraction("alpha", 1.5)
    Traceback (most recent call last):
    ...
    ValueError: alpha must be in [0, 1], got 1.5.
    """
    value = _number(name, value, "in [0, 1]")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}.")
    return value


def check_weight(value, name="weight"):
    """Checks a loss weight: a finite float >= 0 (not a bool).

    Args:
        value: number.
        name: str. The argument's name, quoted in the error.

    Returns:
        float: the value.

    Raises:
        ValueError: the value is negative, NaN, Inf or a bool.

    Example:
    >>> check_weight(100)
    100.0
    >>> check_weight(-1)
    Traceback (most recent call last):
    ...
    ValueError: weight must be >= 0, got -1.0. Pass 0 to switch a term off.
    """
    value = _number(name, value, ">= 0")
    if not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value}. Pass 0 to switch a term off.")
    return value


class Objective(keras.layers.Layer):
    """Base class of distillation objectives.

    Subclasses set `teacher_taps` / `student_taps`, may override `build_for` to create projection
    layers from the taps' static shapes, and implement `compute`.

    Args:
        weight: float >= 0. Multiplies every term of this objective.
        name: str. Prefix of the logged term names.

    Example:
    >>> import keras, numpy as np, kdistill
    >>> @keras.saving.register_keras_serializable(package="my_project")
    ... class LogitsMSE(Objective):
    ...     def term_names(self):
    ...         return ["logits_mse"]
    ...     def compute(self, teacher_outputs, student_outputs, labels=None,
    ...                 padding_mask=None, token_weights=None):
    ...         t, s = teacher_outputs["logits"], student_outputs["logits"]
    ...         return {"logits_mse": (keras.ops.mean((t - s) ** 2, axis=-1), self.weight)}
    >>> teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> distiller = kdistill.Distiller(teacher, student, objectives=[LogitsMSE(weight=2.0)])
    >>> distiller.compile(optimizer="sgd")
    >>> sorted(distiller.evaluate(np.ones((4, 4)), verbose=0, return_dict=True))
    ['logits_mse', 'loss']
    """

    teacher_taps = (LOGITS,)
    student_taps = (LOGITS,)

    def __init__(self, weight=1.0, **kwargs):
        super().__init__(**kwargs)
        self.weight = check_weight(weight)

    def build_for(self, teacher, student):
        """Checks the taps and creates weights; called once by the `Distiller`'s constructor.

        Args:
            teacher: `kdistill.taps.Taps` of the teacher (`output_shapes()`, `num_layers`,
                `num_heads`).
            student: `kdistill.taps.Taps` of the student.
        """
        self.built = True

    def reads_teacher(self, labelled=True):
        """Whether a term of this objective that reads the teacher has a non-zero weight now.

        The `Distiller` runs the teacher forward (and builds the taps it needs) only when an
        objective says True, or a compiled fidelity metric needs the teacher's logits. An
        objective whose `weight` is 0 when the Distiller is built is never computed. Subclasses
        whose teacher terms have their own weights (`LogitsKD`: `1 - alpha`, a variable a
        schedule may change) override this; the Distiller asks again before every step and
        retraces its step when the answer changes. An objective that returns False while its
        `weight` is > 0 must compute its other terms from `teacher_outputs` without the
        teacher's taps (an empty dict).

        Args:
            labelled: bool. Whether the batches carry labels.

        Returns:
            bool.

        Example:
        >>> from kdistill.objectives import HiddenStateKD, LogitsKD
        >>> HiddenStateKD(weight=0.0).reads_teacher(), HiddenStateKD().reads_teacher()
        (False, True)
        >>> LogitsKD(alpha=1.0).reads_teacher(), LogitsKD(alpha=1.0).reads_teacher(False)
        (False, True)
        """
        return bool(self.teacher_taps) and self.weight > 0

    def term_names(self):
        """Names of the terms `compute` may return (each gets a logged metric)."""
        raise NotImplementedError

    def compute(self, teacher_outputs, student_outputs, labels=None, padding_mask=None,
                token_weights=None):
        """Returns `{term_name: (per_example_loss [batch], weight)}`.

        Args:
            teacher_outputs: dict of teacher taps.
            student_outputs: dict of student taps.
            labels: the batch's labels, or None.
            padding_mask: `[batch, seq]` input padding mask, or None.
            token_weights: `[batch, positions]` weights of token-level logits (e.g. a masked-LM
                preprocessor's `mask_weights`), or None.
        """
        raise NotImplementedError

    def get_config(self):
        config = super().get_config()
        config.update({"weight": self.weight})
        return config

