"""Small, model-agnostic helpers for tests and examples: tiny teacher/student pairs and data.

These build real models (a keras-hub `BertTextClassifier` on a tiny `BertBackbone`, or a small
functional MLP) at sizes that train in milliseconds on a CPU.
"""

import importlib
import importlib.metadata
import pkgutil
import re

import keras
import numpy as np
import tensorflow as tf


def tiny_mlp(input_dim=8, num_classes=3, hidden=16, name=None, seed=0):
    """A functional MLP classifier that outputs logits.

    Example:
    >>> tiny_mlp().output_shape
    (None, 3)
    """
    inputs = keras.Input((input_dim,), name="features")
    x = keras.layers.Dense(hidden, activation="relu",
                           kernel_initializer=keras.initializers.GlorotUniform(seed))(inputs)
    outputs = keras.layers.Dense(num_classes,
                                 kernel_initializer=keras.initializers.GlorotUniform(seed + 1))(x)
    return keras.Model(inputs, outputs, name=name)


def tiny_bert_classifier(vocabulary_size=64, num_layers=2, hidden_dim=8, num_heads=2,
                         intermediate_dim=16, num_classes=3, max_sequence_length=16, name=None):
    """A keras-hub `BertTextClassifier` (no preprocessor) on a tiny `BertBackbone`.

    Example:
    >>> model = tiny_bert_classifier(num_classes=2)
    >>> model.backbone.num_layers
    2
    """
    import keras_hub

    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=vocabulary_size, num_layers=num_layers, num_heads=num_heads,
        hidden_dim=hidden_dim, intermediate_dim=intermediate_dim,
        max_sequence_length=max_sequence_length, dropout=0.0,
    )
    return keras_hub.models.BertTextClassifier(
        backbone=backbone, num_classes=num_classes, preprocessor=None, dropout=0.0, name=name,
    )


def token_batch(batch_size=4, sequence_length=8, vocabulary_size=64, num_classes=3, seed=0,
                min_length=3, int_mask=False):
    """Random keras-hub style inputs with right padding, and integer labels.

    Returns:
        `(inputs, labels)` with inputs `{"token_ids", "padding_mask", "segment_ids"}` as NumPy.

    Example:
    >>> x, y = token_batch(batch_size=2)
    >>> sorted(x), y.shape
    (['padding_mask', 'segment_ids', 'token_ids'], (2,))
    """
    rng = np.random.default_rng(seed)
    lengths = rng.integers(min_length, sequence_length + 1, size=batch_size)
    mask = np.arange(sequence_length)[None, :] < lengths[:, None]
    token_ids = rng.integers(1, vocabulary_size, size=(batch_size, sequence_length)) * mask
    inputs = {
        "token_ids": token_ids.astype("int32"),
        "padding_mask": mask.astype("int32") if int_mask else mask,
        "segment_ids": np.zeros((batch_size, sequence_length), "int32"),
    }
    labels = rng.integers(0, num_classes, size=batch_size).astype("int32")
    return inputs, labels


def token_dataset(num_examples=32, batch_size=8, **kwargs):
    """A batched `tf.data.Dataset` of `token_batch` examples.

    Example:
    >>> int(token_dataset(num_examples=16, batch_size=8).cardinality())
    2
    """
    inputs, labels = token_batch(batch_size=num_examples, **kwargs)
    return tf.data.Dataset.from_tensor_slices((inputs, labels)).batch(batch_size)


def _optional_modules(distribution="kdistill"):
    """Import names of the distribution's optional extras (`apache-beam` -> `apache_beam`)."""
    try:
        requirements = importlib.metadata.requires(distribution) or []
    except importlib.metadata.PackageNotFoundError:  # run from a source tree: no metadata
        return None
    return {re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0].lower().replace("-", "_")
            for r in requirements if "extra ==" in r}


def _missing_extra(error, package, optional):
    """The optional module whose absence caused an import error, or None (a real error)."""
    while error is not None:
        if isinstance(error, ModuleNotFoundError) and error.name:
            top = error.name.split(".")[0]
            if top == package.split(".")[0] or (optional is not None and top not in optional):
                return None
            return top
        error = error.__cause__ or error.__context__
    return None


def package_modules(package="kdistill"):
    """Imports every module of a package (itself included), for tests that must cover them all.

    `__main__` is left out (importing it runs the command line). A module whose import fails
    because a module of one of the package's optional extras is not installed (`kdistill.beam`
    without `apache_beam`) is returned with the reason instead of the module; any other import
    error is raised.

    Args:
        package: str. The package to walk (its sub-packages included).

    Returns:
        A list of `(name, module or None, reason or None)`, sorted by name.

    Example:
    >>> names = [name for name, module, reason in package_modules()]
    >>> names[0], "kdistill.objectives" in names, "kdistill.__main__" in names
    ('kdistill', True, False)
    """
    root = importlib.import_module(package)
    optional = _optional_modules(package)
    found = [(package, root, None)]
    for info in pkgutil.walk_packages(root.__path__, f"{package}."):
        if info.name.rsplit(".", 1)[-1] == "__main__":
            continue
        try:
            found.append((info.name, importlib.import_module(info.name), None))
        except ImportError as error:
            missing = _missing_extra(error, package, optional)
            if missing is None:
                raise
            found.append((info.name, None, f"needs the optional module {missing!r}: {error}"))
    return sorted(found, key=lambda item: item[0])
