"""`keras.callbacks.TensorBoard` counted in optimizer steps: one curve over several `fit` calls.

Keras' own TensorBoard callback numbers its batch-level points (`batch_<name>`, written every
`update_freq` batches) and its `profile_batch` range from 0 at every `fit` call. A run that
trains one stage in several `fit` calls — a resumed stage, or the runner's partial epoch followed
by the rest — would then write its points over the earlier ones. `GlobalStepTensorBoard` is that
same callback (same files, tags and layout: `train/` and `validation/` runs, `batch_*` and
`epoch_*` scalars, `epoch_learning_rate`, `evaluation_<name>_vs_iterations`, the profiler's
trace under `train/plugins/profile`) whose batch counter starts at the optimizer's `iterations`,
and which flushes its event files at the end of every epoch so a killed run keeps what it logged.
`kdistill.callbacks.RunLogger` feeds it the per-term means, learning rate and temperatures.
"""

import keras

__all__ = ["GlobalStepTensorBoard"]


class GlobalStepTensorBoard(keras.callbacks.TensorBoard):
    """`keras.callbacks.TensorBoard` whose batch-level step is the optimizer's global step.

    Batch points and `profile_batch` count optimizer steps (`model.optimizer.iterations` after
    the step), not batches of the current `fit`, so a second `fit` on the same model continues
    the curves instead of overwriting them; epoch points keep Keras' epoch index (which
    `initial_epoch` continues). With `steps_per_execution > 1` a point is labelled with the
    first step of its execution plus one. Every argument is `keras.callbacks.TensorBoard`'s;
    `write_graph` defaults to False here (a Distiller's graph holds the teacher too, and its
    JSON summary is large).

    Example:
    >>> import os, tempfile
    >>> import numpy as np
    >>> from kdistill import testing
    >>> model = testing.tiny_mlp()
    >>> model.compile(optimizer="sgd", loss="mse")
    >>> logs = tempfile.mkdtemp()
    >>> for first in (0, 1):  # two fits, as a resumed run makes
    ...     _ = model.fit(np.ones((4, 8)), np.zeros((4, 3)), batch_size=2, verbose=0,
    ...                   initial_epoch=first, epochs=first + 1,
    ...                   callbacks=[GlobalStepTensorBoard(logs, update_freq=1)])
    >>> from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
    >>> runs = EventMultiplexer().AddRunsFromDirectory(logs).Reload()
    >>> sorted(runs.Runs())
    ['train']
    >>> [e.step for e in runs.Tensors("train", "batch_loss")]
    [1, 2, 3, 4]
    """

    def __init__(self, log_dir="logs", write_graph=False, **kwargs):
        super().__init__(log_dir=log_dir, write_graph=write_graph, **kwargs)

    def _iterations(self):
        return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def on_train_batch_begin(self, batch, logs=None):
        # Keras adds 1 before it records: the point is labelled with the step this batch ends.
        self._global_train_batch = self._iterations()
        super().on_train_batch_begin(batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        for writer in self._writers.values():
            writer.flush()
