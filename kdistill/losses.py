"""Distillation losses as pure functions on tensors.

Every function takes the teacher's tensor first and the student's second, returns one value **per
example** (shape `[batch]`), and leaves the reduction over the batch to the caller (the `Distiller`
sums per-example values and divides by the *global* batch size, which is what makes it exact under
`tf.distribute`). Masks are explicit: a `mask` of shape `[batch, positions]` marks the positions
that count (1) and the padding that does not (0); a per-example value is then the mean over the
positions that count.

All computations run in float32 whatever the inputs' dtype, so mixed-precision models distil with
stable soft targets.
"""

from keras import ops

__all__ = [
    "hard_cross_entropy",
    "kl_divergence",
    "masked_mean",
    "soft_cross_entropy",
]


def _float32(x):
    return ops.cast(ops.convert_to_tensor(x), "float32")


def masked_mean(values, mask=None):
    """Per-example mean of `values` over its positions, counting only `mask == 1`.

    Args:
        values: tensor `[batch]` or `[batch, positions, ...]` (trailing axes are averaged too).
        mask: optional tensor `[batch, positions]` of 0/1 (bool or numeric). `None` means every
            position counts.

    Returns:
        A float32 tensor `[batch]`. An example with no position counting gets 0.

    Example:
    >>> import numpy as np
    >>> masked_mean(np.array([[1.0, 3.0, 100.0]]), np.array([[1, 1, 0]])).numpy()
    array([2.], dtype=float32)
    """
    values = _float32(values)
    if len(values.shape) == 1:
        return values if mask is None else values * _float32(mask)
    if mask is None:
        return ops.mean(ops.reshape(values, (ops.shape(values)[0], -1)), axis=-1)
    mask = _float32(mask)
    while len(mask.shape) < len(values.shape):
        mask = ops.expand_dims(mask, -1)
    mask = ops.broadcast_to(mask, ops.shape(values))
    batch = ops.shape(values)[0]
    total = ops.sum(ops.reshape(values * mask, (batch, -1)), axis=-1)
    count = ops.sum(ops.reshape(mask, (batch, -1)), axis=-1)
    return total / ops.maximum(count, 1.0)


def kl_divergence(teacher_logits, student_logits, temperature=1.0, mask=None):
    """Hinton's soft-target loss: `T² · KL(softmax(t / T) ‖ softmax(s / T))` per example.

    The `T²` factor keeps the gradient scale of the soft term independent of the temperature, so the
    mixing weight `alpha` means the same thing at every `T` (Hinton et al., 2015).

    Args:
        teacher_logits: float tensor `[batch, classes]` or `[batch, positions, classes]` (token-level
            models such as masked LMs).
        student_logits: float tensor of the same shape.
        temperature: float or scalar tensor > 0.
        mask: optional `[batch, positions]` mask for token-level logits; padding does not count.

    Returns:
        float32 tensor `[batch]`.

    Example:
    >>> import numpy as np
    >>> t = np.array([[2.0, 0.0, -1.0]]); s = np.array([[0.5, 0.2, 0.1]])
    >>> float(kl_divergence(t, s, temperature=2.0)[0]) > 0
    True

    References:
        Hinton, Vinyals, Dean. Distilling the Knowledge in a Neural Network. arXiv:1503.02531.
    """
    temperature = _float32(temperature)
    t = _float32(teacher_logits) / temperature
    s = _float32(student_logits) / temperature
    log_p_t = ops.log_softmax(t, axis=-1)
    log_p_s = ops.log_softmax(s, axis=-1)
    kl = ops.sum(ops.exp(log_p_t) * (log_p_t - log_p_s), axis=-1)
    return masked_mean(kl, mask) * ops.square(temperature)


def soft_cross_entropy(teacher_logits, student_logits, temperature=1.0, mask=None):
    """`T² · H(softmax(t / T), softmax(s / T))` per example (KL plus the teacher's entropy).

    Same gradient as `kl_divergence` with respect to the student; its value is not zero when the
    student matches the teacher. Use it where a cross-entropy is expected (DistilBERT's `L_ce`).

    Args:
        teacher_logits: float tensor `[batch, classes]` or `[batch, positions, classes]`.
        student_logits: float tensor of the same shape.
        temperature: float or scalar tensor > 0.
        mask: optional `[batch, positions]` mask for token-level logits.

    Returns:
        float32 tensor `[batch]`.

    Example:
    >>> import numpy as np
    >>> t = np.array([[2.0, 0.0]]); s = np.array([[2.0, 0.0]])
    >>> round(float(soft_cross_entropy(t, s)[0]), 4)   # the teacher's entropy
    0.1269
    """
    temperature = _float32(temperature)
    p_t = ops.softmax(_float32(teacher_logits) / temperature, axis=-1)
    log_p_s = ops.log_softmax(_float32(student_logits) / temperature, axis=-1)
    ce = -ops.sum(p_t * log_p_s, axis=-1)
    return masked_mean(ce, mask) * ops.square(temperature)


def hard_cross_entropy(labels, student_logits, mask=None):
    """Cross-entropy of the student's logits against the ground-truth labels, per example.

    Args:
        labels: integer class ids `[batch]` (or `[batch, positions]` for token-level logits), or
            one-hot / probability targets with the logits' shape.
        student_logits: float tensor `[batch, classes]` or `[batch, positions, classes]`.
        mask: optional `[batch, positions]` mask for token-level logits.

    Returns:
        float32 tensor `[batch]`.

    Example:
    >>> import numpy as np
    >>> round(float(hard_cross_entropy(np.array([0]), np.array([[0.0, 0.0]]))[0]), 4)
    0.6931
    """
    logits = _float32(student_logits)
    labels = ops.convert_to_tensor(labels)
    log_p = ops.log_softmax(logits, axis=-1)
    if len(labels.shape) == len(logits.shape) and labels.shape[-1] == logits.shape[-1] and (
        labels.shape[-1] != 1
    ):
        ce = -ops.sum(_float32(labels) * log_p, axis=-1)
    else:
        if len(labels.shape) == len(logits.shape):  # [batch, 1] style labels
            labels = ops.squeeze(labels, axis=-1)
        labels = ops.cast(labels, "int32")
        one_hot = ops.one_hot(labels, ops.shape(logits)[-1], dtype="float32")
        ce = -ops.sum(one_hot * log_p, axis=-1)
    return masked_mean(ce, mask)
