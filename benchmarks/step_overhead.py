"""Per-step cost of `kdistill.Distiller` vs its parts and vs `keras.distillation.Distiller`.

Contenders, each a fresh copy of the same models with the same initial weights, timed on the same
in-memory batches in one process:

- `kdistill`: `kdistill.Distiller(teacher, student, temperature, alpha).fit` (one train step).
- `keras`: `keras.distillation.Distiller` on the same logits-KD job (`LogitsDistillation` with a
  `KLDivergence` loss instance, `student_loss_weight=alpha`, student loss sparse CE from logits).
- `teacher`: the teacher forward alone in inference mode (`teacher.predict`).
- `student`: a student-only train step (`student.fit`, sparse CE from logits).

Every timing is `fit`/`predict` over `--steps` steps of a cached, repeated dataset (after a warm-up
call that traces the step), divided by the number of steps. Contenders are interleaved in rounds
(the order rotates every round) and the median per-step time of each is reported, so machine drift
affects all of them alike. Printed ratios:

1. `kdistill / (teacher + student)`, target <= 1.05 (the Distiller adds nothing to its parts);
2. `kdistill / keras`, target <= 1.0 (no slower than Keras' own Distiller).

`--profile` adds kdistill variants with the per-step safety checks switched off (`check_finite`,
label-range assertions, the cross-replica batch-size all-reduce) to the same rounds, plus a
micro-benchmark of the loss computation alone.

Tracing the four train/predict functions is a fixed cost (about 1/3 of the run). On a busy shared
machine everything stretches: with a load average of 7-11 on 2 cores the default run took ~18 min
and `--quick --profile` ~8 min. Prefer an idle machine; read the `min` and `CPU` columns as
noise checks.

Run:
    .venv/bin/python benchmarks/step_overhead.py --json bench/step_overhead.json
    .venv/bin/python benchmarks/step_overhead.py --quick            # small models
    .venv/bin/python benchmarks/step_overhead.py --quick --profile  # + kdistill without checks
"""

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import kdistill  # noqa: E402
from kdistill.objectives import LogitsKD  # noqa: E402

TARGET_VS_PARTS = 1.05
TARGET_VS_KERAS = 1.0

DEFAULTS = dict(
    vocabulary_size=30522, sequence_length=128, batch_size=32,
    teacher_layers=6, teacher_hidden=384, teacher_heads=12, teacher_ffn=1536,
    student_layers=4, student_hidden=312, student_heads=12, student_ffn=1200,
    rounds=5, steps=4, warmup_steps=1,
)
QUICK = dict(
    vocabulary_size=30522, sequence_length=64, batch_size=16,
    teacher_layers=2, teacher_hidden=128, teacher_heads=4, teacher_ffn=512,
    student_layers=2, student_hidden=64, student_heads=4, student_ffn=256,
    rounds=9, steps=6, warmup_steps=2,
)


# --------------------------------------------------------------------------------- models, data


def bert_classifier(vocabulary_size, num_layers, hidden, heads, ffn, sequence_length, name):
    """A keras-hub `BertTextClassifier` (2 classes, no preprocessor, no dropout)."""
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=vocabulary_size, num_layers=num_layers, num_heads=heads,
        hidden_dim=hidden, intermediate_dim=ffn, max_sequence_length=max(sequence_length, 128),
        dropout=0.0,
    )
    return keras_hub.models.BertTextClassifier(
        backbone=backbone, num_classes=2, preprocessor=None, dropout=0.0, name=name,
    )


class ModelFactory:
    """Builds fresh copies of one architecture, all with the same initial weights."""

    def __init__(self, name, seed, **arch):
        self.name, self.arch = name, arch
        keras.utils.set_random_seed(seed)
        self.weights = bert_classifier(name=name, **arch).get_weights()
        self.num_params = int(sum(w.size for w in self.weights))

    def __call__(self):
        model = bert_classifier(name=self.name, **self.arch)
        model.set_weights(self.weights)
        return model


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


def make_dataset(x, y, batch_size):
    """Pre-made batches, cached in memory, repeated forever, prefetched."""
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size, drop_remainder=True)
    return ds.cache().repeat().prefetch(tf.data.AUTOTUNE)


# --------------------------------------------------------------------------------- contenders


class _UncheckedLogitsKD(LogitsKD):
    """`LogitsKD` without the label-range assertions (profiling variant)."""

    def _checked_labels(self, labels, num_classes):
        return labels


class _NoAllReduceContext:
    """Stands in for the replica context: `all_reduce` returns the local value."""

    def all_reduce(self, reduce_op, value):
        return value


class _LocalBatchDistiller(kdistill.Distiller):
    """`kdistill.Distiller` dividing by the local batch size, no all-reduce (profiling variant).

    `compute_distillation_loss` only runs while the step is traced, so swapping
    `tf.distribute.get_replica_context` for that call removes the all-reduce from the graph and
    leaves the rest of the step as is. Exact on one replica only.
    """

    def compute_distillation_loss(self, *args, **kwargs):
        original = tf.distribute.get_replica_context
        tf.distribute.get_replica_context = _NoAllReduceContext
        try:
            return super().compute_distillation_loss(*args, **kwargs)
        finally:
            tf.distribute.get_replica_context = original


def _optimizer(learning_rate):
    return keras.optimizers.AdamW(learning_rate=learning_rate)


class FitContender:
    """Times `model.fit` per step on a repeated dataset."""

    def __init__(self, name, model, dataset):
        self.name, self.model, self.dataset = name, model, dataset

    def run(self, steps):
        """Runs `steps` train steps; returns `(wall, process CPU)` seconds per step."""
        wall, cpu = time.perf_counter(), time.process_time()
        self.model.fit(self.dataset, epochs=1, steps_per_epoch=steps, verbose=0)
        return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps


class PredictContender:
    """Times `model.predict` per step (inference-mode forward) on a repeated dataset."""

    def __init__(self, name, model, dataset):
        self.name, self.model, self.dataset = name, model, dataset

    def run(self, steps):
        """Runs `steps` forward passes; returns `(wall, process CPU)` seconds per step."""
        wall, cpu = time.perf_counter(), time.process_time()
        self.model.predict(self.dataset, steps=steps, verbose=0)
        return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps


def build_contenders(cfg, teachers, students, dataset, profile):
    """Returns the contenders, each with fresh models and a fresh AdamW optimizer."""
    lr, temperature, alpha = cfg["learning_rate"], cfg["temperature"], cfg["alpha"]
    contenders = []

    ours = kdistill.Distiller(teachers(), students(), temperature=temperature, alpha=alpha)
    ours.compile(optimizer=_optimizer(lr), jit_compile=False)
    contenders.append(FitContender("kdistill", ours, dataset))

    theirs = keras.distillation.Distiller(
        teacher=teachers(), student=students(),
        distillation_losses=keras.distillation.LogitsDistillation(
            temperature=temperature, loss=keras.losses.KLDivergence()),
        student_loss_weight=alpha,
    )
    theirs.compile(optimizer=_optimizer(lr),
                   loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                   jit_compile=False)
    contenders.append(FitContender("keras", theirs, dataset))

    teacher = teachers()
    teacher.trainable = False
    contenders.append(PredictContender("teacher", teacher, dataset))

    student = students()
    student.compile(optimizer=_optimizer(lr),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                    jit_compile=False)
    contenders.append(FitContender("student", student, dataset))

    if profile:
        variant = kdistill.Distiller(teachers(), students(), temperature=temperature,
                                     alpha=alpha, check_finite=False)
        variant.compile(optimizer=_optimizer(lr), jit_compile=False)
        contenders.append(FitContender("kdistill_nocheck", variant, dataset))

        objective = _UncheckedLogitsKD(temperature=temperature, alpha=alpha)
        variant = _LocalBatchDistiller(teachers(), students(), objectives=[objective],
                                       check_finite=False)
        variant.compile(optimizer=_optimizer(lr), jit_compile=False)
        contenders.append(FitContender("kdistill_lean", variant, dataset))
    return contenders


# --------------------------------------------------------------------------------- measurement


def measure(contenders, rounds, steps, warmup_steps, log=print):
    """Warm-up, then `rounds` interleaved rounds (order rotates every round).

    Returns:
        `(wall, cpu)`: two dicts `{name: [seconds per step, one per round]}`, wall-clock and
        process CPU time.
    """
    for c in contenders:
        start = time.perf_counter()
        c.run(warmup_steps)
        log(f"  warm-up {c.name:<17} {time.perf_counter() - start:7.1f} s (includes tracing)")
    wall = {c.name: [] for c in contenders}
    cpu = {c.name: [] for c in contenders}
    for r in range(rounds):
        k = r % len(contenders)
        order = contenders[k:] + contenders[:k]
        for c in order:
            w, p = c.run(steps)
            wall[c.name].append(w)
            cpu[c.name].append(p)
        log(f"  round {r + 1}/{rounds}: " + "  ".join(
            f"{c.name}={1e3 * wall[c.name][-1]:.1f}" for c in contenders) + " ms/step")
    return wall, cpu


def loss_microbenchmark(cfg, teachers, students, x, y, iterations=2000):
    """Microseconds per call of the loss block alone (no models), on fixed logits.

    Compares kdistill's `compute_distillation_loss` (+ check_numerics), its lean variant and the
    Keras Distiller's loss maths, each in a `tf.function` looping `iterations` times.
    """
    batch = cfg["batch_size"]
    xb = {k: tf.constant(v[:batch]) for k, v in x.items()}
    yb = tf.constant(y[:batch])
    rng = np.random.default_rng(1)
    t_logits = tf.constant(rng.normal(size=(batch, 2)).astype("float32"))
    s_logits = tf.constant(rng.normal(size=(batch, 2)).astype("float32"))
    temperature, alpha = cfg["temperature"], cfg["alpha"]

    ours = kdistill.Distiller(teachers(), students(), temperature=temperature, alpha=alpha)
    lean = _LocalBatchDistiller(
        teachers(), students(), check_finite=False,
        objectives=[_UncheckedLogitsKD(temperature=temperature, alpha=alpha)])
    kl = keras.losses.KLDivergence()
    sce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def kdistill_loss(model, check):
        def fn(acc):
            loss, _ = model.compute_distillation_loss(
                xb, yb, {"logits": t_logits}, {"logits": s_logits + acc * 0.0})
            if check:
                loss = tf.debugging.check_numerics(loss, "nonfinite")
            return loss
        return fn

    def keras_loss(acc):
        s = s_logits + acc * 0.0
        student_loss = sce(yb, s)
        kd = tf.reduce_mean(kl(tf.nn.softmax(t_logits / temperature),
                               tf.nn.softmax(s / temperature))) * temperature ** 2
        return alpha * student_loss + (1.0 - alpha) * kd

    variants = {
        "kdistill (check_finite, asserts, all_reduce)": kdistill_loss(ours, True),
        "kdistill without check_numerics": kdistill_loss(ours, False),
        "kdistill lean (no checks, local batch)": kdistill_loss(lean, False),
        "keras.distillation loss maths": keras_loss,
    }
    results = {}
    for name, fn in variants.items():
        @tf.function(jit_compile=False, autograph=False)
        def loop(fn=fn):
            return tf.while_loop(lambda i, a: i < iterations,
                                 lambda i, a: (i + 1, a + fn(a)), (0, tf.constant(0.0)))[1]
        loop()  # trace
        best = min(_timed(loop) for _ in range(5))
        results[name] = 1e6 * best / iterations
    return results


def git_state():
    """`{commit, kdistill_dirty}` of the tree being measured (None outside a git checkout)."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root,
                                capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "kdistill"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "kdistill_dirty": None}
    return {"commit": commit, "kdistill_dirty": bool(dirty)}


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# --------------------------------------------------------------------------------- report


def _ratios(values):
    """`(vs parts, vs keras)` from `{name: seconds}`."""
    parts = values["teacher"] + values["student"]
    return values["kdistill"] / parts, values["kdistill"] / values["keras"]


def summarize(wall, cpu):
    """Per-contender statistics (ms/step) and the two ratios.

    The headline ratios use the median wall-clock time per step of each contender. As noise
    checks, the same ratios from the fastest round of each contender (noise only ever adds time)
    and from process CPU time (less sensitive to other tenants), and the per-round range.
    """
    names = list(wall)
    stats = {
        "median_ms": {n: 1e3 * statistics.median(wall[n]) for n in names},
        "min_ms": {n: 1e3 * min(wall[n]) for n in names},
        "median_cpu_ms": {n: 1e3 * statistics.median(cpu[n]) for n in names},
        "spread_pct": {n: 100 * (max(wall[n]) - min(wall[n])) / statistics.median(wall[n])
                       for n in names},
    }
    per_round = [_ratios({n: wall[n][r] for n in names}) for r in range(len(wall["kdistill"]))]
    summary = {"stats": stats}
    for key, source in (("median", "median_ms"), ("min", "min_ms"), ("cpu", "median_cpu_ms")):
        summary[f"ratio_vs_parts_{key}"], summary[f"ratio_vs_keras_{key}"] = _ratios(
            stats[source])
    summary["ratio_vs_parts"] = summary["ratio_vs_parts_median"]
    summary["ratio_vs_keras"] = summary["ratio_vs_keras_median"]
    summary["ratio_vs_parts_per_round"] = [r[0] for r in per_round]
    summary["ratio_vs_keras_per_round"] = [r[1] for r in per_round]
    for name in ("kdistill_nocheck", "kdistill_lean"):
        if name in names:
            summary[f"ratio_{name}_vs_keras"] = (stats["median_ms"][name]
                                                 / stats["median_ms"]["keras"])
            summary[f"ratio_{name}_vs_keras_min"] = (stats["min_ms"][name]
                                                     / stats["min_ms"]["keras"])
    return summary


LABELS = {
    "kdistill": "kdistill.Distiller train step",
    "keras": "keras.distillation.Distiller train step",
    "teacher": "teacher forward alone (predict)",
    "student": "student-only train step (fit)",
    "kdistill_nocheck": "kdistill, check_finite=False",
    "kdistill_lean": "kdistill, no checks/asserts/all_reduce",
}


def print_table(cfg, summary, command, loads):
    """Prints configuration, per-contender times and the two ratios against their targets."""
    stats = summary["stats"]
    git = cfg["git"]
    print("\n== kdistill step overhead ==")
    print(f"command : {command}")
    print(f"code    : git {git['commit']}"
          + (" + uncommitted kdistill/ changes" if git["kdistill_dirty"] else ""))
    print(f"config  : vocab {cfg['vocabulary_size']}, seq {cfg['sequence_length']} (mean length "
          f"{cfg['mean_length']:.0f}), batch {cfg['batch_size']}, T={cfg['temperature']}, "
          f"alpha={cfg['alpha']}, AdamW lr={cfg['learning_rate']}, jit_compile=False")
    print(f"teacher : {cfg['teacher_layers']} layers, hidden {cfg['teacher_hidden']}, "
          f"{cfg['teacher_heads']} heads, FFN {cfg['teacher_ffn']} "
          f"({cfg['teacher_params'] / 1e6:.1f}M params)")
    print(f"student : {cfg['student_layers']} layers, hidden {cfg['student_hidden']}, "
          f"{cfg['student_heads']} heads, FFN {cfg['student_ffn']} "
          f"({cfg['student_params'] / 1e6:.1f}M params)")
    print(f"timing  : {cfg['rounds']} interleaved rounds x {cfg['steps']} steps per contender "
          f"(+{cfg['warmup_steps']} warm-up); TF {tf.__version__}, Keras {keras.__version__}, "
          f"keras-hub {keras_hub.__version__}; {os.cpu_count()} CPUs, load average "
          f"{loads[0]:.1f} -> {loads[1]:.1f}")
    header = f"{'contender (ms per step)':<42}{'median':>9}{'min':>9}{'CPU med':>9}{'spread':>8}"
    print("\n" + header + "\n" + "-" * len(header))
    for name in stats["median_ms"]:
        print(f"{LABELS.get(name, name):<42}{stats['median_ms'][name]:>9.1f}"
              f"{stats['min_ms'][name]:>9.1f}{stats['median_cpu_ms'][name]:>9.1f}"
              f"{stats['spread_pct'][name]:>7.0f}%")
    parts = {k: stats[k]["teacher"] + stats[k]["student"]
             for k in ("median_ms", "min_ms", "median_cpu_ms")}
    print(f"{'teacher + student':<42}{parts['median_ms']:>9.1f}{parts['min_ms']:>9.1f}"
          f"{parts['median_cpu_ms']:>9.1f}")

    print(f"\n{'ratio':<42}{'median':>9}{'min':>9}{'CPU med':>9}   target  verdict (median)")
    for key, title, target in (("parts", "1: kdistill / (teacher + student)", TARGET_VS_PARTS),
                               ("keras", "2: kdistill / keras Distiller", TARGET_VS_KERAS)):
        value = summary[f"ratio_vs_{key}_median"]
        rounds = summary[f"ratio_vs_{key}_per_round"]
        print(f"{title:<42}{value:>9.3f}{summary[f'ratio_vs_{key}_min']:>9.3f}"
              f"{summary[f'ratio_vs_{key}_cpu']:>9.3f}   <= {target:.2f}  "
              f"{'OK' if value <= target else 'ABOVE TARGET'}")
        print(f"{'   per round':<42}  {min(rounds):.3f} .. {max(rounds):.3f}")
    for name in ("kdistill_nocheck", "kdistill_lean"):
        if f"ratio_{name}_vs_keras" in summary:
            print(f"{LABELS[name] + ' / keras':<42}{summary[f'ratio_{name}_vs_keras']:>9.3f}"
                  f"{summary[f'ratio_{name}_vs_keras_min']:>9.3f}")
    if "loss_microbenchmark_us" in summary:
        print("\nloss block alone (fixed logits, tf.function loop), microseconds per call:")
        for name, value in summary["loss_microbenchmark_us"].items():
            print(f"  {name:<48}{value:>8.1f} us")


def parse_args(argv=None):
    """Command-line options; `--quick` switches every unset size to the small configuration."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="small models and batch, for a run under 2 minutes")
    for key, value in DEFAULTS.items():
        parser.add_argument("--" + key.replace("_", "-"), type=int, default=None,
                            help=f"default {value} (--quick: {QUICK[key]})")
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--num-batches", type=int, default=None,
                        help="distinct pre-made batches, cycled (default: --steps)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", action="store_true",
                        help="also time kdistill without its per-step checks, and the loss alone")
    parser.add_argument("--json", metavar="PATH", help="write the numbers to this JSON file")
    args = parser.parse_args(argv)
    base = QUICK if args.quick else DEFAULTS
    for key, value in base.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.num_batches is None:
        args.num_batches = args.steps
    return args


def main(argv=None):
    """Runs the benchmark and prints (and optionally writes) the results."""
    args = parse_args(argv)
    command = " ".join([".venv/bin/python", "benchmarks/step_overhead.py"]
                       + [shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)])
    cfg = {k: v for k, v in vars(args).items() if k not in ("json",)}
    cfg["git"] = git_state()
    loads = [os.getloadavg()[0]]
    wall = time.perf_counter()

    seq, vocab = args.sequence_length, args.vocabulary_size
    teachers = ModelFactory(
        "teacher", args.seed, vocabulary_size=vocab, num_layers=args.teacher_layers,
        hidden=args.teacher_hidden, heads=args.teacher_heads, ffn=args.teacher_ffn,
        sequence_length=seq)
    students = ModelFactory(
        "student", args.seed + 1, vocabulary_size=vocab, num_layers=args.student_layers,
        hidden=args.student_hidden, heads=args.student_heads, ffn=args.student_ffn,
        sequence_length=seq)
    cfg["teacher_params"], cfg["student_params"] = teachers.num_params, students.num_params

    x, y, lengths = token_batches(args.num_batches, args.batch_size, seq, vocab, seed=args.seed)
    cfg["mean_length"] = float(lengths.mean())
    dataset = make_dataset(x, y, args.batch_size)

    print(f"Building contenders (teacher {teachers.num_params / 1e6:.1f}M, student "
          f"{students.num_params / 1e6:.1f}M params); mean sequence length "
          f"{lengths.mean():.0f}/{seq}")
    contenders = build_contenders(cfg, teachers, students, dataset, args.profile)
    wall_times, cpu_times = measure(contenders, args.rounds, args.steps, args.warmup_steps)
    summary = summarize(wall_times, cpu_times)
    if args.profile:
        summary["loss_microbenchmark_us"] = loss_microbenchmark(cfg, teachers, students, x, y)
    loads.append(os.getloadavg()[0])
    summary["wall_seconds"] = time.perf_counter() - wall
    print_table(cfg, summary, command, loads)
    print(f"\nwall time {summary['wall_seconds']:.0f} s")

    if args.json:
        record = {
            "command": command, "config": cfg, "load_average": loads,
            "versions": {"tensorflow": tf.__version__, "keras": keras.__version__,
                         "keras_hub": keras_hub.__version__, "python": platform.python_version()},
            "cpus": os.cpu_count(),
            "targets": {"ratio_vs_parts": TARGET_VS_PARTS, "ratio_vs_keras": TARGET_VS_KERAS},
            "per_round_ms_per_step": {k: [1e3 * t for t in v] for k, v in wall_times.items()},
            "per_round_cpu_ms_per_step": {k: [1e3 * t for t in v]
                                          for k, v in cpu_times.items()},
            **summary,
        }
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(record, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
