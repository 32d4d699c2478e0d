"""Resumable training: the training state on disk, and a backup callback that resumes mid-epoch.

`save_training_state` writes a model's weights (and its optimizer's, when compiled) together with
the global optimizer step and the dropout RNG states, atomically; `load_training_state` reads them
back. `ResumableBackup` is Keras' `BackupAndRestore` built on them: a run killed mid-epoch and
started again continues on exactly the same state (the caller restarts the data stream at the
saved step, see `kdistill.data.training_dataset`).
"""

import json
import os

import h5py
import keras
import numpy as np

_STATE_GROUP = "kdistill_state"


def check_finite_weights(model, action="save"):
    """Refuses a model with a NaN or Inf weight, naming the first such variable.

    Used before every save and export (`Distiller.save`/`export`, `kdistill.export_student`,
    `save_training_state`): a diverged model is never written.

    Args:
        model: keras.Model (or anything with `.weights`).
        action: str. What is refused, quoted in the error (`"save"`, `"export"`).

    Raises:
        ValueError: a weight holds NaN or Inf (the message names the variable and counts them).

    Example:
    >>> from kdistill import testing
    >>> model = testing.tiny_mlp(name="mlp")
    >>> check_finite_weights(model)
    >>> _ = model.layers[-1].bias.assign([np.nan, 0.0, 0.0])
    >>> check_finite_weights(model, "export")
    Traceback (most recent call last):
    ...
    ValueError: Refusing to export the model 'mlp': its weight '.../bias' holds 1 NaN/Inf ...
    """
    for variable in model.weights:
        value = np.asarray(keras.ops.convert_to_numpy(variable))
        if not np.issubdtype(value.dtype, np.floating):
            continue
        bad = int(np.size(value) - np.count_nonzero(np.isfinite(value)))
        if bad:
            raise ValueError(
                f"Refusing to {action} the model {model.name!r}: its weight "
                f"{getattr(variable, 'path', variable.name)!r} holds {bad} NaN/Inf value(s) (of "
                f"{np.size(value)}), so every prediction would be NaN. Training diverged or the "
                "weights were loaded from a diverged run: retrain from the last good checkpoint "
                "with a lower learning rate (or optimizer clipnorm=1.0)."
            )


def atomic_json(path, value):
    """Writes `value` as JSON to `path` through a temporary file (a kill leaves the old file).

    Example:
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "x.json")
    >>> atomic_json(path, {"a": np.int64(1)})
    >>> open(path).read().replace(" ", "").replace("\\n", "")
    '{"a":1}'
    """
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=2, default=json_default)
    os.replace(tmp, path)


def json_default(value):
    """`json.dump(default=...)` for NumPy scalars and arrays (anything else as `str`).

    Example:
    >>> json.dumps({"n": np.float32(0.5), "a": np.arange(2)}, default=json_default)
    '{"n": 0.5, "a": [0, 1]}'
    """
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    return str(value)


def read_json(path):
    """The JSON value in `path`, or None when the file is missing or not JSON.

    Example:
    >>> read_json("/nonexistent.json") is None
    True
    """
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def seed_variables(model):
    """The dropout RNG states (`keras.random.SeedGenerator`), which weights files leave out.

    Example:
    >>> from kdistill import testing
    >>> len(seed_variables(testing.tiny_mlp()))
    0
    """
    return [v for v in model.variables if v.name == "seed_generator_state"]


def save_training_state(model, path, step):
    """Writes `model.save_weights` plus the step and dropout RNG state, atomically.

    A model with a NaN or Inf weight is refused (`check_finite_weights`): the previous state on
    disk stays the last good one.

    Args:
        model: keras.Model. Built (and compiled, to include the optimizer).
        path: str. Ends in `.weights.h5`.
        step: int. Recorded as the file's `step`.

    Raises:
        ValueError: a weight is NaN or Inf.

    Example:
    >>> import tempfile
    >>> from kdistill import testing
    >>> path = os.path.join(tempfile.mkdtemp(), "state.weights.h5")
    >>> save_training_state(testing.tiny_mlp(), path, step=7)
    >>> saved_step(path), load_training_state(testing.tiny_mlp(), path)
    (7, 7)
    """
    check_finite_weights(model, "save the training state of")
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".partial-{os.getpid()}.weights.h5")
    model.save_weights(tmp, overwrite=True)
    with h5py.File(tmp, "a") as f:
        group = f.create_group(_STATE_GROUP)
        group.attrs["step"] = int(step)
        seeds = [keras.ops.convert_to_numpy(v) for v in seed_variables(model)]
        group.create_dataset("seed_states", data=np.asarray(seeds, "int64").reshape(-1, 2))
    os.replace(tmp, path)


def load_training_state(model, path):
    """Loads a file written by `save_training_state`; returns its step.

    Args:
        model: keras.Model. Built like the one that was saved.
        path: str.

    Returns:
        int. The saved step.

    Raises:
        ValueError: the file holds another number of dropout RNG states than the model.

    Example:
    >>> import tempfile
    >>> from kdistill import testing
    >>> path = os.path.join(tempfile.mkdtemp(), "state.weights.h5")
    >>> model = testing.tiny_mlp()
    >>> save_training_state(model, path, step=3)
    >>> other = testing.tiny_mlp()
    >>> other.set_weights([w + 1.0 for w in model.get_weights()])
    >>> load_training_state(other, path), bool(np.allclose(other.get_weights()[0],
    ...                                                    model.get_weights()[0]))
    (3, True)
    """
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and not optimizer.built:
        optimizer.build(model.trainable_variables)
    model.load_weights(path)
    with h5py.File(path, "r") as f:
        group = f[_STATE_GROUP]
        seeds = group["seed_states"][()]
        step = int(group.attrs["step"])
    variables = seed_variables(model)
    if len(variables) != len(seeds):
        raise ValueError(f"{path} holds {len(seeds)} dropout RNG states but the model has "
                         f"{len(variables)}: it was saved from another architecture.")
    for variable, value in zip(variables, seeds):
        variable.assign(value.astype(keras.backend.standardize_dtype(variable.dtype)))
    return step


def saved_step(path):
    """The step recorded in a `save_training_state` file, or None if there is none.

    Example:
    >>> saved_step("/nonexistent.weights.h5") is None
    True
    """
    if not os.path.isfile(path):
        return None
    try:
        with h5py.File(path, "r") as f:
            return int(f[_STATE_GROUP].attrs["step"])
    except (OSError, KeyError):
        return None


class ResumableBackup(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` that resumes mid-epoch on exactly the same state.

    Compared with Keras' callback it saves atomically (a kill while saving leaves the previous
    backup intact), records the global optimizer step and the dropout RNG states with the
    weights (Keras' weights files leave those out), and restores only a backup that is ahead of
    the model, once. Where to continue in the data is the caller's job: read the step with
    `saved_step(callback.weights_path)` and start the data stream there (see
    `training_dataset`). The backup is kept after training (`delete_checkpoint=False`); delete
    `backup_dir` once the result is saved elsewhere.

    Args:
        backup_dir: str. Directory of the backup (used by nothing else).
        save_freq: int. Save every this many optimizer steps.
        steps_per_epoch: int. For the epoch/batch recorded in `training_metadata.json`.

    Example:
    >>> import tempfile
    >>> callback = ResumableBackup(tempfile.mkdtemp(), save_freq=10, steps_per_epoch=4)
    >>> callback.weights_path.endswith("latest.weights.h5")
    True
    """

    def __init__(self, backup_dir, save_freq, steps_per_epoch):
        super().__init__(backup_dir, save_freq=int(save_freq), delete_checkpoint=False)
        self.steps_per_epoch = int(steps_per_epoch)
        self.weights_path = self._weights_path

    def on_train_begin(self, logs=None):
        self.restore()

    def restore(self):
        """Loads the backup into `self.model` if it is ahead of it; returns the step or None."""
        step = saved_step(self._weights_path)
        current = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        if step is None or step <= current:
            return None
        return load_training_state(self.model, self._weights_path)

    def _save_model(self):
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        save_training_state(self.model, self._weights_path, step)
        epoch, batch = divmod(step, self.steps_per_epoch)
        atomic_json(self._training_metadata_path, {"epoch": epoch, "batch": batch,
                                                    "step": step})
