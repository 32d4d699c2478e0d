"""Objectives and presets in the Distiller: terms, padding, replicas, forward counts, errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kdistill
from kdistill import objectives as O
from kdistill import testing


def _pair(teacher_layers=4, teacher_dim=16, student_layers=2, student_dim=8, heads=2):
    teacher = testing.tiny_bert_classifier(num_layers=teacher_layers, hidden_dim=teacher_dim,
                                           num_heads=heads, intermediate_dim=2 * teacher_dim,
                                           name="teacher")
    student = testing.tiny_bert_classifier(num_layers=student_layers, hidden_dim=student_dim,
                                           num_heads=heads, intermediate_dim=2 * student_dim,
                                           name="student")
    return teacher, student


@pytest.mark.parametrize("preset,terms", [
    (O.tinybert(), {"kd_loss", "student_loss", "attention_loss", "hidden_loss",
                    "embedding_loss"}),
    (O.minilm(prediction_weight=1.0), {"attention_kl", "value_relation_kl", "kd_loss"}),
    (O.pkd(), {"kd_loss", "student_loss", "pkd_loss"}),
    (O.distilbert(), {"kd_loss", "student_loss", "cosine_loss"}),
])
def test_presets_train_and_log_every_term(preset, terms):
    teacher, student = _pair()
    distiller = kdistill.Distiller(teacher, student, objectives=preset)
    distiller.compile(optimizer="adam")
    history = distiller.fit(testing.token_dataset(16, 8), epochs=2, verbose=0)
    assert terms | {"loss"} <= set(history.history)
    assert all(np.isfinite(v).all() for v in history.history.values())
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_projections_train_with_the_student_and_are_not_part_of_it():
    teacher, student = _pair()
    distiller = kdistill.Distiller(teacher, student, objectives=O.tinybert())
    projections = [v for o in distiller.objectives for v in o.trainable_variables]
    assert len(projections) == 4  # hidden and embedding: kernel + bias each (widths 8 -> 16)
    assert {id(v) for v in distiller.trainable_variables} == (
        {id(v) for v in student.trainable_variables} | {id(v) for v in projections}
    )
    before = [v.numpy().copy() for v in projections]
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2))
    distiller.fit(testing.token_dataset(16, 8), epochs=1, verbose=0)
    assert all(not np.allclose(a, v.numpy()) for a, v in zip(before, projections))
    student_ids = {id(v) for v in student.weights}
    assert not student_ids & {id(v) for v in projections}


def test_intermediate_terms_match_direct_loss_computation():
    teacher, student = _pair(student_dim=16)  # equal widths: no projection
    distiller = kdistill.Distiller(
        teacher, student, objectives=[O.HiddenStateKD(layer_map=[(0, 1), (1, 3)]),
                                      O.AttentionKD(layer_map="uniform")])
    distiller.compile(optimizer="sgd")
    x, y = testing.token_batch(batch_size=4, sequence_length=8)
    logs = distiller.evaluate(x, y, batch_size=4, return_dict=True, verbose=0)
    t = distiller._teacher_taps(x)
    s = distiller._student_taps(x)
    mask = x["padding_mask"]
    hidden = sum(kdistill.losses.hidden_mse(t["hidden_states"][ti], s["hidden_states"][si], mask)
                 for si, ti in [(0, 1), (1, 3)])
    attention = sum(kdistill.losses.attention_mse(t["attention_scores"][ti],
                                                  s["attention_scores"][si], mask)
                    for si, ti in [(0, 1), (1, 3)])
    np.testing.assert_allclose(logs["hidden_loss"], np.mean(hidden), rtol=1e-5)
    np.testing.assert_allclose(logs["attention_loss"], np.mean(attention), rtol=1e-5)


def test_padding_invariance_of_intermediate_losses():
    teacher, student = _pair()
    distiller = kdistill.Distiller(teacher, student, objectives=O.tinybert() + [
        O.MiniLMKD(name="minilm")])
    distiller.compile(optimizer="sgd")
    x, y = testing.token_batch(batch_size=4, sequence_length=8)
    padded = {k: np.pad(v, ((0, 0), (0, 4))) for k, v in x.items()}  # 4 more pad tokens
    short = distiller.evaluate(x, y, batch_size=4, return_dict=True, verbose=0)
    long = distiller.evaluate(padded, y, batch_size=4, return_dict=True, verbose=0)
    for name in ("attention_loss", "hidden_loss", "embedding_loss", "kd_loss",
                 "attention_kl", "value_relation_kl"):
        assert short[name] > 0, name
        # KL terms of float32 log-probabilities carry ~1e-7 absolute error whatever their size.
        np.testing.assert_allclose(long[name], short[name], rtol=2e-4, atol=1e-6, err_msg=name)


def _tinybert_epoch(strategy, teacher_weights, student_weights, dataset):
    with strategy.scope():
        teacher, student = _pair()
        teacher.set_weights(teacher_weights)
        student.set_weights(student_weights)
        distiller = kdistill.Distiller(teacher, student, objectives=O.tinybert(
            alpha=0.5))
        for objective in distiller.objectives:
            for i, layer in enumerate(getattr(objective, "projections", [])):
                layer.set_weights([np.full(w.shape, 0.05 * (i + 1), "float32")
                                   for w in layer.get_weights()])
        distiller.compile(optimizer=keras.optimizers.SGD(learning_rate=0.5))
    distiller.fit(dataset, epochs=1, verbose=0, shuffle=False)
    return [v.numpy() for v in distiller.trainable_variables]


def test_tinybert_with_projections_two_replicas_match_one(two_replicas):
    dataset = testing.token_dataset(num_examples=13, batch_size=8)  # 8 + (3 + 2)
    teacher, student = _pair()
    args = (teacher.get_weights(), student.get_weights(), dataset)
    one = _tinybert_epoch(tf.distribute.get_strategy(), *args)
    two = _tinybert_epoch(two_replicas, *args)
    assert len(one) == len(two) == len(student.trainable_variables) + 4
    for a, b in zip(one, two):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_teacher_and_student_run_once_per_step():
    teacher, student = _pair()
    calls = {"teacher": 0, "student": 0}

    def count(layer, key):
        original = layer.call

        def call(*args, **kwargs):
            calls[key] += 1
            return original(*args, **kwargs)

        layer.call = call

    count(teacher.backbone.transformer_layers[0], "teacher")
    count(student.backbone.transformer_layers[0], "student")
    distiller = kdistill.Distiller(teacher, student, objectives=O.tinybert() + O.minilm())
    distiller.compile(optimizer="sgd", run_eagerly=True)
    calls.update(teacher=0, student=0)
    distiller.fit(testing.token_dataset(24, 8), epochs=1, verbose=0)  # 3 steps
    # One teacher forward per step, plus one on the first batch before training: the check
    # that the teacher's outputs are logits, not probabilities (kdistill.input_checks).
    assert calls == {"teacher": 4, "student": 3}
    calls.update(teacher=0, student=0)
    distiller.fit(testing.token_dataset(24, 8), epochs=1, verbose=0)  # checked once per Distiller
    assert calls == {"teacher": 3, "student": 3}


def test_mapping_and_head_errors_at_construction():
    teacher, student = _pair()
    with pytest.raises(ValueError, match="teacher layer 9, but the teacher has 4 layers"):
        kdistill.Distiller(teacher, student, objectives=[O.HiddenStateKD(layer_map=[(0, 9)])])
    other = testing.tiny_bert_classifier(num_layers=2, hidden_dim=8, num_heads=4,
                                         intermediate_dim=16)
    with pytest.raises(ValueError, match="teacher has 2 heads and the student 4"):
        kdistill.Distiller(teacher, other, objectives=[O.AttentionKD()])
    with pytest.raises(ValueError, match="attention=False"):
        kdistill.Distiller(teacher, other, objectives=[O.MiniLMKD()])
    kdistill.Distiller(teacher, other, objectives=[O.MiniLMKD(attention=False)])
    with pytest.raises(ValueError, match="projection=None"):
        kdistill.Distiller(teacher, student, objectives=[O.HiddenStateKD(projection=None)])
    with pytest.raises(ValueError, match="distinct `name`"):
        kdistill.Distiller(teacher, student, objectives=[O.HiddenStateKD(), O.HiddenStateKD()])


def test_objectives_serialise():
    teacher, student = _pair()
    distiller = kdistill.Distiller(teacher, student, objectives=O.tinybert(layer_map="skip"))
    clone = kdistill.Distiller.from_config(distiller.get_config())
    assert [type(o).__name__ for o in clone.objectives] == [
        type(o).__name__ for o in distiller.objectives]
    assert clone.objectives[1].pairs == distiller.objectives[1].pairs == ((0, 0), (1, 2))


def test_intermediate_only_distillation_leaves_the_head_alone():
    teacher, student = _pair()
    head = student.get_layer("logits")
    before = [w.copy() for w in head.get_weights()]
    distiller = kdistill.Distiller(teacher, student, objectives=O.tinybert(prediction=False))
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2))
    distiller.fit(testing.token_dataset(16, 8), epochs=1, verbose=0)
    for a, b in zip(before, head.get_weights()):
        np.testing.assert_array_equal(a, b)


def _logits_terms(objectives):
    return [o for o in objectives if isinstance(o, O.LogitsKD)]


@pytest.mark.parametrize("name", sorted(O.PRESETS))
def test_alpha_is_the_hard_label_weight_in_every_preset(name):
    import inspect

    preset = O.PRESETS[name]
    parameters = inspect.signature(preset).parameters
    assert not [p for p in parameters if p.startswith("alpha_") or p == "hard_label_weight"]
    if "alpha" not in parameters:
        return
    kwargs = {"prediction_weight": 2.0} if "prediction_weight" in parameters else {}
    terms = _logits_terms(preset(alpha=0.3, **kwargs))
    assert terms and all(o.alpha == 0.3 for o in terms)
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\], got 1.5"):
        preset(alpha=1.5, **kwargs)


def test_preset_weights_map_to_the_objectives():
    kd, attention, hidden, embedding = O.tinybert(prediction_weight=2.0, attention_weight=3.0,
                                                  hidden_weight=4.0, alpha=0.25)
    assert (kd.weight, kd.alpha, attention.weight, hidden.weight, embedding.weight) == (
        2.0, 0.25, 3.0, 4.0, 4.0)
    assert O.tinybert(embedding_weight=0.5)[-1].weight == 0.5
    assert O.tinybert()[0].alpha == 0.0  # TinyBERT: soft targets only
    kd, patient = O.pkd(alpha=0.2, beta=300.0)
    assert (kd.alpha, patient.weight) == (0.2, 300.0)
    kd, cosine = O.distilbert(kd_weight=5.0, mlm_weight=2.0, cosine_weight=1.0)
    assert (kd.weight, cosine.weight) == (7.0, 1.0) and kd.alpha == pytest.approx(2.0 / 7.0)
    with pytest.raises(ValueError, match="kd_weight \\+ mlm_weight must be > 0"):
        O.distilbert(kd_weight=0.0, mlm_weight=0.0)
    minilm, kd = O.minilm(prediction_weight=2.0, alpha=0.5)
    assert (kd.weight, kd.alpha) == (2.0, 0.5)
