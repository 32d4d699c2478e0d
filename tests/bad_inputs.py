"""What kdistill refuses, and what it says: the registry behind docs/errors.md.

Each `Case` is one bad or awkward input (from issue 16 and its neighbours), what kdistill says
(or, for a valid input, the right result it gives) and the test that feeds it. The table in
docs/errors.md is generated from this list (`python -m tests.bad_inputs docs/errors.md`, part of
`make docs`), and `tests/test_errors_table.py` checks that the table is current and that each
case's test exists and asserts the message quoted here (every `…`-separated piece of `says` is in
a string of that test; a piece in parentheses, such as `(CacheReadError)`, is a comment).

Run `python -m tests.bad_inputs` to print the table, or give it docs/errors.md to rewrite the
table there (between its two markers).
"""

import dataclasses
import sys

BEGIN = "<!-- the table below is generated from tests/bad_inputs.py: make docs -->"
END = "<!-- end of the generated table -->"


@dataclasses.dataclass(frozen=True)
class Case:
    """One bad input: where it enters, what it is, what kdistill says, the test that feeds it.

    `result=True` marks a valid (if awkward) input: `says` is the right result it gets.
    `test` is `file.py::function`; `open` names what is still needed, for a case whose test is a
    strict xfail until then.
    """

    area: str
    case: str
    says: str
    test: str
    result: bool = False
    open: str = ""


FILES = "test_file_errors.py"
CHECKS = "test_input_checks.py"

CASES = [
    # ------------------------------------------------------------------ labels and label names
    Case("labels", "`kdistill evaluate` on a file holding only the `pos` rows (model trained on "
         "`neg`, `pos`)",
         "0% (the truth): its labels are numbered with the model's labels.json, not from the file",
         f"{FILES}::test_evaluate_numbers_labels_as_the_model_was_trained", result=True),
    Case("labels", "`kdistill evaluate` on a file with a label the model does not know",
         "…, line 3: label 'maybe' is not one the model knows: …has the classes ['neg', 'pos']",
         f"{FILES}::test_evaluate_refuses_a_label_the_model_does_not_know"),
    Case("labels", "`kdistill evaluate`, a one-class file, a model without labels.json",
         "…has the labels ['pos'] but the model outputs 2 classes, and no label names came with "
         "it (no labels.json next to it): cannot tell which class each label is. Pass "
         "--label-names",
         f"{FILES}::test_evaluate_without_label_names_refuses_a_file_of_fewer_classes"),
    Case("labels", "`--label-names` that contradict the model's labels.json",
         "--label-names ['pos', 'neg'] differ from the labels student.keras (from …) was trained "
         "on: ['neg', 'pos']",
         f"{FILES}::test_label_names_that_contradict_the_model_are_refused"),
    Case("labels", "a labels.json of another model, or a truncated one",
         "labels.json names 3 classes … outputs 2; the labels file belongs to another model … "
         "labels.json is not a labels file",
         f"{FILES}::test_a_broken_labels_file_is_named"),
    Case("labels", "labels `1.0`, `2.0`, `10.0`; `-1`/`1`; JSON `true`/`false`; `1` and `\"1\"`",
         "numbered by value (10.0 is class 10, -2 < -1 < 1), the same class for 1 and \"1\"",
         f"{FILES}::test_numeric_labels_are_numbered_by_value", result=True),
    Case("labels", "a label cell that is empty (CSV) or `null` (JSONL)",
         "…, line 3: empty label in column 'label'. Fill it or remove the row (unlabelled text "
         "goes in a file of its own, e.g. data.unlabelled).",
         f"{FILES}::test_labels_that_are_no_class_are_refused"),
    Case("labels", "fractional numbers as labels (a regression target)",
         "…, line 2: the label '0.5' in column 'label' is a number with a fractional part: labels "
         "must be class names or whole class ids",
         f"{FILES}::test_labels_that_are_no_class_are_refused"),
    Case("labels", "a JSON list as a label or a text",
         "the value in column 'label' is a JSON list; expected a string or a number (a class "
         "name or id).",
         f"{FILES}::test_labels_that_are_no_class_are_refused"),
    Case("labels", "integer labels with gaps (0, 1, 2, 5) in a training file",
         "warning: …the integer labels in column 'label' are [0, 1, 2, 5]: as class ids 0..5 they "
         "make 6 classes, and [3, 4] have no example. Renumber the labels 0..3; or, if the "
         "classes are meant, pass them all in order as label_names",
         f"{FILES}::test_integer_labels_with_gaps_get_a_warning"),
    Case("labels", "`kdistill evaluate` on class ids the model does not have",
         "… has the class ids 0..5 but the model outputs 2 classes: evaluate on data with its "
         "classes (ids 0..1).",
         f"{FILES}::test_evaluate_reads_class_ids_as_the_models_outputs"),
    # ------------------------------------------------------------------ batches at the door
    Case("first batch", "token ids ≥ a model's vocabulary",
         "inputs['token_ids'] of the first training batch holds the token id 93, but the teacher "
         "'teacher' has a vocabulary of 64 ids (0 to 63). Tokenize with the teacher's own "
         "tokenizer",
         f"{CHECKS}::test_token_id_beyond_the_students_vocabulary"),
    Case("first batch", "a negative token id (-1 as padding)",
         "holds the negative token id -1; the teacher 'teacher' reads ids in [0, 64). Pad with 0",
         f"{CHECKS}::test_negative_token_id"),
    Case("first batch", "sequences longer than a model's position table",
         "has sequence length 24, but the student 'student' has a position table of 16 "
         "(max_sequence_length=16). Tokenize with sequence_length <= 16",
         f"{CHECKS}::test_sequence_longer_than_the_position_table"),
    Case("first batch", "an unbatched dataset",
         "…(rank 1), but the teacher 'teacher' expects rank 2 (a batch dimension first): the "
         "dataset is not batched. Call dataset.batch(batch_size)",
         f"{CHECKS}::test_unbatched_dataset"),
    Case("first batch", "string labels",
         "The labels of the first training batch are strings ('pos', 'neg', 'pos', …): the models "
         "need integer class ids 0 to num_classes - 1. Map the label names to ids first",
         f"{CHECKS}::test_string_labels"),
    Case("first batch", "float labels with a fractional part (`y + 0.5`)",
         "The labels of the first training batch are floats with a fractional part (e.g. …): "
         "class ids must be whole numbers, and a fractional id would be silently truncated",
         f"{CHECKS}::test_float_labels_with_a_fractional_part"),
    Case("first batch", "NaN labels", "The labels of the first training batch hold NaN",
         f"{CHECKS}::test_nan_labels"),
    Case("first batch", "integer labels outside the models' classes",
         "The first validation batch has the label …, outside [0, 3) for models with 3 outputs. "
         "Map the labels to 0 to 2, or build teacher and student heads with num_classes=",
         f"{CHECKS}::test_integer_labels_outside_the_classes"),
    Case("first batch", "negative or NaN sample weights",
         "hold the negative weight -1.0: a negative weight turns the loss into a gain. Pass "
         "weights >= 0 … sample weights of the first training batch hold NaN",
         f"{CHECKS}::test_negative_or_nan_sample_weights"),
    Case("first batch", "`metrics=[\"accuracy\"]` on unlabelled batches",
         "The training batches carry no labels, but compile(metrics=...) asks for metrics on "
         "labels (e.g. accuracy)",
         f"{CHECKS}::test_label_metrics_without_labels"),
    Case("first batch", "a dataset that filters to nothing",
         "The training dataset yielded no batches: its first pass is empty (e.g. a `filter` that "
         "keeps nothing",
         f"{CHECKS}::test_a_dataset_that_yields_nothing"),
    Case("first batch", "an empty dataset (`take(0)`)", "training dataset is empty",
         "test_distiller.py::test_empty_dataset"),
    Case("first batch", "a teacher whose outputs are probabilities (softmax)",
         "warning: The teacher 'softmax_teacher''s outputs on the first batch look like "
         "probabilities … Pass logits",
         f"{CHECKS}::test_a_teacher_that_outputs_probabilities_gets_a_warning"),
    # ------------------------------------------------------------------ hyper-parameters, NaN
    Case("NaN", "`temperature=inf`, NaN, a bool or a string",
         "temperature must be a finite number (> 0, typically 1 to 8), got inf … got the bool "
         "True: pass a number … got 'hot' (str)",
         "test_distiller.py::test_bad_temperature"),
    Case("NaN", "`alpha` outside [0, 1], NaN or a bool",
         "alpha must be in [0, 1], got 1.5 … alpha must be a finite number (in [0, 1]), got nan",
         "test_distiller.py::test_bad_alpha"),
    Case("NaN", "a step whose loss is NaN (NaN in the inputs)",
         "(FloatingPointError) …batch 1 …optimizer step 1…That update was not applied…learning "
         "rate…temperature",
         "test_distiller.py::test_a_step_with_a_nan_loss_leaves_the_weights_as_they_were"),
    Case("NaN", "`save()`, `export()`, a training state of a student with NaN weights",
         "Refusing to … the model 'student': its weight '…/bias' holds 1 NaN/Inf value(s) (of 3)",
         "test_distiller.py::test_save_and_export_refuse_non_finite_weights"),
    Case("NaN", "`export_student` of a student with NaN weights",
         "Refusing to export the model '…': its weight '…token_embedding/embeddings' holds 8 "
         "NaN/Inf value(s)",
         "test_export.py::test_a_student_with_nan_weights_is_not_exported"),
    # ------------------------------------------------------------------ files
    Case("files", "a latin-1 CSV (Python API)",
         "…, line 3, column 11: byte 0xe8 is not valid utf-8 text (invalid continuation byte). "
         "Save the file as UTF-8, or pass the encoding it was saved in, e.g. encoding='latin-1' "
         "or 'cp1252'.",
         f"{FILES}::test_a_latin1_csv_names_the_file_line_and_the_encoding_option"),
    Case("files", "a latin-1 CSV in a run config",
         "…Save the file as UTF-8, or set the config key data.encoding to the encoding it was "
         "saved in (e.g. `data.encoding: latin-1` or `cp1252`).",
         f"{FILES}::test_data_encoding_reads_a_latin1_file_and_without_it_the_error_names_the_key"),
    Case("files", "a latin-1 CSV with `kdistill evaluate --data` (or `--config`)",
         "…Save the file as UTF-8, or pass --encoding with the encoding it was saved in (e.g. "
         "--encoding latin-1 or cp1252). … or pass --encoding, or set data.encoding in …",
         f"{FILES}::test_evaluate_names_the_encoding_flag_or_key"),
    Case("files", "a latin-1 project with `data.encoding: latin-1`",
         "trains; a run shorter than `log_every` still logs its last step and writes "
         "loss_terms.png",
         f"{FILES}::test_a_latin1_project_trains_with_data_encoding_and_a_short_run_plots_its_"
         "losses", result=True),
    Case("files", "a UTF-8 file with a byte-order mark; bad bytes in a JSONL file",
         "read (the mark is not part of the first column's name); …bad.jsonl, line 2, column 11: "
         "byte 0xff",
         f"{FILES}::test_a_utf8_byte_order_mark_is_not_part_of_the_header", result=True),
    Case("files", "a CSV renamed `.keras`, or a truncated `.keras` file",
         "… exists but is not a valid .keras archive (…it looks like text…truncated or not a zip "
         "archive…); a .keras file is the zip archive `model.save(...)` writes",
         f"{FILES}::test_a_file_that_is_not_a_keras_archive_is_named"),
    Case("files", "random bytes as `.tflite`",
         "… is not a valid .tflite file (no TFLite flatbuffer header; truncated, or another kind "
         "of file). Export it again with `kdistill export`",
         f"{FILES}::test_random_bytes_as_tflite_are_named"),
    Case("files", "an empty vocab.txt, one without [PAD]/[UNK]/…, or none",
         "… is empty: a WordPiece vocab.txt has one token per line … lacks the special tokens "
         "['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]']: it is not a BERT WordPiece vocab.txt "
         "… No vocabulary file …",
         f"{FILES}::test_a_vocabulary_that_is_not_one_is_named"),
    Case("files", "`kdistill evaluate --config` whose `data.sequence_length` is longer than "
         "the model's positions",
         "data.sequence_length of … is 64, longer than the position table of student.keras (16 "
         "positions): pass --sequence-length 16 (or less).",
         f"{FILES}::test_evaluate_names_the_encoding_flag_or_key"),
    Case("files", "`kdistill benchmark` without `--data` on a model with 16 positions",
         "--sequence-length 32 is longer than the position table of "
         "student.keras (16 positions): pass --sequence-length 16",
         f"{FILES}::test_benchmark_without_data_fits_the_models_position_table"),
    # ------------------------------------------------------------------ teacher caches
    Case("teacher cache", "a shard with one flipped byte, `verify_checksums=True`",
         "The cache in … is damaged: shard shard-00000.tfrecord does not match its sha256 in the "
         "manifest. Rebuild it with cache_teacher_outputs(..., overwrite=True).",
         f"{FILES}::test_a_flipped_byte_in_a_shard_is_named"),
    Case("teacher cache", "a shard with one flipped byte, read by `fit` (first batch) or "
         "inside `input_checks.named_read_errors()`",
         "(CacheReadError) …does not match its sha256 in the manifest. … Pass "
         "verify_checksums=True to load_teacher_cache to check every shard before training.",
         f"{FILES}::test_fit_on_a_cache_with_a_damaged_first_batch_names_the_shard"),
    Case("teacher cache", "a shard with one flipped byte, met by `fit` or `evaluate` after the "
         "first batch",
         "(CacheReadError) …Pass verify_checksums=True to load_teacher_cache to check every shard "
         "before training.",
         f"{FILES}::test_fit_on_a_cache_with_a_damaged_later_batch_names_the_shard"),
    Case("teacher cache", "a manifest whose example count was edited",
         "The cache in … is inconsistent: its manifest says 10 examples but its shards hold 8 "
         "(shard-00000.tfrecord: 8); the manifest was edited or belongs to other shards.",
         f"{FILES}::test_a_manifest_whose_example_count_was_edited_is_refused"),
    Case("teacher cache", "a truncated manifest, one without `shards`, or `{}`",
         "…/manifest.json is not valid JSON … lacks ['shards']: it was edited or damaged. "
         "Rebuild it with cache_teacher_outputs(..., overwrite=True). … is not a kdistill "
         "teacher cache manifest.",
         f"{FILES}::test_a_damaged_manifest_is_named"),
    # ------------------------------------------------------------------ the command line
    Case("command line", "an output directory that cannot be written",
         "cannot write …: permission denied. Choose a directory you can write with --output, or "
         "fix its permissions.",
         f"{FILES}::test_an_unwritable_output_directory_is_named"),
    Case("command line", "a `teacher.cache_dir` that cannot be written (`kdistill demo`: "
         "`--cache-dir`)",
         "…permission denied. Choose a directory you can write with …--set "
         "teacher.cache_dir=DIR…--cache-dir",
         f"{FILES}::test_an_unwritable_teacher_cache_dir_is_named"),
    Case("command line", "`kdistill export --output` into a directory that cannot be written",
         "…permission denied. Choose a directory you can write with --output, or fix its "
         "permissions.",
         f"{FILES}::test_an_unwritable_export_directory_is_named"),
    Case("command line", "`--json` onto an existing file, or into a missing directory",
         "… exists; pass --overwrite to replace it. … no directory … (both before any work)",
         f"{FILES}::test_outputs_are_checked_before_the_work"),
    Case("command line", "`kdistill export` into an existing directory",
         "pass --overwrite … (the flag, not `overwrite=True`)",
         f"{FILES}::test_export_refusal_names_the_flag"),
    Case("command line", "a `--set` typo (`stages.taskk.epochs`)",
         "--set stages.taskk.epochs=3: stages.taskk: unknown key",
         "test_config.py::test_a_set_typo_is_blamed_on_the_flag_not_the_file"),
    Case("command line", "`jit_compile: true` under a 2-replica strategy on CPUs alone",
         "jit_compile: true with 2 replicas on CPUs alone: … Set jit_compile to auto or false … "
         "(before the run directory is written; TF's own error was about `AddN` of `bool`)",
         "test_runner.py::test_xla_under_a_cpu_strategy_is_refused_before_anything_runs"),
    Case("command line", "SIGTERM during a run",
         "…terminated (SIGTERM); run the same command again to resume from the last backup in …",
         f"{FILES}::test_sigterm_says_how_to_resume"),
    Case("command line", "an unfinished run resumed with only `latency_runs`, `export` or "
         "`targets` changed",
         "resumes (settings of the measurement, not of the training), recording the new values",
         f"{FILES}::test_changing_only_latency_runs_resumes_an_unfinished_run", result=True),
]


def _cell(text):
    return text.replace("|", "\\|")


def markdown(cases=CASES):
    """The table of docs/errors.md, from `cases`.

    Example:
    >>> print(markdown([Case("files", "a bad file", "it says so", "test_x.py::test_y")]))
    | where | the input | what kdistill says (… = elided) | test |
    |---|---|---|---|
    | files | a bad file | it says so | `test_x.py::test_y` |
    """
    rows = ["| where | the input | what kdistill says (… = elided) | test |", "|---|---|---|---|"]
    for case in cases:
        says = f"*the right result:* {case.says}" if case.result else case.says
        if case.open:
            says += f" **(open: needs {case.open}; its test is a strict xfail)**"
        rows.append(f"| {case.area} | {_cell(case.case)} | {_cell(says)} | `{case.test}` |")
    return "\n".join(rows)


def rewrite(text, cases=CASES):
    """`text` (docs/errors.md) with the table between `BEGIN` and `END` regenerated."""
    if BEGIN not in text or END not in text:
        raise ValueError(f"docs/errors.md lacks the markers {BEGIN!r} and {END!r}.")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n\n{markdown(cases)}\n\n{END}{tail}"


if __name__ == "__main__":
    if len(sys.argv) > 1:
        with open(sys.argv[1], encoding="utf-8") as f:
            updated = rewrite(f.read())
        with open(sys.argv[1], "w", encoding="utf-8") as f:
            f.write(updated)
    else:
        print(markdown())
