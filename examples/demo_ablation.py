"""The ablation behind the demo's recipe: which distillation ingredient buys how much accuracy.

Each variant is the demo's packaged config (`kdistill/configs/demo.yaml`: a 6 x 160 student
pruned from the fine-tuned MiniLM teacher, logits KD from the cached teacher outputs, 3 epochs)
with a few keys overridden, run by the one runner on the full Rotten Tomatoes splits, with the
same fine-tuned teacher (cached) and seed. Every variant is also a command line:
`kdistill demo --set KEY=VALUE ...` with the overrides below.

    python examples/demo_ablation.py                       # every variant
    python examples/demo_ablation.py kd_no_transfer fresh_3x120    # some variants
    python examples/demo_ablation.py --table               # the table from finished runs

Each run writes `saved_models/ablation/<variant>/` (only the dynamic-int8 TFLite file is
exported, to save time); a finished variant is not run again. The table (Markdown) is printed
and written to `saved_models/ablation/ablation.md`.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("KDISTILL_CACHE_DIR", ".cache/kdistill")  # `make demo`'s teacher

from kdistill import configs  # noqa: E402
from kdistill.config import load_config  # noqa: E402
from kdistill.runner import run  # noqa: E402

OUT = "saved_models/ablation"
TASK = ("stages", "task")
FRESH = {("student", "init"): "svd", ("student", "preset"): "bert_tiny"}
VARIANTS = {
    "kd": ("KD, student pruned from the teacher = `make demo`", {}),
    # Every run trains its own labels-only baseline too (`labels_only: true` in demo.yaml):
    # the table puts it beside each variant.
    "kd_no_transfer": ("KD on the labelled snippets alone (no teacher-labelled transfer text)",
                       {("data", "transfer_examples"): 0}),
    "kd_soft": ("KD on the teacher's soft targets alone (alpha 0: no hard-label term)",
                {TASK + ("objectives",): {"preset": "logits_kd", "temperature": 2.0,
                                          "alpha": 0.0}}),
    "kd_transfer_40k": ("KD on 40,000 transfer snippets for 2 epochs (about the same steps)",
                        {("data", "transfer_examples"): 40000, TASK + ("epochs",): 2}),
    "pruned_6x128": ("KD, narrower pruned student (128 channels, 4 heads, FFN 512)",
                     {("student", "hidden_dim"): 128, ("student", "intermediate_dim"): 512}),
    "kd_intermediate": (
        "KD + MiniLM value relation, hidden states, embeddings (live teacher)",
        {TASK + ("cache_teacher",): False, TASK + ("objectives",): [
            {"preset": "logits_kd", "temperature": 2.0, "alpha": 0.5},
            {"type": "HiddenStateKD"}, {"type": "EmbeddingKD"},
            {"type": "MiniLMKD", "attention": False}]}),
    "kd_general": ("KD + general distillation (1 epoch, unlabelled corpus)",
                   {("stages", "general", "epochs"): 1}),
    # Augmented texts may flip a snippet's sentiment, so they learn from the teacher's soft
    # targets alone (TinyBERT's task distillation has no hard-label term either).
    "kd_augment": ("KD + augmentation (N=4, soft targets only, 1 epoch) = `demo --augment`",
                   {("data", "augment_samples"): 4, TASK + ("epochs",): 1,
                    TASK + ("objectives",): {"preset": "logits_kd", "temperature": 2.0,
                                             "alpha": 0.0}}),
    "fresh_3x120": ("KD, fresh 3x120 student (SVD embeddings, full vocabulary), 4 epochs",
                    {**FRESH, ("student", "num_layers"): 3, ("student", "hidden_dim"): 120,
                     ("student", "num_heads"): 12, ("student", "intermediate_dim"): 480,
                     ("student", "vocabulary_min_count"): None, TASK + ("epochs",): 4}),
    "fresh_4x192": ("KD, fresh 4x192 student, vocabulary of the pieces seen twice, 4 epochs",
                    {**FRESH, ("student", "num_layers"): 4, ("student", "hidden_dim"): 192,
                     ("student", "num_heads"): 12, ("student", "intermediate_dim"): 768,
                     ("student", "vocabulary_min_count"): 2, TASK + ("epochs",): 4}),
}


def run_variant(name):
    directory = os.path.join(OUT, name)
    if os.path.exists(os.path.join(directory, "report.json")):
        print(f"[ablation] {name}: done already ({directory}/report.json)")
        return
    overrides = {("output",): directory, ("export", "formats"): ["tflite_dynamic_int8"],
                 ("latency_runs",): 20, **VARIANTS[name][1]}
    config = load_config(configs.path("demo"),
                         [(path, value, f"ablation {name}") for path, value in overrides.items()])
    run(config)


def table():
    rows = ["| variant | student params | test accuracy | % of teacher | val accuracy | "
            "% of teacher (val) | labels only test / val | gain (points) | stages s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, (label, _) in VARIANTS.items():
        path = os.path.join(OUT, name, "report.json")
        if not os.path.exists(path):
            continue
        with open(path) as f:
            report = json.load(f)
        s, student = report["summary"], report["student"]
        seconds = sum(st["seconds"] for st in report["stages"].values())
        base = report.get("labels_only")
        baseline = "–" if base is None else (
            f"{base['accuracy']:.2%} / {base['validation_accuracy']:.2%}")
        gain = s.get("gain_over_labels_only")
        rows.append(f"| {label} | {student['params']:,} | {student['accuracy']:.2%} | "
                    f"{s['relative_accuracy']:.1%} | {student['validation_accuracy']:.2%} | "
                    f"{s['relative_validation_accuracy']:.1%} | {baseline} | "
                    f"{'–' if gain is None else f'{gain:+.2f}'} | {seconds:.0f} |")
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
            run_variant(name)
    print(table())
