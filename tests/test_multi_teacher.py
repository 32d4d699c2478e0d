"""MultiTeacher / MultiTeacherKD: NumPy references, mixed architectures, errors, replicas."""

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

import kdistill
from kdistill import metrics
from kdistill.multi_teacher import MultiTeacher, MultiTeacherKD, mixture_logits
from kdistill.testing import tiny_bert_classifier, tiny_mlp, token_dataset


def np_softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_ce(labels, logits):
    return -np.log(np_softmax(logits)[np.arange(len(labels)), labels])


def _three_mlps():
    return [tiny_mlp(hidden=8, seed=1, name="small"), tiny_mlp(hidden=16, seed=3, name="mid"),
            tiny_mlp(hidden=32, seed=5, name="big")]


def _batch(n=12):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 8)).astype("float32") * 2, rng.integers(0, 3, n).astype("int32")


def test_mixture_logits_is_the_average_of_tempered_probabilities():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(5, 3, 4)) * 5
    w = np.array([0.2, 0.3, 0.5])
    for t in (1.0, 3.0):
        expected = (w[None, :, None] * np_softmax(z / t)).sum(1)
        got = np_softmax(np.asarray(mixture_logits(z, w, t)) / t)
        np.testing.assert_allclose(got, expected, rtol=1e-5)
    # Also in a functional graph with as many teachers as classes (a Keras `ops.add` pitfall).
    z2 = rng.normal(size=(4, 2, 2)) * 3
    inputs = keras.Input((2, 2))
    graph = keras.Model(inputs, mixture_logits(inputs, [0.9, 0.1]))
    np.testing.assert_allclose(np_softmax(np.asarray(graph(z2))),
                               (np.array([0.9, 0.1])[None, :, None] * np_softmax(z2)).sum(1),
                               rtol=1e-5)
    # A zero weight drops a teacher without producing NaN.
    assert np.isfinite(np.asarray(mixture_logits(z, [0.0, 0.0, 1.0]))).all()


@pytest.mark.parametrize("mode", ["average", "per_teacher"])
def test_multi_teacher_loss_matches_numpy(mode):
    x, y = _batch()
    weights, t, alpha = np.array([1.0, 1.0, 2.0]), 3.0, 0.3
    teacher = MultiTeacher(_three_mlps(), weights=weights)
    student = tiny_mlp(seed=7, name="student")
    distiller = kdistill.Distiller(teacher, student, objectives=[
        MultiTeacherKD(temperature=t, alpha=alpha, mode=mode)])
    distiller.compile()
    logs = distiller.evaluate(x, y, batch_size=len(x), verbose=0, return_dict=True)

    w = weights / weights.sum()
    z = np.stack([m.predict(x, verbose=0) for m in teacher.teachers], axis=1)
    s = student.predict(x, verbose=0)
    q = np_softmax(s / t)
    ce = np_ce(y, s).mean()
    kl_each = [t * t * (np_softmax(z[:, i] / t) * (np.log(np_softmax(z[:, i] / t)) - np.log(q)))
               .sum(-1).mean() for i in range(3)]
    if mode == "average":
        p = (w[None, :, None] * np_softmax(z / t)).sum(1)
        kd = t * t * (p * (np.log(p) - np.log(q))).sum(-1).mean()
        assert not any(k.startswith("kd_loss_") for k in logs)
    else:
        kd = float(np.dot(w, kl_each))
        for name, value in zip(("small", "mid", "big"), kl_each):
            np.testing.assert_allclose(logs[f"kd_loss_{name}"], value, rtol=1e-4)
    np.testing.assert_allclose(logs["kd_loss"], kd, rtol=1e-4)
    np.testing.assert_allclose(logs["student_loss"], ce, rtol=1e-4)
    np.testing.assert_allclose(logs["loss"], alpha * ce + (1 - alpha) * kd, rtol=1e-4)


def test_per_teacher_terms_are_logged_in_fit_history():
    x, y = _batch(32)
    teacher = MultiTeacher(_three_mlps(), weights=[1, 2, 3])
    distiller = kdistill.Distiller(teacher, tiny_mlp(seed=7), objectives=[
        MultiTeacherKD(temperature=2.0, mode="per_teacher")])
    distiller.compile(optimizer="adam", metrics=["accuracy", "teacher_agreement"])
    history = distiller.fit(x, y, epochs=2, batch_size=16, verbose=0).history
    assert {"kd_loss_small", "kd_loss_mid", "kd_loss_big", "kd_loss", "student_loss",
            "teacher_agreement"} <= set(history)
    assert all(len(v) == 2 for v in history.values())


def _tiny_distilbert(num_classes=3, name=None):
    backbone = keras_hub.models.DistilBertBackbone(
        vocabulary_size=64, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16,
        max_sequence_length=16, dropout=0.0)
    return keras_hub.models.DistilBertTextClassifier(
        backbone=backbone, num_classes=num_classes, preprocessor=None, dropout=0.0, name=name)


def _bag_of_embeddings(num_classes=3, name=None):
    """A functional MLP over the same token inputs (no segment_ids)."""
    token_ids = keras.Input((None,), dtype="int32", name="token_ids")
    mask = keras.Input((None,), dtype="int32", name="padding_mask")
    h = keras.layers.Embedding(64, 8)(token_ids)
    m = keras.ops.expand_dims(keras.ops.cast(mask, "float32"), -1)
    pooled = keras.ops.sum(h * m, axis=1) / keras.ops.maximum(keras.ops.sum(m, axis=1), 1.0)
    logits = keras.layers.Dense(num_classes)(keras.layers.Dense(16, activation="relu")(pooled))
    return keras.Model({"token_ids": token_ids, "padding_mask": mask}, logits, name=name)


def test_teachers_of_different_architectures_on_the_same_inputs():
    teachers = [tiny_bert_classifier(name="bert"), _tiny_distilbert(name="distilbert"),
                _bag_of_embeddings(name="bag")]
    teacher = MultiTeacher(teachers, weights=[0.5, 0.3, 0.2])
    assert sorted(teacher.input) == ["padding_mask", "segment_ids", "token_ids"]
    ds = token_dataset(num_examples=16, batch_size=8)
    x, _ = next(iter(ds))
    out = teacher(x)
    assert tuple(out.shape) == (8, 3, 3)
    for i, member in enumerate(teachers):  # each member sees its own inputs
        own = {k: x[k] for k in member.input}
        np.testing.assert_allclose(out[:, i], member(own), atol=1e-5)
    # Extra inputs (segment_ids, which neither of these reads) are ignored, not misrouted.
    np.testing.assert_allclose(MultiTeacher(teachers[1:], name="no_segments")(x), out[:, 1:],
                               atol=1e-5)
    ensemble = teacher.ensemble_model()
    np.testing.assert_allclose(keras.ops.softmax(ensemble(x)),
                               np.einsum("i,bic->bc", teacher.teacher_weights,
                                         keras.ops.softmax(out)), atol=1e-6)
    distiller = kdistill.Distiller(teacher, tiny_bert_classifier(hidden_dim=4, num_heads=1,
                                                                  name="student"))
    distiller.compile(optimizer="adam", run_eagerly=True)  # tracing 4 keras-hub models is slow
    history = distiller.fit(ds, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0])
    assert all(not w.trainable for w in teacher.weights)


def test_multi_teacher_errors():
    with pytest.raises(ValueError, match="share the label space.*'b': 2 classes"):
        MultiTeacher([tiny_mlp(name="a"), tiny_mlp(num_classes=2, name="b")])
    with pytest.raises(ValueError, match="disagree on the input.*'b' takes shape \\(None, 4\\)"):
        MultiTeacher([tiny_mlp(name="a"), tiny_mlp(input_dim=4, name="b")])
    with pytest.raises(ValueError, match="dict of named inputs and others a single tensor"):
        MultiTeacher([tiny_mlp(name="a"), _bag_of_embeddings(name="b")])
    with pytest.raises(ValueError, match="names must be unique"):
        MultiTeacher([tiny_mlp(name="a"), tiny_mlp(name="a")])
    with pytest.raises(ValueError, match="2 weights for 3 teachers"):
        MultiTeacher(_three_mlps(), weights=[1, 2])
    with pytest.raises(ValueError, match="weights must be >= 0"):
        MultiTeacher(_three_mlps(), weights=[1, -1, 1])
    with pytest.raises(ValueError, match="mode must be"):
        MultiTeacherKD(mode="mean")

    teacher = MultiTeacher(_three_mlps())
    with pytest.raises(ValueError, match="share the label space.*Give the student a head"):
        kdistill.Distiller(teacher, tiny_mlp(num_classes=2))
    with pytest.raises(ValueError, match="use kdistill.MultiTeacherKD|distil it with kdistill"):
        kdistill.Distiller(teacher, tiny_mlp(), objectives=kdistill.objectives.logits_kd())
    with pytest.raises(ValueError, match="MultiTeacherKD distils a kdistill.MultiTeacher"):
        kdistill.Distiller(tiny_mlp(), tiny_mlp(), objectives=[MultiTeacherKD()])
    bert_teacher = MultiTeacher([tiny_bert_classifier(name="bert")])
    with pytest.raises(ValueError, match="only provides the taps \\['logits'\\].*HiddenStateKD"):
        kdistill.Distiller(bert_teacher, tiny_bert_classifier(),
                           objectives=[kdistill.HiddenStateKD(), MultiTeacherKD()])


def test_fidelity_metrics_compare_with_the_ensemble():
    x, y = _batch(20)
    teacher = MultiTeacher(_three_mlps(), weights=[1, 1, 2])
    student = tiny_mlp(seed=7)
    distiller = kdistill.Distiller(teacher, student)
    distiller.compile(metrics=["teacher_agreement", metrics.TeacherKL()])
    logs = distiller.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)
    p = np_softmax(np.asarray(teacher.ensemble_model()(x)))
    q = np_softmax(student.predict(x, verbose=0))
    np.testing.assert_allclose(logs["teacher_agreement"], (p.argmax(-1) == q.argmax(-1)).mean(),
                               rtol=1e-6)
    np.testing.assert_allclose(logs["teacher_kl"], (p * np.log(p / q)).sum(-1).mean(), rtol=1e-4)


def _fit_weights(strategy=None):
    x, y = _batch(24)  # 24 = 16 + 8: an uneven last batch
    scope = strategy.scope() if strategy is not None else tf.device("/cpu:0")
    with scope:
        teacher = MultiTeacher(_three_mlps(), weights=[1, 2, 1])
        distiller = kdistill.Distiller(teacher, tiny_mlp(seed=7), objectives=[
            MultiTeacherKD(temperature=2.0, alpha=0.5, mode="per_teacher")])
        distiller.compile(optimizer=keras.optimizers.SGD(0.5))
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    distiller.fit(ds, epochs=2, verbose=0)
    return [w.numpy() for w in distiller.student.weights]


def test_one_and_two_replicas_give_the_same_weights(two_replicas):
    one = _fit_weights()
    keras.backend.clear_session()
    two = _fit_weights(two_replicas)
    initial = [w.numpy() for w in tiny_mlp(seed=7).weights]
    assert any(np.abs(a - b).max() > 1e-3 for a, b in zip(one, initial))  # it trained
    for a, b in zip(one, two):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_serialisation_round_trip():
    teacher = MultiTeacher(_three_mlps(), weights=[1, 2, 3], name="committee")
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(teacher))
    assert restored.name == "committee" and restored.teacher_weights == teacher.teacher_weights
    kd = MultiTeacherKD(temperature=3.0, alpha=0.2, mode="per_teacher")
    again = MultiTeacherKD.from_config(kd.get_config())
    assert (again.mode, again.temperature, again.alpha) == ("per_teacher", 3.0, 0.2)


@pytest.mark.large  # ~60 s of CPU: three keras-hub/CNN teachers and three students, traced
def test_example_runs_tiny(monkeypatch, capsys):
    import os
    import runpy

    script = os.path.join(os.path.dirname(__file__), "..", "examples", "multi_teacher.py")
    monkeypatch.setattr("sys.argv", ["multi_teacher.py", "--tiny"])
    runpy.run_path(script, run_name="__main__")
    out = capsys.readouterr().out
    for line in ("teacher distilbert", "ensemble (", "student, per-teacher terms",
                 "kd_loss_bert=", "kd_loss_cnn=", "kd_loss_distilbert="):
        assert line in out
