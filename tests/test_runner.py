"""kdistill.runner: run directories, the restartable data stream, training state, resuming."""

import json
import os
import random
import subprocess
import sys

import keras
import numpy as np
import pytest

from kdistill import runner, testing

WORDS = ("good great fun best love fine bad dull worst boring hate poor the a film movie plot "
         "story it was is very not").split()
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]


def write_tiny_project(root, train=24, dev=16, test=16):
    """A tiny labelled text task on disk: CSV splits, vocab.txt and a tiny BERT teacher.keras."""
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "vocab.txt"), "w") as f:
        f.write("\n".join(VOCAB) + "\n")
    rng = random.Random(0)
    for name, n in (("train", train), ("dev", dev), ("test", test)):
        with open(os.path.join(root, f"{name}.csv"), "w") as f:
            f.write("text,label\n")
            for i in range(n):
                words = [rng.choice(WORDS[12:]) for _ in range(rng.randint(2, 6))]
                words.append(rng.choice(WORDS[:6] if i % 2 else WORDS[6:12]))
                rng.shuffle(words)
                f.write(f"{' '.join(words)},{'pos' if i % 2 else 'neg'}\n")
    keras.utils.set_random_seed(1)
    teacher = testing.tiny_bert_classifier(
        vocabulary_size=len(VOCAB), num_layers=2, hidden_dim=16, num_heads=2,
        intermediate_dim=32, num_classes=2, max_sequence_length=16)
    teacher.save(os.path.join(root, "teacher.keras"))
    return root


TINY_CONFIG = """\
teacher: {model: teacher.keras}
student: {preset: test_tiny, dropout: 0.1}
data:
  train: train.csv
  validation: dev.csv
  test: test.csv
  vocabulary: vocab.txt
  sequence_length: 16
  batch_size: 8
  trim_padding: false
stages:
  task:
    epochs: 3
    learning_rate: 1.0e-2
    objectives: [logits_kd, {type: HiddenStateKD}]
  finetune: {epochs: 1, learning_rate: 1.0e-3}
save_every: 2
log_every: 1
latency_runs: 1
jit_compile: false
deterministic: true
metrics: [accuracy]
"""


def _split(n=10, labelled=True):
    inputs = {"token_ids": np.arange(n * 2).reshape(n, 2).astype("int32")}
    return runner.Split(inputs, np.arange(n, dtype="int32") if labelled else None)


def test_training_stream_restarts_on_the_same_batches():
    split = _split(10)
    full, steps = runner.training_dataset(split, 4, epochs=3, seed=7, trim=False)
    full = [y.tolist() for _, y in full.as_numpy_iterator()]
    assert steps == 3 and len(full) == 9
    assert [len(b) for b in full[:3]] == [4, 4, 2]  # the last batch of an epoch is smaller
    epochs = [sorted(sum(full[e * 3:(e + 1) * 3], [])) for e in range(3)]
    assert all(e == list(range(10)) for e in epochs)  # every example once per epoch
    assert full[0:3] != full[3:6]  # a new order each epoch
    for start in (1, 4, 8):
        tail, _ = runner.training_dataset(split, 4, epochs=3, seed=7, start=start, trim=False)
        assert [y.tolist() for _, y in tail.as_numpy_iterator()] == full[start:]
    other, _ = runner.training_dataset(split, 4, epochs=3, seed=8, trim=False)
    assert [y.tolist() for _, y in other.as_numpy_iterator()] != full
    unlabelled, _ = runner.training_dataset(_split(10, labelled=False), 4, 1, seed=7, trim=False)
    assert sorted(int(t) for x in unlabelled.as_numpy_iterator() for t in x["token_ids"][:, 1]
                  ) == list(range(1, 20, 2))


def test_run_dir_new_resume_refuse_overwrite(tmp_path):
    out = str(tmp_path / "run")
    config = {"seed": 0, "output": out}
    assert not runner.prepare_run_dir(out, config)["resumed"]
    assert runner.prepare_run_dir(out, config)["resumed"]
    # A moved run directory still resumes (only `output` differs).
    assert runner.prepare_run_dir(out, dict(config, output="/elsewhere"))["resumed"]
    with pytest.raises(FileExistsError, match="different config .differs in: seed"):
        runner.prepare_run_dir(out, dict(config, seed=1))
    (tmp_path / "run" / "notes.txt").write_text("mine")
    (tmp_path / "run" / "student.keras").write_text("old")
    state = runner.prepare_run_dir(out, dict(config, seed=1), overwrite=True)
    assert not state["resumed"]
    assert sorted(os.listdir(out)) == ["config.json", "notes.txt", "run.json"]  # ours went
    with open(os.path.join(out, "run.json")) as f:
        finished = dict(json.load(f), status="finished")
    with open(os.path.join(out, "run.json"), "w") as f:
        json.dump(finished, f)
    with pytest.raises(FileExistsError, match="finished run; pass --overwrite"):
        runner.prepare_run_dir(out, dict(config, seed=1))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "data.csv").write_text("x")
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match="not a kdistill run directory"):
            runner.prepare_run_dir(str(foreign), config, overwrite=overwrite)
    assert (foreign / "data.csv").read_text() == "x"
    with pytest.raises(FileExistsError, match="is a file"):
        runner.prepare_run_dir(str(foreign / "data.csv"), config)


def test_training_state_keeps_optimizer_step_and_dropout_rng(tmp_path):
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(2)(keras.layers.Dropout(0.5, seed=3)(inputs))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="mse")
    x, y = np.ones((8, 4), "float32"), np.zeros((8, 2), "float32")
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    path = str(tmp_path / "state.weights.h5")
    runner.save_training_state(model, path, step=2)
    saved = [v.numpy().copy() for v in runner._seed_variables(model)]
    weights = [w.copy() for w in model.get_weights()]
    assert saved and runner.saved_step(path) == 2
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)  # moves weights, optimizer and RNG on
    assert not np.array_equal(saved[0], runner._seed_variables(model)[0].numpy())
    assert runner.load_training_state(model, path) == 2
    np.testing.assert_array_equal(saved[0], runner._seed_variables(model)[0].numpy())
    for a, b in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert int(model.optimizer.iterations.numpy()) == 2
    assert runner.saved_step(str(tmp_path / "missing.weights.h5")) is None


def _distill(project, out, env_extra=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **(env_extra or {}))
    return subprocess.Popen(
        [sys.executable, "-m", "kdistill.cli", "distill", os.path.join(project, "run.yaml"),
         "--output", out, "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _student_weights(path):
    import keras_hub  # noqa: F401 - registers the classes

    return keras.saving.load_model(path, compile=False).get_weights()


def test_killed_run_resumes_to_the_same_weights(tmp_path):
    """kill -9 mid-epoch (after the backup at step 4, during step 5), restart, same weights.

    Two processes run side by side: an uninterrupted run and one that the test hook
    SIGKILLs after optimizer step 5 of task distillation (epoch 2 of 3, its second batch; the
    last backup is from step 4). The same command then resumes the killed run, which goes on
    through the rest of task distillation and the fine-tuning stage. The student has dropout,
    so this also needs the dropout RNG state restored.
    """
    project = write_tiny_project(str(tmp_path / "project"))
    with open(os.path.join(project, "run.yaml"), "w") as f:
        f.write(TINY_CONFIG)
    reference_dir, resumed_dir = str(tmp_path / "reference"), str(tmp_path / "resumed")
    reference = _distill(project, reference_dir)
    killed = _distill(project, resumed_dir, {runner.KILL_ENV: "task:5"})
    out, err = reference.communicate(timeout=600)
    assert reference.returncode == 0, err[-3000:]
    assert "[kdistill]" not in out and "━" not in out  # --quiet: no summaries, no bars
    killed.communicate(timeout=600)
    assert killed.returncode == -9
    with open(os.path.join(resumed_dir, "backup", "task", "training_metadata.json")) as f:
        assert json.load(f) == {"epoch": 1, "batch": 1, "step": 4}
    with open(os.path.join(resumed_dir, "run.json")) as f:
        assert json.load(f)["status"] == "running"
    assert not os.path.exists(os.path.join(resumed_dir, "student.keras"))

    restarted = subprocess.run(
        [sys.executable, "-m", "kdistill.cli", "distill", os.path.join(project, "run.yaml"),
         "--output", resumed_dir], capture_output=True, text=True, timeout=600,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    assert "task: resuming at step 4/9 (epoch 2, batch 2)" in restarted.stdout
    with open(os.path.join(resumed_dir, "run.json")) as f:
        state = json.load(f)
    assert state["status"] == "finished"
    assert state["stages"]["task"]["resumed_at_step"] == 4
    assert not os.path.exists(os.path.join(resumed_dir, "backup", "task"))

    expected = _student_weights(os.path.join(reference_dir, "student.keras"))
    actual = _student_weights(os.path.join(resumed_dir, "student.keras"))
    assert len(expected) == len(actual)
    for a, b in zip(expected, actual):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)
    # The history of the resumed run has every step once (the killed step 5 was dropped).
    from kdistill.plots import read_history

    steps = [r["step"] for r in read_history(os.path.join(resumed_dir, "history.jsonl"))
             if r["stage"] == "task" and r["kind"] == "step"]
    assert steps == list(range(1, 10))
