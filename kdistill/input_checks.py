"""Checks of the first batch at the door of `fit`/`evaluate`, in NumPy, before TF sees it.

Bad data otherwise surfaces as TF internals ("indices[0,3] = 93 is not in [0, 64)", "Paddings
must be non-negative", "Cast string to float") or, worse, as a silently wrong number (float labels
truncated, a dataset that yields nothing). `check_batch` looks at one batch (the first element of
a `tf.data.Dataset`, or the whole in-memory arrays) and raises a `ValueError` that says which
model, which input and what to change. It runs once per `fit`/`evaluate` call, in Python, so it
costs nothing per step. `named_read_errors` names the damaged shard of a teacher cache whose
reading fails with TF's `DataLossError` (no file named), at no cost until it fails.
"""

import contextlib
import warnings

import numpy as np
import tensorflow as tf

from kdistill.taps import find_backbone


def first_batch(data, what="training"):
    """The first element of a `tf.data.Dataset` as NumPy, or None for other kinds of data.

    Args:
        data: anything `fit` takes as `x`.
        what: str. Which data it is (`"training"`, `"validation"`, `"evaluation"`), for errors.

    Returns:
        The first batch (a nest of NumPy arrays), or None when `data` is not a `tf.data.Dataset`.

    Raises:
        ValueError: the dataset yields nothing. `kdistill.data.cache_reader.CacheReadError`: a
            damaged teacher-cache shard (see `named_read_errors`).

    Example:
    >>> import tensorflow as tf
    >>> first_batch(tf.data.Dataset.range(10).batch(4)).tolist()
    [0, 1, 2, 3]
    >>> first_batch(tf.data.Dataset.range(10).filter(lambda v: v > 99))
    Traceback (most recent call last):
    ...
    ValueError: The training dataset yielded no batches: ...
    """
    if not isinstance(data, tf.data.Dataset):
        return None
    with named_read_errors():
        for element in data.take(1):
            return tf.nest.map_structure(
                lambda t: t.numpy() if isinstance(t, tf.Tensor) else t, element)
    raise ValueError(
        f"The {what} dataset yielded no batches: its first pass is empty (e.g. a `filter` that "
        "keeps nothing, an empty file, or `take`/`skip` past its end). Check the file paths and "
        "filters that built it."
    )


@contextlib.contextmanager
def named_read_errors():
    """Turns TF's read error of a damaged teacher cache into a `CacheReadError` naming the shard.

    A flipped byte in a shard of `kdistill.data.load_teacher_cache` surfaces, wherever its
    batches are read (`fit`, `evaluate`, a loop), as `tf.errors.DataLossError` ("corrupted
    record at 621") with no file named. Inside this context such an error (and the
    `FailedPreconditionError` of a wrong record count) becomes
    `kdistill.data.cache_reader.CacheReadError` when a cache streamed in this process is
    damaged: it names the cache, the shard, how to rebuild it and `verify_checksums=True`.
    Other errors pass unchanged. Nothing runs until an error: no cost per step.

    Example:
    >>> import os, tempfile
    >>> from kdistill import testing
    >>> from kdistill.data import cache_teacher_outputs, load_teacher_cache
    >>> directory = tempfile.mkdtemp() + "/cache"
    >>> _ = cache_teacher_outputs(testing.tiny_bert_classifier(),
    ...                           testing.token_dataset(num_examples=4, batch_size=4), directory)
    >>> shard = os.path.join(directory, "shard-00000.tfrecord")
    >>> data = bytearray(open(shard, "rb").read()); data[40] ^= 1
    >>> _ = open(shard, "wb").write(bytes(data))
    >>> with named_read_errors():
    ...     _ = list(load_teacher_cache(directory, batch_size=2))
    Traceback (most recent call last):
    ...
    kdistill.data.cache_reader.CacheReadError: The cache in ... is damaged: shard \
shard-00000.tfrecord does not match its sha256 in the manifest. ... verify_checksums=True ...
    """
    try:
        yield
    except (tf.errors.DataLossError, tf.errors.FailedPreconditionError) as error:
        # Imported on error only: `kdistill.distiller` does not import the data pipeline.
        from kdistill.data.cache_reader import explain_read_error

        named = explain_read_error(error)
        if named is None:
            raise
        raise named from error


def _name(key):
    return "inputs" if key is None else f"inputs[{key!r}]"


def _named_inputs(x):
    """`[(key or None, array)]` of the batch's NumPy inputs."""
    if isinstance(x, dict):
        return [(k, v) for k, v in x.items() if isinstance(v, np.ndarray)]
    if isinstance(x, np.ndarray):
        return [(None, x)]
    return []


def _model_ranks(model):
    inputs = getattr(model, "inputs", None) or []
    return {getattr(t, "name", None): len(t.shape) for t in inputs}, len(inputs)


def _check_ranks(x, model, role, what):
    ranks, count = _model_ranks(model)
    for key, value in _named_inputs(x):
        expected = ranks.get(key) if key is not None else (
            next(iter(ranks.values())) if count == 1 else None)
        if expected is not None and value.ndim == expected - 1:
            raise ValueError(
                f"{_name(key)} of the first {what} batch has shape {value.shape} (rank "
                f"{value.ndim}), but the {role} {model.name!r} expects rank {expected} (a batch "
                "dimension first): the dataset is not batched. Call dataset.batch(batch_size) "
                "before fit/evaluate."
            )


def _token_ids(x, model):
    if isinstance(x, dict):
        value = x.get("token_ids")
        return ("token_ids", value) if isinstance(value, np.ndarray) else (None, None)
    if isinstance(x, np.ndarray) and find_backbone(model) is not None:
        return None, x
    return None, None


def _check_tokens(x, model, role, vocabulary_size, what):
    key, ids = _token_ids(x, model)
    if ids is None or ids.size == 0 or not np.issubdtype(ids.dtype, np.integer):
        return
    if ids.min() < 0:
        raise ValueError(
            f"{_name(key)} of the first {what} batch holds the negative token id "
            f"{int(ids.min())}; the {role} {model.name!r} reads ids in [0, {vocabulary_size}). "
            "Pad with 0 (the [PAD] id), not -1."
        )
    if vocabulary_size is not None and ids.max() >= vocabulary_size:
        raise ValueError(
            f"{_name(key)} of the first {what} batch holds the token id {int(ids.max())}, but the "
            f"{role} {model.name!r} has a vocabulary of {vocabulary_size} ids (0 to "
            f"{vocabulary_size - 1}). Tokenize with the {role}'s own tokenizer (the same "
            f"vocabulary), or build the {role} with vocabulary_size >= {int(ids.max()) + 1}."
        )
    backbone = find_backbone(model)
    positions = getattr(backbone, "max_sequence_length", None)
    if positions is not None and ids.ndim >= 2 and ids.shape[1] > positions:
        raise ValueError(
            f"{_name(key)} of the first {what} batch has sequence length {ids.shape[1]}, but the "
            f"{role} {model.name!r} has a position table of {positions} "
            f"(max_sequence_length={positions}). Tokenize with sequence_length <= {positions} "
            f"(e.g. the preprocessor's sequence_length, or data.sequence_length), or build the "
            f"{role} with max_sequence_length >= {ids.shape[1]}."
        )


def _check_labels(y, num_classes, logits_rank, what):
    y = np.asarray(y)
    if y.dtype.kind in "USO":
        sample = ", ".join(repr(v.decode() if isinstance(v, bytes) else str(v))
                           for v in y.reshape(-1)[:3])
        raise ValueError(
            f"The labels of the first {what} batch are strings ({sample}, ...): the models need "
            "integer class ids 0 to num_classes - 1. Map the label names to ids first (e.g. "
            "keras.layers.StringLookup(vocabulary=names, num_oov_indices=0)), with the same "
            "name -> id mapping for every split."
        )
    if y.size == 0 or y.dtype.kind not in "iuf":
        return
    soft = (y.ndim == logits_rank and num_classes not in (None, 1) and y.shape[-1] == num_classes)
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)):
            raise ValueError(f"The labels of the first {what} batch hold NaN or Inf: every label "
                             "must be a finite class id (or a finite soft target).")
        if soft:
            return
        fractional = y[y != np.round(y)]
        if fractional.size:
            raise ValueError(
                f"The labels of the first {what} batch are floats with a fractional part (e.g. "
                f"{float(fractional.reshape(-1)[0])}): class ids must be whole numbers, and "
                "a fractional id would be silently truncated. Pass integer class ids; soft "
                f"targets must have the logits' shape [batch, {num_classes}]."
            )
    if soft or num_classes is None:
        return
    low, high = y.min(), y.max()
    if low < 0 or high >= num_classes:
        bad = int(low) if low < 0 else int(high)
        raise ValueError(
            f"The first {what} batch has the label {bad}, outside [0, {num_classes}) for models "
            f"with {num_classes} outputs. Map the labels to 0 to {num_classes - 1}, or build "
            f"teacher and student heads with num_classes={max(int(high) + 1, num_classes)}."
        )


def _check_sample_weight(sample_weight, what):
    w = np.asarray(sample_weight)
    if w.dtype.kind not in "iuf" or w.size == 0:
        return
    if not np.all(np.isfinite(w)):
        raise ValueError(f"The sample weights of the first {what} batch hold NaN or Inf: pass "
                         "finite weights >= 0.")
    if w.min() < 0:
        raise ValueError(
            f"The sample weights of the first {what} batch hold the negative weight "
            f"{float(w.min())}: a negative weight turns the loss into a gain. Pass weights >= 0 "
            "(0 leaves an example out)."
        )


def check_batch(x, y=None, sample_weight=None, models=(), num_classes=None, logits_rank=2,
                what="training", label_metrics=False):
    """Checks one batch against the models that will read it.

    Args:
        x: the batch's inputs: a NumPy array or a dict of them (keras-hub `token_ids`, ...).
        y: its labels, or None.
        sample_weight: its sample weights, or None.
        models: sequence of `(role, model, vocabulary_size or None)`, e.g.
            `[("teacher", teacher, 30522), ("student", student, 30522)]`.
        num_classes: int or None. The models' number of outputs (the logits' last dim).
        logits_rank: int. Rank of the logits (2, or 3 for token-level logits).
        what: str. `"training"`, `"validation"` or `"evaluation"`, quoted in the errors.
        label_metrics: bool. Label metrics (e.g. accuracy) were compiled; they need labels.

    Raises:
        ValueError: an unbatched input, a token id outside a model's vocabulary, a sequence
            longer than a model's position table, string labels, fractional float labels,
            labels outside [0, num_classes), NaN/negative sample weights, or label metrics
            without labels. The message names the model, the input and what to change.

    Example:
    >>> import numpy as np
    >>> from kdistill import testing
    >>> student = testing.tiny_bert_classifier(vocabulary_size=64, name="student")
    >>> x, y = testing.token_batch(batch_size=2)
    >>> check_batch(x, y, models=[("student", student, 64)], num_classes=3)
    >>> x["token_ids"][0, 1] = 93
    >>> check_batch(x, y, models=[("student", student, 64)], num_classes=3)
    Traceback (most recent call last):
    ...
    ValueError: inputs['token_ids'] of the first training batch holds the token id 93, but the \
student 'student' has a vocabulary of 64 ids (0 to 63). ...
    """
    for role, model, vocabulary_size in models:
        _check_ranks(x, model, role, what)
        _check_tokens(x, model, role, vocabulary_size, what)
    if y is None:
        if label_metrics:
            raise ValueError(
                f"The {what} batches carry no labels, but compile(metrics=...) asks for metrics "
                "on labels (e.g. accuracy). Give labelled batches (inputs, labels), or compile "
                "without those metrics (fidelity metrics such as kdistill.metrics."
                "TeacherAgreement() need no labels)."
            )
    else:
        _check_labels(y, num_classes, logits_rank, what)
    if sample_weight is not None:
        _check_sample_weight(sample_weight, what)


def looks_like_probabilities(values):
    """True when every row is non-negative and sums to 1 (a softmax output, not logits).

    Example:
    >>> looks_like_probabilities([[0.2, 0.8], [0.5, 0.5]]), looks_like_probabilities([[2.0, -1.0]])
    (True, False)
    """
    values = np.asarray(values, np.float64)
    return bool(values.ndim >= 2 and values.shape[-1] >= 2 and values.size
                and values.min() >= -1e-6 and values.max() <= 1 + 1e-6
                and np.allclose(values.sum(-1), 1.0, atol=1e-3))


def warn_if_probabilities(logits, role="teacher", name=None):
    """Warns when a model's outputs on the first batch look like probabilities, not logits.

    Args:
        logits: array. The model's outputs on a batch.
        role: str. `"teacher"` or `"student"`.
        name: str or None. The model's name.

    Returns:
        bool: whether it warned.

    Example:
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     warn_if_probabilities([[0.1, 0.9]], name="teacher")
    True
    >>> "Pass logits" in str(caught[0].message)
    True
    """
    if not looks_like_probabilities(logits):
        return False
    model = f"The {role}" + (f" {name!r}" if name else "")
    warnings.warn(
        f"kdistill: {model}'s outputs on the first batch look like probabilities (every row is "
        "non-negative and sums to 1), not logits. Distillation softens logits with the "
        f"temperature; softmax of probabilities is nearly uniform. Pass logits: remove the "
        "final softmax (a keras-hub classifier with activation=None), or for a SavedModel "
        "teacher use kdistill.teachers.from_saved_model(..., from_probabilities=True).",
        stacklevel=3,
    )
    return True
