"""Where a run computes: the `tf.distribute` strategy a config names, which worker of a cluster
this process is, and the XLA setting that cannot work under a strategy on CPUs.

Example:
>>> import tensorflow as tf
>>> strategy = make_strategy("default")
>>> worker_index(strategy), strategy.num_replicas_in_sync
(0, 1)
"""

import tensorflow as tf


def make_strategy(name):
    """The `tf.distribute` strategy the config names.

    Args:
        name: str. `default` (the current/default strategy: one device), `mirrored` (all local
            devices) or `multi_worker` (the cluster in `TF_CONFIG`).

    Returns:
        A `tf.distribute.Strategy`.

    Example:
    >>> make_strategy("default").num_replicas_in_sync
    1
    """
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def check_jit_compile(jit_compile, strategy):
    """Refuses `jit_compile: true` under a multi-replica strategy on a machine with no GPU or
    TPU, where TensorFlow's XLA step fails deep inside the replicas' gradient sum.

    Raises:
        ValueError: naming the key and the fix.

    Example:
    >>> check_jit_compile(True, tf.distribute.get_strategy())  # one device: fine
    """
    accelerated = any(tf.config.list_logical_devices(kind) for kind in ("GPU", "TPU"))
    if jit_compile is True and strategy.num_replicas_in_sync > 1 and not accelerated:
        raise ValueError(
            f"jit_compile: true with {strategy.num_replicas_in_sync} replicas on CPUs alone: "
            "TensorFlow's XLA step fails under a distribution strategy on CPU. Set jit_compile "
            "to auto or false (XLA works on one CPU device, strategy: default).")


def worker_index(strategy):
    """0 for the chief (or the only worker) of a strategy's cluster, else 1 + the task id.

    Example:
    >>> worker_index(tf.distribute.get_strategy())
    0
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return 0
    has_chief = "chief" in (resolver.cluster_spec().as_dict() or {})
    if resolver.task_type == "chief" or (resolver.task_type == "worker" and not has_chief and
                                         resolver.task_id == 0):
        return 0
    return 1 + int(resolver.task_id)
