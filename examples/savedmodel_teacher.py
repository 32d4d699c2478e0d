"""Distil a Keras 2 (tf-keras) SavedModel teacher into a Keras 3 student. Fully offline.

Many trained models live as SavedModels written by tf-keras (Keras 2) or by older TFX pipelines.
kdistill reads them through `keras.layers.TFSMLayer` (`kdistill.teachers.from_saved_model`) for
logits-only distillation. This script plays both sides:

    python examples/savedmodel_teacher.py          # ~2 min on 2 free CPU cores
    python examples/savedmodel_teacher.py --tiny   # smoke run in seconds (what the test runs)
    python examples/savedmodel_teacher.py --out DIR --overwrite

1. tokenise Rotten Tomatoes snippets with the BERT WordPiece vocabulary (the one packaged with
   all-MiniLM-L6-v2), as `kdistill.data.tokenize_dataset` does;
2. build and train a teacher **with tf_keras** (a word-embedding CNN) and save it the Keras 2 way,
   `model.save(directory)`: a SavedModel with a `serving_default` signature;
3. in Keras 3, load it with `from_saved_model` (it checks the outputs are logits over 2 classes)
   and distil it into a 4x smaller 1-layer keras-hub BERT student, next to the same student
   trained on the labels alone (`--tiny` skips that baseline).

Writes the teacher SavedModel to `saved_models/savedmodel_teacher_example/teacher` (refuses to
replace an existing one without --overwrite).
"""

import argparse
import os
import shutil
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a model hub: everything is local

import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402 - Keras 2, as an older pipeline would have used

import kdistill  # noqa: E402
from kdistill import data, students, teachers  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--tiny", action="store_true", help="smoke run: few examples, one epoch")
parser.add_argument("--out", default="saved_models/savedmodel_teacher_example")
parser.add_argument("--overwrite", action="store_true", help="replace an existing --out/teacher")
args = parser.parse_args(sys.argv[1:])

SEQUENCE_LENGTH = 24 if args.tiny else 48
N_TRAIN = 256 if args.tiny else 4000  # labelled training snippets (of 10,201)
N_EVAL = 128 if args.tiny else None  # validation/test snippets (None: all 1,276 / 1,275)
EPOCHS = 1 if args.tiny else 3
BATCH_SIZE = 32
teacher_dir = os.path.join(args.out, "teacher")
if os.path.exists(teacher_dir) and not args.overwrite:
    sys.exit(f"{teacher_dir} exists; pass --overwrite to replace it, or --out elsewhere.")
keras.utils.set_random_seed(0)
tf_keras.utils.set_random_seed(0)
start = time.perf_counter()

# ---- 1. Tokenised data: keras-hub inputs {token_ids, padding_mask, segment_ids} ----------------
preprocessor = keras_hub.models.BertTextClassifierPreprocessor.from_preset(
    teachers.packaged_model_dir("all-minilm-l6-v2"), sequence_length=SEQUENCE_LENGTH)
vocabulary_size = preprocessor.tokenizer.vocabulary_size()


def split(name, n=None, shuffle=False):
    ds = data.load("rotten_tomatoes", split=name)
    ds = ds if n is None else ds.take(n)
    return data.tokenize_dataset(ds, preprocessor, batch_size=BATCH_SIZE,
                                 shuffle_buffer=10_000 if shuffle else None, seed=0, cache=False)


train_ds = split("train", N_TRAIN, shuffle=True)
val_ds, test_ds = split("validation", N_EVAL), split("test", N_EVAL)

# ---- 2. The teacher, in tf_keras (Keras 2), saved as a SavedModel ------------------------------
token_ids = tf_keras.Input((SEQUENCE_LENGTH,), dtype="int32", name="token_ids")
padding_mask = tf_keras.Input((SEQUENCE_LENGTH,), dtype="int32", name="padding_mask")
h = tf_keras.layers.Embedding(vocabulary_size, 128)(token_ids)
h = tf_keras.layers.Conv1D(256, 3, padding="same", activation="relu")(h)
mask = tf_keras.layers.Lambda(lambda m: tf.cast(m, "float32")[..., None])(padding_mask)
pooled = tf_keras.layers.Lambda(  # max over the real tokens only
    lambda t: tf.reduce_max(t[0] + (t[1] - 1.0) * 1e4, axis=1))([h, mask])
pooled = tf_keras.layers.Dropout(0.3)(pooled)
logits = tf_keras.layers.Dense(2, name="logits")(pooled)  # logits: no softmax
teacher_k2 = tf_keras.Model({"token_ids": token_ids, "padding_mask": padding_mask}, logits,
                            name="tf_keras_teacher")


def for_teacher(ds):
    """The tf_keras model reads two of the three inputs, with an int32 mask."""
    return ds.map(lambda x, y: ({"token_ids": x["token_ids"],
                                 "padding_mask": tf.cast(x["padding_mask"], "int32")}, y))


teacher_k2.compile(optimizer=tf_keras.optimizers.Adam(1e-3),
                   loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                   metrics=["accuracy"])
teacher_k2.fit(for_teacher(train_ds), validation_data=for_teacher(val_ds), epochs=EPOCHS,
               verbose=0)  # the training dataset shuffles itself each epoch
_, teacher_k2_accuracy = teacher_k2.evaluate(for_teacher(test_ds), verbose=0)
if os.path.exists(teacher_dir):
    shutil.rmtree(teacher_dir)  # --overwrite was given
teacher_k2.save(teacher_dir)  # Keras 2 SavedModel format (a directory, not .keras)
print(f"tf_keras teacher: {teacher_k2.count_params():,} params, test accuracy "
      f"{teacher_k2_accuracy:.4f}, saved to {teacher_dir} "
      f"({time.perf_counter() - start:.0f} s)")

# ---- 3. Keras 3: the SavedModel as a frozen teacher, distilled into a keras-hub student ---------
teacher = teachers.from_saved_model(teacher_dir, num_classes=2)  # checks: logits, 2 classes
x, _ = next(iter(test_ds))  # the full keras-hub dict: extra keys and a bool mask are handled
difference = np.abs(teacher.predict_on_batch(x) - teacher_k2.predict_on_batch(
    {"token_ids": x["token_ids"], "padding_mask": tf.cast(x["padding_mask"], "int32")})).max()
print(f"SavedModel teacher in Keras 3: max |logit difference| vs tf_keras {difference:.2e}")


def make_student():
    keras.utils.set_random_seed(1)  # both students start from the same weights
    return students.build_student("bert_tiny", vocabulary_size, num_classes=2,
                                  max_sequence_length=SEQUENCE_LENGTH, num_layers=1,
                                  hidden_dim=32, num_heads=2, intermediate_dim=64)


results = {}
runs = [("labels only", 1.0), ("distilled", 0.3)]  # alpha: the weight of the label loss
for label, alpha in runs[1:] if args.tiny else runs:
    student = make_student()
    distiller = kdistill.Distiller(teacher, student, temperature=2.0, alpha=alpha)
    distiller.compile(optimizer=keras.optimizers.Adam(1e-3),
                      metrics=["accuracy", "teacher_agreement", "teacher_kl", "ece"])
    history = distiller.fit(train_ds, validation_data=val_ds, epochs=EPOCHS, verbose=0,
                            shuffle=False).history  # the dataset shuffles itself
    results[label] = (student, distiller.evaluate(test_ds, verbose=0, return_dict=True))
    print(f"student, {label} (alpha={alpha}): val accuracy per epoch "
          f"{[round(v, 4) for v in history['val_accuracy']]}")

print(f"\nTest split ({'all' if N_EVAL is None else N_EVAL} snippets), teacher read back from "
      f"the SavedModel by TFSMLayer:")
print(f"{'model':<24} {'params':>10} {'accuracy':>9} {'agreement':>10} {'KL(t|s)':>8} {'ECE':>6}")
print(f"{'teacher (tf_keras)':<24} {teacher_k2.count_params():>10,} "
      f"{teacher_k2_accuracy:>9.4f} {'':>10} {'':>8} {'':>6}")
for label, (student, logs) in results.items():
    print(f"{'student, ' + label:<24} {student.count_params():>10,} {logs['accuracy']:>9.4f} "
          f"{logs['teacher_agreement']:>10.4f} {logs['teacher_kl']:>8.4f} {logs['ece']:>6.4f}")
print(f"total {time.perf_counter() - start:.0f} s")
