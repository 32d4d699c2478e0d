"""One recipe over several seeds: the mean and spread that a headline should quote.

`run_seeds` runs a config once per seed through `kdistill.runner.run`, each into
`OUTPUT/seed_<seed>` (the fine-tuned teacher and its cached outputs are shared: the teacher's
fine-tuning does not depend on the run's seed), and writes `OUTPUT/seeds.json`: for the teacher,
the distilled student, the labels-only student (`labels_only: true`) and each exported artifact,
the mean, sample standard deviation and per-seed values of their accuracy on both splits, with
the retention, the gain of distillation over labels alone and the config's targets checked on
the means. A seed whose directory already holds a finished run of the same config is read back,
not trained again, so an interrupted multi-seed run continues where it stopped.
`kdistill distill CONFIG --seeds 0,1,2` and `kdistill demo --seeds 0,1,2` call it.
"""

import dataclasses
import json
import math
import os

from kdistill import report as report_lib

SEEDS_FILE = "seeds.json"
ENTRIES = ("teacher", "student", "labels_only")
FIGURES = ("accuracy", "validation_accuracy", "latency_ms", "size_bytes", "params")
HEADLINE = ("relative_accuracy", "relative_validation_accuracy", "gain_test", "gain_validation",
            "gain_over_labels_only", "param_ratio", "speedup")

__all__ = ["SEEDS_FILE", "parse_seeds", "seed_output", "spread", "summarize", "run_seeds",
           "format_seeds"]


def parse_seeds(text):
    """The seeds of a `--seeds` value: a comma-separated list of distinct integers.

    Raises:
        ValueError: not integers, a repeated seed, or fewer than one.

    Example:
    >>> parse_seeds("0,1,2")
    [0, 1, 2]
    >>> parse_seeds("0,0")
    Traceback (most recent call last):
    ...
    ValueError: --seeds 0,0: seed 0 is given twice; give distinct seeds, e.g. --seeds 0,1,2.
    """
    try:
        seeds = [int(part) for part in str(text).split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--seeds {text}: give comma-separated integers, e.g. --seeds 0,1,2."
                         ) from None
    if not seeds:
        raise ValueError(f"--seeds {text!r}: give at least one seed, e.g. --seeds 0,1,2.")
    for seed in seeds:
        if seeds.count(seed) > 1:
            raise ValueError(f"--seeds {text}: seed {seed} is given twice; give distinct seeds, "
                             "e.g. --seeds 0,1,2.")
    return seeds


def seed_output(output, seed):
    """The run directory of one seed.

    Example:
    >>> seed_output("runs/demo", 2).replace(os.sep, "/")
    'runs/demo/seed_2'
    """
    return os.path.join(output, f"seed_{seed}")


def spread(values):
    """`{"mean", "std", "values"}` of per-seed figures (sample std; 0 for one seed; None-safe).

    Example:
    >>> s = spread([0.80, 0.82, 0.84])
    >>> round(s["mean"], 4), round(s["std"], 4)
    (0.82, 0.02)
    >>> spread([None, None])["mean"] is None
    True
    """
    present = [v for v in values if v is not None]
    if not present:
        return {"mean": None, "std": None, "values": list(values)}
    mean = sum(present) / len(present)
    var = (sum((v - mean) ** 2 for v in present) / (len(present) - 1)
           if len(present) > 1 else 0.0)
    return {"mean": mean, "std": math.sqrt(var), "values": list(values)}


def summarize(reports, targets):
    """The multi-seed summary of per-seed `report.json` dicts.

    Args:
        reports: `{seed: report}`.
        targets: `kdistill.config.TargetsConfig`, checked on the means.

    Returns:
        dict: `seeds`; `teacher`, `student`, `labels_only` (when trained) and `export`
        (`{artifact: ...}`), each `{figure: spread}` over `accuracy`, `validation_accuracy`,
        `latency_ms`, `size_bytes`, `params`; `headline`: each of `relative_accuracy`,
        `relative_validation_accuracy`, `gain_test`, `gain_validation`,
        `gain_over_labels_only`, `param_ratio`, `speedup` as a spread of the per-seed values;
        `targets`: the checks of `kdistill.report.headline` on the mean figures.

    Example:
    >>> from kdistill.config import TargetsConfig
    >>> def report(s, b):
    ...     e = lambda acc: {"accuracy": acc, "validation_accuracy": acc, "params": 10,
    ...                      "latency_ms": 1.0, "size_bytes": 1}
    ...     return {"teacher": e(0.8), "student": e(s), "labels_only": e(b)}
    >>> out = summarize({0: report(0.79, 0.77), 1: report(0.78, 0.77)},
    ...                 TargetsConfig(gain_over_labels_only=1.5))
    >>> round(out["student"]["accuracy"]["mean"], 3), round(out["headline"]["gain_test"]["mean"], 2)
    (0.785, 1.5)
    >>> out["targets"]["gain_over_labels_only"]["ok"]
    True
    """  # noqa: E501
    seeds = list(reports)

    def entry_spread(get):
        entries = [get(reports[s]) or {} for s in seeds]
        return {figure: spread([e.get(figure) for e in entries]) for figure in FIGURES}

    out = {"seeds": seeds}
    for name in ENTRIES:
        if any(reports[s].get(name) for s in seeds):
            out[name] = entry_spread(lambda r, name=name: r.get(name))
    artifacts = sorted({a for s in seeds for a in (reports[s].get("export") or {})})
    out["export"] = {a: entry_spread(lambda r, a=a: (r.get("export") or {}).get(a))
                     for a in artifacts}
    per_seed = {s: report_lib.headline(reports[s], targets) for s in seeds}
    out["headline"] = {name: spread([per_seed[s].get(name) for s in seeds]) for name in HEADLINE}

    def means(entry):
        return {figure: value["mean"] for figure, value in entry.items()}

    mean_report = {name: means(out[name]) for name in ENTRIES if name in out}
    mean_report["export"] = {a: means(e) for a, e in out["export"].items()}
    out["targets"] = report_lib.headline(mean_report, targets)["targets"]
    return out


def _finished_report(output, config_dict):
    """The report of a finished run of the same config in `output`, else None."""
    from kdistill.run_directory import is_finished
    from kdistill.training_state import read_json

    if not is_finished(output):
        return None
    report = read_json(os.path.join(output, "report.json"))
    if isinstance(report, dict) and report.get("config") == config_dict:
        return report
    return None


def run_seeds(config, seeds, overwrite=False, quiet=False, strategy=None,
              replace_finished=False):
    """Runs `config` once per seed and writes `OUTPUT/seeds.json`.

    Args:
        config: `kdistill.config.RunConfig`; its `output` holds one `seed_<seed>` run per seed.
        seeds: list of int (`parse_seeds`).
        overwrite: bool. Train every seed again, replacing its previous run.
        quiet: bool. No progress bars and no summary lines.
        strategy: `tf.distribute.Strategy` or None (see `kdistill.runner.run`).
        replace_finished: bool. A finished run of another config in a seed's directory is
            replaced instead of refused (what `kdistill demo` does).

    Returns:
        dict: the summary written to `seeds.json` (`summarize`), with `runs`
        (`{seed: run directory}`) and `reused` (the seeds read back from a finished run).

    Raises:
        ValueError: no output directory, or an empty list of seeds.
        FileExistsError / ValueError: from `kdistill.runner.run` for a seed's run.

    Example (not run here: it trains; `tests/test_seeds.py` runs it on a tiny project):
    >>> from kdistill.config import load_config
    >>> config = load_config("kdistill/configs/demo_quick.yaml",
    ...                      [(("output",), "runs/quick", "--output")])  # doctest: +SKIP
    >>> summary = run_seeds(config, [0, 1, 2])  # doctest: +SKIP
    >>> sorted(summary["student"]["accuracy"])  # doctest: +SKIP
    ['mean', 'std', 'values']
    """
    from kdistill.run_directory import is_finished
    from kdistill.runner import run

    if not config.output:
        raise ValueError("several seeds need an output directory: pass --output DIR.")
    if not seeds:
        raise ValueError("give at least one seed, e.g. --seeds 0,1,2.")
    reports, runs, reused = {}, {}, []
    for seed in seeds:
        one = dataclasses.replace(config, seed=seed, output=seed_output(config.output, seed))
        runs[seed] = one.output
        previous = None if overwrite else _finished_report(one.output, one.to_dict())
        if previous is not None:
            reports[seed] = previous
            reused.append(seed)
            if not quiet:
                print(f"[kdistill] seed {seed}: finished run reused from {one.output}")
            continue
        if not quiet:
            print(f"[kdistill] seed {seed} of {seeds}: {one.output}")
        replace = overwrite or (replace_finished and is_finished(one.output))
        reports[seed] = run(one, overwrite=replace, quiet=quiet, strategy=strategy)
    summary = summarize(reports, config.targets)
    summary.update(runs=runs, reused=reused)
    os.makedirs(config.output, exist_ok=True)
    path = os.path.join(config.output, SEEDS_FILE)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    os.replace(path + ".tmp", path)
    if not quiet:
        print(format_seeds(summary))
    return summary


def format_seeds(summary):
    """The multi-seed table as printed: accuracy mean ± std on both splits, then the gains.

    Example:
    >>> s = {"seeds": [0, 1], "teacher": {"accuracy": spread([0.8, 0.8]),
    ...      "validation_accuracy": spread([0.81, 0.81])},
    ...      "student": {"accuracy": spread([0.79, 0.78]),
    ...      "validation_accuracy": spread([0.8, 0.8])},
    ...      "headline": {"gain_over_labels_only": spread([1.0, 2.0])}, "targets": {}}
    >>> print(format_seeds(s))
    [kdistill] 2 seeds (0, 1): mean ± std
    [kdistill]   teacher        test 80.00 ± 0.00   validation 81.00 ± 0.00
    [kdistill]   student        test 78.50 ± 0.71   validation 80.00 ± 0.00
    [kdistill]   distillation bought +1.50 ± 0.71 points over labels alone (mean of the splits)
    """
    def pct(value):
        if value is None or value.get("mean") is None:
            return "  n/a        "
        return f"{100 * value['mean']:.2f} ± {100 * value['std']:.2f}"

    seeds = summary["seeds"]
    lines = [f"[kdistill] {len(seeds)} seeds ({', '.join(map(str, seeds))}): mean ± std"]
    for name in ENTRIES:
        if name in summary:
            entry = summary[name]
            lines.append(f"[kdistill]   {name:<14} test {pct(entry.get('accuracy'))}   "
                         f"validation {pct(entry.get('validation_accuracy'))}")
    gain = summary.get("headline", {}).get("gain_over_labels_only") or {}
    if gain.get("mean") is not None:
        lines.append(f"[kdistill]   distillation bought {gain['mean']:+.2f} ± {gain['std']:.2f} "
                     "points over labels alone (mean of the splits)")
    for name, check in summary.get("targets", {}).items():
        value = check["value"]
        shown = "n/a" if value is None else f"{value:.4g}"
        lines.append(f"[kdistill]   target {name} >= {check['target']}: {shown} "
                     f"{'met' if check['ok'] else 'MISSED'} (on the means)")
    return "\n".join(lines)
