"""The ablation behind the demo's recipe: which distillation ingredient buys how much accuracy.

Each variant is one `kdistill demo` run (`kdistill.demo.run_demo`) with one `DemoConfig` switch
changed from the demo's (a 6 x 160 student pruned from the teacher, 4.5M params, 3 epochs), on
the full Rotten Tomatoes splits, with the same fine-tuned teacher (cached) and seed:

    KD                  `make demo`: pruned student, teacher's soft targets (T=2) + labels
                        (alpha=0.5), logits cached once, 3 epochs at 3e-4
    labels only         the pruned student trained on the hard labels alone (hard_label_weight=1)
    pruned 6x128        the same KD into a narrower slice: 128 channels, 4 heads, FFN 512 (3.3M)
    KD + intermediate   + MiniLM value-relation / hidden-state / embedding losses (live teacher)
    KD + general        + one epoch of general distillation (intermediate losses only) on the
                        unlabelled corpus (training snippets without labels + plot summaries)
    KD + augmentation   + TinyBERT augmentation (N=4 variants per snippet, teacher-labelled,
                        soft targets only, 1 epoch)
    fresh 3x120         an earlier recipe: a fresh 3-layer, 120-wide student (12 heads,
                        embeddings from the teacher's by SVD, full vocabulary, 4.2M params),
                        KD for 4 epochs
    fresh 4x192         a fresh 4 x 192 student, vocabulary pruned to the 11,827 pieces seen
                        twice (4.1M params)

    python examples/demo_ablation.py                       # every variant (about an hour)
    python examples/demo_ablation.py labels fresh_3x120    # some variants
    python examples/demo_ablation.py --table               # the table from finished runs

Each run writes `saved_models/ablation/<variant>/report.json` (only the dynamic-int8 TFLite file
is exported, to save time); a finished variant is not run again. The table (Markdown) is printed
and written to `saved_models/ablation/ablation.md`.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from kdistill.demo import AUGMENTED  # noqa: E402 - `kdistill demo --augment`'s switches

OUT = "saved_models/ablation"
CACHE_DIR = ".cache/kdistill/teachers"  # the same fine-tuned teacher as `make demo`
FRESH = dict(prune=False, embedding_init="svd", vocabulary_min_count=None)
VARIANTS = {
    "kd": ("KD, student pruned from the teacher = `make demo`", dict()),
    "labels": ("labels only (no teacher), pruned student", dict(hard_label_weight=1.0)),
    "pruned_6x128": ("KD, narrower pruned student (128 channels, 4 heads, FFN 512)",
                     dict(student=dict(num_layers=6, hidden_dim=128, num_heads=4,
                                       intermediate_dim=512))),
    "kd_intermediate": ("KD + intermediate losses (live teacher)", dict(task_intermediate=True)),
    "kd_general": ("KD + general distillation (1 epoch, unlabelled corpus)",
                   dict(general_epochs=1)),
    # Augmented texts may flip a snippet's sentiment, so they learn from the teacher's soft
    # targets alone (TinyBERT's task distillation has no hard-label term either).
    "kd_augment": ("KD + augmentation (N=4, soft targets only, 1 epoch) = `demo --augment`",
                   AUGMENTED),
    "fresh_3x120": ("KD, fresh 3x120 student (SVD embeddings, full vocabulary), 4 epochs",
                    dict(FRESH, task_epochs=4, task_learning_rate=3e-4,
                         student=dict(num_layers=3, hidden_dim=120, num_heads=12,
                                      intermediate_dim=480))),
    "fresh_4x192": ("KD, fresh 4x192 student, vocabulary of 11,827 pieces, 4 epochs",
                    dict(FRESH, vocabulary_min_count=2, task_epochs=4, task_learning_rate=3e-4,
                         student=dict(num_layers=4, hidden_dim=192, num_heads=12,
                                      intermediate_dim=768))),
}


def run(name):
    from kdistill.demo import DemoConfig, run_demo

    directory = os.path.join(OUT, name)
    if os.path.exists(os.path.join(directory, "report.json")):
        print(f"[ablation] {name}: done already ({directory}/report.json)")
        return
    config = DemoConfig.full(formats=("tflite_dynamic_int8",), latency_runs=20,
                             **VARIANTS[name][1])
    run_demo(output_dir=directory, config=config, cache_dir=CACHE_DIR, verbose=2)


def table():
    rows = ["| variant | student params | test accuracy | % of teacher | val accuracy | "
            "% of teacher (val) | distillation s |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for name, (label, _) in VARIANTS.items():
        path = os.path.join(OUT, name, "report.json")
        if name == "kd" and not os.path.exists(path):
            path = os.path.join("saved_models", "demo", "report.json")  # `make demo`'s run
        if not os.path.exists(path):
            continue
        with open(path) as f:
            report = json.load(f)
        s = report["summary"]
        seconds = sum(st["seconds"] for st in report["stages"]
                      if st["stage"] not in ("teacher", "export"))
        # Validation accuracy of the kept student: the last labelled stage's best epoch.
        teacher_val = report["stages"][0]["val_accuracy"]
        val = [st["val_accuracy"] for st in report["stages"]
               if st["stage"] in ("task distill", "student fine-tune")][-1]
        rows.append(f"| {label} | {s['student_params']:,} | {s['student_test_accuracy']:.2%} | "
                    f"{s['relative_accuracy']:.1%} | {val:.2%} | {val / teacher_val:.1%} | "
                    f"{seconds:.0f} |")
    text = "\n".join(rows)
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "ablation.md"), "w") as f:
        f.write(text + "\n")
    return text


if __name__ == "__main__":
    names = [a for a in sys.argv[1:] if not a.startswith("--")]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        sys.exit(f"unknown variant(s) {unknown}; choose from {sorted(VARIANTS)}")
    if "--table" not in sys.argv:
        for name in names or VARIANTS:
            run(name)
    print(table())
