"""Teacher output cache: round trips, same training as the live teacher, staleness, bad input."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import kdistill
from kdistill import objectives as O
from kdistill import testing
from kdistill.data import teacher_cache as tc
from kdistill.taps import build_taps

ALL_TAPS = ["logits", "embeddings", "hidden_states", "attention_scores", "attention_values"]


def _pair():
    teacher = testing.tiny_bert_classifier(num_layers=2, hidden_dim=16, name="teacher")
    student = testing.tiny_bert_classifier(num_layers=1, hidden_dim=8, name="student")
    return teacher, student


def _data(num_examples=14, batch_size=8, seed=0):
    return testing.token_dataset(num_examples=num_examples, batch_size=batch_size,
                                 sequence_length=8, seed=seed)


@pytest.fixture(scope="module")
def teacher():
    keras.utils.set_random_seed(0)
    return testing.tiny_bert_classifier(num_layers=2, hidden_dim=16, name="teacher")


def _masked(values, mask, axes):
    """Zero the padded positions of `values` along `axes` (mask `[batch, seq]`)."""
    values = np.array(values)
    for axis in axes:
        shape = [1] * values.ndim
        shape[0], shape[axis] = mask.shape
        values = values * mask.reshape(shape)
    return values


def _check_against_live(teacher, directory, data, atol, sequence_length=None):
    live = build_taps(teacher, ALL_TAPS)
    cached = tc.load_teacher_cache(directory, batch_size=8, sequence_length=sequence_length)
    n = 0
    for (x, y, targets), (x_ref, y_ref) in zip(cached, data):
        mask = np.asarray(x_ref["padding_mask"])
        length = x["token_ids"].shape[1]
        expected_length = sequence_length or int(np.flatnonzero(mask.any(0))[-1]) + 1
        assert length == expected_length
        cut = mask[:, :length].astype("float32")
        for name in ("token_ids", "padding_mask", "segment_ids"):
            np.testing.assert_array_equal(x[name], np.asarray(x_ref[name])[:, :length])
        np.testing.assert_array_equal(y, y_ref)
        ref = live(x_ref)
        np.testing.assert_allclose(targets["logits"], ref["logits"], atol=atol)
        np.testing.assert_allclose(_masked(targets["embeddings"], cut, [1]),
                                   _masked(ref["embeddings"][:, :length], cut, [1]), atol=atol)
        for layer in range(2):
            for tap, axes in (("hidden_states", [1]), ("attention_values", [1]),
                              ("attention_scores", [2, 3])):
                got = targets[tap][layer]
                want = np.asarray(ref[tap][layer])[tuple(
                    slice(0, length) if a in axes else slice(None) for a in range(got.ndim))]
                np.testing.assert_allclose(_masked(got, cut, axes), _masked(want, cut, axes),
                                           atol=atol)
        n += len(y)
    assert n == 14


def test_float32_and_float16_round_trips_of_every_tap(teacher, tmp_path):
    data = _data()
    f32 = tc.cache_teacher_outputs(teacher, data, str(tmp_path / "f32"), taps=ALL_TAPS,
                                   dtype="float32", examples_per_shard=5)
    assert [s["num_examples"] for s in f32["shards"]] == [5, 5, 4]
    assert f32["teacher"]["num_layers"] == 2 and f32["teacher"]["num_heads"] == 2
    assert f32["data_fingerprint"] == tc.dataset_fingerprint(_data(batch_size=3))
    # float32 is stored exactly; the live taps are recomputed eagerly (the cache ran the teacher
    # in a tf.function), which may round differently on another CPU: 1e-5, not bit equality.
    _check_against_live(teacher, str(tmp_path / "f32"), data, atol=1e-5)          # per batch
    _check_against_live(teacher, str(tmp_path / "f32"), data, atol=1e-5, sequence_length=8)
    f16 = tc.cache_teacher_outputs(teacher, data, str(tmp_path / "f16"), taps=ALL_TAPS)
    assert f16["features"]["t/hidden_states/0"]["stored"] == "float16"
    assert 0.5 < f16["bytes"] / f32["bytes"] < 0.6  # taps dominate; inputs stay exact
    _check_against_live(teacher, str(tmp_path / "f16"), data, atol=2e-3)
    assert sorted(os.listdir(tmp_path)) == ["f16", "f32"]  # no temporary directory left


def test_top_k_rebuilds_renormalised_soft_targets(tmp_path):
    keras.utils.set_random_seed(1)
    teacher = testing.tiny_bert_classifier(num_classes=6, name="teacher")
    data = testing.token_dataset(num_examples=6, batch_size=3, num_classes=6)
    tc.cache_teacher_outputs(teacher, data, str(tmp_path / "c"), top_k=2, dtype="float32")
    x, y, targets = next(iter(tc.load_teacher_cache(str(tmp_path / "c"), batch_size=6)))
    t = np.asarray(targets["logits"], "float64")
    ref = np.concatenate([teacher.predict(xb, verbose=0) for xb, _ in data]).astype("float64")
    top = np.argsort(-ref, axis=1)[:, :2]
    kept = np.zeros_like(ref, bool)
    np.put_along_axis(kept, top, True, axis=1)
    np.testing.assert_allclose(t[kept], ref[kept], atol=1e-5)
    assert np.all(t[~kept] == tc.TOP_K_FILL)
    for temperature in (1.0, 4.0):  # softmax(t/T) = teacher's softmax renormalised over the top 2
        p = np.exp((ref - ref.max(1, keepdims=True)) / temperature) * kept
        expected = p / p.sum(1, keepdims=True)
        got = tf.nn.softmax(tf.constant(t / temperature, "float32")).numpy()
        np.testing.assert_allclose(got, expected, atol=1e-5)
    kd = kdistill.losses.kl_divergence(targets["logits"], tf.zeros([6, 6]), temperature=2.0)
    assert np.all(np.isfinite(kd))


def test_token_level_top_k_and_unlabelled_records(tmp_path):
    """The public record format on its own: rank-2 logits per example, no labels, 2 shards."""
    rng = np.random.default_rng(0)
    directory = tmp_path / "c"
    directory.mkdir()
    examples = []
    for i in range(5):
        length = 3 + i % 3
        x = {"token_ids": np.arange(1, 7) * (np.arange(6) < length),
             "padding_mask": np.arange(6) < length}
        outputs = {"logits": rng.normal(size=(4, 10)).astype("float32")}
        examples.append((x, outputs))
    features = tc.describe_teacher_example(*examples[0], top_k=3)
    assert features["t/logits/indices"] == {"dtype": "int32", "stored": "int32",
                                            "shape": [4, 3], "num_classes": 10}
    for shard, chunk in enumerate((examples[:3], examples[3:])):
        with tf.io.TFRecordWriter(str(directory / f"shard-{shard:05d}.tfrecord")) as writer:
            for x, outputs in chunk:
                writer.write(tc.encode_teacher_example(x, outputs, top_k=3))
    tc.write_manifest(str(directory), features, 5, {"fingerprint": "beam"}, "data", ["logits"],
                      top_k=3, max_length=5)
    batches = list(tc.load_teacher_cache(str(directory), batch_size=5, verify_checksums=True))
    (x, targets), = batches  # unlabelled: (inputs, teacher_targets)
    assert x["token_ids"].shape == (5, 5) and x["padding_mask"].dtype == tf.bool
    logits = np.asarray(targets["logits"])
    for i, (_, outputs) in enumerate(examples):
        ref = outputs["logits"]
        top = np.argsort(-ref, axis=-1)[:, :3]
        np.testing.assert_allclose(np.take_along_axis(logits[i], top, -1),
                                   np.take_along_axis(ref, top, -1), rtol=1e-3)
        assert (logits[i] == tc.TOP_K_FILL).sum() == 4 * 7


def test_shuffle_is_deterministic_and_complete(teacher, tmp_path):
    data = _data(num_examples=14)
    tc.cache_teacher_outputs(teacher, data, str(tmp_path / "c"), examples_per_shard=4)

    def order(**kwargs):
        ds = tc.load_teacher_cache(str(tmp_path / "c"), batch_size=4, sequence_length=8,
                                   **kwargs)
        assert int(ds.cardinality()) == 4
        return [tuple(row) for x, _, _ in ds for row in np.asarray(x["token_ids"])]

    plain = order()
    assert plain == [tuple(r) for x, _ in data for r in np.asarray(x["token_ids"])]
    a, b, c = order(shuffle_seed=1), order(shuffle_seed=1), order(shuffle_seed=2)
    assert a == b != plain and a != c
    assert sorted(a) == sorted(plain)


# ------------------------------------------------------------------ same training as live


def _fit_weights(strategy, teacher, student_weights, data, objectives, cached_dir=None,
                 sequence_length=None):
    with strategy.scope():
        student = testing.tiny_bert_classifier(num_layers=1, hidden_dim=8, name="student")
        student.set_weights(student_weights)
        if cached_dir is None:
            distiller_teacher = teacher
        else:
            distiller_teacher = kdistill.data.CachedTeacher(cached_dir)
            data = tc.load_teacher_cache(cached_dir, batch_size=8, teacher=teacher,
                                         sequence_length=sequence_length)
        keras.utils.set_random_seed(7)  # the projection's initial weights
        distiller = kdistill.Distiller(distiller_teacher, student, objectives=objectives())
        distiller.compile(optimizer=keras.optimizers.SGD(learning_rate=0.5))
    history = distiller.fit(data, epochs=1, verbose=0)
    weights = student.get_weights() + [w.numpy() for o in distiller.objectives
                                       for w in o.trainable_weights]
    return weights, history.history


def _objectives():
    return [O.LogitsKD(temperature=2.0, alpha=0.5), O.HiddenStateKD(layer_map=[(0, 1)])]


def test_fit_on_cached_float32_targets_equals_fit_with_live_teacher(teacher, tmp_path,
                                                                    two_replicas):
    data = _data(num_examples=14)  # last batch of 6: uneven over two replicas too
    cache = str(tmp_path / "c")
    tc.cache_teacher_outputs(teacher, data, cache, taps=["logits", "hidden_states"],
                             dtype="float32")
    keras.utils.set_random_seed(3)
    initial = testing.tiny_bert_classifier(num_layers=1, hidden_dim=8).get_weights()
    one = tf.distribute.get_strategy()
    live, live_history = _fit_weights(one, teacher, initial, data, _objectives)
    assert len(live) == len(initial) + 2  # student + the hidden-state projection
    assert max(np.abs(a - b).max() for a, b in zip(live, initial)) > 1e-3
    runs = {  # default per-batch padding; the same fixed length as the live batches
        "one replica, per-batch padding": _fit_weights(one, teacher, initial, data,
                                                       _objectives, cache),
        "two replicas, fixed padding": _fit_weights(two_replicas, teacher, initial, data,
                                                    _objectives, cache, 8),
    }
    for name, (weights, history) in runs.items():
        for a, b in zip(live, weights):
            # Other padding and replicas round differently (~1e-7 on weights near zero); a
            # wrong target or scaling differs by far more than 1e-5 (training moves > 1e-3).
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=name)
        for key in ("loss", "kd_loss", "hidden_loss"):
            np.testing.assert_allclose(history[key], live_history[key], rtol=1e-5, err_msg=name)


# ------------------------------------------------------------------ staleness and damage


@pytest.fixture()
def cache_dir(teacher, tmp_path):
    directory = str(tmp_path / "c")
    tc.cache_teacher_outputs(teacher, _data(), directory, examples_per_shard=8)
    return directory


def test_stale_teacher_or_data_is_refused(teacher, cache_dir):
    tc.load_teacher_cache(cache_dir, 8, teacher=teacher,
                          expected_fingerprint=tc.dataset_fingerprint(_data()))
    changed = testing.tiny_bert_classifier(num_layers=2, hidden_dim=16, name="teacher")
    changed.set_weights(teacher.get_weights())
    tc.load_teacher_cache(cache_dir, 8, teacher=changed)  # same config and weights: accepted
    kernel = changed.layers[-1].kernel
    kernel.assign(kernel + 1e-3)
    with pytest.raises(ValueError, match="Stale teacher cache.*weights or config changed"):
        tc.load_teacher_cache(cache_dir, 8, teacher=changed)
    other_data = tc.dataset_fingerprint(_data(seed=1))
    with pytest.raises(ValueError, match="Stale teacher cache.*made from data.*examples differ"):
        tc.load_teacher_cache(cache_dir, 8, expected_fingerprint=other_data)


def _edit_manifest(directory, **changes):
    path = os.path.join(directory, tc.MANIFEST)
    with open(path) as f:
        manifest = json.load(f)
    manifest.update(changes)
    with open(path, "w") as f:
        json.dump(manifest, f)


def test_damaged_caches_are_refused(cache_dir, tmp_path):
    shard = os.path.join(cache_dir, "shard-00001.tfrecord")
    data = open(shard, "rb").read()
    with open(shard, "wb") as f:  # same size, one byte flipped
        f.write(data[:-3] + bytes([data[-3] ^ 1]) + data[-2:])
    tc.load_teacher_cache(cache_dir, 8)  # sizes match: only the checksum notices
    with pytest.raises(ValueError, match="shard-00001.tfrecord does not match its sha256"):
        tc.load_teacher_cache(cache_dir, 8, verify_checksums=True)
    with open(shard, "wb") as f:
        f.write(data[:-10])
    with pytest.raises(ValueError, match=f"shard-00001.tfrecord has {len(data) - 10} bytes"):
        tc.load_teacher_cache(cache_dir, 8)
    os.remove(shard)
    with pytest.raises(ValueError, match="incomplete: shard shard-00001.tfrecord is missing"):
        tc.load_teacher_cache(cache_dir, 8)
    _edit_manifest(cache_dir, format_version=0)
    with pytest.raises(ValueError, match="format version 0; this kdistill reads version 1"):
        tc.load_teacher_cache(cache_dir, 8)
    with pytest.raises(FileNotFoundError, match="manifest.json is missing"):
        tc.load_teacher_cache(str(tmp_path), 8)


def test_bad_load_arguments(cache_dir):
    with pytest.raises(ValueError, match=r"holds taps \['logits'\], not \['hidden_states'\]"):
        tc.load_teacher_cache(cache_dir, 8, taps=["hidden_states"])
    with pytest.raises(ValueError, match="sequence_length=4 is shorter than the longest"):
        tc.load_teacher_cache(cache_dir, 8, sequence_length=4)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        tc.load_teacher_cache(cache_dir, 0)


# ------------------------------------------------------------------ writing: refusals


def test_overwrite_rules(teacher, cache_dir, tmp_path):
    before = open(os.path.join(cache_dir, tc.MANIFEST)).read()
    with pytest.raises(FileExistsError, match="not empty; pass overwrite=True"):
        tc.cache_teacher_outputs(teacher, _data(), cache_dir)
    assert open(os.path.join(cache_dir, tc.MANIFEST)).read() == before
    manifest = tc.cache_teacher_outputs(teacher, _data(num_examples=6), cache_dir,
                                        overwrite=True)
    assert manifest["num_examples"] == 6
    assert sorted(os.listdir(cache_dir)) == ["manifest.json", "shard-00000.tfrecord"]
    users = tmp_path / "users"
    users.mkdir()
    (users / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="is not a teacher cache.*only replaces caches"):
        tc.cache_teacher_outputs(teacher, _data(), str(users), overwrite=True)
    assert (users / "notes.txt").read_text() == "keep me"
    (tmp_path / "empty").mkdir()
    tc.cache_teacher_outputs(teacher, _data(), str(tmp_path / "empty"))  # empty is fine


def test_bad_cache_arguments(teacher, tmp_path):
    directory = str(tmp_path / "c")
    empty = _data().unbatch().take(0).batch(4)
    with pytest.raises(ValueError, match="dataset is empty"):
        tc.cache_teacher_outputs(teacher, empty, directory)
    assert os.listdir(tmp_path) == []  # nothing left behind
    with pytest.raises(ValueError, match="expected \\[batch, sequence\\].*batch\\(n\\)"):
        tc.cache_teacher_outputs(teacher, _data().unbatch(), directory)
    with pytest.raises(ValueError, match="Unknown tap"):
        tc.cache_teacher_outputs(teacher, _data(), directory, taps=["hidden"])
    with pytest.raises(ValueError, match="top_k=3 keeps every class"):
        tc.cache_teacher_outputs(teacher, _data(), directory, top_k=3)
    with pytest.raises(ValueError, match="dtype must be one of"):
        tc.cache_teacher_outputs(teacher, _data(), directory, dtype="bfloat16")
    assert os.listdir(tmp_path) == []
