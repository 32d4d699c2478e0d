"""Per-step cost of `kdistill.Distiller` vs its parts, vs `keras.distillation.Distiller`, and XLA.

Contenders, each a fresh copy of the same models with the same initial weights, timed on the same
in-memory batches in one process (see `common.py` for the timing method):

- `kdistill`: a `kdistill.Distiller(teacher, student, temperature, alpha)` train step.
- `keras`: `keras.distillation.Distiller` on the same logits-KD job (`LogitsDistillation` with a
  `KLDivergence` loss instance, `student_loss_weight=alpha`, student loss sparse CE from logits).
- `teacher`: the teacher forward alone in inference mode (a predict step).
- `student`: a student-only train step (sparse CE from logits).
- `kdistill_xla`: the `kdistill` step compiled with XLA (`jit_compile=True`, one device).

Printed ratios:

1. `kdistill / (teacher + student)`, target <= 1.05 (the Distiller adds nothing to its parts);
2. `kdistill / keras`, target <= 1.0 (no slower than Keras' own Distiller);
3. `kdistill_xla / kdistill` (XLA on vs off; informative, no target).

`--profile` adds kdistill variants with the per-step safety checks switched off (`check_finite`,
label-range assertions, the cross-replica batch-size all-reduce), plus a micro-benchmark of the
loss computation alone. `--no-xla` skips the XLA contender (its compilation takes minutes at the
default size on 2 cores).

Steps are timed by calling Keras' compiled train/predict function on one persistent iterator per
contender. An earlier version timed whole `fit`/`predict` calls (a new iterator, callbacks and the
data adapter each call) with a `prefetch(AUTOTUNE)` dataset; see benchmarks/README.md for what that
did to the default-size figures.

Run:
    .venv/bin/python benchmarks/step_overhead.py --json bench/step_overhead.json
    .venv/bin/python benchmarks/step_overhead.py --quick            # small models
    .venv/bin/python benchmarks/step_overhead.py --quick --profile  # + kdistill without checks
"""

import os
import time

import common  # noqa: I001  (benchmarks/common.py; sets TF_CPP_MIN_LOG_LEVEL before TF loads)
import keras
import numpy as np
import tensorflow as tf

import kdistill
from kdistill.objectives import LogitsKD

TARGET_VS_PARTS = 1.05
TARGET_VS_KERAS = 1.0

DEFAULTS, QUICK = dict(common.STEP_DEFAULTS), dict(common.STEP_QUICK)

LABELS = {
    "kdistill": "kdistill.Distiller train step",
    "keras": "keras.distillation.Distiller train step",
    "teacher": "teacher forward alone (predict step)",
    "student": "student-only train step",
    "kdistill_xla": "kdistill.Distiller train step, XLA",
    "kdistill_nocheck": "kdistill, check_finite=False",
    "kdistill_lean": "kdistill, no checks/asserts/all_reduce",
}


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


def build_contenders(cfg, teachers, students, dataset, profile, xla):
    """Returns the contenders, each with fresh models and a fresh AdamW optimizer."""
    lr, temperature, alpha = cfg["learning_rate"], cfg["temperature"], cfg["alpha"]
    contenders = []

    def ours(jit_compile=False, cls=kdistill.Distiller, **kwargs):
        if "objectives" not in kwargs:
            kwargs.update(temperature=temperature, alpha=alpha)
        model = cls(teachers(), students(), **kwargs)
        model.compile(optimizer=common.adamw(lr), jit_compile=jit_compile)
        return model

    contenders.append(common.StepContender("kdistill", ours(), dataset))

    theirs = keras.distillation.Distiller(
        teacher=teachers(), student=students(),
        distillation_losses=keras.distillation.LogitsDistillation(
            temperature=temperature, loss=keras.losses.KLDivergence()),
        student_loss_weight=alpha,
    )
    theirs.compile(optimizer=common.adamw(lr), loss=common.sparse_ce(), jit_compile=False)
    contenders.append(common.StepContender("keras", theirs, dataset))

    teacher = teachers()
    teacher.trainable = False
    teacher.compile(jit_compile=False)
    contenders.append(common.StepContender("teacher", teacher, dataset, mode="predict"))

    student = students()
    student.compile(optimizer=common.adamw(lr), loss=common.sparse_ce(), jit_compile=False)
    contenders.append(common.StepContender("student", student, dataset))

    if xla:
        contenders.append(common.StepContender("kdistill_xla", ours(jit_compile=True), dataset))
    if profile:
        contenders.append(common.StepContender("kdistill_nocheck", ours(check_finite=False),
                                               dataset))
        lean = ours(cls=_LocalBatchDistiller, check_finite=False,
                    objectives=[_UncheckedLogitsKD(temperature=temperature, alpha=alpha)])
        contenders.append(common.StepContender("kdistill_lean", lean, dataset))
    return contenders


# --------------------------------------------------------------------------------- measurement


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
    sce = common.sparse_ce()

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


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# --------------------------------------------------------------------------------- report


def summarize(wall, cpu):
    """Per-contender statistics (ms/step) and the ratios, each with per-round values."""
    stats = common.statistics_ms(wall, cpu)
    ratios = {}
    for key, title, num, den, target in (
        ("vs_parts", "1: kdistill / (teacher + student)", "kdistill", ["teacher", "student"],
         TARGET_VS_PARTS),
        ("vs_keras", "2: kdistill / keras Distiller", "kdistill", "keras", TARGET_VS_KERAS),
        ("xla", "3: kdistill XLA / kdistill", "kdistill_xla", "kdistill", None),
        ("nocheck_vs_keras", "kdistill, check_finite=False / keras", "kdistill_nocheck",
         "keras", None),
        ("lean_vs_keras", "kdistill, no checks / keras", "kdistill_lean", "keras", None),
    ):
        names = ([num] if isinstance(num, str) else num) + ([den] if isinstance(den, str)
                                                            else den)
        if not all(n in wall for n in names):
            continue
        ratios[key] = common.paired_ratio(stats, wall, num, den, title=title, target=target)
    summary = {"stats": stats, "ratios": ratios}
    # Flat keys kept from the first version of this script (used by earlier JSON readers).
    for key in ("vs_parts", "vs_keras"):
        summary[f"ratio_{key}"] = ratios[key]["median"]
    return summary


def print_table(cfg, summary, command, loads):
    """Prints configuration, per-contender times and the ratios against their targets."""
    git = cfg["git"]
    print("\n== kdistill step overhead ==")
    print(f"command : {command}")
    print(f"code    : git {git['commit']}"
          + (" + uncommitted kdistill/ changes" if git["kdistill_dirty"] else ""))
    print(f"config  : vocab {cfg['vocabulary_size']}, seq {cfg['sequence_length']} (mean length "
          f"{cfg['mean_length']:.0f}), batch {cfg['batch_size']}, T={cfg['temperature']}, "
          f"alpha={cfg['alpha']}, AdamW lr={cfg['learning_rate']}")
    for who in ("teacher", "student"):
        print(f"{who:<8}: {cfg[who + '_layers']} layers, hidden {cfg[who + '_hidden']}, "
              f"{cfg[who + '_heads']} heads, FFN {cfg[who + '_ffn']} "
              f"({cfg[who + '_params'] / 1e6:.1f}M params)")
    print(f"timing  : {cfg['rounds']} interleaved rounds x {cfg['steps']} steps per contender "
          f"(+{cfg['warmup_steps']} warm-up); {common.environment(loads)}")
    common.print_stats(summary["stats"], LABELS)
    stats = summary["stats"]
    parts = {k: stats[k]["teacher"] + stats[k]["student"]
             for k in ("median_ms", "min_ms", "median_cpu_ms")}
    print(f"{'teacher + student':<46}{parts['median_ms']:>9.1f}{parts['min_ms']:>9.1f}"
          f"{parts['median_cpu_ms']:>9.1f}")
    common.print_ratios({r["title"]: r for r in summary["ratios"].values()})
    if "loss_microbenchmark_us" in summary:
        print("\nloss block alone (fixed logits, tf.function loop), microseconds per call:")
        for name, value in summary["loss_microbenchmark_us"].items():
            print(f"  {name:<48}{value:>8.1f} us")


def door_check_ms(teachers, students, dataset, repeats=5):
    """Milliseconds of the first-batch checks at the door of `fit` (once per call, not per step).

    `kdistill.Distiller.fit` checks the first batch of its data before Keras trains (ranks,
    dtypes, token ids vs each model's vocabulary, lengths vs each position table, labels, and
    once per Distiller a teacher forward on 32 examples for the probabilities warning). Times
    those checks alone on the benchmark's dataset: the first call (with the teacher forward)
    and the median of `repeats` later ones.
    """
    model = kdistill.Distiller(teachers(), students())
    model.compile(optimizer="adam")
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        model._check_inputs(dataset, None, None, "training")  # what fit runs first
        times.append(1e3 * (time.perf_counter() - start))
    return {"first_ms": times[0], "later_median_ms": float(np.median(times[1:]))}


def parse_args(argv=None):
    """Command-line options; `--quick` switches every unset size to the small configuration."""
    def add(parser):
        parser.add_argument("--temperature", type=float, default=4.0)
        parser.add_argument("--alpha", type=float, default=0.5)
        parser.add_argument("--num-batches", type=int, default=None,
                            help="distinct pre-made batches, cycled (default: --steps)")
        parser.add_argument("--profile", action="store_true",
                            help="also time kdistill without its per-step checks, and the loss")
        parser.add_argument("--no-xla", action="store_true", help="skip the XLA contender")

    args = common.parse_args(__doc__.splitlines()[0], DEFAULTS, QUICK, argv, add)
    if args.num_batches is None:
        args.num_batches = args.steps
    return args


def main(argv=None):
    """Runs the benchmark and prints (and optionally writes) the results."""
    args = parse_args(argv)
    command = common.command_line("step_overhead.py", argv)
    cfg = {k: v for k, v in vars(args).items() if k not in ("json",)}
    cfg["git"] = common.git_state()
    loads = [os.getloadavg()[0]]
    wall = time.perf_counter()

    seq, vocab = args.sequence_length, args.vocabulary_size
    teachers, students = common.step_models(args)
    cfg["teacher_params"], cfg["student_params"] = teachers.num_params, students.num_params

    x, y, lengths = common.token_batches(args.num_batches, args.batch_size, seq, vocab,
                                        seed=args.seed)
    cfg["mean_length"] = float(lengths.mean())
    dataset = common.make_dataset(x, y, args.batch_size)

    print(f"Building contenders (teacher {teachers.num_params / 1e6:.1f}M, student "
          f"{students.num_params / 1e6:.1f}M params); mean sequence length "
          f"{lengths.mean():.0f}/{seq}")
    contenders = build_contenders(cfg, teachers, students, dataset, args.profile,
                                  xla=not args.no_xla)
    wall_times, cpu_times = common.measure(contenders, args.rounds, args.steps,
                                           args.warmup_steps)
    summary = summarize(wall_times, cpu_times)
    if args.profile:
        summary["loss_microbenchmark_us"] = loss_microbenchmark(cfg, teachers, students, x, y)
        summary["door_checks"] = door_check_ms(teachers, students, dataset)
    loads.append(os.getloadavg()[0])
    summary["wall_seconds"] = time.perf_counter() - wall
    print_table(cfg, summary, command, loads)
    if "door_checks" in summary:
        door, step = summary["door_checks"], summary["stats"]["median_ms"]["kdistill"]
        print(f"\nfirst-batch checks of fit (once per call): {door['first_ms']:.1f} ms the first "
              f"time (with a teacher forward), {door['later_median_ms']:.1f} ms later; one "
              f"kdistill train step {step:.1f} ms")
    print(f"\nwall time {summary['wall_seconds']:.0f} s")

    if args.json:
        common.write_json(args.json, {
            "command": command, "config": cfg, "load_average": loads,
            "targets": {"ratio_vs_parts": TARGET_VS_PARTS, "ratio_vs_keras": TARGET_VS_KERAS},
            "per_round_ms_per_step": {k: [1e3 * t for t in v] for k, v in wall_times.items()},
            "per_round_cpu_ms_per_step": {k: [1e3 * t for t in v]
                                          for k, v in cpu_times.items()},
            **summary,
        })


if __name__ == "__main__":
    main()
