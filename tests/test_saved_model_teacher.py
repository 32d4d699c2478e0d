"""SavedModel teachers: tf-keras (Keras 2) exports, TFX-style signatures, checks, distillation."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import kdistill
from kdistill.saved_model_teacher import SavedModelTeacher, from_saved_model
from kdistill.testing import tiny_bert_classifier, token_batch

SEQ, VOCAB = 8, 64


def _tf_keras_teacher(num_classes=3, softmax=False):
    """A Keras 2 bag-of-embeddings classifier over keras-hub style token inputs."""
    tf_keras.utils.set_random_seed(0)
    token_ids = tf_keras.Input((SEQ,), dtype="int32", name="token_ids")
    mask = tf_keras.Input((SEQ,), dtype="int32", name="padding_mask")
    init = tf_keras.initializers.RandomNormal(stddev=1.0, seed=1)  # logits of order 1
    h = tf_keras.layers.Embedding(VOCAB, 8, embeddings_initializer=init)(token_ids)
    m = tf_keras.layers.Lambda(lambda v: tf.cast(v, "float32")[..., None])(mask)
    pooled = tf_keras.layers.Lambda(
        lambda a: tf.reduce_sum(a[0] * a[1], 1) / tf.maximum(tf.reduce_sum(a[1], 1), 1.0))([h, m])
    logits = tf_keras.layers.Dense(num_classes, kernel_initializer=init, name="logits")(pooled)
    if softmax:
        logits = tf_keras.layers.Softmax(name="probabilities")(logits)
    return tf_keras.Model({"token_ids": token_ids, "padding_mask": mask}, logits)


def _tfx_style_save(model, path):
    """Saves like a TFX Trainer: `serving_default` parses tf.Examples; `serving_raw` takes
    tensors."""
    spec = {"token_ids": tf.io.FixedLenFeature([SEQ], tf.int64),
            "padding_mask": tf.io.FixedLenFeature([SEQ], tf.int64)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_examples(serialized):
        features = tf.io.parse_example(serialized, spec)
        return {"logits": model({k: tf.cast(v, tf.int32) for k, v in features.items()})}

    @tf.function(input_signature=[tf.TensorSpec([None, SEQ], tf.int32, name="token_ids"),
                                  tf.TensorSpec([None, SEQ], tf.int32, name="padding_mask")])
    def serve_raw(token_ids, padding_mask):
        return {"logits": model({"token_ids": token_ids, "padding_mask": padding_mask})}

    tf.saved_model.save(model, path, signatures={"serving_default": serve_examples,
                                                 "serving_raw": serve_raw})


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("saved_models")
    model = _tf_keras_teacher()
    model.save(str(root / "tf_keras"))  # Keras 2 SavedModel format
    tf.saved_model.save(model, str(root / "tf_saved_model"))
    _tfx_style_save(model, str(root / "tfx"))
    _tf_keras_teacher(softmax=True).save(str(root / "probabilities"))
    _tf_keras_teacher(num_classes=1).save(str(root / "one_logit"))
    x, _ = token_batch(batch_size=6, sequence_length=SEQ, vocabulary_size=VOCAB)
    expected = model.predict({"token_ids": x["token_ids"],
                              "padding_mask": x["padding_mask"].astype("int32")}, verbose=0)
    return root, x, expected


@pytest.mark.parametrize("kind,endpoint", [("tf_keras", "serving_default"),
                                           ("tf_saved_model", "serving_default"),
                                           ("tfx", "serving_raw")])
def test_tf_keras_saved_models_load_as_frozen_teachers(saved, kind, endpoint):
    root, x, expected = saved
    teacher = from_saved_model(root / kind, endpoint=endpoint, num_classes=3)
    assert isinstance(teacher, keras.Model) and teacher.built and not teacher.trainable_weights
    assert sorted(teacher.input) == ["padding_mask", "token_ids"]
    np.testing.assert_allclose(teacher(x), expected, atol=1e-5)  # bool mask cast to int32


def test_distill_a_tf_keras_teacher_into_a_keras3_student(saved):
    root, _, _ = saved
    teacher = kdistill.teachers.load_teacher(root / "tf_keras")
    student = tiny_bert_classifier(vocabulary_size=VOCAB, max_sequence_length=SEQ, num_classes=3,
                                   num_layers=1)
    x, y = token_batch(batch_size=32, sequence_length=SEQ, vocabulary_size=VOCAB, seed=1)
    before = teacher(x)
    distiller = kdistill.Distiller(teacher, student, temperature=2.0, alpha=0.0)
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2), metrics=["teacher_agreement"])
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    history = distiller.fit(ds, epochs=12, verbose=0).history
    assert history["kd_loss"][-1] < 0.5 * history["kd_loss"][0]
    assert history["teacher_agreement"][-1] > history["teacher_agreement"][0]
    np.testing.assert_allclose(teacher(x), before)  # the teacher never changes


def _distil_weights(path, strategy=None):
    x, y = token_batch(batch_size=24, sequence_length=SEQ, vocabulary_size=VOCAB, seed=1)
    scope = strategy.scope() if strategy is not None else tf.device("/cpu:0")
    with scope:  # the SavedModel is loaded (and probed) inside the strategy's scope
        keras.utils.set_random_seed(0)
        teacher = from_saved_model(path)
        student = tiny_bert_classifier(vocabulary_size=VOCAB, max_sequence_length=SEQ,
                                       num_classes=3, num_layers=1)
        distiller = kdistill.Distiller(teacher, student, temperature=2.0, alpha=0.5)
        distiller.compile(optimizer=keras.optimizers.SGD(0.5))
    distiller.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(16), epochs=2, verbose=0)
    return [w.numpy() for w in student.weights]


def test_one_and_two_replicas_give_the_same_weights(saved, two_replicas):
    root, _, _ = saved
    one = _distil_weights(root / "tf_keras")
    keras.backend.clear_session()
    two = _distil_weights(root / "tf_keras", two_replicas)
    for a, b in zip(one, two):  # replicas sum gradients in another order: float32 rounding
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_checks_with_clear_errors(saved):
    root, x, _ = saved
    with pytest.raises(ValueError, match="takes strings \\(\\['examples'\\]\\).*tf.Example.*"
                                         "\\['serving_raw'\\]: pass endpoint="):
        from_saved_model(root / "tfx")
    with pytest.raises(ValueError, match="no 'serve' signature.*signatures found: "
                                         "\\['serving_default'\\]"):
        from_saved_model(root / "tf_keras", endpoint="serve")
    with pytest.raises(ValueError, match="looks like probabilities, not logits.*sums to 1.*"
                                         "from_probabilities=True"):
        from_saved_model(root / "probabilities")
    with pytest.raises(ValueError, match="3 classes but num_classes=2"):
        from_saved_model(root / "tf_keras", num_classes=2)
    with pytest.raises(ValueError, match="one value per example"):
        from_saved_model(root / "one_logit")
    with pytest.raises(ValueError, match="output_key 'probs' is not an output"):
        from_saved_model(root / "tf_keras", output_key="probs")

    teacher = from_saved_model(root / "tf_keras")
    with pytest.raises(ValueError, match="teacher outputs 3 logits per example but the student "
                                         "outputs 2"):
        kdistill.Distiller(teacher, tiny_bert_classifier(num_classes=2))
    with pytest.raises(ValueError, match="only provides the taps \\['logits'\\].*HiddenStateKD"):
        kdistill.Distiller(teacher, tiny_bert_classifier(num_classes=3),
                           objectives=kdistill.objectives.tinybert())


def test_probabilities_accepted_as_log_probabilities(saved):
    root, x, expected = saved
    teacher = from_saved_model(root / "probabilities", from_probabilities=True)
    probabilities = tf.nn.softmax(expected).numpy()
    np.testing.assert_allclose(tf.nn.softmax(teacher(x)), probabilities, atol=1e-6)
    np.testing.assert_allclose(tf.nn.softmax(teacher(x) / 4.0),
                               tf.nn.softmax(expected / 4.0), atol=1e-5)  # any temperature


def test_config_round_trip(saved):
    root, x, expected = saved
    teacher = from_saved_model(root / "tfx", endpoint="serving_raw", num_classes=3)
    restored = SavedModelTeacher.from_config(teacher.get_config())
    assert restored.endpoint == "serving_raw" and restored.output_key == "logits"
    np.testing.assert_allclose(restored(x), expected, atol=1e-5)


def test_readme_recipe_adds_a_tensor_signature_to_a_tfx_model(saved, tmp_path):
    """README 'Teachers from a SavedModel': a tf.Example-only SavedModel gets a raw signature."""
    root, x, expected = saved
    loaded = tf.saved_model.load(str(root / "tfx"))

    @tf.function(input_signature=[tf.TensorSpec([None, SEQ], tf.int32, name="token_ids"),
                                  tf.TensorSpec([None, SEQ], tf.int32, name="padding_mask")])
    def raw(token_ids, padding_mask):
        return {"logits": loaded({"token_ids": token_ids, "padding_mask": padding_mask})}

    tf.saved_model.save(loaded, str(tmp_path / "raw"), signatures={"serving_default": raw})
    np.testing.assert_allclose(from_saved_model(tmp_path / "raw")(x), expected, atol=1e-5)


@pytest.mark.large  # ~20 s of CPU: TFDS, tokenising, a tf_keras fit and save, a keras-hub student
def test_example_runs_tiny(tmp_path, monkeypatch, capsys):
    """examples/savedmodel_teacher.py --tiny: tf_keras teacher -> SavedModel -> Keras 3 student."""
    import os
    import runpy

    script = os.path.join(os.path.dirname(__file__), "..", "examples", "savedmodel_teacher.py")
    argv = ["savedmodel_teacher.py", "--tiny", "--out", str(tmp_path)]
    monkeypatch.setattr("sys.argv", argv)
    runpy.run_path(script, run_name="__main__")
    out = capsys.readouterr().out
    assert "max |logit difference| vs tf_keras 0.00e+00" in out
    assert "student, distilled" in out and (tmp_path / "teacher" / "saved_model.pb").exists()
    with pytest.raises(SystemExit, match="exists; pass --overwrite"):  # never replaced silently
        runpy.run_path(script, run_name="__main__")
