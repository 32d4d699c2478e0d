"""The teacher's two heavy passes in float32 vs mixed_bfloat16 (`teacher.precision`).

One process, the packaged all-MiniLM-L6-v2 teacher (22.7M params) on the real Rotten Tomatoes
training snippets, copies with the same weights per contender (`kdistill.precision.
computing_copy`), interleaved in rotating rounds:

- `train_float32` / `train_mixed_bfloat16`: Keras' compiled train step (AdamW) on the batches
  the runner gives the teacher's fine-tuning (`kdistill.data.training_dataset`: trimmed,
  grouped by length).
- `logits_float32` / `logits_mixed_bfloat16`: `kdistill.teacher_outputs.teacher_logits` over
  the first `--logits-examples` training snippets (what the runner does over the training and
  transfer text), one unit = the whole pass.

Printed: per-contender medians, the ratios `float32 / mixed_bfloat16` (the speed-up), and how
far the bfloat16 logits are from the float32 ones (top-1 agreement, largest difference).
bfloat16 pays only where the hardware computes it natively (`kdistill.precision.
native_bfloat16()`, printed): CPUs with Intel AMX or AVX-512 BF16, GPUs of compute
capability >= 8.0, TPUs.

Run (a few minutes; nothing else running):
    .venv/bin/python benchmarks/teacher_precision.py --json bench/teacher_precision.json
    .venv/bin/python benchmarks/teacher_precision.py --quick
"""

import os
import time

import common  # noqa: I001  (benchmarks/common.py; sets TF_CPP_MIN_LOG_LEVEL before TF loads)
import numpy as np

from kdistill import precision
from kdistill.data.batching import training_dataset
from kdistill.teacher_outputs import teacher_logits

DEFAULTS = dict(sequence_length=64, batch_size=32, steps=10, rounds=4, warmup_steps=2,
                logits_examples=2048)
QUICK = dict(sequence_length=64, batch_size=32, steps=3, rounds=3, warmup_steps=1,
             logits_examples=512)
POLICIES = ("float32", "mixed_bfloat16")


def parse_args(argv=None):
    return common.parse_args(__doc__.splitlines()[0], DEFAULTS, QUICK, argv)


def main(argv=None):
    args = parse_args(argv)
    command = common.command_line("teacher_precision.py", argv)
    loads, start = [os.getloadavg()[0]], time.perf_counter()
    teacher, _, texts, train = common.snippets_teacher(args)
    batches = training_dataset(train, args.batch_size, 50, seed=0, trim=True,
                               group_by_length=True)[0].repeat()
    some = train.take(np.arange(min(args.logits_examples, len(train))))

    contenders, logits = [], {}
    for policy in POLICIES:
        model = precision.computing_copy(teacher, policy)
        if model is teacher:  # a fresh float32 copy too, so both train from the same weights
            model = type(teacher).from_config(teacher.get_config())
            precision.copy_weights(teacher, model)
        model.compile(optimizer=common.adamw(args.learning_rate), loss=common.sparse_ce())
        contenders.append(common.StepContender(f"train_{policy}", model, batches))

    def pass_of(policy):
        def run():
            logits[policy] = teacher_logits(teacher, some, precision=policy)
        return run

    for policy in POLICIES:
        contenders.append(common.CallableContender(f"logits_{policy}", pass_of(policy)))
    print(f"teacher {teacher.count_params() / 1e6:.1f}M params; {len(train):,} training "
          f"snippets; logits pass over {len(some):,}; native bfloat16 here: "
          f"{precision.native_bfloat16()}")
    wall, cpu = common.measure(contenders, args.rounds, args.steps, args.warmup_steps)
    loads.append(os.getloadavg()[0])
    stats = common.statistics_ms(wall, cpu)
    ratios = {}
    for kind in ("train", "logits"):
        a, b = f"{kind}_float32", f"{kind}_mixed_bfloat16"
        ratios[f"{a} / {b} (speed-up)"] = common.paired_ratio(stats, wall, a, b)
    common.print_stats(stats, {c.name: c.name.replace("_", " ", 1) for c in contenders})
    common.print_ratios(ratios)
    f32, bf16 = logits["float32"], logits["mixed_bfloat16"]
    fidelity = {"top1_agreement": float(np.mean(f32.argmax(-1) == bf16.argmax(-1))),
                "max_abs_difference": float(np.abs(f32 - bf16).max()),
                "max_abs_logit": float(np.abs(f32).max())}
    print(f"\nbfloat16 logits vs float32 (a teacher not fine-tuned: its logits are small and "
          f"near ties): top-1 agreement {fidelity['top1_agreement']:.2%}, largest difference "
          f"{fidelity['max_abs_difference']:.3g} (largest |logit| "
          f"{fidelity['max_abs_logit']:.3g})")
    print(common.environment(loads) + f"; {time.perf_counter() - start:.0f} s in all")
    print(f"command: {command}")
    if args.json:
        common.write_json(args.json, {"command": command, "git": common.git_state(),
                                      "stats": stats, "ratios": ratios, "loads": loads,
                                      "fidelity": fidelity,
                                      "native_bfloat16": precision.native_bfloat16()})


if __name__ == "__main__":
    main()
