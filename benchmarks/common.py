"""Shared pieces of the benchmark scripts: models, data, contenders, interleaved timing, reports.

Every script times its contenders in one process, on the same batches, interleaved in rounds whose
order rotates, and reports ratios of medians (plus fastest-round and process-CPU ratios as noise
checks). Absolute times on a shared 2-core machine drift by 15% or more; ratios measured side by
side are what the scripts are for.

Timing unit. A contender's `run(steps)` runs `steps` train (or predict) steps through Keras'
own compiled step function on an iterator created once (`Model.make_train_function()` /
`make_predict_function()`), not through `fit`/`predict`. `fit` and `predict` add per-call work
(callbacks, a new `tf.data` iterator, the data adapter) that is not part of a step. Every
iterator is created once per contender and reused across rounds.
"""

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

# --------------------------------------------------------------------------------- models, data


# Model and timing sizes of the train-step benchmarks (step_overhead.py, teacher_skip.py):
# a MiniLM-sized teacher and a TinyBERT-4-sized student at 128 tokens; --quick: small models.
STEP_DEFAULTS = dict(
    vocabulary_size=30522, sequence_length=128, batch_size=32,
    teacher_layers=6, teacher_hidden=384, teacher_heads=12, teacher_ffn=1536,
    student_layers=4, student_hidden=312, student_heads=12, student_ffn=1200,
    rounds=5, steps=4, warmup_steps=1,
)
STEP_QUICK = dict(
    vocabulary_size=30522, sequence_length=64, batch_size=16,
    teacher_layers=2, teacher_hidden=128, teacher_heads=4, teacher_ffn=512,
    student_layers=2, student_hidden=64, student_heads=4, student_ffn=256,
    rounds=9, steps=6, warmup_steps=2,
)


def bert_classifier(vocabulary_size, num_layers, hidden, heads, ffn, sequence_length, name,
                    num_classes=2):
    """A keras-hub `BertTextClassifier` (no preprocessor, no dropout)."""
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=vocabulary_size, num_layers=num_layers, num_heads=heads,
        hidden_dim=hidden, intermediate_dim=ffn, max_sequence_length=max(sequence_length, 128),
        dropout=0.0,
    )
    return keras_hub.models.BertTextClassifier(
        backbone=backbone, num_classes=num_classes, preprocessor=None, dropout=0.0, name=name,
    )


class ModelFactory:
    """Builds fresh copies of one architecture, all with the same initial weights.

    Args:
        build: callable `(name=..., **arch) -> keras.Model`.
        name: str. Model name.
        seed: int. Seed of the initial weights.
        **arch: passed to `build`.
    """

    def __init__(self, build, name, seed, **arch):
        self.build, self.name, self.arch = build, name, arch
        keras.utils.set_random_seed(seed)
        self.weights = build(name=name, **arch).get_weights()
        self.num_params = int(sum(w.size for w in self.weights))

    def __call__(self):
        model = self.build(name=self.name, **self.arch)
        model.set_weights(self.weights)
        return model


def step_models(args):
    """`(teachers, students)` factories of the train-step benchmarks' sizes (`STEP_DEFAULTS`)."""
    seq, vocab = args.sequence_length, args.vocabulary_size
    teachers = ModelFactory(
        bert_classifier, "teacher", args.seed, vocabulary_size=vocab,
        num_layers=args.teacher_layers, hidden=args.teacher_hidden, heads=args.teacher_heads,
        ffn=args.teacher_ffn, sequence_length=seq)
    students = ModelFactory(
        bert_classifier, "student", args.seed + 1, vocabulary_size=vocab,
        num_layers=args.student_layers, hidden=args.student_hidden, heads=args.student_heads,
        ffn=args.student_ffn, sequence_length=seq)
    return teachers, students


def token_batches(num_batches, batch_size, sequence_length, vocabulary_size, seed=0):
    """Random BERT-style inputs `[CLS] tokens [SEP] pad...` with random lengths, and labels."""
    n = num_batches * batch_size
    rng = np.random.default_rng(seed)
    lengths = rng.integers(max(4, sequence_length // 8), sequence_length + 1, size=n)
    positions = np.arange(sequence_length)[None, :]
    mask = positions < lengths[:, None]
    ids = rng.integers(min(1000, vocabulary_size // 2), vocabulary_size, size=(n, sequence_length))
    ids[:, 0] = 101  # [CLS]
    ids[np.arange(n), lengths - 1] = 102  # [SEP]
    x = {
        "token_ids": (ids * mask).astype("int32"),
        "padding_mask": mask.astype("int32"),
        "segment_ids": np.zeros((n, sequence_length), "int32"),
    }
    y = rng.integers(0, 2, size=n).astype("int32")
    return x, y, lengths


def autotune(dataset, enabled):
    """`dataset` with tf.data autotuning switched on or off.

    With autotuning on, TF 2.21 destroys an iterator only after the autotuning thread's next
    wake-up, 10 ms * (2^k - 1) after the iterator was made (2.55 s, 5.1 s, 10.2 s, 20.5 s,
    41 s, ...): every `fit`/`predict` call or epoch (a new iterator) ends with that wait.
    """
    options = tf.data.Options()
    options.autotune.enabled = bool(enabled)
    return dataset.with_options(options)


def make_dataset(x, y, batch_size):
    """Pre-made batches, cached in memory, repeated forever, prefetched; no autotuning."""
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size, drop_remainder=True)
    return autotune(ds.cache().repeat().prefetch(2), False)


def adamw(learning_rate):
    return keras.optimizers.AdamW(learning_rate=learning_rate)


def sparse_ce():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def snippets_teacher(args):
    """The packaged MiniLM teacher (new head from `args.seed`), its preprocessor, and the real
    Rotten Tomatoes snippets: `(teacher, preprocessor, texts, tokenized training split)`."""
    from kdistill import teachers
    from kdistill.config import DataConfig
    from kdistill.data import text_splits, tokenize

    texts = text_splits(DataConfig(dataset="rotten_tomatoes"))
    keras.utils.set_random_seed(args.seed)
    teacher, preprocessor = teachers.minilm_teacher(num_classes=len(texts.label_names),
                                                    sequence_length=args.sequence_length)
    return teacher, preprocessor, texts, tokenize(texts.train, preprocessor)


# --------------------------------------------------------------------------------- contenders


class StepContender:
    """Times a model's compiled train (or predict) step on a persistent iterator.

    Args:
        name: str.
        model: compiled keras.Model.
        dataset: an infinite `tf.data.Dataset` (the iterator is made once and reused).
        mode: `"train"` or `"predict"`.
    """

    def __init__(self, name, model, dataset, mode="train"):
        self.name, self.model, self.mode = name, model, mode
        self.iterator = None
        self.dataset = dataset

    def _function(self):
        if self.mode == "train":
            self.model.make_train_function()
            return self.model.train_function
        self.model.make_predict_function()
        return self.model.predict_function

    def warm_up(self, steps):
        """First call: builds the model through one `fit`/`predict` step, then traces ours."""
        if self.mode == "train":
            self.model.fit(self.dataset, epochs=1, steps_per_epoch=1, verbose=0)
        else:
            self.model.predict(self.dataset, steps=1, verbose=0)
        self.function = self._function()
        self.iterator = iter(self.dataset)
        return self.run(steps)

    def run(self, steps):
        """Runs `steps` steps; returns `(wall, process CPU)` seconds per step."""
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(steps):
            if self.mode == "train":  # Keras' train function takes the iterator ...
                out = self.function(self.iterator)
            else:  # ... its predict function a list of batches
                out = self.function([next(self.iterator)])
        _block(out)
        return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps


def _block(out):
    """Waits for the step's outputs (steps are asynchronous only on accelerators)."""
    for t in tf.nest.flatten(out):
        if hasattr(t, "numpy"):
            t.numpy()
            return


class CallableContender:
    """Times a Python callable `fn()` that does one unit of work (e.g. one epoch)."""

    def __init__(self, name, fn, units=1):
        self.name, self.fn, self.units = name, fn, units

    def warm_up(self, steps):
        return self.run(steps)

    def run(self, steps):
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(steps):
            self.fn()
        n = steps * self.units
        return (time.perf_counter() - wall) / n, (time.process_time() - cpu) / n


# --------------------------------------------------------------------------------- measurement


def measure(contenders, rounds, steps, warmup_steps, log=print):
    """Warm-up, then `rounds` interleaved rounds (order rotates every round).

    Returns:
        `(wall, cpu)`: two dicts `{name: [seconds per step, one per round]}`.
    """
    for c in contenders:
        start = time.perf_counter()
        c.warm_up(warmup_steps)
        log(f"  warm-up {c.name:<22} {time.perf_counter() - start:7.1f} s (includes tracing)")
    wall = {c.name: [] for c in contenders}
    cpu = {c.name: [] for c in contenders}
    for r in range(rounds):
        k = r % len(contenders)
        for c in contenders[k:] + contenders[:k]:
            w, p = c.run(steps)
            wall[c.name].append(w)
            cpu[c.name].append(p)
        log(f"  round {r + 1}/{rounds}: " + "  ".join(
            f"{c.name}={1e3 * wall[c.name][-1]:.1f}" for c in contenders) + " ms")
    return wall, cpu


def statistics_ms(wall, cpu):
    """Per-contender median / min / CPU median (ms) and spread (% of the median)."""
    names = list(wall)
    return {
        "median_ms": {n: 1e3 * statistics.median(wall[n]) for n in names},
        "min_ms": {n: 1e3 * min(wall[n]) for n in names},
        "median_cpu_ms": {n: 1e3 * statistics.median(cpu[n]) for n in names},
        "spread_pct": {n: 100 * (max(wall[n]) - min(wall[n])) / statistics.median(wall[n])
                       for n in names},
    }


def ratio(stats, numerator, denominator):
    """`{median, min, cpu}` of `numerator / denominator`; each side a name or a list summed."""
    def total(source, names):
        names = [names] if isinstance(names, str) else names
        return sum(stats[source][n] for n in names)

    return {key: total(source, numerator) / total(source, denominator)
            for key, source in (("median", "median_ms"), ("min", "min_ms"),
                                ("cpu", "median_cpu_ms"))}


def per_round_ratio(wall, numerator, denominator):
    """The ratio in each round (a list), from `{name: [per-round seconds]}`."""
    def total(names, r):
        names = [names] if isinstance(names, str) else names
        return sum(wall[n][r] for n in names)

    rounds = len(next(iter(wall.values())))
    return [total(numerator, r) / total(denominator, r) for r in range(rounds)]


def paired_ratio(stats, wall, numerator, denominator, **extra):
    """`ratio(...)` with the ratio of each round (`rounds`) and the `extra` keys (a title,
    a target...): what every benchmark's `ratios` entry holds."""
    return dict(ratio(stats, numerator, denominator),
                rounds=per_round_ratio(wall, numerator, denominator), **extra)


# --------------------------------------------------------------------------------- reports


def parse_args(description, defaults, quick, argv=None, add_arguments=None):
    """Options shared by the scripts: one `--<size>` per key of `defaults`, `--quick` (unset sizes
    from `quick`), `--learning-rate`, `--seed`, `--json`, plus `add_arguments(parser)`'s."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="small models, a few minutes")
    for key, value in defaults.items():
        parser.add_argument("--" + key.replace("_", "-"), type=int, default=None,
                            help=f"default {value} (--quick: {quick[key]})")
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="PATH", help="write the numbers to this JSON file")
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args(argv)
    for key, value in (quick if args.quick else defaults).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def command_line(script, argv=None):
    """The command that reproduces this run, for the report."""
    argv = sys.argv[1:] if argv is None else argv
    return " ".join([".venv/bin/python", f"benchmarks/{script}"] + [shlex.quote(a) for a in argv])



def git_state():
    """`{commit, kdistill_dirty}` of the tree being measured (None outside a git checkout)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root,
                                capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "kdistill"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "kdistill_dirty": None}
    return {"commit": commit, "kdistill_dirty": bool(dirty)}


def environment(loads):
    """One line naming versions, CPUs and the load average at start -> end."""
    return (f"TF {tf.__version__}, Keras {keras.__version__}, keras-hub {keras_hub.__version__}; "
            f"{os.cpu_count()} CPUs, load average {loads[0]:.1f} -> {loads[-1]:.1f}")


def print_stats(stats, labels):
    """Prints the per-contender table."""
    header = f"{'contender (ms)':<46}{'median':>9}{'min':>9}{'CPU med':>9}{'spread':>8}"
    print("\n" + header + "\n" + "-" * len(header))
    for name in stats["median_ms"]:
        print(f"{labels.get(name, name):<46}{stats['median_ms'][name]:>9.1f}"
              f"{stats['min_ms'][name]:>9.1f}{stats['median_cpu_ms'][name]:>9.1f}"
              f"{stats['spread_pct'][name]:>7.0f}%")


def print_ratios(ratios):
    """Prints `{title: {median, min, cpu, target, rounds}}` with a verdict on the median."""
    print(f"\n{'ratio':<46}{'median':>9}{'min':>9}{'CPU med':>9}   target   verdict (median)")
    for title, r in ratios.items():
        target = r.get("target")
        verdict = "" if target is None else ("OK" if r["median"] <= target else "ABOVE TARGET")
        bound = "" if target is None else f"<= {target:.2f}"
        print(f"{title:<46}{r['median']:>9.3f}{r['min']:>9.3f}{r['cpu']:>9.3f}   {bound:<8} "
              f"{verdict}")
        if r.get("rounds"):
            print(f"{'   per round':<46}  {min(r['rounds']):.3f} .. {max(r['rounds']):.3f}")


def write_json(path, record):
    """Writes `record` (plus versions) as JSON."""
    record = dict(record)
    record["versions"] = {"tensorflow": tf.__version__, "keras": keras.__version__,
                          "keras_hub": keras_hub.__version__,
                          "python": platform.python_version()}
    record["cpus"] = os.cpu_count()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(record, f, indent=2)
    print(f"wrote {path}")
