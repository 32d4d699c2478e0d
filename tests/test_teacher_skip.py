"""No objective of weight 0 costs a teacher forward (issue 18).

A teacher whose forward pass counts its runs (a variable incremented inside the graph) or raises
shows when the Distiller calls it; a labels-only Distiller trains exactly like the plain student
on the hard labels.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kdistill
from kdistill import testing
from kdistill.callbacks import KDScheduler
from kdistill.objectives import AttentionKD, HiddenStateKD, LogitsKD


class _Spy(keras.layers.Layer):
    """Identity that counts the batches it runs on (in the graph), or raises when called."""

    def __init__(self, raises=False, **kwargs):
        super().__init__(**kwargs)
        self.raises = raises
        self.armed = False
        self.runs = tf.Variable(0, trainable=False, dtype=tf.int64)

    def call(self, x):
        if self.armed and self.raises:
            raise AssertionError("the teacher was called")
        if self.armed:
            self.runs.assign_add(1)
        return x


def _teacher(raises=False):
    """`(teacher, spy)`: a tiny MLP teacher whose every forward pass goes through `spy`."""
    inner = testing.tiny_mlp(hidden=32, name="inner", seed=10)
    inputs = keras.Input((8,), name="features")
    spy = _Spy(raises=raises)
    teacher = keras.Model(inputs, spy(inner(inputs)), name="teacher")
    spy.armed = True
    return teacher, spy


def _data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 8)).astype("float32"), rng.integers(0, 3, n).astype("int32")


def _student():
    return testing.tiny_mlp(hidden=8, name="student", seed=20)


def _plain_student_weights(x, y, epochs, batch_size):
    student = _student()
    student.compile(optimizer=keras.optimizers.SGD(0.1),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = student.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=False, verbose=0)
    return student.get_weights(), history.history["loss"]


@pytest.mark.parametrize("run_eagerly", [False, True])
def test_labels_only_never_calls_the_teacher_and_trains_like_the_plain_student(run_eagerly):
    x, y = _data()
    teacher, _ = _teacher(raises=True)
    distiller = kdistill.Distiller(teacher, _student(), alpha=1.0)
    distiller.compile(optimizer=keras.optimizers.SGD(0.1), metrics=["accuracy"],
                      run_eagerly=run_eagerly)
    history = distiller.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0).history
    weights, plain_loss = _plain_student_weights(x, y, epochs=2, batch_size=16)
    for a, b in zip(distiller.student.get_weights(), weights):
        np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(history["loss"], plain_loss, rtol=1e-5)
    np.testing.assert_allclose(history["student_loss"], plain_loss, rtol=1e-5)
    assert "kd_loss" not in history  # not computed: it would need the teacher


def test_labels_only_on_two_replicas_matches_the_plain_student(two_replicas):
    x, y = _data(40)  # 40 = 2 full batches of 16 and an uneven 8, split over the replicas
    with two_replicas.scope():
        teacher, _ = _teacher(raises=True)
        distiller = kdistill.Distiller(teacher, _student(), alpha=1.0)
        distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    distiller.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    weights, _ = _plain_student_weights(x, y, epochs=2, batch_size=16)
    for a, b in zip(distiller.student.get_weights(), weights):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_fidelity_metrics_run_the_teacher_in_validation_only():
    x, y = _data()
    teacher, spy = _teacher()
    distiller = kdistill.Distiller(teacher, _student(), alpha=1.0)
    distiller.compile(optimizer=keras.optimizers.SGD(0.1),
                      metrics=["accuracy", "teacher_agreement"])
    history = distiller.fit(x, y, batch_size=16, epochs=2, validation_data=(x[:16], y[:16]),
                            verbose=0).history
    # One validation batch per epoch (3 training steps each: none), and once when fit checks
    # the validation data's first batch (the teacher's outputs must look like logits).
    assert int(spy.runs.numpy()) == 2 + 1
    assert "teacher_agreement" not in history and len(history["val_teacher_agreement"]) == 2
    assert len(history["val_kd_loss"]) == 2  # the teacher ran: the term is measured


def test_a_schedule_that_moves_alpha_off_one_brings_the_teacher_back():
    x, y = _data()
    teacher, spy = _teacher()
    distiller = kdistill.Distiller(teacher, _student(), alpha=1.0)
    distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    schedule = KDScheduler(alpha=lambda epoch: [1.0, 0.5, 1.0][epoch])
    history = distiller.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0,
                            callbacks=[schedule]).history
    assert int(spy.runs.numpy()) == 3  # the 3 steps of epoch 2 only
    assert len(history["kd_loss"]) == 1 and history["kd_loss"][0] > 0

    # The same run with the teacher on every step and alpha set by hand gives the same student.
    keras.utils.set_random_seed(0)
    reference = kdistill.Distiller(_teacher()[0], _student(), alpha=1.0)
    reference.compile(optimizer=keras.optimizers.SGD(0.1))
    for epoch, alpha in enumerate([1.0, 0.5, 1.0]):
        reference.objectives[0].alpha = alpha
        reference.fit(x, y, batch_size=16, initial_epoch=epoch, epochs=epoch + 1, shuffle=False,
                      verbose=0)
    for a, b in zip(distiller.student.get_weights(), reference.student.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_unlabelled_batches_run_the_teacher_whatever_alpha():
    x, _ = _data(32)
    teacher, spy = _teacher()
    distiller = kdistill.Distiller(teacher, _student(), alpha=1.0)
    distiller.compile(optimizer="sgd")
    with pytest.warns(UserWarning, match="pure KD"):
        history = distiller.fit(x, batch_size=16, epochs=1, verbose=0).history
    assert int(spy.runs.numpy()) >= 2 and history["kd_loss"][0] > 0


def test_kd_runs_the_teacher_every_step():
    x, y = _data()
    teacher, spy = _teacher()
    distiller = kdistill.Distiller(teacher, _student(), alpha=0.5)
    distiller.compile(optimizer="sgd")
    distiller.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert int(spy.runs.numpy()) == 6 + 1  # every step, and once on the first batch's check


def test_objectives_of_weight_zero_are_not_computed_and_their_taps_not_run():
    x, y = testing.token_batch(batch_size=16, sequence_length=8)
    teacher = testing.tiny_bert_classifier(num_layers=2, hidden_dim=16, name="teacher")
    kwargs = dict(batch_size=8, epochs=1, shuffle=False, verbose=0)
    keras.utils.set_random_seed(1)
    student = testing.tiny_bert_classifier(num_layers=1, hidden_dim=8, name="student")
    distiller = kdistill.Distiller(teacher, student, objectives=[
        LogitsKD(alpha=0.5), HiddenStateKD(weight=0.0), AttentionKD(weight=0.0)])
    distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    history = distiller.fit(x, y, **kwargs).history
    assert sorted(history) == ["kd_loss", "loss", "student_loss"]
    # The forward passes return logits only (no hidden-state or attention taps).
    assert sorted(distiller._teacher_forward_taps(x)) == ["logits"]
    assert sorted(distiller._student_forward_taps(x)) == ["logits"]
    keras.utils.set_random_seed(1)
    student = testing.tiny_bert_classifier(num_layers=1, hidden_dim=8, name="student")
    reference = kdistill.Distiller(teacher, student, objectives=[LogitsKD(alpha=0.5)])
    reference.compile(optimizer=keras.optimizers.SGD(0.1))
    reference.fit(x, y, **kwargs)
    for a, b in zip(distiller.student.get_weights(), reference.student.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_every_weight_zero_is_refused():
    with pytest.raises(ValueError, match="Every objective has weight 0"):
        kdistill.Distiller(_teacher()[0], _student(), objectives=[LogitsKD(weight=0.0)])


def test_labels_only_needs_no_teacher_targets_without_a_teacher():
    x, y = _data(32)
    distiller = kdistill.Distiller(None, _student(), alpha=1.0)
    distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    history = distiller.fit(x, y, batch_size=16, epochs=1, verbose=0).history
    assert history["loss"][0] > 0
    distiller = kdistill.Distiller(None, _student(), alpha=0.5)
    distiller.compile(optimizer="sgd")
    with pytest.raises(ValueError, match="carries no teacher targets"):
        distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
