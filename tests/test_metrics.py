"""Fidelity metrics against NumPy references, in Distiller.compile, under 2 replicas, serialised."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kdistill
from kdistill import metrics
from kdistill.testing import tiny_mlp


def np_softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_kl(t, s, temperature=1.0):
    p, q = np_softmax(t / temperature), np_softmax(s / temperature)
    return (p * (np.log(p) - np.log(q))).sum(-1)


def np_ece(labels, probs, num_bins, weights=None):
    """Guo et al.'s ECE with (lo, hi] bins, written as a loop over bins."""
    weights = np.ones(len(labels)) if weights is None else weights
    confidence, predicted = probs.max(-1), probs.argmax(-1)
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (confidence > lo) & (confidence <= hi)
        if lo == 0.0:
            inside |= confidence == 0.0
        w = weights[inside]
        if w.sum() == 0:
            continue
        accuracy = (w * (predicted[inside] == labels[inside])).sum() / w.sum()
        mean_confidence = (w * confidence[inside]).sum() / w.sum()
        total += w.sum() * abs(accuracy - mean_confidence)
    return total / weights.sum()


def test_fidelity_metrics_match_numpy_over_batches():
    rng = np.random.default_rng(0)
    t, s = rng.normal(size=(37, 4)) * 3, rng.normal(size=(37, 4)) * 3
    w = rng.random(37)
    agreement, kl, kl4 = metrics.TeacherAgreement(), metrics.TeacherKL(), metrics.TeacherKL(4.0)
    for start in range(0, 37, 10):  # uneven batches accumulate exactly
        part = slice(start, start + 10)
        for m in (agreement, kl, kl4):
            m.update_state(None, s[part], sample_weight=w[part], teacher_logits=t[part])
    same = (t.argmax(-1) == s.argmax(-1)).astype(float)
    np.testing.assert_allclose(float(agreement.result()), (w * same).sum() / w.sum(), rtol=1e-5)
    np.testing.assert_allclose(float(kl.result()), (w * np_kl(t, s)).sum() / w.sum(), rtol=1e-5)
    np.testing.assert_allclose(float(kl4.result()), (w * np_kl(t, s, 4.0)).sum() / w.sum(),
                               rtol=1e-5)
    agreement.reset_state()
    assert float(agreement.result()) == 0.0


@pytest.mark.parametrize("num_bins", [1, 5, 15])
def test_ece_matches_numpy_reference(num_bins):
    rng = np.random.default_rng(num_bins)
    logits = rng.normal(size=(203, 3)) * 2.5
    labels = rng.integers(0, 3, 203)
    weights = rng.random(203)
    ece = metrics.ExpectedCalibrationError(num_bins=num_bins)
    for start in range(0, 203, 64):
        part = slice(start, start + 64)
        ece.update_state(labels[part], logits[part], sample_weight=weights[part])
    expected = np_ece(labels, np_softmax(logits), num_bins, weights)
    np.testing.assert_allclose(float(ece.result()), expected, rtol=1e-5, atol=1e-7)

    # Probabilities and one-hot labels, unweighted; a perfectly calibrated case gives 0.
    probs = np_softmax(logits)
    ece = metrics.ExpectedCalibrationError(num_bins=num_bins, from_logits=False)
    ece.update_state(np.eye(3)[labels], probs)
    np.testing.assert_allclose(float(ece.result()), np_ece(labels, probs, num_bins), rtol=1e-5)
    ece = metrics.ExpectedCalibrationError(num_bins=num_bins, from_logits=False)
    ece.update_state(np.array([0, 0]), np.array([[1.0, 0.0], [1.0, 0.0]]))
    assert float(ece.result()) == 0.0


def test_metric_errors():
    with pytest.raises(ValueError, match="num_bins must be an int >= 1"):
        metrics.ExpectedCalibrationError(num_bins=0)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        metrics.TeacherKL(temperature=0)
    with pytest.raises(ValueError, match="needs labels"):
        metrics.ExpectedCalibrationError().update_state(None, np.ones((2, 2)))
    with pytest.raises(ValueError, match="share the label space"):
        metrics.TeacherAgreement().update_state(None, np.ones((2, 3)),
                                                teacher_logits=np.ones((2, 2)))
    # A fidelity metric in a plain model has no teacher: the error says where it belongs.
    model = tiny_mlp()
    model.compile("sgd", "mse", metrics=[metrics.TeacherAgreement()])
    with pytest.raises(ValueError, match="needs the teacher's logits.*Distiller.compile"):
        model.evaluate(np.ones((4, 8)), np.ones((4, 3)), verbose=0)


def test_ece_in_a_plain_model_compile():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(50, 8)).astype("float32"), rng.integers(0, 3, 50)
    model = tiny_mlp()
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[metrics.ExpectedCalibrationError(num_bins=5)])
    result = model.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    expected = np_ece(y, np_softmax(model.predict(x, verbose=0)), 5)
    np.testing.assert_allclose(result["ece"], expected, rtol=1e-4)


def _data():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(45, 8)).astype("float32")  # 45 = 2 full batches of 16 + 13 (uneven)
    y = rng.integers(0, 3, 45).astype("int32")
    return x, y


def _evaluate(strategy=None):
    x, y = _data()
    scope = strategy.scope() if strategy is not None else tf.device("/cpu:0")
    with scope:
        teacher, student = tiny_mlp(seed=0), tiny_mlp(seed=5)
        distiller = kdistill.Distiller(teacher, student)
        distiller.compile(metrics=["accuracy", "teacher_agreement", metrics.TeacherKL(),
                                   metrics.TeacherKL(2.0, name="kl_t2"), "ece"])
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    result = distiller.evaluate(ds, verbose=0, return_dict=True)
    return result, teacher.predict(x, verbose=0), student.predict(x, verbose=0), y


def test_distiller_metrics_match_numpy_on_one_and_two_replicas(two_replicas):
    one, t, s, y = _evaluate()
    keras.backend.clear_session()
    two, *_ = _evaluate(two_replicas)
    expected = {
        "teacher_agreement": (t.argmax(-1) == s.argmax(-1)).mean(),
        "teacher_kl": np_kl(t, s).mean(),
        "kl_t2": np_kl(t, s, 2.0).mean(),
        "ece": np_ece(y, np_softmax(s), 10),
        "accuracy": (s.argmax(-1) == y).mean(),
    }
    for name, value in expected.items():
        np.testing.assert_allclose(one[name], value, rtol=1e-4, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(two[name], value, rtol=1e-4, atol=1e-6, err_msg=name)


def test_fit_logs_fidelity_metrics_also_without_labels():
    x, y = _data()
    distiller = kdistill.Distiller(tiny_mlp(seed=0), tiny_mlp(seed=5))
    distiller.compile(optimizer="adam", metrics=["accuracy", "teacher_agreement", "teacher_kl"])
    history = distiller.fit(x, y, validation_data=(x, y), epochs=2, batch_size=16, verbose=0)
    for name in ("teacher_agreement", "teacher_kl", "val_teacher_agreement", "val_teacher_kl"):
        assert len(history.history[name]) == 2
    # Distillation pulls the student towards the teacher.
    assert history.history["teacher_kl"][-1] < history.history["teacher_kl"][0]
    unlabelled = tf.data.Dataset.from_tensor_slices(x).batch(16)
    with pytest.raises(ValueError, match="carry no labels, but compile"):  # said at the door
        distiller.evaluate(unlabelled, verbose=0, return_dict=True)
    distiller.compile(optimizer="adam", metrics=["teacher_agreement", "teacher_kl"])
    result = distiller.evaluate(unlabelled, verbose=0, return_dict=True)
    assert 0.0 <= result["teacher_agreement"] <= 1.0 and "accuracy" not in result


def test_metrics_serialise():
    for metric in (metrics.TeacherAgreement(name="agree"), metrics.TeacherKL(3.0),
                   metrics.ExpectedCalibrationError(num_bins=7, from_logits=False)):
        restored = keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(metric))
        assert type(restored) is type(metric)
        assert restored.get_config() == metric.get_config()
    assert metrics.get("ECE").num_bins == 10
    assert isinstance(metrics.get("teacher_kl"), metrics.TeacherKL)
