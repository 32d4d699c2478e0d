"""kdistill.seeds: one recipe over several seeds, mean ± std written to seeds.json."""

import json
import os

from kdistill import seeds as seeds_lib
from tests.test_cli import run_cli
from tests.test_runner import write_tiny_project

CONFIG = """\
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
    epochs: 1
    learning_rate: 1e-2
    objectives: {preset: logits_kd, temperature: 2.0, alpha: 0.5}
labels_only: true
latency_runs: 1
jit_compile: false
targets: {gain_over_labels_only: 100.0}
"""


def test_seeds_run_each_seed_and_write_the_spread(tmp_path):
    project = write_tiny_project(str(tmp_path / "project"))
    config = os.path.join(project, "run.yaml")
    with open(config, "w") as f:
        f.write(CONFIG)
    out = str(tmp_path / "runs")
    status, stdout, stderr = run_cli(["distill", config, "--output", out, "--seeds", "0,1"])
    assert status == 0, stderr[-3000:]
    with open(os.path.join(out, seeds_lib.SEEDS_FILE)) as f:
        summary = json.load(f)
    assert summary["seeds"] == [0, 1] and summary["reused"] == []
    reports = {}
    for seed in (0, 1):
        with open(os.path.join(out, f"seed_{seed}", "report.json")) as f:
            reports[seed] = json.load(f)
        assert reports[seed]["config"]["seed"] == seed
    for entry in ("teacher", "student", "labels_only"):
        for split in ("accuracy", "validation_accuracy"):
            values = [reports[s][entry][split] for s in (0, 1)]
            assert summary[entry][split]["values"] == values
            assert abs(summary[entry][split]["mean"] - sum(values) / 2) < 1e-12
    # Different seeds give different students (initial order, dropout): the spread is real.
    assert reports[0]["student"]["loss"] != reports[1]["student"]["loss"]
    gain = summary["headline"]["gain_over_labels_only"]
    assert gain["values"] == [reports[s]["summary"]["gain_over_labels_only"] for s in (0, 1)]
    assert summary["targets"]["gain_over_labels_only"] == {
        "target": 100.0, "value": gain["mean"], "ok": False}  # checked on the mean
    assert "2 seeds (0, 1): mean ± std" in stdout
    assert "target gain_over_labels_only >= 100.0" in stdout and "MISSED" in stdout

    # Again: both finished runs are read back, not trained again.
    status, stdout, stderr = run_cli(["distill", config, "--output", out, "--seeds", "0,1"])
    assert status == 0, stderr[-3000:]
    assert "seed 0: finished run reused" in stdout
    with open(os.path.join(out, seeds_lib.SEEDS_FILE)) as f:
        assert json.load(f)["reused"] == [0, 1]


def test_bad_seeds_are_refused_before_anything_runs(tmp_path):
    project = write_tiny_project(str(tmp_path / "project"))
    config = os.path.join(project, "run.yaml")
    with open(config, "w") as f:
        f.write(CONFIG)
    out = str(tmp_path / "runs")
    status, _, err = run_cli(["distill", config, "--output", out, "--seeds", "0,x"])
    assert status == 2 and "--seeds 0,x: give comma-separated integers" in err
    status, _, err = run_cli(["distill", config, "--output", out, "--seeds", "0,1",
                              "--seed", "3"])
    assert status == 2 and "--seeds 0,1 sets the seed of each run; remove --seed" in err
    assert not os.path.exists(out)
