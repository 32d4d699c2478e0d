"""The core Distiller: Hinton KD, frozen teacher, replica equivalence, saving, bad input."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import kdistill
from kdistill import testing, training_state
from kdistill.objectives import HiddenStateKD
from tests.test_losses import np_kl, np_log_softmax


def _mlp_pair(num_classes=3):
    teacher = testing.tiny_mlp(num_classes=num_classes, hidden=32, name="teacher", seed=10)
    student = testing.tiny_mlp(num_classes=num_classes, hidden=8, name="student", seed=20)
    return teacher, student


def _mlp_data(n=32, num_classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 8)).astype("float32"), rng.integers(0, num_classes, n)


def test_hinton_loss_value_matches_numpy_reference():
    teacher, student = _mlp_pair()
    x, y = _mlp_data()
    distiller = kdistill.Distiller(teacher, student, temperature=3.0, alpha=0.3)
    distiller.compile(optimizer="sgd")
    logs = distiller.evaluate(x, y, batch_size=32, return_dict=True, verbose=0)
    t, s = teacher.predict(x, verbose=0), student.predict(x, verbose=0)
    ce = -np_log_softmax(s.astype(np.float64))[np.arange(len(y)), y]
    kd = np_kl(t.astype(np.float64), s.astype(np.float64), 3.0)
    np.testing.assert_allclose(logs["student_loss"], ce.mean(), rtol=1e-4)
    np.testing.assert_allclose(logs["kd_loss"], kd.mean(), rtol=1e-4)
    np.testing.assert_allclose(logs["loss"], (0.3 * ce + 0.7 * kd).mean(), rtol=1e-4)


def test_teacher_is_frozen_and_student_learns():
    teacher, student = _mlp_pair()
    x, y = _mlp_data(64)
    before_t = [w.copy() for w in teacher.get_weights()]
    before_s = [w.copy() for w in student.get_weights()]
    distiller = kdistill.Distiller(teacher, student)
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2), metrics=["accuracy"])
    history = distiller.fit(x, y, batch_size=16, epochs=3, verbose=0)
    for a, b in zip(before_t, teacher.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert any(not np.allclose(a, b) for a, b in zip(before_s, student.get_weights()))
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert {"loss", "kd_loss", "student_loss", "accuracy"} <= set(history.history)
    assert all(v > 0 for v in history.history["kd_loss"])
    # The Distiller trains only the student (plus any projections; none here).
    assert {id(v) for v in distiller.trainable_variables} == {
        id(v) for v in student.trainable_variables
    }


def test_predict_and_call_are_the_students():
    teacher, student = _mlp_pair()
    x, _ = _mlp_data(8)
    distiller = kdistill.Distiller(teacher, student)
    np.testing.assert_allclose(distiller.predict(x, verbose=0), student.predict(x, verbose=0),
                               rtol=1e-6, atol=1e-6)


def test_unlabelled_batches_give_pure_kd():
    teacher, student = _mlp_pair()
    x, _ = _mlp_data(32)
    distiller = kdistill.Distiller(teacher, student, alpha=0.0)
    distiller.compile(optimizer="adam")
    history = distiller.fit(tf.data.Dataset.from_tensor_slices(x).batch(8), epochs=1, verbose=0)
    np.testing.assert_allclose(history.history["loss"], history.history["kd_loss"], rtol=1e-6)


def test_keras_hub_dict_inputs():
    teacher = testing.tiny_bert_classifier(num_layers=2, hidden_dim=16, name="teacher")
    student = testing.tiny_bert_classifier(num_layers=1, hidden_dim=8, name="student")
    data = testing.token_dataset(num_examples=16, batch_size=8)
    distiller = kdistill.Distiller(teacher, student, temperature=2.0, alpha=0.5)
    distiller.compile(optimizer="adam", metrics=["accuracy"])
    history = distiller.fit(data, validation_data=data, epochs=1, verbose=0)
    assert np.isfinite(history.history["val_loss"][0])


# ------------------------------------------------------------------ tf.distribute equivalence

def _one_epoch_weights(strategy, teacher_weights, student_weights, dataset, build):
    with strategy.scope():
        teacher, student = build()
        teacher.set_weights(teacher_weights)
        student.set_weights(student_weights)
        distiller = kdistill.Distiller(teacher, student, temperature=2.0, alpha=0.5)
        distiller.compile(optimizer=keras.optimizers.SGD(learning_rate=1.0))
    history = distiller.fit(dataset, epochs=1, verbose=0, shuffle=False)
    return student.get_weights(), history.history["loss"][0]


@pytest.mark.parametrize("num_examples", [16, 13])  # 13: last global batch of 5 splits 3 + 2
def test_two_replicas_match_one_replica_mlp(two_replicas, num_examples):
    x, y = _mlp_data(num_examples)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    teacher, student = _mlp_pair()
    args = (teacher.get_weights(), student.get_weights(), dataset, _mlp_pair)
    one, loss_one = _one_epoch_weights(tf.distribute.get_strategy(), *args)
    two, loss_two = _one_epoch_weights(two_replicas, *args)
    for a, b in zip(one, two):
        # Replicas sum the gradients in another order: float32 weights near zero differ by
        # ~1e-7 (CPU-dependent); a wrong replica scaling differs by the whole update (> 1e-3).
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(loss_one, loss_two, rtol=1e-5)
    moved = max(np.abs(a - b).max() for a, b in zip(one, student.get_weights()))
    assert moved > 1e-3  # the step really changed the weights


def test_two_replicas_match_one_replica_keras_hub(two_replicas):
    def build():
        return (testing.tiny_bert_classifier(num_layers=2, hidden_dim=16, name="teacher"),
                testing.tiny_bert_classifier(num_layers=1, hidden_dim=8, name="student"))

    dataset = testing.token_dataset(num_examples=14, batch_size=8)
    teacher, student = build()
    args = (teacher.get_weights(), student.get_weights(), dataset, build)
    one, _ = _one_epoch_weights(tf.distribute.get_strategy(), *args)
    two, _ = _one_epoch_weights(two_replicas, *args)
    for a, b in zip(one, two):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------ saving and config

def test_save_writes_the_student_only(tmp_path):
    teacher, student = _mlp_pair()
    x, y = _mlp_data(16)
    distiller = kdistill.Distiller(teacher, student)
    distiller.compile(optimizer="adam")
    distiller.fit(x, y, epochs=1, verbose=0)
    path = str(tmp_path / "student.keras")
    distiller.save(path)
    restored = keras.models.load_model(path)
    assert restored.count_params() == student.count_params() != teacher.count_params()
    np.testing.assert_allclose(restored.predict(x, verbose=0), student.predict(x, verbose=0),
                               rtol=1e-6, atol=1e-6)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        distiller.save(path)
    distiller.save(path, overwrite=True)


def test_config_round_trip():
    teacher, student = _mlp_pair()
    distiller = kdistill.Distiller(teacher, student, temperature=5.0, alpha=0.25)
    config = distiller.get_config()
    clone = kdistill.Distiller.from_config(config)
    assert clone.objectives[0].temperature == 5.0
    assert clone.objectives[0].alpha == 0.25
    assert clone.student.count_params() == student.count_params()
    assert clone.teacher.count_params() == teacher.count_params()


def test_temperature_and_alpha_can_be_changed_during_training():
    teacher, student = _mlp_pair()
    distiller = kdistill.Distiller(teacher, student, temperature=2.0, alpha=0.5)
    objective = distiller.objectives[0]
    objective.temperature = 6.0
    objective.alpha = 0.1
    assert (objective.temperature, objective.alpha) == pytest.approx((6.0, 0.1))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        objective.temperature = 0.0


# ------------------------------------------------------------------ bad input

@pytest.mark.parametrize("temperature, message", [
    (0.0, "temperature must be > 0, got 0.0"),
    (-1.0, "temperature must be > 0, got -1.0"),
    (float("inf"), r"temperature must be a finite number \(> 0, typically 1 to 8\), got inf"),
    (float("nan"), "temperature must be a finite number .* got nan"),
    (True, "temperature must be a number .* got the bool True: pass a number"),
    (np.True_, "temperature must be a number .* got the bool True"),
    ("hot", r"temperature must be a number .* got 'hot' \(str\)"),
])
def test_bad_temperature(temperature, message):
    with pytest.raises(ValueError, match=message):
        kdistill.Distiller(*_mlp_pair(), temperature=temperature)
    with pytest.raises(ValueError, match=message):
        kdistill.LogitsKD(temperature=temperature)


@pytest.mark.parametrize("alpha, message", [
    (-0.1, r"alpha must be in \[0, 1\], got -0.1"),
    (1.5, r"alpha must be in \[0, 1\], got 1.5"),
    (float("nan"), r"alpha must be a finite number \(in \[0, 1\]\), got nan"),
    (False, "alpha must be a number .* got the bool False"),
])
def test_bad_alpha(alpha, message):
    with pytest.raises(ValueError, match=message):
        kdistill.Distiller(*_mlp_pair(), alpha=alpha)


def test_bad_temperature_or_alpha_set_during_training_is_refused():
    objective = kdistill.LogitsKD()
    with pytest.raises(ValueError, match="got inf"):
        objective.temperature = float("inf")
    with pytest.raises(ValueError, match="got nan"):
        objective.alpha = float("nan")


@pytest.mark.parametrize("weight, message", [
    (-1.0, "weight must be >= 0, got -1.0. Pass 0 to switch a term off"),
    (float("nan"), r"weight must be a finite number \(>= 0\), got nan"),
    (float("inf"), "weight must be a finite number .* got inf"),
    (True, "weight must be a number .* got the bool True"),
])
def test_bad_weight(weight, message):
    with pytest.raises(ValueError, match=message):
        kdistill.LogitsKD(weight=weight)
    with pytest.raises(ValueError, match=message):
        HiddenStateKD(weight=weight)


def test_class_count_mismatch():
    teacher = testing.tiny_mlp(num_classes=3)
    student = testing.tiny_mlp(num_classes=2)
    with pytest.raises(ValueError, match="teacher outputs 3 logits .* student outputs 2"):
        kdistill.Distiller(teacher, student)


def test_vocabulary_mismatch():
    teacher = testing.tiny_bert_classifier(vocabulary_size=64)
    student = testing.tiny_bert_classifier(vocabulary_size=32)
    with pytest.raises(ValueError, match="vocabulary has 64 entries but the student's 32"):
        kdistill.Distiller(teacher, student)


def test_unbuilt_or_non_keras_teacher():
    class Unbuilt(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="is not built"):
        kdistill.Distiller(Unbuilt(), testing.tiny_mlp())
    with pytest.raises(ValueError, match="must be a keras.Model"):
        kdistill.Distiller(lambda x: x, testing.tiny_mlp())


def test_objectives_and_default_arguments_conflict():
    with pytest.raises(ValueError, match="set them on the objective"):
        kdistill.Distiller(*_mlp_pair(), objectives=[kdistill.LogitsKD()], temperature=3.0)
    with pytest.raises(ValueError, match="objectives is empty"):
        kdistill.Distiller(*_mlp_pair(), objectives=[])


def test_compile_rejects_a_loss():
    distiller = kdistill.Distiller(*_mlp_pair())
    with pytest.raises(ValueError, match="takes no `loss`"):
        distiller.compile(optimizer="adam", loss="mse")


def test_labels_out_of_range():
    distiller = kdistill.Distiller(*_mlp_pair(num_classes=3))
    distiller.compile(optimizer="adam")
    x, _ = _mlp_data(8)
    with pytest.raises(ValueError, match=r"first training batch has the label 3, outside \[0, 3\)"):
        distiller.fit(x, np.full(8, 3), epochs=1, verbose=0)  # caught at the door
    y = np.zeros(8, "int64")
    y[6] = 3  # in the second batch: only the in-graph check sees it
    message = r"labels must be class ids in \[0, 3\)"
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        distiller.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(4), epochs=1, verbose=0)


def test_empty_dataset():
    distiller = kdistill.Distiller(*_mlp_pair())
    distiller.compile(optimizer="adam")
    x, y = _mlp_data(8)
    empty = tf.data.Dataset.from_tensor_slices((x, y)).take(0).batch(4)
    with pytest.raises(ValueError, match="training dataset is empty"):
        distiller.fit(empty, epochs=1, verbose=0)
    full = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    with pytest.raises(ValueError, match="validation dataset is empty"):
        distiller.fit(full, validation_data=empty, epochs=1, verbose=0)


def test_nan_loss_is_a_clear_error():
    teacher, student = _mlp_pair()
    kernel = student.layers[-1].kernel
    kernel.assign(np.full(kernel.shape, np.nan, "float32"))  # a diverged student
    distiller = kdistill.Distiller(teacher, student)
    distiller.compile(optimizer="adam")
    x, y = _mlp_data(8)
    with pytest.raises(FloatingPointError, match="NaN or Inf at epoch 1, batch 1"):
        distiller.fit(x, y, epochs=1, verbose=0)


# ------------------------------------------------------------------ non-finite steps and weights

def _assert_same_weights(model, weights):
    for a, b in zip(model.get_weights(), weights):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_a_step_with_a_nan_loss_leaves_the_weights_as_they_were(jit_compile):
    teacher, student = _mlp_pair()
    before = student.get_weights()
    distiller = kdistill.Distiller(teacher, student)
    distiller.compile(optimizer="adam", jit_compile=jit_compile)
    x, y = _mlp_data(8)
    x[3, 2] = np.nan  # one bad example: the teacher's logits and the loss are NaN
    with pytest.raises(FloatingPointError, match="batch 1 .optimizer step 1.*That update was not "
                                                 "applied.*learning rate.*temperature"):
        distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    _assert_same_weights(student, before)
    assert int(distiller.optimizer.iterations) == 0  # the optimizer did not advance either


def test_good_steps_before_a_nan_step_are_kept():
    teacher, student = _mlp_pair()
    before = student.get_weights()
    distiller = kdistill.Distiller(teacher, student)
    distiller.compile(optimizer="adam")
    x, y = _mlp_data(16)
    x[12, 0] = np.inf  # in the second batch
    with pytest.raises(FloatingPointError, match="batch 2 .optimizer step 2"):
        distiller.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    assert int(distiller.optimizer.iterations) == 1
    assert all(np.isfinite(w).all() for w in student.get_weights())
    assert max(np.abs(a - b).max() for a, b in zip(student.get_weights(), before)) > 0


class _FiniteLossNaNGradient(kdistill.objectives.Objective):
    """A loss of exactly 0 whose gradient is NaN (d sqrt(u)/du at u = 0 is Inf, times 0)."""

    def term_names(self):
        return ["sqrt_loss"]

    def compute(self, teacher_outputs, student_outputs, labels=None, padding_mask=None,
                token_weights=None):
        s = student_outputs["logits"]
        return {"sqrt_loss": (tf.sqrt(tf.reduce_sum(tf.square(s - tf.stop_gradient(s)), -1)),
                              self.weight)}


def test_a_step_with_finite_loss_but_nan_gradients_is_not_applied():
    teacher, student = _mlp_pair()
    before = student.get_weights()
    distiller = kdistill.Distiller(teacher, student, objectives=[_FiniteLossNaNGradient()])
    distiller.compile(optimizer="sgd")
    x, _ = _mlp_data(8)
    with pytest.raises(FloatingPointError, match="loss or its gradients are NaN or Inf"):
        distiller.fit(x, epochs=1, verbose=0)
    _assert_same_weights(student, before)


def test_check_finite_false_applies_every_step():
    teacher, student = _mlp_pair()
    distiller = kdistill.Distiller(teacher, student, objectives=[_FiniteLossNaNGradient()],
                                   check_finite=False)
    distiller.compile(optimizer="sgd")
    x, _ = _mlp_data(8)
    distiller.fit(x, epochs=1, verbose=0)
    assert not all(np.isfinite(w).all() for w in student.get_weights())


def test_a_nan_on_one_replica_skips_the_step_on_every_replica(two_replicas):
    x, y = _mlp_data(16)
    x[13, 1] = np.nan  # the second half of the global batch: replica 2's shard only
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    with two_replicas.scope():
        teacher, student = _mlp_pair()
        distiller = kdistill.Distiller(teacher, student)
        distiller.compile(optimizer=keras.optimizers.SGD(learning_rate=1.0))
    before = student.get_weights()
    with pytest.raises(FloatingPointError, match="That update was not applied"):
        distiller.fit(dataset, epochs=1, verbose=0)
    for variable in student.weights:  # every replica's copy is untouched
        for value in two_replicas.experimental_local_results(variable):
            assert np.isfinite(value.numpy()).all()
    _assert_same_weights(student, before)
    # The same data without the NaN does move the weights (the skip is not a no-op trainer).
    x[13, 1] = 0.0
    distiller.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(16), epochs=1, verbose=0)
    assert max(np.abs(a - b).max() for a, b in zip(student.get_weights(), before)) > 1e-4


def _nan_student():
    teacher, student = _mlp_pair()
    bias = student.layers[-1].bias
    bias.assign(np.array([0.0, np.nan, 0.0], "float32"))
    return kdistill.Distiller(teacher, student)


def test_save_and_export_refuse_non_finite_weights(tmp_path):
    distiller = _nan_student()
    message = (r"Refusing to (save|export|save the training state of) the model 'student': "
               r"its weight 'dense_\d+/bias' "
               r"holds 1 NaN/Inf value\(s\) \(of 3\)")
    with pytest.raises(ValueError, match=message):
        distiller.save(str(tmp_path / "student.keras"))
    with pytest.raises(ValueError, match=message):
        distiller.export(str(tmp_path / "exported"))
    with pytest.raises(ValueError, match=message):
        training_state.save_training_state(distiller.student,
                                           str(tmp_path / "s.weights.h5"), step=1)
    assert sorted(os.listdir(tmp_path)) == []  # nothing written


def test_export_refuses_to_overwrite(tmp_path):
    distiller = kdistill.Distiller(*_mlp_pair())
    path = tmp_path / "exported"
    os.makedirs(path)
    with pytest.raises(FileExistsError):
        distiller.export(str(path))


def test_nan_loss_and_bad_labels_are_caught_under_xla_too():
    teacher, student = _mlp_pair()
    before = student.get_weights()
    distiller = kdistill.Distiller(teacher, student)
    distiller.compile(optimizer="adam", jit_compile=True)  # XLA drops in-graph assertions
    x, y = _mlp_data(8)
    y[2] = 5  # in the first batch of 4 ...
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    with pytest.raises(FloatingPointError, match=r"labels outside \[0, num_classes\)"):
        # ... from a Python generator, which the first-batch check does not peek.
        distiller.fit((b for b in dataset.as_numpy_iterator()), epochs=1, verbose=0,
                      steps_per_epoch=2)
    _assert_same_weights(student, before)


# ------------------------------------------------------------------ no teacher: a teacher cache

def test_teacher_none_trains_on_a_teacher_cache(tmp_path):
    teacher, student = _mlp_pair()
    x, y = _mlp_data(24)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    cache = str(tmp_path / "cache")
    kdistill.data.cache_teacher_outputs(teacher, data, cache, dtype="float32")
    batches = kdistill.data.load_teacher_cache(cache, batch_size=8)
    before = [w.copy() for w in student.get_weights()]
    distiller = kdistill.Distiller(None, student, temperature=3.0, alpha=0.3)
    distiller.compile(optimizer="sgd", metrics=["accuracy"])
    history = distiller.fit(batches, epochs=1, verbose=0)
    assert {"loss", "kd_loss", "student_loss", "accuracy"} <= set(history.history)
    assert any(not np.allclose(a, b) for a, b in zip(before, student.get_weights()))
    logs = distiller.evaluate(batches, return_dict=True, verbose=0)
    t, s = teacher.predict(x, verbose=0), student.predict(x, verbose=0)
    kd = np_kl(t.astype(np.float64), s.astype(np.float64), 3.0)
    np.testing.assert_allclose(logs["kd_loss"], kd.mean(), rtol=1e-4)
    # predict strips the teacher targets and runs the student. Batches of 8 vs predict's 32:
    # float32 logits near zero differ by ~1e-7 between batchings on some CPUs, so an atol.
    np.testing.assert_allclose(distiller.predict(batches, verbose=0), s, rtol=1e-5, atol=1e-5)
    clone = kdistill.Distiller.from_config(distiller.get_config())
    assert clone.teacher is None and clone.objectives[0].temperature == 3.0


def test_cached_teacher_builds_intermediate_objectives_and_refuses_what_it_lacks(tmp_path):
    from kdistill import objectives as O

    teacher = testing.tiny_bert_classifier(num_layers=2, hidden_dim=16, name="teacher")
    student = testing.tiny_bert_classifier(num_layers=1, hidden_dim=8, name="student")
    data = testing.token_dataset(num_examples=8, batch_size=4)
    logits_only, with_hidden = str(tmp_path / "logits"), str(tmp_path / "hidden")
    kdistill.data.cache_teacher_outputs(teacher, data, logits_only)
    kdistill.data.cache_teacher_outputs(teacher, data, with_hidden,
                                        taps=["logits", "hidden_states"])

    def objectives():
        return [O.LogitsKD(), O.HiddenStateKD(layer_map="uniform")]

    with pytest.raises(ValueError, match=r"teacher=None the objectives \['HiddenStateKD'\].*"
                                         r"CachedTeacher\(cache_directory\)"):
        kdistill.Distiller(None, student, objectives=objectives())
    with pytest.raises(ValueError, match=r"holds the taps \['logits'\], but the objectives "
                                         r"\['HiddenStateKD'\] need \['hidden_states'\]"):
        kdistill.Distiller(kdistill.data.CachedTeacher(logits_only), student,
                           objectives=objectives())
    distiller = kdistill.Distiller(kdistill.data.CachedTeacher(with_hidden), student,
                                   objectives=objectives())
    hidden = distiller.objectives[1]
    assert hidden.pairs == ((0, 1),) and hidden.projections[0].kernel.shape == (8, 16)
    distiller.compile(optimizer="adam")
    history = distiller.fit(kdistill.data.load_teacher_cache(with_hidden, 4), epochs=1,
                            verbose=0)
    assert np.isfinite(history.history["hidden_loss"][0])
    logits_batch = next(iter(kdistill.data.load_teacher_cache(logits_only, 4)))
    with pytest.raises(ValueError, match=r"teacher targets hold the taps \['logits'\], but the "
                                         r"objectives \['HiddenStateKD'\] need"):
        distiller.test_step(logits_batch)  # what fit traces; eager here, to keep the test fast
    with pytest.raises(ValueError, match="carries no teacher targets and the Distiller has no "
                                         "teacher"):
        distiller.test_step(next(iter(data)))
    clone = kdistill.Distiller.from_config(distiller.get_config())
    assert clone.teacher.taps == ("logits", "hidden_states") and clone.teacher.num_layers == 2


def test_importing_the_distiller_does_not_import_the_data_pipeline():
    import subprocess
    import sys

    code = ("import sys, kdistill.distiller; heavy = sorted(m for m in sys.modules if m in "
            "('tensorflow_datasets', 'kdistill.data', 'kdistill.data.augment')); "
            "assert not heavy, heavy")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    from kdistill.cached_teacher import CachedTeacher

    assert kdistill.data.CachedTeacher is CachedTeacher  # the re-export stays public
