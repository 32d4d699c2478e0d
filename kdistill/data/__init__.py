"""Offline text datasets: Rotten Tomatoes snippets (TFDS), users' own files, tokenisation.

Importing this module registers the TFDS builder `rotten_tomatoes_snippets`.
"""

import contextlib
import io
import logging

from kdistill.cached_teacher import CachedTeacher
from kdistill.data.augment import (
    Augmenter,
    EmbeddingNeighbours,
    MaskedLMCandidates,
    WordQuery,
    load_augmented,
)
from kdistill.data.batching import (
    bucket_by_length,
    epoch_batches,
    grouped_by_length,
    training_dataset,
    trim_padding,
)
from kdistill.data.files import TextDataset, load_text_file
from kdistill.data.paired import (
    cache_paired_teacher_outputs,
    load_paired_teacher_cache,
    paired_dataset,
    texts_fingerprint,
)
from kdistill.data.rotten_tomatoes import (
    LABEL_NAMES,
    RottenTomatoesSnippets,
    default_data_dir,
    rotten_tomatoes_csv_path,
    rotten_tomatoes_examples,
    rotten_tomatoes_splits,
    rotten_tomatoes_unlabelled,
    stratified_split,
)
from kdistill.data.sources import ROTTEN_TOMATOES_KEY, TextSplits, text_splits
from kdistill.data.teacher_cache import (
    DataFingerprint,
    cache_teacher_outputs,
    dataset_fingerprint,
    describe_teacher_example,
    encode_teacher_example,
    load_teacher_cache,
    read_manifest,
    teacher_fingerprint,
    write_manifest,
)
from kdistill.data.text import Split, as_numpy, make_preprocessor, tokenize, tokenize_dataset

logger = logging.getLogger(__name__)

DATASETS = {
    "rotten_tomatoes": "rotten_tomatoes_snippets",
    "rotten_tomatoes_snippets": "rotten_tomatoes_snippets",
}


def load(name="rotten_tomatoes", split="train", data_dir=None):
    """Load a built-in dataset split as `(text, label)` pairs, preparing it offline if needed.

    The first call writes the TFDS files under `data_dir` (a few seconds, no network); later
    calls read them. The `unlabelled` split yields the text alone (no label).

    Args:
        name: str. `"rotten_tomatoes"` (alias of the TFDS name `"rotten_tomatoes_snippets"`).
        split: str. `"train"`, `"validation"`, `"test"`, `"unlabelled"` or any TFDS split
            expression such as `"train[:10%]"`.
        data_dir: str or None. TFDS data directory; default `default_data_dir()`
            (`$KDISTILL_DATA_DIR` or `~/.cache/kdistill/tfds`).

    Returns:
        An unbatched `tf.data.Dataset` of `(text, label)` (string, int64), or of `text` for the
        unlabelled split. Label 1 is `fresh`, 0 is `rotten` (see `LABEL_NAMES`).

    Example:
    >>> import tempfile
    >>> ds = load("rotten_tomatoes", split="test", data_dir=tempfile.mkdtemp())
    >>> ds.element_spec[1].dtype.name
    'int64'
    """
    import tensorflow_datasets as tfds

    if name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}; available: {sorted(DATASETS)}. For your "
                         "own files use kdistill.data.load_text_file.")
    data_dir = data_dir or default_data_dir()
    unlabelled = str(split).startswith("unlabelled")
    captured = io.StringIO()  # TFDS prints "Downloading and preparing ..." (nothing downloads)
    with contextlib.redirect_stdout(captured):
        ds = tfds.load(DATASETS[name], split=split, data_dir=data_dir,
                       as_supervised=not unlabelled, download=True, try_gcs=False)
    if captured.getvalue().strip():
        logger.info(captured.getvalue().strip())
    if unlabelled:
        ds = ds.map(lambda example: example["text"])
    return ds


__all__ = [
    "ROTTEN_TOMATOES_KEY",
    "Split",
    "TextSplits",
    "bucket_by_length",
    "epoch_batches",
    "grouped_by_length",
    "make_preprocessor",
    "cache_paired_teacher_outputs",
    "load_paired_teacher_cache",
    "paired_dataset",
    "texts_fingerprint",
    "text_splits",
    "tokenize",
    "training_dataset",
    "trim_padding",
    "Augmenter",
    "CachedTeacher",
    "DataFingerprint",
    "EmbeddingNeighbours",
    "LABEL_NAMES",
    "MaskedLMCandidates",
    "RottenTomatoesSnippets",
    "TextDataset",
    "WordQuery",
    "as_numpy",
    "cache_teacher_outputs",
    "dataset_fingerprint",
    "describe_teacher_example",
    "encode_teacher_example",
    "load_teacher_cache",
    "read_manifest",
    "teacher_fingerprint",
    "write_manifest",
    "default_data_dir",
    "load",
    "load_augmented",
    "load_text_file",
    "rotten_tomatoes_csv_path",
    "rotten_tomatoes_examples",
    "rotten_tomatoes_splits",
    "rotten_tomatoes_unlabelled",
    "stratified_split",
    "tokenize_dataset",
]
