"""Distillation objectives: what is matched to what, with which loss and weight.

An objective names the teacher taps and student taps it reads, owns any learnable projection it
needs (built once, when the `Distiller` is constructed, so the optimizer tracks it), and returns
one or more named terms, each a per-example loss with its weight. The `Distiller` adds the weighted
terms into the training loss and logs every term under its name.

This module gathers every objective and preset under one name (`from kdistill import objectives;
objectives.LogitsKD`, `objectives.PRESETS`); each is defined in the module of its concept:

- `kdistill.objective`: the `Objective` base class and the argument checks
  (`check_temperature`, `check_fraction`, `check_weight`);
- `kdistill.logits_kd`: `LogitsKD`, Hinton KD on the logits (the `Distiller`'s default);
- `kdistill.layer_objectives`: `HiddenStateKD`, `EmbeddingKD`, `AttentionKD`, `MiniLMKD`,
  `PKDHiddenKD` (the encoders' inner layers);
- `kdistill.objective_presets`: `logits_kd`, `tinybert`, `distilbert`, `minilm`, `pkd` and
  `PRESETS` (the published recipes).

`alpha` has one meaning everywhere (`LogitsKD`, every preset, `Distiller(alpha=)`,
`kdistill.callbacks.KDScheduler`): the weight in [0, 1] of the hard-label cross-entropy inside a
logits term, `alpha·CE + (1 - alpha)·T²·KL`. Absolute weights of whole terms are `weight` on an
objective and `<term>_weight` on a preset (`prediction_weight`, `hidden_weight`, ...); `pkd`'s
`beta` keeps the paper's name.

Example:
>>> from kdistill import objectives
>>> sorted(objectives.PRESETS)
['distilbert', 'logits_kd', 'minilm', 'pkd', 'tinybert']
>>> [type(o).__name__ for o in objectives.PRESETS["tinybert"](intermediate=False)]
['LogitsKD']
"""

from kdistill.layer_objectives import (
    AttentionKD,
    EmbeddingKD,
    HiddenStateKD,
    MiniLMKD,
    PKDHiddenKD,
)
from kdistill.logits_kd import LogitsKD
from kdistill.objective import Objective, check_fraction, check_temperature, check_weight
from kdistill.objective_presets import PRESETS, distilbert, logits_kd, minilm, pkd, tinybert

__all__ = [
    "PRESETS",
    "AttentionKD",
    "EmbeddingKD",
    "HiddenStateKD",
    "LogitsKD",
    "MiniLMKD",
    "Objective",
    "PKDHiddenKD",
    "check_fraction",
    "check_temperature",
    "check_weight",
    "distilbert",
    "logits_kd",
    "minilm",
    "pkd",
    "tinybert",
]
