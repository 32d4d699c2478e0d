"""Quickstart: distill a keras-hub BERT classifier into a 4x smaller student with plain `fit`.

Runs in a minute or two on a laptop CPU. The task is synthetic so the script needs no download:
a token sequence is "positive" (1) when it holds more tokens from a positive word list than from
a negative one. Replace `make_dataset` with your tokenised data (see README) for real use.

    python examples/quickstart.py
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import kdistill  # noqa: E402

VOCAB, SEQ, BATCH = 200, 32, 32
keras.utils.set_random_seed(0)


def make_dataset(num_examples, seed):
    """Token sequences labelled by counting 'positive' (ids 10-29) vs 'negative' (30-49) words."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(8, SEQ + 1, num_examples)
    mask = np.arange(SEQ)[None, :] < lengths[:, None]
    token_ids = rng.integers(50, VOCAB, (num_examples, SEQ))
    sentiment_words = rng.integers(10, 50, (num_examples, SEQ))
    token_ids = np.where(rng.random((num_examples, SEQ)) < 0.25, sentiment_words, token_ids)
    token_ids = (token_ids * mask).astype("int32")
    positive = ((token_ids >= 10) & (token_ids < 30)).sum(1)
    negative = ((token_ids >= 30) & (token_ids < 50)).sum(1)
    labels = (positive > negative).astype("int32")
    inputs = {"token_ids": token_ids, "padding_mask": mask,
              "segment_ids": np.zeros_like(token_ids)}
    return tf.data.Dataset.from_tensor_slices((inputs, labels)).batch(BATCH)


def bert_classifier(num_layers, hidden_dim, num_heads, name):
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=VOCAB, num_layers=num_layers, num_heads=num_heads,
        hidden_dim=hidden_dim, intermediate_dim=4 * hidden_dim, max_sequence_length=SEQ,
    )
    return keras_hub.models.BertTextClassifier(backbone, num_classes=2, preprocessor=None,
                                               name=name)


train_ds, val_ds, test_ds = make_dataset(2000, 0), make_dataset(400, 1), make_dataset(1000, 2)

# 1. A teacher (in real use: your fine-tuned BERT-family model).
teacher = bert_classifier(num_layers=3, hidden_dim=96, num_heads=4, name="teacher")
teacher.compile(optimizer=keras.optimizers.AdamW(1e-3),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"])
teacher.fit(train_ds, validation_data=val_ds, epochs=4, verbose=2)

# 2. A smaller student reading the same token ids.
student = bert_classifier(num_layers=1, hidden_dim=48, num_heads=2, name="student")

# 3. Distill: alpha * CE(labels) + (1 - alpha) * T^2 * KL(teacher || student).
distiller = kdistill.Distiller(teacher=teacher, student=student, temperature=4.0, alpha=0.5)
distiller.compile(optimizer=keras.optimizers.AdamW(1e-3), metrics=["accuracy"])
distiller.fit(train_ds, validation_data=val_ds, epochs=6, verbose=2)

# 4. Evaluate both on held-out data.
teacher_acc = teacher.evaluate(test_ds, return_dict=True, verbose=0)["accuracy"]
student_acc = distiller.evaluate(test_ds, return_dict=True, verbose=0)["accuracy"]
print(f"teacher: {teacher.count_params():>9,} params  test accuracy {teacher_acc:.3f}")
print(f"student: {student.count_params():>9,} params  test accuracy {student_acc:.3f} "
      f"({student_acc / teacher_acc:.1%} of the teacher, "
      f"{teacher.count_params() / student.count_params():.1f}x smaller)")

# 5. Save the student only: a plain Keras model.
os.makedirs("saved_models", exist_ok=True)
path = "saved_models/quickstart_student.keras"
distiller.save(path, overwrite=True)
restored = keras.models.load_model(path)
print(f"saved the student to {path} ({restored.count_params():,} params)")
