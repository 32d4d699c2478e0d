"""Reduced-precision computing copies of a model: the teacher's heavy passes in bfloat16.

Fine-tuning the teacher and running it over the training and transfer text are the two
longest teacher passes of a run. On hardware with fast bfloat16 (CPUs with Intel AMX or
AVX-512 BF16, NVIDIA GPUs of compute capability 8.0 or more, TPUs) Keras' `mixed_bfloat16`
policy runs them faster: the matrix products are computed in bfloat16, the variables stay
float32.

`computing_model(model, policy)` is the model that computes under `policy`: the model itself
for `float32` (in whatever policy it was built), else `computing_copy(model, policy)`, a copy
rebuilt under that dtype policy with the model's weights; the caller trains or runs it, then
`copy_weights` copies the (float32) variables back. The user's model keeps its own policy, so
what is evaluated, timed, exported and cached is the float32 model. `resolve(name, model)`
turns the config's `auto` into the policy that pays on the devices present: `mixed_bfloat16`
where bfloat16 is native, else `float32` (see docs/scaling.md for the measurements).

Example:
>>> import numpy as np
>>> from kdistill import testing
>>> teacher = testing.tiny_bert_classifier(num_classes=2)
>>> work = computing_copy(teacher, "mixed_bfloat16")
>>> work.dtype_policy.name, teacher.dtype_policy.name
('mixed_bfloat16', 'float32')
>>> x, _ = testing.token_batch(batch_size=2, sequence_length=8)
>>> bool(np.allclose(work(x), teacher(x), atol=0.05))
True
"""

import copy
import functools
import os

import keras
import tensorflow as tf

POLICIES = ("auto", "float32", "mixed_bfloat16", "mixed_float16")


@functools.lru_cache(maxsize=None)
def _cpu_flags(path="/proc/cpuinfo"):
    """The feature flags of the first CPU listed in `path` (empty where there is none)."""
    if not os.path.exists(path):
        return frozenset()
    with open(path) as f:
        for line in f:
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    return frozenset()


# CPU feature flags (/proc/cpuinfo) of native bfloat16 matrix arithmetic, which oneDNN uses:
# Intel AMX tiles, and AVX-512 BF16 dot products (Intel Cooper Lake and later, AMD Zen 4 and
# later). benchmarks/teacher_precision.py measured both (docs/scaling.md).
BFLOAT16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


def native_bfloat16():
    """Whether the devices TensorFlow computes on have fast (native) bfloat16 matrix units.

    True with a TPU, with GPUs of compute capability 8.0 or more (Ampere and later), or, with
    no accelerator, on a CPU with one of `BFLOAT16_CPU_FLAGS` in /proc/cpuinfo (Intel AMX, or
    AVX-512 BF16).

    Example:
    >>> isinstance(native_bfloat16(), bool)
    True
    """
    if tf.config.list_logical_devices("TPU"):
        return True
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        capabilities = [tf.config.experimental.get_device_details(g).get("compute_capability")
                        for g in gpus]
        return all(c is not None and tuple(c) >= (8, 0) for c in capabilities)
    return any(flag in _cpu_flags() for flag in BFLOAT16_CPU_FLAGS)


def _layers(model):
    """`model`'s layers, nested ones included."""
    for layer in getattr(model, "layers", []):
        yield layer
        yield from _layers(layer)


def rebuildable(model):
    """Whether `computing_copy` can rebuild `model`: a Keras model with a config and no
    `TFSMLayer` (a SavedModel's graph has its own, fixed, precision).

    Example:
    >>> from kdistill import testing
    >>> rebuildable(testing.tiny_bert_classifier(num_classes=2)), rebuildable(object())
    (True, False)
    """
    if not isinstance(model, keras.Model) or any(
            isinstance(layer, keras.layers.TFSMLayer) for layer in _layers(model)):
        return False
    try:
        model.get_config()
    except NotImplementedError:
        return False
    return True


def resolve(name, model=None):
    """The dtype policy name that `name` (one of `POLICIES`) means for `model` here.

    `auto` is `mixed_bfloat16` where `native_bfloat16()` and `model` (when given) can be
    rebuilt under another policy, else `float32`. Other names are returned as they are.

    Raises:
        ValueError: an unknown name, or a policy other than float32 for a model that cannot
            be rebuilt (a SavedModel teacher has its own precision).

    Example:
    >>> resolve("float32"), resolve("auto") in ("float32", "mixed_bfloat16")
    ('float32', True)
    """
    if name not in POLICIES:
        raise ValueError(f"precision: unknown value {name!r}; valid values: {list(POLICIES)}.")
    if name == "auto":
        if model is not None and not rebuildable(model):
            return "float32"
        return "mixed_bfloat16" if native_bfloat16() else "float32"
    if name != "float32" and model is not None and not rebuildable(model):
        raise ValueError(f"precision {name!r}: the teacher ({type(model).__name__}) is not a "
                         "Keras model with a config (e.g. a SavedModel), so it cannot be run "
                         "under another dtype policy; set teacher.precision to float32 or auto.")
    return name


def _with_policy(config, policy):
    """`config` (a nested Keras config) with every float dtype policy replaced by `policy`."""
    if isinstance(config, dict):
        if config.get("class_name") == "DTypePolicy" and isinstance(config.get("config"), dict):
            name = config["config"].get("name")
            if name in ("float32", "mixed_bfloat16", "mixed_float16", "bfloat16", "float16"):
                return dict(config, config=dict(config["config"], name=policy))
            return config
        return {k: _with_policy(v, policy) for k, v in config.items()}
    if isinstance(config, list):
        return [_with_policy(v, policy) for v in config]
    return config


def copy_weights(source, target):
    """Copies the variables of `source` into `target` (same architecture, any policy).

    Example:
    >>> import numpy as np
    >>> from kdistill import testing
    >>> a, b = testing.tiny_mlp(), testing.tiny_mlp(seed=3)
    >>> copy_weights(a, b)
    >>> all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights()))
    True
    """
    target.set_weights(source.get_weights())


def computing_copy(model, policy):
    """A copy of the Keras `model` under the dtype policy `policy`, with `model`'s weights.

    `model` itself is untouched; with `policy` equal to its own policy it is returned as is.
    Build it under the distribution strategy that will run it.

    Args:
        model: keras.Model with a config (keras-hub tasks, functional and registered models).
        policy: str. A Keras dtype policy name: `float32`, `mixed_bfloat16`, `mixed_float16`.

    Returns:
        keras.Model.

    Raises:
        ValueError: `model` cannot be rebuilt from its config.

    Example:
    >>> from kdistill import testing
    >>> m = testing.tiny_mlp()
    >>> copy = computing_copy(m, "mixed_bfloat16")
    >>> computing_copy(m, "float32") is m, copy.layers[-1].compute_dtype
    (True, 'bfloat16')
    """
    if all(m.dtype_policy.name == policy for m in [model, *model.layers]):
        return model
    if not rebuildable(model):
        raise ValueError(f"{type(model).__name__} has no config, so it cannot be rebuilt under "
                         f"the {policy!r} dtype policy; run it in its own precision.")
    serialized = keras.saving.serialize_keras_object(model)
    serialized = copy.deepcopy(serialized)
    serialized.pop("compile_config", None)  # the caller compiles the copy as it needs
    serialized["config"] = _with_policy(serialized["config"], policy)
    clone = keras.saving.deserialize_keras_object(serialized)
    if not clone.built:
        raise ValueError(f"{type(model).__name__} rebuilt from its config has no weights yet "
                         "(a subclassed model that is built on its first call); build it "
                         "before, or run it in its own precision.")
    copy_weights(model, clone)
    return clone


def computing_model(model, policy):
    """The model that runs `model`'s computation under the resolved policy `policy`.

    `float32` means "as built": `model` itself, whatever its own policy. Any other policy
    gives `computing_copy(model, policy)`. Train or run the result; after training a copy,
    `copy_weights` it back into `model`.

    Example:
    >>> from kdistill import testing
    >>> m = testing.tiny_mlp()
    >>> computing_model(m, "float32") is m, computing_model(m, "mixed_bfloat16") is m
    (True, False)
    """
    return model if policy == "float32" else computing_copy(model, policy)
