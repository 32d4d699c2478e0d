"""Several teachers, one student: a `MultiTeacher` model and its `MultiTeacherKD` objective.

`MultiTeacher([teacher_a, teacher_b, ...], weights=[...])` is a frozen functional keras.Model
that runs every teacher on the same inputs and outputs their logits stacked as
`[batch, num_teachers, classes]`. The `Distiller` takes it as its teacher and distils it with
`MultiTeacherKD` (its default objective), in one of two modes:

- `mode="average"`: one soft target per example, the weighted average of the teachers' **tempered
  probabilities** `p̄ = Σ_i w_i softmax(z_i / T)`, and Hinton's loss
  `alpha · CE + (1 - alpha) · T² · KL(p̄ ‖ softmax(s / T))`, logged as `kd_loss`.
- `mode="per_teacher"`: one KD term per teacher, `T² · KL(softmax(z_i / T) ‖ softmax(s / T))`,
  logged as `kd_loss_<teacher name>` and weighted by `(1 - alpha) · w_i`; `kd_loss` then logs
  their weighted sum (for display; it does not count twice).

Why average probabilities and not logits: the probability average is the ensemble's own
predictive distribution (a mixture), a proper target whose spread shows where the teachers
disagree, and it does not depend on each teacher's logit scale. Averaging logits takes a
normalised geometric mean instead: a teacher with larger logits (sharper, or just differently
trained) dominates, and disagreement turns into false confidence. Teachers are weighted as
mixture components, so the weights are normalised to sum to 1.

Teachers may differ in architecture (keras-hub BERT, DistilBERT, a functional MLP...) but must
produce the same number of classes and read the same inputs: dict inputs are merged by name (a
DistilBERT without `segment_ids` is fine next to a BERT with them) and inputs with the same name
must agree in dtype and shape. A MultiTeacher only provides logits: intermediate-layer objectives
(hidden states, attention) are refused, since there is no single teacher layer to match.
"""

import keras
from keras import ops

from kdistill import losses
from kdistill.objectives import LogitsKD
from kdistill.taps import LOGITS

__all__ = ["MultiTeacher", "MultiTeacherKD", "mixture_logits"]


def mixture_logits(member_logits, weights, temperature=1.0):
    """Logits whose tempered softmax is the weighted average of the members' tempered softmaxes.

    Returns `T · log Σ_i w_i softmax(z_i / T)` (computed with `logsumexp`, so it stays finite),
    which satisfies `softmax(result / T) = Σ_i w_i softmax(z_i / T)` exactly.

    Args:
        member_logits: float tensor `[batch, members, ...classes]`.
        weights: sequence of floats >= 0 summing to 1, one per member.
        temperature: float or scalar tensor > 0.

    Returns:
        float32 tensor `[batch, ...classes]`.

    Example:
    >>> import numpy as np
    >>> z = np.array([[[4.0, 0.0], [0.0, 4.0]]])   # two members that disagree
    >>> ops.softmax(mixture_logits(z, [0.5, 0.5])).numpy().round(3)
    array([[0.5, 0.5]], dtype=float32)
    """
    temperature = ops.cast(temperature, "float32")
    z = ops.cast(member_logits, "float32") / temperature
    log_w = ops.log(ops.convert_to_tensor([float(w) for w in weights], "float32"))
    shape = [1, len(weights)] + [1] * (len(z.shape) - 2)
    # The weights go on the left: Keras 3.15's `ops.add(x, b)` (used for `KerasTensor + b`)
    # treats a `[1, K, 1]` right operand as a channel bias and adds it along the last axis
    # when K equals the number of classes.
    log_p = ops.reshape(log_w, shape) + ops.log_softmax(z, axis=-1)
    return temperature * ops.logsumexp(log_p, axis=1)


class _Mixture(keras.layers.Layer):
    """`mixture_logits` as a layer, so it runs on real tensors inside a functional model."""

    def __init__(self, weights, **kwargs):
        super().__init__(**kwargs)
        self.mixture_weights = [float(w) for w in weights]

    def call(self, member_logits):
        return mixture_logits(member_logits, self.mixture_weights)

    def compute_output_shape(self, shape):
        return shape[:1] + shape[2:]

    def get_config(self):
        config = super().get_config()
        config.update({"weights": self.mixture_weights})
        return config


def _input_struct(model):
    struct = getattr(model, "_inputs_struct", None)
    if struct is None:
        inputs = getattr(model, "inputs", None) or []
        struct = inputs[0] if len(inputs) == 1 else None
    if struct is None:
        raise ValueError(
            f"MultiTeacher: the teacher {model.name!r} ({type(model).__name__}) has no defined "
            "inputs (a subclassed model?). Build it with the functional API or `keras.Input` so "
            "all teachers can be wired to the same inputs."
        )
    return struct


def _spec(tensor):
    return tuple(tensor.shape[1:]), str(tensor.dtype)


def _merge_shapes(a, b):
    if len(a) != len(b):
        return None
    merged = []
    for x, y in zip(a, b):
        if x is not None and y is not None and x != y:
            return None
        merged.append(x if x is not None else y)
    return tuple(merged)


def _merged_inputs(teachers):
    """One `keras.Input` per input name shared by the teachers (or one tensor input)."""
    structs = [_input_struct(t) for t in teachers]
    kinds = {isinstance(s, dict) for s in structs}
    if len(kinds) > 1:
        raise ValueError(
            "MultiTeacher: the teachers must read the same inputs, but some take a dict of named "
            "inputs and others a single tensor: "
            + ", ".join(f"{t.name!r}: {'dict' if isinstance(s, dict) else 'tensor'}"
                        for t, s in zip(teachers, structs)) + "."
        )
    if not isinstance(structs[0], dict):
        for s in structs:
            if not hasattr(s, "shape"):
                raise ValueError("MultiTeacher: teachers with several positional inputs are not "
                                 "supported; use named (dict) inputs.")
        specs = {"": []}
        for teacher, s in zip(teachers, structs):
            specs[""].append((teacher.name, _spec(s)))
    else:
        specs = {}
        for teacher, s in zip(teachers, structs):
            for key, tensor in s.items():
                specs.setdefault(key, []).append((teacher.name, _spec(tensor)))
    inputs = {}
    for key, seen in specs.items():
        shape, dtype = seen[0][1]
        for _, (other_shape, other_dtype) in seen[1:]:
            merged = _merge_shapes(shape, other_shape)
            if merged is None or other_dtype != dtype:
                label = f"input {key!r}" if key else "input"
                raise ValueError(
                    f"MultiTeacher: the teachers disagree on the {label}: "
                    + ", ".join(f"{name!r} takes shape {(None, *shp)} {dt}"
                                for name, (shp, dt) in seen)
                    + ". All teachers must read the same tensors (same tokenizer and sequence "
                    "length, same dtypes)."
                )
            shape = merged
        inputs[key] = keras.Input(shape=shape, dtype=dtype, name=key or None)
    if "" in inputs:
        return inputs[""], structs
    return inputs, structs


def _normalised_weights(weights, count):
    if weights is None:
        return [1.0 / count] * count
    weights = [float(w) for w in weights]
    if len(weights) != count:
        raise ValueError(f"MultiTeacher: {len(weights)} weights for {count} teachers; give one "
                         "weight per teacher.")
    if any(not w >= 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"MultiTeacher: weights must be >= 0 with a positive sum, got {weights}.")
    return [w / sum(weights) for w in weights]


@keras.saving.register_keras_serializable(package="kdistill")
class MultiTeacher(keras.Model):
    """Several frozen teachers on the same inputs, as one teacher for the `Distiller`.

    Outputs every teacher's logits stacked as `[batch, num_teachers, classes]`. The Distiller
    distils it with `MultiTeacherKD` by default (averaged tempered probabilities); fidelity
    metrics (`kdistill.metrics`) compare the student with the ensemble
    (`ensemble_logits`). `ensemble_model()` gives a plain classifier of the ensemble, for
    `evaluate`/`predict`. Only logits are available (no intermediate-layer objectives).

    Args:
        teachers: list of built functional keras.Models producing logits `[batch, classes]`
            (all with the same number of classes) from the same inputs. Frozen.
        weights: list of floats >= 0, one per teacher (normalised to sum to 1). Default: equal.
        name: str. Model name.

    Example:
    >>> import kdistill
    >>> from kdistill.testing import tiny_mlp
    >>> teacher = MultiTeacher([tiny_mlp(hidden=16, name="a"), tiny_mlp(hidden=32, name="b")],
    ...                        weights=[3, 1])
    >>> teacher.output_shape, teacher.teacher_weights
    ((None, 2, 3), (0.75, 0.25))
    >>> distiller = kdistill.Distiller(teacher, tiny_mlp(name="student"), temperature=4.0)
    >>> [type(o).__name__ for o in distiller.objectives]
    ['MultiTeacherKD']
    """

    supported_taps = (LOGITS,)

    def __init__(self, teachers, weights=None, name="multi_teacher", **kwargs):
        kwargs.pop("trainable", None)
        teachers = list(teachers)
        if not teachers:
            raise ValueError("MultiTeacher: give at least one teacher.")
        for teacher in teachers:
            if not isinstance(teacher, keras.Model) or not teacher.built:
                raise ValueError(
                    f"MultiTeacher: every teacher must be a built keras.Model, got "
                    f"{getattr(teacher, 'name', type(teacher).__name__)!r}. Call it once on a "
                    "batch or build it with keras.Input."
                )
        if len({id(t) for t in teachers}) != len(teachers):
            raise ValueError("MultiTeacher: the same model object is listed twice.")
        names = [t.name for t in teachers]
        if len(set(names)) != len(names):
            raise ValueError(
                f"MultiTeacher: teacher names must be unique (they name the logged per-teacher "
                f"terms), got {names}. Pass name= when building each teacher."
            )
        counts = {}
        for teacher in teachers:
            outputs = getattr(teacher, "outputs", None) or []
            if len(outputs) != 1 or len(outputs[0].shape) < 2:
                raise ValueError(
                    f"MultiTeacher: the teacher {teacher.name!r} must have one logits output "
                    f"[batch, classes]; it has outputs {[tuple(o.shape) for o in outputs]}."
                )
            counts[teacher.name] = tuple(outputs[0].shape[1:])
        if len(set(counts.values())) > 1:
            raise ValueError(
                "MultiTeacher: the teachers must share the label space, but their logits have "
                + ", ".join(f"{n!r}: {s[-1]} classes" + (f" (shape {s})" if len(s) > 1 else "")
                            for n, s in counts.items())
                + ". Give every teacher a head over the same classes, in the same order."
            )
        normalised = _normalised_weights(weights, len(teachers))

        # --- the functional graph: every teacher on (its part of) the shared inputs
        inputs, structs = _merged_inputs(teachers)
        logits = []
        for teacher, struct in zip(teachers, structs):
            own = {k: inputs[k] for k in struct} if isinstance(struct, dict) else inputs
            logits.append(ops.cast(teacher(own, training=False), "float32"))
        outputs = ops.stack(logits, axis=1)
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)

        # --- config
        self.teachers = teachers
        self._weights_arg = None if weights is None else [float(w) for w in weights]
        self.teacher_weights = tuple(normalised)
        self.trainable = False

    def call(self, inputs, training=None, mask=None):
        # Keras 3.15 maps a dict with extra keys onto a functional model's inputs by position,
        # with only a warning: keep the teachers' keys.
        if isinstance(inputs, dict) and isinstance(self._inputs_struct, dict):
            inputs = {k: inputs[k] for k in self._inputs_struct}
        return super().call(inputs, training=training, mask=mask)

    @property
    def num_classes(self):
        """Number of classes of every teacher."""
        return self.output_shape[-1]

    def ensemble_logits(self, member_logits, temperature=1.0):
        """Logits of the ensemble's averaged tempered probabilities (see `mixture_logits`).

        Args:
            member_logits: this model's output, `[batch, num_teachers, classes]`.
            temperature: float > 0.

        Returns:
            float32 tensor `[batch, classes]`.
        """
        return mixture_logits(member_logits, self.teacher_weights, temperature)

    def ensemble_model(self, name=None):
        """A keras.Model (same weights) whose output is the ensemble's logits at `T = 1`.

        Its softmax is the weighted average of the teachers' probabilities; use it to
        `evaluate` the ensemble like any classifier.
        """
        mixture = _Mixture(self.teacher_weights, name="mixture", dtype="float32")
        return keras.Model(self._inputs_struct, mixture(self.outputs[0]),
                           name=name or f"{self.name}_ensemble")

    def default_objectives(self, temperature=2.0, alpha=0.5):
        """The Distiller's default objective for this teacher: averaged soft targets."""
        return [MultiTeacherKD(temperature=temperature, alpha=alpha)]

    def get_config(self):
        return {
            "name": self.name,
            "teachers": [keras.saving.serialize_keras_object(t) for t in self.teachers],
            "weights": self._weights_arg,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        teachers = [keras.saving.deserialize_keras_object(t, custom_objects)
                    for t in config.pop("teachers")]
        return cls(teachers=teachers, **config)


@keras.saving.register_keras_serializable(package="kdistill")
class MultiTeacherKD(LogitsKD):
    """Hinton KD from a `MultiTeacher`: averaged soft targets, or one KD term per teacher.

    `mode="average"`: `alpha · CE + (1 - alpha) · T² · KL(Σ_i w_i softmax(z_i/T) ‖ softmax(s/T))`,
    logged as `student_loss` and `kd_loss`. `mode="per_teacher"`:
    `alpha · CE + (1 - alpha) · Σ_i w_i · T² · KL(softmax(z_i/T) ‖ softmax(s/T))`, each teacher's
    term logged as `kd_loss_<teacher name>` and their weighted sum as `kd_loss`. The two modes
    differ: KL is convex, so the per-teacher sum is never below the averaged-target KL, and it
    pulls the student towards every teacher's own distribution rather than towards their mixture.
    `temperature` and `alpha` are variables, so `kdistill.callbacks.KDScheduler` anneals them as
    for `LogitsKD`. Without labels the loss is pure KD.

    Args:
        temperature: float > 0. Softmax temperature `T`.
        alpha: float in [0, 1]. Weight of the hard-label cross-entropy.
        weight: float >= 0. Multiplies every term.
        mode: `"average"` or `"per_teacher"`.
        name: str. Prefix of the logged term names (none for the default `logits_kd`).

    Example:
    >>> MultiTeacherKD(mode="per_teacher").mode
    'per_teacher'

    References:
        Hinton, Vinyals, Dean. Distilling the Knowledge in a Neural Network. arXiv:1503.02531.
        You, Xu, Xu, Tao. Learning from Multiple Teacher Networks. KDD 2017.
    """

    def __init__(self, temperature=2.0, alpha=0.5, weight=1.0, mode="average", name="logits_kd",
                 **kwargs):
        super().__init__(temperature=temperature, alpha=alpha, weight=weight, name=name, **kwargs)
        if mode not in ("average", "per_teacher"):
            raise ValueError(f"MultiTeacherKD: mode must be 'average' or 'per_teacher', got "
                             f"{mode!r}.")
        self.mode = mode
        self._teacher_names = None
        self._member_weights = None

    def _teacher_logits_shape(self, teacher):
        model = getattr(teacher, "model", None)
        if not isinstance(model, MultiTeacher):
            raise ValueError(
                f"MultiTeacherKD distils a kdistill.MultiTeacher, but the teacher is "
                f"{getattr(model, 'name', model)!r} ({type(model).__name__}). For one teacher "
                "use LogitsKD."
            )
        self._teacher_names = [t.name for t in model.teachers]
        self._member_weights = model.teacher_weights
        shape = teacher.output_shapes()[LOGITS]
        return shape[:1] + shape[2:]

    def term_names(self):
        names = super().term_names()
        if self.mode == "per_teacher":
            if self._teacher_names is None:
                raise ValueError("MultiTeacherKD(mode='per_teacher') names its terms after the "
                                 "teachers: they are known once a Distiller has built it.")
            names += [self._term(f"kd_loss_{n}") for n in self._teacher_names]
        return names

    def compute(self, teacher_outputs, student_outputs, labels=None, padding_mask=None,
                token_weights=None):
        members = teacher_outputs[LOGITS]
        if self.mode == "average":
            target = mixture_logits(members, self._member_weights, self._temperature_var)
            return super().compute({LOGITS: target}, student_outputs, labels=labels,
                                   padding_mask=padding_mask, token_weights=token_weights)
        # Hard-label term and the weight of the soft terms from LogitsKD (first teacher's KL is
        # replaced below by the weighted sum, logged only).
        terms = super().compute({LOGITS: members[:, 0]}, student_outputs, labels=labels,
                                padding_mask=padding_mask, token_weights=token_weights)
        kd_name = self._term("kd_loss")
        _, kd_weight = terms[kd_name]
        s = student_outputs[LOGITS]
        mask = None
        if len(s.shape) == 3:  # token-level logits, as in LogitsKD
            mask = token_weights if token_weights is not None else padding_mask
        total = 0.0
        for i, (name, w) in enumerate(zip(self._teacher_names, self._member_weights)):
            kl = losses.kl_divergence(members[:, i], s, self._temperature_var, mask=mask)
            terms[self._term(f"kd_loss_{name}")] = (kl, kd_weight * w)
            total += w * kl
        terms[kd_name] = (total, 0.0)  # displayed, not added: the per-teacher terms are
        return terms

    def get_config(self):
        config = super().get_config()
        config.update({"mode": self.mode})
        return config

