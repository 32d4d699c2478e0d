"""Measuring an exported artifact against the Keras model it came from: logits, agreement, time.

`compare` gives the figures every export entry carries (max abs logit difference, top-1
agreement, accuracy), `batched_logits` and `row_logits` run a model over `{name: array}` inputs
in batches or one example at a time (batch-1 runtimes such as a LiteRT signature runner), and
`median_ms` times a call. `kdistill.export`, `kdistill.serving` and `benchmarks/int8_paths.py`
share them.
"""

import statistics
import time

import numpy as np


def labels_to_ids(y):
    """Class ids from integer labels or one-hot / probability rows (None stays None).

    Example:
    >>> labels_to_ids([[0.1, 0.9], [1.0, 0.0]]).tolist(), labels_to_ids([2, 0]).tolist()
    ([1, 0], [2, 0])
    """
    if y is None:
        return None
    y = np.asarray(y)
    if y.ndim >= 2 and y.shape[-1] > 1:
        return np.argmax(y, axis=-1).reshape(-1)
    return y.reshape(-1).astype("int64")


def compare(reference, logits, labels=None):
    """Max abs difference and top-1 agreement of `logits` with `reference`, and accuracy.

    Args:
        reference: np.ndarray `[n, classes]`. The Keras model's logits.
        logits: np.ndarray `[n, classes]`. The artifact's logits on the same examples.
        labels: np.ndarray `[n]` of class ids, or None.

    Returns:
        dict. `max_abs_diff`, `top1_agreement` and `accuracy` (None without labels).

    Example:
    >>> compare(np.array([[0.0, 1.0], [1.0, 0.0]]), np.array([[0.0, 0.5], [0.0, 1.0]]), [1, 1])
    {'max_abs_diff': 1.0, 'top1_agreement': 0.5, 'accuracy': 1.0}
    """
    reference, logits = np.asarray(reference), np.asarray(logits)
    result = {
        "max_abs_diff": float(np.max(np.abs(reference - logits))),
        "top1_agreement": float(np.mean(np.argmax(reference, -1) == np.argmax(logits, -1))),
        "accuracy": None,
    }
    if labels is not None:
        result["accuracy"] = float(np.mean(np.argmax(logits, -1) == np.asarray(labels)))
    return result


def batched_logits(run, inputs, batch_size=64):
    """`run` over `{name: array [n, ...]}` in batches of `batch_size`, concatenated.

    Args:
        run: callable. `{name: array [b, ...]}` -> logits `[b, classes]` (NumPy or a tensor).
        inputs: dict. `{name: np.ndarray [n, ...]}`.
        batch_size: int.

    Example:
    >>> batched_logits(lambda x: x["a"] * 2, {"a": np.ones((5, 2))}, batch_size=2).shape
    (5, 2)
    """
    n = next(iter(inputs.values())).shape[0]
    return np.concatenate([
        np.asarray(run({k: v[i:i + batch_size] for k, v in inputs.items()}))
        for i in range(0, n, batch_size)])


def row_logits(run_one, inputs):
    """`run_one` on each example as a batch of 1, concatenated (for batch-1 runtimes).

    Example:
    >>> row_logits(lambda x: x["a"] + 1, {"a": np.zeros((3, 2))}).tolist()
    [[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]]
    """
    return batched_logits(run_one, inputs, batch_size=1)


def median_ms(fn, warmup, runs):
    """Median wall time of `fn()` in milliseconds over `runs` calls after `warmup` calls.

    Example:
    >>> median_ms(lambda: None, warmup=1, runs=3) >= 0
    True
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, runs)):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)
