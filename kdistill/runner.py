"""Runs a validated `kdistill.config.RunConfig` end to end (`kdistill distill`), resumably.

`run(config)` loads the teacher and the tokenizer, tokenises the data, optionally fine-tunes
the teacher (cached), builds the student, runs the stages (general distillation, task
distillation, fine-tuning of the student alone), then measures the teacher and the student
(accuracy, size, batch-1 latency), writes plots and a report, and optionally exports the student.

Resuming. Each stage trains with `ResumableBackup`, a `keras.callbacks.BackupAndRestore` that
saves every `save_every` steps (weights, optimizer state, the step, and the dropout RNG state)
under `OUTPUT/backup/<stage>`. The order of the training examples is a function of the seed and
the epoch only (not of how often the data was iterated), so a run killed mid-epoch and started
again with the same command continues from the last backup on the same batches and ends with
the same weights as an uninterrupted run. A finished stage's student weights are kept under
`OUTPUT/stages/`, so a restart skips finished stages.

Output directory:

    config.json          the resolved config; a restart with the same config resumes
    run.json             status (running/finished), finished stages, per-stage summaries
    backup/<stage>/      the training state while a stage runs
    stages/<stage>.weights.h5
    logs/<stage>/        TensorBoard: every objective term, metrics, learning rate, temperature
    history.jsonl        the same per-step values as JSON lines (for plots)
    student.keras        the distilled student
    report.json          accuracy, size and latency of teacher and student; stage summaries
    loss_terms.png, tradeoff.png
    export/              SavedModel / TFLite files, when `export.formats` is set

A finished run's directory is refused unless `overwrite=True`; a directory that is not a
kdistill run is always refused.

The module also loads models from disk for `kdistill evaluate` / `benchmark` (`load_model`:
`.keras`, SavedModel or `.tflite`) and measures them (`evaluate_model`, `benchmark_models`).
"""

import dataclasses
import json
import math
import os
import shutil
import signal
import statistics
import sys
import time
import warnings

import h5py
import keras
import numpy as np
import tensorflow as tf

from kdistill import config as config_lib

RUN_KIND = "kdistill_run"
REPORT_KIND = "kdistill_run_report"
_OUTPUTS = ("config.json", "run.json", "backup", "stages", "logs", "history.jsonl",
            "student.keras", "report.json", "loss_terms.png", "tradeoff.png", "export")
_STATE_GROUP = "kdistill_state"
# Test hook: "<stage>:<step>" kills the process (SIGKILL) right after that optimizer step.
KILL_ENV = "KDISTILL_TEST_KILL_AT_STEP"


# ----------------------------------------------------------------------------- small helpers


def _atomic_json(path, value):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=2, default=_json_default)
    os.replace(tmp, path)


def _json_default(value):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _diff_keys(a, b, prefix=""):
    """Dotted keys whose values differ between two nested dicts."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(set(a) | set(b))
        return [k for key in keys for k in _diff_keys(a.get(key), b.get(key),
                                                        f"{prefix}.{key}" if prefix else key)]
    return [] if a == b else [prefix or "(top level)"]


# ----------------------------------------------------------------------------- output directory


def prepare_run_dir(path, config_dict, overwrite=False):
    """Checks `path` for a new or resumed run; returns the run state to continue from.

    A missing or empty directory starts a new run. A kdistill run directory (with `run.json`)
    whose run is unfinished and whose `config.json` equals `config_dict` is resumed. With
    `overwrite=True` a previous kdistill run's files (and only those) are removed and a new run
    starts. Anything else is refused.

    Args:
        path: str. The run directory.
        config_dict: dict. The resolved config (`RunConfig.to_dict()`).
        overwrite: bool. Replace a previous run (finished or not) in `path`.

    Returns:
        dict. The run state: `status`, `stages` (finished stages and their summaries),
        `resumed` (True when continuing an unfinished run).

    Raises:
        FileExistsError: a finished run (without `overwrite`), an unfinished run with another
            config (without `overwrite`), a file, or a directory that is not a kdistill run.

    Example:
    >>> import tempfile
    >>> out = os.path.join(tempfile.mkdtemp(), "run")
    >>> prepare_run_dir(out, {"seed": 0})["resumed"]
    False
    >>> prepare_run_dir(out, {"seed": 0})["resumed"]
    True
    >>> prepare_run_dir(out, {"seed": 1})
    Traceback (most recent call last):
    ...
    FileExistsError: ... holds an unfinished run with a different config (differs in: seed)...
    """
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise FileExistsError(f"{path} exists and is a file; choose another output directory.")
    state = _read_json(os.path.join(path, "run.json")) if os.path.isdir(path) else None
    # Other workers of a multi-worker run may have created `workers/` first.
    entries = [e for e in os.listdir(path) if e != "workers"] if os.path.isdir(path) else []
    if entries and (not isinstance(state, dict) or state.get("kind") != RUN_KIND):
        raise FileExistsError(
            f"{path} exists and is not a kdistill run directory (no run.json of kind "
            f"{RUN_KIND!r}); refusing to write into it. Choose another output directory.")
    if state is not None:
        previous = _read_json(os.path.join(path, "config.json"))
        if not overwrite:
            if state.get("status") == "finished":
                raise FileExistsError(
                    f"{path} holds a finished run; pass --overwrite (overwrite=True) to replace "
                    "it, or choose another output directory.")
            differs = [k for k in _diff_keys(previous or {}, config_dict) if k != "output"]
            if differs:  # (a moved run directory still resumes)
                differs = ", ".join(differs[:8])
                raise FileExistsError(
                    f"{path} holds an unfinished run with a different config (differs in: "
                    f"{differs}). Run the same config to resume it, or pass --overwrite to "
                    "start over.")
            state["resumed"] = True
            return state
        for name in _OUTPUTS:
            target = os.path.join(path, name)
            if os.path.isdir(target):
                shutil.rmtree(target)
            elif os.path.exists(target):
                os.remove(target)
    os.makedirs(path, exist_ok=True)
    _atomic_json(os.path.join(path, "config.json"), config_dict)
    state = {"kind": RUN_KIND, "status": "running", "stages": {}, "resumed": False}
    _atomic_json(os.path.join(path, "run.json"), state)
    return state


# ----------------------------------------------------------------------------- data


@dataclasses.dataclass
class Split:
    """Tokenised examples held in memory.

    Attributes:
        inputs: dict of str -> np.ndarray. `token_ids`, `padding_mask`, `segment_ids`, each
            `[examples, sequence_length]`.
        labels: np.ndarray or None. Integer class ids `[examples]`, None for unlabelled text.

    Example:
    >>> split = Split({"token_ids": np.zeros((3, 4), "int32")}, np.array([0, 1, 1]))
    >>> len(split), split.example()["token_ids"].shape
    (3, (1, 4))
    """

    inputs: dict
    labels: np.ndarray | None = None

    def __len__(self):
        return int(next(iter(self.inputs.values())).shape[0])

    def dataset(self, batch_size):
        """A batched, cached `tf.data.Dataset` in file order (`(inputs, labels)` or `inputs`)."""
        elements = self.inputs if self.labels is None else (self.inputs, self.labels)
        return tf.data.Dataset.from_tensor_slices(elements).batch(batch_size).cache().prefetch(2)

    def example(self, i=0):
        """One example as a batch of 1 (`{name: array [1, seq]}`)."""
        return {k: v[i:i + 1] for k, v in self.inputs.items()}


_EAGER_TOKENIZE = 2048  # examples


def tokenize(texts, preprocessor, limit=None):
    """Tokenises an unbatched text dataset (`(text, label)` or `text`) into a `Split`.

    Args:
        texts: `tf.data.Dataset`. Elements `(text, label)`, `((text, pair), label)` or `text`.
        preprocessor: a keras-hub text classifier preprocessor.
        limit: int or None. Keep only the first `limit` examples.

    Returns:
        A `Split`.

    Example:
    >>> import keras_hub
    >>> vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "film"]
    >>> preprocessor = keras_hub.models.BertTextClassifierPreprocessor(
    ...     keras_hub.tokenizers.BertTokenizer(vocabulary=vocab), sequence_length=6)
    >>> split = tokenize(tf.data.Dataset.from_tensor_slices((["good film", "film"], [1, 0])),
    ...                  preprocessor)
    >>> len(split), split.inputs["token_ids"][0].tolist(), split.labels.tolist()
    (2, [2, 5, 6, 3, 0, 0], [1, 0])
    """
    from kdistill.data import tokenize_dataset

    if limit is not None:
        texts = texts.take(limit)
    if 0 <= int(texts.cardinality()) <= _EAGER_TOKENIZE:
        # Small data: calling the preprocessor eagerly beats tracing it inside tf.data (~2 s).
        labelled = isinstance(texts.element_spec, tuple) and texts.element_spec[-1].dtype != (
            tf.string)
        chunks = [(preprocessor(b[0]), b[1]) if labelled else preprocessor(b)
                  for b in texts.batch(512)]
        chunks = tf.nest.map_structure(lambda t: t.numpy(), chunks)
    else:
        chunks = list(tokenize_dataset(texts, preprocessor, batch_size=512).as_numpy_iterator())
    if not chunks:
        raise ValueError("No examples to tokenise (an empty split or file).")
    labelled = isinstance(chunks[0], tuple)
    xs = [c[0] for c in chunks] if labelled else chunks
    inputs = {k: np.concatenate([x[k] for x in xs]) for k in xs[0]}
    labels = np.concatenate([c[1] for c in chunks]) if labelled else None
    return Split(inputs, labels)


def training_dataset(split, batch_size, epochs, seed, start=0, stop=None, trim=True):
    """The batches of `epochs` passes over `split`, from global step `start` to `stop`.

    Epoch `e` visits the examples in the order `np.random.default_rng([seed, e]).permutation`,
    cut into batches (the last one may be smaller). The order depends on the seed and the epoch
    only, so the stream can be restarted at any step (`start`) and yields exactly the batches an
    uninterrupted pass would have yielded from there.

    Args:
        split: `Split`. With labels: `(inputs, labels)` batches; without: `inputs`.
        batch_size: int. Global batch size.
        epochs: int. Number of passes.
        seed: int. Seed of the order.
        start: int. First global step (batch index over all epochs).
        stop: int or None. One past the last global step (default: the end).
        trim: bool. Cut each batch's trailing all-padding columns (see
            `kdistill.demo.trim_padding`).

    Returns:
        `(dataset, steps_per_epoch)`.

    Example:
    >>> split = Split({"token_ids": np.arange(10).reshape(5, 2)}, np.arange(5, dtype="int32"))
    >>> ds, steps = training_dataset(split, 2, epochs=2, seed=0, trim=False)
    >>> batches = [y.tolist() for _, y in ds.as_numpy_iterator()]
    >>> steps, [len(b) for b in batches], sorted(sum(batches[:3], []))
    (3, [2, 2, 1, 2, 2, 1], [0, 1, 2, 3, 4])
    >>> tail, _ = training_dataset(split, 2, epochs=2, seed=0, start=4, trim=False)
    >>> [y.tolist() for _, y in tail.as_numpy_iterator()] == batches[4:]
    True
    """
    n = len(split)
    steps = math.ceil(n / batch_size)
    table = np.zeros((epochs * steps, batch_size), "int32")
    sizes = np.zeros((epochs * steps,), "int32")
    for epoch in range(epochs):
        order = np.random.default_rng([seed, epoch]).permutation(n)
        for b in range(steps):
            chunk = order[b * batch_size:(b + 1) * batch_size]
            table[epoch * steps + b, :len(chunk)] = chunk
            sizes[epoch * steps + b] = len(chunk)
    stop = epochs * steps if stop is None else stop
    inputs = {k: tf.constant(v) for k, v in split.inputs.items()}
    labels = None if split.labels is None else tf.constant(split.labels)

    def gather(index, size):
        index = index[:size]
        x = {k: tf.gather(v, index) for k, v in inputs.items()}
        return x if labels is None else (x, tf.gather(labels, index))

    dataset = tf.data.Dataset.from_tensor_slices((table[start:stop], sizes[start:stop]))
    dataset = dataset.map(gather)
    if trim and "padding_mask" in split.inputs:
        from kdistill.demo import trim_padding

        dataset = trim_padding(dataset)
    return dataset.prefetch(2), steps


def _text_splits(data, label_names=None):
    """`{train, validation, test, unlabelled}` text datasets and the class names."""
    from kdistill import data as kdata

    if data.dataset is not None:
        load = lambda split: kdata.load(data.dataset, split=split, data_dir=data.data_dir)  # noqa
        train = load("train")
        splits = {"train": train, "validation": load("validation"), "test": load("test"),
                  "unlabelled": train.map(lambda text, label: text).concatenate(
                      load("unlabelled"))}
        return splits, list(kdata.LABEL_NAMES)

    def read(path, names=None, labelled=True):
        return kdata.load_text_file(
            path, text_column=data.text_column,
            label_column=data.label_column if labelled else None,
            text_pair_column=data.text_pair_column, label_names=names)

    train = read(data.train, data.label_names or label_names)
    names = train.label_names
    splits = {"train": train.dataset}
    for key in ("validation", "test"):
        path = getattr(data, key)
        splits[key] = None if path is None else read(path, names).dataset
    if data.unlabelled is not None:
        splits["unlabelled"] = read(data.unlabelled, labelled=False).dataset
    else:
        splits["unlabelled"] = train.dataset.map(lambda text, label: text)
    return splits, names


def make_preprocessor(vocabulary, sequence_length, lowercase=True):
    """A BERT WordPiece preprocessor from a `vocab.txt` file, or `"minilm"` (the packaged one).

    Args:
        vocabulary: str. A vocabulary file (one token per line) or `"minilm"`.
        sequence_length: int. Tokens per example (with `[CLS]` and `[SEP]`).
        lowercase: bool. Lower-case the text first.

    Returns:
        A `keras_hub.models.BertTextClassifierPreprocessor`.

    Example:
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "vocab.txt")
    >>> with open(path, "w") as f:
    ...     _ = f.write("\\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "film"]))
    >>> make_preprocessor(path, 4)(["Film"])["token_ids"].numpy().tolist()
    [[2, 5, 3, 0]]
    """
    import keras_hub

    if vocabulary == "minilm":
        from kdistill.teachers import packaged_model_dir

        vocabulary = os.path.join(packaged_model_dir(), "vocab.txt")
    tokenizer = keras_hub.tokenizers.BertTokenizer(vocabulary=vocabulary, lowercase=lowercase)
    return keras_hub.models.BertTextClassifierPreprocessor(tokenizer,
                                                           sequence_length=sequence_length)


# ----------------------------------------------------------------------------- models


def _num_outputs(model):
    try:
        return int(model.output.shape[-1])
    except (AttributeError, ValueError, TypeError):
        return None


def _detach_preprocessor(model):
    preprocessor = getattr(model, "preprocessor", None)
    if preprocessor is not None:
        model.preprocessor = None  # the data is tokenised once, outside the model
    return preprocessor


def load_teacher(config, num_classes):
    """The teacher and the preprocessor that tokenises its inputs, as the config says.

    Args:
        config: `RunConfig`.
        num_classes: int. Classes in the data.

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
        preprocessor = _detach_preprocessor(teacher)
    if data.vocabulary is not None:
        preprocessor = make_preprocessor(data.vocabulary, data.sequence_length, data.lowercase)
    elif preprocessor is None:
        raise ValueError(
            f"data.vocabulary: the teacher {source} carries no tokenizer; set data.vocabulary to "
            "the vocab.txt it was trained with (or `minilm` for the packaged BERT uncased one).")
    else:
        preprocessor.sequence_length = data.sequence_length
    outputs = _num_outputs(teacher)
    if outputs is not None and outputs != num_classes:
        raise ValueError(
            f"The teacher {source} outputs {outputs} classes but the data has {num_classes} "
            "labels; check data.label_column / data.label_names, or the teacher.")
    backbone = getattr(teacher, "backbone", None)
    vocab = preprocessor.tokenizer.vocabulary_size()
    if backbone is not None and backbone.vocabulary_size != vocab:
        raise ValueError(
            f"The tokenizer has {vocab} tokens but the teacher's embedding table "
            f"{backbone.vocabulary_size}: set data.vocabulary to the teacher's own vocab.txt.")
    return teacher, preprocessor


def build_student(config, teacher, vocabulary_size, num_classes):
    """The student the config describes, sized for the teacher's vocabulary and classes.

    Args:
        config: `RunConfig`.
        teacher: keras.Model. A keras-hub teacher gives its vocabulary, classes and (for `svd`
            and `from_teacher`) its weights; other teachers (SavedModels) allow `random` only.
        vocabulary_size: int. The tokenizer's vocabulary size.
        num_classes: int.

    Returns:
        A keras-hub classifier.

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
    if s.init == "from_teacher":
        if not keras_hub_teacher:
            raise ValueError("student.init: from_teacher needs a keras-hub teacher (a .keras "
                             "BERT-family model or minilm), not a SavedModel.")
        return students.from_teacher(teacher, num_layers=s.num_layers, strategy=s.layer_strategy,
                                     layers=s.teacher_layers)
    if keras_hub_teacher:
        return students.student_for(
            teacher, s.preset, embedding_init="svd" if s.init == "svd" else None,
            max_sequence_length=config.data.sequence_length, dropout=s.dropout, **s.overrides())
    if s.init == "svd":
        raise ValueError("student.init: svd needs a keras-hub teacher's embeddings; with a "
                         "SavedModel teacher use init: random.")
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


def make_strategy(name):
    """The `tf.distribute` strategy the config names.

    Args:
        name: str. `default` (the current/default strategy: one device), `mirrored` (all local
            devices) or `multi_worker` (the cluster in `TF_CONFIG`).

    Returns:
        A `tf.distribute.Strategy`.

    Example:
    >>> make_strategy("default").num_replicas_in_sync
    1
    """
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def _worker_index(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return 0
    has_chief = "chief" in (resolver.cluster_spec().as_dict() or {})
    if resolver.task_type == "chief" or (resolver.task_type == "worker" and not has_chief and
                                         resolver.task_id == 0):
        return 0
    return 1 + int(resolver.task_id)


# ----------------------------------------------------------------------------- training state


def _seed_variables(model):
    """The dropout RNG states (`keras.random.SeedGenerator`), which weights files leave out."""
    return [v for v in model.variables if v.name == "seed_generator_state"]


def save_training_state(model, path, step):
    """Writes `model.save_weights` plus the step and dropout RNG state, atomically.

    Args:
        model: keras.Model. Built (and compiled, to include the optimizer).
        path: str. Ends in `.weights.h5`.
        step: int. Recorded as the file's `step`.

    Example:
    >>> import tempfile
    >>> from kdistill import testing
    >>> path = os.path.join(tempfile.mkdtemp(), "state.weights.h5")
    >>> save_training_state(testing.tiny_mlp(), path, step=7)
    >>> saved_step(path), load_training_state(testing.tiny_mlp(), path)
    (7, 7)
    """
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".partial-{os.getpid()}.weights.h5")
    model.save_weights(tmp, overwrite=True)
    with h5py.File(tmp, "a") as f:
        group = f.create_group(_STATE_GROUP)
        group.attrs["step"] = int(step)
        seeds = [keras.ops.convert_to_numpy(v) for v in _seed_variables(model)]
        group.create_dataset("seed_states", data=np.asarray(seeds, "int64").reshape(-1, 2))
    os.replace(tmp, path)


def load_training_state(model, path):
    """Loads a file written by `save_training_state`; returns its step.

    Args:
        model: keras.Model. Built like the one that was saved.
        path: str.

    Returns:
        int. The saved step.

    Raises:
        ValueError: the file holds another number of dropout RNG states than the model.

    Example: see `save_training_state`.
    """
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and not optimizer.built:
        optimizer.build(model.trainable_variables)
    model.load_weights(path)
    with h5py.File(path, "r") as f:
        group = f[_STATE_GROUP]
        seeds = group["seed_states"][()]
        step = int(group.attrs["step"])
    variables = _seed_variables(model)
    if len(variables) != len(seeds):
        raise ValueError(f"{path} holds {len(seeds)} dropout RNG states but the model has "
                         f"{len(variables)}: it was saved from another architecture.")
    for variable, value in zip(variables, seeds):
        variable.assign(value.astype(keras.backend.standardize_dtype(variable.dtype)))
    return step


def saved_step(path):
    """The step recorded in a `save_training_state` file, or None if there is none.

    Example:
    >>> saved_step("/nonexistent.weights.h5") is None
    True
    """
    if not os.path.isfile(path):
        return None
    try:
        with h5py.File(path, "r") as f:
            return int(f[_STATE_GROUP].attrs["step"])
    except (OSError, KeyError):
        return None


class ResumableBackup(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` that resumes mid-epoch on exactly the same state.

    Compared with Keras' callback it saves atomically (a kill while saving leaves the previous
    backup intact), records the global optimizer step and the dropout RNG states with the
    weights (Keras' weights files leave those out), and restores only a backup that is ahead of
    the model, once. Where to continue in the data is the caller's job: read the step with
    `saved_step(callback.weights_path)` and start the data stream there (see
    `training_dataset`). The backup is kept after training (`delete_checkpoint=False`); delete
    `backup_dir` once the result is saved elsewhere.

    Args:
        backup_dir: str. Directory of the backup (used by nothing else).
        save_freq: int. Save every this many optimizer steps.
        steps_per_epoch: int. For the epoch/batch recorded in `training_metadata.json`.

    Example:
    >>> import tempfile
    >>> callback = ResumableBackup(tempfile.mkdtemp(), save_freq=10, steps_per_epoch=4)
    >>> callback.weights_path.endswith("latest.weights.h5")
    True
    """

    def __init__(self, backup_dir, save_freq, steps_per_epoch):
        super().__init__(backup_dir, save_freq=int(save_freq), delete_checkpoint=False)
        self.steps_per_epoch = int(steps_per_epoch)
        self.weights_path = self._weights_path

    def on_train_begin(self, logs=None):
        self.restore()

    def restore(self):
        """Loads the backup into `self.model` if it is ahead of it; returns the step or None."""
        step = saved_step(self._weights_path)
        current = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        if step is None or step <= current:
            return None
        return load_training_state(self.model, self._weights_path)

    def _save_model(self):
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        save_training_state(self.model, self._weights_path, step)
        epoch, batch = divmod(step, self.steps_per_epoch)
        _atomic_json(self._training_metadata_path, {"epoch": epoch, "batch": batch,
                                                    "step": step})


def _scalar(tag, value, step):
    """A TensorBoard scalar, written as TensorBoard's own `scalar` does (no tensorboard import)."""
    from tensorflow.core.framework import summary_pb2

    metadata = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
    tf.summary.write(tag, tf.constant(float(value), tf.float32), step=step, metadata=metadata)


class RunLogger(keras.callbacks.Callback):
    """Every `every` steps: each term and metric, the learning rate and the temperatures.

    Values are means over the steps since the previous point (from the metrics' running
    `total`/`count`, reduced over replicas), written to TensorBoard (`train/<name>`,
    `schedule/<name>`; per epoch `epoch/<name>` and `epoch/val_<name>`) with the global
    optimizer step, and appended to a JSON-lines history for plots.

    Args:
        stage: str. Stage name, recorded with every point.
        log_dir: str or None. TensorBoard directory.
        history_path: str or None. JSON-lines file to append to.
        every: int. Steps between points.
        term_names: list of str. Names of the loss terms (the rest are metrics).
        objectives: list. The Distiller's objectives; those with a `temperature` (and `alpha`)
            are logged as `schedule/<name>_temperature` (`_alpha`).

    Example:
    >>> import tempfile
    >>> from kdistill import testing
    >>> model = testing.tiny_mlp()
    >>> model.compile(optimizer="adam", loss="mse")
    >>> out = tempfile.mkdtemp()
    >>> logger = RunLogger("task", None, os.path.join(out, "h.jsonl"), 1, ["loss"])
    >>> _ = model.fit(np.ones((4, 8)), np.zeros((4, 3)), batch_size=2, verbose=0,
    ...               callbacks=[logger])
    >>> from kdistill.plots import read_history
    >>> [(r["step"], sorted(r["terms"])) for r in read_history(os.path.join(out, "h.jsonl"))]
    [(1, ['loss']), (2, ['loss']), (2, ['loss'])]
    """

    def __init__(self, stage, log_dir, history_path, every, term_names, objectives=()):
        super().__init__()
        self.stage = stage
        self.log_dir = log_dir
        self.history_path = history_path
        self.every = int(every)
        self.term_names = set(term_names)
        self.objectives = [o for o in objectives if hasattr(o, "temperature")]
        self._writer = None
        self._previous = {}
        self._epoch = 0

    def _step(self):
        return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def on_train_begin(self, logs=None):
        if self.log_dir is not None:
            self._writer = tf.summary.create_file_writer(self.log_dir)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._previous = {}

    def _window_means(self):
        means = {}
        for metric in self.model.metrics:
            variables = {v.name: v for v in metric.variables}
            if set(variables) != {"total", "count"}:
                continue
            total = float(keras.ops.convert_to_numpy(variables["total"]))
            count = float(keras.ops.convert_to_numpy(variables["count"]))
            last_total, last_count = self._previous.get(metric.name, (0.0, 0.0))
            if count < last_count:  # the metric was reset
                last_total, last_count = 0.0, 0.0
            if count > last_count:
                means[metric.name] = (total - last_total) / (count - last_count)
            self._previous[metric.name] = (total, count)
        return means

    def _schedule(self):
        rate = self.model.optimizer.learning_rate
        values = {"learning_rate": float(keras.ops.convert_to_numpy(rate))}
        for objective in self.objectives:
            values[f"{objective.name}_temperature"] = float(objective.temperature)
            if hasattr(objective, "alpha"):
                values[f"{objective.name}_alpha"] = float(objective.alpha)
        return values

    def _record(self, kind, step, values, schedule=None):
        terms = {k: v for k, v in values.items() if k in self.term_names}
        metrics = {k: v for k, v in values.items() if k not in self.term_names}
        if self._writer is not None:
            with self._writer.as_default():
                prefix = "train" if kind == "step" else "epoch"
                for name, value in values.items():
                    _scalar(f"{prefix}/{name}", value, step)
                for name, value in (schedule or {}).items():
                    _scalar(f"schedule/{name}", value, step)
        if self.history_path is not None:
            record = {"stage": self.stage, "step": step, "epoch": self._epoch, "kind": kind,
                      "terms": terms, "metrics": metrics}
            if schedule:
                record["schedule"] = schedule
            with open(self.history_path, "a") as f:
                f.write(json.dumps(record, default=_json_default) + "\n")

    def on_train_batch_end(self, batch, logs=None):
        step = self._step()
        if step % self.every:
            return
        values = {k: float(v) for k, v in (logs or {}).items()}
        values.update(self._window_means())
        self._record("step", step, values, self._schedule())

    def on_epoch_end(self, epoch, logs=None):
        values = {k: float(v) for k, v in (logs or {}).items()}
        self._record("epoch", self._step(), values)
        if self._writer is not None:
            self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class _KillForTest(keras.callbacks.Callback):
    """Test hook (`$KDISTILL_TEST_KILL_AT_STEP=stage:step`): SIGKILL after that optimizer step."""

    def __init__(self, stage, step):
        super().__init__()
        self.stage, self.step = stage, step

    def on_train_batch_end(self, batch, logs=None):
        if int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)) == self.step:
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)


def _kill_hook(stage):
    value = os.environ.get(KILL_ENV)
    if not value:
        return []
    name, _, step = value.partition(":")
    return [_KillForTest(stage, int(step))] if name == stage else []


def _truncate_history(path, stage, step):
    """Drops the history points of `stage` after `step` (written before a kill)."""
    if not os.path.exists(path):
        return
    kept = []
    with open(path) as f:
        for line in f:
            record = json.loads(line) if line.strip() else None
            if record and not (record["stage"] == stage and record["step"] > step):
                kept.append(line)
    with open(f"{path}.tmp", "w") as f:
        f.writelines(kept)
    os.replace(f"{path}.tmp", path)


# ----------------------------------------------------------------------------- measuring models


@dataclasses.dataclass
class LoadedModel:
    """A model from disk behind one interface: logits for a batch of token inputs.

    Attributes:
        name: str. Shown in tables (the file name).
        kind: str. `"keras"`, `"saved_model"` or `"tflite"`.
        path: str or None.
        predict: callable. `{input name: np.ndarray [batch, seq]} -> np.ndarray logits`.
        input_names: list of str.
        sequence_length: int or None. Fixed by the file (SavedModel, TFLite), or None.
        size_bytes: int. On disk (or the in-memory weights of a Keras model).
        params: int or None.
        model: the underlying object (keras.Model, signature or interpreter runner).
        preprocessor: the keras-hub preprocessor saved with a `.keras` model, or None.
        max_length: int or None. The longest input a keras-hub model takes (its position
            table), or None.
    """

    name: str
    kind: str
    path: str | None
    predict: object
    input_names: list
    sequence_length: int | None
    size_bytes: int
    params: int | None = None
    model: object = None
    preprocessor: object = None
    max_length: int | None = None

    def describe(self):
        """`{name, kind, path, size_bytes, params}` for tables and JSON."""
        return {"name": self.name, "kind": self.kind, "path": self.path,
                "size_bytes": self.size_bytes, "params": self.params}


def _dir_size(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path)
               for f in files)


def _weights_bytes(model):
    return int(sum(np.prod(v.shape) * np.dtype(v.dtype).itemsize for v in model.weights))


def _conform(array, length, dtype):
    array = np.asarray(array)
    if length is not None and array.ndim >= 2:
        if array.shape[1] > length:
            array = array[:, :length]
        elif array.shape[1] < length:
            array = np.pad(array, [(0, 0), (0, length - array.shape[1])])
    return array.astype(dtype)


def keras_model(model, name=None, path=None):
    """Wraps an in-memory keras.Model as a `LoadedModel` (batched, compiled forward).

    Example:
    >>> from kdistill import testing
    >>> m = keras_model(testing.tiny_bert_classifier(num_classes=2), name="tiny")
    >>> x, _ = testing.token_batch(batch_size=3)
    >>> m.predict(x).shape
    (3, 2)
    """
    inputs = model.input
    names = list(inputs) if isinstance(inputs, dict) else [getattr(inputs, "name", "inputs")]

    @tf.function(reduce_retracing=True)
    def forward(x):
        out = model(x if isinstance(inputs, dict) else x[names[0]], training=False)
        return tf.cast(out["logits"] if isinstance(out, dict) else out, tf.float32)

    def predict(x):
        return forward({k: tf.constant(x[k]) for k in names}).numpy()

    backbone = getattr(model, "backbone", None)
    return LoadedModel(name or model.name, "keras", path, predict, names, None,
                       _weights_bytes(model) if path is None else _dir_size(path),
                       int(model.count_params()), model,
                       max_length=getattr(backbone, "max_sequence_length", None))


def load_model(path):
    """Loads a `.keras` file, a SavedModel directory or a `.tflite` file for evaluation.

    Args:
        path: str.

    Returns:
        A `LoadedModel`.

    Raises:
        FileNotFoundError: nothing at `path`.
        ValueError: not one of the three kinds, or no `serving_default` signature.

    Example:
    >>> import tempfile
    >>> from kdistill import testing
    >>> path = os.path.join(tempfile.mkdtemp(), "tiny.keras")
    >>> testing.tiny_bert_classifier(num_classes=2).save(path)
    >>> model = load_model(path)
    >>> model.kind, sorted(model.input_names)
    ('keras', ['padding_mask', 'segment_ids', 'token_ids'])
    """
    path = os.fspath(path)
    name = os.path.basename(os.path.normpath(path))
    if not os.path.exists(path):
        raise FileNotFoundError(f"No model at {path}: expected a .keras file, a SavedModel "
                                "directory or a .tflite file.")
    if path.endswith(".tflite"):
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=path)
        runner = interpreter.get_signature_runner("serving_default")
        details = runner.get_input_details()
        lengths = {d["shape"][1] for d in details.values() if len(d["shape"]) >= 2}
        length = lengths.pop() if len(lengths) == 1 else None
        dtypes = {k: d["dtype"] for k, d in details.items()}

        def predict(x):
            rows = []
            for i in range(len(next(iter(x.values())))):
                row = {k: _conform(x[k][i:i + 1], length, dtypes[k]) for k in dtypes}
                rows.append(runner(**row)["logits"])
            return np.concatenate(rows).astype("float32")

        return LoadedModel(name, "tflite", path, predict, sorted(dtypes), length,
                           _dir_size(path), None, runner)
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "saved_model.pb")):
            raise ValueError(f"{path} is a directory but not a SavedModel (no saved_model.pb).")
        loaded = tf.saved_model.load(path)
        if "serving_default" not in loaded.signatures:
            raise ValueError(f"The SavedModel {path} has no serving_default signature.")
        signature = loaded.signatures["serving_default"]
        specs = signature.structured_input_signature[1]
        lengths = {s.shape[1] for s in specs.values() if s.shape.rank and s.shape.rank >= 2}
        length = lengths.pop() if len(lengths) == 1 else None
        outputs = list(signature.structured_outputs)
        key = "logits" if "logits" in outputs else outputs[0]

        def predict(x):
            feed = {k: tf.constant(_conform(x[k], length, s.dtype.as_numpy_dtype))
                    for k, s in specs.items()}
            return signature(**feed)[key].numpy().astype("float32")

        params = int(sum(np.prod(v.shape) for v in loaded.variables if v.dtype.is_floating))
        return LoadedModel(name, "saved_model", path, predict, sorted(specs), length,
                           _dir_size(path), params, loaded)
    if not path.endswith((".keras", ".h5")):
        raise ValueError(f"{path}: unknown model file; use a .keras file, a SavedModel "
                         "directory or a .tflite file.")
    import keras_hub  # noqa: F401 - registers keras-hub classes for deserialisation

    model = keras.saving.load_model(path, compile=False)
    loaded = keras_model(model, name=name, path=path)
    loaded.preprocessor = _detach_preprocessor(model)
    return loaded


def evaluate_model(model, split, batch_size=64):
    """Accuracy and mean cross-entropy of a `LoadedModel`'s logits on a labelled `Split`.

    Args:
        model: `LoadedModel`.
        split: `Split` with labels.
        batch_size: int.

    Returns:
        dict: `accuracy`, `loss`, `num_examples`.

    Example:
    >>> from kdistill import testing
    >>> x, y = testing.token_batch(batch_size=8, num_classes=2)
    >>> m = keras_model(testing.tiny_bert_classifier(num_classes=2))
    >>> sorted(evaluate_model(m, Split(x, y)))
    ['accuracy', 'loss', 'num_examples']
    """
    if split.labels is None:
        raise ValueError("evaluate_model needs labelled data.")
    logits = np.concatenate([
        model.predict({k: v[i:i + batch_size] for k, v in split.inputs.items()})
        for i in range(0, len(split), batch_size)])
    labels = split.labels.astype("int64")
    if labels.max(initial=0) >= logits.shape[-1]:
        raise ValueError(f"{model.name} outputs {logits.shape[-1]} classes but the data has "
                         f"labels up to {labels.max()}.")
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return {"accuracy": float(np.mean(np.argmax(logits, -1) == labels)),
            "loss": float(-np.mean(log_probs[np.arange(len(labels)), labels])),
            "num_examples": int(len(labels))}


def benchmark_models(models, example, runs=50, warmup=5):
    """Median batch-1 latency of several models, measured in interleaved rounds.

    Each round runs every model once on the same example, so load changes on a shared machine
    hit all models alike; ratios between the medians are what to compare.

    Args:
        models: list of `LoadedModel`.
        example: dict of `[1, seq]` arrays.
        runs: int. Timed rounds.
        warmup: int. Untimed rounds first.

    Returns:
        list of float. Median milliseconds per model, in order.

    Example:
    >>> from kdistill import testing
    >>> m = keras_model(testing.tiny_bert_classifier(num_classes=2))
    >>> x, _ = testing.token_batch(batch_size=1)
    >>> [ms > 0 for ms in benchmark_models([m, m], x, runs=3, warmup=1)]
    [True, True]
    """
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}.")
    for _ in range(warmup):
        for model in models:
            model.predict(example)
    times = [[] for _ in models]
    for _ in range(runs):
        for i, model in enumerate(models):
            start = time.perf_counter()
            model.predict(example)
            times[i].append(time.perf_counter() - start)
    return [1000.0 * statistics.median(t) for t in times]


# ----------------------------------------------------------------------------- the run


class _Run:
    """State shared by the steps of one `run` call."""

    def __init__(self, config, output, quiet, strategy):
        self.config = config
        self.output = output
        self.quiet = quiet
        self.strategy = strategy
        self.verbose = 0 if quiet else "auto"

    def path(self, *parts):
        return os.path.join(self.output, *parts)

    def log(self, message):
        if not self.quiet:
            print(f"[kdistill] {message}", flush=True)


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


def _run_stage(run, index, name, stage, teacher, student, train, validation):
    """Trains one stage, resuming from its backup; returns the stage summary."""
    from kdistill.distiller import Distiller

    config = run.config
    data = config.data
    started = time.perf_counter()
    steps = math.ceil(len(train) / data.batch_size)
    total = stage.epochs * steps
    backup_dir = run.path("backup", name)
    keras.utils.set_random_seed(config.seed + 1000 * (index + 1))  # projections of this stage
    with run.strategy.scope():
        if name == "finetune":
            model = student
            term_names, objectives = ["loss"], []
            model.compile(optimizer=make_optimizer(stage, total),
                          loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                          metrics=_metrics_for(config, with_teacher=False),
                          jit_compile=config.jit_compile)
        else:
            objectives = config_lib.build_objectives(stage.objectives, config.layer_map)
            model = Distiller(teacher, student, objectives=objectives)
            term_names = ["loss"] + [n for o in objectives for n in o.term_names()]
            labelled = train.labels is not None
            model.compile(optimizer=make_optimizer(stage, total),
                          metrics=_metrics_for(config, with_teacher=True) if labelled else None,
                          jit_compile=config.jit_compile)
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
        _truncate_history(history_path, name, start)
    logger = RunLogger(name, run.path("logs", name), history_path, config.log_every,
                       term_names, objectives)
    scheduler = stage.scheduler(steps) if hasattr(stage, "scheduler") else None
    callbacks = ([scheduler] if scheduler else []) + [backup, logger] + _kill_hook(name)
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
                                      end_step, trim=data.trim_padding)
        result = model.fit(dataset, validation_data=val, initial_epoch=first_epoch,
                           epochs=end_epoch,
                           steps_per_epoch=(end_step - first_step) // (end_epoch - first_epoch),
                           callbacks=callbacks, verbose=run.verbose, shuffle=False)
        for key, values in result.history.items():
            history.setdefault(key, []).extend(float(v) for v in values)
    seconds = time.perf_counter() - started
    values = _summary(history)
    summary = {"stage": name, "epochs": stage.epochs, "steps": total,
               "seconds": round(seconds, 1), "resumed_at_step": start, "values": values}
    note = f"   (resumed at step {start})" if start else ""
    run.log(f"stage {name:<9} epochs {stage.epochs:<3} {seconds:7.1f} s   "
            f"{_format_values(values)}{note}")
    return summary


def _finish_stage(run, state, name, summary, student):
    save_training_state(student, run.path("stages", f"{name}.weights.h5"), summary["steps"])
    state["stages"][name] = summary
    _atomic_json(run.path("run.json"), state)
    shutil.rmtree(run.path("backup", name), ignore_errors=True)


def _teacher_data(train, batch_size):
    return tf.data.Dataset.from_tensor_slices((train.inputs, train.labels)).shuffle(
        len(train), seed=0).batch(batch_size)


def run(config, overwrite=False, quiet=False, strategy=None):
    """Runs a distillation config end to end; resumes an unfinished run in the same directory.

    Args:
        config: `kdistill.config.RunConfig` (e.g. from `kdistill.config.load_config`).
        overwrite: bool. Replace a previous run in `config.output`.
        quiet: bool. No progress bars and no summary lines (errors still raise).
        strategy: `tf.distribute.Strategy` or None. Overrides `config.strategy` (e.g. an
            existing MirroredStrategy; create one per process).

    Returns:
        dict. The report also written to `OUTPUT/report.json`: `teacher` and `student`
        (accuracy, loss, params, size, latency), `stages`, `export` (when configured), `config`.

    Raises:
        FileExistsError: see `prepare_run_dir`.
        ValueError: a config that cannot work with these models or data (the message says
            which key to change).

    Example (not run here: it trains; `tests/test_cli.py` runs it on a tiny project):
    >>> from kdistill.config import load_config
    >>> config = load_config("examples/configs/rotten_tomatoes_quick.toml",
    ...                      [(("output",), "runs/rt_quick", "--output")])  # doctest: +SKIP
    >>> report = run(config)  # doctest: +SKIP
    >>> report["ratios"]["param_ratio"] > 5  # doctest: +SKIP
    True
    """
    from kdistill import teachers

    started = time.perf_counter()
    config_dict = config.to_dict()
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    strategy = strategy or make_strategy(config.strategy)
    output = config.output
    worker = _worker_index(strategy)
    if worker:  # only the chief writes the run directory; other workers keep their own
        output = os.path.join(output, "workers", str(worker))
    run_state = prepare_run_dir(output, config_dict, overwrite=overwrite)
    runner = _Run(config, output, quiet, strategy)
    data = config.data
    runner.log(f"output: {os.path.abspath(output)}"
               + ("   (resuming an unfinished run)" if run_state["resumed"] else ""))

    # ---- data and teacher
    texts, label_names = _text_splits(data)
    num_classes = len(label_names)
    with strategy.scope():
        teacher, preprocessor = load_teacher(config, num_classes)
    limit, eval_limit = data.max_train_examples, data.max_eval_examples
    train = tokenize(texts["train"], preprocessor, limit)
    validation = None if texts["validation"] is None else tokenize(
        texts["validation"], preprocessor, eval_limit)
    test = validation if texts["test"] is None else tokenize(texts["test"], preprocessor,
                                                             eval_limit)
    runner.log(f"data: {len(train)} training examples, {num_classes} classes "
               f"({', '.join(label_names[:5])}{', ...' if num_classes > 5 else ''}), "
               f"validation {0 if validation is None else len(validation)}, "
               f"test {0 if test is None else len(test)}")

    fine_tune = config.teacher.fine_tune_epochs
    if fine_tune is None:
        fine_tune = 2 if config.teacher.model == "minilm" else 0
    if fine_tune:
        if getattr(teacher, "backbone", None) is None:
            raise ValueError("teacher.fine_tune_epochs: a SavedModel teacher is frozen and "
                             "cannot be fine-tuned; set it to 0.")
        from kdistill.demo import DATASET_KEY

        key = DATASET_KEY if data.dataset == "rotten_tomatoes" else f"file:{data.train}"
        t0 = time.perf_counter()
        # The teacher learns from the whole training set, so a run on a subset
        # (max_train_examples) reuses the teacher cached by a full run.
        teacher_train = train if limit is None else tokenize(texts["train"], preprocessor)
        with strategy.scope():
            result = teachers.fine_tune_teacher(
                teacher, _teacher_data(teacher_train, data.batch_size),
                None if validation is None else validation.dataset(data.eval_batch_size),
                epochs=fine_tune, learning_rate=config.teacher.fine_tune_learning_rate, seed=0,
                cache_dir=config.teacher.cache_dir, cache_key=key, verbose=runner.verbose)
        teacher = result.model
        how = "reused the cached" if result.from_cache else "fine-tuned and cached the"
        runner.log(f"teacher: {how} fine-tuned teacher ({time.perf_counter() - t0:.1f} s): "
                   f"{result.path}")

    # ---- student
    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        student = build_student(config, teacher, preprocessor.tokenizer.vocabulary_size(),
                                num_classes)
    runner.log(f"student: {student.count_params():,} params vs the teacher's "
               f"{teacher.count_params():,} ({teacher.count_params() / student.count_params():.2f}"
               "x fewer)")
    finished = [n for n, _ in config.stages.items() if n in run_state["stages"]]
    if finished:
        load_training_state(student, runner.path("stages", f"{finished[-1]}.weights.h5"))
        runner.log(f"stages already finished: {', '.join(finished)} (student weights loaded)")

    # ---- stages
    unlabelled = None
    for index, (name, stage) in enumerate(config.stages.items()):
        if stage.epochs == 0 or name in run_state["stages"]:
            continue
        if name == "general":
            if unlabelled is None:
                unlabelled = tokenize(texts["unlabelled"], preprocessor, limit)
            stage_data = unlabelled
        else:
            stage_data = train
        summary = _run_stage(runner, index, name, stage, teacher, student, stage_data,
                             validation)
        _finish_stage(runner, run_state, name, summary, student)

    # ---- results
    report = _final_report(runner, teacher, student, train, test, run_state, config_dict)
    if os.path.isdir(runner.path("backup")) and not os.listdir(runner.path("backup")):
        os.rmdir(runner.path("backup"))
    run_state["status"] = "finished"
    run_state["seconds"] = round(time.perf_counter() - started, 1)
    _atomic_json(runner.path("run.json"), run_state)
    runner.log(f"done in {run_state['seconds']:.0f} s: {os.path.abspath(output)}")
    return report


def _final_report(run, teacher, student, train, test, state, config_dict):
    from kdistill import plots

    config = run.config
    student_path = run.path("student.keras")
    if student.optimizer is not None and student.optimizer.built:  # after fine-tuning
        student.compile(optimizer=keras.optimizers.Adam(),  # weights only in student.keras
                        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                        metrics=["accuracy"])
    student.save(student_path, overwrite=True)  # our own file in our run directory
    models = [keras_model(teacher, name="teacher"), keras_model(student, name="student")]
    example = (test or train).example()
    latencies = benchmark_models(models, example, runs=config.latency_runs)
    entries = []
    for model, ms in zip(models, latencies):
        entry = {"name": model.name, "params": model.params, "size_bytes": model.size_bytes,
                 "latency_ms": ms, "accuracy": None, "loss": None}
        if test is not None:
            entry.update(evaluate_model(model, test, config.data.eval_batch_size))
        entries.append(entry)
    teacher_entry, student_entry = entries
    ratios = {"param_ratio": teacher_entry["params"] / student_entry["params"],
              "speedup": teacher_entry["latency_ms"] / student_entry["latency_ms"]}
    if test is not None and teacher_entry["accuracy"]:
        ratios["relative_accuracy"] = student_entry["accuracy"] / teacher_entry["accuracy"]
    report = {"kind": REPORT_KIND, "teacher": teacher_entry, "student": student_entry,
              "ratios": ratios, "stages": state["stages"], "config": config_dict,
              "student_path": student_path,
              "note": "Latencies are medians at batch 1 (Keras), measured in interleaved "
                      "rounds on this machine; compare ratios, not absolute times."}
    plot_entries = [dict(e, name=f"keras {e['name']}") for e in entries]
    if config.export.formats:
        from kdistill.export import export_student

        export = export_student(
            student, run.path("export"), formats=config.export.formats,
            representative_data=train.dataset(1) if "tflite_int8" in config.export.formats
            else None,
            validation_data=None if test is None else test.dataset(config.data.eval_batch_size),
            overwrite=True, teacher=teacher, sequence_length=config.data.sequence_length,
            num_calibration_batches=config.export.num_calibration_examples,
            num_validation_examples=len(test) if test is not None else 256,
            latency_runs=config.latency_runs, verbose=not run.quiet)
        report["export"] = export["artifacts"]
        plot_entries += [{"name": fmt, "size_bytes": a["size_bytes"],
                          "latency_ms": a["latency_ms"], "accuracy": a.get("accuracy")}
                         for fmt, a in export["artifacts"].items()]
    _atomic_json(run.path("report.json"), report)
    plots.plot_tradeoff(plot_entries, run.path("tradeoff.png"),
                        title="Teacher vs student: accuracy, size, batch-1 latency")
    history = run.path("history.jsonl")
    if os.path.exists(history) and plots.loss_terms(plots.read_history(history)):
        plots.plot_loss_terms(plots.read_history(history), run.path("loss_terms.png"))
    if not run.quiet:
        print(format_table(entries), flush=True)
    run.log("  ".join(f"{key} {value:.3g}" for key, value in ratios.items()))
    return report


def format_table(entries, baseline=None):
    """Formats model measurements as a text table (used by the CLI commands).

    Args:
        entries: list of dict with `name` and any of `kind`, `size_bytes`, `params`,
            `accuracy`, `loss`, `latency_ms`.
        baseline: int or None. Index of the entry that latency ratios are relative to.

    Returns:
        str.

    Example:
    >>> print(format_table([{"name": "a", "size_bytes": 2e6, "latency_ms": 4.0},
    ...                     {"name": "b", "size_bytes": 1e6, "latency_ms": 1.0}], baseline=0))
    model  kind  size MB  params  accuracy  loss  ms (b=1)  speed-up
    a      -     2.000    -       -         -     4.000     1.00x
    b      -     1.000    -       -         -     1.000     4.00x
    """
    def fmt(value, spec):
        return "-" if value is None else format(value, spec)

    width = max([22] + [len(e["name"]) for e in entries])
    header = (f"{'model':<{width}} {'kind':<12}{'size MB':>9}{'params':>12}{'accuracy':>10}"
              f"{'loss':>10}{'ms (b=1)':>10}")
    if baseline is not None:
        header += f"{'speed-up':>11}"
    lines = [header]
    base = entries[baseline].get("latency_ms") if baseline is not None else None
    for e in entries:
        size = e.get("size_bytes")
        line = (f"{e['name']:<{width}} {e.get('kind') or '-':<12}"
                f"{fmt(None if size is None else size / 1e6, '.3f'):>9}"
                f"{fmt(e.get('params'), ','):>12}{fmt(e.get('accuracy'), '.2%'):>10}"
                f"{fmt(e.get('loss'), '.4f'):>10}{fmt(e.get('latency_ms'), '.3f'):>10}")
        if baseline is not None:
            ms = e.get("latency_ms")
            line += f"{fmt(None if not (base and ms) else base / ms, '.2f') + 'x':>11}"
        lines.append(line)
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    from kdistill.cli import main

    sys.exit(main(["distill", *sys.argv[1:]]))
