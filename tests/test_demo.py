"""kdistill.demo / kdistill.cli: the demo's plumbing on a tiny teacher, the CLI's arguments."""

import json
import os

import keras
import keras_hub
import pytest

from kdistill import cli, demo, testing

WORDS = ("the a an and of to is it this that film movie story good great bad best worst fun "
         "funny dull boring not no too very well its with as but by for from has in one so "
         "what who all more most than like love hate characters performance").split()
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]


def tiny_teacher(config):
    keras.utils.set_random_seed(1)  # same initial weights -> same teacher cache key
    tokenizer = keras_hub.tokenizers.BertTokenizer(vocabulary=VOCAB, lowercase=True)
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(
        tokenizer, sequence_length=config.sequence_length)
    teacher = testing.tiny_bert_classifier(
        vocabulary_size=len(VOCAB), num_layers=2, hidden_dim=16, num_heads=2,
        intermediate_dim=32, num_classes=2, max_sequence_length=config.sequence_length)
    return teacher, preprocessor


def tiny_config(**changes):
    base = dict(sequence_length=16, batch_size=16, teacher_epochs=1, teacher_learning_rate=1e-3,
                max_teacher_examples=64,
                max_train_examples=48, max_general_examples=48, max_validation_examples=32,
                max_test_examples=32,
                student=dict(num_layers=1, hidden_dim=8, num_heads=2, intermediate_dim=16),
                task_epochs=1, finetune_epochs=0, general_epochs=1, vocabulary_min_count=1,
                formats=("tflite_dynamic_int8",), latency_runs=2, num_calibration_batches=4)
    base.update(changes)
    return demo.DemoConfig(**base)


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    out = root / "out"
    report = demo.run_demo(output_dir=str(out), config=tiny_config(), cache_dir=str(root / "c"),
                           teacher_fn=tiny_teacher, verbose=0)
    return out, report, root


def test_run_demo_writes_report_and_plot(tiny_demo):
    out, report, _ = tiny_demo
    with open(out / "report.json") as f:
        saved = json.load(f)
    assert saved["kind"] == demo.DEMO_KIND
    for who in ("teacher", "student"):
        assert 0.0 <= saved[who]["accuracy"] <= 1.0
        assert saved[who]["params"] > 0
    assert saved["student"]["params"] < saved["teacher"]["params"]
    entry = saved["artifacts"]["tflite_dynamic_int8"]
    for key in ("accuracy", "top1_agreement", "size_bytes", "latency_ms"):
        assert entry[key] is not None, key
    summary = saved["summary"]
    for key in ("teacher_test_accuracy", "student_test_accuracy", "relative_accuracy",
                "param_ratio", "speedup_vs_keras_teacher", "edge_latency_ms"):
        assert summary[key] is not None, key
    assert summary["edge_artifact"] == "tflite_dynamic_int8"
    assert [s["stage"] for s in saved["stages"]] == [
        "teacher", "student init", "general distill", "teacher logits", "task distill", "export"]
    assert "pruned from the teacher" in saved["stages"][1]["note"]
    assert saved["config"]["prune"] is True
    # The student embeds only the word pieces of the training text, read through the teacher's ids.
    student = keras.saving.load_model(out / "student.keras")
    assert student.input_vocabulary_size == len(VOCAB)
    assert student.backbone.vocabulary_size <= len(VOCAB)
    assert student.vocabulary_map.kept_ids[0] == 0  # [PAD] is always kept
    assert (out / "report.png").stat().st_size > 0
    assert (out / "student.keras").exists()
    assert "Demo summary" in demo.format_summary(report)


def test_run_demo_reuses_teacher_and_replaces_its_own_output(tiny_demo):
    out, first, root = tiny_demo
    config = tiny_config(general_epochs=0, task_epochs=0, finetune_epochs=1,
                         formats=("tflite_float32",), prune=False)  # a fresh SVD student
    report = demo.run_demo(output_dir=str(out), config=config, cache_dir=str(root / "c"),
                           teacher_fn=tiny_teacher, verbose=0)
    assert report["teacher_cache"]["from_cache"] and not first["teacher_cache"]["from_cache"]
    assert report["teacher_cache"]["key"] == first["teacher_cache"]["key"]
    assert sorted(report["artifacts"]) == ["tflite_float32"]
    assert not (out / "model_dynamic_int8.tflite").exists()  # the previous demo's files went
    assert [s["stage"] for s in report["stages"]] == ["teacher", "student init",
                                                     "student fine-tune", "export"]
    assert report["stages"][1]["note"] == "embeddings: svd"


def test_output_dir_guard(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a previous demo"):
        demo.prepare_output_dir(str(foreign))
    assert (foreign / "notes.txt").exists()
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(FileExistsError, match="is a file"):
        demo.prepare_output_dir(str(a_file))
    previous = tmp_path / "demo"
    previous.mkdir()
    (previous / "report.json").write_text(json.dumps({"kind": demo.DEMO_KIND}))
    (previous / "model_float32.tflite").write_bytes(b"x")
    (previous / "user.txt").write_text("not ours")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        demo.prepare_output_dir(str(previous), overwrite=False)
    demo.prepare_output_dir(str(previous))
    assert sorted(os.listdir(previous)) == ["user.txt"]
    demo.prepare_output_dir(str(tmp_path / "new"))  # missing: fine


def test_cli_demo_help(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["demo", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--quick", "--augment", "--output", "--cache-dir"):
        assert flag in out


@pytest.mark.parametrize("argv", [["demo", "--bogus"], ["nope"], ["demo", "--seed", "x"]])
def test_cli_bad_arguments_fail_clearly(argv, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_cli_without_command_prints_help(capsys):
    assert cli.main([]) == 2
    assert "demo" in capsys.readouterr().err


def test_cli_demo_refuses_foreign_output_dir(tmp_path, capsys):
    (tmp_path / "precious.txt").write_text("x")
    assert cli.main(["demo", "--quick", "--output", str(tmp_path)]) == 2
    assert "refusing" in capsys.readouterr().err
    assert (tmp_path / "precious.txt").exists()


def test_teacher_outputs_are_cached_next_to_the_teacher_and_checked(tmp_path):
    import tensorflow as tf

    from kdistill import data as kdata

    config = tiny_config()
    teacher, preprocessor = tiny_teacher(config)
    texts = tf.data.Dataset.from_tensor_slices(
        (["a good film", "the worst movie", "not funny at all", "great fun"], [1, 0, 0, 1]))

    def tokenize(ds, batch_size=2):
        return kdata.tokenize_dataset(ds, preprocessor, batch_size=batch_size)

    directory = str(tmp_path / "outputs")
    assert demo.teacher_outputs(teacher, texts, tokenize, directory) == (directory, False)
    assert demo.teacher_outputs(teacher, texts, tokenize, directory) == (directory, True)
    cached = [t["logits"] for _, _, t in kdata.load_teacher_cache(directory, 4)]
    expected = teacher(next(iter(tokenize(texts, batch_size=4)))[0])
    # Bucketed by length: the cache keeps the teacher's order within buckets, so compare sets.
    assert sorted(map(tuple, keras.ops.convert_to_numpy(cached[0]).round(5).tolist())) == sorted(
        map(tuple, keras.ops.convert_to_numpy(expected).round(5).tolist()))

    other, _ = tiny_teacher(config)  # same architecture, different weights
    other.set_weights([w * 0.5 for w in other.get_weights()])
    with pytest.warns(UserWarning, match="not usable"):
        assert demo.teacher_outputs(other, texts, tokenize, directory) == (directory, False)
    assert demo.teacher_outputs(other, texts, tokenize, directory) == (directory, True)



def test_outputs_cache_dir_depends_on_what_the_logits_depend_on():
    from types import SimpleNamespace

    result = SimpleNamespace(key="k1", path="/c/teacher-k1.keras")
    base = demo.outputs_cache_dir(result, demo.DemoConfig.full(), 0)
    assert base.startswith("/c/teacher-k1.outputs/logits-")
    assert demo.outputs_cache_dir(result, demo.DemoConfig.full(), 1) == base  # no augmentation
    for changed in (demo.outputs_cache_dir(result, demo.DemoConfig.full(augment_samples=2), 0),
                    demo.outputs_cache_dir(result, demo.DemoConfig.quick(), 0),
                    demo.outputs_cache_dir(SimpleNamespace(key="k2", path=result.path),
                                           demo.DemoConfig.full(), 0)):
        assert changed != base
    assert demo.outputs_cache_dir(SimpleNamespace(key="k", path=None),
                                  demo.DemoConfig.full(), 0) is None


def test_intermediate_objectives_fit_students_with_other_head_counts_and_widths():
    # 12 heads x 32 vs a pruned 4 x 32 (or 5 x 32) student: 12 relation heads would not divide
    # the student's value width; MiniLMKD regroups into the largest count dividing both.
    from kdistill.distiller import Distiller

    teacher = testing.tiny_bert_classifier(hidden_dim=24, num_heads=6, intermediate_dim=32,
                                           num_classes=2)
    student = testing.tiny_bert_classifier(hidden_dim=8, num_heads=2, num_layers=1,
                                           num_classes=2)
    objectives = demo.intermediate_objectives(teacher, student, demo.DemoConfig.full())
    relation = [o for o in objectives if o.name.startswith("minilm")]
    assert len(relation) == 1
    x, y = testing.token_batch(batch_size=4, sequence_length=8, num_classes=2)
    distiller = Distiller(teacher, student, objectives=objectives)
    assert relation[0]._relation_heads == 4
    distiller.compile(optimizer="adam")
    history = distiller.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert all(keras.ops.isfinite(v[-1]) for v in history.history.values())


def test_grouped_by_length_keeps_every_cached_example_and_counts_its_batches(tmp_path):
    import numpy as np
    import tensorflow as tf

    from kdistill import data as kdata

    teacher = testing.tiny_bert_classifier(num_classes=2)
    directory = str(tmp_path / "cache")
    kdata.cache_teacher_outputs(
        teacher, testing.token_dataset(num_examples=37, batch_size=8, num_classes=2,
                                       sequence_length=16), directory, taps=("logits",))
    grouped = demo.grouped_by_length(kdata.load_teacher_cache(directory, 4, shuffle_seed=0), 4)
    for _ in range(2):  # the asserted count holds for every (reshuffled) epoch
        batches = list(grouped)
        assert len(batches) == int(grouped.cardinality())
        assert sum(int(y.shape[0]) for _, y, _ in batches) == 37
        for x, _, targets in batches:  # trimmed to the batch's longest, targets alongside
            used = int(np.asarray(x["padding_mask"]).sum(axis=1).max())
            assert used <= x["token_ids"].shape[1] <= -(-used // 8) * 8
            assert targets["logits"].shape == (x["token_ids"].shape[0], 2)
    empty = tf.data.Dataset.from_tensor_slices(
        ({"token_ids": tf.zeros((0, 8), tf.int32), "padding_mask": tf.zeros((0, 8), tf.bool)},
         tf.zeros((0,), tf.int32))).batch(4)
    with pytest.raises(ValueError, match="empty"):
        demo.grouped_by_length(empty, 4)


def test_cli_demo_passes_its_recipe_flags(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(demo, "run_demo", lambda **kwargs: calls.append(kwargs))
    assert cli.main(["demo", "--augment", "--output", str(tmp_path / "o")]) == 0
    assert cli.main(["demo", "--quick", "--seed", "3", "--output", str(tmp_path / "o")]) == 0
    assert [(c["augment"], c["quick"], c["seed"]) for c in calls] == [(True, False, 0),
                                                                     (False, True, 3)]


def test_augmented_config_applies_its_switches_to_either_preset():
    full, quick = demo.DemoConfig.augmented(), demo.DemoConfig.augmented(quick=True)
    for config in (full, quick):
        assert {k: getattr(config, k) for k in demo.AUGMENTED} == demo.AUGMENTED
    assert quick.max_train_examples == demo.DemoConfig.quick().max_train_examples
    assert full.max_train_examples is None
    assert demo.DemoConfig.augmented(task_epochs=2).task_epochs == 2
