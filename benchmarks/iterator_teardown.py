"""How long destroying a `tf.data` iterator takes, with tf.data autotuning on vs off.

With autotuning on, TF 2.21 waits in the iterator's destructor for the autotuning thread's next
scheduled wake-up (10 ms * (2^k - 1) after the iterator was made: 2.55 s, 5.1 s, 10.2 s, ...).
Every `fit`/`predict` call and every epoch makes and destroys an iterator, so it can end with
that wait (see README.md in this folder). This script uses an iterator for `--lifetime` seconds
while a matmul loop keeps the CPU busy, then times `del iterator`, alternating on and off.

Run:
    .venv/bin/python benchmarks/iterator_teardown.py --trials 10 --lifetime 3.2
"""

import argparse
import os
import time

import common  # noqa: I001  (benchmarks/common.py; sets TF_CPP_MIN_LOG_LEVEL before TF loads)
import numpy as np
import tensorflow as tf


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--lifetime", type=float, default=3.2,
                        help="seconds each iterator is used before it is destroyed")
    args = parser.parse_args(argv)
    matrix = tf.random.normal([1500, 1500])

    @tf.function
    def work(x):
        for _ in range(20):
            x = tf.tanh(x @ matrix)
        return tf.reduce_sum(x)

    rows = np.random.default_rng(0).random((64, 1500)).astype("float32")
    base = tf.data.Dataset.from_tensor_slices(rows).batch(8).cache().repeat()
    work(tf.zeros([8, 1500]))
    times = {True: [], False: []}
    for _ in range(args.trials):
        for enabled in (True, False):
            iterator = iter(common.autotune(base.prefetch(tf.data.AUTOTUNE), enabled))
            start = time.perf_counter()
            while time.perf_counter() - start < args.lifetime:
                work(next(iterator)).numpy()
            start = time.perf_counter()
            del iterator
            times[enabled].append(time.perf_counter() - start)
    print(f"command: {common.command_line('iterator_teardown.py', argv)}")
    print(f"load average {os.getloadavg()[0]:.1f}; iterator lifetime {args.lifetime} s")
    for enabled in (True, False):
        values = sorted(times[enabled])
        print(f"autotune {'on ' if enabled else 'off'}: destruction median "
              f"{1e3 * values[len(values) // 2]:.0f} ms, max {1e3 * values[-1]:.0f} ms, "
              f"> 1 s in {sum(v > 1 for v in values)}/{len(values)} trials")


if __name__ == "__main__":
    main()
