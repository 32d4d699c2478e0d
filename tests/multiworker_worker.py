"""One process of the multi-worker test (`tests/test_multiworker.py`); also the reference run.

    python tests/multiworker_worker.py OUT.npz           # with TF_CONFIG: MultiWorkerMirrored
    python tests/multiworker_worker.py OUT.npz --single  # one process, default strategy

Trains a `kdistill.Distiller` (tiny MLP teacher -> tiny MLP student, SGD, one epoch) on fixed
global batches and writes the student's final weights and the `fit` logs to OUT.npz. Under
`MultiWorkerMirroredStrategy` each worker reads its shard of every global batch (elements
`i, i + W, i + 2W, ...` of the same stream, batched by global_batch / W), so the union of the
workers' batches at step k is exactly global batch k of the single-process run.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

GLOBAL_BATCH = 8
NUM_EXAMPLES = 44  # not a multiple of the global batch: the last batch is uneven (4 = 2 + 2)
INPUT_DIM, NUM_CLASSES = 8, 3


def make_data():
    rng = np.random.default_rng(123)
    x = rng.normal(size=(NUM_EXAMPLES, INPUT_DIM)).astype("float32")
    y = rng.integers(0, NUM_CLASSES, size=NUM_EXAMPLES).astype("int32")
    return x, y


def make_distiller():
    import keras

    import kdistill
    from kdistill.testing import tiny_mlp

    teacher = tiny_mlp(INPUT_DIM, NUM_CLASSES, hidden=16, seed=10, name="teacher")
    student = tiny_mlp(INPUT_DIM, NUM_CLASSES, hidden=8, seed=20, name="student")
    distiller = kdistill.Distiller(teacher, student, temperature=2.0, alpha=0.5)
    distiller.compile(optimizer=keras.optimizers.SGD(learning_rate=0.5))
    return distiller


def main(out_path, single):
    x, y = make_data()
    if single:
        distiller = make_distiller()
        dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH)
        history = distiller.fit(dataset, epochs=1, verbose=0)
        task_id = 0
    else:
        task_id = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
        strategy = tf.distribute.MultiWorkerMirroredStrategy()

        def dataset_fn(context):
            per_replica = context.get_per_replica_batch_size(GLOBAL_BATCH)
            options = tf.data.Options()
            options.experimental_distribute.auto_shard_policy = (
                tf.data.experimental.AutoShardPolicy.OFF)  # sharded by hand below
            return (tf.data.Dataset.from_tensor_slices((x, y))
                    .shard(context.num_input_pipelines, context.input_pipeline_id)
                    .batch(per_replica).with_options(options))

        with strategy.scope():
            distiller = make_distiller()
        dataset = strategy.distribute_datasets_from_function(dataset_fn)
        steps = -(-NUM_EXAMPLES // GLOBAL_BATCH)
        history = distiller.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0)
    weights = {f"w{i}": np.asarray(w) for i, w in enumerate(distiller.student.get_weights())}
    logs = {f"log_{k}": np.asarray(v, "float64") for k, v in history.history.items()}
    np.savez(out_path, task=task_id, **weights, **logs)
    print(f"worker {task_id} done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], "--single" in sys.argv[2:])
