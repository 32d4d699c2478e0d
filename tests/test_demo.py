"""`kdistill demo`: a door into the one runner with a packaged config, and nothing else.

The recipe the demo's config names (pruned student and vocabulary, cached teacher logits,
augmentation, batches grouped by length, best epoch) is run on a tiny project in
tests/test_runner.py; `make demo` runs the real thing.
"""

import json
import os

import pytest
import yaml

from kdistill import cli, configs, run_directory
from kdistill import runner as runner_lib
from kdistill.config import load_config


@pytest.fixture
def captured_runs(monkeypatch):
    """Replaces the runner: records each config the CLI would run, trains nothing."""
    calls = []

    def fake_run(config, overwrite=False, quiet=False, **kwargs):
        calls.append({"config": config.to_dict(), "overwrite": overwrite})
        return {}

    monkeypatch.setattr(runner_lib, "run", fake_run)
    return calls


@pytest.mark.parametrize("name", configs.names())
def test_every_packaged_config_is_valid_and_runs_the_recipe(name, tmp_path):
    config = load_config(configs.path(name), [(("output",), str(tmp_path), "--output")])
    assert config.teacher.model == "minilm" and config.data.dataset == "rotten_tomatoes"
    assert config.student.init == "prune" and config.student.vocabulary_min_count >= 1
    assert config.stages.task.cache_teacher and config.stages.task.restore_best
    assert config.data.group_by_length
    assert config.targets.param_ratio == 5


def test_the_demo_recipe_distils_on_transfer_text_beside_its_labels_only_baseline():
    config = load_config(configs.path("demo"), [(("output",), "out", "--output")])
    assert config.data.unlabelled == "movie_reviews" and config.data.transfer_examples > 0
    assert config.labels_only and config.targets.gain_over_labels_only == 1.5
    assert config.targets.relative_accuracy == 0.98 and config.targets.speedup == 10


@pytest.mark.parametrize("flags, name", [([], "demo"), (["--quick"], "demo_quick"),
                                         (["--augment"], "demo_augment")])
def test_print_config_then_distill_is_the_demo(flags, name, tmp_path, capsys, captured_runs,
                                               monkeypatch):
    monkeypatch.chdir(tmp_path)
    extra = ["--seed", "3", "--cache-dir", "teachers", "--set", "stages.task.epochs=1"]
    assert cli.main(["demo", *flags, *extra, "--print-config"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(configs.text(name).splitlines()[0])  # the packaged file, comments
    (tmp_path / "demo.yaml").write_text(printed)
    assert cli.main(["demo", *flags, *extra]) == 0
    assert cli.main(["distill", "demo.yaml"]) == 0
    demo_run, distill_run = captured_runs
    assert demo_run["config"] == distill_run["config"]
    config = demo_run["config"]
    assert config["seed"] == 3 and config["stages"]["task"]["epochs"] == 1
    assert config["output"] == str(tmp_path / "saved_models" / "demo")
    assert config["teacher"]["cache_dir"] == str(tmp_path / "teachers")
    assert yaml.safe_load(printed)["data"] == yaml.safe_load(configs.text(name))["data"]


def test_the_demo_replaces_its_own_finished_run_and_refuses_anything_else(tmp_path, capsys,
                                                                          captured_runs):
    out = tmp_path / "out"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"kind": run_directory.RUN_KIND, "status": "running"}))
    assert cli.main(["demo", "--output", str(out)]) == 0  # unfinished: resumed, not replaced
    (out / "run.json").write_text(json.dumps({"kind": run_directory.RUN_KIND,
                                              "status": "finished"}))
    assert cli.main(["demo", "--output", str(out)]) == 0
    assert [c["overwrite"] for c in captured_runs] == [False, True]


def test_cli_demo_refuses_a_foreign_output_dir_before_any_work(tmp_path, capsys):
    (tmp_path / "precious.txt").write_text("x")
    assert cli.main(["demo", "--quick", "--output", str(tmp_path)]) == 2
    assert "not a kdistill run directory" in capsys.readouterr().err
    assert os.listdir(tmp_path) == ["precious.txt"]


def test_print_config_refuses_an_override_it_cannot_write(capsys):
    assert cli.main(["demo", "--set", "stages.task.objectives.alpha=0.1", "--print-config"]) == 2
    assert "cannot write --set stages.task.objectives.alpha=0.1" in capsys.readouterr().err


def test_cli_demo_help(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["demo", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--quick", "--augment", "--output", "--cache-dir", "--print-config", "--set"):
        assert flag in out


@pytest.mark.parametrize("argv", [["demo", "--bogus"], ["nope"], ["demo", "--seed", "x"],
                                  ["demo", "--quick", "--augment"]])
def test_cli_bad_arguments_fail_clearly(argv, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_cli_without_command_prints_help(capsys):
    assert cli.main([]) == 2
    assert "demo" in capsys.readouterr().err
