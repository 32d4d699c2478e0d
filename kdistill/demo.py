"""The main job on real data: MiniLM teacher -> Rotten Tomatoes -> tiny student -> TFLite.

`run_demo` (also `kdistill demo` and `make demo`) runs, fully offline:

1. **Teacher.** Loads the Rotten Tomatoes snippets (`kdistill.data.load`) and the packaged
   all-MiniLM-L6-v2 (`kdistill.teachers.minilm_teacher`), and fine-tunes it on the training split
   with `kdistill.teachers.fine_tune_teacher` -- or reuses the cached fine-tuned weights when the
   cache key (data, config, initial weights, hyper-parameters) matches.
2. **Student.** Cut out of the fine-tuned teacher by structured pruning
   (`kdistill.pruning.prune_teacher`): all 6 layers, the 160 most important of 384 channels, 5 of
   12 heads and 640 of 1,536 FFN units per layer (importance measured on 512 training snippets),
   and only the 15,860 word pieces of the training and unlabelled text (`kdistill.vocabulary`):
   ~4.5M parameters, 5.1x fewer than the teacher's 22.7M. With `prune=False` the student is a
   fresh BERT (`kdistill.students.student_for`, embeddings from the teacher's by truncated SVD).
3. **Distillation**, each stage a `kdistill.Distiller` with Keras progress bars and one summary
   line (stage, epochs, wall time, validation accuracy):

   - *general* (optional): TinyBERT intermediate losses only (attention, hidden states,
     embeddings; `objectives.tinybert(prediction=False)`) on unlabelled text: the training
     snippets without their labels plus the corpus' plot summaries;
   - *task*: prediction-layer KD (soft targets + labels). By default the teacher runs once over
     the training snippets in length-bucketed batches and its logits are cached next to the
     fine-tuned teacher (`kdistill.data.cache_teacher_outputs`, reused by the next run); every
     epoch then reads them (`Distiller(None, ...)`), shuffled and grouped into batches of
     similar length (`grouped_by_length`). With `task_intermediate` the
     intermediate losses are added and the teacher runs live; with `augment_samples` the
     snippets are augmented first (`kdistill.data.Augmenter`);
   - *fine-tune* (optional): the student alone on the labels, at a low learning rate.

   After each labelled stage the student weights of its best epoch (validation accuracy) are
   kept.
4. **Export** with `kdistill.export_student`: SavedModel + TFLite (float32, float16, dynamic-range
   int8, full int8), each checked against the Keras student on the **test** split (accuracy,
   agreement, size, batch-1 latency; the Keras teacher is timed too). `report.json` gets the
   demo's summary and stages on top of the export report; `report.png` is the export plot.

The output directory is refused if it holds anything but a previous demo's output (recognised by
its `report.json`); a previous demo's files are replaced.
"""

import atexit
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import warnings

import keras
import numpy as np

DEMO_KIND = "kdistill_demo"
DATASET_KEY = "rotten_tomatoes_snippets:1.0.0:train"  # identity of the teacher's training data

# TinyBERT augmentation recipe (`kdistill demo --augment`): N word-replacement variants of each
# training snippet, labelled by the teacher's soft targets alone (a replacement may flip a
# snippet's sentiment, so its hard label no longer holds), one epoch over the ~50k texts.
AUGMENTED = dict(augment_samples=4, task_epochs=1, hard_label_weight=0.0)

# Files and directories a demo writes into its output directory (and may replace next time).
_DEMO_OUTPUTS = (
    "saved_model", "model_float32.tflite", "model_float16.tflite", "model_dynamic_int8.tflite",
    "model_int8.tflite", "report.json", "report.png", "student.keras",
)


@dataclasses.dataclass
class DemoConfig:
    """Sizes, epochs and learning rates of a demo run. `DemoConfig.full()` / `.quick()`.

    The teacher fields are the same in both presets, so a quick run reuses the fine-tuned
    teacher cached by a full run (and vice versa). Each field is one switch of the ablation in
    the README (`examples/demo_ablation.py`).

    Attributes:
        sequence_length: int. Tokens per example (teacher and student).
        batch_size: int. Training batch size of every stage.
        teacher_epochs, teacher_learning_rate: fine-tuning of the teacher (AdamW).
        max_teacher_examples: int or None. Training examples of the teacher (None: all; a
            subset changes the teacher's cache key).
        max_train_examples: int or None. Labelled training examples the student sees (None: all).
            The teacher always trains on the whole training split.
        max_general_examples: int or None. Unlabelled examples for general distillation.
        max_validation_examples, max_test_examples: int or None. Evaluation subsets.
        student_preset: str. Base preset of `kdistill.students.build_student`.
        student: dict. Architectural overrides (`num_layers`, `hidden_dim`, `num_heads`,
            `intermediate_dim`); with `prune`, `num_heads` follows from `hidden_dim`.
        embedding_init: "svd" or None (fresh students, `prune=False`).
        prune: bool. Build the student by structured pruning of the fine-tuned teacher
            (`kdistill.pruning.prune_teacher`: its first `student["num_layers"]` layers,
            `hidden_dim` channels, `hidden_dim / 32` heads, `intermediate_dim` FFN units, each
            chosen by importance on `calibration_examples` training snippets) instead of a fresh
            student with `embedding_init`.
        calibration_examples: int. Snippets the pruning importance is measured on.
        vocabulary_min_count: int or None. Prune the student's vocabulary to the word pieces
            seen at least this often in the training + unlabelled text
            (`kdistill.vocabulary`); None keeps the teacher's whole vocabulary.
        trim_padding: bool. Drop all-padding columns of training batches (see `trim_padding`);
            exported models keep the fixed `sequence_length`.
        group_by_length: bool. Batch the student's shuffled training examples by length
            (`bucket_by_length`, trimmed to each batch's longest; implies `trim_padding`):
            measured 1.46x faster epochs than random batches on the demo's task stage.
        general_epochs, general_learning_rate: general distillation (0 epochs: skipped).
        task_epochs, task_learning_rate: task distillation.
        task_intermediate: bool. Add the intermediate losses to the task stage (live teacher).
            False: prediction-layer KD only, from the teacher's logits computed once
            (`kdistill.data.cache_teacher_outputs`) instead of at every step.
        augment_samples: int. TinyBERT augmentation: N word-replacement variants of each
            training snippet (`kdistill.data.augment`), soft-labelled by the teacher (0: off).
        temperature, hard_label_weight: prediction-layer KD (`LogitsKD(temperature, alpha)`);
            `hard_label_weight=1` trains on the labels alone (the ablation's baseline).
        attention_weight, hidden_weight: TinyBERT's beta and gamma.
        finetune_epochs, finetune_learning_rate: optional fine-tuning of the student alone.
        formats: export formats (see `kdistill.export.VALID_FORMATS`).
        latency_runs: batch-1 timing runs per artifact.
        num_calibration_batches: calibration samples of full-int8 TFLite.
    """

    sequence_length: int = 64
    batch_size: int = 32
    teacher_epochs: int = 2
    teacher_learning_rate: float = 5e-5
    max_teacher_examples: int | None = None
    max_train_examples: int | None = None
    max_general_examples: int | None = None
    max_validation_examples: int | None = None
    max_test_examples: int | None = None
    student_preset: str = "bert_tiny"
    student: dict = dataclasses.field(default_factory=lambda: dict(
        num_layers=6, hidden_dim=160, num_heads=5, intermediate_dim=640))
    embedding_init: str | None = "svd"
    prune: bool = True
    calibration_examples: int = 512
    vocabulary_min_count: int | None = 1
    trim_padding: bool = True
    group_by_length: bool = True
    general_epochs: int = 0
    general_learning_rate: float = 2e-4
    task_epochs: int = 3
    task_learning_rate: float = 3e-4
    task_intermediate: bool = False
    augment_samples: int = 0
    temperature: float = 2.0
    hard_label_weight: float = 0.5
    attention_weight: float = 1.0
    hidden_weight: float = 1.0
    finetune_epochs: int = 0
    finetune_learning_rate: float = 5e-5
    formats: tuple = ("saved_model", "tflite_float32", "tflite_float16", "tflite_dynamic_int8",
                      "tflite_int8")
    latency_runs: int = 50
    num_calibration_batches: int = 100

    @classmethod
    def full(cls, **changes):
        """The `make demo` configuration."""
        return cls(**changes)

    @classmethod
    def quick(cls, **changes):
        """A smoke run: fewer examples and epochs, three export formats.

        A check of the pipeline, not of the recipe: measured, its student kept 88.8% of the
        teacher's accuracy on 512 test snippets (71.09% vs 80.08%), against 97.2% for `full()`.
        """
        base = dict(max_train_examples=2000, max_general_examples=1000,
                    max_validation_examples=512, max_test_examples=512, task_epochs=2,
                    finetune_epochs=0, formats=("saved_model", "tflite_float32",
                                                "tflite_dynamic_int8"),
                    latency_runs=20)
        base.update(changes)
        return cls(**base)

    @classmethod
    def augmented(cls, quick=False, **changes):
        """The augmentation recipe (`AUGMENTED`) on top of `full()` or `quick()`.

        On the full data it keeps more of the teacher than `full()` (measured: 82.67% vs 81.80%
        test, 81.03% vs 79.23% validation) but its first run labels 49,579 texts with the
        teacher (203 s) and each run trains on all of them (294 s vs 212 s).

        Example:
        >>> DemoConfig.augmented().augment_samples, DemoConfig.augmented(quick=True).task_epochs
        (4, 1)
        """
        base = dict(AUGMENTED, **changes)
        return cls.quick(**base) if quick else cls.full(**base)


# ----------------------------------------------------------------------------- output directory


def _is_demo_output(path):
    report = os.path.join(path, "report.json")
    try:
        with open(report) as f:
            return json.load(f).get("kind") == DEMO_KIND
    except (OSError, ValueError, AttributeError):
        return False


def prepare_output_dir(path, overwrite=True):
    """Checks that `path` may receive a demo's output; clears a previous demo's files.

    A missing or empty directory is fine. A directory holding a previous demo's output (its
    `report.json` says `"kind": "kdistill_demo"`) has those files replaced when `overwrite` is
    True; other files in it are left alone. Anything else is refused.

    Args:
        path: str. The output directory.
        overwrite: bool. Replace a previous demo's output.

    Raises:
        FileExistsError: `path` is a file, a non-empty directory that is not a demo's output, or
            a demo's output with `overwrite=False`.

    Example:
    >>> import tempfile
    >>> prepare_output_dir(os.path.join(tempfile.mkdtemp(), "demo"))
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        return
    if not os.path.isdir(path):
        raise FileExistsError(f"{path} exists and is a file; choose another output directory.")
    if not os.listdir(path):
        return
    if not _is_demo_output(path):
        raise FileExistsError(
            f"{path} exists and is not a previous demo's output (no report.json of kind "
            f"{DEMO_KIND!r}); refusing to write into it. Choose another --output directory.")
    if not overwrite:
        raise FileExistsError(f"{path} holds a previous demo's output; pass overwrite=True to "
                              "replace it.")
    for name in _DEMO_OUTPUTS:
        target = os.path.join(path, name)
        if os.path.isdir(target):
            shutil.rmtree(target)
        elif os.path.exists(target):
            os.remove(target)


# ----------------------------------------------------------------------------- helpers


def _log(message):
    print(message, flush=True)


def _take(ds, n):
    return ds if n is None else ds.take(n)


def trim_padding(dataset, multiple=16):
    """Cuts each batch's trailing all-padding columns, rounding its length up to `multiple`.

    Rotten Tomatoes snippets average ~25 tokens, so at sequence length 64 most of every batch is
    padding; both models mask it, so dropping it changes no result and roughly halves the cost
    of a distillation step. The sequence dimension becomes dynamic (`fit` traces once).

    Args:
        dataset: batched `(inputs, labels)` or `inputs` with a keras-hub `padding_mask`.
        multiple: int. Lengths are rounded up to a multiple of this.

    Example:
    >>> import tensorflow as tf
    >>> from kdistill import testing
    >>> x, y = testing.token_batch(batch_size=4, sequence_length=64, min_length=3)
    >>> x["padding_mask"][:, 20:] = False  # every example is at most 20 tokens long
    >>> ds = trim_padding(tf.data.Dataset.from_tensor_slices((x, y)).batch(4))
    >>> next(iter(ds))[0]["token_ids"].shape
    TensorShape([4, 32])
    """
    import tensorflow as tf

    def trim(x, *rest):
        used = tf.reduce_max(tf.reduce_sum(tf.cast(x["padding_mask"], tf.int32), axis=1))
        length = tf.minimum((used + multiple - 1) // multiple * multiple,
                            tf.shape(x["padding_mask"])[1])
        x = {k: v[:, :length] for k, v in x.items()}
        return (x, *rest) if rest else x

    return dataset.map(trim, num_parallel_calls=tf.data.AUTOTUNE)


def bucket_by_length(dataset, batch_size, boundaries=(16, 24, 32, 40, 48)):
    """Re-batches tokenised examples so each batch holds similar lengths, trimmed to its longest.

    With random batches every batch is padded to nearly the longest snippet; grouping by length
    (`tf.data.Dataset.bucket_by_sequence_length`) halves the tokens a teacher pass computes on
    Rotten Tomatoes. Use it where the order does not matter (a teacher-output cache, which is
    shuffled when read) or after shuffling (batches then hold random examples of similar length).

    Args:
        dataset: batched `(inputs, labels)` or `inputs` with a keras-hub `padding_mask`.
        batch_size: int. Examples per batch.
        boundaries: lengths (in tokens) between buckets.

    Example:
    >>> import tensorflow as tf
    >>> from kdistill import testing
    >>> x, y = testing.token_batch(batch_size=8, sequence_length=64, min_length=3)
    >>> x["padding_mask"][:] = False
    >>> x["padding_mask"][:4, :10] = True  # four short examples, four long ones
    >>> x["padding_mask"][4:, :40] = True
    >>> ds = bucket_by_length(tf.data.Dataset.from_tensor_slices((x, y)).batch(8), 4)
    >>> sorted(int(b[0]["token_ids"].shape[1]) for b in ds)
    [16, 40]
    """
    import tensorflow as tf

    def length(x, *rest):
        return tf.reduce_sum(tf.cast(x["padding_mask"], tf.int32))

    bucketed = dataset.unbatch().bucket_by_sequence_length(
        length, bucket_boundaries=list(boundaries),
        bucket_batch_sizes=[batch_size] * (len(boundaries) + 1))
    return trim_padding(bucketed, multiple=8)


def grouped_by_length(dataset, batch_size):
    """`bucket_by_length` with its number of batches counted once and asserted.

    The count does not depend on the shuffling (each length bucket yields
    `ceil(examples / batch_size)` batches every epoch), so `fit` gets a progress bar and a
    learning-rate schedule gets its exact number of steps. Counting reads the dataset once.

    Example:
    >>> import tensorflow as tf
    >>> from kdistill import testing
    >>> x, y = testing.token_batch(batch_size=8, sequence_length=64, min_length=3)
    >>> ds = grouped_by_length(tf.data.Dataset.from_tensor_slices((x, y)).batch(8), 4)
    >>> int(ds.cardinality()) == sum(1 for _ in ds)
    True
    """
    import tensorflow as tf

    grouped = bucket_by_length(dataset, batch_size)
    count = int(grouped.reduce(tf.constant(0, tf.int64), lambda n, *_: n + 1))
    if count == 0:
        raise ValueError("The training dataset is empty: no batch to train on.")
    return grouped.apply(tf.data.experimental.assert_cardinality(count))


def accuracy(model, dataset):
    """Top-1 accuracy of a logits model on a batched `(inputs, labels)` dataset (model only).

    Example:
    >>> from kdistill import testing
    >>> ds = testing.token_dataset(num_examples=8, batch_size=4, num_classes=3)
    >>> 0.0 <= accuracy(testing.tiny_bert_classifier(), ds) <= 1.0
    True
    """
    correct = total = 0
    for x, y in dataset:
        logits = model(x, training=False)
        correct += int(np.sum(np.argmax(keras.ops.convert_to_numpy(logits), -1) == y.numpy()))
        total += int(y.shape[0])
    return correct / max(total, 1)


class StudentValidation(keras.callbacks.Callback):
    """Each epoch: the student's validation accuracy (student alone) in the logs; keeps the best.

    Adds `val_accuracy` to the epoch logs (shown by the progress bar). With `restore_best`, the
    student's weights of its best epoch are restored at the end of training -- only when the
    stage improved on `baseline` (the accuracy before the stage), else the weights from before
    the stage are restored.

    Args:
        student: keras.Model producing logits.
        validation_data: batched `(inputs, labels)` dataset.
        restore_best: bool.
        baseline: float or None. Accuracy before this stage; None accepts any epoch.
    """

    def __init__(self, student, validation_data, restore_best=True, baseline=None):
        super().__init__()
        self.student = student
        self.validation_data = validation_data
        self.restore_best = restore_best
        self.baseline = baseline
        self.history = []
        self.best = None
        self._best_weights = None

    def on_train_begin(self, logs=None):
        if self.restore_best and self.baseline is not None:
            self.best = self.baseline
            self._best_weights = self.student.get_weights()

    def on_epoch_end(self, epoch, logs=None):
        value = accuracy(self.student, self.validation_data)
        self.history.append(value)
        if logs is not None:
            logs["val_accuracy"] = value
        if self.best is None or value > self.best:
            self.best = value
            if self.restore_best:
                self._best_weights = self.student.get_weights()

    def on_train_end(self, logs=None):
        if self.restore_best and self._best_weights is not None:
            self.student.set_weights(self._best_weights)


def intermediate_objectives(teacher, student, config, prediction=True, intermediate=True):
    """The demo's objectives: TinyBERT's when head counts match, else MiniLM's value relation.

    Args:
        teacher, student: keras-hub BERT classifiers.
        config: `DemoConfig` (temperature, hard_label_weight, attention/hidden weights).
        prediction: bool. Include the prediction-layer KD.
        intermediate: bool. Include attention (or value-relation), hidden-state and embedding
            losses.

    Returns:
        list of `kdistill.objectives.Objective`.
    """
    from kdistill import objectives

    same_heads = teacher.backbone.num_heads == student.backbone.num_heads
    if same_heads or not intermediate:
        return objectives.tinybert(
            alpha=1.0, beta=config.attention_weight, gamma=config.hidden_weight,
            temperature=config.temperature, hard_label_weight=config.hard_label_weight,
            prediction=prediction, intermediate=intermediate)
    # Different head counts: AttentionKD cannot compare heads one to one; MiniLM's value relation
    # (regrouped into relation heads that divide both widths) replaces it.
    result = []
    if prediction:
        result.append(objectives.LogitsKD(temperature=config.temperature,
                                          alpha=config.hard_label_weight))
    result += [objectives.HiddenStateKD(weight=config.hidden_weight),
               objectives.EmbeddingKD(weight=config.hidden_weight),
               objectives.MiniLMKD(weight=config.attention_weight, attention=False)]
    return result


def _default_teacher_fn(config):
    from kdistill import teachers

    return teachers.minilm_teacher(num_classes=2, sequence_length=config.sequence_length)


def _default_student_fn(teacher, config, vocabulary=None, unknown_id=None):
    from kdistill import students

    return students.student_for(teacher, config.student_preset,
                                embedding_init=config.embedding_init,
                                max_sequence_length=config.sequence_length,
                                vocabulary=vocabulary, unknown_id=unknown_id, **config.student)


def _describe(student):
    b = student.backbone
    vocabulary = getattr(student, "vocabulary_map", None)
    pruned = (f", vocabulary {b.vocabulary_size:,} of {vocabulary.input_vocabulary_size:,} "
              "word pieces" if vocabulary is not None else "")
    return (f"{b.num_layers} layers, hidden {b.hidden_dim}, {b.num_heads} heads, FFN "
            f"{b.intermediate_dim}{pruned}")


def _cosine_optimizer(steps, learning_rate):
    warmup = max(steps // 10, 1)
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, max(steps - warmup, 1), alpha=0.0, warmup_target=learning_rate,
        warmup_steps=warmup)
    return keras.optimizers.AdamW(schedule, clipnorm=1.0)


def _compile_student(student, learning_rate):
    student.compile(optimizer=keras.optimizers.AdamW(learning_rate),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                    metrics=["accuracy"])


# ----------------------------------------------------------------------------- teacher outputs


def outputs_cache_dir(result, config, seed):
    """Where the demo keeps the teacher's logits on the task data, next to the cached teacher.

    The directory name is a digest of everything the logits depend on: the fine-tuned teacher's
    cache key (`result.key`), the training examples used, the augmentation settings and seed,
    and the sequence length. None when the teacher was not cached (`result.path` is None).

    Args:
        result: `kdistill.teachers.FineTuneResult` of the teacher.
        config: `DemoConfig`.
        seed: int. The demo's seed (augmentation).

    Returns:
        str or None.

    Example:
    >>> from types import SimpleNamespace
    >>> result = SimpleNamespace(key="abc", path="/cache/teacher-abc.keras")
    >>> outputs_cache_dir(result, DemoConfig.full(), 0).startswith("/cache/teacher-abc.outputs/")
    True
    """
    if not result.path:
        return None
    identity = dict(teacher=result.key, data=DATASET_KEY, examples=config.max_train_examples,
                    augment_samples=config.augment_samples, seed=seed if config.augment_samples
                    else None, sequence_length=config.sequence_length, taps=["logits"],
                    dtype="float32", version=1)
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    return os.path.join(os.path.splitext(result.path)[0] + ".outputs", f"logits-{digest}")


def teacher_outputs(teacher, texts, tokenize, directory=None):
    """The teacher's logits on `texts` as a teacher cache: reused from `directory` or computed.

    The teacher runs once over the texts in length-bucketed batches (`bucket_by_length`) and
    `kdistill.data.cache_teacher_outputs` writes the cache atomically. A cache in `directory`
    written by another teacher, or damaged, is reported with a warning and rebuilt. With
    `directory=None` the cache goes to a fresh temporary directory (removed at exit).

    Args:
        teacher: keras.Model producing logits.
        texts: `tf.data.Dataset` of unbatched `(text, label)`.
        tokenize: callable `(dataset, batch_size=...) -> batched (inputs, labels) dataset`.
        directory: str or None.

    Returns:
        `(directory, reused)`.
    """
    from kdistill import data as kdata
    from kdistill.data.teacher_cache import MANIFEST

    if directory is None:
        directory = os.path.join(tempfile.mkdtemp(prefix="kdistill-demo-"), "logits")
        atexit.register(shutil.rmtree, os.path.dirname(directory), True)
    elif os.path.exists(os.path.join(directory, MANIFEST)):
        try:
            kdata.load_teacher_cache(directory, 1, teacher=teacher)  # checks fingerprint, shards
            return directory, True
        except (OSError, ValueError) as error:
            warnings.warn(f"Teacher outputs in {directory} are not usable ({error}); "
                          "recomputing them.", stacklevel=2)
    kdata.cache_teacher_outputs(teacher, bucket_by_length(tokenize(texts, batch_size=256), 64),
                                directory, taps=("logits",), dtype="float32", overwrite=True)
    return directory, False


# ----------------------------------------------------------------------------- the demo


def run_demo(output_dir="saved_models/demo", quick=False, cache_dir=None, overwrite=True, seed=0,
             config=None, teacher_fn=None, student_fn=None, data_dir=None, verbose="auto",
             augment=False):
    """Fine-tune (or reuse) a MiniLM teacher, distil a 5x smaller student, export it to TFLite.

    Args:
        output_dir: str. Where the SavedModel, TFLite files, `student.keras`, `report.json` and
            `report.png` go. Refused if it holds anything but a previous demo's output.
        quick: bool. Use `DemoConfig.quick()` (ignored when `config` is given).
        augment: bool. Use `DemoConfig.augmented(quick=quick)`: TinyBERT augmentation (ignored
            when `config` is given).
        cache_dir: str or None. Fine-tuned teacher cache (default
            `kdistill.teachers.default_cache_dir()`).
        overwrite: bool. Replace a previous demo's output in `output_dir`.
        seed: int. Seed of the student's initialisation and of the data shuffling.
        config: `DemoConfig` or None.
        teacher_fn: callable `config -> (teacher, preprocessor)`; default the packaged MiniLM
            (`kdistill.teachers.minilm_teacher`). For tests: a tiny teacher and tokenizer.
        student_fn: callable `(teacher, config, vocabulary=None, unknown_id=None) -> student`,
            used when `config.prune` is False; default `kdistill.students.student_for(teacher,
            config.student_preset, embedding_init=...)`. With `config.prune` the student is
            `kdistill.pruning.prune_teacher(teacher, ...)`.
        data_dir: str or None. TFDS data directory (see `kdistill.data.load`).
        verbose: Keras `fit` verbosity ("auto", 0, 1, 2).

    Returns:
        dict. The report also written to `output_dir/report.json`: the export report
        (`teacher`, `student`, `artifacts`, ...) plus `kind`, `summary` (test accuracies, ratios,
        speed-up), `stages` and `config`.
    """
    from kdistill import data as kdata
    from kdistill import teachers
    from kdistill.distiller import Distiller
    from kdistill.export import export_student, format_report_table

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if config is None:
        config = (DemoConfig.augmented(quick=quick) if augment
                  else DemoConfig.quick() if quick else DemoConfig.full())
    teacher_fn = teacher_fn or _default_teacher_fn
    student_fn = student_fn or _default_student_fn
    output_dir = os.fspath(output_dir)
    prepare_output_dir(output_dir, overwrite=overwrite)  # fail before an hour of work, not after
    started = time.perf_counter()
    stages = []

    def stage_line(name, epochs, seconds, val_accuracy, note=""):
        stages.append(dict(stage=name, epochs=epochs, seconds=round(seconds, 1),
                           val_accuracy=None if val_accuracy is None else float(val_accuracy),
                           note=note))
        acc = "-" if val_accuracy is None else f"{val_accuracy:.2%}"
        _log(f"[demo] {name:<18} epochs {epochs:<3} {seconds:7.1f} s   val accuracy {acc:>7}"
             f"{'   ' + note if note else ''}")

    # ---- 1. data and teacher
    t0 = time.perf_counter()
    teacher, preprocessor = teacher_fn(config)
    seq, batch = config.sequence_length, config.batch_size
    load = lambda split: kdata.load("rotten_tomatoes", split=split, data_dir=data_dir)  # noqa: E731

    def tokenized(texts, shuffle=False, batch_size=batch):
        return kdata.tokenize_dataset(texts, preprocessor, batch_size=batch_size,
                                      shuffle_buffer=10_000 if shuffle else None, seed=seed)

    def training_batches(ds):
        """Training batches: grouped by length (known cardinality), or trimmed, or as they are."""
        if config.group_by_length:
            return grouped_by_length(ds, batch)
        return trim_padding(ds) if config.trim_padding else ds

    teacher_train = tokenized(_take(load("train"), config.max_teacher_examples), shuffle=True)
    val_ds = kdata.tokenize_dataset(_take(load("validation"), config.max_validation_examples),
                                    preprocessor, batch_size=64, cache=True)
    test_ds = kdata.tokenize_dataset(_take(load("test"), config.max_test_examples),
                                     preprocessor, batch_size=64, cache=True)
    result = teachers.fine_tune_teacher(
        teacher, teacher_train, val_ds,
        epochs=config.teacher_epochs, learning_rate=config.teacher_learning_rate, seed=0,
        cache_dir=cache_dir, cache_key=DATASET_KEY, verbose=verbose)
    teacher = result.model
    history_val = result.history.get("val_accuracy")
    teacher_val = (history_val[-1] if history_val and config.max_validation_examples is None
                   else accuracy(teacher, val_ds))
    stage_line("teacher", config.teacher_epochs, time.perf_counter() - t0, teacher_val,
               f"{'reused cache' if result.from_cache else 'fine-tuned, cached'}: {result.path}")

    train_text = _take(load("train"), config.max_train_examples)
    corpus = train_text.map(lambda text, label: text).concatenate(load("unlabelled"))

    # ---- 2. student (optionally with its vocabulary pruned to the training text's)
    t = time.perf_counter()
    keras.utils.set_random_seed(seed)
    vocabulary = unknown_id = None
    if config.vocabulary_min_count is not None:
        from kdistill.vocabulary import corpus_vocabulary, special_token_ids

        keep, unknown_id = special_token_ids(preprocessor.tokenizer)
        vocabulary = corpus_vocabulary(
            tokenized(corpus, batch_size=256), teacher.backbone.vocabulary_size, keep_ids=keep,
            min_count=config.vocabulary_min_count)
    if config.prune:
        from kdistill.pruning import prune_teacher

        sizes = config.student
        student = prune_teacher(
            teacher, tokenized(_take(load("train"), config.calibration_examples), batch_size=64),
            hidden_dim=sizes["hidden_dim"], intermediate_dim=sizes["intermediate_dim"],
            num_layers=sizes["num_layers"], vocabulary=vocabulary, unknown_id=unknown_id,
            max_sequence_length=config.sequence_length)
        init_note = (f"pruned from the teacher on {config.calibration_examples} snippets "
                     "(kdistill.pruning)")
    else:
        student = student_fn(teacher, config, vocabulary=vocabulary, unknown_id=unknown_id)
        init_note = f"embeddings: {config.embedding_init or 'random'}"
    teacher_params, student_params = teacher.count_params(), student.count_params()
    _log(f"[demo] student: {_describe(student)}: {student_params:,} params vs the teacher's "
         f"{teacher_params:,} ({teacher_params / student_params:.2f}x fewer)")
    best = accuracy(student, val_ds)
    stage_line("student init", 0, time.perf_counter() - t, best, init_note)

    def fit_stage(name, distiller, train, epochs, steps, learning_rate, labelled_stage, note):
        nonlocal best
        t = time.perf_counter()
        distiller.compile(optimizer=_cosine_optimizer(steps * epochs, learning_rate),
                          metrics=["accuracy"] if labelled_stage else None)
        # General distillation trains no classifier head: its accuracy is not a selection signal.
        callback = StudentValidation(student, val_ds, restore_best=labelled_stage,
                                     baseline=best if labelled_stage else None)
        distiller.fit(train, epochs=epochs, callbacks=[callback], verbose=verbose)
        value = callback.best if labelled_stage else callback.history[-1]
        if labelled_stage:
            best = value
        stage_line(name, epochs, time.perf_counter() - t, value, note)

    def objective_names(objective_list):
        return "objectives: " + ", ".join(o.name for o in objective_list)

    # ---- 3a. general distillation on unlabelled text (train snippets without labels + plots)
    if config.general_epochs > 0:
        general = training_batches(tokenized(_take(corpus.shuffle(20_000, seed=seed),
                                          config.max_general_examples), shuffle=True))
        general_objectives = intermediate_objectives(teacher, student, config, prediction=False)
        fit_stage("general distill", Distiller(teacher, student, objectives=general_objectives),
                  general, config.general_epochs, int(general.cardinality()),
                  config.general_learning_rate, False, objective_names(general_objectives))

    # ---- 3b. task distillation: prediction layer (+ intermediate layers) on the labels
    task_text = train_text
    if config.augment_samples > 0:
        t = time.perf_counter()
        augmenter = kdata.augment.Augmenter.for_teacher(
            teacher, preprocessor.tokenizer, num_samples=config.augment_samples, seed=seed)
        task_text = augmenter.transform(train_text).cache()  # augment once, reuse the texts
        num_task = sum(1 for _ in task_text)
        stage_line("augmentation", 0, time.perf_counter() - t, None,
                   f"{num_task:,} texts from {sum(1 for _ in train_text):,} snippets")
    task_objectives = intermediate_objectives(teacher, student, config, prediction=True,
                                              intermediate=config.task_intermediate)
    if config.task_epochs > 0 and config.task_intermediate:
        train_ds = training_batches(tokenized(task_text, shuffle=True))
        fit_stage("task distill", Distiller(teacher, student, objectives=task_objectives),
                  train_ds, config.task_epochs, int(train_ds.cardinality()),
                  config.task_learning_rate, True, objective_names(task_objectives))
    elif config.task_epochs > 0:
        # Logits only: run the teacher once over the training set (kept next to the cached
        # teacher, so the next run skips it), then every epoch reads its logits (no teacher
        # forward per step).
        t = time.perf_counter()
        outputs_dir, reused = teacher_outputs(
            teacher, task_text, tokenized, outputs_cache_dir(result, config, seed))
        manifest = kdata.read_manifest(outputs_dir)
        stage_line("teacher logits", 0 if reused else 1, time.perf_counter() - t, None,
                   f"{manifest['num_examples']:,} examples "
                   f"{'reused from' if reused else 'cached in'} {outputs_dir}")
        # teacher_outputs checked (or just wrote) it against this teacher: no second fingerprint.
        cached = training_batches(
            kdata.load_teacher_cache(outputs_dir, batch, shuffle_seed=seed))
        steps = int(cached.cardinality())
        fit_stage("task distill", Distiller(None, student, objectives=task_objectives),
                  cached, config.task_epochs, steps, config.task_learning_rate, True,
                  objective_names(task_objectives) + " (cached teacher logits)")

    # ---- 3c. optional fine-tuning of the student alone
    if config.finetune_epochs > 0:
        t = time.perf_counter()
        _compile_student(student, config.finetune_learning_rate)
        callback = StudentValidation(student, val_ds, baseline=best)
        student.fit(training_batches(tokenized(train_text, shuffle=True)),
                    epochs=config.finetune_epochs, callbacks=[callback], verbose=verbose)
        kept = callback.best > (stages[-1]["val_accuracy"] or 0.0)
        best = callback.best
        stage_line("student fine-tune", config.finetune_epochs, time.perf_counter() - t,
                   callback.best, "kept" if kept else "no gain: kept the distilled weights")

    # ---- 4. export the student, checked on the test split; the Keras teacher is timed too
    t = time.perf_counter()
    os.makedirs(output_dir, exist_ok=True)
    student.save(os.path.join(output_dir, "student.keras"))
    num_test = sum(int(y.shape[0]) for _, y in test_ds)
    report = export_student(
        student, output_dir, formats=config.formats,
        representative_data=(tokenized(_take(load("train"), 2000))
                             if "tflite_int8" in config.formats else None),
        validation_data=test_ds, overwrite=True, teacher=teacher, sequence_length=seq,
        num_calibration_batches=config.num_calibration_batches,
        num_validation_examples=num_test, latency_runs=config.latency_runs, verbose=False)
    stage_line("export", 0, time.perf_counter() - t, None,
               f"{len(report['artifacts'])} artifacts, checked on {num_test} test examples")

    # ---- summary
    t_entry, s_entry = report["teacher"], report["student"]
    artifacts = report["artifacts"]
    edge = artifacts.get("tflite_dynamic_int8") or next(iter(artifacts.values()), None)
    edge_name = "tflite_dynamic_int8" if "tflite_dynamic_int8" in artifacts else (
        next(iter(artifacts), None))
    summary = {
        "teacher_test_accuracy": t_entry["accuracy"],
        "student_test_accuracy": s_entry["accuracy"],
        "relative_accuracy": s_entry["accuracy"] / t_entry["accuracy"],
        "teacher_params": teacher_params,
        "student_params": student_params,
        "param_ratio": teacher_params / student_params,
        "num_test_examples": num_test,
        "edge_artifact": edge_name,
        "edge_test_accuracy": edge and edge.get("accuracy"),
        "edge_size_bytes": edge and edge["size_bytes"],
        "edge_latency_ms": edge and edge["latency_ms"],
        "teacher_latency_ms": t_entry["latency_ms"],
        "speedup_vs_keras_teacher": edge and t_entry["latency_ms"] / edge["latency_ms"],
        "teacher_weights_bytes": t_entry["weights_bytes"],
        "size_ratio": edge and t_entry["weights_bytes"] / edge["size_bytes"],
        "targets": {
            "relative_accuracy>=0.97": s_entry["accuracy"] / t_entry["accuracy"] >= 0.97,
            "param_ratio>=5": teacher_params / student_params >= 5,
            "speedup>=5": bool(edge and t_entry["latency_ms"] / edge["latency_ms"] >= 5),
        },
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    report.update(kind=DEMO_KIND, summary=summary, stages=stages,
                  config=dataclasses.asdict(config), seed=seed,
                  teacher_cache={"path": result.path, "from_cache": result.from_cache,
                                 "key": result.key},
                  note="Latencies are medians at batch 1 on a shared CPU; they are noisy.")
    with open(os.path.join(output_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=2, default=_json_default)

    _log("")
    _log(format_report_table(report))
    _log("")
    _log(format_summary(report))
    return report


def _json_default(value):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    return str(value)


def format_summary(report):
    """The demo's headline figures and stage times as text (from `run_demo`'s report).

    Example:
    >>> print(format_summary({"summary": {}, "stages": []}).splitlines()[0])
    Demo summary
    """
    s = report.get("summary", {})
    lines = ["Demo summary"]
    if s:
        lines += [
            f"  teacher test accuracy  {s['teacher_test_accuracy']:.2%}  "
            f"({s['teacher_params']:,} params)",
            f"  student test accuracy  {s['student_test_accuracy']:.2%}  "
            f"({s['student_params']:,} params) = {s['relative_accuracy']:.1%} of the teacher",
            f"  params                 {s['param_ratio']:.2f}x fewer",
        ]
        if s.get("edge_artifact"):
            lines += [
                f"  {s['edge_artifact']:<22} {s['edge_size_bytes'] / 1e6:.2f} MB, "
                f"{s['edge_latency_ms']:.2f} ms at batch 1 vs the Keras teacher's "
                f"{s['teacher_latency_ms']:.2f} ms = {s['speedup_vs_keras_teacher']:.1f}x faster, "
                f"{s['size_ratio']:.1f}x smaller",
                f"  {s['edge_artifact']:<22} test accuracy {s['edge_test_accuracy']:.2%}",
            ]
        lines.append("  targets: " + ", ".join(
            f"{k} {'ok' if v else 'MISSED'}" for k, v in s.get("targets", {}).items()))
    for st in report.get("stages", []):
        acc = "-" if st["val_accuracy"] is None else f"{st['val_accuracy']:.2%}"
        lines.append(f"  stage {st['stage']:<18} epochs {st['epochs']:<3} {st['seconds']:7.1f} s"
                     f"   val {acc}")
    if s:
        lines.append(f"  total {s['total_seconds']:.0f} s (shared CPU: timings are noisy)")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    from kdistill.cli import main

    sys.exit(main(["demo", *sys.argv[1:]]))
