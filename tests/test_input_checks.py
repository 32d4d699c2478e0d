"""The first batch is checked at the door of `fit`/`evaluate`: each bad input, its clear error.

Every case builds tiny models (`kdistill.testing`) and asserts the exact words users will read.
"""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import kdistill
from kdistill import input_checks, testing
from kdistill.vocabulary import VocabularyMap, VocabularyMappedClassifier


def _bert_distiller(teacher_vocabulary=64, student_vocabulary=64, teacher_positions=16,
                    student_positions=16, metrics=None):
    teacher = testing.tiny_bert_classifier(vocabulary_size=teacher_vocabulary,
                                           max_sequence_length=teacher_positions, name="teacher")
    student = testing.tiny_bert_classifier(vocabulary_size=student_vocabulary, num_layers=1,
                                           max_sequence_length=student_positions, name="student")
    distiller = kdistill.Distiller(teacher, student)
    distiller.compile(optimizer="adam", metrics=metrics)
    return distiller


def _mlp_distiller(metrics=None):
    distiller = kdistill.Distiller(testing.tiny_mlp(name="teacher"),
                                   testing.tiny_mlp(hidden=4, name="student"))
    distiller.compile(optimizer="adam", metrics=metrics)
    return distiller


def _mlp_data(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 8)).astype("float32"), rng.integers(0, 3, n)


def _tokens(sequence_length=8, vocabulary_size=64, n=8):
    return testing.token_batch(batch_size=n, sequence_length=sequence_length,
                               vocabulary_size=vocabulary_size)


def _dataset(x, y=None, batch_size=4):
    data = (x, y) if y is not None else x
    return tf.data.Dataset.from_tensor_slices(data).batch(batch_size)


# ------------------------------------------------------------------ token ids and positions

def test_token_id_beyond_the_students_vocabulary():
    distiller = kdistill.Distiller(
        testing.tiny_bert_classifier(vocabulary_size=64, name="teacher"),
        VocabularyMappedClassifier(
            testing.tiny_bert_classifier(vocabulary_size=16, name="small").backbone, 3,
            VocabularyMap(np.arange(16), input_vocabulary_size=64, unknown_id=1),
            name="student"))
    distiller.compile(optimizer="adam")
    x, y = _tokens()
    distiller.fit(x, y, epochs=1, verbose=0)  # a mapped student reads the teacher's 64 ids
    x["token_ids"][1, 2] = 93
    message = (r"inputs\['token_ids'\] of the first training batch holds the token id 93, but "
               r"the teacher 'teacher' has a vocabulary of 64 ids \(0 to 63\). Tokenize with the "
               r"teacher's own tokenizer \(the same vocabulary\), or build the teacher with "
               r"vocabulary_size >= 94.")
    with pytest.raises(ValueError, match=message):
        distiller.fit(_dataset(x, y), epochs=1, verbose=0)


def test_token_id_beyond_the_vocabulary_of_each_model_separately():
    x, y = _tokens(vocabulary_size=64)
    x["token_ids"][0, 1] = 70
    # Only the student's vocabulary is known (a cached teacher): the student is named.
    student = testing.tiny_bert_classifier(vocabulary_size=64, name="student")
    model_list = [("student", student, 64)]
    with pytest.raises(ValueError, match="the student 'student' has a vocabulary of 64 ids"):
        input_checks.check_batch(x, y, models=model_list, num_classes=3)
    teacher = testing.tiny_bert_classifier(vocabulary_size=64, name="teacher")
    with pytest.raises(ValueError, match="the teacher 'teacher' has a vocabulary of 64 ids"):
        input_checks.check_batch(x, y, models=[("teacher", teacher, 64)] + model_list,
                                 num_classes=3)


def test_negative_token_id():
    distiller = _bert_distiller()
    x, y = _tokens()
    x["token_ids"][0, 0] = -1
    with pytest.raises(ValueError, match=r"holds the negative token id -1; the teacher 'teacher' "
                                         r"reads ids in \[0, 64\). Pad with 0"):
        distiller.fit(x, y, epochs=1, verbose=0)


def test_sequence_longer_than_the_position_table():
    distiller = _bert_distiller(teacher_positions=32, student_positions=16)
    x, y = _tokens(sequence_length=24)
    message = (r"inputs\['token_ids'\] of the first evaluation batch has sequence length 24, "
               r"but the student 'student' has a position table of 16 "
               r"\(max_sequence_length=16\). Tokenize with sequence_length <= 16")
    with pytest.raises(ValueError, match=message):
        distiller.evaluate(_dataset(x, y), verbose=0)
    with pytest.raises(ValueError, match="build the student with max_sequence_length >= 24"):
        distiller.fit(x, y, epochs=1, verbose=0)


def test_unbatched_dataset():
    distiller = _bert_distiller()
    x, y = _tokens()
    unbatched = tf.data.Dataset.from_tensor_slices((x, y))
    message = (r"inputs\['(token_ids|padding_mask|segment_ids)'\] of the first training batch "
               r"has shape \(8,\) \(rank 1\), but the teacher 'teacher' expects rank 2 \(a batch "
               r"dimension first\): the dataset is not batched. Call dataset.batch\(batch_size\)")
    with pytest.raises(ValueError, match=message):
        distiller.fit(unbatched, epochs=1, verbose=0)
    mlp = _mlp_distiller()
    features, labels = _mlp_data()
    with pytest.raises(ValueError, match=r"inputs of the first training batch has shape \(8,\)"):
        mlp.fit(tf.data.Dataset.from_tensor_slices((features, labels)), epochs=1, verbose=0)


# ------------------------------------------------------------------ labels and sample weights

def test_string_labels():
    distiller = _mlp_distiller()
    x, _ = _mlp_data()
    y = np.array(["pos", "neg"] * 4)
    message = (r"The labels of the first training batch are strings \('pos', 'neg', 'pos', "
               r"...\): the models need integer class ids 0 to num_classes - 1. Map the label "
               r"names to ids first")
    with pytest.raises(ValueError, match=message):
        distiller.fit(x, y, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="are strings"):  # bytes, from a tf.data string tensor
        distiller.fit(_dataset(x, y), epochs=1, verbose=0)


def test_float_labels_with_a_fractional_part():
    distiller = _mlp_distiller()
    x, y = _mlp_data()
    message = (r"The labels of the first training batch are floats with a fractional part "
               r"\(e.g. \d.5\): class ids must be whole numbers, and a fractional id would be "
               r"silently truncated")
    with pytest.raises(ValueError, match=message):
        distiller.fit(x, y + 0.5, epochs=1, verbose=0)
    distiller.fit(x, y.astype("float32"), epochs=1, verbose=0)  # whole floats are class ids
    soft = keras.ops.convert_to_numpy(keras.ops.one_hot(y, 3)) * 0.8 + 0.2 / 3
    # Soft targets with the logits' shape (a fresh Distiller: one label rank per trace).
    _mlp_distiller().fit(x, soft, epochs=1, verbose=0)


def test_nan_labels():
    distiller = _mlp_distiller()
    x, y = _mlp_data()
    y = y.astype("float32")
    y[0] = np.nan
    with pytest.raises(ValueError, match="The labels of the first training batch hold NaN"):
        distiller.fit(x, y, epochs=1, verbose=0)


@pytest.mark.parametrize("bad, num", [(3, 4), (-1, 3)])
def test_integer_labels_outside_the_classes(bad, num):
    distiller = _mlp_distiller()
    x, y = _mlp_data()
    y[5] = bad
    message = (rf"The first validation batch has the label {bad}, outside \[0, 3\) for models "
               rf"with 3 outputs. Map the labels to 0 to 2, or build teacher and student heads "
               rf"with num_classes={num}.")
    with pytest.raises(ValueError, match=message):
        distiller.fit(x, np.zeros(8, "int64"), validation_data=(x, y), epochs=1, verbose=0)


def test_negative_or_nan_sample_weights():
    distiller = _mlp_distiller()
    x, y = _mlp_data()
    weights = np.ones(8, "float32")
    weights[2] = -1.0
    message = (r"The sample weights of the first training batch hold the negative weight -1.0: "
               r"a negative weight turns the loss into a gain. Pass weights >= 0")
    with pytest.raises(ValueError, match=message):
        distiller.fit(x, y, sample_weight=weights, epochs=1, verbose=0)
    with pytest.raises(ValueError, match=message):
        distiller.fit(tf.data.Dataset.from_tensor_slices((x, y, weights)).batch(4), epochs=1,
                      verbose=0)
    weights[2] = np.nan
    with pytest.raises(ValueError, match="sample weights of the first training batch hold NaN"):
        distiller.fit(x, y, sample_weight=weights, epochs=1, verbose=0)


def test_label_metrics_without_labels():
    distiller = _mlp_distiller(metrics=["accuracy"])
    x, _ = _mlp_data()
    message = (r"The training batches carry no labels, but compile\(metrics=...\) asks for "
               r"metrics on labels \(e.g. accuracy\)")
    with pytest.raises(ValueError, match=message):
        distiller.fit(x, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="The evaluation batches carry no labels"):
        distiller.evaluate(_dataset(x), verbose=0)


# ------------------------------------------------------------------ empty data, teacher outputs

def test_a_dataset_that_yields_nothing():
    distiller = _mlp_distiller()
    x, y = _mlp_data()
    nothing = _dataset(x, y).filter(lambda a, b: False)  # cardinality unknown, not 0
    message = (r"The training dataset yielded no batches: its first pass is empty \(e.g. a "
               r"`filter` that keeps nothing")
    with pytest.raises(ValueError, match=message):
        distiller.fit(nothing, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="The evaluation dataset yielded no batches"):
        distiller.evaluate(nothing, verbose=0)
    with pytest.raises(ValueError, match="The validation dataset yielded no batches"):
        distiller.fit(_dataset(x, y), validation_data=nothing, epochs=1, verbose=0)


def test_a_teacher_that_outputs_probabilities_gets_a_warning():
    inputs = keras.Input((8,))
    probabilities = keras.layers.Dense(3, activation="softmax")(inputs)
    teacher = keras.Model(inputs, probabilities, name="softmax_teacher")
    distiller = kdistill.Distiller(teacher, testing.tiny_mlp(name="student"))
    distiller.compile(optimizer="adam")
    x, y = _mlp_data()
    with pytest.warns(UserWarning, match=r"The teacher 'softmax_teacher''s outputs on the first "
                                         r"batch look like probabilities .* Pass logits"):
        distiller.fit(x, y, epochs=1, verbose=0)
    logits = _mlp_distiller()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        logits.fit(x, y, epochs=1, verbose=0)  # logits: no warning


def test_good_data_passes_and_trains():
    distiller = _bert_distiller(metrics=["accuracy"])
    x, y = _tokens()
    history = distiller.fit(_dataset(x, y), validation_data=(x, y), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert "accuracy" in distiller.evaluate(_dataset(x, y), verbose=0, return_dict=True)
