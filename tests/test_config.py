"""kdistill.config: typed run configs from YAML/TOML, errors that say where, overrides."""

import dataclasses
import glob
import json
import os
import shutil

import pytest

from kdistill import config as C

ROOT = os.path.join(os.path.dirname(__file__), "..")
MINIMAL = "data:\n  dataset: rotten_tomatoes\noutput: out\n"


def load(tmp_path, text, name="run.yaml", overrides=()):
    path = tmp_path / name
    path.write_text(text)
    return C.load_config(str(path), overrides)


def error(tmp_path, text, name="run.yaml", overrides=()):
    with pytest.raises(C.ConfigError) as info:
        load(tmp_path, text, name, overrides)
    return str(info.value)


def test_defaults_and_yaml_values(tmp_path):
    config = load(tmp_path, MINIMAL + "stages:\n  task:\n    learning_rate: 5e-4\n    epochs: 1\n")
    task = config.stages.task
    assert task.learning_rate == 0.0005 and isinstance(task.learning_rate, float)  # not "5e-4"
    assert task.epochs == 1 and task.optimizer == "adamw"
    assert [o.to_raw() for o in task.objectives] == [{"preset": "logits_kd"}]
    assert config.stages.general.learning_rate == 1e-3  # the general stage's own defaults
    assert config.stages.general.objectives[0].to_raw() == {"preset": "tinybert",
                                                            "prediction": False}
    assert config.output == str(tmp_path / "out")  # relative to the config file


@pytest.mark.parametrize("text, where, message", [
    (MINIMAL + "stages:\n  task:\n    epoch: 3\n", "line 6: stages.task.epoch",
     "unknown key. Did you mean 'epochs'?"),
    (MINIMAL + "studnet:\n  preset: bert_tiny\n", "line 4: studnet",
     "unknown key. Did you mean 'student'?"),
    (MINIMAL + "student:\n  preset: bert_tinny\n", "line 5: student.preset",
     "unknown value 'bert_tinny'"),
    ("data:\n  dataset: rotten_tomatoes\n  batch_size: big\noutput: o\n", "line 3: data.batch_size",
     "expected an integer, got 'big' (str)"),
    (MINIMAL + "seed: 1.5\n", "line 4: seed", "expected an integer, got 1.5"),
    (MINIMAL + "data:\n  dataset: rotten_tomatoes\n", "line 4: data", "duplicate key (first set "
     "on line 1)"),
    (MINIMAL + "stages:\n  task:\n    epochs: -1\n", "line 6: stages.task.epochs",
     "must be >= 0, got -1"),
    (MINIMAL + "strategy: mirored\n", "line 4: strategy", "Did you mean 'mirrored'?"),
    (MINIMAL + "deterministic: yes please\n", "line 4: deterministic", "expected true or false"),
    (MINIMAL + "stages:\n  task:\n    objectives: {preset: tinybret}\n",
     "line 6: stages.task.objectives.preset", "Did you mean 'tinybert'?"),
    (MINIMAL + "stages:\n  task:\n    objectives:\n      - logits_kd\n"
     "      - {type: HiddenStatesKD}\n",
     "line 8: stages.task.objectives[1].type", "Did you mean 'HiddenStateKD'?"),
    (MINIMAL + "stages:\n  task:\n    objectives: {preset: logits_kd, temprature: 2}\n",
     "line 6: stages.task.objectives.temprature", "Did you mean 'temperature'?"),
    (MINIMAL + "stages:\n  task:\n    objectives: {preset: logits_kd, temperature: hot}\n",
     "line 6: stages.task.objectives.temperature", "expected a number, got 'hot'"),
    (MINIMAL + "stages:\n  task:\n    objectives: {preset: logits_kd, alpha: 2}\n",
     "line 6: stages.task.objectives", "alpha must be in [0, 1], got 2.0"),
    (MINIMAL + "layer_map: sideways\n", "line 4: layer_map", "Unknown layer mapping 'sideways'"),
    (MINIMAL + "metrics: [accuracy, teacher_agrement]\n", "line 4: metrics[1]",
     "Did you mean 'teacher_agreement'?"),
    (MINIMAL + "export:\n  int8_float_ops: [MEAN, BATCHMATMUL]\n",
     "line 5: export.int8_float_ops[1]", "Did you mean 'BATCH_MATMUL'?"),
    (MINIMAL + "export:\n  int8_recipe: static_wi4_ai8\n", "line 5: export.int8_recipe",
     "static_wi8_ai16"),
    (MINIMAL + "export:\n  int8_activation_percentile: 30\n",
     "line 5: export.int8_activation_percentile", "must be > 50, got 30"),
    (MINIMAL + "export:\n  int8_activation_percentile: 100.5\n",
     "line 5: export.int8_activation_percentile", "must be <= 100, got 100.5"),
    (MINIMAL + "stages:\n  task:\n    epochs: [1\n", "line 7", "YAML syntax error"),
])
def test_yaml_errors_name_the_key_and_line(tmp_path, text, where, message):
    text_error = error(tmp_path, text)
    assert text_error.startswith(str(tmp_path / "run.yaml")), text_error
    assert where in text_error and message in text_error, text_error


def test_toml_errors_name_the_key_path(tmp_path):
    base = 'output = "out"\n[data]\ndataset = "rotten_tomatoes"\n'
    config = load(tmp_path, base + "[stages.task]\nepochs = 2\nlearning_rate = 5e-4\n"
                  "objectives = [{ preset = \"tinybert\", temperature = 2.0 }]\n", "run.toml")
    assert config.stages.task.epochs == 2 and config.stages.task.objectives[0].name == "tinybert"
    message = error(tmp_path, base + "[stages.task]\nepoch = 2\n", "run.toml")
    assert message.startswith(f"{tmp_path / 'run.toml'}: stages.task.epoch: unknown key. Did "
                              "you mean 'epochs'?"), message
    assert "TOML syntax error" in error(tmp_path, base + "[stages\n", "run.toml")
    assert "unknown config format '.ini'" in error(tmp_path, base, "run.ini")


def test_command_line_overrides(tmp_path):
    assert C.parse_set("stages.task.objectives.0.alpha=0.1") == (
        ("stages", "task", "objectives", 0, "alpha"), 0.1)
    assert C.parse_set("teacher.num_classes=null") == (("teacher", "num_classes"), None)
    with pytest.raises(C.ConfigError, match="expected KEY=VALUE"):
        C.parse_set("stages.task.epochs")
    text = MINIMAL + "stages:\n  task:\n    objectives: [{preset: logits_kd, alpha: 0.5}]\n"
    overrides = [(*C.parse_set(s), f"--set {s}") for s in
                 ("stages.task.epochs=7", "stages.task.objectives.0.alpha=0.1",
                  "student.teacher_layers=[0, 2]", "student.init=from_teacher",
                  "student.num_layers=2")]
    config = load(tmp_path, text, overrides=overrides + [(("output",), "elsewhere", "--output")])
    assert config.stages.task.epochs == 7
    assert config.stages.task.objectives[0].args == {"alpha": 0.1}
    assert config.student.teacher_layers == [0, 2]
    assert config.output == os.path.join(os.getcwd(), "elsewhere")  # relative to the cwd
    message = error(tmp_path, text, overrides=[(*C.parse_set("stages.task.epoch=3"),
                                                "--set stages.task.epoch=3")])
    assert message.startswith("--set stages.task.epoch=3: stages.task.epoch: unknown key. Did "
                              "you mean 'epochs'?"), message
    message = error(tmp_path, text, overrides=[(("seed",), "x", "--seed x")])
    assert message.startswith("--seed x: seed: expected an integer"), message


@pytest.mark.parametrize("text, key, message", [
    ("output: o\n", "data", "give the data"),
    ("data: {dataset: rotten_tomatoes, train: t.csv}\noutput: o\n", "data.train",
     "brings its own splits"),
    (MINIMAL + "student: {init: from_teacher, num_layers: 2, hidden_dim: 64}\n",
     "student.hidden_dim", "keeps the teacher's width"),
    (MINIMAL + "student: {init: from_teacher}\n", "student.init", "needs `num_layers`"),
    (MINIMAL + "student: {teacher_layers: [0, 1]}\n", "student.teacher_layers",
     "only used with `init: from_teacher`"),
    (MINIMAL + "stages: {task: {epochs: 0}}\n", "stages", "nothing to train"),
    ("data: {dataset: rotten_tomatoes}\n", "output", "`--output DIR`"),
    (MINIMAL + "teacher: {model: missing.keras}\n", "teacher.model", "no teacher at"),
    ("data: {train: missing.csv}\noutput: o\n", "data.train", "no such file"),
    (MINIMAL + "teacher: {model: movie_reviews}\n", "teacher.model",
     "not a packaged resource for this key"),
    ("data: {dataset: rotten_tomatoes, vocabulary: movie_reviews}\noutput: o\n",
     "data.vocabulary", "not a packaged resource for this key"),
])
def test_checks_between_fields(tmp_path, text, key, message):
    text_error = error(tmp_path, text)
    assert f": {key}: " in text_error and message in text_error, text_error


def test_objective_forms_and_layer_map(tmp_path):
    text = MINIMAL + (
        "layer_map: [[0, 1], [1, 3]]\n"
        "stages:\n  task:\n    objectives:\n"
        "      - tinybert\n"
        "      - {type: PKDHiddenKD, weight: 10}\n"
        "      - {type: HiddenStateKD, layer_map: last, name: extra_hidden}\n")
    config = load(tmp_path, text)
    assert config.layer_map == [[0, 1], [1, 3]]
    built = C.build_objectives(config.stages.task.objectives, config.layer_map)
    names = [type(o).__name__ for o in built]
    assert names == ["LogitsKD", "AttentionKD", "HiddenStateKD", "EmbeddingKD", "PKDHiddenKD",
                     "HiddenStateKD"]
    assert built[1].layer_map == [(0, 1), (1, 3)]  # the default map reaches the preset
    assert built[4].layer_map == [(0, 1), (1, 3)]  # ... and replaces PKD's default "skip"
    assert built[5].layer_map == "last" and built[5].weight == 1.0  # its own argument wins
    assert built[4].weight == 10.0 and isinstance(built[4].weight, float)


def test_round_trip_and_describe(tmp_path):
    config = load(tmp_path, MINIMAL + "stages:\n  task:\n    objectives: {preset: pkd, beta: 50}\n")
    assert C.config_from_dict(config.to_dict()) == config
    text = C.describe()
    for cls in (C.RunConfig, C.TeacherConfig, C.StudentConfig, C.DataConfig, C.StageConfig,
                C.DistillStageConfig, C.StagesConfig, C.ExportConfig, C.ScheduleConfig):
        docs = C._attribute_docs(cls)
        missing = [f.name for f in dataclasses.fields(cls) if not docs.get(f.name)]
        assert not missing, f"{cls.__name__} lacks Attributes docs for {missing}"
    for key in ("teacher.model", "stages.task.objectives", "stages.finetune.learning_rate",
                "data.vocabulary", "export.formats", "layer_map", "save_every"):
        assert f"\n{key} = " in f"\n{text}", key


def test_shipped_example_configs_validate(tmp_path):
    paths = sorted(glob.glob(os.path.join(ROOT, "examples", "configs", "*")))
    assert len(paths) >= 3
    for path in paths:
        name = os.path.basename(path)
        if name in ("custom_files.yaml", "demo_recipe_own_files.yaml"):  # templates: files
            copy = tmp_path / name
            (copy / "data").mkdir(parents=True)
            shutil.copy(path, copy / "run.yaml")
            for name in ("my_teacher.keras", "data/train.csv", "data/dev.csv", "data/test.csv",
                         "data/vocab.txt", "data/unlabelled.csv"):
                (copy / name).write_text("x")
            path = str(copy / "run.yaml")
        elif name == "presidential_debates.yaml":  # its files: examples/presidential_debates.py
            copy = tmp_path / "examples" / "configs"
            data = tmp_path / "saved_models" / "presidential_debates" / "data"
            data.mkdir(parents=True)
            copy.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, copy / name)
            for split in ("train", "validation", "test", "unlabelled"):
                (data / f"{split}.csv").write_text("text,label\nx,y\n")
            path = str(copy / name)
        config = C.load_config(path, [(("output",), str(tmp_path / "out"), "--output")])
        assert any(stage.epochs for _, stage in config.stages.items()), path


def test_temperature_and_alpha_schedules(tmp_path):
    config = load(tmp_path, MINIMAL + "stages:\n  task:\n    temperature_schedule: "
                  "{kind: cosine, start: 8, end: 2}\n    alpha_schedule: {start: 0.9, end: 0.1}\n"
                  "    schedule_update: step\n")
    scheduler = config.stages.task.scheduler(steps_per_epoch=10)
    assert scheduler.update == "step" and scheduler.total == 30  # 3 epochs x 10 steps
    assert type(scheduler.schedules["temperature"]).__name__ == "CosineSchedule"
    assert config.stages.general.scheduler() is None
    message = error(tmp_path, MINIMAL + "stages:\n  task:\n    temperature_schedule: "
                    "{kind: exponential, start: 0, end: 2}\n")
    assert "line 6: stages.task.temperature_schedule" in message and "start > 0" in message
    message = error(tmp_path, MINIMAL + "stages:\n  task:\n    alpha_schedule: {start: 2}\n")
    assert "stages.task.alpha_schedule" in message and "alpha must be in [0, 1]" in message
    message = error(tmp_path, MINIMAL + "stages:\n  general:\n    temperature_schedule: {}\n")
    assert "stages.general.temperature_schedule: a schedule needs exactly one LogitsKD" in message


@pytest.mark.parametrize("text, where, message", [
    (MINIMAL + "student: {init: prune, num_layers: 2, hidden_dim: 64}\n",
     "student.intermediate_dim", "`init: prune` keeps this many"),
    (MINIMAL + "student: {init: prune, num_layers: 2, hidden_dim: 64, intermediate_dim: 128, "
     "num_heads: 2}\n", "student.num_heads", "remove this key"),
    (MINIMAL + "student: {init: from_teacher, num_layers: 2, vocabulary_min_count: 1}\n",
     "student.vocabulary_min_count", "copies the teacher's embedding table whole"),
    (MINIMAL + "stages:\n  task:\n    cache_teacher: true\n    objectives: tinybert\n",
     "stages.task.cache_teacher", "the objectives need ['attention_scores', "),
    (MINIMAL + "stages:\n  task:\n    restore_best: true\nmetrics: [teacher_kl]\n",
     "stages.task.restore_best", "add `accuracy` to `metrics`"),
    ("output: out\ndata: {dataset: rotten_tomatoes, augment_samples: 2}\n"
     "stages: {task: {epochs: 0}, finetune: {epochs: 1}}\n",
     "data.augment_samples", "stages.task.epochs is 0"),
    ("output: out\ndata: {dataset: rotten_tomatoes, augment_samples: -1}\n",
     "data.augment_samples", "must be a count of variants (0: off) or `fill`, got -1"),
    ("output: out\ndata: {dataset: rotten_tomatoes, augment_samples: fil}\n",
     "data.augment_samples", "or `fill`, got 'fil'"),
    ("output: out\ndata: {dataset: rotten_tomatoes, augment_samples: fill}\n"
     "stages: {task: {epochs: 0}, finetune: {epochs: 1}}\n",
     "data.augment_samples", "stages.task.epochs is 0"),
    (MINIMAL + "targets: {speedup: 0}\n", "targets.speedup", "must be > 0"),
    ("output: out\ndata: {dataset: rotten_tomatoes, transfer_examples: 5}\n"
     "stages: {task: {epochs: 0}, finetune: {epochs: 1}}\n",
     "data.transfer_examples", "stages.task.epochs is 0"),
])
def test_recipe_keys_are_checked(tmp_path, text, where, message):
    got = error(tmp_path, text)
    assert where in got and message in got, got


def test_transfer_text_needs_an_unlabelled_file(tmp_path):
    (tmp_path / "train.csv").write_text("text,label\na,x\n")
    got = error(tmp_path, "data: {train: train.csv, transfer_examples: null}\noutput: out\n")
    assert "data.transfer_examples" in got and "set data.unlabelled" in got


def test_packaged_movie_reviews_are_unlabelled_text_beside_a_dataset(tmp_path):
    config = load(tmp_path, "data: {dataset: rotten_tomatoes, unlabelled: movie_reviews, "
                            "transfer_examples: 100}\noutput: o\n")
    assert config.data.unlabelled == "movie_reviews"  # a name, not resolved as a path


def test_restore_best_needs_validation_data(tmp_path):
    (tmp_path / "train.csv").write_text("text,label\na,x\n")
    got = error(tmp_path, "data: {train: train.csv}\nstages: {task: {restore_best: true}}\n"
                          "output: out\n")
    assert "stages.task.restore_best" in got and "set data.validation" in got
    config = C.config_from_dict({"stages": {"task": {"restore_best": True}}, "output": "o"},
                                data_given=True)  # the caller hands the data over (TFX)
    assert config.stages.task.restore_best


def test_docs_config_reference_is_current():
    with open(os.path.join(ROOT, "docs", "config.md")) as f:
        assert f.read() == C.describe_markdown(), "run `make docs` to regenerate docs/config.md"


def test_a_set_typo_is_blamed_on_the_flag_not_the_file(tmp_path):
    got = error(tmp_path, MINIMAL, overrides=[(("stages", "taskk", "epochs"), 3,
                                               "--set stages.taskk.epochs=3")])
    assert got.startswith("--set stages.taskk.epochs=3: stages.taskk: unknown key"), got


_JSON_TYPES = {"string": str, "integer": int, "number": (int, float), "boolean": bool,
               "array": list, "object": dict, "null": type(None)}


def _schema_errors(value, schema, root, path="$"):
    """What `schema` finds wrong with `value` ([]: it validates), for the parts of JSON Schema
    kdistill's schema uses: $ref, anyOf, type, enum, const, bounds, properties, required,
    additionalProperties, items (jsonschema is not a dependency)."""
    if "$ref" in schema:
        schema = {**root["$defs"][schema["$ref"].rsplit("/", 1)[1]],
                  **{k: v for k, v in schema.items() if k != "$ref"}}
    if "anyOf" in schema:
        found = [_schema_errors(value, option, root, path) for option in schema["anyOf"]]
        return [] if [] in found else min(found, key=len)
    types = schema.get("type", list(_JSON_TYPES))
    if not any(isinstance(value, _JSON_TYPES[t]) and not (
            isinstance(value, bool) and t in ("integer", "number"))
               for t in (types if isinstance(types, list) else [types])):
        return [f"{path}: {value!r} is not {types}"]
    errors = [f"{path}: {value!r} {test}" for test, fails in (
        ("not in enum", "enum" in schema and value not in schema["enum"]),
        ("is not the const", "const" in schema and value != schema["const"]),
        ("< minimum", "minimum" in schema and value < schema["minimum"]),
        ("<= exclusiveMinimum", "exclusiveMinimum" in schema and value <= schema[
            "exclusiveMinimum"]),
        ("needs a key", isinstance(value, dict) and not set(schema.get("required", [])) <= set(
            value))) if fails]
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for key, item in value.items():
            if key in properties:
                errors += _schema_errors(item, properties[key], root, f"{path}.{key}")
            elif schema.get("additionalProperties") is False:
                errors.append(f"{path}.{key}: not allowed")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors += _schema_errors(item, schema["items"], root, f"{path}[{i}]")
    return errors


def test_json_schema_checks_the_packaged_configs(tmp_path):
    from kdistill import cli

    schema = C.json_schema()
    assert schema["additionalProperties"] is False and schema["title"] == "kdistill run config"
    for name, section in schema["$defs"].items():  # every key is typed and described
        assert section["additionalProperties"] is False, name
        assert all(p.get("description") for p in section["properties"].values()), name
    stage = schema["$defs"]["DistillStageConfig"]["properties"]
    assert stage["optimizer"]["enum"] == ["adamw", "adam", "sgd"]
    samples = schema["$defs"]["DataConfig"]["properties"]["augment_samples"]
    assert [_schema_errors(v, samples, schema) == [] for v in (0, 20, "fill", -1, "fil", 1.5)] == [
        True, True, True, False, False, False]
    assert schema["$defs"]["StudentConfig"]["properties"]["preset"]["enum"] == sorted(
        __import__("kdistill.students").students.PRESETS)
    packaged = sorted(glob.glob(os.path.join(ROOT, "kdistill", "configs", "*.yaml")))
    examples = sorted(glob.glob(os.path.join(ROOT, "examples", "configs", "*.*")))
    assert len(packaged) >= 3 and len(examples) >= 4  # pydantic: test_shipped_example_configs_...
    for path in packaged + examples:
        raw, _ = C.read_config_file(path)
        assert _schema_errors(raw, schema, schema) == [], path
    for path in packaged:
        C.load_config(path, [(("output",), str(tmp_path), "--output")])
    raw, _ = C.read_config_file(os.path.join(ROOT, "kdistill", "configs", "demo.yaml"))
    for bad, problem in (({"stages": {"task": {"epoch": 3}}}, "$.stages.task.epoch: not allowed"),
                         ({"seed": "one"}, "$.seed: 'one' is not integer"),
                         ({"stages": {"task": {"objectives": {"preset": "logits_kd",
                                                              "temprature": 2}}}}, "$.stages")):
        assert problem in " ".join(_schema_errors({**raw, **bad}, schema, schema)), bad
    out = tmp_path / "kdistill-config.schema.json"
    assert cli.main(["config-schema", "--output", str(out)]) == 0
    assert json.loads(out.read_text()) == schema
