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
    "attention_kl",
    "attention_mse",
    "cosine_embedding_loss",
    "hard_cross_entropy",
    "hidden_mse",
    "kl_divergence",
    "masked_mean",
    "pkd_normalized_mse",
    "soft_cross_entropy",
    "value_relation_kl",
]

_EPSILON = 1e-12


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
        teacher_logits: float tensor `[batch, classes]` or `[batch, positions, classes]`
            (token-level models such as masked LMs).
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
    0.3653
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


def _pair_mask(mask, heads_axis=True):
    """`[batch, 1, q, k]` float mask from a `[batch, seq]` padding mask (1 where both count)."""
    mask = _float32(mask)
    pair = mask[:, :, None] * mask[:, None, :]
    return pair[:, None, :, :] if heads_axis else pair


def hidden_mse(teacher_hidden, student_hidden, mask=None):
    """Mean squared error between hidden states (or embeddings), per example, padding excluded.

    TinyBERT's `L_hidn = MSE(H_S W_h, H_T)` and `L_embd = MSE(E_S W_e, E_T)`: project the student's
    states to the teacher's width first (the objectives own `W`).

    Args:
        teacher_hidden: float tensor `[batch, seq, hidden]`.
        student_hidden: float tensor of the same shape (already projected).
        mask: optional `[batch, seq]` padding mask; padded tokens do not count.

    Returns:
        float32 tensor `[batch]`: mean over valid tokens of the mean squared difference over
        features.

    Example:
    >>> import numpy as np
    >>> t = np.ones((1, 3, 2)); s = np.zeros((1, 3, 2)); s[0, 2] = 100.0
    >>> hidden_mse(t, s, mask=np.array([[1, 1, 0]])).numpy()
    array([1.], dtype=float32)

    References:
        Jiao et al. TinyBERT: Distilling BERT for Natural Language Understanding. arXiv:1909.10351.
    """
    diff = ops.square(_float32(teacher_hidden) - _float32(student_hidden))
    return masked_mean(ops.mean(diff, axis=-1), mask)


def attention_mse(teacher_attention, student_attention, mask=None):
    """TinyBERT's attention loss: MSE between attention maps, padded queries and keys excluded.

    Entries where the query or the key is padding are zeroed in both maps before the difference
    (with `where`, so `-inf` or very negative masked scores never leak into the loss) and are not
    counted in the mean. Works on probabilities or on raw scores; heads must match in number.

    Args:
        teacher_attention: float tensor `[batch, heads, seq, seq]`.
        student_attention: float tensor of the same shape.
        mask: optional `[batch, seq]` padding mask.

    Returns:
        float32 tensor `[batch]`: mean over heads and valid (query, key) pairs.

    Example:
    >>> import numpy as np
    >>> t = np.zeros((1, 1, 2, 2)); s = np.zeros((1, 1, 2, 2)); s[..., 1] = -np.inf
    >>> attention_mse(t, s, mask=np.array([[1, 0]])).numpy()
    array([0.], dtype=float32)

    References:
        Jiao et al. TinyBERT: Distilling BERT for Natural Language Understanding. arXiv:1909.10351.
    """
    t, s = _float32(teacher_attention), _float32(student_attention)
    if mask is None:
        return ops.mean(ops.reshape(ops.square(t - s), (ops.shape(t)[0], -1)), axis=-1)
    pair = ops.broadcast_to(_pair_mask(mask), ops.shape(t)) > 0
    diff = ops.where(pair, t, 0.0) - ops.where(pair, s, 0.0)
    batch = ops.shape(t)[0]
    total = ops.sum(ops.reshape(ops.square(diff), (batch, -1)), axis=-1)
    count = ops.sum(ops.reshape(ops.cast(pair, "float32"), (batch, -1)), axis=-1)
    return total / ops.maximum(count, 1.0)


def cosine_embedding_loss(teacher_hidden, student_hidden, mask=None):
    """DistilBERT's cosine loss: `1 - cos(h_t, h_s)` per token, averaged over valid tokens.

    Args:
        teacher_hidden: float tensor `[batch, seq, hidden]`.
        student_hidden: float tensor of the same shape.
        mask: optional `[batch, seq]` padding mask.

    Returns:
        float32 tensor `[batch]`.

    Example:
    >>> import numpy as np
    >>> h = np.array([[[1.0, 0.0], [0.0, 1.0]]])
    >>> cosine_embedding_loss(h, 2 * h).numpy()
    array([0.], dtype=float32)

    References:
        Sanh et al. DistilBERT, a distilled version of BERT. arXiv:1910.01108.
    """
    t, s = _float32(teacher_hidden), _float32(student_hidden)
    t = t / ops.maximum(ops.norm(t, axis=-1, keepdims=True), _EPSILON)
    s = s / ops.maximum(ops.norm(s, axis=-1, keepdims=True), _EPSILON)
    return masked_mean(1.0 - ops.sum(t * s, axis=-1), mask)


def _row_kl(p_t, p_s, mask):
    """KL over the last axis of probability rows `[batch, heads, q, k]`; mean over q and heads."""
    key_ok = None if mask is None else (_float32(mask)[:, None, None, :] > 0)
    log_t = ops.log(ops.maximum(p_t, _EPSILON))
    log_s = ops.log(ops.maximum(p_s, _EPSILON))
    terms = p_t * (log_t - log_s)
    if key_ok is not None:
        terms = ops.where(ops.broadcast_to(key_ok, ops.shape(terms)), terms, 0.0)
    kl = ops.sum(terms, axis=-1)  # [batch, heads, q]
    heads = ops.shape(kl)[1]
    kl = ops.reshape(ops.transpose(kl, (0, 2, 1)), (ops.shape(kl)[0], -1, heads))  # [b, q, h]
    return masked_mean(ops.mean(kl, axis=-1), mask)


def attention_kl(teacher_attention, student_attention, mask=None):
    """MiniLM's self-attention distribution loss: `KL(A_t ‖ A_s)` per head and query.

    Args:
        teacher_attention: attention probabilities `[batch, heads, seq, seq]`.
        student_attention: attention probabilities with the same number of heads.
        mask: optional `[batch, seq]` padding mask; padded queries and keys do not count.

    Returns:
        float32 tensor `[batch]`: mean over heads and valid queries of the KL over keys.

    Example:
    >>> import numpy as np
    >>> a = np.full((1, 2, 3, 3), 1 / 3)
    >>> attention_kl(a, a).numpy()
    array([0.], dtype=float32)

    References:
        Wang et al. MiniLM: Deep Self-Attention Distillation for Task-Agnostic Compression of
        Pre-Trained Transformers. arXiv:2002.10957.
    """
    return _row_kl(_float32(teacher_attention), _float32(student_attention), mask)


def _relation(vectors, relation_heads, mask):
    """`softmax(V_r V_rᵀ / sqrt(d_r))` over keys for `relation_heads` heads, padded keys masked."""
    v = _float32(vectors)  # [batch, seq, heads, head_dim] or [batch, seq, hidden]
    batch, seq = ops.shape(v)[0], ops.shape(v)[1]
    width = 1
    for d in v.shape[2:]:
        width *= d
    if width % relation_heads:
        raise ValueError(
            f"relation_heads={relation_heads} must divide the value width {width}."
        )
    head_dim = width // relation_heads
    v = ops.reshape(v, (batch, seq, relation_heads, head_dim))
    v = ops.transpose(v, (0, 2, 1, 3))  # [batch, r, seq, d]
    scores = ops.matmul(v, ops.transpose(v, (0, 1, 3, 2))) / (head_dim ** 0.5)
    if mask is not None:
        key_ok = _float32(mask)[:, None, None, :] > 0
        scores = ops.where(ops.broadcast_to(key_ok, ops.shape(scores)), scores, -1e9)
    return ops.softmax(scores, axis=-1)


def value_relation_kl(teacher_values, student_values, relation_heads=None, mask=None):
    """MiniLM's value-relation loss: `KL(VR_t ‖ VR_s)`, `VR = softmax(V Vᵀ / sqrt(d))`.

    Values are regrouped into `relation_heads` heads (MiniLMv2), so teacher and student may have
    different numbers of attention heads and different widths.

    Args:
        teacher_values: value vectors `[batch, seq, heads, head_dim]` (or `[batch, seq, width]`).
        student_values: value vectors of the student (any head count and width).
        relation_heads: int. Heads the relations are computed in; must divide both widths.
            Defaults to the teacher's number of heads.
        mask: optional `[batch, seq]` padding mask.

    Returns:
        float32 tensor `[batch]`.

    Example:
    >>> import numpy as np
    >>> v = np.random.default_rng(0).normal(size=(1, 4, 2, 3))
    >>> float(value_relation_kl(v, v)[0]) < 1e-6
    True

    References:
        Wang et al. MiniLM. arXiv:2002.10957; MiniLMv2. arXiv:2012.15828.
    """
    if relation_heads is None:
        relation_heads = teacher_values.shape[2] if len(teacher_values.shape) == 4 else 1
    r_t = _relation(teacher_values, relation_heads, mask)
    r_s = _relation(student_values, relation_heads, mask)
    return _row_kl(r_t, r_s, mask)


def pkd_normalized_mse(teacher_hidden, student_hidden, position=0):
    """Patient-KD's loss: squared distance of L2-normalised `[CLS]` states, per example.

    Args:
        teacher_hidden: float tensor `[batch, seq, hidden]`.
        student_hidden: float tensor `[batch, seq, hidden]` (same width; project first otherwise).
        position: int. Token whose state is compared (0: `[CLS]`).

    Returns:
        float32 tensor `[batch]`: `‖h_t/‖h_t‖ - h_s/‖h_s‖‖²`.

    Example:
    >>> import numpy as np
    >>> h = np.array([[[3.0, 4.0]]])
    >>> pkd_normalized_mse(h, 2 * h).numpy()
    array([0.], dtype=float32)

    References:
        Sun et al. Patient Knowledge Distillation for BERT Model Compression. arXiv:1908.09355.
    """
    t = _float32(teacher_hidden)[:, position, :]
    s = _float32(student_hidden)[:, position, :]
    t = t / ops.maximum(ops.norm(t, axis=-1, keepdims=True), _EPSILON)
    s = s / ops.maximum(ops.norm(s, axis=-1, keepdims=True), _EPSILON)
    return ops.sum(ops.square(t - s), axis=-1)
