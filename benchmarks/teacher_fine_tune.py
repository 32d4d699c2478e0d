"""Teacher fine-tuning: padded batches vs trimmed, length-grouped batches (and XLA on one device).

One process, the packaged all-MiniLM-L6-v2 teacher (22.7M params) on the real Rotten Tomatoes
training snippets, fresh copies with the same initial weights per contender. Each contender runs
Keras' compiled train step on its own batches, interleaved in rotating rounds:

- `padded`: shuffled batches at the full sequence length (what `kdistill` did before: every
  snippet padded to 64 tokens).
- `grouped`: `kdistill.data.training_dataset(..., trim=True, group_by_length=True)`, what the
  runner now gives the teacher: batches of similar length, cut to their longest example
  (rounded up to 8).
- `grouped_xla` (with `--xla`): the same batches with `jit_compile=True` (one device only; XLA
  compiles once per batch shape, so its warm-up is long).

A step is one batch of `--batch-size` examples; the `grouped` batches are shorter on average,
which is the point. Printed ratios: `padded / grouped` (the speed-up of the new batches) and,
with `--xla`, `grouped / grouped_xla`.

Run (a few minutes; nothing else running):
    .venv/bin/python benchmarks/teacher_fine_tune.py --json bench/teacher_fine_tune.json
    .venv/bin/python benchmarks/teacher_fine_tune.py --quick
"""

import os
import time

import common  # noqa: I001  (benchmarks/common.py; sets TF_CPP_MIN_LOG_LEVEL before TF loads)
import numpy as np
import tensorflow as tf

from kdistill import teachers as teachers_lib
from kdistill.data.batching import training_dataset

DEFAULTS = dict(sequence_length=64, batch_size=32, steps=10, rounds=4, warmup_steps=2)
QUICK = dict(sequence_length=64, batch_size=32, steps=3, rounds=3, warmup_steps=1)
LABELS = {
    "padded": "padded to the sequence length (before)",
    "grouped": "trimmed, grouped by length (now)",
    "grouped_xla": "trimmed, grouped, jit_compile=True",
}


def parse_args(argv=None):
    def add(parser):
        parser.add_argument("--xla", action="store_true", help="also time jit_compile=True")

    return common.parse_args(__doc__.splitlines()[0], DEFAULTS, QUICK, argv, add)


def main(argv=None):
    args = parse_args(argv)
    command = common.command_line("teacher_fine_tune.py", argv)
    loads, start = [os.getloadavg()[0]], time.perf_counter()
    first, _, texts, train = common.snippets_teacher(args)
    initial = first.get_weights()
    lengths = train.lengths()

    def teacher(jit):
        model = teachers_lib.minilm_teacher(num_classes=len(texts.label_names),
                                            sequence_length=args.sequence_length)[0]
        model.set_weights(initial)
        model.compile(optimizer=common.adamw(args.learning_rate), loss=common.sparse_ce(),
                      jit_compile=jit)
        return model

    epochs = 50  # more steps than the benchmark takes; the streams are repeated anyway
    padded = tf.data.Dataset.from_tensor_slices((train.inputs, train.labels)).shuffle(
        len(train), seed=0).batch(args.batch_size).repeat().prefetch(2)
    grouped = training_dataset(train, args.batch_size, epochs, seed=0, trim=True,
                               group_by_length=True)[0].repeat()
    contenders = [common.StepContender("padded", teacher(False), padded),
                  common.StepContender("grouped", teacher(False), grouped)]
    if args.xla:
        contenders.append(common.StepContender("grouped_xla", teacher(True), grouped))
    widths = [int(x["token_ids"].shape[1]) for x, _ in grouped.take(200)]
    print(f"teacher {first.count_params() / 1e6:.1f}M params; {len(train):,} training snippets, "
          f"mean length {lengths.mean():.1f}/{args.sequence_length} tokens; grouped batches "
          f"{np.mean(widths):.1f} columns on average (first 200)")
    wall, cpu = common.measure(contenders, args.rounds, args.steps, args.warmup_steps)
    loads.append(os.getloadavg()[0])
    stats = common.statistics_ms(wall, cpu)
    ratios = {"padded / grouped (speed-up)": common.paired_ratio(stats, wall, "padded",
                                                                 "grouped")}
    if args.xla:
        ratios["grouped / grouped_xla (XLA speed-up)"] = common.paired_ratio(
            stats, wall, "grouped", "grouped_xla")
    common.print_stats(stats, LABELS)
    common.print_ratios(ratios)
    epoch_steps = -(-len(train) // args.batch_size)
    per_epoch = {n: stats["median_ms"][n] * epoch_steps / 1e3 for n in stats["median_ms"]}
    print("\none epoch = " + f"{epoch_steps} steps: " + ", ".join(
        f"{n} {s:.0f} s" for n, s in per_epoch.items()) + " (median step x steps)")
    print(common.environment(loads) + f"; {time.perf_counter() - start:.0f} s in all")
    print(f"command: {command}")
    if args.json:
        common.write_json(args.json, {"command": command, "git": common.git_state(),
                                      "stats": stats, "ratios": ratios, "loads": loads,
                                      "mean_length": float(lengths.mean()),
                                      "mean_grouped_width": float(np.mean(widths))})


if __name__ == "__main__":
    main()
