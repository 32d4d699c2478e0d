"""Vocabulary pruning: the map, corpus counts, pruned students in the Distiller, saving."""

import keras
import numpy as np
import pytest

from kdistill import Distiller, objectives, students, testing
from kdistill.vocabulary import (
    VocabularyMap,
    VocabularyMappedClassifier,
    corpus_vocabulary,
    input_vocabulary_size,
)

VOCAB = 64
UNK = 1


def _kept(batch):
    return corpus_vocabulary([batch[0]], VOCAB, keep_ids=[0, 1, 2, 3])


def _pruned_student(teacher, kept, **kwargs):
    return students.student_for(teacher, "test_tiny", embedding_init="svd", vocabulary=kept,
                                unknown_id=UNK, **kwargs)


def test_map_sends_kept_ids_to_their_rows_and_others_to_unknown():
    kept = np.array([0, 1, 5, 9, 30])
    layer = VocabularyMap(kept, input_vocabulary_size=40, unknown_id=1)
    ids = np.arange(40)[None]
    out = keras.ops.convert_to_numpy(layer(ids))[0]
    expected = np.full(40, 1)
    expected[kept] = np.arange(5)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(layer.kept_ids, kept)


@pytest.mark.parametrize("kwargs, message", [
    (dict(kept_ids=[0, 5, 5], unknown_id=0), "sorted"),
    (dict(kept_ids=[0, 5], unknown_id=1), "unknown_id 1"),
    (dict(kept_ids=[0, 70], unknown_id=0), r"\[0, 64\)"),
    (dict(kept_ids=[], unknown_id=0), "non-empty"),
])
def test_map_refuses_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        VocabularyMap(input_vocabulary_size=VOCAB, **kwargs)


def test_corpus_vocabulary_counts_and_refuses_bad_corpora():
    a = {"token_ids": np.array([[2, 10, 10, 3], [2, 11, 3, 0]])}
    kept = corpus_vocabulary([(a, np.array([0, 1]))], VOCAB, keep_ids=[0, 1, 2, 3])
    assert kept.tolist() == [0, 1, 2, 3, 10, 11]
    assert corpus_vocabulary([a], VOCAB, [0, 1], min_count=2).tolist() == [0, 1, 2, 3, 10]
    with pytest.raises(ValueError, match="empty"):
        corpus_vocabulary([], VOCAB, [0, 1])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        corpus_vocabulary([np.array([[70]])], VOCAB, [0, 1])
    with pytest.raises(ValueError, match="min_count"):
        corpus_vocabulary([a], VOCAB, [0, 1], min_count=0)


def test_pruned_student_equals_its_backbone_on_mapped_ids_and_starts_from_the_teacher():
    teacher = testing.tiny_bert_classifier(hidden_dim=16, num_classes=3)
    x, _ = testing.token_batch(batch_size=6, sequence_length=10, num_classes=3)
    kept = _kept((x,))
    student = _pruned_student(teacher, kept)
    assert isinstance(student, VocabularyMappedClassifier)
    assert student.backbone.vocabulary_size == len(kept) < VOCAB
    assert input_vocabulary_size(student) == VOCAB
    # The SVD start uses exactly the teacher's rows of the kept ids.
    full = students.student_for(teacher, "test_tiny", embedding_init="svd")
    table = keras.ops.convert_to_numpy(teacher.backbone.token_embedding.embeddings)
    reduced, _, _ = students.truncated_svd_embedding(table[kept], 8)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(student.backbone.token_embedding.embeddings), reduced,
        rtol=1e-5, atol=1e-6)
    assert student.count_params() < full.count_params()
    # Same logits as the bare graph fed with mapped ids; a pruned id reads the [UNK] row.
    mapped = dict(x, token_ids=np.searchsorted(kept, x["token_ids"]))
    pooled = student.backbone(mapped)["pooled_output"]
    np.testing.assert_allclose(student(x), student.output_dense(pooled), atol=1e-6)
    unseen = next(i for i in range(4, VOCAB) if i not in set(kept.tolist()))
    y = dict(x, token_ids=np.where(x["padding_mask"], unseen, 0))
    z = dict(x, token_ids=np.where(x["padding_mask"], UNK, 0))
    np.testing.assert_allclose(student(y), student(z), atol=1e-6)


def test_pruned_student_distils_with_intermediate_objectives_and_round_trips(tmp_path):
    teacher = testing.tiny_bert_classifier(hidden_dim=16, num_classes=3)
    ds = testing.token_dataset(num_examples=16, batch_size=8, sequence_length=10, num_classes=3)
    kept = corpus_vocabulary(ds, VOCAB, keep_ids=[0, 1, 2, 3])
    student = _pruned_student(teacher, kept)
    before = keras.ops.convert_to_numpy(student.backbone.token_embedding.embeddings).copy()
    distiller = Distiller(teacher, student, objectives=objectives.tinybert())
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = distiller.fit(ds, epochs=1, verbose=0)
    assert {"hidden_loss", "attention_loss", "kd_loss"} <= set(history.history)
    after = keras.ops.convert_to_numpy(student.backbone.token_embedding.embeddings)
    assert not np.allclose(before, after)

    path = str(tmp_path / "student.keras")
    student.save(path)
    restored = keras.saving.load_model(path)
    x, _ = next(iter(ds))
    np.testing.assert_allclose(restored(x), student(x), atol=1e-6)
    np.testing.assert_array_equal(restored.vocabulary_map.kept_ids, kept)


def test_distiller_compares_the_input_vocabulary_of_a_pruned_student():
    teacher = testing.tiny_bert_classifier(vocabulary_size=80, hidden_dim=16, num_classes=3)
    other = testing.tiny_bert_classifier(hidden_dim=16, num_classes=3)  # vocabulary 64
    student = _pruned_student(other, np.arange(12))
    with pytest.raises(ValueError, match="vocabulary has 80 entries but the student's 64"):
        Distiller(teacher, student)


def test_pruned_student_refuses_non_classifiers_and_needs_unknown_id():
    teacher = testing.tiny_bert_classifier(hidden_dim=16, num_classes=3)
    with pytest.raises(ValueError, match="classifiers only"):
        students.student_for(teacher, "test_tiny", task="masked_lm", vocabulary=[0, 1])
    with pytest.raises(ValueError, match="unknown_id"):
        students.student_for(teacher, "test_tiny", vocabulary=[0, 1])
