"""Test setup: two logical CPU devices so MirroredStrategy runs two real replicas on one CPU."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault(
    "KERAS_HOME", os.path.join(os.path.dirname(__file__), "..", ".cache", "keras")
)

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2
)
# Tiny models: a few threads avoid oversubscribing the 2 cores when tf.data also runs.
tf.config.threading.set_inter_op_parallelism_threads(2)


@pytest.fixture(scope="session")
def two_replicas():
    """A 2-replica MirroredStrategy over the two logical CPUs.

    One strategy for the whole session: several MirroredStrategy objects in one process reuse
    collective instance keys, and a later one can abort with "Shape mismatch in the collective".
    """
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    return strategy


@pytest.fixture(autouse=True)
def _seed():
    import keras

    keras.utils.set_random_seed(0)
    yield
    keras.backend.clear_session()


@pytest.fixture(autouse=True)
def _float32_teacher_passes(monkeypatch):
    """`teacher.precision: auto` means float32 in the tests on every machine (AMX or not), so
    their numbers do not depend on the CPU; tests/test_precision.py sets the hardware it needs.
    """
    from kdistill import precision

    monkeypatch.setattr(precision, "native_bfloat16", lambda: False)
