"""Distill a small keras-hub BERT student, then export it for servers and phones.

Runs in about a minute on a laptop CPU on synthetic token data:

    python examples/export_student.py

Writes `saved_models/export_example/` (replaced on each run):

    saved_model/                 TF Serving: "serving_default" -> logits, probabilities
    model_float32.tflite         LiteRT, float32
    model_float16.tflite         LiteRT, float16 weights
    model_dynamic_int8.tflite    LiteRT, int8 weights, float activations
    model_int8.tflite            LiteRT, full integer (calibrated on training examples)
    report.json, report.png      parity vs the Keras student, accuracy, size, batch-1 latency
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import kdistill  # noqa: E402
from kdistill import testing  # noqa: E402

SEQUENCE_LENGTH = 16
VOCABULARY_SIZE = 512

keras.utils.set_random_seed(0)

# 1. A teacher and a smaller student (keras-hub BertTextClassifier, no preprocessor: token ids in).
teacher = testing.tiny_bert_classifier(vocabulary_size=VOCABULARY_SIZE, num_layers=2,
                                       hidden_dim=64, num_heads=4, intermediate_dim=128,
                                       num_classes=2, max_sequence_length=SEQUENCE_LENGTH)
student = testing.tiny_bert_classifier(vocabulary_size=VOCABULARY_SIZE, num_layers=1,
                                       hidden_dim=32, num_heads=2, intermediate_dim=64,
                                       num_classes=2, max_sequence_length=SEQUENCE_LENGTH)

# 2. Synthetic token data: {"token_ids", "padding_mask", "segment_ids"} and labels.
data = dict(sequence_length=SEQUENCE_LENGTH, vocabulary_size=VOCABULARY_SIZE, num_classes=2)
train_ds = testing.token_dataset(num_examples=512, batch_size=32, seed=0, **data)
val_ds = testing.token_dataset(num_examples=128, batch_size=32, seed=1, **data)

# 3. Fit the teacher briefly, then distill it into the student.
teacher.compile(optimizer="adam", metrics=["accuracy"],
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
teacher.fit(train_ds, epochs=3, verbose=0)
distiller = kdistill.Distiller(teacher, student, temperature=2.0, alpha=0.5)
distiller.compile(optimizer="adam", metrics=["accuracy"])
distiller.fit(train_ds, epochs=3, verbose=0)

# 4. Export the student only, in every format, and check each artifact on held-out data.
report = kdistill.export_student(
    distiller,
    "saved_models/export_example",
    formats=("saved_model", "tflite_float32", "tflite_float16", "tflite_dynamic_int8",
             "tflite_int8"),
    representative_data=train_ds,  # calibration for tflite_int8
    validation_data=val_ds,  # parity, accuracy and latency inputs
    overwrite=True,  # this example's own directory only
    latency_runs=20,
)  # prints the table; report.json and report.png are in the directory too

# 5. Serving it: the SavedModel signature takes named int32 inputs of shape [batch, 16].
print("\nSignature inputs:", report["inputs"])
