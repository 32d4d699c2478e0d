"""Reduced-precision computing copies (`kdistill.precision`) and the teacher passes using them."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from kdistill import precision, teachers
from kdistill.config import ConfigError, config_from_dict
from kdistill.data import Split
from kdistill.saved_model_teacher import SavedModelTeacher
from kdistill.teacher_outputs import teacher_logits
from kdistill.testing import tiny_bert_classifier, tiny_mlp, token_batch, token_dataset

NATIVE_BFLOAT16 = precision.native_bfloat16  # (conftest pins it to False in every test)


def _teacher():
    keras.utils.set_random_seed(1)
    return tiny_bert_classifier(num_classes=2)


def _policies(model):
    return {layer.dtype_policy.name for layer in precision._layers(model)
            if not isinstance(layer, keras.layers.InputLayer)}


def test_computing_copy_has_the_policy_and_the_weights():
    teacher = _teacher()
    work = precision.computing_copy(teacher, "mixed_bfloat16")
    assert work is not teacher and _policies(work) == {"mixed_bfloat16"}
    assert _policies(teacher) == {"float32"}  # the user's model keeps its policy
    assert [w.dtype for w in work.weights] == [w.dtype for w in teacher.weights]  # float32
    for a, b in zip(teacher.get_weights(), work.get_weights()):
        np.testing.assert_array_equal(a, b)
    x, _ = token_batch(batch_size=4, sequence_length=8, num_classes=2)
    out = keras.ops.convert_to_numpy(work(x))
    assert out.dtype.name == "bfloat16"
    np.testing.assert_allclose(out.astype("float32"), teacher(x), atol=0.05)
    assert precision.computing_copy(teacher, "float32") is teacher


def test_copy_weights_back():
    a, b = tiny_mlp(), precision.computing_copy(tiny_mlp(seed=5), "mixed_float16")
    precision.copy_weights(a, b)
    for x, y in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(x, y)


def test_resolve(monkeypatch, tmp_path):
    teacher = _teacher()
    monkeypatch.setattr(precision, "native_bfloat16", lambda: True)
    assert precision.resolve("auto", teacher) == "mixed_bfloat16"
    assert precision.resolve("float32", teacher) == "float32"
    monkeypatch.setattr(precision, "native_bfloat16", lambda: False)
    assert precision.resolve("auto", teacher) == "float32"
    assert precision.resolve("mixed_float16", teacher) == "mixed_float16"
    with pytest.raises(ValueError, match="unknown value 'bf16'"):
        precision.resolve("bf16")

    path = os.path.join(tmp_path, "teacher")
    tiny_mlp(num_classes=3).export(path, verbose=False)
    frozen = SavedModelTeacher(path, num_classes=3)
    monkeypatch.setattr(precision, "native_bfloat16", lambda: True)
    assert not precision.rebuildable(frozen)
    assert precision.resolve("auto", frozen) == "float32"  # its graph fixes its precision
    with pytest.raises(ValueError, match="set teacher.precision to float32 or auto"):
        precision.resolve("mixed_bfloat16", frozen)


def test_native_bfloat16_reads_the_cpu_flags(tmp_path):
    amx = tmp_path / "amx"
    amx.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f amx_bf16 amx_tile\n")
    plain = tmp_path / "plain"
    plain.write_text("processor\t: 0\nflags\t\t: fpu sse avx2\n")
    assert "amx_bf16" in precision._cpu_flags(str(amx))
    assert "amx_bf16" not in precision._cpu_flags(str(plain))
    assert precision._cpu_flags(str(tmp_path / "absent")) == frozenset()


@pytest.mark.parametrize("flags, native", [
    ("fpu sse avx512f amx_bf16 amx_tile", True),  # Intel Sapphire Rapids and later
    ("fpu sse avx512f avx512_bf16 avx512_vnni", True),  # Intel Cooper Lake, AMD Zen 4 and later
    ("fpu sse avx2 fma", False),
    ("fpu sse avx512f avx512_vnni", False),
])
def test_native_bfloat16_on_cpus_with_bfloat16_matrix_arithmetic(tmp_path, monkeypatch, flags,
                                                                  native):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    read = precision._cpu_flags
    monkeypatch.setattr(precision, "_cpu_flags", lambda: read.__wrapped__(str(cpuinfo)))
    monkeypatch.setattr(tf.config, "list_logical_devices", lambda kind=None: [])
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [])
    assert NATIVE_BFLOAT16() is native


def test_float32_runs_the_model_as_built(tmp_path, monkeypatch):
    """`float32` (the default) means "as built": a user's mixed-precision teacher is trained
    and run itself, not rebuilt in float32."""
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        teacher = _teacher()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert precision.computing_model(teacher, "float32") is teacher
    assert precision.computing_model(teacher, "mixed_float16") is not teacher
    ds = token_dataset(num_examples=16, batch_size=8, num_classes=2)
    monkeypatch.setattr(precision, "computing_copy",
                        lambda *args: pytest.fail("float32 rebuilt the teacher"))
    result = teachers.fine_tune_teacher(teacher, ds, epochs=1, learning_rate=1e-2,
                                        cache_dir=tmp_path, cache_key="toy", verbose=0)
    assert result.model is teacher and _policies(teacher) == {"mixed_bfloat16"}
    x, _ = token_batch(batch_size=2, sequence_length=8, num_classes=2)
    assert teacher_logits(teacher, Split(x)).shape == (2, 2)  # run as built, no copy


def test_fine_tune_in_bfloat16_trains_the_float32_teacher(tmp_path):
    ds = token_dataset(num_examples=32, batch_size=8, num_classes=2)
    teacher = _teacher()
    before = teacher.get_weights()
    result = teachers.fine_tune_teacher(teacher, ds, ds, epochs=2, learning_rate=1e-2,
                                        cache_dir=tmp_path, cache_key="toy", verbose=0,
                                        precision="mixed_bfloat16")
    assert result.model is teacher and _policies(teacher) == {"float32"}
    assert any(not np.array_equal(a, b) for a, b in zip(before, teacher.get_weights()))
    assert np.all(np.isfinite(result.history["loss"]))
    assert keras.saving.load_model(result.path).dtype_policy.name == "float32"
    # The policy is part of the cache key: a float32 run does not reuse the bfloat16 weights.
    f32 = teachers.fine_tune_teacher(_teacher(), ds, epochs=2, learning_rate=1e-2,
                                     cache_dir=tmp_path, cache_key="toy", verbose=0)
    assert not f32.from_cache and f32.key != result.key
    again = teachers.fine_tune_teacher(_teacher(), ds, epochs=2, learning_rate=1e-2,
                                       cache_dir=tmp_path, cache_key="toy", verbose=0,
                                       precision="mixed_bfloat16")
    assert again.from_cache and again.key == result.key
    for a, b in zip(teacher.get_weights(), again.model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_teacher_logits_in_bfloat16():
    teacher = _teacher()
    x, _ = token_batch(batch_size=12, sequence_length=16, min_length=2, num_classes=2)
    split = Split(x)
    f32 = teacher_logits(teacher, split, batch_size=5)
    bf16 = teacher_logits(teacher, split, batch_size=5, precision="mixed_bfloat16")
    assert bf16.dtype == np.float32 and bf16.shape == f32.shape
    np.testing.assert_allclose(bf16, f32, atol=0.05)
    assert not np.array_equal(bf16, f32)  # it did compute in bfloat16
    assert _policies(teacher) == {"float32"}


def test_config_key():
    base = {"data": {"dataset": "rotten_tomatoes"}, "output": "o"}
    config = config_from_dict(dict(base, teacher={"precision": "mixed_bfloat16"}))
    assert config.teacher.precision == "mixed_bfloat16"
    assert config_from_dict(base).teacher.precision == "auto"
    with pytest.raises(ConfigError, match="teacher.precision") as info:
        config_from_dict(dict(base, teacher={"precision": "bf16"}))
    assert "mixed_bfloat16" in str(info.value)  # the valid values are named


def test_runner_auto_runs_the_teacher_in_bfloat16_where_native(tmp_path, monkeypatch):
    """`teacher.precision: auto` on bfloat16 hardware: the fine-tuning and the logits pass say
    so, the cached teacher is float32 and a float32 run does not reuse either cache."""
    from kdistill import runner
    from tests.test_runner import _recipe_config, write_tiny_project

    project = write_tiny_project(str(tmp_path / "project"))
    changes = dict(data={"augment_samples": 0},
                   teacher={"fine_tune_epochs": 1, "fine_tune_min_steps": 3})
    monkeypatch.setattr(precision, "native_bfloat16", lambda: True)
    report = runner.run(_recipe_config(project, tmp_path / "bf16", **changes), quiet=True)
    notes = {s["step"]: s["note"] for s in report["steps"]}
    assert "steps in mixed_bfloat16" in notes["teacher fine-tuning"]
    assert "in mixed_bfloat16 cached in" in notes["teacher logits"]
    assert np.isfinite(report["teacher"]["accuracy"])
    cached = [f for f in os.listdir(os.path.join(project, "cache")) if f.endswith(".keras")]
    assert [keras.saving.load_model(os.path.join(project, "cache", f)).dtype_policy.name
            for f in cached] == ["float32"]

    monkeypatch.setattr(precision, "native_bfloat16", lambda: False)
    report = runner.run(_recipe_config(project, tmp_path / "f32", **changes), quiet=True)
    notes = {s["step"]: s["note"] for s in report["steps"]}
    assert "fine-tuned and cached" in notes["teacher fine-tuning"]
    assert "steps in float32" in notes["teacher fine-tuning"]
    assert "in float32 cached in" in notes["teacher logits"]
