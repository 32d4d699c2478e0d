"""Step time of a labels-only Distiller (no teacher forward) vs a KD Distiller vs the student alone.

Issue 18: a Distiller whose only teacher-using term weighs 0 (`LogitsKD(alpha=1.0)`: the labels
alone, the runner's labels-only baseline) used to run the live teacher every step. Contenders,
each a fresh copy of the same models with the same initial weights, timed on the same in-memory
batches in one process (see `common.py` for the timing method):

- `labels_only`: `kdistill.Distiller(teacher, student, alpha=1.0)` train step (the teacher is
  skipped);
- `labels_only_teacher`: the same loss with the teacher forced to run every step (a `LogitsKD`
  whose `reads_teacher()` always says True): what the labels-only step cost before;
- `kd`: `kdistill.Distiller(teacher, student, alpha=0.5)` train step (Hinton KD);
- `student`: the student alone, `compile(loss=SparseCategoricalCrossentropy(from_logits=True))`.

Printed ratios: `labels_only / student` (target <= 1.05: a labels-only Distiller costs what the
student alone costs), `labels_only / kd`, `labels_only_teacher / labels_only` (what the skip
saves).

Run:
    .venv/bin/python benchmarks/teacher_skip.py --json bench/teacher_skip.json
    .venv/bin/python benchmarks/teacher_skip.py --quick
"""

import os
import time

import common  # noqa: I001  (benchmarks/common.py; sets TF_CPP_MIN_LOG_LEVEL before TF loads)

import kdistill
from kdistill.objectives import LogitsKD

TARGET_VS_STUDENT = 1.05

DEFAULTS, QUICK = dict(common.STEP_DEFAULTS), dict(common.STEP_QUICK)

LABELS = {
    "labels_only": "Distiller alpha=1 (teacher skipped)",
    "labels_only_teacher": "Distiller alpha=1, teacher forced (before)",
    "kd": "Distiller alpha=0.5 (KD)",
    "student": "student alone (sparse CE)",
}


class _TeacherAlwaysLogitsKD(LogitsKD):
    """`LogitsKD` that always asks for the teacher: the behaviour before issue 18."""

    def reads_teacher(self, labelled=True):
        return True


def build_contenders(cfg, teachers, students, dataset):
    lr = cfg["learning_rate"]

    def distiller(objective):
        model = kdistill.Distiller(teachers(), students(), objectives=[objective])
        model.compile(optimizer=common.adamw(lr), jit_compile=False)
        return model

    student = students()
    student.compile(optimizer=common.adamw(lr), loss=common.sparse_ce(), jit_compile=False)
    temperature = cfg["temperature"]
    return [
        common.StepContender("labels_only", distiller(LogitsKD(temperature, alpha=1.0)),
                             dataset),
        common.StepContender("labels_only_teacher",
                             distiller(_TeacherAlwaysLogitsKD(temperature, alpha=1.0)), dataset),
        common.StepContender("kd", distiller(LogitsKD(temperature, alpha=0.5)), dataset),
        common.StepContender("student", student, dataset),
    ]


def summarize(wall, cpu):
    stats = common.statistics_ms(wall, cpu)
    ratios = {}
    for key, title, num, den, target in (
        ("vs_student", "labels-only / student alone", "labels_only", "student",
         TARGET_VS_STUDENT),
        ("vs_kd", "labels-only / KD", "labels_only", "kd", None),
        ("saved", "labels-only with teacher / labels-only", "labels_only_teacher",
         "labels_only", None),
        ("kd_vs_student", "KD / student alone", "kd", "student", None),
    ):
        ratios[key] = common.paired_ratio(stats, wall, num, den, title=title, target=target)
    return {"stats": stats, "ratios": ratios}


def main(argv=None):
    def add(parser):
        parser.add_argument("--temperature", type=float, default=2.0)

    args = common.parse_args(__doc__.splitlines()[0], DEFAULTS, QUICK, argv, add)
    command = common.command_line("teacher_skip.py", argv)
    cfg = {k: v for k, v in vars(args).items() if k != "json"}
    cfg["git"] = common.git_state()
    loads = [os.getloadavg()[0]]
    started = time.perf_counter()
    seq, vocab = args.sequence_length, args.vocabulary_size
    teachers, students = common.step_models(args)
    x, y, lengths = common.token_batches(args.steps, args.batch_size, seq, vocab, seed=args.seed)
    dataset = common.make_dataset(x, y, args.batch_size)
    print(f"teacher {teachers.num_params / 1e6:.1f}M, student {students.num_params / 1e6:.1f}M "
          f"params; batch {args.batch_size}, seq {seq} (mean length {lengths.mean():.0f})")
    contenders = build_contenders(cfg, teachers, students, dataset)
    wall, cpu = common.measure(contenders, args.rounds, args.steps, args.warmup_steps)
    summary = summarize(wall, cpu)
    loads.append(os.getloadavg()[0])
    summary["wall_seconds"] = time.perf_counter() - started
    print("\n== labels-only Distiller: teacher skipped ==")
    print(f"command : {command}")
    print(f"code    : git {cfg['git']['commit']}"
          + (" + uncommitted kdistill/ changes" if cfg["git"]["kdistill_dirty"] else ""))
    print(f"timing  : {args.rounds} interleaved rounds x {args.steps} steps per contender; "
          f"{common.environment(loads)}")
    common.print_stats(summary["stats"], LABELS)
    common.print_ratios({r["title"]: r for r in summary["ratios"].values()})
    print(f"\nwall time {summary['wall_seconds']:.0f} s")
    if args.json:
        common.write_json(args.json, {
            "command": command, "config": cfg, "load_average": loads,
            "per_round_ms_per_step": {k: [1e3 * t for t in v] for k, v in wall.items()},
            **summary,
        })


if __name__ == "__main__":
    main()
