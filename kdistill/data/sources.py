"""Where a run's examples come from: the built-in dataset or a user's files, as one set of splits.

`text_splits(data_config)` reads what a `kdistill.config.DataConfig` names into unbatched text
datasets (`train`, `validation`, `test`, `unlabelled`) plus the class names, the same way for the
built-in Rotten Tomatoes snippets and for CSV/TSV/JSONL files, so every door into the runner
(`kdistill distill`, `kdistill demo`, `kdistill evaluate`, the TFX module) reads data alike.
"""

import dataclasses

import tensorflow as tf

from kdistill.data.files import EncodingError
from kdistill.data.movie_reviews import NAME as MOVIE_REVIEWS

# What to do about a file that is not in `data.encoding`, for config users.
ENCODING_FIX = ("set the config key data.encoding to the encoding it was saved in (e.g. "
                "`data.encoding: latin-1` or `cp1252`)")

# The identity of the built-in dataset's training split (part of a fine-tuned teacher's cache key).
ROTTEN_TOMATOES_KEY = "rotten_tomatoes_snippets:1.0.0:train"


@dataclasses.dataclass
class TextSplits:
    """A run's text: unbatched `tf.data` datasets per split, and the class names.

    Attributes:
        train: `tf.data.Dataset` of `(text, label)` (or `((text, pair), label)`).
        validation: dataset or None.
        test: dataset or None.
        unlabelled: dataset of text alone, or None.
        label_names: list of str. Class names in label-index order.
        key: str. Identity of the training data, part of a fine-tuned teacher's cache key.

    Example:
    >>> import tensorflow as tf
    >>> texts = TextSplits(tf.data.Dataset.from_tensor_slices((["a"], [0])), label_names=["x"])
    >>> texts.get("train") is texts.train, texts.get("test") is None
    (True, True)
    """

    train: object
    validation: object = None
    test: object = None
    unlabelled: object = None
    label_names: list = dataclasses.field(default_factory=list)
    key: str = "user"

    def get(self, name):
        """The split called `name` (`train`, `validation`, `test`, `unlabelled`) or None."""
        return getattr(self, name)


def _movie_reviews(*splits):
    """The packaged movie-review transfer text, without the texts of `splits`."""
    from kdistill.data.movie_reviews import transfer_texts

    exclude = [text.decode("utf-8") for split in splits if split is not None
               for text, *_ in split.as_numpy_iterator()]
    return tf.data.Dataset.from_tensor_slices(transfer_texts(exclude))


def text_splits(data):
    """The text splits a `DataConfig` names.

    Args:
        data: `kdistill.config.DataConfig`. `dataset: rotten_tomatoes` (built in, offline) or
            `train` / `validation` / `test` / `unlabelled` files with their columns, read in
            `data.encoding`.

    Returns:
        A `TextSplits`. `unlabelled` is the `unlabelled` file, or `movie_reviews`
        (`kdistill.data.movie_reviews.transfer_texts`, de-duplicated against the training,
        validation and test texts: only new text), or else the built-in corpus' unlabelled
        plot summaries, or None.

    Raises:
        ValueError / FileNotFoundError: from `kdistill.data.load_text_file` (a bad file names
            itself and the line; bytes that are not `data.encoding` text say to set it).

    Example:
    >>> import os, tempfile
    >>> from kdistill.config import DataConfig
    >>> path = os.path.join(tempfile.mkdtemp(), "train.csv")
    >>> with open(path, "w") as f:
    ...     _ = f.write("text,label\\ngood,pos\\nbad,neg\\n")
    >>> texts = text_splits(DataConfig(train=path))
    >>> texts.label_names, texts.validation is None
    (['neg', 'pos'], True)
    """
    from kdistill import data as kdata

    if data.dataset is not None:
        def load(split):
            return kdata.load(data.dataset, split=split, data_dir=data.data_dir)

        train, validation, test = load("train"), load("validation"), load("test")
        unlabelled = (_movie_reviews(train, validation, test) if data.unlabelled == MOVIE_REVIEWS
                      else load("unlabelled"))
        return TextSplits(train, validation, test, unlabelled,
                          list(kdata.LABEL_NAMES), ROTTEN_TOMATOES_KEY)

    def read(path, names=None, labelled=True):
        try:
            return kdata.load_text_file(
                path, text_column=data.text_column,
                label_column=data.label_column if labelled else None,
                text_pair_column=data.text_pair_column, label_names=names,
                encoding=data.encoding)
        except EncodingError as error:
            raise error.with_fix(ENCODING_FIX) from None

    train = read(data.train, data.label_names)
    names = train.label_names
    splits = {key: None if getattr(data, key) is None else read(getattr(data, key),
                                                                  names).dataset
              for key in ("validation", "test")}
    if data.unlabelled == MOVIE_REVIEWS:
        unlabelled = _movie_reviews(train.dataset, splits["validation"], splits["test"])
    else:
        unlabelled = None if data.unlabelled is None else read(data.unlabelled,
                                                               labelled=False).dataset
    return TextSplits(train.dataset, splits["validation"], splits["test"], unlabelled,
                      list(names), f"file:{data.train}")
