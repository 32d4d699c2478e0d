"""Hidden-state feature KD: a `kdistill.Distiller` step vs a `keras.distillation.Distiller` step.

`keras.distillation.FeatureDistillation` only reaches **top-level** layers of a functional model
and has no projection, so both sides use a flat functional encoder classifier whose
`TransformerEncoder` layers are top-level (`encoder_0`, `encoder_1`, ...) and a student with the
teacher's width. The job, identical on both sides:

    loss = alpha * CE(labels, student logits) + (1 - alpha) * sum_pairs MSE(h_teacher, h_student)

over the layer pairs (student `encoder_i` <-> teacher `encoder_j`):
- `keras`: one `FeatureDistillation(loss="mse", teacher_layer_name, student_layer_name)` per pair
  and `student_loss_weight=alpha`. Its train step runs the student twice (once for the logits,
  once for the features) and the teacher once.
- `kdistill`: `LogitsKD(alpha=1.0, weight=alpha)` (the CE; its KL term has weight 0) and
  `HiddenStateKD(layer_map=pairs, projection=None, weight=1 - alpha)`, with
  `teacher_layer_names`/`student_layer_names` naming the same layers. It runs each model once.
  Its MSE averages over real tokens only (padding excluded); Keras' over all positions, which
  costs the same.

Printed ratio: `kdistill / keras` per train step, target <= 0.85.

Run:
    .venv/bin/python benchmarks/feature_kd.py --json bench/feature_kd.json
    .venv/bin/python benchmarks/feature_kd.py --quick
"""

import os
import time

import common  # noqa: I001  (benchmarks/common.py; sets TF_CPP_MIN_LOG_LEVEL before TF loads)
import keras
import keras_hub

import kdistill
from kdistill.objectives import HiddenStateKD, LogitsKD

TARGET = 0.85

DEFAULTS = dict(vocabulary_size=30522, sequence_length=128, batch_size=32, hidden=384, heads=12,
                ffn=1536, teacher_layers=4, student_layers=2, rounds=5, steps=4, warmup_steps=1)
QUICK = dict(vocabulary_size=30522, sequence_length=64, batch_size=16, hidden=128, heads=4,
             ffn=512, teacher_layers=4, student_layers=2, rounds=9, steps=6, warmup_steps=2)
LABELS = {"kdistill": "kdistill.Distiller (feature KD) train step",
          "keras": "keras.distillation.Distiller (FeatureDistillation)"}


def flat_encoder_classifier(vocabulary_size, num_layers, hidden, heads, ffn, sequence_length,
                            name, num_classes=2):
    """A functional BERT-like classifier whose encoder layers are top-level (`encoder_<i>`)."""
    token_ids = keras.Input((None,), dtype="int32", name="token_ids")
    padding_mask = keras.Input((None,), dtype="int32", name="padding_mask")
    x = keras_hub.layers.TokenAndPositionEmbedding(
        vocabulary_size, max(sequence_length, 128), hidden, name="embeddings")(token_ids)
    x = keras.layers.LayerNormalization(epsilon=1e-12, name="embeddings_norm")(x)
    for i in range(num_layers):
        x = keras_hub.layers.TransformerEncoder(
            ffn, heads, dropout=0.0, activation="gelu", layer_norm_epsilon=1e-12,
            name=f"encoder_{i}")(x, padding_mask=padding_mask)
    logits = keras.layers.Dense(num_classes, name="logits")(x[:, 0, :])
    return keras.Model({"token_ids": token_ids, "padding_mask": padding_mask}, logits,
                       name=name)


def layer_pairs(student_layers, teacher_layers):
    """TinyBERT's uniform map: student layer m <-> teacher layer (m + 1) * N / M - 1."""
    step = teacher_layers // student_layers
    return [(m, (m + 1) * step - 1) for m in range(student_layers)]


def build_contenders(args, teachers, students, dataset):
    pairs = layer_pairs(args.student_layers, args.teacher_layers)
    alpha = args.alpha

    ours = kdistill.Distiller(
        teachers(), students(),
        objectives=[LogitsKD(temperature=1.0, alpha=1.0, weight=alpha),
                    HiddenStateKD(layer_map=pairs, projection=None, weight=1.0 - alpha)],
        teacher_layer_names={"hidden_states": [f"encoder_{i}"
                                               for i in range(args.teacher_layers)]},
        student_layer_names={"hidden_states": [f"encoder_{i}"
                                               for i in range(args.student_layers)]})
    ours.compile(optimizer=common.adamw(args.learning_rate), jit_compile=False)

    theirs = keras.distillation.Distiller(
        teacher=teachers(), student=students(),
        distillation_losses=[keras.distillation.FeatureDistillation(
            loss="mse", teacher_layer_name=f"encoder_{t}", student_layer_name=f"encoder_{s}")
            for s, t in pairs],
        student_loss_weight=alpha)
    theirs.compile(optimizer=common.adamw(args.learning_rate), loss=common.sparse_ce(),
                   jit_compile=False)
    return [common.StepContender("kdistill", ours, dataset),
            common.StepContender("keras", theirs, dataset)], pairs


def parse_args(argv=None):
    def add(parser):
        parser.add_argument("--alpha", type=float, default=0.5)

    return common.parse_args(__doc__.splitlines()[0], DEFAULTS, QUICK, argv, add)


def main(argv=None):
    args = parse_args(argv)
    command = common.command_line("feature_kd.py", argv)
    loads, start = [os.getloadavg()[0]], time.perf_counter()
    arch = dict(vocabulary_size=args.vocabulary_size, hidden=args.hidden, heads=args.heads,
                ffn=args.ffn, sequence_length=args.sequence_length)
    teachers = common.ModelFactory(flat_encoder_classifier, "teacher", args.seed,
                                   num_layers=args.teacher_layers, **arch)
    students = common.ModelFactory(flat_encoder_classifier, "student", args.seed + 1,
                                   num_layers=args.student_layers, **arch)
    x, y, lengths = common.token_batches(args.steps, args.batch_size, args.sequence_length,
                                        args.vocabulary_size, seed=args.seed)
    x.pop("segment_ids")
    dataset = common.make_dataset(x, y, args.batch_size)
    contenders, pairs = build_contenders(args, teachers, students, dataset)
    print(f"Teacher {args.teacher_layers}x{args.hidden} ({teachers.num_params / 1e6:.1f}M), "
          f"student {args.student_layers}x{args.hidden} ({students.num_params / 1e6:.1f}M); "
          f"layer pairs (student, teacher) {pairs}; mean length "
          f"{lengths.mean():.0f}/{args.sequence_length}")
    wall, cpu = common.measure(contenders, args.rounds, args.steps, args.warmup_steps)
    loads.append(os.getloadavg()[0])
    stats = common.statistics_ms(wall, cpu)
    r = common.paired_ratio(stats, wall, "kdistill", "keras", target=TARGET)

    print("\n== hidden-state feature KD: kdistill vs keras.distillation ==")
    print(f"command : {command}")
    print(f"config  : batch {args.batch_size}, seq {args.sequence_length}, alpha {args.alpha}, "
          f"AdamW, jit_compile=False; {args.rounds} rounds x {args.steps} steps; "
          f"{common.environment(loads)}")
    common.print_stats(stats, LABELS)
    common.print_ratios({"kdistill / keras (feature KD step)": r})
    print(f"\nwall time {time.perf_counter() - start:.0f} s")
    if args.json:
        common.write_json(args.json, {
            "command": command, "config": vars(args), "git": common.git_state(),
            "load_average": loads, "pairs": pairs, "stats": stats, "ratio": r,
            "per_round_ms_per_step": {k: [1e3 * t for t in v] for k, v in wall.items()}})


if __name__ == "__main__":
    main()
