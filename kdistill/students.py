"""Student models for distilling BERT-family teachers: sized presets and teacher-initialised copies.

Two ways to get a student:

- `build_student` / `student_for`: a fresh keras-hub `BertBackbone` (+ `BertTextClassifier` or
  `BertMaskedLM` head) at a preset size (TinyBERT, BERT-mini, ...) with the teacher's vocabulary.
  With `embedding_init="svd"` the token/position/segment tables start from the teacher's, reduced
  to the student's width by a truncated SVD.
- `from_teacher`: a DistilBERT-style student with the teacher's width, whose embeddings, chosen
  transformer layers, pooler and task head are exact copies of the teacher's.

References:
    - [TinyBERT: Distilling BERT for Natural Language Understanding](
      https://arxiv.org/abs/1909.10351) (Jiao et al., 2019).
    - [DistilBERT, a distilled version of BERT](https://arxiv.org/abs/1910.01108)
      (Sanh et al., 2019).
    - [Well-Read Students Learn Better](https://arxiv.org/abs/1908.08962) (Turc et al., 2019),
      for the BERT-mini/-tiny/-small sizes.
"""

import numbers

import keras
import numpy as np

# Architectural fields of each preset. `num_layers`, `hidden_dim`, `num_heads` and
# `intermediate_dim` follow the `keras_hub.models.BertBackbone` argument names.
PRESETS = {
    "tinybert_4": dict(num_layers=4, hidden_dim=312, num_heads=12, intermediate_dim=1200),
    "tinybert_6": dict(num_layers=6, hidden_dim=768, num_heads=12, intermediate_dim=3072),
    "bert_small": dict(num_layers=4, hidden_dim=512, num_heads=8, intermediate_dim=2048),
    "bert_mini": dict(num_layers=4, hidden_dim=256, num_heads=4, intermediate_dim=1024),
    "bert_tiny": dict(num_layers=2, hidden_dim=128, num_heads=2, intermediate_dim=512),
    "test_tiny": dict(num_layers=2, hidden_dim=8, num_heads=2, intermediate_dim=16),
}

TASKS = ("classifier", "masked_lm", "backbone")
STRATEGIES = ("skip", "first", "last")
_OVERRIDABLE = ("num_layers", "hidden_dim", "num_heads", "intermediate_dim", "num_segments")
_TASK_ALIASES = {"classifier": "classifier", "classification": "classifier",
                 "masked_lm": "masked_lm", "mlm": "masked_lm", "backbone": "backbone"}
_SUPPORTED = ("BertBackbone, BertTextClassifier, BertMaskedLM, DistilBertBackbone, "
              "DistilBertTextClassifier, DistilBertMaskedLM")


# --------------------------------------------------------------------------------------------------
# Validation helpers


def _check_positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    return int(value)


def _resolve_task(task):
    key = str(task).lower()
    if key not in _TASK_ALIASES:
        raise ValueError(f"Unknown task {task!r}. Valid tasks: {', '.join(TASKS)} "
                         "('mlm' is an alias of 'masked_lm').")
    return _TASK_ALIASES[key]


def _resolve_config(preset, vocabulary_size, max_sequence_length, dropout, overrides):
    if preset not in PRESETS:
        raise ValueError(f"Unknown student preset {preset!r}. Valid presets: "
                         f"{', '.join(sorted(PRESETS))}.")
    unknown = sorted(set(overrides) - set(_OVERRIDABLE))
    if unknown:
        raise ValueError(f"Unknown override(s) {unknown}. Overridable fields: "
                         f"{', '.join(_OVERRIDABLE)} (plus the `max_sequence_length` and "
                         "`dropout` arguments).")
    config = {"num_segments": 2, **PRESETS[preset], **overrides}
    config["vocabulary_size"] = vocabulary_size
    config["max_sequence_length"] = max_sequence_length
    for key in ("vocabulary_size", "max_sequence_length", *_OVERRIDABLE):
        config[key] = _check_positive_int(config[key], key)
    if config["hidden_dim"] % config["num_heads"]:
        raise ValueError(f"`hidden_dim` ({config['hidden_dim']}) must be divisible by `num_heads` "
                         f"({config['num_heads']}).")
    if not isinstance(dropout, numbers.Real) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"`dropout` must be a float in [0, 1), got {dropout!r}.")
    config["dropout"] = float(dropout)
    return config


# --------------------------------------------------------------------------------------------------
# Teacher introspection


def _teacher_parts(teacher):
    """Returns `(family, task, backbone)`: family "bert"/"distil_bert", task as in `TASKS`."""
    import keras_hub

    models = keras_hub.models
    kinds = (
        (models.BertTextClassifier, "bert", "classifier"),
        (models.BertMaskedLM, "bert", "masked_lm"),
        (models.BertBackbone, "bert", "backbone"),
        (models.DistilBertTextClassifier, "distil_bert", "classifier"),
        (models.DistilBertMaskedLM, "distil_bert", "masked_lm"),
        (models.DistilBertBackbone, "distil_bert", "backbone"),
    )
    for cls, family, task in kinds:
        if isinstance(teacher, cls):
            backbone = teacher if task == "backbone" else teacher.backbone
            return family, task, backbone
    raise ValueError(f"Unsupported teacher {type(teacher).__name__}; supported keras-hub "
                     f"architectures: {_SUPPORTED}.")


def _num_classes_of(teacher):
    num_classes = getattr(teacher, "num_classes", None)
    if num_classes is None and hasattr(teacher, "output_dense"):
        num_classes = teacher.output_dense.units
    return num_classes


def _position_table(backbone):
    layer = getattr(backbone, "position_embedding", None)
    if layer is None:  # DistilBertBackbone keeps it inside TokenAndPositionEmbedding.
        layer = backbone.embeddings.position_embedding
    return layer


# --------------------------------------------------------------------------------------------------
# SVD embedding initialisation


def truncated_svd_embedding(table, rank):
    """Reduces an embedding table to `rank` columns with a truncated SVD.

    Writes the table as `E = U S Vᵀ` (thin SVD, singular values descending) and keeps the top
    `rank` singular triplets: `E ≈ U_k S_k V_kᵀ`, the best rank-k approximation of `E` in the
    Frobenius (and spectral) norm (Eckart-Young). The reduced table is the coordinates of each row
    in the top-k right-singular basis, `U_k S_k = E V_k`, so that `reduced @ projection.T` is that
    best approximation and `‖E - reduced @ projection.T‖²_F = Σ_{i>k} s_i²`. Any other table in the
    same frame is reduced consistently by `other @ projection`. For a tall table (rows >= width)
    `V` and `S` come from the eigendecomposition of the `width x width` Gram matrix
    `EᵀE = V S² Vᵀ`, which is much faster than a full SVD for a vocabulary-sized table.

    Args:
        table: array of shape `(rows, width)`. The embedding matrix (e.g. the teacher's tokens).
        rank: int. The reduced width `k`, `1 <= k <= min(rows, width)`.

    Returns:
        A tuple `(reduced, projection, singular_values)`: `reduced` of shape `(rows, rank)`
        (`U_k S_k`), `projection` of shape `(width, rank)` (`V_k`, orthonormal columns), and all
        the singular values of `table` (descending), as float64 NumPy arrays.

    Example:
    >>> import numpy as np
    >>> table = np.random.default_rng(0).normal(size=(64, 16))
    >>> reduced, projection, s = truncated_svd_embedding(table, 8)
    >>> reduced.shape, projection.shape
    ((64, 8), (16, 8))
    >>> bool(np.isclose(((table - reduced @ projection.T) ** 2).sum(), (s[8:] ** 2).sum()))
    True

    References:
        - [TinyBERT](https://arxiv.org/abs/1909.10351): students narrower than the teacher.
    """
    table = np.asarray(table, dtype="float64")
    if table.ndim != 2:
        raise ValueError(f"`table` must be 2-D, got shape {table.shape}.")
    rank = _check_positive_int(rank, "rank")
    if rank > min(table.shape):
        raise ValueError(f"`rank` ({rank}) must be <= min(table.shape) = {min(table.shape)}.")
    rows, width = table.shape
    if rows >= width:
        # Tall table (vocabulary x hidden): EᵀE = V S² Vᵀ is width x width, so this costs one
        # O(rows·width²) product instead of a full SVD (seconds, not minutes, for 30522 x 768).
        eigenvalues, eigenvectors = np.linalg.eigh(table.T @ table)
        order = np.argsort(eigenvalues)[::-1]
        s = np.sqrt(np.clip(eigenvalues[order], 0.0, None))
        projection = eigenvectors[:, order[:rank]]
    else:
        _, s, vt = np.linalg.svd(table, full_matrices=False)
        projection = vt[:rank].T
    reduced = table @ projection  # = U_k S_k
    return reduced, projection, s


def _init_embeddings_svd(student_backbone, teacher_backbone, rows=None):
    """Sets the student's token/position/segment tables from the teacher's, via `V_k`.

    `rows`: the teacher token ids the student's table keeps (vocabulary pruning), in order.
    """
    width = student_backbone.hidden_dim
    teacher_width = teacher_backbone.hidden_dim
    if width >= teacher_width:
        raise ValueError(
            f"embedding_init='svd' reduces the teacher's width ({teacher_width}) to a narrower "
            f"student; the student's hidden_dim is {width}. Use `from_teacher` for a student of "
            "the teacher's width.")
    expected = teacher_backbone.vocabulary_size if rows is None else len(rows)
    if student_backbone.vocabulary_size != expected:
        raise ValueError(
            f"embedding_init='svd' needs the student's vocabulary size to be {expected} (the "
            f"teacher's, or the number of kept ids); the student has "
            f"{student_backbone.vocabulary_size}.")
    tokens = keras.ops.convert_to_numpy(teacher_backbone.token_embedding.embeddings)
    if rows is not None:
        tokens = tokens[np.asarray(rows)]
    reduced, projection, _ = truncated_svd_embedding(tokens, width)
    dtype = student_backbone.token_embedding.embeddings.dtype
    student_backbone.token_embedding.embeddings.assign(reduced.astype(dtype))

    length = student_backbone.max_sequence_length
    position_layer = _position_table(teacher_backbone)
    teacher_positions = keras.ops.convert_to_numpy(position_layer.position_embeddings)
    if length > teacher_positions.shape[0]:
        raise ValueError(
            f"embedding_init='svd': the student's max_sequence_length ({length}) exceeds the "
            f"teacher's ({teacher_positions.shape[0]}).")
    positions = teacher_positions[:length].astype("float64") @ projection
    student_backbone.position_embedding.position_embeddings.assign(positions.astype(dtype))

    segment = student_backbone.segment_embedding.embeddings
    teacher_segment = getattr(teacher_backbone, "segment_embedding", None)
    if teacher_segment is None:  # DistilBERT has no segments: a zero table adds nothing.
        segment.assign(np.zeros(segment.shape, dtype))
    else:
        table = keras.ops.convert_to_numpy(teacher_segment.embeddings).astype("float64")
        if table.shape[0] != segment.shape[0]:
            raise ValueError(
                f"embedding_init='svd': the student has {segment.shape[0]} segments, the teacher "
                f"{table.shape[0]}.")
        segment.assign((table @ projection).astype(dtype))


# --------------------------------------------------------------------------------------------------
# Preset students


def build_student(preset, vocabulary_size, num_classes=None, task="classifier",
                  max_sequence_length=512, dropout=0.1, embedding_init=None, teacher=None,
                  vocabulary=None, unknown_id=None, **overrides):
    """Builds a keras-hub BERT student at a preset size, for a given vocabulary.

    The student is a `keras_hub.models.BertBackbone` with a task head: a `BertTextClassifier`
    (`preprocessor=None`, outputs logits), a `BertMaskedLM` (tied MLM head), or the bare backbone.
    Presets (layers / hidden / heads / FFN): `"tinybert_4"` 4/312/12/1200 (~14.4M parameters at
    vocabulary 30522), `"tinybert_6"` 6/768/12/3072 (~67M), `"bert_small"` 4/512/8/2048,
    `"bert_mini"` 4/256/4/1024, `"bert_tiny"` 2/128/2/512, and `"test_tiny"` 2/8/2/16 for tests.

    With `embedding_init="svd"` and a (wider) `teacher`, the token table starts as the coordinates
    of the teacher's token table in its top-`hidden_dim` right-singular basis: `E ≈ U_k S_k V_kᵀ`
    and the student table is `U_k S_k = E V_k` (see `truncated_svd_embedding`). The teacher's
    position table (first `max_sequence_length` rows) and segment table are projected with the
    same `V_k`, so by linearity the student's summed embedding is the teacher's summed embedding
    projected onto `V_k` (before layer norm). A DistilBERT teacher has no segment table; the
    student's is then zeroed. Everything else is randomly initialised.

    Args:
        preset: str. One of `kdistill.students.PRESETS`.
        vocabulary_size: int. The teacher's vocabulary size (the student shares the tokenizer).
        num_classes: int. Number of classes; required for `task="classifier"`.
        task: str. `"classifier"` (`BertTextClassifier`), `"masked_lm"` (or `"mlm"`,
            `BertMaskedLM`), or `"backbone"` (`BertBackbone`).
        max_sequence_length: int. Size of the position embedding table (default 512).
        dropout: float in [0, 1). Dropout of the backbone and of the classifier head.
        embedding_init: str or None. `None` (random) or `"svd"` (needs `teacher`).
        teacher: keras-hub BERT/DistilBERT model or backbone. Source of the SVD initialisation.
        vocabulary: int array or None. Vocabulary pruning (classifier only): the ids of the full
            vocabulary the student embeds (see `kdistill.vocabulary.corpus_vocabulary`); the
            result is a `kdistill.vocabulary.VocabularyMappedClassifier` that still reads the
            full vocabulary's ids, mapping the others to `unknown_id`. With `"svd"` its table
            starts from the teacher's rows of those ids.
        unknown_id: int. The full vocabulary's `[UNK]` id (required with `vocabulary`).
        **overrides: Architectural fields replacing the preset's: `num_layers`, `hidden_dim`,
            `num_heads`, `intermediate_dim`, `num_segments`.

    Returns:
        A built `keras_hub.models.BertTextClassifier`, `BertMaskedLM` or `BertBackbone`.

    Raises:
        ValueError: unknown preset, task or override; non-positive sizes; `hidden_dim` not
            divisible by `num_heads`; missing `num_classes`; an invalid SVD initialisation.

    Example:
    >>> student = build_student("test_tiny", vocabulary_size=64, num_classes=3,
    ...                         max_sequence_length=16)
    >>> student.backbone.num_layers, student.backbone.hidden_dim, student.num_classes
    (2, 8, 3)
    >>> build_student("test_tiny", 64, task="masked_lm", num_layers=3).backbone.num_layers
    3

    References:
        - [TinyBERT](https://arxiv.org/abs/1909.10351) (4-layer 312-wide and 6-layer students).
        - [Well-Read Students Learn Better](https://arxiv.org/abs/1908.08962) (BERT-mini/-tiny).
    """
    import keras_hub

    task = _resolve_task(task)
    config = _resolve_config(preset, vocabulary_size, max_sequence_length, dropout, overrides)
    if task == "classifier":
        if num_classes is None:
            raise ValueError("`num_classes` is required for task='classifier'.")
        num_classes = _check_positive_int(num_classes, "num_classes")
    if embedding_init not in (None, "svd"):
        raise ValueError(f"Unknown embedding_init {embedding_init!r}; use None or 'svd'.")
    if embedding_init == "svd" and teacher is None:
        raise ValueError("embedding_init='svd' needs the `teacher` whose embeddings to reduce.")

    if vocabulary is not None:
        return _pruned_classifier(config, num_classes, vocabulary, unknown_id, embedding_init,
                                  teacher, task)
    backbone = keras_hub.models.BertBackbone(**config)
    if embedding_init == "svd":
        _init_embeddings_svd(backbone, _teacher_parts(teacher)[2])
    if task == "backbone":
        return backbone
    if task == "masked_lm":
        return keras_hub.models.BertMaskedLM(backbone=backbone, preprocessor=None)
    return keras_hub.models.BertTextClassifier(
        backbone=backbone, num_classes=num_classes, preprocessor=None, dropout=config["dropout"])


def _pruned_classifier(config, num_classes, vocabulary, unknown_id, embedding_init, teacher, task):
    import keras_hub

    from kdistill.vocabulary import VocabularyMap, VocabularyMappedClassifier

    if task != "classifier":
        raise ValueError(f"Vocabulary pruning builds classifiers only, not task={task!r} (a "
                         "masked LM predicts over the whole vocabulary).")
    if unknown_id is None:
        raise ValueError("`vocabulary` needs `unknown_id` (the [UNK] id pruned tokens map to).")
    vocabulary_map = VocabularyMap(vocabulary, input_vocabulary_size=config["vocabulary_size"],
                                   unknown_id=unknown_id)
    config = dict(config, vocabulary_size=vocabulary_map.output_vocabulary_size)
    backbone = keras_hub.models.BertBackbone(**config)
    if embedding_init == "svd":
        _init_embeddings_svd(backbone, _teacher_parts(teacher)[2],
                             rows=vocabulary_map.kept_ids)
    return VocabularyMappedClassifier(backbone, num_classes, vocabulary_map,
                                      dropout=config["dropout"])


def student_for(teacher, preset, num_classes=None, task=None, embedding_init=None, **kwargs):
    """Builds a preset student matching a keras-hub teacher's vocabulary, length and classes.

    Reads `teacher.backbone.vocabulary_size`, `teacher.backbone.max_sequence_length`, the number of
    segments (BERT) and, for a text classifier, `teacher.num_classes` (or the units of its
    `output_dense` layer). The task defaults to the teacher's: classifier for a text classifier,
    masked LM for a masked LM; for a bare backbone teacher, a classifier if `num_classes` is given,
    else a backbone.

    Args:
        teacher: keras-hub model. A `BertTextClassifier`, `BertMaskedLM`, `BertBackbone` or their
            DistilBERT counterparts.
        preset: str. One of `kdistill.students.PRESETS`.
        num_classes: int or None. Overrides the teacher's number of classes.
        task: str or None. Overrides the inferred task (see `build_student`).
        embedding_init: str or None. `"svd"` initialises the embeddings from this teacher's.
        **kwargs: Passed to `build_student` (`dropout`, `max_sequence_length`, architectural
            overrides such as `num_layers=3`).

    Returns:
        A built keras-hub student (see `build_student`).

    Example:
    >>> from kdistill.testing import tiny_bert_classifier
    >>> teacher = tiny_bert_classifier(hidden_dim=16, num_classes=2)
    >>> student = student_for(teacher, "test_tiny", embedding_init="svd")
    >>> student.num_classes, student.backbone.vocabulary_size, student.backbone.hidden_dim
    (2, 64, 8)

    References:
        - [TinyBERT](https://arxiv.org/abs/1909.10351).
    """
    family, teacher_task, backbone = _teacher_parts(teacher)
    if task is None:
        if teacher_task == "backbone":
            task = "classifier" if num_classes is not None else "backbone"
        else:
            task = teacher_task
    if num_classes is None and teacher_task == "classifier":
        num_classes = _num_classes_of(teacher)
    kwargs.setdefault("max_sequence_length", backbone.max_sequence_length)
    if family == "bert":
        kwargs.setdefault("num_segments", backbone.num_segments)
    return build_student(preset, backbone.vocabulary_size, num_classes=num_classes, task=task,
                         embedding_init=embedding_init, teacher=teacher, **kwargs)


def count_params(preset, vocabulary_size, num_classes=None, task="classifier",
                 max_sequence_length=512, **overrides):
    """Counts a preset student's parameters analytically, without building it.

    Matches `build_student(...).count_params()` for the same arguments.

    Args:
        preset: str. One of `kdistill.students.PRESETS`.
        vocabulary_size: int. The vocabulary size.
        num_classes: int or None. Number of classes (classifier task).
        task: str. `"classifier"`, `"masked_lm"` or `"backbone"`.
        max_sequence_length: int. Size of the position table.
        **overrides: Architectural overrides, as for `build_student`.

    Returns:
        int. The number of parameters (all trainable).

    Example:
    >>> count_params("test_tiny", vocabulary_size=64, num_classes=3, max_sequence_length=16)
    1971

    References:
        - [TinyBERT](https://arxiv.org/abs/1909.10351) (14.5M-parameter 4-layer student).
    """
    task = _resolve_task(task)
    c = _resolve_config(preset, vocabulary_size, max_sequence_length, 0.0, overrides)
    h, f, v = c["hidden_dim"], c["intermediate_dim"], c["vocabulary_size"]
    embeddings = (v + c["max_sequence_length"] + c["num_segments"]) * h + 2 * h
    layer = 4 * (h * h + h) + (h * f + f) + (f * h + h) + 2 * 2 * h
    total = embeddings + c["num_layers"] * layer + (h * h + h)  # + pooler
    if task == "classifier":
        num_classes = _check_positive_int(num_classes, "num_classes")
        total += h * num_classes + num_classes
    elif task == "masked_lm":
        total += (h * h + h) + 2 * h + v  # tied decoder: dense + layer norm + output bias
    return int(total)


# --------------------------------------------------------------------------------------------------
# Teacher-initialised students (DistilBERT style)


def select_layers(teacher_layers, num_layers=None, strategy="skip", layers=None):
    """The teacher layers a smaller student keeps, by strategy or as an explicit list.

    Shared by `from_teacher` (which copies those layers) and `kdistill.pruning.prune_teacher`
    (which prunes them).

    Args:
        teacher_layers: int. The teacher's number of encoder layers.
        num_layers: int or None. How many layers to keep; with `layers`, None or `len(layers)`.
        strategy: str. `"skip"` (every `teacher_layers // num_layers`-th, from the first),
            `"first"` or `"last"`.
        layers: list of int or None. Explicit, strictly increasing teacher layer indices.

    Returns:
        list of int: the kept teacher layer indices, in order.

    Raises:
        ValueError: an index out of range, an unknown strategy, or counts that disagree.

    Example:
    >>> select_layers(12, 4), select_layers(12, 3, "last"), select_layers(4, layers=[1, 3])
    ([0, 3, 6, 9], [9, 10, 11], [1, 3])
    """
    if layers is not None:
        layers = list(layers)
        if not layers:
            raise ValueError("`layers` must list at least one teacher layer index.")
        for index in layers:
            if (isinstance(index, bool) or not isinstance(index, numbers.Integral)
                    or not 0 <= index < teacher_layers):
                raise ValueError(f"`layers` entries must be teacher layer indices in "
                                 f"[0, {teacher_layers - 1}], got {index!r} in {layers}.")
        if any(b <= a for a, b in zip(layers, layers[1:])):
            raise ValueError(f"`layers` must be strictly increasing, got {layers}.")
        if num_layers is not None and num_layers != len(layers):
            raise ValueError(f"`num_layers` ({num_layers}) disagrees with len(layers) "
                             f"({len(layers)}); pass num_layers=None with explicit `layers`.")
        return [int(i) for i in layers]
    if num_layers is None:
        raise ValueError("Pass `num_layers` (or an explicit `layers` list).")
    if (isinstance(num_layers, bool) or not isinstance(num_layers, numbers.Integral)
            or not 1 <= num_layers <= teacher_layers):
        raise ValueError(f"`num_layers` must be an integer in [1, {teacher_layers}] (the "
                         f"teacher's layer count), got {num_layers!r}.")
    if strategy == "skip":
        step = teacher_layers // num_layers
        return [i * step for i in range(num_layers)]
    if strategy == "first":
        return list(range(num_layers))
    if strategy == "last":
        return list(range(teacher_layers - num_layers, teacher_layers))
    raise ValueError(f"Unknown strategy {strategy!r}. Valid strategies: {', '.join(STRATEGIES)}, "
                     "or an explicit `layers=[...]` list.")


def _copy(source, target):
    weights = source.get_weights()
    shapes = [w.shape for w in weights]
    target_shapes = [tuple(w.shape) for w in target.weights]
    if shapes != target_shapes:
        raise ValueError(f"Cannot copy {source.name!r} into {target.name!r}: weight shapes "
                         f"{shapes} != {target_shapes}.")
    target.set_weights(weights)
    for a, b in zip(weights, target.get_weights()):
        if not np.array_equal(a, b):
            raise RuntimeError(f"Copying {source.name!r} into {target.name!r} was not exact.")


def _fresh_config(layer, **changes):
    config = layer.get_config()
    config.pop("name", None)  # A fresh auto-name: teacher and student live side by side.
    config.update(changes)
    return config


def from_teacher(teacher, num_layers=None, strategy="skip", layers=None):
    """Builds a DistilBERT-style student: a shallower copy of the teacher, initialised from it.

    The student has the teacher's architecture and width (hidden size, heads, FFN size,
    vocabulary, maximum length, segments, dropout and dtype) but fewer transformer layers. Its
    embeddings (token, position, segment and the embeddings layer norm), its transformer layers
    (student layer `j` is teacher layer `layers[j]`), the pooler (`pooled_dense`) and the task head
    (`output_dense` of a classifier, the MLM head of a masked LM) are exact copies of the teacher's
    weights, so each copied layer computes exactly what its teacher layer computes. With all of the
    teacher's layers (`strategy="first"`, `num_layers` = the teacher's) the student reproduces the
    teacher's outputs. The teacher is not modified; the student has no preprocessor.

    Layer selection: `"skip"` takes teacher layers `0, k, 2k, ...` with
    `k = teacher_layers // num_layers` (DistilBERT's "one layer out of two" for 12 -> 6);
    `"first"` the first `num_layers`; `"last"` the last `num_layers`; an explicit
    `layers=[...]` (strictly increasing teacher indices) overrides `strategy`.

    Args:
        teacher: keras-hub model. A `BertBackbone`, `BertTextClassifier`, `BertMaskedLM`,
            `DistilBertBackbone`, `DistilBertTextClassifier` or `DistilBertMaskedLM`. The student
            is of the same class.
        num_layers: int. Number of student layers, in `[1, teacher layers]`. May be omitted when
            `layers` is given.
        strategy: str. `"skip"`, `"first"` or `"last"`.
        layers: list of int or None. Explicit teacher layer indices, one per student layer.

    Returns:
        A built keras-hub model of the teacher's class. `student.backbone.num_layers` is the
        number of selected layers.

    Raises:
        ValueError: unsupported teacher; `num_layers` out of range; `layers` out of range, empty or
            not strictly increasing; unknown `strategy`.

    Example:
    >>> from kdistill.testing import tiny_bert_classifier
    >>> teacher = tiny_bert_classifier(num_layers=4)
    >>> student = from_teacher(teacher, num_layers=2)  # teacher layers 0 and 2
    >>> student.backbone.num_layers, student.num_classes
    (2, 3)
    >>> from_teacher(teacher, layers=[1, 3]).backbone.num_layers
    2

    References:
        - [DistilBERT](https://arxiv.org/abs/1910.01108) (initialisation from every other layer).
        - [TinyBERT](https://arxiv.org/abs/1909.10351).
    """
    import keras_hub

    family, task, backbone = _teacher_parts(teacher)
    selected = select_layers(backbone.num_layers, num_layers, strategy, layers)
    student_backbone = type(backbone).from_config(
        _fresh_config(backbone, num_layers=len(selected)))

    if family == "bert":
        for name in ("token_embedding", "position_embedding", "segment_embedding"):
            _copy(getattr(backbone, name), getattr(student_backbone, name))
    else:
        _copy(backbone.embeddings, student_backbone.embeddings)
    _copy(backbone.embeddings_layer_norm, student_backbone.embeddings_layer_norm)
    for j, i in enumerate(selected):
        _copy(backbone.transformer_layers[i], student_backbone.transformer_layers[j])
    if family == "bert":
        _copy(backbone.pooled_dense, student_backbone.pooled_dense)

    if task == "backbone":
        return student_backbone
    if task == "masked_lm":
        cls = (keras_hub.models.BertMaskedLM if family == "bert"
               else keras_hub.models.DistilBertMaskedLM)
        student = cls(backbone=student_backbone, preprocessor=None)
        _copy(teacher.masked_lm_head, student.masked_lm_head)
        return student
    if family == "bert":
        student = keras_hub.models.BertTextClassifier(
            backbone=student_backbone, num_classes=_num_classes_of(teacher), preprocessor=None,
            activation=teacher.activation, dropout=teacher.dropout)
    else:
        student = keras_hub.models.DistilBertTextClassifier(
            backbone=student_backbone, num_classes=_num_classes_of(teacher), preprocessor=None,
            activation=teacher.activation, hidden_dim=teacher.hidden_dim, dropout=teacher.dropout)
        _copy(teacher.pooled_dense, student.pooled_dense)
    _copy(teacher.output_dense, student.output_dense)
    return student
