"""Temperature and alpha: scheduled during `fit` (`KDScheduler`), or searched (`temperature_sweep`).

`LogitsKD` (and `MultiTeacherKD`) keep `temperature` and `alpha` in non-trainable variables that
the compiled train step reads, so a callback can change them between steps without retracing.
`KDScheduler` sets them per epoch or per step from a schedule — `LinearSchedule`,
`CosineSchedule`, `ExponentialSchedule`, or any callable `f(epoch)` / `f(step)` — and writes the
values into the epoch (and batch) logs, so `fit` history, progress bars and a TensorBoard callback
placed after it show them. `temperature_sweep` trains a fresh student per temperature (and alpha)
and reports validation accuracy for each.
"""

import dataclasses
import json
import math
import os
import time

import keras

from kdistill.objectives import LogitsKD, check_fraction, check_temperature
from kdistill.tensorboard_logs import GlobalStepTensorBoard
from kdistill.training_state import atomic_json, json_default

__all__ = [
    "BestEpoch",
    "CosineSchedule",
    "ExponentialSchedule",
    "KDScheduler",
    "LinearSchedule",
    "RunLogger",
    "Schedule",
    "SweepResult",
    "temperature_sweep",
    "truncate_history",
]


class Schedule:
    """A value moving from `start` to `end` as training progresses from 0 to 1.

    Subclasses implement `value(progress)`. A schedule is evaluated at `progress = i / (total-1)`
    for epoch (or step) `i` of `total`, and holds `end` afterwards.

    Args:
        start: float. Value at the first epoch/step.
        end: float. Value at the last epoch/step.

    Example:
    >>> class Step(Schedule):  # start for the first half, then end
    ...     def value(self, progress):
    ...         return self.start if progress < 0.5 else self.end
    >>> [Step(4.0, 1.0)(p) for p in (0.0, 0.7, 2.0)]
    [4.0, 1.0, 1.0]
    """

    def __init__(self, start, end):
        self.start, self.end = float(start), float(end)

    def value(self, progress):
        raise NotImplementedError

    def __call__(self, progress):
        return self.value(min(max(float(progress), 0.0), 1.0))

    def get_config(self):
        return {"start": self.start, "end": self.end}

    def __repr__(self):
        return f"{type(self).__name__}(start={self.start}, end={self.end})"


class LinearSchedule(Schedule):
    """`start + (end - start) · p`.

    Example:
    >>> LinearSchedule(8.0, 2.0)(0.5)
    5.0
    """

    def value(self, progress):
        return self.start + (self.end - self.start) * progress


class CosineSchedule(Schedule):
    """`end + (start - end) · (1 + cos(π p)) / 2`: slow at both ends, fastest in the middle.

    Example:
    >>> CosineSchedule(8.0, 2.0)(0.5)
    5.0
    """

    def value(self, progress):
        return self.end + (self.start - self.end) * 0.5 * (1.0 + math.cos(math.pi * progress))


class ExponentialSchedule(Schedule):
    """`start · (end / start)^p`: a constant ratio per epoch/step (both values must be > 0).

    Example:
    >>> ExponentialSchedule(8.0, 2.0)(0.5)
    4.0
    """

    def __init__(self, start, end):
        super().__init__(start, end)
        if not (self.start > 0 and self.end > 0):
            raise ValueError(
                f"ExponentialSchedule needs start > 0 and end > 0, got start={self.start}, "
                f"end={self.end}. For a value that reaches 0 use LinearSchedule or CosineSchedule."
            )

    def value(self, progress):
        return self.start * (self.end / self.start) ** progress


def _checker(what):
    return check_temperature if what == "temperature" else (
        lambda v: check_fraction("alpha", v))


def _validated(what, spec):
    """Checks numbers and built-in schedules now (their extremes are their endpoints)."""
    if spec is None:
        return None
    check = _checker(what)
    try:
        if isinstance(spec, Schedule):
            check(spec.start)
            check(spec.end)
            return spec
        if isinstance(spec, (int, float)) and not isinstance(spec, bool):
            return float(check(spec))
    except ValueError as e:
        raise ValueError(f"KDScheduler {what} schedule {spec!r}: {e}") from None
    if callable(spec):
        return spec
    raise ValueError(
        f"KDScheduler: {what} must be a number, a Schedule (LinearSchedule, CosineSchedule, "
        f"ExponentialSchedule) or a callable f(epoch or step) -> value, got {spec!r}."
    )


class KDScheduler(keras.callbacks.Callback):
    """Anneals the distillation temperature and/or alpha during `fit`, and logs them.

    Each schedule is a number (set once at the start), a `Schedule` (spread over `total`
    epochs/steps, by default the whole `fit`), or a callable taking the 0-based epoch
    (`update="epoch"`) or global step (`update="step"`, the optimizer's iteration count, so a
    resumed run continues where it stopped) and returning the value. Every value on the schedule
    is checked before training starts: temperatures must be > 0 and alpha in [0, 1]. The
    current values go into the logs as `temperature` and `alpha` (prefixed by the objective's name
    when it is not the default `logits_kd`); put this callback **before** a `TensorBoard` callback
    so the written logs include them. With `steps_per_execution > 1` a per-step schedule changes
    once per execution.

    Args:
        temperature: number, `Schedule`, callable or None (left as is).
        alpha: number, `Schedule`, callable or None (left as is).
        update: `"epoch"` or `"step"`.
        total: int or None. Epochs (or steps) over which `Schedule`s run; default: all of `fit`
            (needed for `update="step"` when the dataset's length is unknown).
        objective: str or None. Name of the `LogitsKD`/`MultiTeacherKD` objective to schedule,
            when the Distiller has several.

    Example:
    >>> import numpy as np, kdistill
    >>> from kdistill.testing import tiny_mlp
    >>> distiller = kdistill.Distiller(tiny_mlp(), tiny_mlp(seed=3))
    >>> distiller.compile(optimizer="adam")
    >>> schedule = KDScheduler(temperature=LinearSchedule(8.0, 2.0), alpha=0.3)
    >>> history = distiller.fit(np.ones((8, 8)), np.zeros(8), epochs=3, verbose=0,
    ...                         callbacks=[schedule])
    >>> [round(t, 4) for t in history.history["temperature"]]
    [8.0, 5.0, 2.0]
    >>> round(history.history["alpha"][-1], 4)   # float32 variable: 0.30000001
    0.3
    """

    def __init__(self, temperature=None, alpha=None, update="epoch", total=None, objective=None):
        super().__init__()
        if update not in ("epoch", "step"):
            raise ValueError(f"KDScheduler: update must be 'epoch' or 'step', got {update!r}.")
        if temperature is None and alpha is None:
            raise ValueError("KDScheduler: give a temperature and/or an alpha schedule.")
        if total is not None and (isinstance(total, bool) or not isinstance(total, int)
                                  or total < 1):
            raise ValueError(f"KDScheduler: total must be an int >= 1, got {total!r}.")
        self.schedules = {"temperature": _validated("temperature", temperature),
                          "alpha": _validated("alpha", alpha)}
        self.update = update
        self.total = total
        self.objective_name = objective
        self._objective = None
        self._total = None

    # ---------------------------------------------------------------------- resolving

    def _find_objective(self):
        objectives = getattr(self.model, "objectives", None)
        if objectives is None:
            raise ValueError(
                f"KDScheduler schedules a kdistill.Distiller's LogitsKD objective; the model "
                f"{self.model.name!r} ({type(self.model).__name__}) has no objectives."
            )
        found = [o for o in objectives if isinstance(o, LogitsKD)]
        if self.objective_name is not None:
            found = [o for o in found if o.name == self.objective_name]
        if len(found) != 1:
            names = [o.name for o in objectives if isinstance(o, LogitsKD)]
            raise ValueError(
                f"KDScheduler needs exactly one LogitsKD/MultiTeacherKD objective to schedule; "
                f"found {names or 'none'}"
                + (f" named {self.objective_name!r}" if self.objective_name else "")
                + ". Pass objective=<name> to choose one, or add LogitsKD to the objectives."
            )
        return found[0]

    def _resolve_total(self):
        if self.total is not None:
            return self.total
        params = self.params or {}
        epochs, steps = params.get("epochs"), params.get("steps")
        if self.update == "epoch":
            return epochs
        return epochs * steps if epochs and steps else None

    def _value(self, what, index):
        spec = self.schedules[what]
        if spec is None:
            return None
        if isinstance(spec, float):
            return spec
        if isinstance(spec, Schedule):
            if self._total is None:
                raise ValueError(
                    f"KDScheduler: the number of steps is unknown (a dataset of unknown length), "
                    f"so the {what} {spec!r} cannot be spread over the run; pass total=<steps>."
                )
            return spec(index / max(self._total - 1, 1))
        return spec(index)

    def _check(self, what, index, value):
        unit = self.update
        try:
            return _checker(what)(value)
        except (TypeError, ValueError) as e:
            raise ValueError(
                f"KDScheduler: the {what} schedule gives {value!r} at {unit} {index}: {e}"
            ) from None

    def _apply(self, index):
        for what in ("temperature", "alpha"):
            value = self._value(what, index)
            if value is not None:
                setattr(self._objective, what, self._check(what, index, value))

    # ---------------------------------------------------------------------- callback hooks

    def on_train_begin(self, logs=None):
        self._objective = self._find_objective()
        self._total = self._resolve_total()
        if self._total is not None:  # every value on the schedule, before any training
            for what in ("temperature", "alpha"):
                if self.schedules[what] is not None:
                    for index in range(self._total):
                        self._check(what, index, self._value(what, index))
        self._apply(self._start_index())

    def _start_index(self):
        if self.update == "step":
            return int(self.model.optimizer.iterations.numpy())
        return 0

    def on_epoch_begin(self, epoch, logs=None):
        if self.update == "epoch":
            self._apply(epoch)

    def on_train_batch_begin(self, batch, logs=None):
        if self.update == "step":
            self._apply(int(self.model.optimizer.iterations.numpy()))

    def _log(self, logs):
        if logs is None or self._objective is None:
            return
        prefix = "" if self._objective.name == "logits_kd" else f"{self._objective.name}_"
        logs[f"{prefix}temperature"] = self._objective.temperature
        logs[f"{prefix}alpha"] = self._objective.alpha

    def on_train_batch_end(self, batch, logs=None):
        self._log(logs)

    def on_epoch_end(self, epoch, logs=None):
        self._log(logs)


@dataclasses.dataclass
class SweepResult:
    """What `temperature_sweep` measured.

    Attributes:
        rows: list of dicts, one per (temperature, alpha): `temperature`, `alpha`,
            `val_<metric>` (last epoch), `best_val_<metric>`, `best_epoch` (1-based), `seconds`.
        metric: str. The validation metric's name.
        best: dict. The row with the highest `best_val_<metric>`.

    Example:
    >>> row = {"temperature": 2.0, "alpha": 0.5, "val_accuracy": 0.8,
    ...        "best_val_accuracy": 0.82, "best_epoch": 2, "seconds": 3.0}
    >>> print(SweepResult([row], "accuracy", row).table().splitlines()[1])
         2    0.5           0.8000   0.8200      2     3.0  <- best
    """

    rows: list
    metric: str
    best: dict

    def table(self):
        """The rows as a fixed-width text table."""
        key = f"val_{self.metric}"
        lines = [f"{'T':>6} {'alpha':>6} {key:>16} {'best':>8} {'epoch':>6} {'s':>7}"]
        for r in self.rows:
            mark = "  <- best" if r is self.best else ""
            lines.append(f"{r['temperature']:>6g} {r['alpha']:>6g} {r[key]:>16.4f} "
                         f"{r['best_' + key]:>8.4f} {r['best_epoch']:>6d} "
                         f"{r['seconds']:>7.1f}{mark}")
        return "\n".join(lines)

    def __str__(self):
        return self.table()


def _optimizer_factory(optimizer):
    if isinstance(optimizer, keras.optimizers.Optimizer):
        raise ValueError(
            "temperature_sweep trains a fresh student per value and needs a fresh optimizer for "
            "each: pass a name ('adam') or a callable, e.g. "
            "`lambda: keras.optimizers.AdamW(1e-4)`, not an optimizer instance."
        )
    if isinstance(optimizer, str):
        return lambda: optimizer
    if callable(optimizer):
        return optimizer
    raise ValueError(f"temperature_sweep: optimizer must be a name or a callable, got "
                     f"{optimizer!r}.")


def temperature_sweep(teacher, make_student, train_data, validation_data,
                      temperatures=(1.0, 2.0, 4.0, 8.0), alphas=(0.5,), epochs=2,
                      optimizer="adam", metric="accuracy", seed=0, verbose=1, **fit_kwargs):
    """Trains a fresh student per temperature (and alpha) and reports validation accuracy.

    For every `(T, alpha)` the global seed is reset to `seed`, `make_student()` builds a new
    student (so every run starts from the same initial weights), a `Distiller(teacher, student,
    temperature=T, alpha=alpha)` (the teacher's default objective: `LogitsKD`, or
    `MultiTeacherKD` for a `MultiTeacher`) is compiled with a new optimizer and trained for
    `epochs` epochs. The best value is the one with the highest validation metric at any epoch.
    All temperatures and alphas are checked before anything trains.

    Args:
        teacher: keras.Model (or what `Distiller` accepts as teacher). Shared, never trained.
        make_student: callable returning a new, built student keras.Model on each call.
        train_data: `tf.data.Dataset` of labelled batches, or an `(x, y)` tuple of arrays.
        validation_data: data for `fit(validation_data=...)`.
        temperatures: iterable of floats > 0.
        alphas: iterable of floats in [0, 1] (weight of the hard-label loss).
        epochs: int. Epochs per run.
        optimizer: str or callable returning a new optimizer.
        metric: str. Compiled metric whose `val_` value is compared (default `"accuracy"`).
        seed: int. Global seed set before each run.
        verbose: int. 0 silent; 1 prints the table at the end; 2 also a line per run.
        **fit_kwargs: passed to `fit` (e.g. `steps_per_epoch`, `callbacks`).

    Returns:
        A `SweepResult` (`rows`, `best`, `table()`).

    Example:
    >>> import numpy as np
    >>> from kdistill.testing import tiny_mlp
    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.normal(size=(32, 8)), rng.integers(0, 3, 32)
    >>> result = temperature_sweep(tiny_mlp(), lambda: tiny_mlp(seed=3), (x, y), (x, y),
    ...                            temperatures=[1.0, 4.0], epochs=1, verbose=0)
    >>> [row["temperature"] for row in result.rows], sorted(result.best)[:3]
    ([1.0, 4.0], ['alpha', 'best_epoch', 'best_val_accuracy'])
    """
    from kdistill.distiller import Distiller

    temperatures = [float(check_temperature(t)) for t in temperatures]
    alphas = [float(check_fraction("alpha", a)) for a in alphas]
    if not temperatures or not alphas:
        raise ValueError("temperature_sweep: give at least one temperature and one alpha.")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"temperature_sweep: epochs must be an int >= 1, got {epochs!r}.")
    if not callable(make_student):
        raise ValueError("temperature_sweep: make_student must be a callable returning a new "
                         "student model (e.g. `lambda: build_student()`), so every run starts "
                         "fresh.")
    new_optimizer = _optimizer_factory(optimizer)
    # `(x, y)` arrays as for `fit(x, y)`; a dataset as is.
    train = tuple(train_data) if isinstance(train_data, tuple) else (train_data,)
    key = f"val_{metric}"
    seen, rows = [], []
    for temperature in temperatures:
        for alpha in alphas:
            keras.utils.set_random_seed(seed)
            student = make_student()
            if any(student is s for s in seen) or student is teacher:
                raise ValueError(
                    "temperature_sweep: make_student returned a model it returned before (or "
                    "the teacher); it must build a new student on every call."
                )
            seen.append(student)
            start = time.perf_counter()
            distiller = Distiller(teacher, student, temperature=temperature, alpha=alpha)
            distiller.compile(optimizer=new_optimizer(), metrics=[metric])
            history = distiller.fit(*train, validation_data=validation_data, epochs=epochs,
                                    verbose=0, **fit_kwargs).history
            if key not in history:
                raise ValueError(f"temperature_sweep: fit logged no {key!r} (logged: "
                                 f"{sorted(history)}); check `metric` and `validation_data`.")
            values = [float(v) for v in history[key]]
            best_epoch = max(range(len(values)), key=values.__getitem__)
            row = {"temperature": temperature, "alpha": alpha, key: values[-1],
                   f"best_{key}": values[best_epoch], "best_epoch": best_epoch + 1,
                   "seconds": time.perf_counter() - start}
            rows.append(row)
            if verbose >= 2:
                print(f"T={temperature:g} alpha={alpha:g}: {key}={values[-1]:.4f} "
                      f"(best {values[best_epoch]:.4f} at epoch {best_epoch + 1})", flush=True)
    best = max(rows, key=lambda r: r[f"best_{key}"])
    result = SweepResult(rows=rows, metric=metric, best=best)
    if verbose:
        print(result.table(), flush=True)
    return result


# ----------------------------------------------------------------------------- run logging


class BestEpoch(keras.callbacks.Callback):
    """Keeps the student's weights of its best epoch by a validation metric, and restores them.

    Unlike `keras.callbacks.EarlyStopping(restore_best_weights=True)` it keeps the *student's*
    weights (not a Distiller's projections too), measures against the accuracy from before the
    stage (`baseline`: an epoch must beat it, else the weights from before the stage come back),
    and can keep the best weights in a file, so a stage killed and resumed still knows them.

    Args:
        student: keras.Model. The model whose weights are kept (a Distiller's `student`).
        monitor: str. The epoch-log key, higher is better (default `val_accuracy`).
        path: str or None. A `.weights.h5` file for the best weights (its value goes to
            `path + ".json"`); None keeps them in memory.
        baseline: float or None. The monitored value before this stage.
        restore_on_train_end: bool. Restore the best weights when `fit` ends; a caller that
            trains one stage in several `fit` calls passes False and calls `restore()` itself.

    Example:
    >>> import numpy as np
    >>> from kdistill import testing
    >>> model = testing.tiny_mlp()
    >>> model.compile(optimizer="sgd", loss="mse")
    >>> best = BestEpoch(model, monitor="val_loss_negated", baseline=0.0)
    >>> best.on_train_begin()
    >>> before = [w.copy() for w in model.get_weights()]
    >>> _ = model.fit(np.ones((4, 8)), np.zeros((4, 3)), epochs=1, verbose=0)
    >>> best.on_epoch_end(0, {"val_loss_negated": -1.0})  # worse than the baseline
    >>> best.restore(), all((a == b).all() for a, b in zip(before, model.get_weights()))
    (0.0, True)
    """

    def __init__(self, student, monitor="val_accuracy", path=None, baseline=None,
                 restore_on_train_end=True):
        super().__init__()
        self.student = student
        self.monitor = monitor
        self.path = path
        self.baseline = baseline
        self.restore_on_train_end = restore_on_train_end
        self.best = None
        self._weights = None
        self._started = False

    def _keep(self, value):
        self.best = float(value)
        if self.path is None:
            self._weights = [w.copy() for w in self.student.get_weights()]
            return
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        tmp = os.path.join(os.path.dirname(self.path) or ".", f".partial-{os.getpid()}"
                           ".weights.h5")
        self.student.save_weights(tmp, overwrite=True)
        os.replace(tmp, self.path)
        atomic_json(self.path + ".json", {"monitor": self.monitor, "best": self.best})

    def on_train_begin(self, logs=None):
        if self._started:
            return
        self._started = True
        if self.path is not None and os.path.exists(self.path + ".json"):
            with open(self.path + ".json") as f:  # a resumed stage
                self.best = json.load(f)["best"]
        elif self.baseline is not None:
            self._keep(self.baseline)

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise ValueError(f"BestEpoch monitors {self.monitor!r} but the epoch logs hold "
                             f"{sorted(logs or {})}: give the stage validation data (and the "
                             "metric), or turn the best-epoch selection off.")
        if self.best is None or float(value) > self.best:
            self._keep(value)

    def on_train_end(self, logs=None):
        if self.restore_on_train_end:
            self.restore()

    def restore(self):
        """Loads the best weights into the student; returns the best value (None if none)."""
        if self.path is not None and os.path.exists(self.path):
            self.student.load_weights(self.path)
        elif self._weights is not None:
            self.student.set_weights(self._weights)
        return self.best


class RunLogger(keras.callbacks.Callback):
    """Every `every` steps and at the last: each term and metric, learning rate, temperatures.

    Values are means over the steps since the previous point (from the metrics' running
    `total`/`count`, reduced over replicas), with the global optimizer step. They go to
    TensorBoard through `keras.callbacks.TensorBoard` (a `GlobalStepTensorBoard`, so a stage
    trained in several `fit` calls logs one curve): runs `train/` and `validation/` under
    `log_dir`; `batch_<name>` every `every` steps for each term, metric, `learning_rate` and
    `<objective>_temperature` / `_alpha`; `epoch_<name>` per epoch (the validation values in
    `validation/`, also as `evaluation_<name>_vs_iterations` over the global step). The same
    points are appended to a JSON-lines history for plots (`kdistill.plots.read_history`).

    Args:
        stage: str. Stage name, recorded with every point.
        log_dir: str or None. TensorBoard directory (None: history only).
        history_path: str or None. JSON-lines file to append to.
        every: int. Steps between points.
        term_names: list of str. Names of the loss terms (the rest are metrics).
        objectives: list. The Distiller's objectives; those with a `temperature` (and `alpha`)
            are logged as `<name>_temperature` (`_alpha`).
        profile_batch: int or (first, last) pair of global steps to profile with the TensorBoard
            profiler (trace under `log_dir/train/plugins/profile`, shown by TensorBoard's
            Profile tab with `tensorboard-plugin-profile` installed); 0 (default) profiles
            nothing.

    Example:
    >>> import tempfile
    >>> import numpy as np
    >>> from kdistill import testing
    >>> model = testing.tiny_mlp()
    >>> model.compile(optimizer="adam", loss="mse")
    >>> out = tempfile.mkdtemp()
    >>> logger = RunLogger("task", os.path.join(out, "logs"), os.path.join(out, "h.jsonl"), 1,
    ...                    ["loss"])
    >>> _ = model.fit(np.ones((4, 8)), np.zeros((4, 3)), batch_size=2, verbose=0,
    ...               callbacks=[logger])
    >>> from kdistill.plots import read_history
    >>> [(r["step"], sorted(r["terms"])) for r in read_history(os.path.join(out, "h.jsonl"))]
    [(1, ['loss']), (2, ['loss']), (2, ['loss'])]
    >>> import tensorflow as tf
    >>> from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
    >>> events = EventMultiplexer().AddRunsFromDirectory(os.path.join(out, "logs")).Reload()
    >>> [(e.step, round(float(tf.make_ndarray(e.tensor_proto)), 4))
    ...  for e in events.Tensors("train", "batch_learning_rate")]
    [(1, 0.001), (2, 0.001)]
    """

    def __init__(self, stage, log_dir, history_path, every, term_names, objectives=(),
                 profile_batch=0):
        super().__init__()
        self.stage = stage
        self.log_dir = log_dir
        self.history_path = history_path
        self.every = int(every)
        self.term_names = set(term_names)
        self.objectives = [o for o in objectives if hasattr(o, "temperature")]
        self.tensorboard = None if log_dir is None else GlobalStepTensorBoard(
            log_dir, update_freq=self.every, profile_batch=profile_batch)
        self._previous = {}
        self._epoch = 0

    def _step(self):
        return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    # The TensorBoard callback gets every hook, with copies of the logs (never the caller's).

    def set_model(self, model):
        super().set_model(model)
        if self.tensorboard is not None:
            self.tensorboard.set_model(model)

    def set_params(self, params):
        super().set_params(params)
        if self.tensorboard is not None:
            self.tensorboard.set_params(params)

    def _forward(self, hook, *args, logs=None):
        if self.tensorboard is not None:
            getattr(self.tensorboard, hook)(*args, logs=None if logs is None else dict(logs))

    def on_train_begin(self, logs=None):
        self._forward("on_train_begin", logs=logs)

    def on_train_batch_begin(self, batch, logs=None):
        self._forward("on_train_batch_begin", batch, logs=logs)

    def on_test_begin(self, logs=None):
        self._forward("on_test_begin", logs=logs)

    def on_test_batch_begin(self, batch, logs=None):
        self._forward("on_test_batch_begin", batch, logs=logs)

    def on_test_end(self, logs=None):
        self._forward("on_test_end", logs=logs or {})

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._previous = {}
        self._forward("on_epoch_begin", epoch, logs=logs)

    def _window_means(self):
        means = {}
        for metric in self.model.metrics:
            variables = {v.name: v for v in metric.variables}
            if set(variables) != {"total", "count"}:
                continue
            total = float(keras.ops.convert_to_numpy(variables["total"]))
            count = float(keras.ops.convert_to_numpy(variables["count"]))
            last_total, last_count = self._previous.get(metric.name, (0.0, 0.0))
            if count < last_count:  # the metric was reset
                last_total, last_count = 0.0, 0.0
            if count > last_count:
                means[metric.name] = (total - last_total) / (count - last_count)
            self._previous[metric.name] = (total, count)
        return means

    def _schedule(self):
        rate = self.model.optimizer.learning_rate
        values = {"learning_rate": float(keras.ops.convert_to_numpy(rate))}
        return {**values, **self._temperatures()}

    def _temperatures(self):
        values = {}
        for objective in self.objectives:
            values[f"{objective.name}_temperature"] = float(objective.temperature)
            if hasattr(objective, "alpha"):
                values[f"{objective.name}_alpha"] = float(objective.alpha)
        return values

    def _record(self, kind, step, values, schedule=None):
        if self.history_path is None:
            return
        terms = {k: v for k, v in values.items() if k in self.term_names}
        metrics = {k: v for k, v in values.items() if k not in self.term_names}
        record = {"stage": self.stage, "step": step, "epoch": self._epoch, "kind": kind,
                  "terms": terms, "metrics": metrics}
        if schedule:
            record["schedule"] = schedule
        with open(self.history_path, "a") as f:
            f.write(json.dumps(record, default=json_default) + "\n")

    def _last_batch(self, batch):
        """The stage's last batch: recorded whatever `every` (a short run still has a point)."""
        params = self.params or {}
        return params.get("steps") == batch + 1 and params.get("epochs") == self._epoch + 1

    def on_train_batch_end(self, batch, logs=None):
        step = self._step()
        if step % self.every and not self._last_batch(batch):
            self._forward("on_train_batch_end", batch, logs=logs)  # not recorded at this step
            return
        values = {k: float(v) for k, v in (logs or {}).items()}
        values.update(self._window_means())
        schedule = self._schedule()
        self._record("step", step, values, schedule)
        self._forward("on_train_batch_end", batch, logs={**values, **schedule})

    def on_epoch_end(self, epoch, logs=None):
        values = {k: float(v) for k, v in (logs or {}).items()}
        self._record("epoch", self._step(), values)
        # Keras adds the learning rate to the epoch points; the temperatures are ours.
        self._forward("on_epoch_end", epoch, logs={**values, **self._temperatures()})

    def on_train_end(self, logs=None):
        self._forward("on_train_end", logs=logs)


def truncate_history(path, stage, step):
    """Drops the history points of `stage` after `step` (written before a kill).

    Example:
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "history.jsonl")
    >>> with open(path, "w") as f:
    ...     for step in (1, 2, 3):
    ...         _ = f.write(json.dumps({"stage": "task", "step": step}) + "\\n")
    >>> truncate_history(path, "task", 2)
    >>> [json.loads(line)["step"] for line in open(path)]
    [1, 2]
    """
    if not os.path.exists(path):
        return
    kept = []
    with open(path) as f:
        for line in f:
            record = json.loads(line) if line.strip() else None
            if record and not (record["stage"] == stage and record["step"] > step):
                kept.append(line)
    with open(f"{path}.tmp", "w") as f:
        f.writelines(kept)
    os.replace(f"{path}.tmp", path)
