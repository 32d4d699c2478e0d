"""The `kdistill` command line: distill, export, evaluate and benchmark on a tiny project."""

import contextlib
import glob
import io
import json
import math
import os
import subprocess
import sys

import pytest

from kdistill import cli, evaluation
from tests.test_runner import write_tiny_project

# Task distillation with validation and test data; small enough to train in seconds. The
# student has dropout (test_tiny: 0.1) and a projection (width 8 -> the teacher's 16). The other
# stages (general distillation, fine-tuning) are tested in test_runner.py on tiny MLPs, which
# trace much faster than a third and fourth BERT train step here.
RUN_CONFIG = """\
teacher:
  model: teacher.keras
student:
  preset: test_tiny
  init: svd
data:
  train: train.csv
  validation: dev.csv
  test: test.csv
  vocabulary: vocab.txt
  sequence_length: 16
  batch_size: 8
stages:
  task:
    epochs: 2
    learning_rate: 1e-2
    objectives:
      - {preset: logits_kd, temperature: 2.0}
      - {type: HiddenStateKD}
    temperature_schedule: {kind: linear, start: 4.0, end: 2.0}
save_every: 2
log_every: 1
latency_runs: 2
jit_compile: false
"""


def run_cli(argv):
    """`cli.main(argv)` with stdout and stderr captured: `(status, out, err)`."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = cli.main(argv)
        except SystemExit as exit_:
            status = exit_.code
    return status, out.getvalue(), err.getvalue()


_KILLED_RUN = """
import os, signal, sys
import keras
from kdistill.config import load_config
from kdistill.runner import run

stage, step = sys.argv[3].split(":")

class KillAt(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == int(step):
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)

config = load_config(sys.argv[1], [(("output",), sys.argv[2], "--output")])
run(config, quiet=True, stage_callbacks={stage: [KillAt()]})
"""


def distill_process(config, out, *flags, kill_at=None):
    """`kdistill distill` in a subprocess; `kill_at="stage:step"` runs the same config through
    `kdistill.runner.run` with a callback that SIGKILLs the process after that step."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    argv = ([sys.executable, "-c", _KILLED_RUN, config, out, kill_at] if kill_at else
            [sys.executable, "-m", "kdistill", "distill", config, "--output", out, *flags])
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The config, run in-process with `kdistill distill`."""
    root = tmp_path_factory.mktemp("cli")
    project = write_tiny_project(str(root / "project"))
    config = os.path.join(project, "run.yaml")
    with open(config, "w") as f:
        f.write(RUN_CONFIG)
    out = str(root / "run")
    status, stdout, stderr = run_cli(["distill", config, "--output", out])
    assert status == 0, stderr[-3000:]
    return {"project": project, "config": config, "out": out, "stdout": stdout, "root": root}


def project_file(run, name):
    return os.path.join(run["project"], name)


def test_help_imports_no_tensorflow():
    code = ("import sys, contextlib, io\nfrom kdistill import cli\n"
            "for argv in ([], ['distill'], ['export'], ['evaluate'], ['benchmark'], ['demo']):\n"
            "    with contextlib.redirect_stdout(io.StringIO()):\n"
            "        try:\n            cli.main(argv + ['--help'])\n"
            "        except SystemExit:\n            pass\n"
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]


@pytest.mark.parametrize("command, flags", [
    ("distill", ["--set", "--output", "--epochs", "--quiet", "--overwrite", "--check",
                 "stages.task.objectives = ", "teacher.model = ", "Resuming"]),
    ("export", ["--output", "--formats", "--data", "--calibration", "--json"]),
    ("evaluate", ["--data", "--config", "--vocabulary", "--json", "MODEL"]),
    ("benchmark", ["--runs", "--warmup", "--plot", "--json", "baseline"]),
])
def test_every_command_documents_its_flags(command, flags):
    status, out, _ = run_cli([command, "--help"])
    assert status == 0
    for flag in flags:
        assert flag in out, flag


def test_distill_writes_a_complete_run(tiny_run):
    out, stdout = tiny_run["out"], tiny_run["stdout"]
    for name in ("student.keras", "report.json", "loss_terms.png", "tradeoff.png",
                 "config.json", "history.jsonl"):
        assert os.path.getsize(os.path.join(out, name)) > 0, name
    assert not os.path.exists(os.path.join(out, "backup"))  # removed after the stages
    # Not a terminal: one line per epoch, no progress bars redrawn into the log.
    assert "Epoch 1/" in stdout and "\u2501" not in stdout and "\r" not in stdout
    with open(os.path.join(out, "run.json")) as f:
        state = json.load(f)
    assert state["status"] == "finished"
    assert list(state["stages"]) == ["task"]
    with open(os.path.join(out, "report.json")) as f:
        report = json.load(f)
    for who in ("teacher", "student"):
        assert 0.0 <= report[who]["accuracy"] <= 1.0 and report[who]["num_examples"] == 16
        assert report[who]["latency_ms"] > 0 and report[who]["params"] > 0
    assert report["ratios"]["param_ratio"] > 1
    # The class names travel with the student (kdistill evaluate numbers labels with them).
    assert report["label_names"] == ["neg", "pos"]
    with open(os.path.join(out, "labels.json")) as f:
        assert json.load(f) == {"label_names": ["neg", "pos"]}
    # One summary line per stage, after Keras' epoch lines.
    lines = [line for line in stdout.splitlines() if line.startswith("[kdistill] stage ")]
    assert [line.split()[2] for line in lines] == ["task"]
    assert "val_accuracy" in lines[0] and "epochs 2" in lines[0]


def _scalars(directory):
    """`{"run/tag": [(step, value)]}` of a stage's TensorBoard runs (`train`, `validation`)."""
    import tensorflow as tf

    tags = {}
    for path in glob.glob(os.path.join(directory, "*", "events.out.tfevents.*")):
        run = os.path.basename(os.path.dirname(path))
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                tags.setdefault(f"{run}/{value.tag}", []).append(
                    (event.step, float(tf.make_ndarray(value.tensor))))
    return tags


def test_tensorboard_has_every_term_metric_and_schedule(tiny_run):
    logs = os.path.join(tiny_run["out"], "logs")
    assert sorted(os.listdir(logs)) == ["task"]
    task = _scalars(os.path.join(logs, "task"))
    for tag in ("loss", "kd_loss", "student_loss", "hidden_loss", "accuracy",
                "teacher_agreement", "teacher_kl", "learning_rate", "logits_kd_temperature",
                "logits_kd_alpha"):
        assert f"train/batch_{tag}" in task, (tag, sorted(task))
    for tag in ("accuracy", "kd_loss", "loss"):
        assert f"validation/epoch_{tag}" in task, (tag, sorted(task))
    assert [step for step, _ in task["train/batch_kd_loss"]] == [1, 2, 3, 4, 5, 6]  # log_every 1
    # The temperature schedule: 4 in the first epoch (steps 1-3), 2 in the second.
    assert task["train/batch_logits_kd_temperature"] == [(1, 4.0), (2, 4.0), (3, 4.0),
                                                         (4, 2.0), (5, 2.0), (6, 2.0)]
    for values in task.values():
        assert all(math.isfinite(v) for _, v in values)


def test_finished_run_is_refused(tiny_run):
    status, _, err = run_cli(["distill", tiny_run["config"], "--output", tiny_run["out"]])
    assert status == 2 and "holds a finished run; pass --overwrite" in err


def test_bad_config_fails_with_file_and_line(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("data:\n  dataset: rotten_tomatoes\nstages:\n  task:\n    epochz: 2\n")
    status, _, err = run_cli(["distill", str(path), "--output", str(tmp_path / "out")])
    assert status == 2
    assert f"{path}, line 5: stages.task.epochz: unknown key. Did you mean 'epochs'?" in err
    status, _, err = run_cli(["distill", str(path), "--set", "seed"])
    assert status == 2 and "expected KEY=VALUE" in err
    assert not (tmp_path / "out").exists()


def test_check_prints_the_resolved_config(tiny_run):
    status, out, err = run_cli(["distill", tiny_run["config"], "--output", "x", "--check",
                                "--set", "stages.task.epochs=5", "--epochs", "4",
                                "--set", "stages.general.epochs=0"])
    assert status == 0, err
    resolved = json.loads(out)
    assert resolved["stages"]["task"]["epochs"] == 4  # the flag comes after --set
    assert resolved["stages"]["general"]["epochs"] == 0
    assert resolved["data"]["train"] == project_file(tiny_run, "train.csv")


def test_evaluate_agrees_with_the_run_report(tiny_run):
    out = tiny_run["out"]
    student, teacher = os.path.join(out, "student.keras"), project_file(tiny_run, "teacher.keras")
    json_path = str(tiny_run["root"] / "eval.json")
    status, stdout, err = run_cli(["evaluate", student, teacher, "--data",
                                   project_file(tiny_run, "test.csv"), "--vocabulary",
                                   project_file(tiny_run, "vocab.txt"), "--json", json_path])
    assert status == 0, err
    assert "student.keras" in stdout and "teacher.keras" in stdout
    with open(json_path) as f:
        models = json.load(f)["models"]
    with open(os.path.join(out, "report.json")) as f:
        report = json.load(f)
    for entry, who in zip(models, ("student", "teacher")):
        assert entry["accuracy"] == report[who]["accuracy"]
        assert entry["loss"] == pytest.approx(report[who]["loss"], rel=1e-5)
        assert entry["num_examples"] == 16
    # The same numbers from the run's own config (its data section and test split).
    status, _, err = run_cli(["evaluate", student, "--config", os.path.join(out, "config.json"),
                              "--json", "-"])
    assert status == 0, err
    status, _, err = run_cli(["evaluate", student, "--data", project_file(tiny_run, "test.csv"),
                              "--vocabulary", project_file(tiny_run, "vocab.txt"), "--json",
                              json_path])
    assert status == 2 and "exists; pass --overwrite" in err
    status, _, err = run_cli(["evaluate", student, "--data", project_file(tiny_run, "test.csv")])
    assert status == 2 and "pass --vocabulary" in err
    status, _, err = run_cli(["evaluate", str(tiny_run["root"] / "missing.keras"), "--data",
                              "rotten_tomatoes"])
    assert status == 2 and "No model at" in err


def test_export_then_evaluate_and_benchmark_the_tflite(tiny_run):
    out, root = tiny_run["out"], tiny_run["root"]
    student, teacher = os.path.join(out, "student.keras"), project_file(tiny_run, "teacher.keras")
    data = ["--data", project_file(tiny_run, "test.csv"), "--vocabulary",
            project_file(tiny_run, "vocab.txt")]
    edge = str(root / "edge")
    status, stdout, err = run_cli(["export", student, "--output", edge, "--formats",
                                   "saved_model", "tflite_float32", "--latency-runs", "2",
                                   "--json", str(root / "export.json"), *data])
    assert status == 0, err
    assert "tflite_float32" in stdout
    with open(root / "export.json") as f:
        artifacts = json.load(f)["artifacts"]
    for fmt in ("saved_model", "tflite_float32"):
        assert artifacts[fmt]["max_abs_diff"] < 1e-4 and artifacts[fmt]["target"]["met"]
    # Strings in: the serve_text signature, checked on the raw texts of --data.
    served = artifacts["saved_model_text"]
    assert served["signature"] == "serve_text" and served["num_validation_texts"] == 16
    assert served["target"]["met"] and served["labels_match"]
    tflite = os.path.join(edge, "model_float32.tflite")
    saved_model = os.path.join(edge, "saved_model")
    with open(os.path.join(edge, "labels.json")) as f:  # copied from next to student.keras
        assert json.load(f)["label_names"] == ["neg", "pos"]
    for path in (tflite, saved_model):
        assert evaluation.load_model(path).label_names == ["neg", "pos"]
    status, _, err = run_cli(["export", student, "--output", edge, *data])
    assert status == 2 and "exists" in err  # never silently overwritten

    status, _, err = run_cli(["evaluate", student, tflite, saved_model, *data, "--json",
                              str(root / "eval_exported.json")])
    assert status == 0, err
    with open(root / "eval_exported.json") as f:
        keras_entry, *exported = json.load(f)["models"]
    assert [e["kind"] for e in exported] == ["tflite", "saved_model"]
    assert exported[1]["params"] == keras_entry["params"]
    for entry in exported:
        assert entry["accuracy"] == keras_entry["accuracy"]
        assert entry["loss"] == pytest.approx(keras_entry["loss"], abs=1e-4)

    plot = str(root / "tradeoff.png")
    status, stdout, err = run_cli(["benchmark", teacher, student, tflite, "--runs", "2",
                                   "--warmup", "1", *data, "--json", str(root / "bench.json"),
                                   "--plot", plot])
    assert status == 0, err
    assert "speed-up" in stdout and "1.00x" in stdout
    with open(root / "bench.json") as f:
        models = json.load(f)["models"]
    assert [m["kind"] for m in models] == ["keras", "keras", "tflite"]
    assert models[0]["speedup_vs_first"] == 1.0
    assert all(m["latency_ms"] > 0 and 0 <= m["accuracy"] <= 1 for m in models)
    assert os.path.getsize(plot) > 0
    status, stdout, err = run_cli(["benchmark", tflite, "--runs", "1", "--warmup", "0"])
    assert status == 0, err  # synthetic input at the file's fixed sequence length


@pytest.mark.large
def test_killed_run_resumes_to_the_same_weights(tiny_run):
    """kill -9 mid-epoch, the same command again: it ends with the uninterrupted run's weights.

    Two subprocesses (about 60 s of CPU, hence `large`; `test_runner.py` has an in-process
    interruption test in the default suite). The reference is the fixture's uninterrupted
    in-process run (in-process and subprocess runs of this config give bitwise equal weights).
    Restoring the weights and optimizer alone is not enough: measured on this config's
    predecessor, leaving out the dropout RNG state gave a max weight difference of 1.7e-2, and
    restarting the data at the epoch's first batch 1.4e-2.
    """
    from kdistill.plots import read_history

    killed_dir = str(tiny_run["root"] / "killed")
    # Task distillation has 3 steps per epoch and backs up every 2: killed after step 5 (epoch
    # 2, batch 2), the last backup is from step 4 (mid-epoch).
    killed = distill_process(tiny_run["config"], killed_dir, kill_at="task:5")
    out, err = killed.communicate(timeout=900)
    assert killed.returncode == -9, err[-3000:]
    assert "[kdistill]" not in out and "━" not in out  # --quiet: no summaries, no bars
    with open(os.path.join(killed_dir, "backup", "task", "training_metadata.json")) as f:
        assert json.load(f) == {"epoch": 1, "batch": 1, "step": 4}
    with open(os.path.join(killed_dir, "run.json")) as f:
        assert json.load(f)["stages"] == {}
    assert not os.path.exists(os.path.join(killed_dir, "student.keras"))

    restarted = distill_process(tiny_run["config"], killed_dir)
    out, err = restarted.communicate(timeout=900)
    assert restarted.returncode == 0, err[-3000:]
    assert "task: resuming at step 4/6 (epoch 2, batch 2)" in out
    with open(os.path.join(killed_dir, "run.json")) as f:
        state = json.load(f)
    assert state["status"] == "finished" and state["stages"]["task"]["resumed_at_step"] == 4

    import keras
    import keras_hub  # noqa: F401 - registers the classes
    import numpy as np

    def weights(run_dir):
        return keras.saving.load_model(os.path.join(run_dir, "student.keras"),
                                       compile=False).get_weights()

    expected, actual = weights(tiny_run["out"]), weights(killed_dir)
    assert len(expected) == len(actual) > 0
    for a, b in zip(expected, actual):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)
    # Each task step is in the history once (step 5 of the killed process was dropped).
    steps = [r["step"] for r in read_history(os.path.join(killed_dir, "history.jsonl"))
             if r["stage"] == "task" and r["kind"] == "step"]
    assert steps == [1, 2, 3, 4, 5, 6]
