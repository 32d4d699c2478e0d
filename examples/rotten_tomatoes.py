"""Rotten Tomatoes, end to end: MiniLM teacher -> 5x smaller student -> TFLite. Fully offline.

The recipe of `kdistill demo` (`make demo`, which runs `kdistill/configs/demo.yaml` through the
runner), written top to bottom with kdistill's library calls so you can copy it into your own
code and change the pieces:

    python examples/rotten_tomatoes.py            # minutes on 2 free CPU cores, teacher cached
    python examples/rotten_tomatoes.py --quick    # pipeline check only: 126 steps leave the
                                                  # student on the majority class

1. fine-tune the packaged all-MiniLM-L6-v2 on the snippets (cached: the second run reuses it),
2. prune the fine-tuned teacher into the student (`kdistill.pruning.prune_teacher`): all 6
   layers, the 160 most important of 384 channels, 5 of 12 heads and 640 of 1,536 FFN units per
   layer, and only the word pieces of the training text: ~4.5M parameters vs 22.7M (5.1x),
3. run the teacher once over the training snippets and cache its logits, then distil for 3
   epochs from the cache (soft targets at T=2 + hard labels, no teacher forward per step, batches
   of similar-length snippets),
4. export the student (SavedModel + TFLite) and check every file on the test split.

`examples/demo_ablation.py` measures what other recipes (a fresh student with SVD embeddings,
intermediate losses, general distillation, augmentation) are worth here.

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
from kdistill import data, objectives, pruning, teachers, vocabulary  # noqa: E402
from kdistill.data import bucket_by_length, grouped_by_length  # noqa: E402

QUICK = "--quick" in sys.argv
SEQUENCE_LENGTH, BATCH_SIZE = 64, 32
OUT = "saved_models/rotten_tomatoes_example"
CACHE_DIR = ".cache/kdistill/teachers"  # the same cache as `make demo`
N_TRAIN = 2000 if QUICK else None  # labelled examples for the student (None: all ~10.2k)
TASK_EPOCHS, LEARNING_RATE = 3, 3e-4
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

# ---- 2. The student: a structured slice of the fine-tuned teacher, 5x fewer parameters ------
train_text = take(data.load("rotten_tomatoes", split="train"), N_TRAIN)
corpus = train_text.map(lambda text, label: text).concatenate(
    data.load("rotten_tomatoes", split="unlabelled"))
keep_ids, unknown_id = vocabulary.special_token_ids(preprocessor.tokenizer)
pieces = vocabulary.corpus_vocabulary(  # the word pieces the student embeds (others -> [UNK])
    data.tokenize_dataset(corpus, preprocessor, batch_size=256),
    teacher.backbone.vocabulary_size, keep_ids=keep_ids, min_count=1)
student = pruning.prune_teacher(
    teacher, tokenize("train", 512, batch_size=64),  # importance measured on 512 snippets
    hidden_dim=160, intermediate_dim=640, num_layers=6, vocabulary=pieces,
    unknown_id=unknown_id, max_sequence_length=SEQUENCE_LENGTH)
print(f"student: {student.count_params():,} params, teacher {teacher.count_params():,} "
      f"({teacher.count_params() / student.count_params():.1f}x fewer)")

# ---- 3. Task distillation from the teacher's cached logits ------------------------------------
CACHE = ".cache/kdistill/teacher_outputs/rotten_tomatoes_train"  # replaced on each run
data.cache_teacher_outputs(
    teacher, bucket_by_length(data.tokenize_dataset(train_text, preprocessor, batch_size=256), 64),
    CACHE, taps=("logits",), dtype="float32", overwrite=True)  # one pass, similar-length batches
# Shuffled, then grouped into batches of similar length (1.46x faster epochs than random batches).
train_ds = grouped_by_length(
    data.load_teacher_cache(CACHE, BATCH_SIZE, teacher=teacher, shuffle_seed=0), BATCH_SIZE)

distiller = kdistill.Distiller(None, student, objectives=[
    objectives.LogitsKD(temperature=2.0, alpha=0.5)])  # no teacher: targets come from the cache
steps = int(train_ds.cardinality()) * TASK_EPOCHS
schedule = keras.optimizers.schedules.CosineDecay(
    0.0, steps - steps // 10, warmup_target=LEARNING_RATE, warmup_steps=steps // 10)
distiller.compile(optimizer=keras.optimizers.AdamW(schedule, clipnorm=1.0), metrics=["accuracy"])
best, best_weights = 0.0, None
for epoch in range(TASK_EPOCHS):  # keep the epoch with the best validation accuracy
    distiller.fit(train_ds, epochs=1)
    value = student_accuracy(student, val_ds)
    print(f"epoch {epoch + 1}: val accuracy {value:.2%}")
    if value > best:
        best, best_weights = value, student.get_weights()
student.set_weights(best_weights)

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
