"""The teacher's logits on in-memory splits, computed once and kept on disk for the next run.

A logits-only distillation stage does not need the teacher at every step: its logits on the
training examples do not change. `teacher_logits` computes them in one pass, in batches of
similar length (half the tokens of random batches on short texts), and `cached_arrays` keeps
them (or any arrays derived from the teacher, such as augmented examples) in a `.npz` file
named by a digest of everything they depend on, so the next run with the same teacher and
data reads them in a second. A file that does not match (another teacher, other data, a
truncated write) is never used: it is recomputed, with a warning.

For corpora too large for memory, or teacher intermediates, use the sharded TFRecord teacher
cache (`kdistill.data.cache_teacher_outputs`) or its Beam version (`kdistill.beam`).
"""

import hashlib
import json
import os
import warnings

import numpy as np


def teacher_logits(teacher, split, batch_size=256, precision="float32"):
    """The teacher's float32 logits on every example of a `kdistill.data.Split`.

    Examples are sorted by length and each batch is cut to its longest example (rounded up to
    a multiple of 16: few shapes to trace) when the teacher is a keras-hub model; the logits
    come back in the split's order.

    Args:
        teacher: keras.Model producing logits (a keras-hub classifier, a SavedModel teacher...).
        split: `kdistill.data.Split`.
        batch_size: int.
        precision: str. The dtype policy the pass computes in (`kdistill.precision.POLICIES`;
            `auto`: bfloat16 where the hardware has it natively and the teacher is a Keras
            model): `float32` runs `teacher` itself, another policy a copy of it under that
            policy; the logits are float32 either way.

    Returns:
        np.ndarray `[examples, classes]`, float32.

    Example:
    >>> from kdistill import testing
    >>> from kdistill.data import Split
    >>> x, _ = testing.token_batch(batch_size=5, sequence_length=8, min_length=2)
    >>> teacher = testing.tiny_bert_classifier(num_classes=3)
    >>> logits = teacher_logits(teacher, Split(x), batch_size=2)
    >>> logits.shape, bool(np.allclose(logits, teacher(x), atol=1e-5))
    ((5, 3), True)
    """
    return teacher_logits_of_splits(teacher, {"split": split}, batch_size, precision)["split"]


def teacher_logits_of_splits(teacher, splits, batch_size=256, precision="float32"):
    """`teacher_logits` of each split in `{name: Split}`, through one traced forward.

    One pass per split as `teacher_logits` does it, but the splits share one compiled forward
    (and, with another precision, one computing copy of the teacher), so a run's training,
    validation, test and transfer splits trace it a few times in all instead of a few times
    each.

    Args:
        teacher, batch_size, precision: as for `teacher_logits`.
        splits: dict `{name: kdistill.data.Split}`.

    Returns:
        dict `{name: np.ndarray [examples, classes]}`, float32, in the order of `splits`.

    Example:
    >>> from kdistill import testing
    >>> from kdistill.data import Split
    >>> teacher = testing.tiny_bert_classifier(num_classes=3)
    >>> splits = {n: Split(testing.token_batch(batch_size=k, seed=k)[0])
    ...           for n, k in (("train", 5), ("test", 3))}
    >>> {n: v.shape for n, v in teacher_logits_of_splits(teacher, splits, 2).items()}
    {'train': (5, 3), 'test': (3, 3)}
    """
    from kdistill.evaluation import keras_model
    from kdistill.precision import computing_model, resolve

    teacher = computing_model(teacher, resolve(precision, teacher))
    forward = keras_model(teacher)
    trim = getattr(teacher, "backbone", None) is not None
    return {name: _logits(forward, split, batch_size, trim and "padding_mask" in split.inputs)
            for name, split in splits.items()}


def _logits(forward, split, batch_size, trim):
    """One split's logits through `forward`, in length-sorted (and, with `trim`, trimmed)
    batches."""
    n = len(split)
    lengths = split.lengths()
    order = np.argsort(lengths, kind="stable")
    out = None
    width = next(iter(split.inputs.values())).shape[1]
    for start in range(0, n, batch_size):
        index = order[start:start + batch_size]
        length = width
        if trim:
            length = min(width, max(16, int(-(-lengths[index].max() // 16) * 16)))
        logits = forward.predict({k: v[index, :length] for k, v in split.inputs.items()})
        if out is None:
            out = np.zeros((n,) + logits.shape[1:], "float32")
        out[index] = logits
    return out


def arrays_digest(arrays):
    """A sha256 hex digest of named arrays (names, shapes, dtypes and bytes).

    Example:
    >>> a = arrays_digest({"x": np.arange(3)})
    >>> a == arrays_digest({"x": np.arange(3)}), a == arrays_digest({"x": np.arange(4)})
    (True, False)
    """
    h = hashlib.sha256()
    for name in sorted(arrays):
        value = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{value.shape}:{value.dtype}".encode())
        h.update(value.tobytes())
    return h.hexdigest()


def model_digest(model):
    """A sha256 hex digest of a model's weights (values, shapes and dtypes, in order).

    Example:
    >>> from kdistill import testing
    >>> a, b = testing.tiny_mlp(), testing.tiny_mlp()
    >>> b.set_weights([w * 0.5 for w in a.get_weights()])
    >>> model_digest(a) == model_digest(a), model_digest(a) == model_digest(b)
    (True, False)
    """
    return arrays_digest({f"{i:05d}": np.asarray(w) for i, w in enumerate(model.get_weights())})


def cached_arrays(directory, name, identity, compute):
    """Arrays read from `directory/<name>-<digest>.npz`, or computed by `compute()` and written.

    The digest is that of `identity` (a JSON-serialisable mapping of everything the arrays
    depend on). The file is written atomically; one that cannot be read, or whose recorded
    identity differs, is recomputed with a warning.

    Args:
        directory: str or None. None: always compute, write nothing.
        name: str. File name prefix (`logits`, `augmented`...).
        identity: dict.
        compute: callable `() -> {name: np.ndarray}`.

    Returns:
        `(arrays dict, path or None, reused bool)`.

    Example:
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> arrays, path, reused = cached_arrays(d, "x", {"a": 1}, lambda: {"v": np.ones(2)})
    >>> reused, cached_arrays(d, "x", {"a": 1}, lambda: {"v": np.zeros(2)})[0]["v"].tolist()
    (False, [1.0, 1.0])
    """
    if directory is None:
        return compute(), None, False
    text = json.dumps(identity, sort_keys=True, default=str)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    path = os.path.join(directory, f"{name}-{digest}.npz")
    if os.path.exists(path):
        try:
            with np.load(path, allow_pickle=False) as f:
                if str(f["__identity__"]) == text:
                    return {k: f[k] for k in f.files if k != "__identity__"}, path, True
            problem = "it was written for something else"
        except (OSError, ValueError, KeyError, EOFError) as error:
            problem = f"it cannot be read ({error})"
        warnings.warn(f"{path}: {problem}; computing it again.", stacklevel=2)
    arrays = compute()
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".partial-{os.getpid()}-{name}.npz")
    np.savez(tmp, __identity__=np.asarray(text), **arrays)
    os.replace(tmp, path)
    return arrays, path, False
