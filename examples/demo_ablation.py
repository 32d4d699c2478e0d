"""The ablation behind the demo's recipe: which distillation ingredient buys how much accuracy.

Each variant is the demo's packaged config (`kdistill/configs/demo.yaml`: a 6 x 160 student
pruned from the fine-tuned MiniLM teacher, logits KD from the cached teacher outputs) with a few
keys overridden; every variant but `kd` starts from the recipe before commit `ac87e31`
(`PREVIOUS`: transfer text without augmentation, alpha 0.5, 3 epochs), the one its figures in
docs/results.md were measured on, run by the one runner on the full Rotten Tomatoes splits, with the
same fine-tuned teacher (cached) and seed. Every variant is also a command line:
`kdistill demo --set KEY=VALUE ...` with the overrides below.

    python examples/demo_ablation.py                       # every variant, seed 0
    python examples/demo_ablation.py kd_no_transfer fresh_3x120    # some variants
    python examples/demo_ablation.py kd kd_no_transfer --seeds 0,1,2   # mean ± std over seeds
    python examples/demo_ablation.py kd --set teacher.precision=float32  # and any --set
    python examples/demo_ablation.py --table               # the table from finished runs

Each run writes `saved_models/ablation/<variant>/` (with `--seeds`, one `seed_<seed>/` run per
seed and `seeds.json`; only the dynamic-int8 TFLite file is exported, to save time); a finished
variant or seed is not run again. The table (Markdown: the student and the labels-only baseline
on both splits, the gain, the task stage's time) is printed and written to
`saved_models/ablation/ablation.md`.
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("KDISTILL_CACHE_DIR", ".cache/kdistill")  # `make demo`'s teacher

from kdistill import configs  # noqa: E402
from kdistill.config import TargetsConfig, load_config, parse_set  # noqa: E402
from kdistill.runner import run  # noqa: E402
from kdistill.seeds import SEEDS_FILE, parse_seeds, run_seeds, seed_output, summarize  # noqa: E402

OUT = "saved_models/ablation"
TASK = ("stages", "task")
SOFT_ONLY = {"preset": "logits_kd", "temperature": 2.0, "alpha": 0.0}
# The demo's recipe before commit ac87e31, which added augmentation on top of the transfer text.
PREVIOUS = {("data", "augment_samples"): "fill", TASK + ("epochs",): 3,
            ("student", "vocabulary_min_count"): 3,
            TASK + ("objectives",): {"preset": "logits_kd", "temperature": 2.0, "alpha": 0.5}}
FRESH = {**PREVIOUS, ("student", "init"): "svd", ("student", "preset"): "bert_tiny"}
VARIANTS = {
    "kd": ("KD on the transfer text + augmentation (N=4, soft targets only, 2 epochs), pieces "
           "seen 7+ times = `make demo`", {}),
    "kd_previous": ("KD on the transfer text alone (alpha 0.5, 3 epochs), pieces seen 3+ times: "
                    "the recipe before ac87e31", PREVIOUS),
    # Every run trains its own labels-only baseline too (`labels_only: true` in demo.yaml):
    # the table puts it beside each variant.
    "kd_no_transfer": ("KD on the labelled snippets alone (no teacher-labelled transfer text)",
                       {**PREVIOUS, ("data", "transfer_examples"): 0}),
    "kd_soft": ("KD on the teacher's soft targets alone (alpha 0: no hard-label term)",
                {**PREVIOUS, TASK + ("objectives",): SOFT_ONLY}),
    # Twice the text grows the pruned vocabulary: pieces seen 4+ times keep the 5x goal.
    "kd_transfer_40k": ("KD on 40,000 transfer snippets for 2 epochs, pieces seen 4+ times",
                        {**PREVIOUS, ("data", "transfer_examples"): 40000,
                         TASK + ("epochs",): 2, ("student", "vocabulary_min_count"): 4}),
    "kd_transfer_40k_wide": (
        "KD on 40,000 transfer snippets, wider student (192 channels, 6 heads, FFN 512), "
        "pieces seen 8+ times",
        {**PREVIOUS, ("data", "transfer_examples"): 40000, TASK + ("epochs",): 2,
         ("student", "vocabulary_min_count"): 8, ("student", "hidden_dim"): 192,
         ("student", "intermediate_dim"): 512}),
    "pruned_6x128": ("KD, narrower pruned student (128 channels, 4 heads, FFN 512)",
                     {**PREVIOUS, ("student", "hidden_dim"): 128,
                      ("student", "intermediate_dim"): 512}),
    "kd_intermediate": (
        "KD + MiniLM value relation, hidden states, embeddings (live teacher)",
        {**PREVIOUS, TASK + ("cache_teacher",): False, TASK + ("objectives",): [
            {"preset": "logits_kd", "temperature": 2.0, "alpha": 0.5},
            {"type": "HiddenStateKD"}, {"type": "EmbeddingKD"},
            {"type": "MiniLMKD", "attention": False}]}),
    "kd_general": ("KD + general distillation (1 epoch, unlabelled corpus)",
                   {**PREVIOUS, ("stages", "general", "epochs"): 1}),
    # Augmented texts may flip a snippet's sentiment, so they learn from the teacher's soft
    # targets alone (TinyBERT's task distillation has no hard-label term either).
    "kd_augment": ("KD + augmentation (N=4, soft targets only, 1 epoch) = `demo --augment`",
                   {**PREVIOUS, ("data", "augment_samples"): 4, TASK + ("epochs",): 1,
                    TASK + ("objectives",): SOFT_ONLY}),
    "fresh_3x120": ("KD, fresh 3x120 student (SVD embeddings, full vocabulary), 4 epochs",
                    {**FRESH, ("student", "num_layers"): 3, ("student", "hidden_dim"): 120,
                     ("student", "num_heads"): 12, ("student", "intermediate_dim"): 480,
                     ("student", "vocabulary_min_count"): None, TASK + ("epochs",): 4}),
    "fresh_4x192": ("KD, fresh 4x192 student, vocabulary of the pieces seen twice, 4 epochs",
                    {**FRESH, ("student", "num_layers"): 4, ("student", "hidden_dim"): 192,
                     ("student", "num_heads"): 12, ("student", "intermediate_dim"): 768,
                     ("student", "vocabulary_min_count"): 2, TASK + ("epochs",): 4}),
}


def run_variant(name, seeds=None, sets=()):
    """Runs one variant (seed 0, or each of `seeds` with `kdistill.seeds.run_seeds`), with the
    `sets` (`(path, value)` pairs, as `--set` gives them) on top of its overrides."""
    directory = os.path.join(OUT, name)
    if not seeds and os.path.exists(os.path.join(directory, "report.json")):
        print(f"[ablation] {name}: done already ({directory}/report.json)")
        return  # (with seeds, run_seeds reads back each finished seed itself)
    overrides = {("output",): directory, ("export", "formats"): ["tflite_dynamic_int8"],
                 ("latency_runs",): 20, **VARIANTS[name][1], **dict(sets)}
    config = load_config(configs.path("demo"),
                         [(path, value, f"ablation {name}") for path, value in overrides.items()])
    if seeds:
        run_seeds(config, seeds)
    else:
        run(config)


def _row(label, directory):
    """A table row from a variant's `seeds.json` (mean ± std over seeds) or its one
    `report.json` (summarised the same way, over one seed)."""
    def read(path):
        with open(path) as f:
            return json.load(f)

    if os.path.exists(os.path.join(directory, SEEDS_FILE)):
        summary = read(os.path.join(directory, SEEDS_FILE))
        reports = {seed: read(os.path.join(seed_output(directory, seed), "report.json"))
                   for seed in summary["seeds"]}
    elif os.path.exists(os.path.join(directory, "report.json")):
        report = read(os.path.join(directory, "report.json"))
        reports = {report["config"]["seed"]: report}
        summary = summarize(reports, TargetsConfig())
    else:
        return None
    several = len(reports) > 1

    def pm(value, scale=100.0, sign=""):
        if value["mean"] is None:
            return "–"
        text = f"{value['mean'] * scale:{sign}.2f}"
        return text + (f" ± {value['std'] * scale:.2f}" if several else "")

    def accuracy(entry, figure):
        return pm(summary[entry][figure]) if entry in summary else "–"

    first = next(iter(reports.values()))
    headline = summary["headline"]
    stage = sorted({round(r["stages"]["task"]["seconds"]) for r in reports.values()
                    if "task" in r["stages"]})
    stage = ("–" if not stage else str(stage[0]) if len(stage) == 1
             else f"{stage[0]}–{stage[-1]}")
    return (f"| {label} | {', '.join(map(str, reports))} | {first['student']['params']:,} | "
            f"{accuracy('student', 'accuracy')}% ({headline['relative_accuracy']['mean']:.1%}) | "
            f"{accuracy('student', 'validation_accuracy')}% "
            f"({headline['relative_validation_accuracy']['mean']:.1%}) | "
            f"{accuracy('labels_only', 'accuracy')} / "
            f"{accuracy('labels_only', 'validation_accuracy')}% | "
            f"{pm(headline['gain_over_labels_only'], scale=1.0, sign='+')} | {stage} | "
            f"{first['teacher']['accuracy']:.2%} / {first['teacher']['validation_accuracy']:.2%} |")


def table():
    """The Markdown table of the finished variants, also written to `OUT/ablation.md`."""
    rows = ["| variant | seeds | student params | student test (of teacher) | student val "
            "(of teacher) | labels only test / val | gain (points) | task stage s | "
            "teacher test / val |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    rows += [r for r in (_row(label, os.path.join(OUT, name))
                         for name, (label, _) in VARIANTS.items()) if r is not None]
    text = "\n".join(rows)
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "ablation.md"), "w") as f:
        f.write(text + "\n")
    return text


def _seeds(text):
    try:
        return parse_seeds(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("variants", nargs="*", help=f"any of {', '.join(VARIANTS)} (all)")
    parser.add_argument("--seeds", type=_seeds, default=None, metavar="S,S,...",
                        help="run each variant once per seed and report mean ± std")
    parser.add_argument("--set", dest="sets", action="append", default=[],
                        metavar="KEY=VALUE", help="a config override for every variant")
    parser.add_argument("--table", action="store_true", help="print the table only")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; choose from {sorted(VARIANTS)}")
    sets = [parse_set(text) for text in args.sets]
    if not args.table:
        for name in args.variants or VARIANTS:
            run_variant(name, args.seeds, sets)
    print(table())


if __name__ == "__main__":
    main(sys.argv[1:])
