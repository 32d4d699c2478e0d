"""A run's results: the teacher and the student measured side by side, the export, the report.

`final_report` is the last step of `kdistill.runner.run`: it saves `student.keras`, measures the
teacher and the student on the test and validation splits (accuracy, loss, params, size, batch-1
latency in interleaved rounds), exports the student when the config asks, checks the targets
(`headline`), and writes `report.json`, `labels.json`, `tradeoff.png` and `loss_terms.png`.
"""

import os
import time

import keras

from kdistill.evaluation import (
    benchmark_models,
    evaluate_model,
    format_table,
    keras_model,
    write_label_names,
)
from kdistill.training_state import atomic_json, check_finite_weights

REPORT_KIND = "kdistill_run_report"


def _measure(run, teacher, student, train, validation, test):
    """Teacher and student entries: params, size, batch-1 latency, test and validation scores."""
    config = run.config
    models = [keras_model(teacher, name="teacher"), keras_model(student, name="student")]
    example = (test or train).example()
    latencies = benchmark_models(models, example, runs=config.latency_runs)
    entries = []
    for model, ms in zip(models, latencies):
        entry = {"name": model.name, "params": model.params, "size_bytes": model.size_bytes,
                 "latency_ms": ms, "accuracy": None, "loss": None, "validation_accuracy": None}
        if test is not None:
            entry.update(evaluate_model(model, test, config.data.eval_batch_size))
        if validation is not None:
            entry["validation_accuracy"] = evaluate_model(
                model, validation, config.data.eval_batch_size)["accuracy"]
        entries.append(entry)
    return entries


def _measure_labels_only(run, baseline, validation, test):
    """The labels-only baseline's entry: params and test/validation scores (its latency and size
    are the student's: the same architecture)."""
    config = run.config
    model = keras_model(baseline, name="labels_only")
    entry = {"name": "labels_only", "params": model.params, "accuracy": None, "loss": None,
             "validation_accuracy": None}
    if test is not None:
        entry.update(evaluate_model(model, test, config.data.eval_batch_size))
    if validation is not None:
        entry["validation_accuracy"] = evaluate_model(
            model, validation, config.data.eval_batch_size)["accuracy"]
    return entry


def _export(run, student, teacher, train, test, preprocessor, label_names, test_texts):
    from kdistill.export import export_student

    config = run.config
    formats = config.export.formats
    return export_student(
        student, run.path("export"), formats=formats,
        representative_data=train.dataset(1) if "tflite_int8" in formats else None,
        validation_data=None if test is None else test.dataset(config.data.eval_batch_size),
        overwrite=True, teacher=teacher, sequence_length=config.data.sequence_length,
        num_calibration_batches=config.export.num_calibration_examples,
        num_validation_examples=len(test) if test is not None else 256,
        latency_runs=config.latency_runs, verbose=False, preprocessor=preprocessor,
        label_names=label_names,
        validation_texts=test_texts if preprocessor is not None else None,
        int8_options=config.export.int8_options())["artifacts"]


def headline(report, targets):
    """The run's headline figures and the checks of its targets, from the report's entries.

    Args:
        report: dict with `teacher`, `student` (and optionally `export`) entries.
        targets: `kdistill.config.TargetsConfig`.

    Returns:
        dict: `relative_accuracy`, `relative_validation_accuracy`, `param_ratio`, the edge
        artifact (`tflite_dynamic_int8` if exported, else the Keras student) with its size,
        latency, accuracy and speed-up over the Keras teacher; with a `labels_only` entry, the
        gain of distillation in accuracy points (`gain_test`, `gain_validation` and their mean
        `gain_over_labels_only`); and `targets` (`{name: {"target", "value", "ok"}}`; the
        `relative_accuracy` goal is checked on both splits, the second check being
        `relative_validation_accuracy`).

    Example:
    >>> from kdistill.config import TargetsConfig
    >>> entry = lambda acc, params, ms: {"accuracy": acc, "validation_accuracy": acc,
    ...                                  "params": params, "latency_ms": ms, "size_bytes": 1}
    >>> s = headline({"teacher": entry(0.8, 50, 10.0), "student": entry(0.78, 10, 2.0)},
    ...              TargetsConfig(relative_accuracy=0.98, param_ratio=5))
    >>> round(s["relative_accuracy"], 4), {k: v["ok"] for k, v in s["targets"].items()}
    (0.975, {'relative_accuracy': False, 'relative_validation_accuracy': False, 'param_ratio': True})
    >>> s = headline({"teacher": entry(0.8, 50, 10.0), "student": entry(0.79, 10, 2.0),
    ...               "labels_only": entry(0.77, 10, 2.0)}, TargetsConfig(gain_over_labels_only=1.5))
    >>> round(s["gain_over_labels_only"], 2), s["targets"]["gain_over_labels_only"]["ok"]
    (2.0, True)
    """  # noqa: E501
    t, s = report["teacher"], report["student"]
    artifacts = report.get("export") or {}
    edge_name = "tflite_dynamic_int8" if "tflite_dynamic_int8" in artifacts else "keras student"
    edge = artifacts.get("tflite_dynamic_int8") or s

    def ratio(a, b):
        return None if a is None or not b else a / b

    result = {
        "relative_accuracy": ratio(s.get("accuracy"), t.get("accuracy")),
        "relative_validation_accuracy": ratio(s.get("validation_accuracy"),
                                              t.get("validation_accuracy")),
        "param_ratio": ratio(t.get("params"), s.get("params")),
        "edge_artifact": edge_name,
        "edge_accuracy": edge.get("accuracy"),
        "edge_size_bytes": edge.get("size_bytes"),
        "edge_latency_ms": edge.get("latency_ms"),
        "speedup": ratio(t.get("latency_ms"), edge.get("latency_ms")),
    }
    base = report.get("labels_only")
    if base:
        gains = {}
        for split, key in (("test", "accuracy"), ("validation", "validation_accuracy")):
            if s.get(key) is not None and base.get(key) is not None:
                gains[split] = 100 * (s[key] - base[key])
        result.update(labels_only_accuracy=base.get("accuracy"),
                      labels_only_validation_accuracy=base.get("validation_accuracy"),
                      gain_test=gains.get("test"), gain_validation=gains.get("validation"),
                      gain_over_labels_only=sum(gains.values()) / len(gains) if gains else None)
    checks = {}
    for name in ("relative_accuracy", "relative_validation_accuracy", "gain_over_labels_only",
                 "param_ratio", "speedup"):
        goal = getattr(targets, name.replace("_validation", ""))
        value = result.get(name)
        if goal is not None and (value is not None or name != "relative_validation_accuracy"):
            checks[name] = {"target": goal, "value": value,
                            "ok": value is not None and value >= goal}
    result["targets"] = checks
    return result


def format_summary(report):
    """The run's summary as text: teacher vs student, the edge artifact, targets, step times.

    Example:
    >>> print(format_summary({"summary": {"targets": {}}, "stages": {}, "steps": []}))
    Summary
    """
    s = report.get("summary", {})
    lines = ["Summary"]

    def pct(value):
        return "-" if value is None else f"{value:.2%}"

    for key in ("teacher", "student", "labels_only"):
        e = report.get(key)
        if e:
            lines.append(f"  {key:<11} test {pct(e.get('accuracy')):>7}   validation "
                         f"{pct(e.get('validation_accuracy')):>7}   {e['params']:,} params")
    if s.get("relative_accuracy") is not None:
        val = s.get("relative_validation_accuracy")
        lines.append(f"  student keeps {s['relative_accuracy']:.1%} of the teacher on test"
                     + (f", {val:.1%} on validation" if val is not None else "")
                     + f"; {s['param_ratio']:.2f}x fewer params")
    if s.get("gain_over_labels_only") is not None:
        lines.append(f"  distillation bought {s['gain_over_labels_only']:+.2f} points over the "
                     f"same student on labels alone (test {s.get('gain_test') or 0:+.2f}, "
                     f"validation {s.get('gain_validation') or 0:+.2f})")
    if s.get("edge_latency_ms") is not None and s.get("speedup"):
        lines.append(f"  {s['edge_artifact']}: {s['edge_size_bytes'] / 1e6:.2f} MB, "
                     f"{s['edge_latency_ms']:.2f} ms at batch 1 = {s['speedup']:.1f}x faster "
                     "than the Keras teacher")
    for name, a in (report.get("export") or {}).items():
        accuracy, agreement = pct(a.get("accuracy")), pct(a.get("top1_agreement"))
        lines.append(f"  {name:<22} {a['size_bytes'] / 1e6:7.2f} MB  test {accuracy:>7}"
                     f"  agreement {agreement:>7}  {a['latency_ms']:7.2f} ms at batch 1")
    if s.get("targets"):
        lines.append("  targets: " + ", ".join(
            f"{k} >= {v['target']:g} {'ok' if v['ok'] else 'MISSED'}"
            for k, v in s["targets"].items()))
    for step in report.get("steps", []):
        lines.append(f"  {step['step']:<22} {step['seconds']:8.1f} s wall "
                     f"{step['cpu_seconds']:8.1f} s CPU")
    for name, stage in report.get("stages", {}).items():
        lines.append(f"  stage {name:<16} {stage['seconds']:8.1f} s wall "
                     f"{stage.get('cpu_seconds', 0):8.1f} s CPU")
    return "\n".join(lines)


def final_report(run, teacher, student, train, validation, test, state, config_dict,
                 label_names=None, labels_only=None, preprocessor=None, test_texts=None):
    """Measures, exports and reports a finished run (see the module docstring).

    Args:
        run: the runner's run context (`config`, `path()`, `timed()`, `timings`, `quiet`).
        teacher, student: keras.Model.
        train, validation, test: `kdistill.data.Split` or None (train: calibration data).
        state: dict. The run state (`stages` summaries).
        config_dict: dict. The resolved config, stored in the report.
        label_names: list of str or None. The classes in label-index order: written to
            `labels.json` next to `student.keras` and in `export/`, and to the report, so that
            `kdistill evaluate` numbers any file's labels as in training.
        labels_only: keras.Model or None. The same student trained on the labels alone:
            measured on the same splits as the `labels_only` entry.
        preprocessor: keras-hub preprocessor or None. The student's tokenizer: the export's
            SavedModel also serves raw text, and every `.tflite` sidecar carries it.
        test_texts: unbatched `tf.data.Dataset` of `(text, label)` or None. The raw test
            texts the raw-text signature is checked on.

    Returns:
        dict. The report.

    Example:
    >>> import tempfile, types
    >>> from kdistill import testing
    >>> from kdistill.config import RunConfig
    >>> from kdistill.data import Split
    >>> out = tempfile.mkdtemp()
    >>> run = types.SimpleNamespace(config=RunConfig(latency_runs=1), quiet=True, timings=[],
    ...                             path=lambda *p: os.path.join(out, *p),
    ...                             timed=lambda *args, **kwargs: None)
    >>> x, y = testing.token_batch(batch_size=4, num_classes=2)
    >>> teacher = testing.tiny_bert_classifier(num_classes=2)
    >>> student = testing.tiny_bert_classifier(num_classes=2, num_layers=1)
    >>> report = final_report(run, teacher, student, Split(x, y), Split(x, y), Split(x, y),
    ...                       {"stages": {}}, {})
    >>> sorted(report["summary"]["targets"]), os.path.exists(os.path.join(out, "report.json"))
    ([], True)
    """
    from kdistill import plots

    config = run.config
    started, cpu = time.perf_counter(), time.process_time()
    student_path = run.path("student.keras")
    optimizer = getattr(student, "optimizer", None)
    if optimizer is not None and optimizer.built:  # after fine-tuning
        student.compile(optimizer=keras.optimizers.Adam(),  # weights only in student.keras
                        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                        metrics=["accuracy"])
    check_finite_weights(student, "save")  # never a NaN student on disk
    student.save(student_path, overwrite=True)  # our own file in our run directory
    if label_names is not None:
        write_label_names(os.path.dirname(student_path), label_names)
    teacher_entry, student_entry = entries = _measure(run, teacher, student, train, validation,
                                                      test)
    ratios = {"param_ratio": teacher_entry["params"] / student_entry["params"],
              "speedup": teacher_entry["latency_ms"] / student_entry["latency_ms"]}
    if test is not None and teacher_entry["accuracy"]:
        ratios["relative_accuracy"] = student_entry["accuracy"] / teacher_entry["accuracy"]
    report = {"kind": REPORT_KIND, "teacher": teacher_entry, "student": student_entry,
              "ratios": ratios, "stages": state["stages"], "config": config_dict,
              "student_path": student_path, "label_names": label_names,
              "note": "Latencies are medians at batch 1, measured in interleaved rounds on this "
                      "machine; compare ratios, not absolute times."}
    if labels_only is not None:
        report["labels_only"] = _measure_labels_only(run, labels_only, validation, test)
    plot_entries = [dict(e, name=f"keras {e['name']}") for e in entries]
    if labels_only is not None:  # the same architecture: the student's size and latency
        plot_entries.append(dict(student_entry, name="keras labels-only student",
                                 accuracy=report["labels_only"]["accuracy"]))
    if config.export.formats:
        report["export"] = _export(run, student, teacher, train, test, preprocessor,
                                   label_names, test_texts)
        if label_names is not None:
            write_label_names(run.path("export"), label_names)
        plot_entries += [{"name": fmt, "size_bytes": a["size_bytes"],
                          "latency_ms": a["latency_ms"], "accuracy": a.get("accuracy")}
                         for fmt, a in report["export"].items()]
    run.timed("measure and export", started, cpu)
    report["steps"] = run.timings
    report["summary"] = headline(report, config.targets)
    atomic_json(run.path("report.json"), report)
    plots.plot_tradeoff(plot_entries, run.path("tradeoff.png"),
                        title="Teacher vs student: accuracy, size, batch-1 latency")
    history = run.path("history.jsonl")
    records = plots.read_history(history) if os.path.exists(history) else []
    if plots.loss_terms(records):
        plots.plot_loss_terms(records, run.path("loss_terms.png"))
        plots.plot_learning_curves(records, run.path("learning_curves.png"))
    if not run.quiet:
        print(format_table(entries), flush=True)
        print(format_summary(report), flush=True)
    return report
