"""Fingerprints of what a teacher cache was made from: the examples, and the teacher.

A cache's manifest records both (`kdistill.data.cache_format.write_manifest`);
`kdistill.data.load_teacher_cache` refuses a cache whose teacher fingerprint differs from the
given teacher's, or whose data fingerprint differs from the expected one.
"""

import hashlib
import json

import numpy as np

from kdistill.data.cache_format import CacheRecord, split_examples, unpack_batch
from kdistill.teachers import canonical_config, weights_digest


class DataFingerprint:
    """An order-independent fingerprint of the examples a cache was made from.

    The sum (mod 2^256) of each example's sha256 over its stored inputs, labels and sample
    weights (trailing padding cut), so it does not depend on the order, the batch size or the
    padded length, and partial fingerprints merge (e.g. across Beam workers).

    Example:
    >>> a, b = DataFingerprint(), DataFingerprint()
    >>> a.add({"x": np.array([1, 2])}); a.add({"x": np.array([3, 4])})
    >>> b.add({"x": np.array([3, 4])}); b.add({"x": np.array([1, 2])})
    >>> a.hexdigest() == b.hexdigest()
    True
    """

    def __init__(self):
        self.total = 0
        self.count = 0

    def add(self, stored_inputs):
        """Adds one example given as `{key: stored array}` (the `x/`, `y`, `sample_weight` keys)."""
        h = hashlib.sha256()
        for key in sorted(stored_inputs):
            array = np.ascontiguousarray(stored_inputs[key])
            h.update(f"{key}:{array.dtype.name}:{array.shape};".encode())
            h.update(array.tobytes())
        self.total = (self.total + int.from_bytes(h.digest(), "big")) % (1 << 256)
        self.count += 1

    def add_example(self, inputs, labels=None, sample_weight=None):
        """Adds one example given as model inputs, labels and sample weight (no batch axis)."""
        self.add(CacheRecord(inputs, {}, labels, sample_weight).input_arrays())

    def merge(self, other):
        """Adds the examples counted by another `DataFingerprint`."""
        self.total = (self.total + other.total) % (1 << 256)
        self.count += other.count

    def hexdigest(self):
        """The fingerprint as a hex string."""
        return hashlib.sha256(f"{self.count}:{self.total:064x}".encode()).hexdigest()


def dataset_fingerprint(dataset):
    """The `DataFingerprint` hex digest of a batched dataset, as a cache made from it records.

    Compare it with a cache's manifest (`load_teacher_cache(..., expected_fingerprint=...)`) to
    check the cache was made from this data.

    Args:
        dataset: `tf.data.Dataset` (or iterable) of batched `(inputs, labels)`,
            `(inputs, labels, sample_weight)` or `inputs`.

    Returns:
        str: hex digest.

    Example:
    >>> from kdistill import testing
    >>> a = dataset_fingerprint(testing.token_dataset(num_examples=8, batch_size=4))
    >>> b = dataset_fingerprint(testing.token_dataset(num_examples=8, batch_size=8))
    >>> a == b
    True
    """
    fingerprint = DataFingerprint()
    for batch in dataset:
        for inputs, labels, sample_weight in split_examples(*unpack_batch(batch)):
            fingerprint.add_example(inputs, labels, sample_weight)
    return fingerprint.hexdigest()


def teacher_fingerprint(model):
    """A hash of a model's architecture (config, names normalised) and weights.

    Args:
        model: keras.Model.

    Returns:
        str: hex digest; equal for two models with the same config and weights.

    Example:
    >>> from kdistill import testing
    >>> a, b = testing.tiny_mlp(seed=0), testing.tiny_mlp(seed=0)
    >>> teacher_fingerprint(a) == teacher_fingerprint(b)
    True
    """
    def drop_trainable(c):  # freezing a teacher (trainable=False) does not change its outputs
        if isinstance(c, dict):
            return {k: drop_trainable(v) for k, v in c.items() if k != "trainable"}
        if isinstance(c, list):
            return [drop_trainable(v) for v in c]
        return c

    try:
        config = json.dumps(drop_trainable(canonical_config(model.get_config())),
                            sort_keys=True, default=str)
    except NotImplementedError:  # subclassed model without get_config: weights only
        config = type(model).__name__
    h = hashlib.sha256(config.encode())
    h.update(weights_digest(model).encode())
    return h.hexdigest()
