"""The one pipeline: runs a `kdistill.config.RunConfig` end to end, resumably.

Every door goes through `run`: `kdistill distill CONFIG`, `kdistill demo` (a packaged config,
`kdistill/configs/demo.yaml`), the TFX Trainer module (`kdistill.tfx.run_fn`) and Python code.
A run:

1. **Data.** The built-in dataset or the user's CSV/TSV/JSONL files (`kdistill.data.text_splits`),
   or splits handed over by the caller, tokenised once into in-memory splits.
2. **Teacher.** `minilm` (packaged), a `.keras` file or a SavedModel; fine-tuned on the training
   split first when `teacher.fine_tune_epochs` says so (for at least
   `teacher.fine_tune_min_steps` steps, its best validation epoch kept; cached by data and
   settings).
3. **Student.** A preset size (`random` / `svd` init), copies of teacher layers
   (`from_teacher`) or a structured slice of the teacher (`prune`); optionally with its
   vocabulary pruned to the word pieces of the text it reads (the training split with its
   augmentation, and the unlabelled text).
4. **Stages**, in order, each skipped with 0 epochs: `general` (unlabelled text), `task` (the
   labelled training split, optionally augmented, optionally from the teacher's cached logits),
   `finetune` (the student alone). Each keeps its best epoch when asked, and runs at least
   its `min_steps` (more epochs on a small split).
5. **Results.** Teacher and student measured on the test and validation splits (accuracy,
   size, batch-1 latency), the export (SavedModel / TFLite), plots, the targets, a report.

Resuming. Each stage trains with `ResumableBackup`, a `keras.callbacks.BackupAndRestore` that
saves every `save_every` steps (weights, optimizer state, the step, and the dropout RNG state)
under `OUTPUT/backup/<stage>`. The order of the training examples is a function of the seed and
the epoch only (`kdistill.data.training_dataset`), so a run killed mid-epoch and started again
with the same command continues from the last backup on the same batches and ends with the same
weights as an uninterrupted run. A finished stage's student weights are kept under
`OUTPUT/stages/`, so a restart skips finished stages.

Output directory:

    config.json          the resolved config; a restart with the same config resumes
    run.json             status (running/finished), finished stages, per-stage summaries
    backup/<stage>/      the training state while a stage runs
    stages/<stage>.weights.h5
    logs/<stage>/        TensorBoard: every objective term, metrics, learning rate, temperature
    history.jsonl        the same per-step values as JSON lines (for plots)
    student.keras        the distilled student
    labels.json          its class names in label-index order (also in export/), used by
                         `kdistill evaluate` / `benchmark` / `export` to number a file's labels
    report.json          teacher and student scores, ratios, stage and step times, targets
    loss_terms.png, tradeoff.png
    export/              SavedModel / TFLite files, when `export.formats` is set

A finished run's directory is refused unless `overwrite=True`; a directory that is not a
kdistill run is always refused.
"""

import dataclasses
import functools
import math
import os
import shutil
import sys
import time
import warnings

import keras
import numpy as np
import tensorflow as tf

from kdistill import config as config_lib
from kdistill.callbacks import BestEpoch, RunLogger, truncate_history
from kdistill.data.batching import training_dataset
from kdistill.data.text import Split, make_preprocessor, tokenize
from kdistill.distribution import check_jit_compile, make_strategy, worker_index
from kdistill.evaluation import detach_preprocessor, evaluate_model, keras_model, num_outputs
from kdistill.precision import resolve as resolve_precision
from kdistill.report import final_report
from kdistill.run_directory import prepare_run_dir
from kdistill.teacher_outputs import (
    arrays_digest,
    cached_arrays,
    model_digest,
    teacher_logits_of_splits,
)
from kdistill.training_state import (
    ResumableBackup,
    atomic_json,
    load_training_state,
    save_training_state,
    saved_step,
)

# ----------------------------------------------------------------------------- models


def load_teacher(config, num_classes, tokenizer_required=True):
    """The teacher and the preprocessor that tokenises its inputs, as the config says.

    Args:
        config: `RunConfig`.
        num_classes: int. Classes in the data.
        tokenizer_required: bool. False when the examples come already tokenised: a teacher
            without a tokenizer then comes back with None instead of an error.

    Returns:
        `(teacher keras.Model, preprocessor)`.

    Raises:
        ValueError: no tokenizer for a teacher file without one, or a teacher whose classes or
            vocabulary do not match the data's.

    Example:
    >>> import tempfile
    >>> from kdistill.config import RunConfig, TeacherConfig, DataConfig
    >>> from kdistill import testing
    >>> path = os.path.join(tempfile.mkdtemp(), "teacher.keras")
    >>> testing.tiny_bert_classifier(num_classes=2).save(path)
    >>> config = RunConfig(teacher=TeacherConfig(model=path),
    ...                    data=DataConfig(vocabulary="minilm", sequence_length=8))
    >>> load_teacher(config, num_classes=2)
    Traceback (most recent call last):
    ...
    ValueError: The tokenizer has 30522 tokens but the teacher's embedding table 64: set data.vocabulary to the teacher's own vocab.txt.
    """  # noqa: E501
    from kdistill import teachers

    source, data = config.teacher.model, config.data
    preprocessor = None
    if source == "minilm":
        teacher, preprocessor = teachers.minilm_teacher(
            num_classes=config.teacher.num_classes or num_classes,
            sequence_length=data.sequence_length)
    else:
        teacher = teachers.load_teacher(source, output_key=config.teacher.output_key,
                                        endpoint=config.teacher.endpoint)
        preprocessor = detach_preprocessor(teacher)
    if data.vocabulary is not None:
        preprocessor = make_preprocessor(data.vocabulary, data.sequence_length, data.lowercase)
    elif preprocessor is None and tokenizer_required:
        raise ValueError(
            f"data.vocabulary: the teacher {source} carries no tokenizer; set data.vocabulary to "
            "the vocab.txt it was trained with (or `minilm` for the packaged BERT uncased one).")
    elif preprocessor is not None:
        preprocessor.sequence_length = data.sequence_length
    outputs = num_outputs(teacher)
    if outputs is not None and outputs != num_classes:
        raise ValueError(
            f"The teacher {source} outputs {outputs} classes but the data has {num_classes} "
            "labels; check data.label_column / data.label_names, or the teacher.")
    backbone = getattr(teacher, "backbone", None)
    vocab = None if preprocessor is None else preprocessor.tokenizer.vocabulary_size()
    if backbone is not None and vocab is not None and backbone.vocabulary_size != vocab:
        raise ValueError(
            f"The tokenizer has {vocab} tokens but the teacher's embedding table "
            f"{backbone.vocabulary_size}: set data.vocabulary to the teacher's own vocab.txt.")
    return teacher, preprocessor


def build_student(config, teacher, vocabulary_size, num_classes, calibration=None,
                  vocabulary=None, unknown_id=None):
    """The student the config describes, sized for the teacher's vocabulary and classes.

    Args:
        config: `RunConfig`.
        teacher: keras.Model. A keras-hub teacher gives its vocabulary, classes and (for `svd`,
            `from_teacher` and `prune`) its weights; other teachers (SavedModels) allow `random`
            only.
        vocabulary_size: int. The tokenizer's vocabulary size.
        num_classes: int.
        calibration: batched `(inputs, labels)` dataset or None. `prune`: the examples the
            importance of channels, heads and FFN units is measured on.
        vocabulary: int array or None. Kept token ids (`kdistill.vocabulary.corpus_vocabulary`):
            the student gets a pruned embedding table behind a `VocabularyMap`.
        unknown_id: int or None. With `vocabulary`: the id standing in for dropped tokens.

    Returns:
        A keras-hub classifier (or a `kdistill.vocabulary.VocabularyMappedClassifier`).

    Example:
    >>> from kdistill.config import RunConfig, StudentConfig, DataConfig
    >>> from kdistill import testing
    >>> config = RunConfig(student=StudentConfig(preset="test_tiny", init="svd"),
    ...                    data=DataConfig(sequence_length=8))
    >>> teacher = testing.tiny_bert_classifier(hidden_dim=16, num_classes=2)
    >>> student = build_student(config, teacher, vocabulary_size=64, num_classes=2)
    >>> student.backbone.hidden_dim, student.backbone.max_sequence_length
    (8, 8)
    """
    from kdistill import students

    s = config.student
    keras_hub_teacher = getattr(teacher, "backbone", None) is not None
    if s.init in ("from_teacher", "prune", "svd") and not keras_hub_teacher:
        raise ValueError(f"student.init: {s.init} needs a keras-hub teacher (a .keras "
                         "BERT-family model or minilm), not a SavedModel; use init: random.")
    if vocabulary is not None and not keras_hub_teacher:
        raise ValueError("student.vocabulary_min_count needs a keras-hub teacher; remove it.")
    if s.init == "from_teacher":
        return students.from_teacher(teacher, num_layers=s.num_layers, strategy=s.layer_strategy,
                                     layers=s.teacher_layers)
    if s.init == "prune":
        from kdistill.pruning import prune_teacher

        if calibration is None:
            raise ValueError("student.init: prune needs calibration examples.")
        return prune_teacher(teacher, calibration, hidden_dim=s.hidden_dim,
                             intermediate_dim=s.intermediate_dim, num_layers=s.num_layers,
                             vocabulary=vocabulary, unknown_id=unknown_id,
                             max_sequence_length=config.data.sequence_length)
    if keras_hub_teacher:
        return students.student_for(
            teacher, s.preset, embedding_init="svd" if s.init == "svd" else None,
            max_sequence_length=config.data.sequence_length, dropout=s.dropout,
            vocabulary=vocabulary, unknown_id=unknown_id, **s.overrides())
    return students.build_student(s.preset, vocabulary_size, num_classes=num_classes,
                                  max_sequence_length=config.data.sequence_length,
                                  dropout=s.dropout, **s.overrides())


def make_optimizer(stage, total_steps):
    """The stage's optimizer with its learning-rate schedule.

    Args:
        stage: `StageConfig`.
        total_steps: int. Optimizer steps of the whole stage.

    Returns:
        A `keras.optimizers.Optimizer`.

    Example:
    >>> from kdistill.config import StageConfig
    >>> type(make_optimizer(StageConfig(epochs=1, learning_rate=1e-3), 100)).__name__
    'AdamW'
    """
    rate = stage.learning_rate
    if stage.schedule == "cosine":
        warmup = int(stage.warmup * total_steps)
        rate = keras.optimizers.schedules.CosineDecay(
            0.0 if warmup else stage.learning_rate, max(total_steps - warmup, 1), alpha=0.0,
            warmup_target=stage.learning_rate if warmup else None, warmup_steps=warmup)
    clip = {} if stage.clipnorm is None else {"clipnorm": stage.clipnorm}
    if stage.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(rate, weight_decay=stage.weight_decay, **clip)
        optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
        return optimizer
    if stage.optimizer == "adam":
        return keras.optimizers.Adam(rate, **clip)
    return keras.optimizers.SGD(rate, momentum=0.9, **clip)


# ----------------------------------------------------------------------------- the run


class _Run:
    """State shared by the steps of one `run` call."""

    def __init__(self, config, output, quiet, strategy, stage_callbacks):
        self.config = config
        self.output = output
        self.quiet = quiet
        self.strategy = strategy
        # Keras' progress bars in a terminal; one line per epoch in a log file or a CI job.
        self.verbose = 0 if quiet else ("auto" if sys.stdout.isatty() else 2)
        self.stage_callbacks = stage_callbacks or {}
        self.timings = []  # (step, wall s, cpu s, note) of the steps outside the stages
        self.precision = "float32"  # of the teacher's passes (`teacher.precision`, resolved)

    def path(self, *parts):
        return os.path.join(self.output, *parts)

    def log(self, message):
        if not self.quiet:
            print(f"[kdistill] {message}", flush=True)

    def timed(self, step, started, cpu_started, note=""):
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        self.timings.append({"step": step, "seconds": round(wall, 1),
                             "cpu_seconds": round(cpu, 1), "note": note})
        self.log(f"{step}: {wall:.1f} s wall, {cpu:.1f} s CPU{'   ' + note if note else ''}")


def _epochs_for(epochs, steps_per_epoch, min_steps):
    """`epochs`, raised until they make at least `min_steps` optimizer steps."""
    return max(epochs, math.ceil(min_steps / steps_per_epoch))


def _clock():
    return time.perf_counter(), time.process_time()


def _metrics_for(config, with_teacher):
    from kdistill import metrics as metrics_lib

    resolved = [metrics_lib.get(m) for m in config.metrics]
    if not with_teacher:
        resolved = [m for m in resolved if not isinstance(m, metrics_lib.FidelityMetric)]
    return resolved


def _summary(history):
    """The last epoch's validation values (or training values without validation)."""
    last = {k: v[-1] for k, v in history.items() if v}
    val = {k: v for k, v in last.items() if k.startswith("val_")}
    return val or last


def _format_values(values):
    keys = sorted(values, key=lambda k: (k.removeprefix("val_") != "accuracy",
                                         k.removeprefix("val_") != "loss", k))
    return "  ".join(f"{k} {values[k]:.4g}" for k in keys[:6])


def _accuracy(model, split, batch_size):
    return evaluate_model(keras_model(model), split, batch_size)["accuracy"]


def _compile_stage(run, name, stage, teacher, student, train, total, student_only=False):
    """The model a stage trains (a Distiller, or the student alone) compiled; its term names."""
    from kdistill.distiller import Distiller

    config = run.config
    if student_only:
        student.compile(optimizer=make_optimizer(stage, total),
                        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                        metrics=_metrics_for(config, with_teacher=False),
                        jit_compile=config.jit_compile)
        return student, ["loss"], []
    objectives = config_lib.build_objectives(stage.objectives, config.layer_map)
    model = Distiller(teacher, student, objectives=objectives)
    term_names = ["loss"] + [n for o in objectives for n in o.term_names()]
    model.compile(optimizer=make_optimizer(stage, total),
                  metrics=_metrics_for(config, with_teacher=True) if train.labels is not None
                  else None, jit_compile=config.jit_compile)
    return model, term_names, objectives


def _run_stage(run, index, name, stage, teacher, student, train, validation,
               student_only=None):
    """Trains one stage, resuming from its backup; returns the stage summary.

    `student_only` (default: the `finetune` stage) trains the student alone on the labels; the
    order of the examples and the dropout seeds follow `index`, so a labels-only stage with the
    index of a distillation stage sees the same batches."""
    config = run.config
    student_only = name == "finetune" if student_only is None else student_only
    data = config.data
    started, cpu_started = _clock()
    steps = math.ceil(len(train) / data.batch_size)
    epochs = _epochs_for(stage.epochs, steps, stage.min_steps)
    if epochs != stage.epochs:  # a small split: more epochs, same recipe
        stage = dataclasses.replace(stage, epochs=epochs)
    total = stage.epochs * steps
    backup_dir = run.path("backup", name)
    keras.utils.set_random_seed(config.seed + 1000 * (index + 1))  # projections of this stage
    with run.strategy.scope():
        model, term_names, objectives = _compile_stage(run, name, stage, teacher, student,
                                                       train, total, student_only)
        model(train.example())  # builds the Distiller (BackupAndRestore needs a built model)
    if stage.clipnorm is not None and run.strategy.num_replicas_in_sync > 1:
        warnings.warn(
            f"stages.{name}.clipnorm={stage.clipnorm} with {run.strategy.num_replicas_in_sync} "
            "replicas: Keras clips each replica's gradient before the replicas are summed, so "
            "this run will not match a one-device run. Set clipnorm: null for replica-exact "
            "training.", stacklevel=2)
    backup = ResumableBackup(backup_dir, config.save_every, steps)
    start = saved_step(backup.weights_path) or 0
    history_path = run.path("history.jsonl")
    if start:
        epoch, batch = divmod(start, steps)
        run.log(f"{name}: resuming at step {start}/{total} (epoch {epoch + 1}, batch "
                f"{batch + 1}) from {backup_dir}")
        truncate_history(history_path, name, start)
    logger = RunLogger(name, run.path("logs", name), history_path, config.log_every,
                       term_names, objectives)
    best = None
    if stage.restore_best:
        baseline = None if start else _accuracy(student, validation, data.eval_batch_size)
        best = BestEpoch(student, path=os.path.join(backup_dir, "best.weights.h5"),
                         baseline=baseline, restore_on_train_end=False)
    scheduler = (stage.scheduler(steps) if hasattr(stage, "scheduler") and not student_only
                 else None)
    callbacks = ([scheduler] if scheduler else []) + [backup, logger] + (
        [best] if best else []) + list(run.stage_callbacks.get(name, []))
    seed = config.seed * 1000 + index
    segments = []  # (first epoch, end epoch, first step, end step)
    epoch, batch = divmod(start, steps)
    if batch:
        segments.append((epoch, epoch + 1, start, (epoch + 1) * steps))
        epoch += 1
    if epoch < stage.epochs:
        segments.append((epoch, stage.epochs, epoch * steps, total))
    val = validation.dataset(data.eval_batch_size) if validation is not None else None
    history = {}
    if not segments and start:
        backup.set_model(model)
        backup.restore()
    for first_epoch, end_epoch, first_step, end_step in segments:
        dataset, _ = training_dataset(train, data.batch_size, stage.epochs, seed, first_step,
                                      end_step, trim=data.trim_padding,
                                      group_by_length=data.group_by_length)
        result = model.fit(dataset, validation_data=val, initial_epoch=first_epoch,
                           epochs=end_epoch,
                           steps_per_epoch=(end_step - first_step) // (end_epoch - first_epoch),
                           callbacks=callbacks, verbose=run.verbose, shuffle=False)
        for key, values in result.history.items():
            history.setdefault(key, []).extend(float(v) for v in values)
    values = _summary(history)
    summary = {"stage": name, "epochs": stage.epochs, "steps": total,
               "examples": len(train), "resumed_at_step": start, "values": values}
    if best is not None:
        summary["best_val_accuracy"] = best.restore()
    summary["seconds"] = round(time.perf_counter() - started, 1)
    summary["cpu_seconds"] = round(time.process_time() - cpu_started, 1)
    note = f"   (resumed at step {start})" if start else ""
    if best is not None:
        note += f"   best epoch kept: val_accuracy {summary['best_val_accuracy']:.4g}"
    run.log(f"stage {name:<9} epochs {stage.epochs:<3} {summary['seconds']:7.1f} s "
            f"({summary['cpu_seconds']:.0f} s CPU)   {_format_values(values)}{note}")
    return summary


def _finish_stage(run, state, name, summary, student):
    save_training_state(student, run.path("stages", f"{name}.weights.h5"), summary["steps"])
    state["stages"][name] = summary
    atomic_json(run.path("run.json"), state)
    shutil.rmtree(run.path("backup", name), ignore_errors=True)


def _fine_tune_teacher(run, teacher, texts, train, validation, preprocessor):
    """The teacher fine-tuned on the whole training split (cached), when the config says so."""
    from kdistill import teachers

    config = run.config
    epochs = config.teacher.fine_tune_epochs
    if epochs is None:
        epochs = 2 if config.teacher.model == "minilm" else 0
    if not epochs:
        return teacher
    if getattr(teacher, "backbone", None) is None:
        raise ValueError("teacher.fine_tune_epochs: a SavedModel teacher is frozen and cannot "
                         "be fine-tuned; set it to 0.")
    started, cpu = _clock()
    # The teacher learns from the whole training set, so a run on a subset
    # (max_train_examples) reuses the teacher cached by a full run.
    full = train if config.data.max_train_examples is None else tokenize(texts.train,
                                                                          preprocessor)
    def batches_of(epochs):  # the student's batches: trimmed, of similar length (2-3x faster)
        return training_dataset(full, config.data.batch_size, epochs, seed=0,
                                trim=config.data.trim_padding,
                                group_by_length=config.data.group_by_length)

    batches, steps = batches_of(epochs)
    # A small training split gets more epochs: at least `fine_tune_min_steps` steps.
    needed = _epochs_for(epochs, steps, config.teacher.fine_tune_min_steps)
    if needed != epochs:
        epochs = needed
        batches, steps = batches_of(epochs)
    with run.strategy.scope():
        result = teachers.fine_tune_teacher(
            teacher, batches,
            None if validation is None else validation.dataset(config.data.eval_batch_size),
            epochs=epochs, learning_rate=config.teacher.fine_tune_learning_rate, seed=0,
            cache_dir=config.teacher.cache_dir, cache_key=texts.key, verbose=run.verbose,
            steps_per_epoch=steps, restore_best=config.teacher.fine_tune_restore_best,
            precision=run.precision)
    how = "reused the cached" if result.from_cache else "fine-tuned and cached the"
    best = result.history.get("best_epoch")
    note = f"{epochs} epochs of {steps} steps in {run.precision}" + (
        f", best epoch {best} kept (val_accuracy {max(result.history['val_accuracy']):.4g})"
        if best else "")
    run.timed("teacher fine-tuning", started, cpu, f"{how} teacher ({note}): {result.path}")
    return result.model


def _inputs_of(*splits):
    """The token inputs of the given splits (None skipped), one after the other, unlabelled."""
    return functools.reduce(Split.concatenate, [Split(s.inputs) for s in splits if s is not None])


def _outputs_dir(config):
    from kdistill.teachers import default_cache_dir

    return os.path.join(config.teacher.cache_dir or default_cache_dir(), "outputs")


def _make_student(run, teacher, preprocessor, train, read, num_classes):
    """The student: its vocabulary pruned to the word pieces of the text it `read`s when asked
    (`student.vocabulary_min_count`), then built."""
    config = run.config
    started, cpu = _clock()
    keras.utils.set_random_seed(config.seed)
    vocabulary = unknown_id = None
    if config.student.vocabulary_min_count is not None:
        from kdistill.vocabulary import corpus_vocabulary, special_token_ids

        if preprocessor is None or getattr(teacher, "backbone", None) is None:
            raise ValueError("student.vocabulary_min_count needs a keras-hub teacher and its "
                             "tokenizer; remove the key.")
        keep, unknown_id = special_token_ids(preprocessor.tokenizer)
        vocabulary = corpus_vocabulary(read.dataset(512), teacher.backbone.vocabulary_size,
                                       keep_ids=keep, min_count=config.student.vocabulary_min_count)
    calibration = None
    if config.student.init == "prune":
        count = min(len(train), config.student.calibration_examples)
        calibration = train.take(np.arange(count)).dataset(64)
    vocabulary_size = None if preprocessor is None else preprocessor.tokenizer.vocabulary_size()
    with run.strategy.scope():
        student = build_student(config, teacher, vocabulary_size, num_classes,
                                calibration=calibration, vocabulary=vocabulary,
                                unknown_id=unknown_id)
    note = f"init {config.student.init}"
    if vocabulary is not None:
        note += f", vocabulary {len(vocabulary):,} of {teacher.backbone.vocabulary_size:,} pieces"
    run.timed("student", started, cpu, note)
    return student


def _augmented(run, teacher, texts, train, preprocessor, teacher_digest, transferred):
    """The task stage's examples: the training split, plus TinyBERT augmentation when asked
    (`fill`: as much as the `transferred` unlabelled texts fall short of transfer_examples)."""
    from kdistill.data.augment import Augmenter, fill_samples

    config = run.config
    samples = config.data.augment_samples
    if samples == "fill":  # (`train` is already cut to data.max_train_examples)
        samples = fill_samples(config.data.transfer_examples, transferred, len(train))
    if not samples:
        return train
    started, cpu = _clock()
    if getattr(teacher, "backbone", None) is None or preprocessor is None:
        raise ValueError("data.augment_samples needs a keras-hub teacher and its tokenizer (its "
                         "token embeddings give the replacement words); set it to 0.")

    def compute():
        augmenter = Augmenter.for_teacher(teacher, preprocessor.tokenizer,
                                          num_samples=samples, seed=config.seed)
        source = texts.train
        if config.data.max_train_examples is not None:
            source = source.take(config.data.max_train_examples)
        split = tokenize(augmenter.transform(source), preprocessor)
        return dict(split.inputs, __labels__=split.labels)

    identity = {"kind": "augmented", "teacher": teacher_digest, "train": arrays_digest(
        dict(train.inputs, labels=train.labels)), "samples": samples,
        "seed": config.seed, "version": 1}
    arrays, path, reused = cached_arrays(_outputs_dir(config), "augmented", identity, compute)
    labels = arrays.pop("__labels__")
    split = Split(arrays, labels)
    run.timed("augmentation", started, cpu, f"{len(split):,} examples from {len(train):,}, "
              f"{samples} variants each ({'reused ' + path if reused else 'kept in ' + str(path)})")
    return split


def _with_teacher_logits(run, teacher, splits, teacher_digest):
    """The splits with the teacher's logits attached (computed once, kept on disk)."""
    started, cpu = _clock()
    present = {name: s for name, s in splits.items() if s is not None}
    identity = {"kind": "logits", "teacher": teacher_digest, "version": 1, "data": {
        name: arrays_digest(s.inputs) for name, s in present.items()}}
    if run.precision != "float32":  # (absent for float32: earlier caches stay valid)
        identity["precision"] = run.precision

    def compute():
        return teacher_logits_of_splits(teacher, present, precision=run.precision)

    arrays, path, reused = cached_arrays(_outputs_dir(run.config), "logits", identity, compute)
    run.timed("teacher logits", started, cpu, f"{sum(map(len, present.values())):,} examples "
              f"in {run.precision} "
              f"{'reused from ' + path if reused else 'cached in ' + str(path)}")
    return {name: None if s is None else Split(s.inputs, s.labels, {"logits": arrays[name]})
            for name, s in splits.items()}


def _task_data(run, teacher, texts, train, preprocessor, digest):
    """The task stage's `(train, transfer)`: the training split, augmented when asked, and the
    tokenised transfer text (or None). Made before the student, whose vocabulary counts them."""
    transfer = None
    if run.config.data.transfer_examples != 0:
        if texts.unlabelled is None:
            raise ValueError("data.transfer_examples: there is no unlabelled text; set "
                             "data.unlabelled.")
        transfer = tokenize(texts.unlabelled, preprocessor, run.config.data.transfer_examples)
    train = _augmented(run, teacher, texts, train, preprocessor, digest,
                       0 if transfer is None else len(transfer))
    return train, transfer


def _stage_data(run, stage, teacher, train, validation, transfer, digest):
    """A distillation stage's `(train, validation, teacher)`: joined by the teacher-labelled
    `transfer` text (the task stage's, else None); the teacher's logits attached (and no live
    teacher) with `cache_teacher`."""
    splits = {"train": train, "validation": validation, "transfer": transfer}
    if not stage.cache_teacher:
        if transfer is not None:  # the teacher's labels for the transfer text
            logits = _with_teacher_logits(run, teacher, {"transfer": transfer}, digest)
            labelled = logits["transfer"]
            train = train.concatenate(Split(transfer.inputs, np.argmax(
                labelled.teacher["logits"], axis=-1).astype(train.labels.dtype)))
        return train, validation, teacher
    cached = _with_teacher_logits(run, teacher, splits, digest)
    train = cached["train"]
    if transfer is not None:
        logits = cached["transfer"].teacher["logits"]
        train = train.concatenate(Split(transfer.inputs, np.argmax(logits, axis=-1).astype(
            train.labels.dtype), {"logits": logits}))
    return train, cached["validation"], None


LABELS_ONLY = "labels_only_"  # prefix of the labels-only baseline's stage names


def _labels_only(run, state, student, train, validation):
    """The baseline: the same student trained on the labels alone (`labels_only: true`).

    It starts from the distilled student's initial weights (`stages/initial.weights.h5`) and
    runs every configured stage but `general` (which has no labels) as student-only training
    with the stage's epochs, optimizer and schedule, on the labelled training split only (no
    augmentation or teacher-labelled transfer text), in the order the distillation stage of the
    same index used. No teacher runs. Resumable like the other stages.
    """
    config = run.config
    with run.strategy.scope():
        baseline = type(student).from_config(student.get_config())
        baseline(train.example())
    done = [n for n, _ in config.stages.items() if LABELS_ONLY + n in state["stages"]]
    load_training_state(baseline, run.path("stages", f"{LABELS_ONLY}{done[-1]}.weights.h5")
                        if done else run.path("stages", "initial.weights.h5"))
    for index, (name, stage) in enumerate(config.stages.items()):
        if name == "general" or stage.epochs == 0 or name in done:
            continue
        summary = _run_stage(run, index, LABELS_ONLY + name, stage, None, baseline, train,
                             validation, student_only=True)
        _finish_stage(run, state, LABELS_ONLY + name, summary, baseline)
    return baseline


def run(config, overwrite=False, quiet=False, strategy=None, texts=None, stage_callbacks=None):
    """Runs a distillation config end to end; resumes an unfinished run in the same directory.

    Args:
        config: `kdistill.config.RunConfig` (e.g. from `kdistill.config.load_config`).
        overwrite: bool. Replace a previous run in `config.output`.
        quiet: bool. No progress bars and no summary lines (errors still raise).
        strategy: `tf.distribute.Strategy` or None. Overrides `config.strategy` (e.g. an
            existing MirroredStrategy; create one per process).
        texts: `kdistill.data.TextSplits` or None. The examples, instead of reading
            `config.data`'s dataset or files (the TFX module passes tf.Example files this way);
            their elements are text (tokenised here) or token dicts.
        stage_callbacks: dict or None. `{stage name: [keras callbacks]}` added to that stage's
            `fit` (e.g. a test that stops the process at a given step).

    Returns:
        dict. The report also written to `OUTPUT/report.json`: `teacher` and `student`
        (accuracy, validation accuracy, loss, params, size, latency), `ratios`, `stages`,
        `steps` (wall and CPU time of the steps outside the stages), `export` (when
        configured), `summary` (with the `targets` checks) and `config`.

    Raises:
        FileExistsError: see `prepare_run_dir`.
        ValueError: a config that cannot work with these models or data (the message says
            which key to change).

    Example (not run here: it trains; `tests/test_runner.py` runs it on a tiny project):
    >>> from kdistill.config import load_config
    >>> config = load_config("examples/configs/rotten_tomatoes_quick.yaml",
    ...                      [(("output",), "runs/rt_quick", "--output")])  # doctest: +SKIP
    >>> report = run(config)  # doctest: +SKIP
    >>> report["ratios"]["param_ratio"] > 5  # doctest: +SKIP
    True
    """
    from kdistill.data import text_splits

    started = time.perf_counter()
    config_dict = config.to_dict()
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    strategy = strategy or make_strategy(config.strategy)
    check_jit_compile(config.jit_compile, strategy)
    output = config.output
    worker = worker_index(strategy)
    if worker:  # only the chief writes the run directory; other workers keep their own
        output = os.path.join(output, "workers", str(worker))
    run_state = prepare_run_dir(output, config_dict, overwrite=overwrite)
    runner = _Run(config, output, quiet, strategy, stage_callbacks)
    data = config.data
    runner.log(f"output: {os.path.abspath(output)}"
               + ("   (resuming an unfinished run)" if run_state["resumed"] else ""))

    # ---- data and teacher
    t0, cpu0 = _clock()
    texts = texts or text_splits(data)
    label_names = texts.label_names
    num_classes = len(label_names)
    spec = texts.train.element_spec
    tokens_given = isinstance(spec, dict) or (isinstance(spec, tuple) and isinstance(spec[0],
                                                                                   dict))
    with strategy.scope():
        teacher, preprocessor = load_teacher(config, num_classes,
                                             tokenizer_required=not tokens_given)
    limit, eval_limit = data.max_train_examples, data.max_eval_examples
    train = tokenize(texts.train, preprocessor, limit)
    validation = None if texts.validation is None else tokenize(
        texts.validation, preprocessor, eval_limit)
    test = validation if texts.test is None else tokenize(texts.test, preprocessor, eval_limit)
    runner.timed("data", t0, cpu0,
                 f"{len(train)} training examples, {num_classes} classes "
                 f"({', '.join(label_names[:5])}{', ...' if num_classes > 5 else ''}), "
                 f"validation {0 if validation is None else len(validation)}, "
                 f"test {0 if test is None else len(test)}")
    runner.precision = resolve_precision(config.teacher.precision, teacher)
    teacher = _fine_tune_teacher(runner, teacher, texts, train, validation, preprocessor)

    # ---- student
    stages = [(n, s) for n, s in config.stages.items() if s.epochs]
    general = any(n == "general" for n, _ in stages)
    pruned_vocabulary = config.student.vocabulary_min_count is not None
    digest, task_data = None, (None, None)
    if any(n == "task" for n, _ in stages) and (  # before the student: its vocabulary counts it
            pruned_vocabulary or "task" not in run_state["stages"]):
        digest = model_digest(teacher)
        task_data = _task_data(runner, teacher, texts, train, preprocessor, digest)
    unlabelled = None  # a general stage reads up to data.max_train_examples unlabelled texts
    if general and texts.unlabelled is not None:
        unlabelled = tokenize(texts.unlabelled, preprocessor, data.max_train_examples)
    corpus = _inputs_of(train, unlabelled) if general else None
    read = None  # the student's vocabulary counts every text it reads
    if pruned_vocabulary:
        task_train, task_transfer = task_data
        read = _inputs_of(train if task_train is None else task_train,
                          unlabelled if general else task_transfer)
    student = _make_student(runner, teacher, preprocessor, train, read, num_classes)
    teacher_params, student_params = teacher.count_params(), student.count_params()
    runner.log(f"student: {student_params:,} params vs the teacher's {teacher_params:,} "
               f"({teacher_params / student_params:.2f}x fewer)")
    initial = runner.path("stages", "initial.weights.h5")
    if config.labels_only and not os.path.exists(initial):  # the baseline's starting point
        save_training_state(student, initial, 0)
    finished = [n for n, _ in config.stages.items() if n in run_state["stages"]]
    if finished:
        load_training_state(student, runner.path("stages", f"{finished[-1]}.weights.h5"))
        runner.log(f"stages already finished: {', '.join(finished)} (student weights loaded)")

    # ---- stages
    for index, (name, stage) in enumerate(config.stages.items()):
        if stage.epochs == 0 or name in run_state["stages"]:
            continue
        stage_data, stage_validation, stage_teacher = train, validation, teacher
        if name == "general":
            stage_data = corpus
        transfer = None
        if name == "task":
            stage_data, transfer = task_data
        if name == "task" or getattr(stage, "cache_teacher", False):
            digest = digest or model_digest(teacher)
            stage_data, stage_validation, stage_teacher = _stage_data(
                runner, stage, teacher, stage_data, validation, transfer, digest)
        summary = _run_stage(runner, index, name, stage, stage_teacher, student, stage_data,
                             stage_validation)
        _finish_stage(runner, run_state, name, summary, student)

    baseline = None
    if config.labels_only:
        baseline = _labels_only(runner, run_state, student, train, validation)

    # ---- results
    report = final_report(runner, teacher, student, train, validation, test, run_state,
                           config_dict, label_names=list(label_names), labels_only=baseline,
                           preprocessor=None if tokens_given else preprocessor,
                           test_texts=None if tokens_given else (
                               texts.validation if texts.test is None else texts.test))
    if os.path.isdir(runner.path("backup")) and not os.listdir(runner.path("backup")):
        os.rmdir(runner.path("backup"))
    run_state["status"] = "finished"
    run_state["seconds"] = round(time.perf_counter() - started, 1)
    atomic_json(runner.path("run.json"), run_state)
    runner.log(f"done in {run_state['seconds']:.0f} s: {os.path.abspath(output)}")
    return report
