"""The Distiller: a `keras.Model` that trains a student to match a frozen teacher, with `fit`."""

import math
import os

import keras
import numpy as np
import tensorflow as tf
from keras.src.trainers.data_adapters import data_adapter_utils

from kdistill import input_checks
from kdistill import metrics as metrics_lib
from kdistill import objectives as objectives_lib
from kdistill.cached_teacher import CachedTeacher
from kdistill.paired_inputs import STUDENT, check_paired_objectives, is_paired, split_inputs
from kdistill.taps import LOGITS, TAP_NAMES, build_taps
from kdistill.training_state import check_finite_weights


class _StopOnNonFinite(keras.callbacks.Callback):
    """Raises `FloatingPointError` as soon as the logged loss is NaN or Inf.

    Checked on the host from the step's logs, so it also works under XLA (`jit_compile`, the
    default on GPU/TPU), where in-graph `check_numerics` and assertions are compiled away. The
    step itself was not applied (`Distiller.train_step` skips non-finite updates and logs their
    loss as NaN), so the student keeps the weights it had before it.
    """

    def __init__(self):
        super().__init__()
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if not logs or "loss" not in logs:
            return
        if math.isfinite(float(logs["loss"])):
            return
        terms = ", ".join(f"{k}={float(v):.4g}" for k, v in sorted(logs.items()))
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)) + 1
        raise FloatingPointError(
            f"kdistill: the distillation loss or its gradients are NaN or Inf at epoch "
            f"{self._epoch + 1}, batch {batch + 1} (optimizer step {step}; {terms}). That update "
            "was not applied: the student keeps its finite weights from before it. Likely causes: "
            "a learning rate too high (lower it, or use optimizer clipnorm=1.0), a temperature "
            "too small for the logits, NaN/Inf in the inputs or teacher targets, or, under XLA "
            "(jit_compile), labels outside [0, num_classes)."
        )


def _finite_on_every_replica(loss, gradients):
    """A scalar bool: the loss and every gradient are finite on **all** replicas.

    The count of replicas that saw a non-finite value is summed across replicas, so every replica
    takes the same decision about the update.
    """
    values = [loss] + [g.values if isinstance(g, tf.IndexedSlices) else g for g in gradients]
    local = tf.reduce_all(tf.stack([tf.reduce_all(tf.math.is_finite(v)) for v in values]))
    bad_replicas = tf.distribute.get_replica_context().all_reduce(
        tf.distribute.ReduceOp.SUM, 1.0 - tf.cast(local, tf.float32)
    )
    return bad_replicas < 0.5


def _apply_if(finite, optimizer, gradients, variables):
    """`optimizer.apply(gradients, variables)` only when `finite` (the same on every replica).

    The same pattern as `keras.optimizers.LossScaleOptimizer`: strategies that need `merge_call`
    (MirroredStrategy) cannot run a `cond` whose branch calls it in a replica context, so the
    `cond` is taken in the cross-replica context, and the update runs on each replica inside it.
    """
    def skip():
        return None

    if tf.__internal__.distribute.strategy_supports_no_merge_call():
        tf.cond(finite, lambda: optimizer.apply(gradients, variables), skip)
        return

    def cross_replica(strategy, finite, gradients, variables):
        flag = strategy.experimental_local_results(finite)[0]

        def update():
            strategy.extended.call_for_each_replica(optimizer.apply, args=(gradients, variables))

        tf.cond(flag, update, skip)

    tf.distribute.get_replica_context().merge_call(
        cross_replica, args=(finite, gradients, variables)
    )


def _check_model(model, role):
    if not isinstance(model, keras.Model):
        raise ValueError(
            f"The {role} must be a keras.Model (Keras 3), got {type(model).__name__}. Wrap a "
            "SavedModel with `keras.layers.TFSMLayer` inside a keras.Model."
        )
    if not model.built:
        raise ValueError(
            f"The {role} {model.name!r} is not built: call it once on a batch of inputs (or build "
            "it with its input shapes) before creating the Distiller."
        )


def _vocabulary_size(model):
    from kdistill.vocabulary import input_vocabulary_size

    return input_vocabulary_size(model)


def _in_memory(x):
    """True for NumPy/TF arrays (or dicts/lists of them), which `fit` slices itself."""
    leaves = tf.nest.flatten(x)
    return bool(leaves) and all(isinstance(v, (np.ndarray, tf.Tensor)) for v in leaves)


def _numpy(structure):
    return tf.nest.map_structure(
        lambda v: v.numpy() if isinstance(v, tf.Tensor) else (
            np.asarray(v) if isinstance(v, (list, np.ndarray)) else v), structure)


def _head(x, n=32):
    """The first `n` examples of an in-memory batch (for a one-off teacher forward)."""
    return tf.nest.map_structure(lambda v: v[:n] if isinstance(v, np.ndarray) else v, x)


def _batch_size(x):
    first = next(t for t in tf.nest.flatten(x) if t is not None)
    return tf.shape(first)[0]


def _padding_mask(x):
    if isinstance(x, dict):
        return x.get("padding_mask")
    return None


def _split_teacher_targets(data):
    """`(data, None)`, or `(data without them, teacher targets)` for teacher-cache batches.

    `load_teacher_cache` batches end with a dict keyed by tap names: `(x, y, targets)`,
    `(x, y, sample_weight, targets)` or `(x, targets)`.
    """
    if isinstance(data, (list, tuple)) and len(data) >= 2:
        last = data[-1]
        if isinstance(last, dict) and last and set(last) <= set(TAP_NAMES):
            return tuple(data[:-1]), last
    return data, None


def _users(objectives, taps):
    return sorted({type(o).__name__ for o in objectives if set(o.teacher_taps) & set(taps)})


def _cached_teacher(teacher, objectives):
    """The `CachedTeacher` standing in for `teacher=None`/`CachedTeacher` (taps checked)."""
    stand_in = CachedTeacher() if teacher is None else teacher
    needed = sorted({n for o in objectives for n in o.teacher_taps})
    if stand_in.taps is None:
        unknown = [n for n in needed if n != LOGITS]
        if unknown:
            raise ValueError(
                f"With teacher=None the objectives {_users(objectives, unknown)} cannot be built: "
                f"they read the teacher taps {unknown}, whose shapes, layers and heads are "
                "unknown. Pass teacher=kdistill.data.CachedTeacher(cache_directory) (or the live "
                "teacher)."
            )
    else:
        missing = [n for n in needed if n not in stand_in.taps]
        if missing:
            raise ValueError(
                f"The teacher cache holds the taps {list(stand_in.taps)}, but the objectives "
                f"{_users(objectives, missing)} need {missing}. Rebuild the cache with "
                f"cache_teacher_outputs(..., taps={needed})."
            )
    return stand_in


def _multi_worker(strategy):
    """True under MultiWorkerMirroredStrategy with several workers (Keras' own test)."""
    return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and strategy.extended._in_multi_worker_mode())


def _check_supported_taps(teacher, names, objectives):
    """Refuses objectives that need taps the teacher cannot give (e.g. a SavedModel's internals)."""
    supported = getattr(teacher, "supported_taps", None)
    missing = sorted(set(names) - set(supported)) if supported is not None else []
    if missing:
        users = sorted({type(o).__name__ for o in objectives
                        if set(o.teacher_taps) & set(missing)})
        raise ValueError(
            f"The teacher {teacher.name!r} ({type(teacher).__name__}) only provides the taps "
            f"{sorted(supported)}, but the objectives {users} need {missing}. Use logits-only "
            "objectives with it (LogitsKD, or MultiTeacherKD for a MultiTeacher)."
        )


def _check_not_empty(data, what):
    if isinstance(data, tf.data.Dataset):
        if int(data.cardinality()) == 0:
            raise ValueError(
                f"The {what} dataset is empty (cardinality 0). Check the file paths, filters and "
                "`take`/`skip` that built it."
            )
    elif isinstance(data, tuple) and data and isinstance(data[0], tf.data.Dataset):
        _check_not_empty(data[0], what)


def _split_fidelity_metrics(metrics):
    """`(other metrics, [FidelityMetric])`: fidelity metrics also need the teacher's logits."""
    if not isinstance(metrics, (list, tuple)):
        return metrics, []
    resolved = [metrics_lib.get(m) for m in metrics]
    fidelity = [m for m in resolved if isinstance(m, metrics_lib.FidelityMetric)]
    others = [m for m in resolved if not isinstance(m, metrics_lib.FidelityMetric)]
    return (others or None), fidelity


@keras.saving.register_keras_serializable(package="kdistill")
class Distiller(keras.Model):
    """Trains a student to match a frozen teacher, with plain `compile` + `fit`.

    Each training step runs the teacher once (inference mode, outside the gradient tape), the
    student once, adds the objectives' weighted per-example terms, and updates the student (and any
    projection layers the objectives own). The loss is summed per example and divided by the
    *global* batch size, so a step under `tf.distribute.MirroredStrategy` gives the same update as
    one replica on the same global batch, uneven last batches included.

    No weight of 0 costs a teacher forward: objectives of `weight` 0 are never computed (nor their
    taps run), and when no term that reads the teacher has a non-zero weight (`LogitsKD(alpha=1.0)`
    on labelled batches: the labels alone) a training step does not run the teacher at all, and
    fidelity metrics measure it in `evaluate`/validation only. The weights are read before every
    step: a `KDScheduler` that moves `alpha` off 1 brings the teacher back (the step is retraced).

    Both models output **logits** (no softmax). Inputs may be a tensor or a dict (keras-hub style
    `token_ids`, `padding_mask`, `segment_ids`); batches are `(inputs, labels)` or
    `(inputs, labels, sample_weight)`, or just `inputs` for unlabelled data (pure KD).

    `call`, `predict` and `evaluate` use the student. `save` and `export` write the **student
    only**; `distiller.student` is a plain keras.Model. Every term is logged in `fit` history as
    `loss` (the total) and its own name (`kd_loss`, `student_loss`, ...).

    Args:
        teacher: keras.Model, `kdistill.cached_teacher.CachedTeacher` (also
            `kdistill.data.CachedTeacher`) or None. The trained model; frozen (`trainable =
            False`) and never updated. With a `CachedTeacher` (or None, enough for
            logits-only objectives) there is no teacher forward: batches from
            `kdistill.data.load_teacher_cache` carry the teacher's targets. Batches that carry
            targets use them even when a live teacher is given.
        student: keras.Model. The model to train.
        objectives: list of `kdistill.objectives.Objective`. Defaults to Hinton KD
            (`LogitsKD(temperature, alpha)`).
        temperature: float > 0. Softmax temperature of the default objective (default 2.0).
        alpha: float in [0, 1]. Weight of the hard-label loss of the default objective
            (default 0.5); `1 - alpha` weighs the `T²`-scaled KL.
        check_finite: bool. Skip any training step whose loss or gradients are NaN or Inf (on
            any replica: all replicas skip it together), and stop `fit` with a
            `FloatingPointError` naming the epoch, batch, step and per-term values: the student
            keeps its last finite weights. False applies every step as it comes (a diverged
            student then holds NaN weights, which `save`/`export` refuse).
        teacher_layer_names: dict. For a non-keras-hub functional teacher, the layers whose
            outputs are its `embeddings` / `hidden_states` taps (see `kdistill.taps.Taps`).
        student_layer_names: dict. The same for the student.
        paired_inputs: bool. Each model reads its own inputs: every batch's inputs are
            `{"student": student_inputs, "teacher": teacher_inputs}`, the same examples tokenised
            by each model's preprocessor (a teacher with another tokenizer or vocabulary;
            `kdistill.data.paired` builds such datasets from texts). Only logits objectives
            apply (hidden-state, attention and embedding objectives need the same tokens and are
            refused). `call`/`predict` take either form and run the student.

    Example:
    >>> import keras, numpy as np, kdistill
    >>> teacher = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    >>> student = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    >>> distiller = kdistill.Distiller(teacher, student, temperature=4.0, alpha=0.5)
    >>> distiller.compile(optimizer="adam", metrics=["accuracy"])
    >>> x, y = np.random.rand(32, 8), np.random.randint(0, 3, 32)
    >>> history = distiller.fit(x, y, epochs=1, verbose=0)
    >>> sorted(history.history)
    ['accuracy', 'kd_loss', 'loss', 'student_loss']

    References:
        Hinton, Vinyals, Dean. Distilling the Knowledge in a Neural Network. arXiv:1503.02531.
    """

    def __init__(self, teacher, student, objectives=None, temperature=None, alpha=None,
                 check_finite=True, teacher_layer_names=None, student_layer_names=None,
                 paired_inputs=False, **kwargs):
        super().__init__(**kwargs)
        cached = teacher is None or isinstance(teacher, CachedTeacher)
        if not cached:
            _check_model(teacher, "teacher")
        _check_model(student, "student")
        if teacher is student:
            raise ValueError("teacher and student are the same model object; pass two models.")
        self.paired_inputs = bool(paired_inputs)
        t_vocab, s_vocab = _vocabulary_size(teacher), _vocabulary_size(student)
        if (t_vocab is not None and s_vocab is not None and t_vocab != s_vocab
                and not self.paired_inputs):
            raise ValueError(
                f"The teacher's vocabulary has {t_vocab} entries but the student's {s_vocab}: both "
                "read the same token ids, so they must share the tokenizer. Build the student with "
                f"vocabulary_size={t_vocab}, or give each model its own tokens of the same texts "
                "(Distiller(..., paired_inputs=True), kdistill.data.paired)."
            )
        if objectives is None:
            # A teacher may say how it is distilled by default (a MultiTeacher does).
            default_objectives = getattr(teacher, "default_objectives", objectives_lib.logits_kd)
            objectives = default_objectives(
                temperature=2.0 if temperature is None else temperature,
                alpha=0.5 if alpha is None else alpha,
            )
        elif temperature is not None or alpha is not None:
            raise ValueError(
                "temperature/alpha configure the default objective; with explicit `objectives`, "
                "set them on the objective (e.g. LogitsKD(temperature=4.0, alpha=0.5))."
            )
        objectives = list(objectives)
        if not objectives:
            raise ValueError("objectives is empty: give at least one objective.")
        for objective in objectives:
            if not isinstance(objective, objectives_lib.Objective):
                raise ValueError(
                    f"Every objective must be a kdistill.objectives.Objective, got "
                    f"{type(objective).__name__}."
                )

        if not cached:
            teacher.trainable = False
        self.teacher = teacher
        self.student = student
        self.objectives = objectives
        self.check_finite = bool(check_finite)
        self._teacher_layer_names = teacher_layer_names
        self._student_layer_names = student_layer_names

        teacher_taps = [LOGITS] + [n for o in objectives for n in o.teacher_taps]
        student_taps = [LOGITS] + [n for o in objectives for n in o.student_taps]
        _check_supported_taps(teacher, teacher_taps, objectives)
        if cached:
            self._teacher_taps = _cached_teacher(teacher, objectives)
        else:
            self._teacher_taps = build_taps(teacher, teacher_taps,
                                            layer_names=teacher_layer_names)
        self._student_taps = build_taps(student, student_taps, layer_names=student_layer_names)
        for objective in objectives:
            objective.build_for(self._teacher_taps, self._student_taps)
        # Objectives of weight 0 are never computed: the forward passes skip their taps.
        self._active = [o for o in objectives if o.weight > 0]
        if not self._active:
            raise ValueError("Every objective has weight 0: there is nothing to train. Give at "
                             "least one objective a weight > 0.")
        if self.paired_inputs:
            check_paired_objectives(self._active, self._student_taps.output_shapes().get(LOGITS))
        active_teacher = [LOGITS] + [n for o in self._active for n in o.teacher_taps]
        active_student = [LOGITS] + [n for o in self._active for n in o.student_taps]
        self._teacher_forward_taps = self._teacher_taps
        if not cached and set(active_teacher) != set(teacher_taps):
            self._teacher_forward_taps = build_taps(teacher, active_teacher,
                                                    layer_names=teacher_layer_names)
        self._student_forward_taps = self._student_taps
        if set(active_student) != set(student_taps):
            self._student_forward_taps = build_taps(student, active_student,
                                                    layer_names=student_layer_names)
        self._reads = self._teacher_reads()

        names = [n for objective in objectives for n in objective.term_names()]
        duplicated = sorted({n for n in names if names.count(n) > 1} | ({"loss"} & set(names)))
        if duplicated:
            raise ValueError(
                f"Objectives log terms with the same name {duplicated}; give each objective a "
                "distinct `name` (term names are prefixed by it) or reserve 'loss' for the total."
            )
        self._term_names = names
        self._term_trackers = {}
        self._fidelity_metrics = []

    # ----------------------------------------------------------------------------- the maths

    def compute_distillation_loss(self, x, y, teacher_outputs, student_outputs,
                                  sample_weight=None):
        """Returns `(loss, terms)` for one replica's batch.

        `loss` is this replica's share of the global mean: the sum of weighted per-example losses
        divided by the global batch size (summed over replicas). `terms` maps each term's name to
        its per-example (unweighted) values, for logging.
        """
        mask = _padding_mask(x)
        token_weights = None
        if sample_weight is not None and len(sample_weight.shape) == 2 and (
            len(student_outputs[LOGITS].shape) == 3
        ):
            # Token-level logits (masked LM): rank-2 weights mark the positions that count.
            token_weights, sample_weight = sample_weight, None
        per_example = None
        terms = {}
        for objective in self._active:
            for name, (values, weight) in objective.compute(
                teacher_outputs, student_outputs, labels=y, padding_mask=mask,
                token_weights=token_weights,
            ).items():
                terms[name] = values
                weighted = values * tf.cast(weight, values.dtype)
                per_example = weighted if per_example is None else per_example + weighted
        if sample_weight is not None:
            per_example = per_example * tf.reshape(tf.cast(sample_weight, per_example.dtype), [-1])
        local_n = tf.cast(_batch_size(x), per_example.dtype)
        global_n = tf.distribute.get_replica_context().all_reduce(
            tf.distribute.ReduceOp.SUM, local_n
        )
        loss = tf.reduce_sum(per_example) / tf.maximum(global_n, 1.0)
        terms["loss"] = per_example
        return loss, terms

    # ----------------------------------------------------------------------------- steps

    def call(self, inputs, training=False):
        if self.paired_inputs and is_paired(inputs):
            inputs = inputs[STUDENT]
        return self.student(inputs, training=training)

    def _teacher_reads(self):
        """Per active objective: does it read the teacher on labelled batches now (eager)."""
        return tuple(o.reads_teacher(True) for o in self._active)

    def _runs_teacher(self, labelled, for_metrics, reads=None):
        """Whether a step needs the teacher: a term reads it, or (`for_metrics`) fidelity
        metrics do. `reads`: `_teacher_reads()`, by default as the step was traced with."""
        if labelled:
            reads = self._reads if reads is None else reads
        else:
            reads = [o.reads_teacher(False) for o in self._active]
        return any(reads) or (for_metrics and bool(self._fidelity_metrics))

    def make_train_function(self, force=False):
        return self._make_step_function("train_function", super().make_train_function, force)

    def make_test_function(self, force=False):
        return self._make_step_function("test_function", super().make_test_function, force)

    def _make_step_function(self, attribute, make, force):
        """Keras' step function, remade when which objectives read the teacher changes.

        `reads_teacher()` reads variables (`alpha`), which a traced step cannot; it is asked
        eagerly before every step, and a change (a schedule moving `alpha` off 1) retraces.
        """
        if getattr(self, attribute) is not None and not force:
            return getattr(self, attribute)
        reads = self._reads = self._teacher_reads()
        make(force=True)
        traced = getattr(self, attribute)

        def step_function(*args, **kwargs):
            if self._teacher_reads() != reads:
                return self._make_step_function(attribute, make, True)(*args, **kwargs)
            self._reads = reads  # what a retrace (a new input shape) of `traced` reads
            return traced(*args, **kwargs)

        setattr(self, attribute, step_function)
        return step_function

    def _teacher_forward(self, x, targets=None, run=True):
        """The teacher's taps: from the batch (`targets`, a teacher cache), a forward pass, or
        none (`{}`) when `run` is False and the batch carries none."""
        if targets is None and not run:
            return {}
        if targets is None and isinstance(self._teacher_taps, CachedTeacher):
            raise ValueError(
                "The batch carries no teacher targets and the Distiller has no teacher "
                "(teacher=None or a CachedTeacher). Train on batches of "
                "kdistill.data.load_teacher_cache(...), or pass the live teacher."
            )
        if targets is None:
            targets = self._teacher_forward_taps(x, training=False)
        missing = sorted({n for o in self._active for n in o.teacher_taps} - set(targets))
        if missing:
            raise ValueError(
                f"The batch's teacher targets hold the taps {sorted(targets)}, but the objectives "
                f"{_users(self.objectives, missing)} need {missing}. Rebuild the cache with them."
            )
        return tf.nest.map_structure(tf.stop_gradient, targets)

    def train_step(self, data):
        data, targets = _split_teacher_targets(data)
        x, y, sample_weight = data_adapter_utils.unpack_x_y_sample_weight(data)
        x, teacher_x = split_inputs(x, self.paired_inputs)
        teacher_outputs = self._teacher_forward(teacher_x, targets,
                                                self._runs_teacher(y is not None, False))
        with tf.GradientTape() as tape:
            student_outputs = self._student_forward_taps(x, training=True)
            loss, terms = self.compute_distillation_loss(
                x, y, teacher_outputs, student_outputs, sample_weight
            )
            scaled = self.optimizer.scale_loss(loss)
        variables = self.trainable_variables
        gradients = tape.gradient(scaled, variables)
        # Variables no term reaches (e.g. the classification head during general distillation
        # with intermediate losses only) get no update. The set is fixed at tracing time, so it is
        # the same on every replica.
        pairs = [(g, v) for g, v in zip(gradients, variables) if g is not None]
        gradients, variables = [g for g, _ in pairs], [v for _, v in pairs]
        if self.check_finite and not isinstance(self.optimizer,
                                                keras.optimizers.LossScaleOptimizer):
            # A non-finite step is skipped on every replica and logged as a NaN loss, which
            # `_StopOnNonFinite` turns into a clear error: the weights stay finite. (A
            # LossScaleOptimizer skips non-finite steps itself, and lowers its scale.)
            finite = _finite_on_every_replica(loss, gradients)
            _apply_if(finite, self.optimizer, gradients, variables)
            terms["loss"] = tf.where(finite, terms["loss"], float("nan"))
        else:
            self.optimizer.apply(gradients, variables)
        return self._update_metrics(x, y, student_outputs[LOGITS], sample_weight, terms,
                                    self._metric_teacher_logits(teacher_outputs))

    def test_step(self, data):
        data, targets = _split_teacher_targets(data)
        x, y, sample_weight = data_adapter_utils.unpack_x_y_sample_weight(data)
        x, teacher_x = split_inputs(x, self.paired_inputs)
        teacher_outputs = self._teacher_forward(teacher_x, targets,
                                                self._runs_teacher(y is not None, True))
        student_outputs = self._student_forward_taps(x, training=False)
        _, terms = self.compute_distillation_loss(
            x, y, teacher_outputs, student_outputs, sample_weight
        )
        return self._update_metrics(x, y, student_outputs[LOGITS], sample_weight, terms,
                                    self._metric_teacher_logits(teacher_outputs))

    def _metric_teacher_logits(self, teacher_outputs):
        """The teacher's logits for fidelity metrics (a MultiTeacher's ensemble, if one)."""
        logits = teacher_outputs.get(LOGITS)
        combine = getattr(self.teacher, "ensemble_logits", None)
        return combine(logits) if combine is not None and logits is not None else logits

    def _update_metrics(self, x, y, student_logits, sample_weight, terms, teacher_logits=None):
        logs = {}
        for name, values in terms.items():
            tracker = self._loss_tracker if name == "loss" else self._term_trackers[name]
            tracker.update_state(values)
            logs[name] = tracker.result()
        if y is not None and self._compile_metrics is not None:
            self._compile_metrics.update_state(y, student_logits, sample_weight)
            logs.update(self._compile_metrics.result())
        for metric in self._fidelity_metrics if teacher_logits is not None else ():
            metric.update_state(y, student_logits, sample_weight, teacher_logits=teacher_logits)
            logs[metric.name] = metric.result()
        if _multi_worker(self.distribute_strategy):
            # Keras 3.15 reduces step logs across workers with strategy.reduce("MEAN", v,
            # axis=0), which fails on scalars ("Invalid reduction dimension 0 for input with 0
            # dimensions", tensorflow/tensorflow#72388); shape [1] reduces to the scalar.
            logs = {name: tf.reshape(value, [1]) for name, value in logs.items()}
        return logs

    # ----------------------------------------------------------------------------- Keras plumbing

    def compile(self, optimizer="adam", metrics=None, **kwargs):
        """Configures training. Takes no `loss`: the objectives are the loss.

        Args:
            optimizer: keras optimizer or its name.
            metrics: metrics computed on `(labels, student_logits)`, e.g. `["accuracy"]`, and
                `kdistill.metrics` fidelity metrics (`TeacherAgreement()`, `TeacherKL()`, or
                their names), which also get the teacher's logits.
            **kwargs: passed to `keras.Model.compile` (`steps_per_execution`, `jit_compile`...).
        """
        if kwargs.get("loss") is not None:
            raise ValueError(
                "Distiller.compile takes no `loss`: the distillation objectives define it. Pass "
                "`objectives=` to the Distiller instead."
            )
        kwargs.pop("loss", None)
        metrics, fidelity = _split_fidelity_metrics(metrics)
        # Keras keeps the previous compile's metrics when this one has none: a recompile
        # without label metrics must not keep (and demand labels for) the old ones.
        self._compile_metrics = None
        super().compile(optimizer=optimizer, metrics=metrics, **kwargs)
        self._fidelity_metrics = fidelity
        self._create_term_trackers()

    def _create_term_trackers(self):
        self._term_trackers = {n: keras.metrics.Mean(name=n) for n in self._term_names}

    def predict_step(self, data):
        return super().predict_step(_split_teacher_targets(data)[0])

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras 3.15 builds a distributed model from the first batch reduced with MEAN across
        # replicas, which fails on bool inputs (keras-hub's `padding_mask`) under MirroredStrategy.
        # The build needs shapes only: hand it the first replica's local batch instead.
        if iterator is not None and self._distribute_strategy is not None:
            local = self.distribute_strategy.experimental_local_results
            for _, _, it in iterator:
                data_batch = tf.nest.map_structure(
                    lambda v: local(v)[0] if isinstance(v, tf.distribute.DistributedValues) else v,
                    next(it),
                )
                break
            iterator = None
        if data_batch is not None:
            data_batch = _split_teacher_targets(data_batch)[0]
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def _check_inputs(self, x, y=None, sample_weight=None, what="training"):
        """Checks the first batch of `x` (or the in-memory arrays) before TF sees it.

        Once per `fit`/`evaluate` call, in NumPy (`kdistill.input_checks`): nothing per step.
        """
        targets = None
        batch = input_checks.first_batch(x, what)
        if batch is not None:
            data, targets = _split_teacher_targets(batch)
            x, y, sample_weight = data_adapter_utils.unpack_x_y_sample_weight(data)
        elif isinstance(x, tf.data.Dataset) or not _in_memory(x):
            return  # generators, PyDatasets, distributed datasets: not peeked
        x, y, sample_weight = _numpy((x, y, sample_weight))
        x, teacher_x = split_inputs(x, self.paired_inputs)
        models = [("student", self.student, _vocabulary_size(self.student))]
        teacher = [] if isinstance(self._teacher_taps, CachedTeacher) else [
            ("teacher", self.teacher, _vocabulary_size(self.teacher))]
        if self.paired_inputs and teacher:  # the teacher's own inputs: tokens and positions
            input_checks.check_batch(teacher_x, models=teacher, what=what)
        shape = self._student_taps.output_shapes().get(LOGITS)
        input_checks.check_batch(
            x, y, sample_weight, models=models if self.paired_inputs else teacher + models,
            num_classes=None if shape is None else shape[-1],
            logits_rank=2 if shape is None else len(shape), what=what,
            label_metrics=self._compile_metrics is not None,
        )
        if not getattr(self, "_checked_teacher_outputs", False):
            if targets is not None:
                logits = targets.get(LOGITS)
            elif teacher and self._runs_teacher(
                    y is not None, what != "training", self._teacher_reads()):
                logits = self.teacher(_head(teacher_x), training=False)
            else:  # no teacher, or one this step does not run: checked when it first does
                logits = None
            if logits is not None:
                self._checked_teacher_outputs = True
                input_checks.warn_if_probabilities(np.asarray(logits), "teacher",
                                                   getattr(self.teacher, "name", None))

    def fit(self, x=None, y=None, *args, validation_data=None, sample_weight=None, **kwargs):
        """`keras.Model.fit`, plus clear errors for bad first batches and non-finite losses.

        The first batch of `x` and of `validation_data` is checked before training
        (`kdistill.input_checks.check_batch`): token ids vs each model's vocabulary, sequence
        length vs each model's position table, batching, label dtype and range, sample weights;
        a teacher whose outputs look like probabilities gets a warning. A damaged teacher-cache
        shard met in any batch raises `kdistill.data.cache_reader.CacheReadError`, naming the
        shard (`kdistill.input_checks.named_read_errors`).
        """
        _check_not_empty(x, "training")
        self._check_inputs(x, y, sample_weight, "training")
        if validation_data is not None:
            _check_not_empty(validation_data, "validation")
            if isinstance(validation_data, tuple):
                self._check_inputs(*data_adapter_utils.unpack_x_y_sample_weight(validation_data),
                                   what="validation")
            else:
                self._check_inputs(validation_data, what="validation")
        if self.check_finite:
            callbacks = list(kwargs.pop("callbacks", None) or [])
            callbacks.append(_StopOnNonFinite())
            kwargs["callbacks"] = callbacks
        with input_checks.named_read_errors():  # a damaged cache shard met in any later batch
            return super().fit(x, y, *args, validation_data=validation_data,
                               sample_weight=sample_weight, **kwargs)

    def evaluate(self, x=None, y=None, *args, sample_weight=None, **kwargs):
        """`keras.Model.evaluate` on the student, after the checks of `fit` on the first batch."""
        _check_not_empty(x, "evaluation")
        self._check_inputs(x, y, sample_weight, "evaluation")
        with input_checks.named_read_errors():
            return super().evaluate(x, y, *args, sample_weight=sample_weight, **kwargs)

    def save(self, filepath, overwrite=False, **kwargs):
        """Saves the **student only** (a normal `.keras` model); the teacher is never saved.

        Args:
            filepath: str. Path ending in `.keras`.
            overwrite: bool. Refuse to replace an existing file unless True.

        Raises:
            FileExistsError: `filepath` exists and `overwrite` is False.
            ValueError: a student weight is NaN or Inf (the message names it).
        """
        if os.path.exists(filepath) and not overwrite:
            raise FileExistsError(
                f"{filepath} exists; pass overwrite=True to replace it, or choose another path."
            )
        check_finite_weights(self.student, "save")
        return self.student.save(filepath, overwrite=True, **kwargs)

    def export(self, filepath, format="tf_saved_model", **kwargs):
        """Exports the **student only** (see `keras.Model.export`); never overwrites.

        Args:
            filepath: str. A path that does not exist yet (SavedModel directory, or a `.tflite`
                file with `format="litert"`).
            format: str. As `keras.Model.export`.
            **kwargs: passed to `keras.Model.export`.

        Raises:
            FileExistsError: `filepath` exists (remove it or choose another path). For
                checked SavedModel/TFLite files that may replace earlier ones, use
                `kdistill.export_student(..., overwrite=True)`.
            ValueError: a student weight is NaN or Inf (the message names it).
        """
        if os.path.exists(filepath):
            raise FileExistsError(
                f"{filepath} exists; remove it or choose another path (exports never overwrite)."
            )
        check_finite_weights(self.student, "export")
        return self.student.export(filepath, format=format, **kwargs)

    def get_config(self):
        config = super().get_config()
        config.update({
            "teacher": keras.saving.serialize_keras_object(self.teacher),
            "student": keras.saving.serialize_keras_object(self.student),
            "objectives": [keras.saving.serialize_keras_object(o) for o in self.objectives],
            "check_finite": self.check_finite,
            "teacher_layer_names": self._teacher_layer_names,
            "student_layer_names": self._student_layer_names,
            "paired_inputs": self.paired_inputs,
        })
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        teacher = keras.saving.deserialize_keras_object(config.pop("teacher"), custom_objects)
        student = keras.saving.deserialize_keras_object(config.pop("student"), custom_objects)
        objectives = [keras.saving.deserialize_keras_object(o, custom_objects)
                      for o in config.pop("objectives")]
        return cls(teacher=teacher, student=student, objectives=objectives, **config)

