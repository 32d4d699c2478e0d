"""kdistill.runner: run directories, the restartable data stream, training state, resuming, the
demo's recipe keys on a tiny project."""

import json
import os
import random
import re

import keras
import numpy as np
import pytest

from kdistill import config as C
from kdistill import distribution, run_directory, runner, testing, training_state
from kdistill.data import Split, training_dataset
from kdistill.plots import read_history
from kdistill.report import format_summary

WORDS = ("good great fun best love fine bad dull worst boring hate poor the a film movie plot "
         "story it was is very not").split()
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]


def write_tiny_project(root, train=24, dev=16, test=16):
    """A tiny labelled text task on disk: CSV splits, unlabelled.csv (text only), vocab.txt and
    a tiny BERT teacher.keras."""
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
    with open(os.path.join(root, "unlabelled.csv"), "w") as f:
        f.write("text\n" + "".join(f"{' '.join(rng.choice(WORDS) for _ in range(5))}\n"
                                    for _ in range(12)))
    keras.utils.set_random_seed(1)
    teacher = testing.tiny_bert_classifier(
        vocabulary_size=len(VOCAB), num_layers=2, hidden_dim=16, num_heads=2,
        intermediate_dim=32, num_classes=2, max_sequence_length=16)
    teacher.save(os.path.join(root, "teacher.keras"))
    return root


def _split(n=10, labelled=True):
    inputs = {"token_ids": np.arange(n * 2).reshape(n, 2).astype("int32")}
    return Split(inputs, np.arange(n, dtype="int32") if labelled else None)


def test_training_stream_restarts_on_the_same_batches():
    split = _split(10)
    full, steps = training_dataset(split, 4, epochs=3, seed=7, trim=False)
    full = [y.tolist() for _, y in full.as_numpy_iterator()]
    assert steps == 3 and len(full) == 9
    assert [len(b) for b in full[:3]] == [4, 4, 2]  # the last batch of an epoch is smaller
    epochs = [sorted(sum(full[e * 3:(e + 1) * 3], [])) for e in range(3)]
    assert all(e == list(range(10)) for e in epochs)  # every example once per epoch
    assert full[0:3] != full[3:6]  # a new order each epoch
    for start in (1, 4, 8):
        tail, _ = training_dataset(split, 4, epochs=3, seed=7, start=start, trim=False)
        assert [y.tolist() for _, y in tail.as_numpy_iterator()] == full[start:]
    other, _ = training_dataset(split, 4, epochs=3, seed=8, trim=False)
    assert [y.tolist() for _, y in other.as_numpy_iterator()] != full
    unlabelled, _ = training_dataset(_split(10, labelled=False), 4, 1, seed=7, trim=False)
    assert sorted(int(t) for x in unlabelled.as_numpy_iterator() for t in x["token_ids"][:, 1]
                  ) == list(range(1, 20, 2))


def test_run_dir_new_resume_refuse_overwrite(tmp_path):
    out = str(tmp_path / "run")
    config = {"seed": 0, "output": out}
    assert not run_directory.prepare_run_dir(out, config)["resumed"]
    assert run_directory.prepare_run_dir(out, config)["resumed"]
    # A moved run directory still resumes (only `output` differs).
    assert run_directory.prepare_run_dir(out, dict(config, output="/elsewhere"))["resumed"]
    with pytest.raises(FileExistsError, match="different config .differs in: seed"):
        run_directory.prepare_run_dir(out, dict(config, seed=1))
    (tmp_path / "run" / "notes.txt").write_text("mine")
    (tmp_path / "run" / "student.keras").write_text("old")
    state = run_directory.prepare_run_dir(out, dict(config, seed=1), overwrite=True)
    assert not state["resumed"]
    assert sorted(os.listdir(out)) == ["config.json", "notes.txt", "run.json"]  # ours went
    with open(os.path.join(out, "run.json")) as f:
        finished = dict(json.load(f), status="finished")
    with open(os.path.join(out, "run.json"), "w") as f:
        json.dump(finished, f)
    with pytest.raises(FileExistsError, match="finished run; pass --overwrite"):
        run_directory.prepare_run_dir(out, dict(config, seed=1))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "data.csv").write_text("x")
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match="not a kdistill run directory"):
            run_directory.prepare_run_dir(str(foreign), config, overwrite=overwrite)
    assert (foreign / "data.csv").read_text() == "x"
    with pytest.raises(FileExistsError, match="is a file"):
        run_directory.prepare_run_dir(str(foreign / "data.csv"), config)


def test_training_state_keeps_optimizer_step_and_dropout_rng(tmp_path):
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(2)(keras.layers.Dropout(0.5, seed=3)(inputs))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="mse")
    x, y = np.ones((8, 4), "float32"), np.zeros((8, 2), "float32")
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    path = str(tmp_path / "state.weights.h5")
    training_state.save_training_state(model, path, step=2)
    saved = [v.numpy().copy() for v in training_state.seed_variables(model)]
    weights = [w.copy() for w in model.get_weights()]
    assert saved and training_state.saved_step(path) == 2
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)  # moves weights, optimizer and RNG on
    assert not np.array_equal(saved[0], training_state.seed_variables(model)[0].numpy())
    assert training_state.load_training_state(model, path) == 2
    np.testing.assert_array_equal(saved[0], training_state.seed_variables(model)[0].numpy())
    for a, b in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert int(model.optimizer.iterations.numpy()) == 2
    assert training_state.saved_step(str(tmp_path / "missing.weights.h5")) is None


def _scalar_tags(directory):
    """`run/tag` of every TensorBoard scalar under a stage's log directory (runs `train`,
    `validation`, as keras.callbacks.TensorBoard writes them)."""
    import glob

    import tensorflow as tf

    return {f"{os.path.basename(os.path.dirname(path))}/{value.tag}"
            for path in glob.glob(os.path.join(directory, "*", "events.out.tfevents.*"))
            for event in tf.compat.v1.train.summary_iterator(path)
            for value in event.summary.value}


class _Interrupt(keras.callbacks.Callback):
    def __init__(self, step):
        super().__init__()
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == self.step:
            raise KeyboardInterrupt(f"test interrupt after step {self.step}")


@pytest.mark.parametrize("name", ["general", "finetune"])
def test_stage_interrupted_mid_epoch_resumes_exactly(tmp_path, name):
    """`_run_stage` for general distillation (unlabelled) and fine-tuning, on tiny MLPs.

    Interrupted after step 3 (epoch 1 of 2, its last-but-one batch of 3; backups every 2
    steps), then started again: the weights equal an uninterrupted stage's, and starting once
    more on the complete backup trains nothing and restores them. The student has dropout, so
    the dropout RNG state must come back too. (`test_cli.py` kills a BERT run with SIGKILL in a
    subprocess, as a `large` test.)
    """
    config = C.RunConfig(data=C.DataConfig(batch_size=4, trim_padding=False), save_every=2,
                         log_every=1, jit_compile=False, metrics=["accuracy"])
    objectives = [C.ObjectiveSpec("preset", "logits_kd")]
    stage = (C.DistillStageConfig(epochs=2, learning_rate=1e-2, objectives=objectives)
             if name == "general" else C.StageConfig(epochs=2, learning_rate=1e-2))
    rng = np.random.default_rng(0)
    features = rng.normal(size=(12, 8)).astype("float32")
    labels = rng.integers(0, 3, size=12)
    train = Split({"features": features}, None if name == "general" else labels)
    validation = Split({"features": features[:8]}, labels[:8])
    teacher = testing.tiny_mlp(name="teacher")

    def mlp_with_dropout():
        inputs = keras.Input((8,), name="features")
        x = keras.layers.Dense(16, activation="relu",
                               kernel_initializer=keras.initializers.GlorotUniform(5))(inputs)
        x = keras.layers.Dropout(0.3, seed=7)(x)
        outputs = keras.layers.Dense(3, kernel_initializer=keras.initializers.GlorotUniform(6))(x)
        return keras.Model(inputs, outputs, name="student")

    def stage_run(out, student, interrupt_at=None):
        hook = {name: [_Interrupt(interrupt_at)]} if interrupt_at else None
        run = runner._Run(config, str(out), quiet=True, strategy=_default_strategy(),
                          stage_callbacks=hook)
        return runner._run_stage(run, 0, name, stage, teacher, student, train, validation)

    reference = mlp_with_dropout()
    summary = stage_run(tmp_path / "reference", reference)
    assert summary["steps"] == 6 and summary["resumed_at_step"] == 0
    with pytest.raises(KeyboardInterrupt):
        stage_run(tmp_path / "resumed", mlp_with_dropout(), interrupt_at=3)
    resumed = mlp_with_dropout()
    assert stage_run(tmp_path / "resumed", resumed)["resumed_at_step"] == 2
    again = mlp_with_dropout()
    assert stage_run(tmp_path / "resumed", again)["resumed_at_step"] == 6  # nothing to train
    for a, b, c in zip(reference.get_weights(), resumed.get_weights(), again.get_weights()):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(c, b)
    assert not np.allclose(reference.get_weights()[0],
                           mlp_with_dropout().get_weights()[0])  # it did train

    records = [r for r in read_history(str(tmp_path / "resumed" / "history.jsonl"))
               if r["kind"] == "step"]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]  # step 3 logged once
    terms = {"general": {"kd_loss", "loss"}, "finetune": {"loss"}}[name]
    assert set(records[0]["terms"]) == terms  # general: unlabelled, so pure KD
    tags = _scalar_tags(str(tmp_path / "reference" / "logs" / name))
    assert ({f"train/batch_{t}" for t in terms}
            | {"train/batch_learning_rate", "validation/epoch_loss"}) <= tags, tags
    if name == "general":
        assert "train/batch_logits_kd_temperature" in tags
    else:
        assert "train/batch_accuracy" in tags


def _default_strategy():
    import tensorflow as tf

    return tf.distribute.get_strategy()


@pytest.mark.large
def test_two_replicas_train_like_one(tmp_path, two_replicas):
    """The whole run under a 2-replica MirroredStrategy gives the one-device weights.

    Without gradient clipping: with `clipnorm: 1.0` the two runs end 6e-3 apart, because Keras
    clips each replica's gradient before the sum (the runner warns about it).
    """
    import keras_hub  # noqa: F401 - registers the classes

    project = write_tiny_project(str(tmp_path / "project"))
    path = os.path.join(project, "run.yaml")
    with open(path, "w") as f:
        f.write("teacher: {model: teacher.keras}\n"
                "student: {preset: test_tiny, dropout: 0.0}\n"
                "data: {train: train.csv, test: test.csv, vocabulary: vocab.txt, "
                "sequence_length: 16, batch_size: 8, trim_padding: false}\n"
                "stages:\n  task:\n    epochs: 2\n    learning_rate: 1.0e-2\n"
                "    objectives: [logits_kd, {type: HiddenStateKD}]\n"
                "save_every: 2\nlatency_runs: 1\njit_compile: false\nmetrics: [accuracy]\n")
    weights = []
    for name, strategy in (("one", None), ("two", two_replicas)):
        config = C.load_config(path, [(("output",), str(tmp_path / name), "--output")])
        runner.run(config, quiet=True, strategy=strategy)
        model = keras.saving.load_model(str(tmp_path / name / "student.keras"), compile=False)
        weights.append(model.get_weights())
    for a, b in zip(*weights):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)


def test_grouped_stream_batches_similar_lengths_and_restarts_on_the_same_batches():
    rng = np.random.default_rng(0)
    lengths = rng.integers(2, 16, size=37)
    mask = np.arange(16)[None, :] < lengths[:, None]
    split = Split({"token_ids": np.where(mask, 5, 0).astype("int32"), "padding_mask": mask},
                  np.arange(37, dtype="int32"))
    full, steps = training_dataset(split, 4, epochs=2, seed=3, group_by_length=True)
    batches = list(full.as_numpy_iterator())
    assert steps == 10 and len(batches) == 20
    for epoch in range(2):  # every example once per epoch
        ids = sorted(sum((y.tolist() for _, y in batches[epoch * 10:(epoch + 1) * 10]), []))
        assert ids == list(range(37))
    spread = [int(np.ptp(lengths[y])) for _, y in batches]
    assert np.mean(spread) < np.mean([np.ptp(lengths[rng.choice(37, 4)]) for _ in range(200)])
    for x, _ in batches:  # trimmed to a multiple of 8 covering the batch's longest
        used = int(x["padding_mask"].sum(axis=1).max())
        assert used <= x["token_ids"].shape[1] <= -(-used // 8) * 8
    tail, _ = training_dataset(split, 4, epochs=2, seed=3, start=13, group_by_length=True)
    assert [y.tolist() for _, y in tail.as_numpy_iterator()] == [
        y.tolist() for _, y in batches[13:]]


def _recipe_config(project, out, **changes):
    raw = {"teacher": {"model": os.path.join(project, "teacher.keras"),
                       "cache_dir": os.path.join(project, "cache")},
           "student": {"init": "prune", "num_layers": 1, "hidden_dim": 8, "intermediate_dim": 16,
                       "calibration_examples": 16, "vocabulary_min_count": 1},
           "data": {"train": os.path.join(project, "train.csv"),
                    "validation": os.path.join(project, "dev.csv"),
                    "test": os.path.join(project, "test.csv"),
                    "vocabulary": os.path.join(project, "vocab.txt"), "sequence_length": 16,
                    "batch_size": 8, "group_by_length": True, "augment_samples": 2,
                    "unlabelled": os.path.join(project, "unlabelled.csv"),
                    "transfer_examples": 8},
           "stages": {"task": {"epochs": 2, "learning_rate": 1e-2, "cache_teacher": True,
                               "restore_best": True,
                               "objectives": {"preset": "logits_kd", "alpha": 0.0}}},
           "latency_runs": 1, "jit_compile": False, "output": str(out),
           "targets": {"param_ratio": 1.0, "relative_accuracy": 100.0}}
    for key, value in changes.items():
        raw[key] = dict(raw[key], **value) if isinstance(value, dict) else value
    return C.config_from_dict(raw)


def test_the_demo_recipe_runs_on_a_users_files_and_reuses_its_caches(tmp_path):
    """Pruned student with a pruned vocabulary, augmentation, cached teacher logits, batches
    grouped by length and the best epoch kept, all from a user's CSV files and .keras teacher.
    76 transfer texts are asked for and 12 unlabelled ones exist: `augment_samples: fill` makes
    up the 64 missing with 2 variants of each of the 32 training examples."""
    project = write_tiny_project(str(tmp_path / "project"), train=32)
    for name in ("train.csv", "unlabelled.csv"):  # words only augmentation can bring in
        path = os.path.join(project, name)
        with open(path) as f:
            text = f.read()
        with open(path, "w") as f:
            f.write(re.sub(r"\b(love|hate|fun|dull)\b", "it", text))
    fill = {"augment_samples": "fill", "transfer_examples": 76}
    report = runner.run(_recipe_config(project, tmp_path / "one", data=fill), quiet=True)
    task = report["stages"]["task"]
    augmented = int(report["steps"][[s["step"] for s in report["steps"]].index(
        "augmentation")]["note"].split(" examples")[0])
    assert 32 < augmented <= 32 * 3  # the originals and up to 2 new variants of each
    assert task["examples"] == augmented + 12  # + all 12 teacher-labelled texts
    assert task["best_val_accuracy"] >= 0.0 and task["cpu_seconds"] >= 0.0
    steps = {s["step"]: s["note"] for s in report["steps"]}
    assert "2 variants each" in steps["augmentation"] and "kept in" in steps["augmentation"]
    assert "cached in" in steps["teacher logits"]
    assert "init prune, vocabulary" in steps["student"]
    student = keras.saving.load_model(report["student_path"], compile=False)
    assert student.backbone.hidden_dim == 8 and student.backbone.num_layers == 1
    assert student.backbone.vocabulary_size <= len(VOCAB) == student.input_vocabulary_size
    kept = set(student.vocabulary_map.kept_ids.tolist())
    with np.load(re.search(r"kept in (\S+)\)", steps["augmentation"]).group(1)) as f:
        augmented_ids = set(np.unique(f["token_ids"]).tolist())
    new_words = {VOCAB.index(w) for w in ("love", "hate", "fun", "dull")} & augmented_ids
    assert new_words and augmented_ids <= kept  # the vocabulary counts the augmented text
    summary = report["summary"]
    assert summary["targets"]["param_ratio"]["ok"]
    assert not summary["targets"]["relative_accuracy"]["ok"]  # 100x the teacher: missed
    assert summary["relative_validation_accuracy"] is not None
    assert "MISSED" in format_summary(report)
    assert report["teacher"]["validation_accuracy"] is not None

    again = runner.run(_recipe_config(project, tmp_path / "two", data=fill), quiet=True)
    steps = {s["step"]: s["note"] for s in again["steps"]}
    assert "reused" in steps["augmentation"] and "reused" in steps["teacher logits"]
    assert again["stages"]["task"]["examples"] == task["examples"]
    a = keras.saving.load_model(again["student_path"], compile=False).get_weights()
    for x, y in zip(student.get_weights(), a):  # the same run: the same student
        np.testing.assert_allclose(x, y, atol=1e-5)


def test_teacher_fine_tuning_reaches_its_minimum_steps_and_keeps_its_best_epoch(tmp_path):
    """One epoch of 24 examples is 3 steps: `fine_tune_min_steps: 10` raises it to 4 epochs."""
    project = write_tiny_project(str(tmp_path / "project"))
    config = _recipe_config(project, tmp_path / "run", data={"augment_samples": 0},
                            teacher={"fine_tune_epochs": 1, "fine_tune_min_steps": 10},
                            stages={"task": {"epochs": 1, "cache_teacher": True}})
    report = runner.run(config, quiet=True)
    note = {s["step"]: s["note"] for s in report["steps"]}["teacher fine-tuning"]
    epochs, steps = map(int, re.search(r"(\d+) epochs of (\d+) steps", note).groups())
    assert epochs * steps >= 10 > (epochs - 1) * steps and epochs > 1, note
    assert re.search(r"best epoch [1-9]\d* kept \(val_accuracy ", note), note
    cache = os.path.join(project, "cache")
    meta = [json.load(open(os.path.join(cache, f))) for f in os.listdir(cache)
            if f.endswith(".json")]
    assert [(m["epochs"], len(m["history"]["val_accuracy"]), m["restore_best"]) for m in meta
            ] == [(epochs, epochs, True)]


def test_stage_min_steps_raises_the_epochs_of_a_small_split_and_of_its_baseline(tmp_path):
    """The task stage reads 24 examples + 8 transfer texts (4 batches of 8), the labels-only
    baseline the 24 alone (3 batches): `min_steps: 10` gives them 3 and 4 epochs. The 12
    unlabelled texts cover the 8 asked for, so `augment_samples: fill` augments nothing."""
    project = write_tiny_project(str(tmp_path / "project"))
    config = _recipe_config(project, tmp_path / "run", data={"augment_samples": "fill"},
                            labels_only=True,
                            stages={"task": {"epochs": 1, "min_steps": 10, "learning_rate": 1e-2,
                                             "cache_teacher": True}})
    report = runner.run(config, quiet=True)
    stages = report["stages"]
    assert "augmentation" not in {s["step"] for s in report["steps"]}
    assert [(stages[n]["epochs"], stages[n]["steps"]) for n in ("task", "labels_only_task")
            ] == [(3, 12), (4, 12)]
    records = [r for r in read_history(str(tmp_path / "run" / "history.jsonl"))
               if r["kind"] == "epoch"]
    assert sorted({(r["stage"], r["epoch"]) for r in records}) == (
        [("labels_only_task", e) for e in range(4)] + [("task", e) for e in range(3)])


def test_restore_best_leaves_the_student_of_the_best_epoch(tmp_path):
    project = write_tiny_project(str(tmp_path / "project"))
    # A learning rate this large wrecks the student's last epoch: the best one is kept.
    config = _recipe_config(project, tmp_path / "run", data={"augment_samples": 0},
                            stages={"task": {"epochs": 2, "learning_rate": 50.0,
                                             "cache_teacher": True, "restore_best": True}})
    report = runner.run(config, quiet=True)
    before = report["stages"]["task"]["best_val_accuracy"]
    assert report["student"]["validation_accuracy"] == pytest.approx(before)


def test_labels_only_baseline_is_the_same_student_on_the_same_batches(tmp_path):
    """`labels_only: true` trains the same student from the same initial weights on the same
    batches with the hard labels alone: exactly what a distillation stage whose only weight is
    on the labels (alpha 1) gives, with no teacher call."""
    project = write_tiny_project(str(tmp_path / "project"))
    config = _recipe_config(
        project, tmp_path / "run", labels_only=True,
        data={"augment_samples": 0, "transfer_examples": 0},
        stages={"task": {"epochs": 2, "learning_rate": 1e-2, "cache_teacher": True,
                         "restore_best": False,
                         "objectives": {"preset": "logits_kd", "alpha": 1.0}}},
        targets={"gain_over_labels_only": 1.5})
    report = runner.run(config, quiet=True)
    stages = report["stages"]
    assert stages["labels_only_task"]["steps"] == stages["task"]["steps"]
    base = report["labels_only"]
    assert base["params"] == report["student"]["params"]
    assert base["accuracy"] is not None and base["validation_accuracy"] is not None
    summary = report["summary"]
    gains = (summary["gain_test"], summary["gain_validation"])
    assert summary["gain_over_labels_only"] == pytest.approx(sum(gains) / 2)
    assert "gain_over_labels_only" in summary["targets"]
    assert "distillation bought" in format_summary(report)
    student = keras.saving.load_model(report["student_path"], compile=False)
    baseline = type(student).from_config(student.get_config())
    training_state.load_training_state(
        baseline, str(tmp_path / "run" / "stages" / "labels_only_task.weights.h5"))
    for a, b in zip(student.get_weights(), baseline.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-5)
    training_state.load_training_state(
        baseline, str(tmp_path / "run" / "stages" / "initial.weights.h5"))
    assert any(not np.allclose(a, b) for a, b in zip(student.get_weights(),
                                                     baseline.get_weights()))  # it trained


def test_labels_only_targets_need_the_baseline(tmp_path):
    project = write_tiny_project(str(tmp_path / "project"))
    with pytest.raises(C.ConfigError, match="targets.gain_over_labels_only.*labels_only: true"):
        _recipe_config(project, tmp_path / "run", targets={"gain_over_labels_only": 1.0})


def test_xla_under_a_cpu_strategy_is_refused_before_anything_runs(tmp_path, two_replicas):
    """TF's XLA step fails deep in the replicas' gradient sum ("AddN ... bool") on CPUs: the
    runner refuses `jit_compile: true` there with the key and the fix, and writes nothing."""
    project = write_tiny_project(str(tmp_path / "project"))
    config = _recipe_config(project, tmp_path / "run", jit_compile=True)
    with pytest.raises(ValueError, match="jit_compile: true with 2 replicas on CPUs alone:.*"
                       "Set jit_compile to auto or false"):
        runner.run(config, quiet=True, strategy=two_replicas)
    assert not os.path.exists(tmp_path / "run")
    distribution.check_jit_compile(True, _default_strategy())  # one device: XLA works
    distribution.check_jit_compile("auto", two_replicas)
