"""Teacher logits over several splits: one traced forward, each split's own logits."""

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


def test_splits_share_one_forward_and_give_each_splits_logits():
    teacher = tiny_bert_classifier(num_classes=3, max_sequence_length=64)
    splits = {}
    for i, name in enumerate(["train", "validation", "test", "transfer"]):
        x, _ = token_batch(batch_size=20 + i, sequence_length=64, min_length=2, seed=i)
        splits[name] = Split(x)
    records = _Records()
    tf.get_logger().addHandler(records)
    try:
        logits = teacher_logits_of_splits(teacher, splits, batch_size=8)
    finally:
        tf.get_logger().removeHandler(records)
    # TF counts traces per code object: a new forward for each split was "retracing".
    assert not [m for m in records.messages if "retracing" in m], records.messages
    assert list(logits) == list(splits)
    for name, split in splits.items():
        np.testing.assert_allclose(logits[name], teacher_logits(teacher, split, batch_size=8),
                                   atol=1e-5)
        np.testing.assert_allclose(logits[name], teacher(split.inputs), atol=1e-4)
