"""The run directory of `kdistill.runner.run`: what a finished, an unfinished and a foreign one are.

A run directory holds `config.json` (the resolved config) and `run.json` (`kind`, `status`,
finished `stages`); `prepare_run_dir` decides whether a run starts, resumes or is refused, and
which files it may remove (only the run's own, `RUN_OUTPUTS`). The layout is described in
`kdistill.runner`.
"""

import os
import shutil

from kdistill.training_state import atomic_json, read_json

RUN_KIND = "kdistill_run"
# What a run writes in its directory: all that `overwrite` removes (nothing else is touched).
RUN_OUTPUTS = ("config.json", "run.json", "backup", "stages", "logs", "history.jsonl",
               "student.keras", "labels.json", "report.json", "loss_terms.png",
               "learning_curves.png", "tradeoff.png", "export")


def is_finished(output):
    """True when `output` holds a finished kdistill run (its `run.json` says so).

    Example:
    >>> import tempfile
    >>> is_finished(tempfile.mkdtemp())
    False
    """
    state = read_json(os.path.join(output, "run.json"))
    return isinstance(state, dict) and state.get("kind") == RUN_KIND and (
        state.get("status") == "finished")


# Config keys that do not change the training, so an unfinished run resumes when only they
# change: where the run lives, what is measured and exported at the end, and the targets.
RESUME_FREE = ("output", "latency_runs", "export", "targets")


def _diff_keys(a, b, prefix=""):
    """Dotted keys whose values differ between two nested dicts."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(set(a) | set(b))
        return [k for key in keys for k in _diff_keys(a.get(key), b.get(key),
                                                        f"{prefix}.{key}" if prefix else key)]
    return [] if a == b else [prefix or "(top level)"]


def prepare_run_dir(path, config_dict, overwrite=False):
    """Checks `path` for a new or resumed run; returns the run state to continue from.

    A missing or empty directory starts a new run. A kdistill run directory (with `run.json`)
    whose run is unfinished and whose `config.json` equals `config_dict` (but for the keys of
    `RESUME_FREE`, which do not change the training; `config.json` then takes the new values)
    is resumed. With
    `overwrite=True` a previous kdistill run's files (and only those) are removed and a new run
    starts. Anything else is refused.

    Args:
        path: str. The run directory.
        config_dict: dict. The resolved config (`RunConfig.to_dict()`).
        overwrite: bool. Replace a previous run (finished or not) in `path`.

    Returns:
        dict. The run state: `status`, `stages` (finished stages and their summaries),
        `resumed` (True when continuing an unfinished run).

    Raises:
        FileExistsError: a finished run (without `overwrite`), an unfinished run with another
            config (without `overwrite`), a file, or a directory that is not a kdistill run.

    Example:
    >>> import tempfile
    >>> out = os.path.join(tempfile.mkdtemp(), "run")
    >>> prepare_run_dir(out, {"seed": 0})["resumed"]
    False
    >>> prepare_run_dir(out, {"seed": 0})["resumed"]
    True
    >>> prepare_run_dir(out, {"seed": 1})
    Traceback (most recent call last):
    ...
    FileExistsError: ... holds an unfinished run with a different config (differs in: seed)...
    """
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise FileExistsError(f"{path} exists and is a file; choose another output directory.")
    state = read_json(os.path.join(path, "run.json")) if os.path.isdir(path) else None
    # Other workers of a multi-worker run may have created `workers/` first.
    entries = [e for e in os.listdir(path) if e != "workers"] if os.path.isdir(path) else []
    if entries and (not isinstance(state, dict) or state.get("kind") != RUN_KIND):
        raise FileExistsError(
            f"{path} exists and is not a kdistill run directory (no run.json of kind "
            f"{RUN_KIND!r}); refusing to write into it. Choose another output directory.")
    if state is not None:
        previous = read_json(os.path.join(path, "config.json"))
        if not overwrite:
            if state.get("status") == "finished":
                raise FileExistsError(
                    f"{path} holds a finished run; pass --overwrite (overwrite=True) to replace "
                    "it, or choose another output directory.")
            differs = [k for k in _diff_keys(previous or {}, config_dict)
                       if not any(k == key or k.startswith(key + ".") for key in RESUME_FREE)]
            if differs:  # (a moved run directory still resumes)
                differs = ", ".join(differs[:8])
                raise FileExistsError(
                    f"{path} holds an unfinished run with a different config (differs in: "
                    f"{differs}). Run the same config to resume it, or pass --overwrite to "
                    "start over.")
            state["resumed"] = True
            atomic_json(os.path.join(path, "config.json"), config_dict)  # e.g. new targets
            return state
        for name in RUN_OUTPUTS:
            target = os.path.join(path, name)
            if os.path.isdir(target):
                shutil.rmtree(target)
            elif os.path.exists(target):
                os.remove(target)
    os.makedirs(path, exist_ok=True)
    atomic_json(os.path.join(path, "config.json"), config_dict)
    state = {"kind": RUN_KIND, "status": "running", "stages": {}, "resumed": False}
    atomic_json(os.path.join(path, "run.json"), state)
    return state
