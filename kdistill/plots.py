"""PNG plots of a distillation run (matplotlib, Agg backend; no display needed).

- `plot_loss_terms`: every logged loss term over training steps, one panel per stage.
- `plot_tradeoff`: accuracy against model size and against batch-1 latency, for the teacher
  and the student(s) (Keras models and exported files), labels kept apart (`spread_labels`).
- `plot_learning_curves`: per stage, the loss terms and the validation accuracy, beside the
  labels-only baseline's.

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


def spread_labels(positions, gap, low=0.0, high=1.0):
    """Label positions near `positions` (one axis, e.g. axes fractions) at least `gap` apart,
    within `[low, high]`, in the same order: labels of points that share a value do not
    overlap.

    Example:
    >>> [round(p, 2) for p in spread_labels([0.5, 0.5, 0.5, 0.9], gap=0.1)]
    [0.5, 0.6, 0.7, 0.9]
    >>> [round(p, 2) for p in spread_labels([0.95, 0.99], gap=0.1)]
    [0.9, 1.0]
    """
    order = sorted(range(len(positions)), key=lambda i: positions[i])
    placed = {}
    previous = None
    for i in order:  # upwards: each at least `gap` above the one below
        p = max(positions[i], low) if previous is None else max(positions[i], previous + gap)
        placed[i] = previous = p
    following = None
    for i in reversed(order):  # then down from the top, where the column ran out of room
        p = min(placed[i], high) if following is None else min(placed[i], following - gap)
        placed[i] = following = p
    return [placed[i] for i in range(len(positions))]


def plot_tradeoff(entries, path, title="Accuracy vs size vs latency"):
    """Plots accuracy against size and against batch-1 latency for several models, to a PNG.

    Each point's name sits in a column to the right of its panel, in the order of the
    accuracies, joined to its point by a thin line, so that models with the same size, latency
    or accuracy (a Keras student and its float32 file) keep readable labels. Latency is on a
    log scale, size too when it spans more than a factor of 20.

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
    figure = _figure(13.0, 0.9 + max(3.8, 0.28 * len(entries)))
    panels = (("size_bytes", 1e-6, "size (MB)"), ("latency_ms", 1.0, "latency at batch 1 (ms)"))
    ys = [0.0 if e.get("accuracy") is None else e["accuracy"] for e in entries]
    colors = [f"C{j % 10}" for j in range(len(entries))]
    for i, (key, scale, label) in enumerate(panels):
        axes = figure.add_subplot(1, 2, i + 1)
        xs = [entry[key] * scale for entry in entries]
        axes.scatter(xs, ys, s=40, c=colors, zorder=3)
        if min(xs) > 0 and (key == "latency_ms" or max(xs) / min(xs) > 20):
            from matplotlib import ticker

            axes.set_xscale("log")
            # Plain numbers at 1, 2, 5 x 10^k; matplotlib's own labels on the minor ticks of a
            # range under a decade ("2x10^0 3x10^0 ...") run into each other.
            axes.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
            axes.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            axes.xaxis.set_minor_formatter(ticker.NullFormatter())
        axes.margins(x=0.15, y=0.15)
        axes.autoscale_view()
        to_axes = axes.transAxes.inverted()
        points = [to_axes.transform(axes.transData.transform((x, y))) for x, y in zip(xs, ys)]
        heights = spread_labels([p[1] for p in points], gap=min(0.12, 0.95 / len(entries)),
                                low=0.02, high=0.98)
        for entry, x, y, h, color in zip(entries, xs, ys, heights, colors):
            text = entry["name"] + ("" if entry.get("accuracy") is not None
                                    else " (accuracy n/a)")
            if entry.get("accuracy") is not None:
                text += f"  {100 * entry['accuracy']:.1f}%"
            axes.annotate(text, (x, y), xycoords="data", xytext=(1.03, h),
                          textcoords="axes fraction", fontsize=8, va="center", color=color,
                          arrowprops={"arrowstyle": "-", "color": color, "lw": 0.6,
                                      "alpha": 0.6})
        axes.set_xlabel(label + (" (log scale)" if axes.get_xscale() == "log" else ""))
        axes.set_ylabel("accuracy")
        axes.grid(True, alpha=0.3)
    figure.suptitle(title)
    figure.subplots_adjust(left=0.06, right=0.80, wspace=0.75, top=0.88, bottom=0.14)
    figure.savefig(path, dpi=100)
    return path


def validation_curves(records, metric="val_accuracy"):
    """`{stage: ([steps], [values])}` of a per-epoch validation metric.

    Example:
    >>> validation_curves([{"stage": "task", "step": 5, "kind": "epoch",
    ...                     "metrics": {"val_accuracy": 0.7}}])
    {'task': ([5], [0.7])}
    """
    curves = {}
    for record in records:
        value = (record.get("metrics") or {}).get(metric)
        if record.get("kind") != "epoch" or not isinstance(value, (int, float)) or (
                isinstance(value, bool) or not math.isfinite(value)):
            continue
        steps, values = curves.setdefault(record["stage"], ([], []))
        steps.append(record["step"])
        values.append(float(value))
    return curves


def plot_learning_curves(records, path, baseline_prefix="labels_only_",
                         title="Learning curves: distillation beside labels alone"):
    """Per stage: its loss terms over the steps (top) and its validation accuracy per epoch
    (bottom), with the labels-only baseline's stage of the same name beside it (dashed).

    Args:
        records: list of dict. From `read_history`.
        path: str. The PNG file to write.
        baseline_prefix: str. Stage-name prefix of the baseline's stages (the runner's
            `labels_only_`).
        title: str. Figure title.

    Returns:
        str. `path`.

    Raises:
        ValueError: no loss values in `records`.

    Example:
    >>> import os, tempfile
    >>> records = []
    >>> for stage, scale in (("task", 1.0), ("labels_only_task", 1.5)):
    ...     records += [{"stage": stage, "step": s, "kind": "step",
    ...                  "terms": {"loss": scale / s}} for s in range(1, 5)]
    ...     records += [{"stage": stage, "step": 4, "kind": "epoch",
    ...                  "metrics": {"val_accuracy": 0.8 / scale}}]
    >>> out = plot_learning_curves(records, os.path.join(tempfile.mkdtemp(), "curves.png"))
    >>> os.path.getsize(out) > 0
    True
    """
    terms = loss_terms(records)
    if not terms:
        raise ValueError("No loss values to plot: the records hold no `terms` (did training "
                         "run a step?).")
    accuracy = validation_curves(records)
    stages = [s for s in terms if not s.startswith(baseline_prefix)]
    stages += [s for s in terms if s.startswith(baseline_prefix)
               and s[len(baseline_prefix):] not in terms]  # a baseline stage alone
    figure = _figure(5.5 * len(stages), 7.0)
    for i, stage in enumerate(stages):
        base = baseline_prefix + stage
        top = figure.add_subplot(2, len(stages), i + 1)
        values = []
        for name, (steps, ys) in sorted(terms[stage].items()):
            top.plot(steps, ys, label=name, linewidth=2.0 if name == "loss" else 1.2,
                     marker="o" if len(ys) < 10 else None)
            values += ys
        if base in terms and "loss" in terms[base]:
            steps, ys = terms[base]["loss"]
            top.plot(steps, ys, "k--", label="labels only: loss", linewidth=1.5,
                     marker="o" if len(ys) < 10 else None)
            values += ys
        if values and min(values) > 0 and max(values) / min(values) > 100:
            top.set_yscale("log")
        top.set_title(f"stage: {stage}")
        top.set_xlabel("optimizer step")
        top.set_ylabel("loss (mean over the logging window)")
        top.grid(True, alpha=0.3)
        top.legend(fontsize=7)
        bottom = figure.add_subplot(2, len(stages), len(stages) + i + 1)
        for name, style, label in ((stage, "o-", "distilled"), (base, "s--", "labels only")):
            if name in accuracy:
                _, ys = accuracy[name]  # by epoch: the two runs have different step counts
                bottom.plot(range(1, len(ys) + 1), [100 * y for y in ys], style, label=label)
        bottom.set_xlabel("epoch")
        from matplotlib import ticker

        bottom.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))  # no epoch 1.25
        bottom.set_ylabel("validation accuracy (%)")
        bottom.grid(True, alpha=0.3)
        if any(name in accuracy for name in (stage, base)):
            bottom.legend(fontsize=7)
        else:
            bottom.text(0.5, 0.5, "no validation data", ha="center", va="center",
                        transform=bottom.transAxes)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path
