"""Inputs per model: a teacher and a student that each read their own tokens of the same text.

With `Distiller(teacher, student, paired_inputs=True)` every batch's inputs are a dict
`{"student": student_inputs, "teacher": teacher_inputs}`: the same examples, tokenised by each
model's own preprocessor (another vocabulary, another tokenizer, another sequence length).
Logits-level objectives compare the two models per example, so they need nothing more. Objectives
that compare tokens or layers (hidden states, attention, embeddings, token-level logits) need both
models to read the same tokens, and are refused. `kdistill.data.paired` builds such datasets from
raw texts and two preprocessors, and caches the teacher's outputs for them.
"""

from kdistill.taps import LOGITS

STUDENT = "student"
TEACHER = "teacher"

__all__ = ["STUDENT", "TEACHER", "check_paired_objectives", "is_paired", "split_inputs"]


def is_paired(x):
    """True for `{"student": ..., "teacher": ...}` inputs (exactly those two keys).

    Example:
    >>> is_paired({"student": {"token_ids": 1}, "teacher": {"token_ids": 2}})
    True
    >>> is_paired({"token_ids": 1})
    False
    """
    return isinstance(x, dict) and set(x) == {STUDENT, TEACHER}


def split_inputs(x, paired):
    """`(student inputs, teacher inputs)` of a batch's inputs.

    Args:
        x: the batch's inputs: `{"student": ..., "teacher": ...}` when `paired`, else the
            inputs both models read.
        paired: bool. The Distiller's `paired_inputs`.

    Raises:
        ValueError: `paired` and `x` is not such a dict, or not `paired` and it is one.

    Example:
    >>> split_inputs({"student": "s", "teacher": "t"}, paired=True)
    ('s', 't')
    >>> split_inputs("x", paired=False)
    ('x', 'x')
    """
    if paired:
        if not is_paired(x):
            keys = sorted(x) if isinstance(x, dict) else type(x).__name__
            raise ValueError(
                f"With paired_inputs=True every batch's inputs are a dict {{'student': ..., "
                f"'teacher': ...}} (each model's own tokens of the same examples); got {keys}. "
                "kdistill.data.paired.paired_dataset builds such batches from texts."
            )
        return x[STUDENT], x[TEACHER]
    if is_paired(x):
        raise ValueError(
            "The batch's inputs are {'student': ..., 'teacher': ...}: one set of inputs per "
            "model. Build the Distiller with paired_inputs=True to give each model its own."
        )
    return x, x


def check_paired_objectives(objectives, student_logits_shape):
    """Refuses what needs both models to read the same tokens, when each has its own inputs.

    Args:
        objectives: the Distiller's objectives of weight > 0.
        student_logits_shape: tuple or None. Static shape of the student's logits.

    Raises:
        ValueError: an objective reads taps other than the logits (hidden states, attention,
            embeddings), or the logits are per token (rank 3: a masked LM).

    Example:
    >>> from kdistill.objectives import HiddenStateKD, LogitsKD
    >>> check_paired_objectives([LogitsKD()], (None, 2))
    >>> check_paired_objectives([HiddenStateKD()], (None, 2))
    Traceback (most recent call last):
    ...
    ValueError: With paired_inputs=True (a teacher and a student with their own tokens) ...
    """
    aligned = sorted({type(o).__name__ for o in objectives
                      if set(o.teacher_taps) - {LOGITS} or set(o.student_taps) - {LOGITS}})
    if aligned:
        raise ValueError(
            f"With paired_inputs=True (a teacher and a student with their own tokens) the "
            f"objectives {aligned} cannot be computed: they compare the models token by token "
            "or layer by layer (hidden states, attention, embeddings), which needs both to read "
            "the same tokens. Use logits objectives (LogitsKD, MultiTeacherKD), or give both "
            "models the same tokenizer."
        )
    if student_logits_shape is not None and len(student_logits_shape) > 2:
        raise ValueError(
            f"With paired_inputs=True the logits must be one row per example, got the student's "
            f"shape {tuple(student_logits_shape)}: token-level logits (a masked LM) need both "
            "models to read the same tokens."
        )
