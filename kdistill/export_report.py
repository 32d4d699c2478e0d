"""The report of an export: parity targets, `report.json`, the printed table and the plot.

`kdistill.export.export_student` measures each artifact (size, max abs logit difference and top-1
agreement with the Keras student, accuracy, batch-1 latency); this module judges those figures
against `TARGETS` (`check_targets`), formats them as a plain-text table (`format_report_table`),
draws size vs accuracy vs latency (`plot_report`) and writes it all to the export directory
(`write_report`).
"""

import json
import os
import warnings

REPORT_FILENAME = "report.json"
PLOT_FILENAME = "report.png"

# Targets from issue 6 (issue 15: the SavedModel's raw-text signature): (metric, comparison,
# threshold).
TARGETS = {
    "saved_model": ("max_abs_diff", "<=", 1e-5),
    "saved_model_text": ("max_abs_diff", "<=", 1e-5),
    "tflite_float32": ("max_abs_diff", "<=", 1e-4),
    "tflite_float16": ("top1_agreement", ">=", 0.99),
    "tflite_dynamic_int8": ("top1_agreement", ">=", 0.99),
    "tflite_int8": ("top1_agreement", ">=", 0.98),
}


def check_targets(artifacts):
    """Records in each artifact's entry whether its `TARGETS` threshold was met.

    Sets `entry["target"] = {"metric", "op", "threshold", "met"}` (`met` is None when the metric
    was not measured, e.g. without validation data) and warns for each missed target.

    Args:
        artifacts: dict. `{format: report entry}`, as in `report["artifacts"]`; changed in place.

    Example:
    >>> artifacts = {"saved_model": {"max_abs_diff": 2e-6}, "tflite_float16": {}}
    >>> check_targets(artifacts)
    >>> artifacts["saved_model"]["target"]["met"], artifacts["tflite_float16"]["target"]["met"]
    (True, None)
    """
    for fmt, entry in artifacts.items():
        metric, op, threshold = TARGETS[fmt]
        value = entry.get(metric)
        met = None if value is None else (value <= threshold if op == "<=" else value >= threshold)
        entry["target"] = {"metric": metric, "op": op, "threshold": threshold, "met": met}
        if met is False:
            hint = ""
            if fmt == "tflite_int8":
                hint = (" Check `attention_mask_fix` and `float32_ops` in the report, calibrate on "
                        "more representative batches (num_calibration_batches), or ship "
                        "tflite_dynamic_int8, which keeps activations in float.")
            warnings.warn(f"{fmt}: {metric}={value:.4g} misses the target {op} {threshold}.{hint}")


def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


def format_report_table(report):
    """Formats an `export_student` report as a plain-text table.

    Args:
        report: dict. The report returned by `export_student` (or loaded from `report.json`).

    Returns:
        str. One row per Keras model and exported artifact: size, parameters, max abs logit
        difference and top-1 agreement vs the Keras student, accuracy, batch-1 latency, and
        whether the issue's target was met.

    Example:
    >>> report = {"student": {"name": "s", "params": 10, "weights_bytes": 40, "latency_ms": 1.0,
    ...                       "accuracy": 0.5}, "teacher": None, "artifacts": {}}
    >>> print(format_report_table(report).splitlines()[0].split()[:3])
    ['model', 'size', 'MB']
    """
    header = (f"{'model':<22}{'size MB':>10}{'params':>12}{'max|diff|':>12}{'top-1 agr':>11}"
              f"{'accuracy':>10}{'ms (b=1)':>10}  target")
    lines = [header, "-" * len(header)]

    def row(label, size, params, diff, agree, acc, ms, target=""):
        lines.append(
            f"{label:<22}{_fmt(None if size is None else size / 1e6, '.3f'):>10}"
            f"{_fmt(params, ','):>12}{_fmt(diff, '.2e'):>12}{_fmt(agree, '.2%'):>11}"
            f"{_fmt(acc, '.2%'):>10}{_fmt(ms, '.3f'):>10}  {target}"
        )

    teacher = report.get("teacher")
    if teacher:
        row("keras teacher*", teacher["weights_bytes"], teacher["params"], None, None,
            teacher["accuracy"], teacher["latency_ms"])
    student = report["student"]
    row("keras student*", student["weights_bytes"], student["params"], 0.0, 1.0,
        student["accuracy"], student["latency_ms"])
    for fmt, entry in report["artifacts"].items():
        target = entry.get("target") or {}
        text = ""
        if target:
            status = {True: "ok", False: "MISSED", None: "unchecked"}[target["met"]]
            text = f"{target['metric']} {target['op']} {target['threshold']:g}: {status}"
        if entry.get("select_tf_ops"):
            text += " [Select TF ops]"
        row(fmt, entry["size_bytes"], entry.get("params"), entry.get("max_abs_diff"),
            entry.get("top1_agreement"), entry.get("accuracy"), entry["latency_ms"], text)
    lines.append("* in-memory weights; diff/agreement are vs the Keras student; "
                 "latency is the median at batch 1.")
    return "\n".join(lines)


def plot_report(report, path):
    """Draws an `export_student` report: size vs accuracy, marker area ~ batch-1 latency.

    The y axis is accuracy when every model has one (labelled validation data), else top-1
    agreement with the Keras student.

    Args:
        report: dict. The report returned by `export_student` (or loaded from `report.json`).
        path: str. The PNG file to write.

    Example:
    >>> import os, tempfile
    >>> report = {"student": {"name": "s", "params": 10, "weights_bytes": 40, "latency_ms": 1.0,
    ...                       "accuracy": 0.5}, "teacher": None, "artifacts": {}}
    >>> path = os.path.join(tempfile.mkdtemp(), "report.png")
    >>> plot_report(report, path)
    >>> os.path.getsize(path) > 0
    True
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    points = []
    if report.get("teacher"):
        t = report["teacher"]
        points.append(("keras teacher", t["weights_bytes"], t["accuracy"], None, t["latency_ms"]))
    s = report["student"]
    points.append(("keras student", s["weights_bytes"], s["accuracy"], 1.0, s["latency_ms"]))
    for fmt, e in report["artifacts"].items():
        points.append((fmt, e["size_bytes"], e.get("accuracy"), e.get("top1_agreement"),
                       e["latency_ms"]))
    use_accuracy = all(p[2] is not None for p in points)
    figure = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    sizes = [p[1] for p in points]
    biggest = max(sizes) or 1
    for label, size, acc, agree, ms in points:
        y = acc if use_accuracy else agree
        if y is None:
            continue
        axes.scatter([size / 1e6], [y], s=30 + 400 * ms / max(p[4] for p in points), alpha=0.6)
        axes.annotate(f"{label}\n{ms:.2f} ms", (size / 1e6, y), fontsize=7,
                      textcoords="offset points", xytext=(4, 4))
    axes.set_xscale("log" if biggest / max(min(sizes), 1) > 20 else "linear")
    axes.set_xlabel("size (MB; Keras models: in-memory weights)")
    axes.set_ylabel("accuracy" if use_accuracy else "top-1 agreement with Keras student")
    axes.set_title("Export: size vs accuracy (marker area ~ batch-1 latency)")
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def write_report(report, export_dir, plot=True, verbose=True):
    """Writes a report to `export_dir/report.json` (and `report.png`), and prints its table.

    Args:
        report: dict. The report `export_student` builds.
        export_dir: str. An existing directory.
        plot: bool. Also draw `report.png` (`plot_report`).
        verbose: bool. Print `format_report_table(report)`.

    Example:
    >>> import json, os, tempfile
    >>> report = {"student": {"name": "s", "params": 10, "weights_bytes": 40, "latency_ms": 1.0,
    ...                       "accuracy": 0.5}, "teacher": None, "artifacts": {}}
    >>> export_dir = tempfile.mkdtemp()
    >>> write_report(report, export_dir, plot=False, verbose=False)
    >>> with open(os.path.join(export_dir, REPORT_FILENAME)) as f:
    ...     json.load(f) == report
    True
    """
    with open(os.path.join(export_dir, REPORT_FILENAME), "w") as f:
        json.dump(report, f, indent=2)
    if plot:
        plot_report(report, os.path.join(export_dir, PLOT_FILENAME))
    if verbose:
        print(format_report_table(report))
