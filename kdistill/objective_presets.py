"""Objective presets: the published recipes (Hinton KD, TinyBERT, DistilBERT, MiniLM, PKD).

Each preset is a function returning a list of objectives for `kdistill.Distiller`; `PRESETS` maps
the names a config file uses to them. `alpha` is the hard-label weight in every preset, as in
`LogitsKD`; absolute weights of whole terms are `<term>_weight` (`prediction_weight`,
`hidden_weight`, ...); `pkd`'s `beta` keeps the paper's name.
"""

import keras

from kdistill.layer_objectives import (
    AttentionKD,
    EmbeddingKD,
    HiddenStateKD,
    MiniLMKD,
    PKDHiddenKD,
)
from kdistill.logits_kd import LogitsKD
from kdistill.objective import check_fraction, check_weight


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
