"""Distillation objectives: what is matched to what, with which loss and weight.

An objective names the teacher taps and student taps it reads, owns any learnable projection it
needs (built once, when the `Distiller` is constructed, so the optimizer tracks it), and returns
one or more named terms, each a per-example loss with its weight. The `Distiller` adds the weighted
terms into the training loss and logs every term under its name.
"""

import warnings

import keras
import tensorflow as tf

from kdistill import losses
from kdistill.taps import LOGITS


def _check_temperature(value):
    value = float(value)
    if not value > 0:
        raise ValueError(
            f"temperature must be > 0, got {value}. Typical values are 1 to 8 (Hinton KD uses 2-4)."
        )
    return value


def _check_fraction(name, value):
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}.")
    return value


def _check_weight(value):
    value = float(value)
    if not value >= 0:
        raise ValueError(f"weight must be >= 0, got {value}.")
    return value


class Objective(keras.layers.Layer):
    """Base class of distillation objectives.

    Subclasses set `teacher_taps` / `student_taps`, may override `build_for` to create projection
    layers from the taps' static shapes, and implement `compute`.

    Args:
        weight: float >= 0. Multiplies every term of this objective.
        name: str. Prefix of the logged term names.
    """

    teacher_taps = (LOGITS,)
    student_taps = (LOGITS,)

    def __init__(self, weight=1.0, **kwargs):
        super().__init__(**kwargs)
        self.weight = _check_weight(weight)

    def build_for(self, teacher_shapes, student_shapes):
        """Checks tap shapes and creates weights; called once by the `Distiller`'s constructor.

        Args:
            teacher_shapes: dict `{tap: shape or None}` (None where not statically known).
            student_shapes: dict `{tap: shape or None}`.
        """
        self.built = True

    def term_names(self):
        """Names of the terms `compute` may return (each gets a logged metric)."""
        raise NotImplementedError

    def compute(self, teacher_outputs, student_outputs, labels=None, padding_mask=None):
        """Returns `{term_name: (per_example_loss [batch], weight)}`."""
        raise NotImplementedError

    def get_config(self):
        config = super().get_config()
        config.update({"weight": self.weight})
        return config


def _last_dim(shape):
    return None if shape is None else shape[-1]


@keras.saving.register_keras_serializable(package="kdistill")
class LogitsKD(Objective):
    """Hinton knowledge distillation on the output logits.

    `L = alpha · CE(labels, s) + (1 - alpha) · T² · KL(softmax(t / T) ‖ softmax(s / T))`, logged as
    `student_loss` (the CE) and `kd_loss` (the scaled KL). Batches without labels give pure KD.
    `temperature` and `alpha` live in non-trainable variables, so a callback can anneal them during
    `fit` without retracing.

    Args:
        temperature: float > 0. Softmax temperature `T`.
        alpha: float in [0, 1]. Weight of the hard-label cross-entropy.
        weight: float >= 0. Multiplies both terms.

    Example:
    >>> kd = LogitsKD(temperature=4.0, alpha=0.5)
    >>> kd.temperature, kd.alpha
    (4.0, 0.5)

    References:
        Hinton, Vinyals, Dean. Distilling the Knowledge in a Neural Network. arXiv:1503.02531.
    """

    def __init__(self, temperature=2.0, alpha=0.5, weight=1.0, name="logits_kd", **kwargs):
        super().__init__(weight=weight, name=name, **kwargs)
        self._temperature = _check_temperature(temperature)
        self._alpha = _check_fraction("alpha", alpha)
        self._warned_no_labels = False

    def build_for(self, teacher_shapes, student_shapes):
        t, s = _last_dim(teacher_shapes.get(LOGITS)), _last_dim(student_shapes.get(LOGITS))
        if t is not None and s is not None and t != s:
            raise ValueError(
                f"The teacher outputs {t} logits per example but the student outputs {s}: teacher "
                "and student must share the label space. Give the student a head with "
                f"{t} classes."
            )
        self.num_classes = t if t is not None else s
        self._temperature_var = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(self._temperature),
            trainable=False, name="temperature",
        )
        self._alpha_var = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(self._alpha),
            trainable=False, name="alpha",
        )
        self.built = True

    @property
    def temperature(self):
        return float(self._temperature_var.numpy()) if self.built else self._temperature

    @temperature.setter
    def temperature(self, value):
        self._temperature = _check_temperature(value)
        if self.built:
            self._temperature_var.assign(self._temperature)

    @property
    def alpha(self):
        return float(self._alpha_var.numpy()) if self.built else self._alpha

    @alpha.setter
    def alpha(self, value):
        self._alpha = _check_fraction("alpha", value)
        if self.built:
            self._alpha_var.assign(self._alpha)

    def _check_shapes(self, teacher_logits, student_logits):
        t, s = teacher_logits.shape, student_logits.shape
        if t[-1] is not None and s[-1] is not None and t[-1] != s[-1]:
            raise ValueError(
                f"Teacher logits have shape {tuple(t)} but student logits {tuple(s)}: teacher and "
                "student must output the same number of classes."
            )

    def _checked_labels(self, labels, num_classes):
        if not labels.dtype.is_integer or num_classes is None:
            return labels
        message = (
            f"kdistill: labels must be class ids in [0, {num_classes}) for a model with "
            f"{num_classes} outputs; found a label out of that range. Check the dataset's label "
            "mapping or the heads' number of classes."
        )
        with tf.control_dependencies([
            tf.debugging.assert_non_negative(labels, message=message),
            tf.debugging.assert_less(labels, tf.cast(num_classes, labels.dtype), message=message),
        ]):
            return tf.identity(labels)

    def term_names(self):
        return ["kd_loss", "student_loss"]

    def compute(self, teacher_outputs, student_outputs, labels=None, padding_mask=None):
        t, s = teacher_outputs[LOGITS], student_outputs[LOGITS]
        self._check_shapes(t, s)
        mask = padding_mask if len(s.shape) == 3 else None
        kd = losses.kl_divergence(t, s, self._temperature_var, mask=mask)
        if labels is None:
            if self._alpha > 0 and not self._warned_no_labels:
                self._warned_no_labels = True
                warnings.warn(
                    f"kdistill: batches carry no labels; alpha={self._alpha} is ignored and the "
                    "loss is pure KD.", stacklevel=2)
            return {"kd_loss": (kd, self.weight)}
        labels = self._checked_labels(tf.convert_to_tensor(labels), s.shape[-1])
        ce = losses.hard_cross_entropy(labels, s, mask=mask)
        alpha = tf.cast(self._alpha_var, "float32")
        return {
            "student_loss": (ce, self.weight * alpha),
            "kd_loss": (kd, self.weight * (1.0 - alpha)),
        }

    def get_config(self):
        config = super().get_config()
        config.update({"temperature": self.temperature, "alpha": self.alpha})
        return config


def logits_kd(temperature=2.0, alpha=0.5):
    """Preset: Hinton KD on logits (the `Distiller`'s default objective).

    Args:
        temperature: float > 0.
        alpha: float in [0, 1], weight of the hard-label cross-entropy.

    Returns:
        A list with one `LogitsKD` objective.

    Example:
    >>> [type(o).__name__ for o in logits_kd(temperature=4.0)]
    ['LogitsKD']
    """
    return [LogitsKD(temperature=temperature, alpha=alpha)]
