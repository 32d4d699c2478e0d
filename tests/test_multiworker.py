"""MultiWorkerMirroredStrategy: two worker processes on localhost train the Distiller to the same
weights as one process on the same global batches.

The workers are fresh processes (`tests/multiworker_worker.py`): this test process holds the
conftest's 2-logical-CPU MirroredStrategy, and a process may only have one collective setup.
"""

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "multiworker_worker.py")
TIMEOUT = 240  # seconds for the whole run; each worker normally takes 10-30 s


def _free_ports(n):
    """Ports the OS reports free; the sockets stay open until all are chosen (no duplicates)."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _env(tf_config=None):
    env = dict(os.environ)
    env.pop("TF_CONFIG", None)
    env.update(TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=os.pathsep.join([os.path.dirname(HERE), env.get("PYTHONPATH", "")]))
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return env


def _run(processes, logs):
    """Waits for every process; on a timeout or the first failure, kills all of them."""
    deadline = time.monotonic() + TIMEOUT
    try:
        while any(proc.poll() is None for proc in processes.values()):
            for name, proc in processes.items():
                if proc.poll() not in (None, 0):
                    pytest.fail(f"{name} exited with {proc.returncode}:\n{_tail(logs[name])}")
            if time.monotonic() > deadline:
                running = [n for n, p in processes.items() if p.poll() is None]
                pytest.fail(f"{running} did not finish in {TIMEOUT} s:\n"
                            + "\n".join(_tail(logs[n]) for n in running))
            time.sleep(0.2)
        for name, proc in processes.items():
            if proc.returncode != 0:
                pytest.fail(f"{name} exited with {proc.returncode}:\n{_tail(logs[name])}")
    finally:
        for proc in processes.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)


def _tail(path, lines=40):
    with open(path, errors="replace") as f:
        return "".join(f.readlines()[-lines:])


def _load(path):
    """`(weights, logs)` written by the worker script."""
    with np.load(path) as data:
        weights = [data[f"w{i}"] for i in range(sum(k.startswith("w") for k in data.files))]
        logs = {k[4:]: data[k] for k in data.files if k.startswith("log_")}
    return weights, logs


def test_two_workers_match_one_process(tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    processes, logs, outputs = {}, {}, {}
    try:
        for index in range(2):
            name = f"worker{index}"
            outputs[name] = tmp_path / f"{name}.npz"
            logs[name] = tmp_path / f"{name}.log"
            config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
            with open(logs[name], "w") as log:
                processes[name] = subprocess.Popen(
                    [sys.executable, WORKER, str(outputs[name])], env=_env(config),
                    stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
        name = "single"
        outputs[name], logs[name] = tmp_path / "single.npz", tmp_path / "single.log"
        with open(logs[name], "w") as log:
            processes[name] = subprocess.Popen(
                [sys.executable, WORKER, str(outputs[name]), "--single"], env=_env(),
                stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    finally:
        _run(processes, logs)

    reference, reference_logs = _load(outputs["single"])
    assert sorted(reference_logs) == ["kd_loss", "loss", "student_loss"]
    for index in range(2):
        weights, logs = _load(outputs[f"worker{index}"])
        assert len(weights) == len(reference)
        for got, want in zip(weights, reference):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        # Equal shards (22 examples each): the mean of the workers' running means is the
        # global mean, i.e. the single process's epoch loss.
        for name, value in reference_logs.items():
            np.testing.assert_allclose(logs[name], value, rtol=1e-5, err_msg=name)
    # The run trained: SGD at lr 0.5 over 6 steps moves the student well away from its
    # initialisation, so matching weights are not a trivial "nothing happened" agreement.
    sys.path.insert(0, HERE)
    try:
        import multiworker_worker as worker
    finally:
        sys.path.remove(HERE)
    from kdistill.testing import tiny_mlp

    initial = tiny_mlp(worker.INPUT_DIM, worker.NUM_CLASSES, hidden=8, seed=20).get_weights()
    moved = max(float(np.max(np.abs(a - b))) for a, b in zip(initial, reference))
    assert moved > 1e-2, f"the student barely trained (max weight change {moved:.2e})"
