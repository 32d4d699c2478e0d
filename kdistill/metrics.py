"""Fidelity metrics: how closely the student follows the teacher, and how calibrated it is.

Use them in `Distiller.compile(metrics=[...])` next to task metrics such as `"accuracy"`:

- `TeacherAgreement`: the share of examples where the student's top-1 class is the teacher's.
- `TeacherKL`: the mean `KL(softmax(t / T) ‖ softmax(s / T))` between teacher and student
  (`T = 1` by default; no `T²` factor, unlike the `kd_loss` term).
- `ExpectedCalibrationError`: the student's ECE over equal-width confidence bins. It needs labels
  but no teacher, so it also works in a plain `model.compile(metrics=[...])`.

The first two are `FidelityMetric`s: their `update_state` takes the teacher's logits as a keyword
argument, and the `Distiller` passes them (from the teacher's forward pass, or from the batch when
the teacher's outputs are cached). All metrics keep sums in `keras.metrics.Metric` variables,
which Keras reduces over replicas under `tf.distribute`, so the result is the global one.
String names (`"teacher_agreement"`, `"teacher_kl"`, `"ece"`) work in `Distiller.compile`.
"""

import keras
from keras import ops

__all__ = [
    "ExpectedCalibrationError",
    "FidelityMetric",
    "TeacherAgreement",
    "TeacherKL",
    "get",
]


def _flatten(logits, weights):
    """`[..., classes]` logits and broadcastable weights -> `[n, classes]` and `[n]` float32."""
    logits = ops.cast(ops.convert_to_tensor(logits), "float32")
    classes = logits.shape[-1]
    flat = ops.reshape(logits, (-1, classes))
    if weights is None:
        return flat, ops.ones((ops.shape(flat)[0],), "float32")
    weights = ops.cast(ops.convert_to_tensor(weights), "float32")
    lead = ops.shape(logits)[:-1]
    if len(weights.shape) > len(lead):  # e.g. [batch, 1] sample weights for [batch, classes]
        weights = ops.reshape(weights, ops.shape(weights)[: len(lead)])
    while len(weights.shape) < len(lead):
        weights = ops.expand_dims(weights, -1)
    return flat, ops.reshape(ops.broadcast_to(weights, lead), (-1,))


class _WeightedMean(keras.metrics.Metric):
    """A weighted mean kept as two summed variables (exact over batches and replicas)."""

    def __init__(self, name, dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def _accumulate(self, values, weights):
        self.total.assign_add(ops.cast(ops.sum(values * weights), self.total.dtype))
        self.count.assign_add(ops.cast(ops.sum(weights), self.count.dtype))

    def result(self):
        return ops.divide_no_nan(self.total, self.count)


class FidelityMetric(_WeightedMean):
    """Base class of metrics that compare the student's logits with the teacher's.

    `update_state(y_true, y_pred, sample_weight=None, teacher_logits=...)`: `y_pred` holds the
    student's logits and `teacher_logits` the teacher's, both `[batch, classes]` (or
    `[batch, positions, classes]` for token-level models; a rank-2 `sample_weight` then weighs the
    positions). Labels are not needed: `y_true` may be None (unlabelled distillation data). The
    `Distiller` recognises these metrics in `compile(metrics=...)` and passes `teacher_logits`.
    Subclasses implement `values(teacher_logits, student_logits)`, one value per row.

    Args:
        name: str. Name of the metric in logs.
        dtype: dtype of the metric's result.

    Example:
    >>> import numpy as np
    >>> class TeacherMSE(FidelityMetric):
    ...     def values(self, teacher_logits, student_logits):
    ...         return ops.mean((teacher_logits - student_logits) ** 2, axis=-1)
    >>> m = TeacherMSE(name="teacher_mse")
    >>> m.update_state(None, np.array([[1.0, 0.0], [2.0, 2.0]]),
    ...                teacher_logits=np.array([[0.0, 0.0], [2.0, 2.0]]))
    >>> float(m.result())
    0.25
    """

    def values(self, teacher_logits, student_logits):
        """Per-row values `[n]` from `[n, classes]` teacher and student logits (float32)."""
        raise NotImplementedError

    def update_state(self, y_true=None, y_pred=None, sample_weight=None, teacher_logits=None):
        if teacher_logits is None:
            raise ValueError(
                f"The metric {self.name!r} ({type(self).__name__}) compares the student with the "
                "teacher and needs the teacher's logits: use it in "
                "`kdistill.Distiller.compile(metrics=[...])`, or call "
                "`update_state(y_true, student_logits, teacher_logits=...)`."
            )
        if y_pred is None:
            raise ValueError(f"{type(self).__name__}.update_state needs the student's logits "
                             "as y_pred.")
        student, weights = _flatten(y_pred, sample_weight)
        teacher, _ = _flatten(teacher_logits, None)
        if teacher.shape[-1] is not None and student.shape[-1] is not None and (
                teacher.shape[-1] != student.shape[-1]):
            raise ValueError(
                f"{type(self).__name__}: the teacher's logits have {teacher.shape[-1]} classes but "
                f"the student's {student.shape[-1]}; both must share the label space."
            )
        self._accumulate(self.values(teacher, student), weights)


@keras.saving.register_keras_serializable(package="kdistill")
class TeacherAgreement(FidelityMetric):
    """Top-1 agreement: the share of examples where the student predicts the teacher's class.

    Args:
        name: str. Name in logs (default `teacher_agreement`).
        dtype: dtype of the result.

    Example:
    >>> import numpy as np
    >>> m = TeacherAgreement()
    >>> teacher = np.array([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]])
    >>> student = np.array([[1.0, 0.0], [2.0, 1.0], [5.0, 0.0]])
    >>> m.update_state(None, student, teacher_logits=teacher)
    >>> round(float(m.result()), 4)
    0.6667
    """

    def __init__(self, name="teacher_agreement", dtype=None):
        super().__init__(name=name, dtype=dtype)

    def values(self, teacher_logits, student_logits):
        same = ops.equal(ops.argmax(teacher_logits, axis=-1), ops.argmax(student_logits, axis=-1))
        return ops.cast(same, "float32")


@keras.saving.register_keras_serializable(package="kdistill")
class TeacherKL(FidelityMetric):
    """Mean `KL(softmax(t / T) ‖ softmax(s / T))` of teacher `t` and student `s` logits, in nats.

    At the default `T = 1` this is the divergence of the two models' predictive distributions.
    Unlike the `kd_loss` term it carries no `T²` factor, so values at different `T` are KLs of
    the tempered distributions themselves. 0 means the student matches the teacher exactly.

    Args:
        temperature: float > 0. Softmax temperature of both distributions.
        name: str. Name in logs (default `teacher_kl`).
        dtype: dtype of the result.

    Example:
    >>> import numpy as np
    >>> m = TeacherKL()
    >>> m.update_state(None, np.array([[0.0, 0.0]]), teacher_logits=np.array([[0.0, 0.0]]))
    >>> float(m.result())
    0.0
    """

    def __init__(self, temperature=1.0, name="teacher_kl", dtype=None):
        super().__init__(name=name, dtype=dtype)
        temperature = float(temperature)
        if not temperature > 0:
            raise ValueError(f"TeacherKL: temperature must be > 0, got {temperature}.")
        self.temperature = temperature

    def values(self, teacher_logits, student_logits):
        log_p = ops.log_softmax(teacher_logits / self.temperature, axis=-1)
        log_q = ops.log_softmax(student_logits / self.temperature, axis=-1)
        return ops.sum(ops.exp(log_p) * (log_p - log_q), axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update({"temperature": self.temperature})
        return config


@keras.saving.register_keras_serializable(package="kdistill")
class ExpectedCalibrationError(keras.metrics.Metric):
    """Expected calibration error of the student's top-1 confidence, over equal-width bins.

    `ECE = Σ_b (n_b / N) · |accuracy_b − confidence_b|`, where bin `b` holds the examples whose
    top-1 probability lies in `((b-1)/B, b/B]`. Per-bin counts and sums are kept in metric
    variables, so the value is exact over batches and replicas (not an average of per-batch
    ECEs). Needs labels, not the teacher: it also works in a plain `model.compile`.

    Args:
        num_bins: int >= 1. Number of equal-width confidence bins `B` (default 10).
        from_logits: bool. `y_pred` holds logits (kdistill models) rather than probabilities.
        name: str. Name in logs (default `ece`).
        dtype: dtype of the result.

    Example:
    >>> import numpy as np
    >>> m = ExpectedCalibrationError(num_bins=10, from_logits=False)
    >>> m.update_state(np.array([0, 1]), np.array([[0.9, 0.1], [0.7, 0.3]]))
    >>> round(float(m.result()), 4)   # |1 - 0.9| / 2 + |0 - 0.7| / 2
    0.4

    References:
        Naeini, Cooper, Hauskrecht. Obtaining Well Calibrated Probabilities Using Bayesian
        Binning. AAAI 2015. Guo et al. On Calibration of Modern Neural Networks.
        arXiv:1706.04599.
    """

    def __init__(self, num_bins=10, from_logits=True, name="ece", dtype=None):
        super().__init__(name=name, dtype=dtype)
        if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 1:
            raise ValueError(f"ExpectedCalibrationError: num_bins must be an int >= 1, got "
                             f"{num_bins!r}.")
        self.num_bins = num_bins
        self.from_logits = bool(from_logits)
        self.counts = self.add_variable(shape=(num_bins,), initializer="zeros", name="counts")
        self.confidence = self.add_variable(shape=(num_bins,), initializer="zeros",
                                            name="confidence")
        self.correct = self.add_variable(shape=(num_bins,), initializer="zeros", name="correct")

    def update_state(self, y_true, y_pred, sample_weight=None):
        if y_true is None:
            raise ValueError("ExpectedCalibrationError needs labels (y_true); batches without "
                             "labels cannot measure calibration.")
        probs, weights = _flatten(y_pred, sample_weight)
        if self.from_logits:
            probs = ops.softmax(probs, axis=-1)
        y_true = ops.convert_to_tensor(y_true)
        if len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] == probs.shape[-1] and (
                probs.shape[-1] != 1):
            labels = ops.argmax(ops.reshape(y_true, (-1, probs.shape[-1])), axis=-1)  # one-hot
        else:
            labels = ops.reshape(y_true, (-1,))
        confidence = ops.max(probs, axis=-1)
        correct = ops.cast(
            ops.equal(ops.cast(ops.argmax(probs, axis=-1), "int64"), ops.cast(labels, "int64")),
            "float32")
        bins = ops.clip(ops.cast(ops.ceil(confidence * self.num_bins), "int32") - 1, 0,
                        self.num_bins - 1)
        one_hot = ops.one_hot(bins, self.num_bins) * weights[:, None]  # [n, bins]
        for variable, values in ((self.counts, None), (self.confidence, confidence),
                                 (self.correct, correct)):
            sums = ops.sum(one_hot if values is None else one_hot * values[:, None], axis=0)
            variable.assign_add(ops.cast(sums, variable.dtype))

    def result(self):
        gap = ops.sum(ops.abs(self.correct - self.confidence))
        return ops.divide_no_nan(gap, ops.sum(self.counts))

    def get_config(self):
        config = super().get_config()
        config.update({"num_bins": self.num_bins, "from_logits": self.from_logits})
        return config


_BY_NAME = {
    "teacher_agreement": TeacherAgreement,
    "agreement": TeacherAgreement,
    "teacher_kl": TeacherKL,
    "kl": TeacherKL,
    "ece": ExpectedCalibrationError,
    "expected_calibration_error": ExpectedCalibrationError,
}


def get(identifier):
    """Resolves a kdistill metric name to a new metric; anything else is returned unchanged.

    Names: `"teacher_agreement"` (or `"agreement"`), `"teacher_kl"` (or `"kl"`), `"ece"` (or
    `"expected_calibration_error"`). Other strings (`"accuracy"`) and metric objects pass
    through for Keras to resolve, so a config file can list kdistill and Keras metrics together.

    Args:
        identifier: str or metric.

    Returns:
        A `keras.metrics.Metric`, or `identifier` itself.

    Example:
    >>> type(get("ece")).__name__, get("accuracy")
    ('ExpectedCalibrationError', 'accuracy')
    """
    if isinstance(identifier, str) and identifier.lower() in _BY_NAME:
        return _BY_NAME[identifier.lower()]()
    return identifier
