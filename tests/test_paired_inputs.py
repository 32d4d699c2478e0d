"""A teacher and a student with different tokenizers over the same raw text (issue 15).

Two real keras-hub WordPiece tokenizers with different vocabularies and sequence lengths: the
teacher's covers whole words, the student's is a small one learnt from the corpus. Logits
objectives train live (`Distiller(..., paired_inputs=True)` on `kdistill.data.paired_dataset`)
and from a teacher cache keyed by the texts (`cache_paired_teacher_outputs` /
`load_paired_teacher_cache`), on one and on two replicas, against a NumPy reference; objectives
that need the same tokens are refused; the docs example in docs/methods.md runs as written.
"""

import pathlib
import re

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

import kdistill
from kdistill import objectives as O
from kdistill import testing
from kdistill.data import (
    CachedTeacher,
    cache_paired_teacher_outputs,
    load_paired_teacher_cache,
    paired_dataset,
    texts_fingerprint,
)

ROOT = pathlib.Path(__file__).resolve().parent.parent
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
POSITIVE, NEGATIVE = ["good", "great", "funny", "moving"], ["bad", "dull", "tired", "weak"]
FILLER = ["the", "film", "plot", "was", "a", "cast", "and", "very"]


def _corpus(num_examples, seed=0):
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for _ in range(num_examples):
        label = int(rng.integers(0, 2))
        words = list(rng.choice(FILLER, size=int(rng.integers(2, 5))))
        words += list(rng.choice(POSITIVE if label else NEGATIVE, size=int(rng.integers(1, 3))))
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(label)
    return texts, np.asarray(labels, "int32")


TEXTS, LABELS = _corpus(14)  # 14: the last batch of 8 is uneven (6), split 3 + 3 over replicas


def _preprocessor(vocabulary, length):
    tokenizer = keras_hub.tokenizers.BertTokenizer(vocabulary=vocabulary)
    return keras_hub.models.BertTextClassifierPreprocessor(tokenizer, sequence_length=length)


@pytest.fixture(scope="module")
def preprocessors():
    # The teacher: whole words (its own WordPiece vocabulary), 12 tokens. The student: 40
    # pieces learnt from the corpus (mostly characters), 24 tokens. Other ids, other lengths.
    teacher = _preprocessor(SPECIAL + sorted(POSITIVE + NEGATIVE + FILLER), 12)
    learnt = keras_hub.tokenizers.compute_word_piece_vocabulary(
        tf.data.Dataset.from_tensor_slices(_corpus(64, seed=1)[0]), vocabulary_size=40,
        reserved_tokens=SPECIAL)
    student = _preprocessor(learnt, 24)
    assert student.tokenizer.vocabulary_size() != teacher.tokenizer.vocabulary_size()
    return student, teacher


def _models(preprocessors):
    student_pre, teacher_pre = preprocessors
    keras.utils.set_random_seed(1)
    teacher = testing.tiny_bert_classifier(
        vocabulary_size=teacher_pre.tokenizer.vocabulary_size(), num_layers=2, hidden_dim=16,
        num_classes=2, max_sequence_length=12, name="teacher")
    student = testing.tiny_bert_classifier(
        vocabulary_size=student_pre.tokenizer.vocabulary_size(), num_layers=1, hidden_dim=8,
        num_classes=2, max_sequence_length=24, name="student")
    teacher(teacher_pre(TEXTS[:2]))
    student(student_pre(TEXTS[:2]))
    for model, scale in ((teacher, 300.0), (student, 100.0)):  # logits of order 1, not 1e-3
        kernel = model.output_dense.kernel
        kernel.assign(kernel * scale)
    return teacher, student


def _tokens(preprocessor, texts):
    return {k: v.numpy() for k, v in preprocessor(tf.constant(texts)).items()}


def _log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_each_model_reads_its_own_tokens_of_the_same_texts(preprocessors):
    student_pre, teacher_pre = preprocessors
    batches = list(paired_dataset(TEXTS, student_pre, teacher_pre, labels=LABELS, batch_size=8))
    assert [int(y.shape[0]) for _, y in batches] == [8, 6]
    x, y = batches[0]
    for role, pre in (("student", student_pre), ("teacher", teacher_pre)):
        for name, value in _tokens(pre, TEXTS[:8]).items():
            np.testing.assert_array_equal(x[role][name].numpy(), value, err_msg=f"{role} {name}")
    assert x["student"]["token_ids"].shape[1] == 24 and x["teacher"]["token_ids"].shape[1] == 12
    np.testing.assert_array_equal(y.numpy(), LABELS[:8])
    # Unlabelled texts (a dataset of strings) give the input dict alone; a seed shuffles.
    unlabelled = paired_dataset(tf.data.Dataset.from_tensor_slices(TEXTS), student_pre,
                                teacher_pre, batch_size=14, shuffle_seed=0)
    first = next(iter(unlabelled))
    assert sorted(first) == ["student", "teacher"]
    assert sorted(map(tuple, first["teacher"]["token_ids"].numpy().tolist())) == sorted(
        map(tuple, _tokens(teacher_pre, TEXTS)["token_ids"].tolist()))


def test_kd_terms_equal_a_numpy_reference_over_both_tokenizations(preprocessors):
    student_pre, teacher_pre = preprocessors
    teacher, student = _models(preprocessors)
    distiller = kdistill.Distiller(teacher, student, temperature=2.0, alpha=0.5,
                                   paired_inputs=True)
    distiller.compile(optimizer="sgd", metrics=["accuracy"])
    data = paired_dataset(TEXTS, student_pre, teacher_pre, labels=LABELS, batch_size=14)
    logs = distiller.evaluate(data, verbose=0, return_dict=True)
    t = teacher.predict(_tokens(teacher_pre, TEXTS), verbose=0) / 2.0
    s = student.predict(_tokens(student_pre, TEXTS), verbose=0)
    p_t = np.exp(_log_softmax(t))
    kd = 4.0 * (p_t * (_log_softmax(t) - _log_softmax(s / 2.0))).sum(-1).mean()
    ce = -_log_softmax(s)[np.arange(len(LABELS)), LABELS].mean()
    np.testing.assert_allclose(logs["kd_loss"], kd, rtol=1e-4)
    np.testing.assert_allclose(logs["student_loss"], ce, rtol=1e-4)
    np.testing.assert_allclose(logs["loss"], 0.5 * ce + 0.5 * kd, rtol=1e-4)
    # predict/call take either form and run the student on its own tokens.
    paired_x = next(iter(data))[0]
    np.testing.assert_allclose(distiller.predict(paired_x, verbose=0), s, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(distiller(paired_x["student"]), s, rtol=1e-5, atol=1e-6)


def _fit_weights(strategy, preprocessors, initial, data, teacher="live"):
    """The student's weights and history after 2 epochs of Hinton KD from `initial`.

    `initial` holds the teacher's and the student's weights; `teacher` is "live" (a paired
    Distiller on the live teacher) or the stand-in of a cache (`CachedTeacher`, or None).
    """
    with strategy.scope():
        live_teacher, student = _models(preprocessors)
        live_teacher.set_weights(initial[0])
        student.set_weights(initial[1])
        paired = teacher == "live"
        distiller = kdistill.Distiller(live_teacher if paired else teacher, student,
                                       temperature=2.0, alpha=0.5, paired_inputs=paired)
        distiller.compile(optimizer=keras.optimizers.SGD(learning_rate=1.0))
    history = distiller.fit(data, epochs=2, verbose=0)
    return student.get_weights(), history.history


def test_live_and_cached_two_tokenizer_kd_match_on_one_and_two_replicas(
        preprocessors, two_replicas, tmp_path):
    student_pre, teacher_pre = preprocessors
    teacher, student = _models(preprocessors)
    initial = teacher.get_weights(), student.get_weights()
    live = paired_dataset(TEXTS, student_pre, teacher_pre, labels=LABELS, batch_size=8)
    one = tf.distribute.get_strategy()
    reference, reference_history = _fit_weights(one, preprocessors, initial, live)
    assert max(np.abs(a - b).max() for a, b in zip(reference, initial[1])) > 1e-3

    cache = str(tmp_path / "teacher_logits")
    manifest = cache_paired_teacher_outputs(teacher, teacher_pre, TEXTS, cache, labels=LABELS,
                                            batch_size=5, dtype="float32")
    assert manifest["taps"] == ["logits"] and manifest["num_examples"] == len(TEXTS)
    cached = load_paired_teacher_cache(cache, TEXTS, student_pre, batch_size=8, teacher=teacher)
    x, y, targets = next(iter(cached))
    np.testing.assert_array_equal(x["token_ids"].numpy(),
                                  _tokens(student_pre, TEXTS[:8])["token_ids"])
    np.testing.assert_array_equal(y.numpy(), LABELS[:8])
    np.testing.assert_allclose(targets["logits"].numpy(),
                               teacher.predict(_tokens(teacher_pre, TEXTS[:8]), verbose=0),
                               rtol=1e-5, atol=1e-6)
    runs = {
        "live, two replicas": _fit_weights(two_replicas, preprocessors, initial, live),
        "cache, one replica": _fit_weights(one, preprocessors, initial, cached,
                                           CachedTeacher(cache)),
        "cache, two replicas, teacher=None": _fit_weights(two_replicas, preprocessors, initial,
                                                          cached, None),
    }
    for name, (weights, history) in runs.items():
        for a, b in zip(reference, weights):
            # Replicas sum gradients in another order (~1e-7); a teacher fed the wrong tokens
            # or a wrong replica scaling differs by far more (training moves > 1e-3).
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=name)
        for key in ("loss", "kd_loss", "student_loss"):
            np.testing.assert_allclose(history[key], reference_history[key], rtol=1e-5,
                                       err_msg=f"{name}: {key}")


def test_objectives_that_need_the_same_tokens_are_refused(preprocessors):
    teacher, student = _models(preprocessors)
    for objective in (O.HiddenStateKD(layer_map=[(0, 1)]), O.AttentionKD(layer_map=[(0, 1)]),
                      O.EmbeddingKD()):
        with pytest.raises(ValueError, match=r"paired_inputs=True .*cannot be computed.*"
                                             r"same tokens"):
            kdistill.Distiller(teacher, student, objectives=[O.LogitsKD(), objective],
                               paired_inputs=True)
    # Weight 0 is never computed: nothing to refuse.
    kdistill.Distiller(teacher, student, objectives=[O.LogitsKD(), O.EmbeddingKD(weight=0.0)],
                       paired_inputs=True)
    with pytest.raises(ValueError, match=r"vocabulary has \d+ entries but the student's \d+.*"
                                         r"paired_inputs=True"):
        kdistill.Distiller(teacher, student)


def test_batches_that_do_not_match_paired_inputs_are_named(preprocessors, tmp_path):
    student_pre, teacher_pre = preprocessors
    teacher, student = _models(preprocessors)
    distiller = kdistill.Distiller(teacher, student, paired_inputs=True)
    distiller.compile(optimizer="sgd")
    plain = tf.data.Dataset.from_tensor_slices((_tokens(student_pre, TEXTS), LABELS)).batch(8)
    with pytest.raises(ValueError, match=r"inputs are a dict \{'student': \.\.\., 'teacher'.*"
                                         r"got \['padding_mask', 'segment_ids', 'token_ids'\]"):
        distiller.fit(plain, epochs=1, verbose=0)
    # Preprocessors given the wrong way round: the model whose vocabulary the ids leave is named.
    swapped = paired_dataset(TEXTS, teacher_pre, student_pre, labels=LABELS, batch_size=8)
    with pytest.raises(ValueError, match=r"teacher 'teacher' has a vocabulary of 21 ids"):
        distiller.fit(swapped, epochs=1, verbose=0)
    # Paired batches given to a Distiller whose models share one set of inputs.
    other = testing.tiny_bert_classifier(
        vocabulary_size=teacher_pre.tokenizer.vocabulary_size(), num_layers=1, hidden_dim=8,
        num_classes=2, max_sequence_length=24, name="other")
    other(_tokens(teacher_pre, TEXTS[:2]))
    shared = kdistill.Distiller(teacher, other)
    shared.compile(optimizer="sgd")
    paired = paired_dataset(TEXTS, teacher_pre, teacher_pre, labels=LABELS, batch_size=8)
    with pytest.raises(ValueError, match="paired_inputs=True to give each model its own"):
        shared.fit(paired, epochs=1, verbose=0)


def test_a_paired_cache_is_keyed_by_its_texts(preprocessors, tmp_path):
    student_pre, teacher_pre = preprocessors
    teacher, _ = _models(preprocessors)
    cache = str(tmp_path / "c")
    cache_paired_teacher_outputs(teacher, teacher_pre, TEXTS, cache, labels=LABELS)
    assert texts_fingerprint(tf.data.Dataset.from_tensor_slices((TEXTS, LABELS))) == (
        texts_fingerprint(TEXTS))
    for texts in (TEXTS[::-1], TEXTS[:-1], TEXTS[:-1] + ["an unseen text"]):
        with pytest.raises(ValueError, match="was not made from these texts.*same order"):
            load_paired_teacher_cache(cache, texts, student_pre, batch_size=8)
    # Shuffled reading keeps each text with its own cached logits.
    shuffled = load_paired_teacher_cache(cache, TEXTS, student_pre, batch_size=14,
                                         shuffle_seed=3, teacher=teacher)
    x, y, targets = next(iter(shuffled))
    rows = [tuple(r) for r in _tokens(student_pre, TEXTS)["token_ids"].tolist()]
    order = [rows.index(tuple(r)) for r in x["token_ids"].numpy().tolist()]
    assert order != list(range(len(TEXTS)))
    np.testing.assert_array_equal(y.numpy(), LABELS[order])
    expected = teacher.predict(_tokens(teacher_pre, [TEXTS[i] for i in order]), verbose=0)
    np.testing.assert_allclose(targets["logits"].numpy(), expected, rtol=1e-2, atol=1e-2)
    with pytest.raises(ValueError, match="one string per element"):
        paired_dataset(tf.data.Dataset.from_tensor_slices(TEXTS).batch(2), student_pre,
                       teacher_pre)
    with pytest.raises(ValueError, match="14 texts but 13 labels"):
        paired_dataset(TEXTS, student_pre, teacher_pre, labels=LABELS[:-1])


def test_the_config_keeps_paired_inputs(preprocessors):
    teacher, student = _models(preprocessors)
    distiller = kdistill.Distiller(teacher, student, paired_inputs=True)
    again = kdistill.Distiller.from_config(distiller.get_config())
    assert again.paired_inputs is True


def test_the_docs_example_runs_as_written():
    text = (ROOT / "docs" / "methods.md").read_text(encoding="utf-8")
    after = text.split("<!-- paired-inputs-snippet -->", 1)[1]
    code = re.match(r"\s*```python\n(.*?)\n```", after, re.S).group(1)
    assert "paired_inputs=True" in code and "load_paired_teacher_cache" in code
    exec(compile(code, "methods.md", "exec"), {})
