"""PNG plots of a distillation run (matplotlib, Agg backend; no display needed).

- `plot_loss_terms`: every logged loss term over training steps, one panel per stage.
- `plot_tradeoff`: accuracy against model size and against batch-1 latency, for the teacher
  and the student(s) (Keras models and exported files).

Both take plain Python data (what `kdistill distill` writes to `history.jsonl` and
`report.json`), so they also work on the files of a finished run.
"""

import json
import math


def _figure(width, height):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure


def read_history(path):
    """Reads a run's `history.jsonl` (one JSON object per line) into a list of dicts.

    Args:
        path: str. The file.

    Returns:
        list of dict. Each has `stage`, `step`, `epoch`, `kind` (`"step"` or `"epoch"`) and
        dicts of values: `terms` (losses), `metrics`, `schedule` (learning rate, temperature).

    Example:
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "history.jsonl")
    >>> with open(path, "w") as f:
    ...     _ = f.write('{"stage": "task", "step": 10, "kind": "step", "terms": {"loss": 0.5}}\\n')
    >>> read_history(path)[0]["terms"]["loss"]
    0.5
    """
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                records.append(json.loads(line))
    return records


def loss_terms(records):
    """`{stage: {term: ([steps], [values])}}` from the per-step records' `terms`.

    Terms are the objectives' losses (`kd_loss`, `hidden_loss`, ...) and the total `loss`;
    metrics (accuracy, agreement) and schedules (learning rate, temperature) are kept apart
    in the records (`metrics`, `schedule`) and left out here. A stage with no per-step record
    (e.g. stopped before its first `log_every` step) is drawn from its per-epoch records.

    Args:
        records: list of dict. From `read_history`: `stage`, `step`, `kind`, `terms`.

    Returns:
        dict, stages in the order they first appear.

    Example:
    >>> loss_terms([{"stage": "task", "step": 1, "kind": "step", "terms": {"loss": 1.0}},
    ...             {"stage": "task", "step": 2, "kind": "step", "terms": {"loss": 0.5}}])
    {'task': {'loss': ([1, 2], [1.0, 0.5])}}
    >>> loss_terms([{"stage": "task", "step": 3, "kind": "epoch", "terms": {"loss": 0.7}}])
    {'task': {'loss': ([3], [0.7])}}
    """
    stepped = {r["stage"] for r in records if r.get("kind") == "step" and r.get("terms")}
    stages = {}
    for record in records:
        kind = "step" if record["stage"] in stepped else "epoch"
        if record.get("kind") != kind:
            continue
        terms = stages.setdefault(record["stage"], {})
        for name, value in record.get("terms", {}).items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                    math.isfinite(value)):
                continue
            steps, values = terms.setdefault(name, ([], []))
            steps.append(record["step"])
            values.append(float(value))
    return {stage: terms for stage, terms in stages.items() if terms}


def plot_loss_terms(records, path, title="Loss terms over training steps"):
    """Plots every loss term over the optimizer steps, one panel per stage, to a PNG file.

    The y axis is logarithmic when all of a panel's values are positive and span more than two
    decades (terms of very different sizes stay readable).

    Args:
        records: list of dict. Per-step records (`stage`, `step`, term values), e.g. from
            `read_history`.
        path: str. The PNG file to write.
        title: str. Figure title.

    Returns:
        str. `path`.

    Raises:
        ValueError: no per-step loss values in `records`.

    Example:
    >>> import os, tempfile
    >>> records = [{"stage": "task", "step": s, "kind": "step",
    ...             "terms": {"loss": 1 / s, "kd_loss": 0.5 / s}} for s in range(1, 6)]
    >>> out = plot_loss_terms(records, os.path.join(tempfile.mkdtemp(), "loss.png"))
    >>> os.path.getsize(out) > 0
    True
    """
    stages = loss_terms(records)
    if not stages:
        raise ValueError("No loss values to plot: the records hold no `terms` (did training "
                         "run a step?).")
    figure = _figure(5.0 * len(stages), 3.8)
    for i, (stage, terms) in enumerate(stages.items()):
        axes = figure.add_subplot(1, len(stages), i + 1)
        values = []
        for name, (steps, ys) in sorted(terms.items()):
            axes.plot(steps, ys, label=name, linewidth=2.0 if name == "loss" else 1.2,
                      marker="o" if len(ys) < 10 else None)  # one point is still seen
            values += ys
        if values and min(values) > 0 and max(values) / min(values) > 100:
            axes.set_yscale("log")
        axes.set_title(f"stage: {stage}")
        axes.set_xlabel("optimizer step")
        axes.set_ylabel("mean over the logging window")
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=7)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


def plot_tradeoff(entries, path, title="Accuracy vs size vs latency"):
    """Plots accuracy against size and against batch-1 latency for several models, to a PNG.

    Args:
        entries: list of dict. One per model: `name`, `size_bytes`, `latency_ms`, and
            `accuracy` (None or missing: plotted at 0 and marked "n/a").
        path: str. The PNG file to write.
        title: str. Figure title.

    Returns:
        str. `path`.

    Raises:
        ValueError: no entries, or an entry without `name`, `size_bytes` or `latency_ms`.

    Example:
    >>> import os, tempfile
    >>> entries = [{"name": "teacher", "size_bytes": 9e7, "latency_ms": 40.0, "accuracy": 0.84},
    ...            {"name": "student", "size_bytes": 4e6, "latency_ms": 2.0, "accuracy": 0.80}]
    >>> out = plot_tradeoff(entries, os.path.join(tempfile.mkdtemp(), "tradeoff.png"))
    >>> os.path.getsize(out) > 0
    True
    """
    if not entries:
        raise ValueError("plot_tradeoff needs at least one model entry.")
    for entry in entries:
        missing = [k for k in ("name", "size_bytes", "latency_ms") if entry.get(k) is None]
        if missing:
            raise ValueError(f"Model entry {entry.get('name', entry)!r} lacks {missing}.")
    figure = _figure(10.0, 4.2)
    panels = (("size_bytes", 1e-6, "size (MB)"), ("latency_ms", 1.0, "latency at batch 1 (ms)"))
    for i, (key, scale, label) in enumerate(panels):
        axes = figure.add_subplot(1, 2, i + 1)
        xs = [entry[key] * scale for entry in entries]
        for j, (entry, x) in enumerate(zip(entries, xs)):
            accuracy = entry.get("accuracy")
            y = 0.0 if accuracy is None else accuracy
            axes.scatter([x], [y], s=40)
            text = entry["name"] + ("" if accuracy is not None else " (accuracy n/a)")
            # Staggered labels stay readable when models share a size or an accuracy.
            axes.annotate(text, (x, y), fontsize=7, textcoords="offset points",
                          xytext=(4, 4 + 9 * (j % 3)))
        if min(xs) > 0 and max(xs) / min(xs) > 20:
            axes.set_xscale("log")
        axes.set_xlabel(label)
        axes.set_ylabel("accuracy")
        axes.grid(True, alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path
