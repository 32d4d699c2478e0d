"""Teacher cache: a cached-teacher epoch vs a student-only epoch, and input pipeline throughput.

One process, one synthetic labelled set (random lengths, BERT vocabulary), fresh models with the
same initial weights per contender. The teacher runs once (`cache_teacher_outputs`, timed); then
each contender is one epoch of `fit` over the same examples, interleaved in rotating rounds:

- `cached`: `Distiller(teacher=None, student).fit(load_teacher_cache(...))` (logits KD from the
  cache; batches padded to their longest example).
- `student_same_batches`: `student.fit` on the very batches `load_teacher_cache` yields (its
  inputs and labels, held in memory): the student-only epoch the cached epoch is compared with.
- `student_fixed_padding`: `student.fit` on the original fixed-length batches held in memory
  (what a student-only epoch costs without the cache's per-batch padding).
- `live`: `Distiller(teacher, student).fit` on the original batches (the teacher runs every epoch).
- `pipeline`: one pass over `load_teacher_cache(...)` alone (reading, parsing, padding): the input
  pipeline's throughput, compared with the training throughput of `cached`.
- `cached_autotune` (with `--with-autotune`): `cached` with tf.data autotuning switched back on
  (every dataset here has it off; see `common.autotune` for why).

Printed ratios:
1. `cached / student_same_batches`, target <= 1.15 (the cache costs little over the student);
2. `cached / student_fixed_padding`;
3. `live / cached`: how much faster each epoch after the first is with the cache;
4. `pipeline examples/s / cached training examples/s` (> 1: the pipeline keeps up).

Run:
    .venv/bin/python benchmarks/cached_epoch.py --json bench/cached_epoch.json
    .venv/bin/python benchmarks/cached_epoch.py --quick
"""

import os
import tempfile
import time

import common  # noqa: I001  (benchmarks/common.py; sets TF_CPP_MIN_LOG_LEVEL before TF loads)
import tensorflow as tf

import kdistill
from kdistill.data import cache_teacher_outputs, load_teacher_cache

TARGET = 1.15

DEFAULTS = dict(vocabulary_size=30522, sequence_length=128, batch_size=32, num_examples=512,
                teacher_layers=6, teacher_hidden=384, teacher_heads=12, teacher_ffn=1536,
                student_layers=4, student_hidden=312, student_heads=12, student_ffn=1200,
                rounds=3, warmup_steps=1)
QUICK = dict(vocabulary_size=30522, sequence_length=64, batch_size=16, num_examples=256,
             teacher_layers=2, teacher_hidden=128, teacher_heads=4, teacher_ffn=512,
             student_layers=2, student_hidden=64, student_heads=4, student_ffn=256,
             rounds=5, warmup_steps=1)
LABELS = {
    "cached": "cached-teacher epoch (Distiller, teacher=None)",
    "student_same_batches": "student-only epoch, same batches",
    "student_fixed_padding": "student-only epoch, fixed padding",
    "live": "live-teacher epoch (Distiller)",
    "pipeline": "cache input pipeline alone (one pass)",
    "cached_autotune": "cached-teacher epoch, tf.data autotune on",
}


def parse_args(argv=None):
    def add(parser):
        parser.add_argument("--dtype", default="float16", choices=["float16", "float32"])
        parser.add_argument("--with-autotune", action="store_true",
                            help="also time the cached epoch with tf.data autotuning on")
        parser.add_argument("--cache-dir", help="where to write the cache (default: temp dir)")

    return common.parse_args(__doc__.splitlines()[0], DEFAULTS, QUICK, argv, add)


def epoch(model, dataset):
    return lambda: model.fit(dataset, epochs=1, verbose=0)


def drain(dataset):
    def run():
        for _ in dataset:
            pass
    return run


def main(argv=None):
    args = parse_args(argv)
    command = common.command_line("cached_epoch.py", argv)
    loads, start = [os.getloadavg()[0]], time.perf_counter()
    seq = args.sequence_length

    def factory(who, seed):
        return common.ModelFactory(
            common.bert_classifier, who, seed, vocabulary_size=args.vocabulary_size,
            num_layers=getattr(args, who + "_layers"), hidden=getattr(args, who + "_hidden"),
            heads=getattr(args, who + "_heads"), ffn=getattr(args, who + "_ffn"),
            sequence_length=seq)

    teachers, students = factory("teacher", args.seed), factory("student", args.seed + 1)
    n_batches = args.num_examples // args.batch_size
    x, y, lengths = common.token_batches(n_batches, args.batch_size, seq, args.vocabulary_size,
                                        seed=args.seed)
    fixed = common.autotune(
        tf.data.Dataset.from_tensor_slices((x, y)).batch(args.batch_size).cache(), False)

    directory = args.cache_dir or os.path.join(tempfile.mkdtemp(), "cache")
    teacher = teachers()
    began = time.perf_counter()
    manifest = cache_teacher_outputs(teacher, fixed, directory, dtype=args.dtype,
                                     overwrite=bool(args.cache_dir))
    cache_seconds = time.perf_counter() - began
    cached_ds = load_teacher_cache(directory, args.batch_size, teacher=teacher)
    same = cached_ds.map(lambda x, y, t: (x, y)).cache()
    cached_autotuned = common.autotune(cached_ds, True)

    def distiller(with_teacher):
        model = kdistill.Distiller(teachers() if with_teacher else None, students(),
                                   temperature=4.0, alpha=0.5)
        model.compile(optimizer=common.adamw(args.learning_rate), jit_compile=False)
        return model

    def student():
        model = students()
        model.compile(optimizer=common.adamw(args.learning_rate), loss=common.sparse_ce(),
                      jit_compile=False)
        return model

    n = args.num_examples
    contenders = [
        common.CallableContender("cached", epoch(distiller(False), cached_ds), n),
        common.CallableContender("student_same_batches", epoch(student(), same), n),
        common.CallableContender("student_fixed_padding", epoch(student(), fixed), n),
        common.CallableContender("live", epoch(distiller(True), fixed), n),
        common.CallableContender("pipeline", drain(cached_ds), n),
    ]
    if args.with_autotune:
        contenders.append(common.CallableContender(
            "cached_autotune", epoch(distiller(False), cached_autotuned), n))
    print(f"teacher {teachers.num_params / 1e6:.1f}M, student {students.num_params / 1e6:.1f}M "
          f"params; {n} examples, mean length {lengths.mean():.0f}/{seq}; cache written in "
          f"{cache_seconds:.1f} s ({manifest['bytes_per_example']:.0f} bytes/example)")
    wall, cpu = common.measure(contenders, args.rounds, 1, args.warmup_steps)
    loads.append(os.getloadavg()[0])
    stats = common.statistics_ms(wall, cpu)  # milliseconds per example
    ratios = {}
    for title, num, den, target in (
        ("1: cached / student-only (same batches)", "cached", "student_same_batches", TARGET),
        ("2: cached / student-only (fixed padding)", "cached", "student_fixed_padding", None),
        ("3: live teacher / cached", "live", "cached", None),
        ("4: pipeline / training throughput", "cached", "pipeline", None),
        ("cached, tf.data autotune on / off", "cached_autotune", "cached", None),
    ):
        if num not in wall:
            continue
        ratios[title] = common.paired_ratio(stats, wall, num, den, target=target)

    print("\n== teacher cache: epoch cost and input pipeline ==")
    print(f"command : {command}")
    print(f"config  : batch {args.batch_size}, seq {seq}, cache dtype {args.dtype}, "
          f"{args.rounds} rounds of one epoch each; {common.environment(loads)}")
    print("times below are per example (ms)")
    common.print_stats(stats, LABELS)
    common.print_ratios(ratios)
    print(f"\ncache: {manifest['bytes']} bytes in {len(manifest['shards'])} shard(s), "
          f"{manifest['bytes_per_example']:.0f} bytes/example, written in {cache_seconds:.1f} s")
    print(f"wall time {time.perf_counter() - start:.0f} s")
    if args.json:
        common.write_json(args.json, {
            "command": command, "config": vars(args), "git": common.git_state(),
            "load_average": loads, "stats_ms_per_example": stats, "ratios": ratios,
            "cache_seconds": cache_seconds, "cache_bytes": manifest["bytes"],
            "bytes_per_example": manifest["bytes_per_example"],
            "per_round_ms_per_example": {k: [1e3 * t for t in v] for k, v in wall.items()}})


if __name__ == "__main__":
    main()
