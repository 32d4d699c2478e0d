"""Layer mapping: which student layer learns from which teacher layer.

Layers are 0-based encoder layer indices (`hidden_states[i]` is the output of layer `i`). The
embedding output is matched separately (`EmbeddingKD`).
"""

import keras

STRATEGIES = ("uniform", "skip", "last", "first")


@keras.saving.register_keras_serializable(package="kdistill")
class LayerMap:
    """A list of `(student_layer, teacher_layer)` pairs, checked against both models' depths.

    Args:
        spec: str or list. `"uniform"` (TinyBERT: student layer `m` ↔ teacher layer `m·N/M`,
            1-based, i.e. the last layer of each block of N/M), `"skip"` (DistilBERT-style:
            teacher layers `0, k, 2k, ...` with `k = N // M`), `"last"` (PKD-Last: the student's
            layers ↔ the teacher's last M), `"first"`, or an explicit list of
            `(student_layer, teacher_layer)` pairs (0-based).
        student_layers: int. Student depth M (set by `resolve` when not given).
        teacher_layers: int. Teacher depth N.

    Example:
    >>> LayerMap("uniform", student_layers=4, teacher_layers=12).pairs
    ((0, 2), (1, 5), (2, 8), (3, 11))
    >>> LayerMap([(0, 1), (1, 3)], student_layers=2, teacher_layers=4).pairs
    ((0, 1), (1, 3))
    """

    def __init__(self, spec="uniform", student_layers=None, teacher_layers=None):
        if isinstance(spec, LayerMap):
            spec = spec.spec
        if isinstance(spec, str):
            if spec not in STRATEGIES:
                raise ValueError(
                    f"Unknown layer mapping {spec!r}; use one of {list(STRATEGIES)} or a list "
                    "of (student_layer, teacher_layer) pairs."
                )
        else:
            try:
                spec = tuple((int(s), int(t)) for s, t in spec)
            except (TypeError, ValueError):
                raise ValueError(
                    f"A layer mapping list must hold (student_layer, teacher_layer) pairs of "
                    f"ints, got {spec!r}."
                ) from None
            if not spec:
                raise ValueError("The layer mapping list is empty; give at least one pair.")
        self.spec = spec
        self.student_layers = student_layers
        self.teacher_layers = teacher_layers
        self.pairs = None
        if student_layers is not None and teacher_layers is not None:
            self.pairs = self._pairs(student_layers, teacher_layers)

    def _pairs(self, m, n):
        if m < 1 or n < 1:
            raise ValueError(f"Both models need encoder layers (student {m}, teacher {n}).")
        if isinstance(self.spec, tuple):
            pairs = self.spec
        elif m > n and self.spec != "first":
            raise ValueError(
                f"The student has more layers ({m}) than the teacher ({n}); give an explicit "
                "list of (student_layer, teacher_layer) pairs."
            )
        elif self.spec == "uniform":
            pairs = tuple((i, (i + 1) * n // m - 1) for i in range(m))
        elif self.spec == "skip":
            k = n // m
            pairs = tuple((i, i * k) for i in range(m))
        elif self.spec == "last":
            pairs = tuple((i, n - m + i) for i in range(m))
        else:  # first
            pairs = tuple((i, i) for i in range(min(m, n)))
        for s, t in pairs:
            if not 0 <= s < m:
                raise ValueError(
                    f"Layer mapping names student layer {s}, but the student has {m} layers "
                    f"(0..{m - 1})."
                )
            if not 0 <= t < n:
                raise ValueError(
                    f"Layer mapping names teacher layer {t}, but the teacher has {n} layers "
                    f"(0..{n - 1})."
                )
        return pairs

    def resolve(self, student_layers, teacher_layers):
        """Returns a `LayerMap` with pairs checked for these depths (raises `ValueError`)."""
        return LayerMap(self.spec, student_layers, teacher_layers)

    def get_config(self):
        spec = self.spec if isinstance(self.spec, str) else [list(p) for p in self.spec]
        return {"spec": spec, "student_layers": self.student_layers,
                "teacher_layers": self.teacher_layers}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"LayerMap({self.spec!r}, pairs={self.pairs})"


def default_strategy(student_layers, teacher_layers):
    """The mapping used when none is given: `uniform` (TinyBERT), `first` for equal depths.

    Example:
    >>> default_strategy(4, 12), default_strategy(6, 6)
    ('uniform', 'first')
    """
    return "first" if student_layers == teacher_layers else "uniform"
