"""The ablation behind the demo's recipe: which distillation ingredient buys how much accuracy.

Each variant is one `kdistill demo` run (`kdistill.demo.run_demo`) with one `DemoConfig` switch
changed from the demo's (3 x 120 student, 4.2M params), on the full Rotten Tomatoes
splits, with the same fine-tuned teacher (cached) and seed:

    labels only         the student trained on the hard labels alone (hard_label_weight=1)
    KD                  + the teacher's soft targets (T=2, alpha=0.5), logits cached once
    KD + intermediate   + TinyBERT attention / hidden-state / embedding losses (live teacher)
    ... + general       + one epoch of general distillation on unlabelled text first
    KD + augmentation   + TinyBERT augmentation (N variants per snippet, teacher-labelled)
    pruned 4x192        the KD recipe on a wider, deeper student whose vocabulary is pruned to
                        the 11,827 word pieces the training text uses (same 4.1-4.2M params)

    python examples/demo_ablation.py                       # every variant (about an hour)
    python examples/demo_ablation.py kd labels             # some variants
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

OUT = "saved_models/ablation"
CACHE_DIR = ".cache/kdistill/teachers"  # the same fine-tuned teacher as `make demo`
VARIANTS = {
    "labels": ("labels only (no teacher)", dict(hard_label_weight=1.0)),
    "kd": ("KD (soft targets + labels) = `make demo`", dict()),
    "kd_intermediate": ("KD + intermediate losses", dict(task_intermediate=True)),
    "kd_intermediate_general": ("KD + intermediate + general distillation",
                                dict(task_intermediate=True, general_epochs=1)),
    # Augmented texts may flip a snippet's sentiment, so they learn from the teacher's soft
    # targets alone (TinyBERT's task distillation has no hard-label term either).
    "kd_augment": ("KD + augmentation (N=4, soft targets only)",
                   dict(augment_samples=4, task_epochs=2, hard_label_weight=0.0)),
    "pruned_4x192": ("KD, pruned vocabulary (11,827 pieces), 4x192 student",
                     dict(vocabulary_min_count=2, student_preset="bert_mini",
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
    rows = ["| variant | student params | test accuracy | % of teacher | distillation s |",
            "|---|---:|---:|---:|---:|"]
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
        rows.append(f"| {label} | {s['student_params']:,} | {s['student_test_accuracy']:.2%} | "
                    f"{s['relative_accuracy']:.1%} | {seconds:.0f} |")
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
