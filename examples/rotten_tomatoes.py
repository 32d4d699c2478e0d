"""Rotten Tomatoes, end to end: MiniLM teacher -> 5x smaller student -> TFLite. Fully offline.

The same pipeline as `kdistill demo` (`make demo`), written top to bottom with kdistill's public
API so you can copy it and change the pieces:

    python examples/rotten_tomatoes.py            # ~6 min on 2 free CPU cores, teacher cached
    python examples/rotten_tomatoes.py --quick    # smoke run: fewer examples and epochs

1. fine-tune the packaged all-MiniLM-L6-v2 on the snippets (cached: the second run reuses it),
2. build a 3-layer, 120-wide student with the teacher's 12 heads, embeddings from the teacher's
   by truncated SVD (~4.2M parameters vs 22.7M),
3. general distillation (TinyBERT intermediate losses, no labels) on the training snippets
   without their labels plus the plot summaries, then task distillation (logits KD +
   intermediate losses) on the labelled snippets, then a short fine-tune of the student alone,
4. export the student (SavedModel + TFLite) and check every file on the test split.

Writes `saved_models/rotten_tomatoes_example/` (replaced on each run).
"""

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a model hub: everything is local

import keras  # noqa: E402
import numpy as np  # noqa: E402

import kdistill  # noqa: E402
from kdistill import data, objectives, students, teachers  # noqa: E402

QUICK = "--quick" in sys.argv
SEQUENCE_LENGTH, BATCH_SIZE = 64, 32
OUT = "saved_models/rotten_tomatoes_example"
CACHE_DIR = ".cache/kdistill/teachers"  # the same cache as `make demo`
N_TRAIN = 2000 if QUICK else None  # labelled examples for the student (None: all ~10.2k)
N_GENERAL = 1000 if QUICK else None  # unlabelled examples for general distillation
TASK_EPOCHS = 1 if QUICK else 2
keras.utils.set_random_seed(0)


def take(ds, n):
    return ds if n is None else ds.take(n)


def student_accuracy(model, dataset):
    """Top-1 accuracy of a logits model on (inputs, labels) batches."""
    hits = total = 0
    for x, y in dataset:
        predicted = np.argmax(model.predict_on_batch(x), -1)
        hits += int((predicted == y.numpy()).sum())
        total += len(y)
    return hits / total


# ---- 1. Data and the fine-tuned teacher ------------------------------------------------------
start = time.perf_counter()
teacher, preprocessor = teachers.minilm_teacher(num_classes=2, sequence_length=SEQUENCE_LENGTH)


def tokenize(split, n=None, shuffle=False, batch_size=BATCH_SIZE):
    ds = take(data.load("rotten_tomatoes", split=split), n)
    return data.tokenize_dataset(ds, preprocessor, batch_size=batch_size,
                                 shuffle_buffer=10_000 if shuffle else None, seed=0)


val_ds = tokenize("validation", batch_size=64)
test_ds = tokenize("test", batch_size=64)
result = teachers.fine_tune_teacher(
    teacher, tokenize("train", shuffle=True), val_ds, epochs=2, learning_rate=5e-5,
    cache_dir=CACHE_DIR, cache_key="rotten_tomatoes_snippets:1.0.0:train")
print(f"teacher: {'reused ' + result.path if result.from_cache else 'fine-tuned'} "
      f"in {time.perf_counter() - start:.0f} s")

# ---- 2. The student: 5x fewer parameters, embeddings initialised from the teacher's -----------
student = students.student_for(teacher, "bert_tiny", embedding_init="svd",
                               max_sequence_length=SEQUENCE_LENGTH, num_layers=3,
                               hidden_dim=120, num_heads=12, intermediate_dim=480)
print(f"student: {student.count_params():,} params, teacher {teacher.count_params():,} "
      f"({teacher.count_params() / student.count_params():.1f}x fewer)")


def distil(train_ds, objective_list, epochs, learning_rate, with_labels):
    distiller = kdistill.Distiller(teacher, student, objectives=objective_list)
    steps = int(train_ds.cardinality()) * epochs
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, steps - steps // 10, warmup_target=learning_rate, warmup_steps=steps // 10)
    distiller.compile(optimizer=keras.optimizers.AdamW(schedule, clipnorm=1.0),
                      metrics=["accuracy"] if with_labels else None)
    t = time.perf_counter()
    distiller.fit(train_ds, epochs=epochs)
    return time.perf_counter() - t


# ---- 3a. General distillation: intermediate layers only, on unlabelled text -------------------
corpus = (data.load("rotten_tomatoes", split="train").map(lambda text, label: text)
          .concatenate(data.load("rotten_tomatoes", split="unlabelled")))
corpus = take(corpus.shuffle(20_000, seed=0), N_GENERAL)
general_ds = data.tokenize_dataset(corpus, preprocessor, batch_size=BATCH_SIZE,
                                   shuffle_buffer=10_000)
seconds = distil(general_ds, objectives.tinybert(prediction=False), 1, 1e-3, with_labels=False)
print(f"general distillation: {seconds:.0f} s")

# ---- 3b. Task distillation: soft targets + hard labels + intermediate layers ------------------
train_ds = tokenize("train", N_TRAIN, shuffle=True)
seconds = distil(train_ds, objectives.tinybert(temperature=2.0, hard_label_weight=0.5),
                 TASK_EPOCHS, 5e-4, with_labels=True)
print(f"task distillation: {seconds:.0f} s, val accuracy {student_accuracy(student, val_ds):.2%}")

# ---- 3c. A short fine-tune of the student alone on the labels (kept only if it helps) ----------
if not QUICK:
    before, weights = student_accuracy(student, val_ds), student.get_weights()
    student.compile(optimizer=keras.optimizers.AdamW(5e-5), metrics=["accuracy"],
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    student.fit(train_ds, epochs=1)
    after = student_accuracy(student, val_ds)
    if after <= before:
        student.set_weights(weights)
    print(f"fine-tune: val accuracy {before:.2%} -> {after:.2%} "
          f"({'kept' if after > before else 'reverted'})")

# ---- 4. Export the student only; check each file on the test split ---------------------------
report = kdistill.export_student(
    student, OUT,
    formats=("saved_model", "tflite_float32", "tflite_float16", "tflite_dynamic_int8",
             "tflite_int8"),
    representative_data=tokenize("train", 2000),  # calibration of the full-int8 model
    validation_data=test_ds, num_validation_examples=100_000,  # the whole test split
    teacher=teacher, overwrite=True, latency_runs=20 if QUICK else 50,
)  # prints the table; report.json and report.png are in OUT

t, s, edge = report["teacher"], report["student"], report["artifacts"]["tflite_dynamic_int8"]
print(f"\nteacher (Keras)         test accuracy {t['accuracy']:.2%}, {t['params']:,} params, "
      f"{t['latency_ms']:.1f} ms at batch 1")
print(f"student (Keras)         test accuracy {s['accuracy']:.2%} "
      f"({s['accuracy'] / t['accuracy']:.1%} of the teacher), {s['params']:,} params "
      f"({t['params'] / s['params']:.1f}x fewer)")
print(f"student (TFLite int8)   test accuracy {edge['accuracy']:.2%}, "
      f"{edge['size_bytes'] / 1e6:.1f} MB, {edge['latency_ms']:.2f} ms at batch 1 "
      f"({t['latency_ms'] / edge['latency_ms']:.1f}x faster than the Keras teacher)")
print(f"total {time.perf_counter() - start:.0f} s; files in {OUT}/")
