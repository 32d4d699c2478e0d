"""Several teachers of different architectures, one student: multi-teacher KD. Fully offline.

    python examples/multi_teacher.py          # ~2-3 min on 2 free CPU cores
    python examples/multi_teacher.py --tiny   # smoke run: few examples, one epoch

1. tokenise Rotten Tomatoes snippets once with the BERT WordPiece vocabulary (packaged with
   all-MiniLM-L6-v2); every model reads the same `{token_ids, padding_mask, segment_ids}`
   batches (DistilBERT and the CNN ignore `segment_ids`);
2. train three small teachers on the labels: a keras-hub BERT, a keras-hub DistilBERT and a
   word-embedding CNN;
3. combine them with `kdistill.MultiTeacher` (weights from their validation accuracy) and
   distil the ensemble into a small BERT student twice: averaged soft targets
   (`MultiTeacherKD(mode="average")`, the default) and one KD term per teacher
   (`mode="per_teacher"`, each logged as `kd_loss_<teacher>`), next to the student trained on
   the labels alone. Prints test accuracy and top-1 agreement with the ensemble.
"""

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a model hub: everything is local

import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402

import kdistill  # noqa: E402
from kdistill import data, students, teachers  # noqa: E402

TINY = "--tiny" in sys.argv
SEQUENCE_LENGTH, BATCH_SIZE = (24, 32) if TINY else (48, 32)
N_TRAIN = 256 if TINY else 4000  # labelled training snippets (of 10,201)
N_EVAL = 128 if TINY else None  # validation / test snippets (None: all 1,276 / 1,275)
EPOCHS = 1 if TINY else 2
keras.utils.set_random_seed(0)
start = time.perf_counter()

# ---- 1. One tokenised pipeline for every model -------------------------------------------------
preprocessor = keras_hub.models.BertTextClassifierPreprocessor.from_preset(
    teachers.packaged_model_dir("all-minilm-l6-v2"), sequence_length=SEQUENCE_LENGTH)
VOCABULARY = preprocessor.tokenizer.vocabulary_size()


def split(name, n=None, shuffle=False):
    ds = data.load("rotten_tomatoes", split=name)
    ds = ds if n is None else ds.take(n)
    return data.tokenize_dataset(ds, preprocessor, batch_size=BATCH_SIZE,
                                 shuffle_buffer=10_000 if shuffle else None, seed=0)


train_ds = split("train", N_TRAIN, shuffle=True)
val_ds, test_ds = split("validation", N_EVAL), split("test", N_EVAL)

# ---- 2. Three teachers of different architectures, trained on the labels ----------------------
bert = keras_hub.models.BertTextClassifier(
    keras_hub.models.BertBackbone(VOCABULARY, num_layers=2, num_heads=2, hidden_dim=64,
                                  intermediate_dim=128, max_sequence_length=SEQUENCE_LENGTH),
    num_classes=2, preprocessor=None, name="bert")
distilbert = keras_hub.models.DistilBertTextClassifier(
    keras_hub.models.DistilBertBackbone(VOCABULARY, num_layers=2, num_heads=2, hidden_dim=64,
                                        intermediate_dim=128,
                                        max_sequence_length=SEQUENCE_LENGTH),
    num_classes=2, preprocessor=None, name="distilbert")
token_ids = keras.Input((None,), dtype="int32", name="token_ids")
padding_mask = keras.Input((None,), dtype="int32", name="padding_mask")
h = keras.layers.Embedding(VOCABULARY, 64)(token_ids)
h = keras.layers.Conv1D(128, 3, padding="same", activation="relu")(h)
real = keras.ops.expand_dims(keras.ops.cast(padding_mask, "float32"), -1)
pooled = keras.ops.max(h + (real - 1.0) * 1e4, axis=1)  # max over the real tokens only
cnn = keras.Model({"token_ids": token_ids, "padding_mask": padding_mask},
                  keras.layers.Dense(2)(keras.layers.Dropout(0.3)(pooled)), name="cnn")

members = [bert, distilbert, cnn]
for model, learning_rate in zip(members, (5e-4, 5e-4, 1e-3)):
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    inputs = list(model.input)  # each model gets the inputs it reads
    model.fit(train_ds.map(lambda x, y: ({k: x[k] for k in inputs}, y)), epochs=EPOCHS,
              verbose=0, shuffle=False)  # the dataset shuffles itself
    print(f"teacher {model.name:<10} {model.count_params():>9,} params, trained "
          f"({time.perf_counter() - start:.0f} s)")

# ---- 3. The ensemble as one teacher ------------------------------------------------------------
# A MultiTeacher runs every member on the shared inputs: one pass gives each teacher's logits.
teacher = kdistill.MultiTeacher(members, name="ensemble")
labels = {name: np.concatenate([y for _, y in ds]) for name, ds in (("val", val_ds),
                                                                   ("test", test_ds))}
member_logits = {name: teacher.predict(ds.map(lambda x, y: x), verbose=0)
                 for name, ds in (("val", val_ds), ("test", test_ds))}
accuracy = {(m.name, name): float((member_logits[name][:, i].argmax(-1) == labels[name]).mean())
            for i, m in enumerate(members) for name in ("val", "test")}
weights = [accuracy[m.name, "val"] for m in members]  # better teachers count more
teacher = kdistill.MultiTeacher(members, weights=weights, name="ensemble")
ensemble_logits = teacher.ensemble_logits(member_logits["test"])  # log of averaged probabilities
ensemble_accuracy = float((np.argmax(ensemble_logits, -1) == labels["test"]).mean())


def make_student():
    keras.utils.set_random_seed(1)  # every student starts from the same weights
    return students.build_student("bert_tiny", VOCABULARY, num_classes=2,
                                  max_sequence_length=SEQUENCE_LENGTH, num_layers=1,
                                  hidden_dim=32, num_heads=2, intermediate_dim=64)


# ---- 4. Students: labels only, then distilled from the ensemble two ways ------------------------
student = make_student()
student.compile(optimizer=keras.optimizers.Adam(1e-3),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
student.fit(train_ds, epochs=EPOCHS, verbose=0, shuffle=False)
logits = student.predict(test_ds.map(lambda x, y: x), verbose=0)
results = {"labels only": (student, {
    "accuracy": float((logits.argmax(-1) == labels["test"]).mean()),
    "teacher_agreement": float((logits.argmax(-1) == np.argmax(ensemble_logits, -1)).mean()),
})}
print(f"student, labels only ({time.perf_counter() - start:.0f} s)")
for label, mode in (("averaged targets", "average"), ("per-teacher terms", "per_teacher")):
    student = make_student()
    objective = kdistill.MultiTeacherKD(temperature=2.0, alpha=0.3, mode=mode)
    distiller = kdistill.Distiller(teacher, student, objectives=[objective])
    distiller.compile(optimizer=keras.optimizers.Adam(1e-3),
                      metrics=["accuracy", "teacher_agreement"])
    history = distiller.fit(train_ds, epochs=EPOCHS, verbose=0, shuffle=False).history
    results[label] = (student, distiller.evaluate(test_ds, verbose=0, return_dict=True))
    terms = sorted(k for k in history if k.startswith("kd_loss"))
    print(f"student, {label}: last epoch "
          + ", ".join(f"{k}={history[k][-1]:.4f}" for k in terms)
          + f" ({time.perf_counter() - start:.0f} s)")

print(f"\nTest split ({'all' if N_EVAL is None else N_EVAL} snippets)")
print(f"{'model':<28} {'params':>10} {'accuracy':>9} {'agreement':>10}")
for m in members:
    print(f"{'teacher ' + m.name:<28} {m.count_params():>10,} {accuracy[m.name, 'test']:>9.4f}")
label = "ensemble (" + "/".join(f"{w:.2f}" for w in teacher.teacher_weights) + ")"
print(f"{label:<28} {teacher.count_params():>10,} {ensemble_accuracy:>9.4f}")
for label, (student, logs) in results.items():
    print(f"{'student, ' + label:<28} {student.count_params():>10,} {logs['accuracy']:>9.4f} "
          f"{logs['teacher_agreement']:>10.4f}")
print(f"total {time.perf_counter() - start:.0f} s")
