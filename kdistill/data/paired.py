"""Paired datasets: the same raw texts tokenised by the student's and by the teacher's preprocessor.

For a teacher and a student with different tokenizers (another WordPiece vocabulary, a smaller
one built from your corpus, another tokenizer, another sequence length) over the same text:

- `paired_dataset` batches texts as `({"student": student_inputs, "teacher": teacher_inputs},
  labels)`, which `kdistill.Distiller(teacher, student, paired_inputs=True)` trains on with the
  live teacher (logits objectives only: see `kdistill.paired_inputs`);
- `cache_paired_teacher_outputs` runs the teacher once over the texts, with its own tokens, and
  writes its logits to a teacher cache keyed by the texts (their order and an ordered
  fingerprint, `texts_fingerprint`); `load_paired_teacher_cache` streams the cached logits back
  beside the **student's** tokens of the same texts, as `(student_inputs, labels,
  {"logits": ...})` batches for `kdistill.Distiller(CachedTeacher(directory), student)`. One
  cache serves any student tokenizer: the student's tokens are made when reading.
"""

import hashlib

import numpy as np
import tensorflow as tf

from kdistill.data.cache_format import read_manifest
from kdistill.data.cache_reader import load_teacher_cache
from kdistill.data.teacher_cache import cache_teacher_outputs
from kdistill.paired_inputs import STUDENT, TEACHER
from kdistill.taps import LOGITS

__all__ = ["cache_paired_teacher_outputs", "load_paired_teacher_cache", "paired_dataset",
           "texts_fingerprint"]


def _text_examples(texts, labels=None):
    """`(unbatched dataset of text or (text, label), labelled)` from texts given in any form."""
    if isinstance(texts, tf.data.Dataset):
        if labels is not None:
            raise ValueError("texts is a tf.data.Dataset: give its labels inside it as "
                             "(text, label) elements, not as labels=.")
        dataset = texts
    else:
        texts = list(texts) if not isinstance(texts, np.ndarray) else texts
        if not len(texts):
            raise ValueError("texts is empty: give at least one text.")
        if not all(isinstance(t, (str, bytes, np.str_, np.bytes_)) for t in texts):
            kinds = sorted({type(t).__name__ for t in texts})
            raise ValueError(
                f"texts must be strings (each model tokenises them with its own preprocessor), "
                f"got {kinds}. For token inputs made elsewhere, build the batches' "
                "{'student': ..., 'teacher': ...} dicts yourself.")
        if labels is None:
            dataset = tf.data.Dataset.from_tensor_slices(tf.constant(texts, tf.string))
        else:
            labels = np.asarray(labels)
            if len(labels) != len(texts):
                raise ValueError(f"{len(texts)} texts but {len(labels)} labels: give one label "
                                 "per text.")
            dataset = tf.data.Dataset.from_tensor_slices((tf.constant(texts, tf.string), labels))
    spec = dataset.element_spec
    labelled = isinstance(spec, tuple) and len(spec) == 2
    text_spec = spec[0] if labelled else spec
    if not isinstance(text_spec, tf.TensorSpec) or text_spec.dtype != tf.string or (
            text_spec.shape.rank != 0):
        raise ValueError(
            f"texts must be one string per element (an unbatched dataset of `text` or "
            f"`(text, label)`), got elements {spec}. Unbatch it, or give one text per example.")
    return dataset, labelled


def _texts_only(dataset, labelled):
    return dataset.map(lambda text, label: text) if labelled else dataset


def _tokenise(preprocessor, texts, role):
    inputs = preprocessor(texts)
    if isinstance(inputs, tuple):  # a preprocessor that packs (x, y, sample_weight)
        inputs = inputs[0]
    if not isinstance(inputs, (dict, tf.Tensor)):
        raise ValueError(
            f"The {role} preprocessor returned {type(inputs).__name__}; it must map a batch of "
            "strings to the model's inputs (a dict such as keras-hub's token_ids/padding_mask/"
            "segment_ids, or a tensor), e.g. keras_hub.models.BertTextClassifierPreprocessor.")
    return inputs


def paired_dataset(texts, student_preprocessor, teacher_preprocessor, labels=None,
                   batch_size=32, shuffle_seed=None, shuffle_buffer=10_000,
                   drop_remainder=False):
    """Batches texts as each model's own tokens: `({"student": ..., "teacher": ...}, labels)`.

    What `kdistill.Distiller(teacher, student, paired_inputs=True)` trains on when the two
    models have different tokenizers. Each batch of texts goes through both preprocessors
    inside `tf.data`.

    Args:
        texts: a list or array of str, or an unbatched `tf.data.Dataset` of `text` or
            `(text, label)` elements.
        student_preprocessor: callable, batch of strings -> the student's inputs (e.g. a
            `keras_hub.models.BertTextClassifierPreprocessor` over the student's vocabulary).
        teacher_preprocessor: callable, the same for the teacher (its own tokenizer and
            sequence length).
        labels: array or None. One label per text, when `texts` is a list or array.
        batch_size: int. Examples per batch.
        shuffle_seed: int or None. None keeps the order; an int shuffles the texts before
            batching (reshuffled every epoch, deterministic for a given seed).
        shuffle_buffer: int. Texts held for shuffling.
        drop_remainder: bool. Drop the last incomplete batch.

    Returns:
        A batched `tf.data.Dataset` of `({"student": inputs, "teacher": inputs}, labels)`, or of
        the input dict alone for unlabelled texts.

    Raises:
        ValueError: texts that are not strings, labels that do not match them, or a
            preprocessor that does not return model inputs.

    Example:
    >>> import keras_hub
    >>> def preprocessor(vocab, length):
    ...     tokenizer = keras_hub.tokenizers.BertTokenizer(
    ...         vocabulary=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + vocab)
    ...     return keras_hub.models.BertTextClassifierPreprocessor(tokenizer, length)
    >>> student = preprocessor(["film", "good"], 5)
    >>> teacher = preprocessor(["a", "good", "film"], 6)
    >>> batches = paired_dataset(["good film"], student, teacher, labels=[1], batch_size=1)
    >>> x, y = next(iter(batches))
    >>> x["student"]["token_ids"].numpy().tolist(), x["teacher"]["token_ids"].numpy().tolist()
    ([[2, 6, 5, 3, 0]], [[2, 6, 7, 3, 0, 0]])
    """
    dataset, labelled = _text_examples(texts, labels)
    if shuffle_seed is not None:
        dataset = dataset.shuffle(int(shuffle_buffer), seed=shuffle_seed,
                                  reshuffle_each_iteration=True)
    dataset = dataset.batch(int(batch_size), drop_remainder=drop_remainder)

    def pair(text):
        return {STUDENT: _tokenise(student_preprocessor, text, "student"),
                TEACHER: _tokenise(teacher_preprocessor, text, "teacher")}

    if labelled:
        dataset = dataset.map(lambda text, label: (pair(text), label),
                              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    else:
        dataset = dataset.map(pair, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(2)


def texts_fingerprint(texts):
    """An ordered fingerprint of texts: what a paired teacher cache is keyed by.

    The sha256 of the texts' UTF-8 bytes in order (each prefixed by its length), so the same
    texts in the same order give the same digest whatever their batching or tokenisation, and
    the cache's i-th record belongs to the i-th text. Labels do not count (the cache holds them).

    Args:
        texts: a list or array of str, or an unbatched `tf.data.Dataset` of `text` or
            `(text, label)` elements.

    Returns:
        str: hex digest.

    Example:
    >>> texts_fingerprint(["a film", "good"]) == texts_fingerprint(["a film", "good"])
    True
    >>> texts_fingerprint(["a film", "good"]) == texts_fingerprint(["good", "a film"])
    False
    """
    dataset, labelled = _text_examples(texts)
    h = hashlib.sha256()
    count = 0
    for batch in _texts_only(dataset, labelled).batch(4096).as_numpy_iterator():
        for text in batch:
            h.update(f"{len(text)}:".encode())
            h.update(text)
            count += 1
    h.update(f"count:{count}".encode())
    return h.hexdigest()


def cache_paired_teacher_outputs(teacher, teacher_preprocessor, texts, directory, labels=None,
                                 batch_size=32, top_k=None, dtype="float16",
                                 examples_per_shard=4096, overwrite=False):
    """Runs the teacher once over texts, on its own tokens, and caches its logits by text.

    A teacher cache (`kdistill.data.teacher_cache.cache_teacher_outputs`) of the teacher's
    logits, one record per text in the given order, whose data fingerprint is
    `texts_fingerprint(texts)`. `load_paired_teacher_cache` reads it back beside any student's
    tokens of the same texts: the teacher never runs again, whatever the student's tokenizer.
    Only the logits are cached: layers and attention follow the teacher's tokens, which the
    student does not read.

    Args:
        teacher: keras.Model. The trained teacher (logits out), built.
        teacher_preprocessor: callable, batch of strings -> the teacher's inputs.
        texts: a list or array of str, or an unbatched `tf.data.Dataset` of `text` or
            `(text, label)` elements.
        directory: str. The cache directory (must not exist or be empty, unless `overwrite`).
        labels: array or None. One label per text, when `texts` is a list or array; cached
            with the logits.
        batch_size: int. Texts per teacher forward.
        top_k, dtype, examples_per_shard, overwrite: as in `cache_teacher_outputs`.

    Returns:
        The manifest dict (also written to `directory/manifest.json`).

    Example:
    >>> import tempfile, keras_hub
    >>> from kdistill import testing
    >>> tokenizer = keras_hub.tokenizers.BertTokenizer(
    ...     vocabulary=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "film"])
    >>> preprocessor = keras_hub.models.BertTextClassifierPreprocessor(tokenizer,
    ...                                                                sequence_length=8)
    >>> teacher = testing.tiny_bert_classifier(vocabulary_size=7, num_classes=2)
    >>> _ = teacher(preprocessor(["good film"]))
    >>> manifest = cache_paired_teacher_outputs(teacher, preprocessor, ["good film", "film"],
    ...                                         tempfile.mkdtemp() + "/cache", labels=[1, 0])
    >>> manifest["num_examples"], manifest["data_fingerprint"] == texts_fingerprint(
    ...     ["good film", "film"])
    (2, True)
    """
    dataset, labelled = _text_examples(texts, labels)
    batches = dataset.batch(int(batch_size))
    if labelled:
        batches = batches.map(
            lambda text, label: (_tokenise(teacher_preprocessor, text, "teacher"), label))
    else:
        batches = batches.map(lambda text: _tokenise(teacher_preprocessor, text, "teacher"))
    return cache_teacher_outputs(
        teacher, batches, directory, taps=(LOGITS,), top_k=top_k, dtype=dtype,
        examples_per_shard=examples_per_shard, overwrite=overwrite,
        data_fingerprint=texts_fingerprint(dataset))


def load_paired_teacher_cache(directory, texts, student_preprocessor, batch_size, teacher=None,
                              shuffle_seed=None, shuffle_buffer=10_000, drop_remainder=False):
    """The student's own tokens of texts beside the teacher's cached logits, as batches.

    Reads a cache of `cache_paired_teacher_outputs` in its written order, pairs its i-th record
    with the i-th text (the texts must be those the cache was made from, in the same order:
    checked with `texts_fingerprint`), tokenises the texts with the student's preprocessor,
    and batches. Train on it with `kdistill.Distiller(CachedTeacher(directory), student)` (or
    `teacher=None`): the batches carry the student's inputs only, so no `paired_inputs`.

    Args:
        directory: str. A cache written by `cache_paired_teacher_outputs`.
        texts: the texts given to `cache_paired_teacher_outputs` (a list or array of str, or an
            unbatched dataset of `text` or `(text, label)`; labels come from the cache).
        student_preprocessor: callable, batch of strings -> the student's inputs.
        batch_size: int. Examples per batch.
        teacher: keras.Model or None. If given, must be the teacher that wrote the cache.
        shuffle_seed: int or None. None keeps the order; an int shuffles the examples
            (buffer of `shuffle_buffer`, reshuffled every epoch, deterministic for the seed).
        shuffle_buffer: int. Examples held for shuffling.
        drop_remainder: bool. Drop the last incomplete batch.

    Returns:
        A batched `tf.data.Dataset` of `(student_inputs, labels, {"logits": teacher_logits})`
        (`(student_inputs, {"logits": ...})` when the cache holds no labels).

    Raises:
        ValueError: the texts are not those of the cache (other texts, another order, another
            count), the cache holds no logits, or it is stale or damaged (see
            `load_teacher_cache`).

    Example:
    >>> import tempfile, keras_hub
    >>> from kdistill import testing
    >>> def preprocessor(vocab, length):
    ...     tokenizer = keras_hub.tokenizers.BertTokenizer(
    ...         vocabulary=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + vocab)
    ...     return keras_hub.models.BertTextClassifierPreprocessor(tokenizer, length)
    >>> teacher_tokens = preprocessor(["a", "good", "film"], 8)
    >>> teacher = testing.tiny_bert_classifier(vocabulary_size=8, num_classes=2)
    >>> _ = teacher(teacher_tokens(["a good film"]))
    >>> texts, directory = ["a good film", "a film"], tempfile.mkdtemp() + "/cache"
    >>> _ = cache_paired_teacher_outputs(teacher, teacher_tokens, texts, directory, labels=[1, 0])
    >>> batches = load_paired_teacher_cache(directory, texts, preprocessor(["film", "good"], 5),
    ...                                     batch_size=2)
    >>> x, y, targets = next(iter(batches))
    >>> x["token_ids"].numpy().tolist(), y.numpy().tolist(), targets["logits"].shape
    ([[2, 1, 6, 5, 3], [2, 1, 5, 3, 0]], [1, 0], TensorShape([2, 2]))
    """
    dataset, labelled = _text_examples(texts)
    manifest = read_manifest(directory)
    if LOGITS not in manifest["taps"]:
        raise ValueError(f"The cache in {directory} holds the taps {manifest['taps']}, not "
                         "'logits': write it with cache_paired_teacher_outputs.")
    fingerprint = texts_fingerprint(dataset)
    if manifest["data_fingerprint"] != fingerprint:
        raise ValueError(
            f"The cache in {directory} was not made from these texts (its "
            f"{manifest['num_examples']} records are keyed by the texts and their order; data "
            f"fingerprint "
            f"{manifest['data_fingerprint'][:12]}, these texts {fingerprint[:12]}). Pass the "
            "texts given to cache_paired_teacher_outputs in the same order (shuffle with "
            "shuffle_seed=), or rebuild the cache with cache_paired_teacher_outputs(..., "
            "overwrite=True).")
    records = load_teacher_cache(directory, batch_size=256, teacher=teacher,
                                 taps=[LOGITS]).unbatch()
    has_labels = "y" in manifest["features"]
    if "sample_weight" in manifest["features"]:  # (x, y, sample_weight, targets): not written
        raise ValueError(f"The cache in {directory} holds sample weights; a paired cache "
                         "(cache_paired_teacher_outputs) does not.")
    # The teacher's own tokens are dropped: the student reads its own, made below.
    cached = records.map(
        (lambda x, y, targets: (y, targets)) if has_labels else (lambda x, targets: targets))
    examples = tf.data.Dataset.zip(_texts_only(dataset, labelled), cached)
    if shuffle_seed is not None:
        examples = examples.shuffle(int(shuffle_buffer), seed=shuffle_seed,
                                    reshuffle_each_iteration=True)
    examples = examples.batch(int(batch_size), drop_remainder=drop_remainder)

    def student_batch(text, rest):
        inputs = _tokenise(student_preprocessor, text, "student")
        return (inputs, *rest) if has_labels else (inputs, rest)

    examples = examples.map(student_batch, num_parallel_calls=tf.data.AUTOTUNE,
                            deterministic=True)
    return examples.prefetch(2)
