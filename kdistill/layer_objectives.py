"""Objectives on the encoders' inner layers: hidden states, embeddings, attention, values.

`HiddenStateKD`, `EmbeddingKD` and `AttentionKD` are TinyBERT's intermediate-layer losses,
`PKDHiddenKD` Patient KD's normalised `[CLS]` states and `MiniLMKD` MiniLM's last-layer
attention distribution and value relation. A layer map (`kdistill.mapping.LayerMap`) says which
student layer learns from which teacher layer; where widths differ a learnable projection maps
the student's states to the teacher's width (it trains with the student and is never exported).
"""

import math

import keras

from kdistill import losses
from kdistill.mapping import LayerMap, default_strategy
from kdistill.objective import Objective
from kdistill.taps import ATTENTION_SCORES, ATTENTION_VALUES, EMBEDDINGS, HIDDEN_STATES


def _last_dim(shape):
    return None if shape is None else shape[-1]


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

