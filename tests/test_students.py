"""Tests for kdistill.students: preset students, SVD embedding init, teacher-initialised copies."""

import keras
import keras_hub
import numpy as np
import pytest

from kdistill import students
from kdistill.testing import tiny_bert_classifier, tiny_mlp, token_batch

VOCAB = 64
SEQ = 8


def _inputs(batch_size=4, mask_positions=False, segments=True):
    x, _ = token_batch(batch_size=batch_size, sequence_length=SEQ, vocabulary_size=VOCAB)
    x["padding_mask"] = x["padding_mask"].astype("int32")
    x["segment_ids"][:, SEQ // 2:] = 1  # exercise both segment rows
    if mask_positions:
        x["mask_positions"] = np.tile(np.array([[1, 2]], "int32"), (batch_size, 1))
    if not segments:
        del x["segment_ids"]
    return x


def _bert_teacher(task, num_layers=4, hidden_dim=8, intermediate_dim=16):
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=VOCAB, num_layers=num_layers, num_heads=2, hidden_dim=hidden_dim,
        intermediate_dim=intermediate_dim, max_sequence_length=SEQ, dropout=0.1)
    if task == "backbone":
        return backbone
    if task == "masked_lm":
        return keras_hub.models.BertMaskedLM(backbone=backbone, preprocessor=None)
    return keras_hub.models.BertTextClassifier(backbone=backbone, num_classes=3,
                                               preprocessor=None, dropout=0.1)


def _distil_teacher(task, num_layers=4):
    backbone = keras_hub.models.DistilBertBackbone(
        vocabulary_size=VOCAB, num_layers=num_layers, num_heads=2, hidden_dim=8,
        intermediate_dim=16, max_sequence_length=SEQ, dropout=0.1)
    if task == "backbone":
        return backbone
    if task == "masked_lm":
        return keras_hub.models.DistilBertMaskedLM(backbone=backbone, preprocessor=None)
    return keras_hub.models.DistilBertTextClassifier(backbone=backbone, num_classes=3,
                                                     preprocessor=None)


def _backbone(model):
    return model if isinstance(model, keras_hub.models.Backbone) else model.backbone


def _embed(backbone, x):
    """The embeddings block's output (before dropout), from the layers themselves."""
    if isinstance(backbone, keras_hub.models.DistilBertBackbone):
        summed = backbone.embeddings(x["token_ids"])
    else:
        tokens = backbone.token_embedding(x["token_ids"])
        summed = (tokens + backbone.position_embedding(tokens)
                  + backbone.segment_embedding(x["segment_ids"]))
    return keras.ops.convert_to_numpy(backbone.embeddings_layer_norm(summed))


def _flat(outputs):
    if isinstance(outputs, dict):
        return [keras.ops.convert_to_numpy(outputs[k]) for k in sorted(outputs)]
    return [keras.ops.convert_to_numpy(outputs)]


# --------------------------------------------------------------------------------------------------
# Presets


def test_preset_table():
    assert students.PRESETS["tinybert_4"] == dict(num_layers=4, hidden_dim=312, num_heads=12,
                                                  intermediate_dim=1200)
    assert students.PRESETS["tinybert_6"] == dict(num_layers=6, hidden_dim=768, num_heads=12,
                                                  intermediate_dim=3072)
    assert students.PRESETS["test_tiny"] == dict(num_layers=2, hidden_dim=8, num_heads=2,
                                                 intermediate_dim=16)
    for config in students.PRESETS.values():
        assert config["hidden_dim"] % config["num_heads"] == 0


@pytest.mark.parametrize("task", ["classifier", "masked_lm", "backbone"])
def test_test_tiny_shapes_and_param_count(task):
    num_classes = 3 if task == "classifier" else None
    model = students.build_student("test_tiny", VOCAB, num_classes=num_classes, task=task,
                                   max_sequence_length=SEQ)
    backbone = _backbone(model)
    assert isinstance(backbone, keras_hub.models.BertBackbone)
    assert (backbone.num_layers, backbone.hidden_dim, backbone.num_heads,
            backbone.intermediate_dim, backbone.vocabulary_size,
            backbone.max_sequence_length) == (2, 8, 2, 16, VOCAB, SEQ)
    assert model.count_params() == students.count_params(
        "test_tiny", VOCAB, num_classes=num_classes, task=task, max_sequence_length=SEQ)
    x = _inputs(mask_positions=task == "masked_lm")
    out = model(x, training=False)
    if task == "classifier":
        assert isinstance(model, keras_hub.models.BertTextClassifier)
        assert model.preprocessor is None and tuple(out.shape) == (4, 3)
    elif task == "masked_lm":
        assert isinstance(model, keras_hub.models.BertMaskedLM)
        assert tuple(out.shape) == (4, 2, VOCAB)
    else:
        assert tuple(out["sequence_output"].shape) == (4, SEQ, 8)


def test_tinybert_4_param_count_at_bert_vocabulary():
    model = students.build_student("tinybert_4", 30522, task="backbone")
    count = model.count_params()
    assert abs(count - 14.5e6) / 14.5e6 < 0.03, count
    assert count == students.count_params("tinybert_4", 30522, task="backbone") == 14_350_248


def test_tinybert_6_config_and_analytic_count():
    count = students.count_params("tinybert_6", 30522, task="backbone")
    assert abs(count - 67e6) / 67e6 < 0.03, count
    assert students.count_params("tinybert_6", 30522, num_classes=2) == count + 768 * 2 + 2


def test_overrides_and_dropout():
    model = students.build_student("test_tiny", VOCAB, num_classes=2, max_sequence_length=SEQ,
                                   dropout=0.0, num_layers=3, hidden_dim=12, num_heads=3,
                                   intermediate_dim=24, num_segments=3)
    backbone = model.backbone
    assert (backbone.num_layers, backbone.hidden_dim, backbone.num_heads,
            backbone.intermediate_dim, backbone.num_segments) == (3, 12, 3, 24, 3)
    assert backbone.dropout == 0.0 and model.dropout == 0.0
    assert model.count_params() == students.count_params(
        "test_tiny", VOCAB, num_classes=2, max_sequence_length=SEQ, num_layers=3, hidden_dim=12,
        num_heads=3, intermediate_dim=24, num_segments=3)


BUILD_ERRORS = [
    (dict(preset="nope"), r"Unknown student preset 'nope'.*bert_mini.*test_tiny.*tinybert_4"),
    (dict(hidden_dim=10, num_heads=3), r"divisible by `num_heads`"),
    (dict(vocabulary_size=0), r"`vocabulary_size` must be a positive integer"),
    (dict(num_layers=0), r"`num_layers` must be a positive integer"),
    (dict(hidden_dim=-8), r"`hidden_dim` must be a positive integer"),
    (dict(intermediate_dim=2.5), r"`intermediate_dim` must be a positive integer"),
    (dict(max_sequence_length=0), r"`max_sequence_length` must be a positive integer"),
    (dict(num_classes=0), r"`num_classes` must be a positive integer"),
    (dict(num_classes=None), r"`num_classes` is required"),
    (dict(task="seq2seq"), r"Unknown task 'seq2seq'"),
    (dict(dropout=1.0), r"`dropout` must be a float in \[0, 1\)"),
    (dict(num_kv_heads=2), r"Unknown override\(s\) \['num_kv_heads'\]"),
    (dict(embedding_init="pca"), r"Unknown embedding_init"),
    (dict(embedding_init="svd"), r"needs the `teacher`"),
]


def test_build_student_errors():
    # One test, not one per case: conftest's per-test clear_session costs ~0.5 s each.
    for kwargs, match in BUILD_ERRORS:
        args = dict(preset="test_tiny", vocabulary_size=VOCAB, num_classes=2,
                    max_sequence_length=SEQ)
        args.update(kwargs)
        with pytest.raises(ValueError, match=match):
            students.build_student(**args)


def test_student_for_reads_teacher():
    teacher = tiny_bert_classifier(vocabulary_size=VOCAB, num_classes=5, max_sequence_length=SEQ)
    student = students.student_for(teacher, "test_tiny", num_layers=1)
    assert isinstance(student, keras_hub.models.BertTextClassifier)
    assert (student.num_classes, student.backbone.vocabulary_size,
            student.backbone.max_sequence_length, student.backbone.num_layers) == (5, VOCAB, SEQ, 1)
    assert students.student_for(teacher, "test_tiny", num_classes=2).num_classes == 2

    mlm = students.student_for(_bert_teacher("masked_lm"), "test_tiny")
    assert isinstance(mlm, keras_hub.models.BertMaskedLM)
    backbone = students.student_for(_distil_teacher("backbone"), "test_tiny")
    assert isinstance(backbone, keras_hub.models.BertBackbone)
    assert backbone.max_sequence_length == SEQ
    with pytest.raises(ValueError, match="supported keras-hub architectures: BertBackbone"):
        students.student_for(tiny_mlp(), "test_tiny")


# --------------------------------------------------------------------------------------------------
# SVD embedding initialisation


def test_truncated_svd_is_best_rank_k_coordinates():
    table = np.random.default_rng(0).normal(size=(VOCAB, 16))
    for rank in (1, 5, 8, 16):
        reduced, projection, s = students.truncated_svd_embedding(table, rank)
        np.testing.assert_allclose(projection.T @ projection, np.eye(rank), atol=1e-12)
        np.testing.assert_allclose(reduced, table @ projection, atol=1e-12)
        error = ((table - reduced @ projection.T) ** 2).sum()
        np.testing.assert_allclose(error, (s[rank:] ** 2).sum(), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(s, np.linalg.svd(table, compute_uv=False), rtol=1e-10)
    # Eckart-Young: no other rank-k projection does better (here: a random orthonormal one).
    q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(16, 5)))
    reduced, projection, s = students.truncated_svd_embedding(table, 5)
    assert ((table - table @ q @ q.T) ** 2).sum() > (s[5:] ** 2).sum()
    with pytest.raises(ValueError, match="rank"):
        students.truncated_svd_embedding(table, 17)
    # A wide table (fewer rows than columns) takes the plain-SVD path: same guarantees.
    wide = table[:6]
    reduced, projection, s = students.truncated_svd_embedding(wide, 4)
    np.testing.assert_allclose(s, np.linalg.svd(wide, compute_uv=False), rtol=1e-10)
    np.testing.assert_allclose(((wide - reduced @ projection.T) ** 2).sum(), (s[4:] ** 2).sum(),
                               rtol=1e-9)


def test_svd_student_embeddings():
    teacher = _bert_teacher("classifier", num_layers=2, hidden_dim=16, intermediate_dim=32)
    student = students.student_for(teacher, "test_tiny", embedding_init="svd",
                                   max_sequence_length=6)
    tb, sb = teacher.backbone, student.backbone
    tokens = keras.ops.convert_to_numpy(tb.token_embedding.embeddings).astype("float64")
    reduced, projection, s = students.truncated_svd_embedding(tokens, 8)
    got = keras.ops.convert_to_numpy(sb.token_embedding.embeddings)
    np.testing.assert_allclose(got, reduced, rtol=0, atol=1e-6)
    # The student's table is the coordinates of the best rank-8 approximation of the teacher's.
    error = ((tokens - got.astype("float64") @ projection.T) ** 2).sum()
    np.testing.assert_allclose(error, (s[8:] ** 2).sum(), rtol=1e-4)
    positions = keras.ops.convert_to_numpy(tb.position_embedding.position_embeddings)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(sb.position_embedding.position_embeddings),
        positions[:6] @ projection, atol=1e-6)
    segments = keras.ops.convert_to_numpy(tb.segment_embedding.embeddings)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(sb.segment_embedding.embeddings),
                               segments @ projection, atol=1e-6)

    with pytest.raises(ValueError, match="narrower student"):
        students.student_for(teacher, "test_tiny", embedding_init="svd", hidden_dim=16)
    with pytest.raises(ValueError, match="exceeds the teacher's"):
        students.build_student("test_tiny", VOCAB, num_classes=3, embedding_init="svd",
                               teacher=teacher, max_sequence_length=SEQ + 1)
    with pytest.raises(ValueError, match="vocabulary size"):
        students.build_student("test_tiny", VOCAB + 1, num_classes=3, embedding_init="svd",
                               teacher=teacher, max_sequence_length=SEQ)


def test_svd_from_distilbert_teacher_zeroes_segments():
    teacher = keras_hub.models.DistilBertBackbone(
        vocabulary_size=VOCAB, num_layers=1, num_heads=2, hidden_dim=16, intermediate_dim=32,
        max_sequence_length=SEQ)
    student = students.student_for(teacher, "test_tiny", embedding_init="svd")
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(student.segment_embedding.embeddings), np.zeros((2, 8)))


# --------------------------------------------------------------------------------------------------
# from_teacher


TEACHERS = {"bert": _bert_teacher, "distil_bert": _distil_teacher}
SELECTIONS = [
    (dict(num_layers=2, strategy="skip"), [0, 2]),
    (dict(num_layers=3, strategy="skip"), [0, 1, 2]),
    (dict(num_layers=2, strategy="first"), [0, 1]),
    (dict(num_layers=2, strategy="last"), [2, 3]),
    (dict(layers=[0, 3]), [0, 3]),
]


@pytest.fixture(scope="module")
def teachers():
    keras.utils.set_random_seed(1)
    return {(family, task): build(task) for family, build in TEACHERS.items()
            for task in ("classifier", "masked_lm", "backbone")}


def _check_copied(teacher, student, selected):
    tb, sb = _backbone(teacher), _backbone(student)
    assert type(student) is type(teacher) and sb.num_layers == len(selected)
    for field in ("vocabulary_size", "hidden_dim", "num_heads", "intermediate_dim",
                  "max_sequence_length", "dropout"):
        assert getattr(sb, field) == getattr(tb, field)
    segments = not isinstance(tb, keras_hub.models.DistilBertBackbone)
    x = _inputs(segments=segments)
    np.testing.assert_array_equal(_embed(sb, x), _embed(tb, x))
    hidden = np.random.default_rng(2).normal(size=(4, SEQ, tb.hidden_dim)).astype("float32")
    for j, i in enumerate(selected):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(sb.transformer_layers[j](
                hidden, padding_mask=x["padding_mask"], training=False)),
            keras.ops.convert_to_numpy(tb.transformer_layers[i](
                hidden, padding_mask=x["padding_mask"], training=False)))
    # The whole student is the teacher's embeddings followed by the selected teacher layers.
    h = _embed(tb, x)
    for i in selected:
        h = tb.transformer_layers[i](h, padding_mask=x["padding_mask"], training=False)
    out = sb(x, training=False)
    sequence = out["sequence_output"] if isinstance(out, dict) else out
    np.testing.assert_allclose(keras.ops.convert_to_numpy(sequence),
                               keras.ops.convert_to_numpy(h), rtol=0, atol=1e-6)


def _check_heads(teacher, student, family, task):
    if task == "classifier":
        heads = ["output_dense"] + (["pooled_dense"] if family == "distil_bert" else [])
    elif task == "masked_lm":
        heads = ["masked_lm_head"]
    else:
        heads = []
    layers = [(getattr(teacher, name), getattr(student, name)) for name in heads]
    if family == "bert":
        layers.append((_backbone(teacher).pooled_dense, _backbone(student).pooled_dense))
    for source, target in layers:
        for a, b in zip(source.get_weights(), target.get_weights()):
            np.testing.assert_array_equal(a, b)


def test_from_teacher_strategies_copy_layers_exactly(teachers):
    teacher = teachers[("bert", "classifier")]
    for kwargs, selected in SELECTIONS:
        student = students.from_teacher(teacher, **kwargs)
        _check_copied(teacher, student, selected)
        _check_heads(teacher, student, "bert", "classifier")


def test_from_teacher_distilbert_skip(teachers):
    teacher = teachers[("distil_bert", "classifier")]
    student = students.from_teacher(teacher, num_layers=2)  # teacher layers 0 and 2
    assert isinstance(student, keras_hub.models.DistilBertTextClassifier)
    _check_copied(teacher, student, [0, 2])
    _check_heads(teacher, student, "distil_bert", "classifier")


@pytest.mark.parametrize("family", sorted(TEACHERS))
@pytest.mark.parametrize("task", ["classifier", "masked_lm", "backbone"])
def test_from_teacher_all_layers_reproduces_teacher(teachers, family, task):
    teacher = teachers[(family, task)]
    student = students.from_teacher(teacher, num_layers=4, strategy="first")
    _check_copied(teacher, student, [0, 1, 2, 3])
    _check_heads(teacher, student, family, task)
    x = _inputs(mask_positions=task == "masked_lm", segments=family == "bert")
    for got, want in zip(_flat(student(x, training=False)), _flat(teacher(x, training=False))):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert student.count_params() == teacher.count_params()
    # The teacher is untouched and the two do not share variables.
    assert not {id(v) for v in student.weights} & {id(v) for v in teacher.weights}


FROM_TEACHER_ERRORS = [
    (dict(num_layers=0), r"`num_layers` must be an integer in \[1, 4\]"),
    (dict(num_layers=5), r"`num_layers` must be an integer in \[1, 4\]"),
    (dict(num_layers=None), r"Pass `num_layers`"),
    (dict(num_layers=2, strategy="middle"), r"Unknown strategy 'middle'.*skip, first, last"),
    (dict(layers=[0, 4]), r"teacher layer indices in \[0, 3\]"),
    (dict(layers=[-1, 2]), r"teacher layer indices in \[0, 3\]"),
    (dict(layers=[2, 1]), r"strictly increasing"),
    (dict(layers=[1, 1]), r"strictly increasing"),
    (dict(layers=[]), r"at least one"),
    (dict(num_layers=3, layers=[0, 1]), r"disagrees with len\(layers\)"),
]


def test_from_teacher_errors(teachers):
    for kwargs, match in FROM_TEACHER_ERRORS:
        with pytest.raises(ValueError, match=match):
            students.from_teacher(teachers[("bert", "classifier")], **kwargs)
    with pytest.raises(ValueError, match=r"Unsupported teacher Functional.*BertTextClassifier"):
        students.from_teacher(tiny_mlp(), num_layers=1)


# --------------------------------------------------------------------------------------------------
# Serialization


def test_build_student_config_round_trip():
    student = students.build_student("test_tiny", VOCAB, num_classes=3, max_sequence_length=SEQ,
                                     num_layers=3)
    clone = keras_hub.models.BertTextClassifier.from_config(student.get_config())
    assert clone.backbone.get_config() == student.backbone.get_config()
    assert clone.num_classes == 3 and clone.count_params() == student.count_params()
    clone.set_weights(student.get_weights())
    x = _inputs()
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(clone(x, training=False)),
                                  keras.ops.convert_to_numpy(student(x, training=False)))


@pytest.mark.parametrize("task", ["classifier", "masked_lm"])
def test_from_teacher_keras_save_load(teachers, task, tmp_path):
    student = students.from_teacher(teachers[("bert", task)], num_layers=2)
    path = str(tmp_path / "student.keras")
    student.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is type(student) and loaded.backbone.num_layers == 2
    x = _inputs(mask_positions=task == "masked_lm")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded(x, training=False)),
                                  keras.ops.convert_to_numpy(student(x, training=False)))
