"""`LogitsKD`: Hinton knowledge distillation on the output logits (the default objective).

`alpha` has one meaning everywhere (`LogitsKD`, every preset, `Distiller(alpha=)`,
`kdistill.callbacks.KDScheduler`): the weight in [0, 1] of the hard-label cross-entropy inside a
logits term, `alpha·CE + (1 - alpha)·T²·KL`.
"""

import warnings

import keras
import tensorflow as tf

from kdistill import losses
from kdistill.objective import Objective, check_fraction, check_temperature
from kdistill.taps import LOGITS


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
        self._temperature = check_temperature(temperature)
        self._alpha = check_fraction("alpha", alpha)
        self._warned_no_labels = False

    def _teacher_logits_shape(self, teacher):
        return teacher.output_shapes().get(LOGITS)

    def build_for(self, teacher, student):
        t_shape = self._teacher_logits_shape(teacher)
        s_shape = student.output_shapes().get(LOGITS)
        if t_shape is not None and s_shape is not None and len(t_shape) != len(s_shape):
            raise ValueError(
                f"The teacher's logits have shape {t_shape} but the student's {s_shape}. A "
                "kdistill.MultiTeacher outputs one row per teacher: distil it with "
                "kdistill.MultiTeacherKD (its default objective), not LogitsKD."
            )
        t = None if t_shape is None else t_shape[-1]
        s = None if s_shape is None else s_shape[-1]
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
        self._temperature = check_temperature(value)
        if self.built:
            self._temperature_var.assign(self._temperature)

    @property
    def alpha(self):
        return float(self._alpha_var.numpy()) if self.built else self._alpha

    @alpha.setter
    def alpha(self, value):
        self._alpha = check_fraction("alpha", value)
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

    @staticmethod
    def _poison_invalid(ce, labels, num_classes):
        """NaN for out-of-range labels: XLA compiles the assertions away, this survives."""
        if not labels.dtype.is_integer or num_classes is None or len(labels.shape) != 1:
            return ce
        valid = tf.logical_and(labels >= 0, labels < tf.cast(num_classes, labels.dtype))
        return tf.where(valid, ce, tf.constant(float("nan"), ce.dtype))

    def reads_teacher(self, labelled=True):
        """False with labels and `alpha == 1` (or `weight == 0`): the KD term weighs nothing.

        Without labels the loss is pure KD whatever `alpha` is. `alpha` is read now (the
        variable, which `KDScheduler` may change during `fit`). A subclass that overrides
        `compute` keeps the teacher unless it overrides this too.

        Example:
        >>> LogitsKD(alpha=1.0).reads_teacher(), LogitsKD(alpha=0.9).reads_teacher()
        (False, True)
        """
        if self.weight == 0:
            return False
        if not labelled or type(self).compute is not LogitsKD.compute:
            return True
        return self.alpha < 1.0

    def term_names(self):
        return [self._term("kd_loss"), self._term("student_loss")]

    def _term(self, base):
        # The default objective logs the names users know (`kd_loss`, `student_loss`); other
        # instances prefix their own name so several can coexist (e.g. two teachers).
        return base if self.name == "logits_kd" else f"{self.name}_{base}"

    def compute(self, teacher_outputs, student_outputs, labels=None, padding_mask=None,
                token_weights=None):
        s = student_outputs[LOGITS]
        mask = None
        if len(s.shape) == 3:  # token-level logits: padding (or MLM mask weights) do not count
            mask = token_weights if token_weights is not None else padding_mask
        if LOGITS not in teacher_outputs:  # the teacher did not run: `reads_teacher()` is False
            return self._hard_label_term(labels, s, mask)
        t = teacher_outputs[LOGITS]
        self._check_shapes(t, s)
        kd = losses.kl_divergence(t, s, self._temperature_var, mask=mask)
        if labels is None:
            if self._alpha > 0 and not self._warned_no_labels:
                self._warned_no_labels = True
                warnings.warn(
                    f"kdistill: batches carry no labels; alpha={self._alpha} is ignored and the "
                    "loss is pure KD.", stacklevel=2)
            return {self._term("kd_loss"): (kd, self.weight)}
        alpha = tf.cast(self._alpha_var, "float32")
        return {
            **self._hard_label_term(labels, s, mask),
            self._term("kd_loss"): (kd, self.weight * (1.0 - alpha)),
        }

    def _hard_label_term(self, labels, s, mask):
        if labels is None:
            raise ValueError(f"{self.name}: batches without labels need the teacher's logits.")
        labels = self._checked_labels(tf.convert_to_tensor(labels), s.shape[-1])
        ce = self._poison_invalid(losses.hard_cross_entropy(labels, s, mask=mask), labels,
                                  s.shape[-1])
        alpha = tf.cast(self._alpha_var, "float32")
        return {self._term("student_loss"): (ce, self.weight * alpha)}

    def get_config(self):
        config = super().get_config()
        config.update({"temperature": self.temperature, "alpha": self.alpha})
        return config

