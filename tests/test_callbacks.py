"""KDScheduler (temperature/alpha schedules, validation, logs) and temperature_sweep."""

import math

import keras
import numpy as np
import pytest

import kdistill
from kdistill.callbacks import (
    CosineSchedule,
    ExponentialSchedule,
    KDScheduler,
    LinearSchedule,
    temperature_sweep,
)
from kdistill.testing import tiny_mlp


def _data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 8)).astype("float32"), rng.integers(0, 3, n).astype("int32")


def _distiller(**kwargs):
    distiller = kdistill.Distiller(tiny_mlp(seed=0), tiny_mlp(seed=3), **kwargs)
    distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    return distiller


class _Record(keras.callbacks.Callback):
    """Records the objective's values at the start of every batch (what the step uses)."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def on_train_batch_begin(self, batch, logs=None):
        kd = self.model.objectives[0]
        self.seen.append((kd.temperature, kd.alpha))


def test_schedule_shapes():
    for schedule, mid in ((LinearSchedule(8, 2), 5.0), (CosineSchedule(8, 2), 5.0),
                          (ExponentialSchedule(8, 2), 4.0)):
        assert schedule(0.0) == pytest.approx(8.0) and schedule(1.0) == pytest.approx(2.0)
        assert schedule(0.5) == pytest.approx(mid)
        assert schedule(2.0) == pytest.approx(2.0)  # holds the end value afterwards
    assert CosineSchedule(1, 0)(0.25) == pytest.approx((1 + math.cos(math.pi / 4)) / 2)
    assert ExponentialSchedule(1, 100)(0.5) == pytest.approx(10.0)


def test_per_epoch_schedules_are_applied_and_logged():
    x, y = _data()
    distiller, record = _distiller(), _Record()
    schedule = KDScheduler(temperature=CosineSchedule(6.0, 1.0),
                           alpha=lambda epoch: [0.0, 0.5, 1.0][epoch])
    history = distiller.fit(x, y, epochs=3, batch_size=16, verbose=0,
                            callbacks=[schedule, record]).history
    temperatures = [1.0 + 5.0 * 0.5 * (1 + math.cos(math.pi * p)) for p in (0, 0.5, 1)]
    np.testing.assert_allclose(history["temperature"], temperatures, rtol=1e-6)
    np.testing.assert_allclose(history["alpha"], [0.0, 0.5, 1.0], atol=1e-7)
    np.testing.assert_allclose(record.seen, [(t, a) for t, a in
                                             zip(np.repeat(temperatures, 2), [0, 0, .5, .5, 1, 1])],
                               rtol=1e-6)
    # alpha=1 in the last epoch: the KD term has weight 0, so the loss is the CE alone.
    np.testing.assert_allclose(history["loss"][-1], history["student_loss"][-1], rtol=1e-5)


def test_scheduled_values_reach_the_compiled_step():
    """Changing alpha through the callback trains exactly like a Distiller built with it."""
    x, y = _data()
    scheduled = _distiller(alpha=0.5)
    scheduled.fit(x, y, epochs=2, batch_size=16, verbose=0, shuffle=False,
                  callbacks=[KDScheduler(alpha=lambda epoch: 0.0, temperature=3.0)])
    fixed = _distiller(alpha=0.0, temperature=3.0)
    fixed.fit(x, y, epochs=2, batch_size=16, verbose=0, shuffle=False)
    for a, b in zip(scheduled.student.weights, fixed.student.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)
    # evaluate (the compiled test step) uses the current variables as well
    logs_a = scheduled.evaluate(x, y, verbose=0, return_dict=True)
    logs_b = fixed.evaluate(x, y, verbose=0, return_dict=True)
    np.testing.assert_allclose(logs_a["kd_loss"], logs_b["kd_loss"], rtol=1e-5)


def test_per_step_schedule_with_total_and_batch_logs():
    x, y = _data()
    distiller, record = _distiller(), _Record()
    batch_logs = []
    logger = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: batch_logs.append(logs["temperature"]))
    schedule = KDScheduler(temperature=LinearSchedule(4.0, 1.0), update="step", total=4)
    distiller.fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=[schedule, record, logger])
    expected = [4.0, 3.0, 2.0, 1.0, 1.0, 1.0]  # 6 steps; the schedule ends after 4
    np.testing.assert_allclose([t for t, _ in record.seen], expected, rtol=1e-6)
    np.testing.assert_allclose(batch_logs, expected, rtol=1e-6)


def test_invalid_schedules_are_refused_before_training():
    with pytest.raises(ValueError, match="temperature must be > 0"):
        KDScheduler(temperature=LinearSchedule(4.0, 0.0))
    with pytest.raises(ValueError, match="alpha must be in \\[0, 1\\]"):
        KDScheduler(alpha=CosineSchedule(0.5, 1.5))
    with pytest.raises(ValueError, match="alpha must be in \\[0, 1\\]"):
        KDScheduler(alpha=-0.1)
    with pytest.raises(ValueError, match="ExponentialSchedule needs start > 0 and end > 0"):
        KDScheduler(alpha=ExponentialSchedule(0.5, 0.0))
    with pytest.raises(ValueError, match="update must be"):
        KDScheduler(temperature=2.0, update="batch")
    with pytest.raises(ValueError, match="temperature and/or an alpha"):
        KDScheduler()
    with pytest.raises(ValueError, match="must be a number, a Schedule"):
        KDScheduler(temperature="hot")

    x, y = _data()
    distiller, record = _distiller(), _Record()
    bad = KDScheduler(temperature=lambda epoch: 2.0 - epoch)  # 0 at epoch 2
    with pytest.raises(ValueError, match="temperature schedule gives 0.0 at epoch 2"):
        distiller.fit(x, y, epochs=3, verbose=0, callbacks=[bad, record])
    assert record.seen == []  # nothing trained
    steps = KDScheduler(alpha=lambda step: step / 3, update="step")  # > 1 at step 4
    with pytest.raises(ValueError, match="alpha schedule gives 1.33.* at step 4"):
        distiller.fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=[steps, record])
    assert record.seen == []
    plain = tiny_mlp()
    plain.compile("sgd", "mse")
    with pytest.raises(ValueError, match="kdistill.Distiller's LogitsKD"):
        plain.fit(x, np.zeros((32, 3)), verbose=0, callbacks=[KDScheduler(temperature=2.0)])
    with pytest.raises(ValueError, match="found \\['logits_kd'\\] named 'other'"):
        distiller.fit(x, y, verbose=0, callbacks=[KDScheduler(temperature=2.0,
                                                              objective="other")])


def test_callbacks_after_it_see_the_values(tmp_path):
    """Later callbacks (CSVLogger here; TensorBoard reads the same epoch logs) get the values."""
    x, y = _data()
    distiller = _distiller()
    distiller.fit(x, y, epochs=2, verbose=0, callbacks=[
        KDScheduler(temperature=LinearSchedule(3.0, 1.0), alpha=0.25),
        keras.callbacks.CSVLogger(str(tmp_path / "log.csv"))])
    rows = np.genfromtxt(tmp_path / "log.csv", delimiter=",", names=True)
    np.testing.assert_allclose(rows["temperature"], [3.0, 1.0])
    np.testing.assert_allclose(rows["alpha"], [0.25, 0.25])


def test_temperature_sweep_trains_fresh_students():
    x, y = _data(48)
    calls = []

    def make_student():
        calls.append(1)
        return tiny_mlp(seed=3)

    result = temperature_sweep(tiny_mlp(seed=0), make_student, (x, y), (x[:16], y[:16]),
                               temperatures=[2.0, 8.0, 2.0], alphas=[0.0], epochs=2,
                               optimizer=lambda: keras.optimizers.SGD(0.2), verbose=0,
                               batch_size=16)
    assert len(calls) == 3 and [r["temperature"] for r in result.rows] == [2.0, 8.0, 2.0]
    first, other, again = result.rows
    # Same seed, fresh student and optimizer: the repeated T gives the same result.
    assert first["val_accuracy"] == again["val_accuracy"]
    assert 1 <= first["best_epoch"] <= 2
    assert result.best["best_val_accuracy"] == max(r["best_val_accuracy"] for r in result.rows)
    assert "<- best" in result.table()

    with pytest.raises(ValueError, match="temperature must be > 0"):
        temperature_sweep(tiny_mlp(), make_student, (x, y), (x, y), temperatures=[1.0, -1.0])
    with pytest.raises(ValueError, match="alpha must be in \\[0, 1\\]"):
        temperature_sweep(tiny_mlp(), make_student, (x, y), (x, y), alphas=[2.0])
    with pytest.raises(ValueError, match="not an optimizer instance"):
        temperature_sweep(tiny_mlp(), make_student, (x, y), (x, y),
                          optimizer=keras.optimizers.Adam())
    same = tiny_mlp(seed=3)
    with pytest.raises(ValueError, match="must build a new student on every call"):
        temperature_sweep(tiny_mlp(), lambda: same, (x, y), (x, y), temperatures=[1.0, 2.0],
                          epochs=1, verbose=0)


# ----------------------------------------------------------------------------- RunLogger


def _tensorboard_scalars(log_dir):
    """`{run: {tag: [(step, value)]}}`, read back with TensorBoard's own event reader."""
    import tensorflow as tf
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    events = EventMultiplexer().AddRunsFromDirectory(str(log_dir)).Reload()
    return {run: {tag: [(e.step, float(tf.make_ndarray(e.tensor_proto)))
                        for e in events.Tensors(run, tag)]
                  for tag in tags["tensors"]}
            for run, tags in events.Runs().items()}


def test_run_logger_writes_tensorboard_through_keras_callback(tmp_path):
    """Per-term losses, learning rate, temperature and validation metrics, read back by
    TensorBoard's EventMultiplexer; two fits (a resumed stage) make one curve; the history
    file gets the same points."""
    from kdistill.callbacks import RunLogger
    from kdistill.plots import read_history

    x, y = _data()
    distiller = kdistill.Distiller(tiny_mlp(seed=0), tiny_mlp(seed=3))
    distiller.compile(optimizer=keras.optimizers.SGD(0.1),
                      metrics=["accuracy", "teacher_agreement"])
    objectives = distiller.objectives
    terms = ["loss"] + [n for o in objectives for n in o.term_names()]
    logs, history = tmp_path / "logs", str(tmp_path / "history.jsonl")
    logger = RunLogger("task", str(logs), history, 1, terms, objectives)
    schedule = KDScheduler(temperature=lambda epoch: [4.0, 2.0, 1.0][epoch])
    for first, end in ((0, 2), (2, 3)):  # epochs 1-2, then epoch 3 as a resumed run does
        distiller.fit(x, y, batch_size=16, initial_epoch=first, epochs=end,
                      validation_data=(x[:16], y[:16]), verbose=0, callbacks=[schedule, logger])
    runs = _tensorboard_scalars(logs)
    assert sorted(runs) == ["train", "validation"]
    train, validation = runs["train"], runs["validation"]
    for name in ("loss", "kd_loss", "student_loss", "accuracy", "teacher_agreement",
                 "learning_rate", "logits_kd_temperature", "logits_kd_alpha"):
        assert f"batch_{name}" in train and f"epoch_{name}" in train, (name, sorted(train))
    for name in ("loss", "kd_loss", "student_loss", "accuracy", "teacher_agreement"):
        assert f"epoch_{name}" in validation, (name, sorted(validation))
    assert "evaluation_accuracy_vs_iterations" in validation
    # Global steps 1..6 over both fits (2 steps per epoch); epochs 0..2.
    assert [step for step, _ in train["batch_kd_loss"]] == [1, 2, 3, 4, 5, 6]
    assert [v for _, v in train["batch_logits_kd_temperature"]] == [4, 4, 2, 2, 1, 1]
    assert [step for step, _ in validation["epoch_accuracy"]] == [0, 1, 2]
    assert [step for step, _ in validation["evaluation_accuracy_vs_iterations"]] == [2, 4, 6]
    np.testing.assert_allclose([v for _, v in train["batch_learning_rate"]], [0.1] * 6)

    records = read_history(history)
    steps = [r for r in records if r["kind"] == "step"]
    assert [r["step"] for r in steps] == [1, 2, 3, 4, 5, 6]
    assert sorted(steps[0]) == ["epoch", "kind", "metrics", "schedule", "stage", "step", "terms"]
    assert sorted(steps[0]["terms"]) == sorted(terms)
    np.testing.assert_allclose([r["terms"]["kd_loss"] for r in steps],
                               [v for _, v in train["batch_kd_loss"]], rtol=1e-6)
    epochs = [r for r in records if r["kind"] == "epoch"]
    np.testing.assert_allclose([r["metrics"]["val_accuracy"] for r in epochs],
                               [v for _, v in validation["epoch_accuracy"]], rtol=1e-6)


def test_run_logger_profiles_the_steps_asked_for(tmp_path):
    from kdistill.callbacks import RunLogger

    x, y = _data()
    distiller = _distiller()
    distiller.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[
        RunLogger("task", str(tmp_path / "logs"), None, 2, ["loss"], profile_batch=(2, 3))])
    traces = list((tmp_path / "logs" / "train" / "plugins" / "profile").glob("*/*.xplane.pb"))
    assert len(traces) == 1 and traces[0].stat().st_size > 0
    assert not (tmp_path / "history.jsonl").exists()
