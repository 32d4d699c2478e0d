"""Distillation objectives: what is matched to what, with which loss and weight.

An objective names the teacher taps and student taps it reads, owns any learnable projection it
needs (built once, when the `Distiller` is constructed, so the optimizer tracks it), and returns
one or more named terms, each a per-example loss with its weight. The `Distiller` adds the weighted
terms into the training loss and logs every term under its name.

`alpha` has one meaning everywhere (`LogitsKD`, every preset, `Distiller(alpha=)`,
`kdistill.callbacks.KDScheduler`): the weight in [0, 1] of the hard-label cross-entropy inside a
logits term, `alpha·CE + (1 - alpha)·T²·KL`. Absolute weights of whole terms are `weight` on an
objective and `<term>_weight` on a preset (`prediction_weight`, `hidden_weight`, ...); `pkd`'s
`beta` keeps the paper's name.
"""

import math
import warnings

import keras
import tensorflow as tf

from kdistill import losses
from kdistill.mapping import LayerMap, default_strategy
from kdistill.taps import (
    ATTENTION_SCORES,
    ATTENTION_VALUES,
    EMBEDDINGS,
    HIDDEN_STATES,
    LOGITS,
)


def check_temperature(value):
    """Checks a softmax temperature: a float > 0.

    Shared by the objectives and the callbacks that anneal them (`kdistill.callbacks`).

    Args:
        value: number. The temperature `T`.

    Returns:
        float: the value.

    Raises:
        ValueError: the value is not > 0 (the message quotes it).

    Example:
    >>> check_temperature(4)
    4.0
    >>> check_temperature(0)
    Traceback (most recent call last):
    ...
    ValueError: temperature must be > 0, got 0.0. Typical values are 1 to 8 (Hinton KD uses 2-4).
    """
    value = float(value)
    if not value > 0:
        raise ValueError(
            f"temperature must be > 0, got {value}. Typical values are 1 to 8 (Hinton KD uses 2-4)."
        )
    return value


def check_fraction(name, value):
    """Checks a weight share such as `alpha`: a float in [0, 1].

    Args:
        name: str. The argument's name, quoted in the error.
        value: number.

    Returns:
        float: the value.

    Raises:
        ValueError: the value is outside [0, 1].

    Example:
    >>> check_fraction("alpha", 0.25)
    0.25
    >>> check_fraction("alpha", 1.5)
    Traceback (most recent call last):
    ...
    ValueError: alpha must be in [0, 1], got 1.5.
    """
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}.")
    return value


def check_weight(value):
    """Checks a loss weight: a float >= 0.

    Args:
        value: number.

    Returns:
        float: the value.

    Raises:
        ValueError: the value is negative (or NaN).

    Example:
    >>> check_weight(100)
    100.0
    """
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
        t, s = _last_dim(t_shape), _last_dim(s_shape)
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

    def term_names(self):
        return [self._term("kd_loss"), self._term("student_loss")]

    def _term(self, base):
        # The default objective logs the names users know (`kd_loss`, `student_loss`); other
        # instances prefix their own name so several can coexist (e.g. two teachers).
        return base if self.name == "logits_kd" else f"{self.name}_{base}"

    def compute(self, teacher_outputs, student_outputs, labels=None, padding_mask=None,
                token_weights=None):
        t, s = teacher_outputs[LOGITS], student_outputs[LOGITS]
        self._check_shapes(t, s)
        mask = None
        if len(s.shape) == 3:  # token-level logits: padding (or MLM mask weights) do not count
            mask = token_weights if token_weights is not None else padding_mask
        kd = losses.kl_divergence(t, s, self._temperature_var, mask=mask)
        if labels is None:
            if self._alpha > 0 and not self._warned_no_labels:
                self._warned_no_labels = True
                warnings.warn(
                    f"kdistill: batches carry no labels; alpha={self._alpha} is ignored and the "
                    "loss is pure KD.", stacklevel=2)
            return {self._term("kd_loss"): (kd, self.weight)}
        labels = self._checked_labels(tf.convert_to_tensor(labels), s.shape[-1])
        ce = self._poison_invalid(losses.hard_cross_entropy(labels, s, mask=mask), labels,
                                  s.shape[-1])
        alpha = tf.cast(self._alpha_var, "float32")
        return {
            self._term("student_loss"): (ce, self.weight * alpha),
            self._term("kd_loss"): (kd, self.weight * (1.0 - alpha)),
        }

    def get_config(self):
        config = super().get_config()
        config.update({"temperature": self.temperature, "alpha": self.alpha})
        return config


def _heads(shape):
    return None if shape is None else shape[1]


class _LayerwiseObjective(Objective):
    """Shared plumbing: a layer map resolved at build time and optional learnable projections."""

    term = None

    def __init__(self, layer_map=None, weight=1.0, projection="auto", **kwargs):
        super().__init__(weight=weight, **kwargs)
        if projection not in ("auto", "shared", "per_layer", None, False):
            raise ValueError(
                f"projection must be 'auto', 'shared', 'per_layer' or None, got {projection!r}."
            )
        self.layer_map = layer_map
        self.projection = projection
        self.projections = []

    def _resolve_map(self, teacher, student):
        m, n = student.num_layers, teacher.num_layers
        if m is None or n is None:
            raise ValueError(
                f"{type(self).__name__} needs the number of encoder layers of both models "
                f"(student: {m}, teacher: {n}); use keras-hub encoders or pass layer_names."
            )
        spec = self.layer_map if self.layer_map is not None else default_strategy(m, n)
        resolved = LayerMap(spec, student_layers=m, teacher_layers=n)
        self.pairs = resolved.pairs
        return resolved

    def _build_projections(self, student_width, teacher_width, count):
        """Dense layers mapping the student's width to the teacher's, built now (not in fit)."""
        if student_width is None or teacher_width is None:
            raise ValueError(
                f"{type(self).__name__}: hidden widths must be known statically (student "
                f"{student_width}, teacher {teacher_width})."
            )
        if self.projection in (None, False):
            if student_width != teacher_width:
                raise ValueError(
                    f"{type(self).__name__}: the student's width {student_width} differs from "
                    f"the teacher's {teacher_width} and projection=None; use projection='auto'."
                )
            return
        if self.projection == "auto" and student_width == teacher_width:
            return
        number = 1 if self.projection in ("auto", "shared") else count
        for i in range(number):
            dense = keras.layers.Dense(teacher_width, name=f"{self.name}_projection_{i}")
            dense.build((None, None, student_width))
            self.projections.append(dense)

    def _build_hidden_map(self, teacher, student):
        """Resolves the layer map and builds projections between the hidden widths."""
        self._resolve_map(teacher, student)
        s_width = _last_dim(student.output_shapes()[HIDDEN_STATES][0])
        t_width = _last_dim(teacher.output_shapes()[HIDDEN_STATES][0])
        self._build_projections(s_width, t_width, len(self.pairs))
        self.built = True

    def _project(self, x, i):
        if not self.projections:
            return x
        return self.projections[min(i, len(self.projections) - 1)](x)

    def term_names(self):
        return [self.term or f"{self.name}_loss"]

    def get_config(self):
        config = super().get_config()
        spec = self.layer_map
        if isinstance(spec, LayerMap):
            spec = spec.get_config()["spec"]
        elif spec is not None and not isinstance(spec, str):
            spec = [list(p) for p in spec]
        config.update({"layer_map": spec, "projection": self.projection})
        return config


@keras.saving.register_keras_serializable(package="kdistill")
class HiddenStateKD(_LayerwiseObjective):
    """TinyBERT's hidden-state loss `Σ_m MSE(H_S^m W_h, H_T^g(m))`, logged as `hidden_loss`.

    Summed over the mapped layer pairs; padded tokens do not count. When widths differ a learnable
    projection `W_h` (one shared Dense by default, `projection="per_layer"` for one per pair) maps
    the student's states to the teacher's width; it trains with the student and is never exported.

    Args:
        layer_map: str, list of pairs or `LayerMap`. Defaults to `uniform` (`first` for equal
            depths).
        weight: float >= 0.
        projection: `"auto"` (a shared projection when widths differ), `"shared"`, `"per_layer"`,
            or None (widths must match).
        loss: `"mse"` (TinyBERT) or `"cosine"` (DistilBERT-style cosine on each pair).

    Example:
    >>> import kdistill
    >>> from kdistill import testing
    >>> teacher = testing.tiny_bert_classifier(num_layers=4, hidden_dim=16)
    >>> student = testing.tiny_bert_classifier(num_layers=2, hidden_dim=8)
    >>> d = kdistill.Distiller(teacher, student, objectives=[HiddenStateKD()])
    >>> d.objectives[0].pairs
    ((0, 1), (1, 3))

    References:
        Jiao et al. TinyBERT. arXiv:1909.10351.
    """

    student_taps = teacher_taps = (HIDDEN_STATES,)

    def __init__(self, layer_map=None, weight=1.0, projection="auto", loss="mse",
                 name="hidden", **kwargs):
        super().__init__(layer_map=layer_map, weight=weight, projection=projection, name=name,
                         **kwargs)
        if loss not in ("mse", "cosine"):
            raise ValueError(f"loss must be 'mse' or 'cosine', got {loss!r}.")
        self.loss = loss

    build_for = _LayerwiseObjective._build_hidden_map


    def compute(self, teacher_outputs, student_outputs, labels=None, padding_mask=None,
                token_weights=None):
        fn = losses.hidden_mse if self.loss == "mse" else losses.cosine_embedding_loss
        total = 0.0
        for i, (s, t) in enumerate(self.pairs):
            student_h = self._project(student_outputs[HIDDEN_STATES][s], i)
            total += fn(teacher_outputs[HIDDEN_STATES][t], student_h, mask=padding_mask)
        return {self.term_names()[0]: (total, self.weight)}

    def get_config(self):
        config = super().get_config()
        config.update({"loss": self.loss})
        return config


@keras.saving.register_keras_serializable(package="kdistill")
class EmbeddingKD(_LayerwiseObjective):
    """TinyBERT's embedding loss `MSE(E_S W_e, E_T)`, logged as `embedding_loss`.

    Args:
        weight: float >= 0.
        projection: as in `HiddenStateKD`.

    Example:
    >>> EmbeddingKD().term_names()
    ['embedding_loss']

    References:
        Jiao et al. TinyBERT. arXiv:1909.10351.
    """

    student_taps = teacher_taps = (EMBEDDINGS,)

    def __init__(self, weight=1.0, projection="auto", name="embedding", **kwargs):
        kwargs.pop("layer_map", None)
        super().__init__(layer_map=None, weight=weight, projection=projection, name=name,
                         **kwargs)

    def build_for(self, teacher, student):
        s_width = _last_dim(student.output_shapes()[EMBEDDINGS])
        t_width = _last_dim(teacher.output_shapes()[EMBEDDINGS])
        self._build_projections(s_width, t_width, 1)
        self.built = True

    def compute(self, teacher_outputs, student_outputs, labels=None, padding_mask=None,
                token_weights=None):
        student_e = self._project(student_outputs[EMBEDDINGS], 0)
        value = losses.hidden_mse(teacher_outputs[EMBEDDINGS], student_e, mask=padding_mask)
        return {self.term_names()[0]: (value, self.weight)}


@keras.saving.register_keras_serializable(package="kdistill")
class AttentionKD(_LayerwiseObjective):
    """TinyBERT's attention loss `Σ_m MSE(A_S^m, A_T^g(m))`, logged as `attention_loss`.

    Attention probabilities `[batch, heads, q, k]` are compared head by head; padded queries and
    keys do not count. With `loss="kl"` it is MiniLM's attention-distribution KL instead. Teacher
    and student must have the same number of heads (checked when the Distiller is built).

    Args:
        layer_map: str, list of pairs or `LayerMap`.
        weight: float >= 0.
        loss: `"mse"` (TinyBERT) or `"kl"` (MiniLM).

    Example:
    >>> AttentionKD(loss="kl").term_names()
    ['attention_loss']

    References:
        Jiao et al. TinyBERT. arXiv:1909.10351; Wang et al. MiniLM. arXiv:2002.10957.
    """

    student_taps = teacher_taps = (ATTENTION_SCORES,)

    def __init__(self, layer_map=None, weight=1.0, loss="mse", name="attention", **kwargs):
        kwargs.pop("projection", None)
        super().__init__(layer_map=layer_map, weight=weight, projection=None, name=name,
                         **kwargs)
        if loss not in ("mse", "kl"):
            raise ValueError(f"loss must be 'mse' or 'kl', got {loss!r}.")
        self.loss = loss

    def build_for(self, teacher, student):
        self._resolve_map(teacher, student)
        t_heads = _heads(teacher.output_shapes()[ATTENTION_SCORES][0])
        s_heads = _heads(student.output_shapes()[ATTENTION_SCORES][0])
        if t_heads != s_heads:
            raise ValueError(
                f"Attention distillation compares heads one to one, but the teacher has "
                f"{t_heads} heads and the student {s_heads}. Give the student {t_heads} heads, "
                "or use MiniLM's value relation (`MiniLMKD`, which allows different head counts)."
            )
        self.built = True

    def compute(self, teacher_outputs, student_outputs, labels=None, padding_mask=None,
                token_weights=None):
        fn = losses.attention_mse if self.loss == "mse" else losses.attention_kl
        total = 0.0
        for s, t in self.pairs:
            total += fn(teacher_outputs[ATTENTION_SCORES][t],
                        student_outputs[ATTENTION_SCORES][s], mask=padding_mask)
        return {self.term_names()[0]: (total, self.weight)}

    def get_config(self):
        config = super().get_config()
        config.pop("projection", None)
        config.update({"loss": self.loss})
        return config


def _default_relation_heads(teacher_heads, teacher_width, student_width):
    """The most relation heads, at most the teacher's head count, dividing both value widths."""
    common = math.gcd(teacher_width, student_width)
    return max(d for d in range(1, teacher_heads + 1) if common % d == 0)


@keras.saving.register_keras_serializable(package="kdistill")
class MiniLMKD(Objective):
    """MiniLM: the last layer's self-attention distribution and value relation, both as KL.

    Logged as `attention_kl` (needs equal head counts; skipped with `attention=False`) and
    `value_relation_kl` (values regrouped into `relation_heads`, so head counts and widths may
    differ, as in MiniLMv2).

    Args:
        weight: float >= 0.
        teacher_layer: int. Teacher layer to distil from (default: the last, -1).
        student_layer: int. Student layer (default: the last, -1).
        relation_heads: int or None. Heads for the value relation. Default: the teacher's head
            count, or, when that does not divide both value widths (a pruned 4 x 32 student of
            a 12 x 32 teacher), the largest count below it that does.
        attention: bool. Include the attention-distribution term.

    Example:
    >>> MiniLMKD().term_names()
    ['attention_kl', 'value_relation_kl']

    References:
        Wang et al. MiniLM. arXiv:2002.10957; MiniLMv2. arXiv:2012.15828.
    """

    student_taps = teacher_taps = (ATTENTION_SCORES, ATTENTION_VALUES)

    def __init__(self, weight=1.0, teacher_layer=-1, student_layer=-1, relation_heads=None,
                 attention=True, name="minilm", **kwargs):
        super().__init__(weight=weight, name=name, **kwargs)
        self.teacher_layer = int(teacher_layer)
        self.student_layer = int(student_layer)
        self.relation_heads = relation_heads
        self.attention = bool(attention)

    def build_for(self, teacher, student):
        for which, layer, taps in (("teacher", self.teacher_layer, teacher),
                                   ("student", self.student_layer, student)):
            n = taps.num_layers
            if not -n <= layer < n:
                raise ValueError(f"MiniLMKD: {which}_layer={layer} but the {which} has {n} layers.")
        t_shape = teacher.output_shapes()[ATTENTION_VALUES][self.teacher_layer]
        s_shape = student.output_shapes()[ATTENTION_VALUES][self.student_layer]
        heads = self.relation_heads or _default_relation_heads(
            t_shape[2], t_shape[2] * t_shape[3], s_shape[2] * s_shape[3])
        for which, shape in (("teacher", t_shape), ("student", s_shape)):
            width = shape[2] * shape[3]
            if width % heads:
                raise ValueError(
                    f"MiniLMKD: relation_heads={heads} does not divide the {which}'s value width "
                    f"{width}; pick a common divisor."
                )
        self._relation_heads = heads
        if self.attention and t_shape[2] != s_shape[2]:
            raise ValueError(
                f"MiniLMKD: the attention-distribution term needs equal head counts (teacher "
                f"{t_shape[2]}, student {s_shape[2]}); pass attention=False to use the value "
                "relation only."
            )
        self.built = True

    def term_names(self):
        return (["attention_kl"] if self.attention else []) + ["value_relation_kl"]

    def compute(self, teacher_outputs, student_outputs, labels=None, padding_mask=None,
                token_weights=None):
        t, s = self.teacher_layer, self.student_layer
        terms = {}
        if self.attention:
            terms["attention_kl"] = (losses.attention_kl(
                teacher_outputs[ATTENTION_SCORES][t], student_outputs[ATTENTION_SCORES][s],
                mask=padding_mask), self.weight)
        terms["value_relation_kl"] = (losses.value_relation_kl(
            teacher_outputs[ATTENTION_VALUES][t], student_outputs[ATTENTION_VALUES][s],
            relation_heads=self._relation_heads, mask=padding_mask), self.weight)
        return terms

    def get_config(self):
        config = super().get_config()
        config.update({"teacher_layer": self.teacher_layer, "student_layer": self.student_layer,
                       "relation_heads": self.relation_heads, "attention": self.attention})
        return config


@keras.saving.register_keras_serializable(package="kdistill")
class PKDHiddenKD(_LayerwiseObjective):
    """Patient KD: normalised `[CLS]` states of mapped layers, `Σ ‖h_t/‖h_t‖ - h_s/‖h_s‖‖²`.

    Logged as `pkd_loss`. A learnable projection maps widths when they differ.

    Args:
        layer_map: `"skip"` (PKD-Skip), `"last"` (PKD-Last), a list of pairs, or a `LayerMap`.
        weight: float >= 0 (the paper's β, typically 100-500).
        projection: as in `HiddenStateKD`.

    Example:
    >>> PKDHiddenKD(layer_map="last").term_names()
    ['pkd_loss']

    References:
        Sun et al. Patient Knowledge Distillation for BERT Model Compression. arXiv:1908.09355.
    """

    student_taps = teacher_taps = (HIDDEN_STATES,)

    def __init__(self, layer_map="skip", weight=100.0, projection="auto", name="pkd", **kwargs):
        super().__init__(layer_map=layer_map, weight=weight, projection=projection, name=name,
                         **kwargs)

    build_for = _LayerwiseObjective._build_hidden_map


    def compute(self, teacher_outputs, student_outputs, labels=None, padding_mask=None,
                token_weights=None):
        total = 0.0
        for i, (s, t) in enumerate(self.pairs):
            student_h = self._project(student_outputs[HIDDEN_STATES][s], i)
            total += losses.pkd_normalized_mse(teacher_outputs[HIDDEN_STATES][t], student_h)
        return {self.term_names()[0]: (total, self.weight)}


# ------------------------------------------------------------------------------------ presets

def logits_kd(temperature=2.0, alpha=0.5):
    """Preset: Hinton KD on logits (the `Distiller`'s default objective).

    `L = alpha · CE(y, s) + (1 - alpha) · T² · KL(softmax(t/T) ‖ softmax(s/T))`.

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


def tinybert(prediction_weight=1.0, attention_weight=1.0, hidden_weight=1.0,
             embedding_weight=None, temperature=1.0, alpha=0.0, layer_map=None, prediction=True,
             intermediate=True):
    """Preset: TinyBERT, `L = w_pred·L_pred + w_att·L_att + w_hidden·L_hidden + w_embd·L_embd`.

    `L_pred` is the soft cross-entropy (as `T²`-scaled KL) of the logits, mixed with the
    hard-label loss by `alpha` as in `LogitsKD`: `L_pred = alpha·CE + (1 - alpha)·T²·KL`
    (TinyBERT itself uses soft targets only, `alpha=0`). `L_att` is the attention MSE and
    `L_hidden` the hidden-state MSE over the mapped layers (`uniform` by default:
    g(m) = m·N/M), `L_embd` the embedding MSE. The paper weighs every term 1. TinyBERT's two
    steps of task distillation are `prediction=False` (intermediate layers only) then
    `intermediate=False` (prediction layer only); general distillation on an unlabelled corpus
    uses `prediction=False`.

    Args:
        prediction_weight: float >= 0. Weight of the prediction-layer loss `L_pred`.
        attention_weight: float >= 0. Weight of the attention loss.
        hidden_weight: float >= 0. Weight of the hidden-state loss.
        embedding_weight: float >= 0. Weight of the embedding loss (default: `hidden_weight`).
        temperature: float > 0. Temperature of the prediction loss (TinyBERT uses 1).
        alpha: float in [0, 1]. Weight of the hard-label cross-entropy within `L_pred` (the
            `alpha` of `LogitsKD` and `Distiller`).
        layer_map: mapping for attention and hidden losses (see `kdistill.mapping.LayerMap`).
        prediction: bool. Include `L_pred`.
        intermediate: bool. Include the attention, hidden and embedding losses.

    Returns:
        A list of objectives.

    Example:
    >>> [o.name for o in tinybert()]
    ['logits_kd', 'attention', 'hidden', 'embedding']
    >>> kd = tinybert(prediction_weight=2.0, alpha=0.5, intermediate=False)[0]
    >>> kd.weight, kd.alpha
    (2.0, 0.5)

    References:
        Jiao et al. TinyBERT: Distilling BERT for Natural Language Understanding. arXiv:1909.10351.
    """
    alpha = check_fraction("alpha", alpha)
    objectives = []
    if prediction:
        objectives.append(LogitsKD(temperature=temperature, alpha=alpha,
                                   weight=prediction_weight))
    if intermediate:
        objectives += [
            AttentionKD(layer_map=layer_map, weight=attention_weight),
            HiddenStateKD(layer_map=layer_map, weight=hidden_weight),
            EmbeddingKD(weight=hidden_weight if embedding_weight is None else embedding_weight),
        ]
    if not objectives:
        raise ValueError("tinybert(): prediction and intermediate are both False; nothing to do.")
    return objectives


def distilbert(kd_weight=5.0, mlm_weight=2.0, cosine_weight=1.0, temperature=2.0):
    """Preset: DistilBERT, `L = kd_weight·L_ce + mlm_weight·L_mlm + cosine_weight·L_cos`.

    `L_ce`: `T²`-scaled KL between the teacher's and student's (masked-LM or class) logits;
    `L_mlm`: the hard-label cross-entropy on the same logits (masked-LM labels, or class labels
    for a classifier); `L_cos`: cosine loss between the last hidden states. Defaults are the
    paper's weights (its `α_ce, α_mlm, α_cos` = 5, 2, 1) and `T = 2`. These are three absolute
    loss weights, so none is named `alpha`: the equivalent `LogitsKD` has
    `alpha = mlm_weight / (kd_weight + mlm_weight)` and `weight = kd_weight + mlm_weight`. Pairs
    with a student made by `kdistill.students.from_teacher` (same width, every other layer).

    Args:
        kd_weight: float >= 0. Weight of the soft-target loss (the paper's `α_ce`).
        mlm_weight: float >= 0. Weight of the hard-label loss (the paper's `α_mlm`).
        cosine_weight: float >= 0. Weight of the cosine hidden-state loss (the paper's `α_cos`).
        temperature: float > 0.

    Returns:
        A list of objectives.

    Example:
    >>> [o.name for o in distilbert()]
    ['logits_kd', 'cosine']
    >>> kd = distilbert(kd_weight=3.0, mlm_weight=1.0)[0]
    >>> kd.weight, kd.alpha
    (4.0, 0.25)

    References:
        Sanh et al. DistilBERT, a distilled version of BERT. arXiv:1910.01108.
    """
    total = check_weight(kd_weight) + check_weight(mlm_weight)
    if total <= 0:
        raise ValueError(
            f"distilbert(): kd_weight + mlm_weight must be > 0, got {kd_weight} + {mlm_weight}.")
    return [
        LogitsKD(temperature=temperature, alpha=mlm_weight / total, weight=total),
        _LastHiddenCosine(weight=cosine_weight),
    ]


@keras.saving.register_keras_serializable(package="kdistill")
class _LastHiddenCosine(HiddenStateKD):
    """DistilBERT's cosine loss between the last hidden states (logged as `cosine_loss`)."""

    def __init__(self, weight=1.0, name="cosine", **kwargs):
        kwargs.pop("layer_map", None)
        kwargs.pop("loss", None)
        super().__init__(layer_map=None, weight=weight, loss="cosine", name=name, **kwargs)

    def _resolve_map(self, teacher, student):
        self.pairs = ((student.num_layers - 1, teacher.num_layers - 1),)

    def get_config(self):
        config = super().get_config()
        config.pop("layer_map", None)
        config.pop("loss", None)
        return config


def minilm(weight=1.0, relation_heads=None, attention=True, temperature=1.0,
           prediction_weight=0.0, alpha=0.0):
    """Preset: MiniLM, last-layer self-attention distribution + value relation (both KL).

    Task-agnostic by design; `prediction_weight > 0` adds logits KD for task distillation,
    `prediction_weight · (alpha·CE + (1 - alpha)·T²·KL)` as in `LogitsKD`.

    Args:
        weight: float >= 0. Weight of both MiniLM terms.
        relation_heads: int. Heads for the value relation (default: see `MiniLMKD`).
        attention: bool. Include the attention-distribution term (needs equal head counts).
        temperature: float > 0. For the optional prediction term.
        prediction_weight: float >= 0. Weight of the optional logits KD term.
        alpha: float in [0, 1]. Weight of the hard-label cross-entropy within the prediction
            term (the `alpha` of `LogitsKD`); used only with `prediction_weight > 0`.

    Returns:
        A list of objectives.

    Example:
    >>> [o.name for o in minilm(prediction_weight=1.0)]
    ['minilm', 'logits_kd']

    References:
        Wang et al. MiniLM. arXiv:2002.10957.
    """
    alpha = check_fraction("alpha", alpha)
    objectives = [MiniLMKD(weight=weight, relation_heads=relation_heads, attention=attention)]
    if prediction_weight:
        objectives.append(LogitsKD(temperature=temperature, alpha=alpha,
                                   weight=prediction_weight))
    return objectives


def pkd(alpha=0.5, beta=100.0, temperature=5.0, layer_map="skip"):
    """Preset: Patient KD, `L = alpha·CE + (1 - alpha)·T²·KL + β·L_pt`.

    `alpha` is the hard-label weight, as everywhere in kdistill. The paper writes
    `(1 - α)·L_ce + α·L_ds` with `α` on the soft targets: its `α` is `1 - alpha` here.

    Args:
        alpha: float in [0, 1]. Weight of the hard-label cross-entropy (the soft-target term
            gets `1 - alpha`).
        beta: float >= 0. Weight of the patient (normalised `[CLS]` state) loss (the paper's β).
        temperature: float > 0.
        layer_map: `"skip"` (PKD-Skip) or `"last"` (PKD-Last) or explicit pairs.

    Returns:
        A list of objectives.

    Example:
    >>> kd, patient = pkd(alpha=0.3, layer_map="last")
    >>> kd.alpha, patient.name, patient.weight
    (0.3, 'pkd', 100.0)

    References:
        Sun et al. Patient Knowledge Distillation for BERT Model Compression. arXiv:1908.09355.
    """
    return [LogitsKD(temperature=temperature, alpha=alpha),
            PKDHiddenKD(layer_map=layer_map, weight=beta)]


PRESETS = {"logits_kd": logits_kd, "tinybert": tinybert, "distilbert": distilbert,
           "minilm": minilm, "pkd": pkd}
