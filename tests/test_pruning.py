"""kdistill.pruning: structured pruning of a BERT teacher into a student slice."""

import keras
import keras_hub
import numpy as np
import pytest

from kdistill import objectives, pruning, testing
from kdistill.distiller import Distiller


def teacher_and_data(num_layers=2, hidden_dim=8, num_heads=2, intermediate_dim=16):
    teacher = testing.tiny_bert_classifier(num_layers=num_layers, hidden_dim=hidden_dim,
                                           num_heads=num_heads,
                                           intermediate_dim=intermediate_dim)
    return teacher, testing.token_dataset(num_examples=16, batch_size=8)


def logits(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


def test_keeping_everything_reproduces_the_teacher_exactly():
    teacher, data = teacher_and_data()
    student = pruning.prune_teacher(teacher, data, hidden_dim=8, intermediate_dim=16,
                                    num_layers=2)
    assert student is not teacher
    x, _ = next(iter(data))
    np.testing.assert_array_equal(logits(student, x), logits(teacher, x))
    assert student.count_params() == teacher.count_params()


def test_importance_recomputes_the_layers_and_ignores_padding():
    teacher, data = teacher_and_data()
    scores = pruning.importance_scores(teacher, data)
    assert scores.max_error < 1e-5
    assert scores.num_tokens == sum(int(np.sum(x["padding_mask"])) for x, _ in data)
    assert np.all(scores.channels > 0) and np.all(scores.heads > 0) and np.all(scores.units >= 0)
    # Changing a padded token changes nothing.
    x, y = next(iter(data))
    x = {k: np.array(v) for k, v in x.items()}
    changed = dict(x, token_ids=np.where(x["padding_mask"], x["token_ids"], 5))
    a = pruning.importance_scores(teacher, [(x, y)])
    b = pruning.importance_scores(teacher, [(changed, y)])
    np.testing.assert_allclose(a.channels, b.channels, rtol=1e-6)


def test_dead_units_and_heads_are_the_ones_pruned():
    teacher, data = teacher_and_data(num_layers=1, hidden_dim=8, num_heads=2,
                                     intermediate_dim=16)
    layer = teacher.backbone.transformer_layers[0]
    ffn = layer._feedforward_intermediate_dense
    kernel, bias = ffn.kernel.numpy(), ffn.bias.numpy()
    kernel[:, [3, 11]] = 0.0
    bias[[3, 11]] = 0.0  # gelu(0) = 0: units 3 and 11 never fire
    ffn.kernel.assign(kernel)
    ffn.bias.assign(bias)
    out = layer._self_attention_layer._output_dense
    wo = out.kernel.numpy()
    wo[1] = 0.0  # head 1 contributes nothing to the attention output
    out.kernel.assign(wo)
    scores = pruning.importance_scores(teacher, data)
    assert set(np.argsort(scores.units[0])[:2]) == {3, 11}
    assert scores.heads[0, 1] == 0.0 < scores.heads[0, 0]
    student = pruning.prune_teacher(teacher, data, hidden_dim=4, intermediate_dim=14,
                                    num_layers=1, importance=scores)
    s_layer = student.backbone.transformer_layers[0]
    # The kept head is head 0: its query kernel is the teacher's head-0 slice on kept channels.
    kept = np.sort(np.argsort(-scores.channels, kind="stable")[:4])
    np.testing.assert_array_equal(
        s_layer._self_attention_layer._query_dense.kernel.numpy(),
        layer._self_attention_layer._query_dense.kernel.numpy()[kept][:, [0]])
    kept_units = [u for u in range(16) if u not in (3, 11)]
    np.testing.assert_array_equal(s_layer._feedforward_intermediate_dense.kernel.numpy(),
                                  kernel[kept][:, kept_units])


def test_pruned_student_sizes_vocabulary_and_training():
    teacher, data = teacher_and_data(num_layers=3)
    student = pruning.prune_teacher(teacher, data, hidden_dim=4, intermediate_dim=8,
                                    layers=[0, 2], max_sequence_length=8)
    b = student.backbone
    assert (b.num_layers, b.hidden_dim, b.num_heads, b.intermediate_dim,
            b.max_sequence_length) == (2, 4, 1, 8, 8)
    assert student.count_params() == pruning.pruned_params(teacher, 4, 8, 2,
                                                           max_sequence_length=8)
    kept_ids = [0, 1, 2, 3, 7, 9]
    mapped = pruning.prune_teacher(teacher, data, hidden_dim=4, intermediate_dim=8,
                                   num_layers=1, vocabulary=kept_ids, unknown_id=1)
    assert mapped.input_vocabulary_size == 64 and mapped.backbone.vocabulary_size == 6
    assert mapped.count_params() == pruning.pruned_params(teacher, 4, 8, 1, vocabulary_size=6)
    with pytest.raises(ValueError, match="multiple of the teacher's head size"):
        pruning.pruned_params(teacher, 6, 8, 1)
    x, _ = next(iter(data))
    rows = mapped.backbone.token_embedding.embeddings.numpy()
    assert rows.shape == (6, 4)
    distiller = Distiller(teacher, student, [objectives.LogitsKD(temperature=2.0, alpha=0.5)])
    distiller.compile(optimizer=keras.optimizers.Adam(1e-3))
    before = logits(student, x)
    history = distiller.fit(data, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    assert not np.allclose(before, logits(student, x))


def test_pruned_student_round_trips_through_keras_file(tmp_path):
    teacher, data = teacher_and_data()
    student = pruning.prune_teacher(teacher, data, hidden_dim=4, intermediate_dim=8,
                                    num_layers=1)
    path = tmp_path / "student.keras"
    student.save(path)
    restored = keras.saving.load_model(path)
    x, _ = next(iter(data))
    np.testing.assert_allclose(logits(restored, x), logits(student, x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    (dict(hidden_dim=3, intermediate_dim=8, num_layers=1), "multiple of the teacher's head"),
    (dict(hidden_dim=16, intermediate_dim=8, num_layers=1), r"hidden_dim.*\[1, 8\]"),
    (dict(hidden_dim=4, intermediate_dim=0, num_layers=1), r"intermediate_dim.*\[1, 16\]"),
    (dict(hidden_dim=4, intermediate_dim=8, num_layers=5), "num_layers"),
    (dict(hidden_dim=4, intermediate_dim=8, layers=[1, 0]), "strictly increasing"),
    (dict(hidden_dim=4, intermediate_dim=8, num_layers=1, vocabulary=[0, 1]), "unknown_id"),
    (dict(hidden_dim=4, intermediate_dim=8, num_layers=1, max_sequence_length=999),
     "max_sequence_length"),
])
def test_bad_arguments_are_refused(kwargs, message):
    teacher, data = teacher_and_data()
    with pytest.raises(ValueError, match=message):
        pruning.prune_teacher(teacher, data, **kwargs)


def test_unsupported_teachers_and_empty_data_are_refused():
    teacher, _ = teacher_and_data()
    with pytest.raises(ValueError, match="calibration data is empty"):
        pruning.importance_scores(teacher, [])
    with pytest.raises(ValueError, match="padding_mask"):
        pruning.importance_scores(teacher, [(np.zeros((2, 8), "int32"), np.zeros(2))])
    distil = keras_hub.models.DistilBertTextClassifier(
        backbone=keras_hub.models.DistilBertBackbone(
            vocabulary_size=64, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16,
            max_sequence_length=16),
        num_classes=2, preprocessor=None)
    with pytest.raises(ValueError, match="BertTextClassifier"):
        pruning.prune_teacher(distil, [], hidden_dim=4, intermediate_dim=8, num_layers=1)
    with pytest.raises(ValueError, match="BertTextClassifier"):
        pruning.importance_scores(testing.tiny_mlp(), [])
