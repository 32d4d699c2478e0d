"""The teacher's logits over several splits (one traced forward) and the quiet traces of
`evaluation.keras_model`, the forward they run through."""

import logging

import numpy as np
import tensorflow as tf

from kdistill.data import Split
from kdistill.teacher_outputs import teacher_logits, teacher_logits_of_splits
from kdistill.testing import tiny_bert_classifier, token_batch


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_splits_share_one_forward_and_give_each_splits_logits(monkeypatch):
    from kdistill import evaluation

    teacher = tiny_bert_classifier(num_classes=3, max_sequence_length=64)
    splits = {}
    for i, name in enumerate(["train", "validation", "test", "transfer"]):
        x, _ = token_batch(batch_size=20 + i, sequence_length=64, min_length=2, seed=i)
        splits[name] = Split(x)
    wrappers = []
    wrap = evaluation.keras_model
    monkeypatch.setattr(evaluation, "keras_model", lambda m: wrappers.append(m) or wrap(m))
    logits = teacher_logits_of_splits(teacher, splits, batch_size=8)
    assert wrappers == [teacher]  # one forward (one set of traces) for the four splits
    monkeypatch.undo()
    assert list(logits) == list(splits)
    for name, split in splits.items():
        np.testing.assert_allclose(logits[name], teacher_logits(teacher, split, batch_size=8),
                                   atol=1e-5)
        np.testing.assert_allclose(logits[name], teacher(split.inputs), atol=1e-4)


def test_kdistills_own_traces_do_not_warn_about_retracing_but_the_callers_do():
    """TF counts the traces of every `keras_model` wrapper together (one code object) and warns
    of "retracing" (at most twice a process, so a test cannot wait for the real warning): the
    warning is dropped while a wrapper runs, and only then."""
    import keras

    from kdistill.evaluation import keras_model

    message = "6 out of the last 6 calls to <forward> triggered tf.function retracing."

    def traced(x):  # runs when the forward is traced, as TF's warning does
        tf.get_logger().warning(message)
        return x

    inputs = keras.Input((4,), name="x")
    model = keras.Model(inputs, keras.layers.Lambda(traced)(keras.layers.Dense(2)(inputs)))
    records = _Records()
    tf.get_logger().addHandler(records)
    try:
        assert keras_model(model).predict({"x": np.ones((3, 4), "float32")}).shape == (3, 2)
        assert records.messages == []
        tf.get_logger().warning(message)  # the caller's own
    finally:
        tf.get_logger().removeHandler(records)
    assert records.messages == [message]
