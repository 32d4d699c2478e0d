"""Each loss against a NumPy reference, with padding masks and T != 1."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from kdistill import losses


def np_log_softmax(x, axis=-1):
    x = x - x.max(axis=axis, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=axis, keepdims=True))


def np_kl(t, s, temperature):
    lt, ls = np_log_softmax(t / temperature), np_log_softmax(s / temperature)
    return (np.exp(lt) * (lt - ls)).sum(-1) * temperature**2


def np_soft_ce(t, s, temperature):
    pt, ls = np.exp(np_log_softmax(t / temperature)), np_log_softmax(s / temperature)
    return -(pt * ls).sum(-1) * temperature**2


def np_masked_mean(values, mask):
    return (values * mask).sum(-1) / np.maximum(mask.sum(-1), 1)


logits = hnp.arrays(np.float64, (3, 5), elements=st.floats(-20, 20))


@settings(max_examples=25, deadline=None)
@given(t=logits, s=logits, temperature=st.sampled_from([0.5, 1.0, 2.0, 4.0]))
def test_kl_divergence_matches_numpy(t, s, temperature):
    got = losses.kl_divergence(t, s, temperature).numpy()
    np.testing.assert_allclose(got, np_kl(t, s, temperature), rtol=1e-4, atol=1e-4)


@settings(max_examples=25, deadline=None)
@given(t=logits, s=logits, temperature=st.sampled_from([1.0, 3.0]))
def test_soft_cross_entropy_matches_numpy(t, s, temperature):
    got = losses.soft_cross_entropy(t, s, temperature).numpy()
    np.testing.assert_allclose(got, np_soft_ce(t, s, temperature), rtol=1e-4, atol=1e-4)


def test_kl_is_zero_for_identical_logits_and_scales_with_t_squared():
    rng = np.random.default_rng(0)
    t = rng.normal(size=(4, 6))
    np.testing.assert_allclose(losses.kl_divergence(t, t, 3.0).numpy(), 0.0, atol=1e-6)
    s = rng.normal(size=(4, 6))
    raw = np_kl(t, s, 2.0) / 4.0
    np.testing.assert_allclose(losses.kl_divergence(t, s, 2.0).numpy(), 4.0 * raw, rtol=1e-5)


def test_hard_cross_entropy_sparse_onehot_and_column_labels_agree():
    rng = np.random.default_rng(1)
    s = rng.normal(size=(5, 4))
    y = np.array([0, 3, 1, 2, 2])
    expected = -np_log_softmax(s)[np.arange(5), y]
    np.testing.assert_allclose(losses.hard_cross_entropy(y, s).numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(losses.hard_cross_entropy(np.eye(4)[y], s).numpy(), expected,
                               rtol=1e-5)
    np.testing.assert_allclose(losses.hard_cross_entropy(y[:, None], s).numpy(), expected,
                               rtol=1e-5)


def test_token_level_losses_ignore_padding():
    rng = np.random.default_rng(2)
    t, s = rng.normal(size=(2, 6, 7)), rng.normal(size=(2, 6, 7))
    mask = np.array([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0]], dtype=np.float64)
    per_token = np_kl(t, s, 2.0)
    np.testing.assert_allclose(
        losses.kl_divergence(t, s, 2.0, mask=mask).numpy(), np_masked_mean(per_token, mask),
        rtol=1e-5,
    )
    # Changing logits at padded positions changes nothing.
    t2, s2 = t.copy(), s.copy()
    t2[mask == 0] = 1e4
    s2[mask == 0] = -1e4
    np.testing.assert_allclose(
        losses.kl_divergence(t2, s2, 2.0, mask=mask).numpy(),
        losses.kl_divergence(t, s, 2.0, mask=mask).numpy(), rtol=1e-6,
    )
    y = rng.integers(0, 7, size=(2, 6))
    ce_tokens = -np.take_along_axis(np_log_softmax(s), y[..., None], -1)[..., 0]
    np.testing.assert_allclose(losses.hard_cross_entropy(y, s, mask=mask).numpy(),
                               np_masked_mean(ce_tokens, mask), rtol=1e-5)
    np.testing.assert_allclose(losses.soft_cross_entropy(t, s, 1.0, mask=mask).numpy(),
                               np_masked_mean(np_soft_ce(t, s, 1.0), mask), rtol=1e-5)


def test_masked_mean_of_fully_masked_example_is_zero():
    values = np.ones((2, 3))
    mask = np.array([[0, 0, 0], [1, 0, 1]])
    np.testing.assert_allclose(losses.masked_mean(values, mask).numpy(), [0.0, 1.0])


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_losses_compute_in_float32(dtype):
    import keras

    t = keras.ops.cast(np.array([[30.0, -30.0]]), dtype)
    s = keras.ops.cast(np.array([[-30.0, 30.0]]), dtype)
    value = losses.kl_divergence(t, s, 1.0)
    assert value.dtype == "float32"
    assert np.isfinite(value.numpy()).all()


# ------------------------------------------------------------------ intermediate-layer losses

def _mask(lengths, seq):
    return (np.arange(seq)[None, :] < np.array(lengths)[:, None]).astype(np.float64)


def test_hidden_mse_matches_numpy_and_ignores_padding():
    rng = np.random.default_rng(3)
    t, s = rng.normal(size=(2, 5, 4)), rng.normal(size=(2, 5, 4))
    mask = _mask([3, 5], 5)
    expected = np_masked_mean(((t - s) ** 2).mean(-1), mask)
    np.testing.assert_allclose(losses.hidden_mse(t, s, mask).numpy(), expected, rtol=1e-5)
    s2 = s.copy()
    s2[0, 3:] = 1e3  # padding of example 0
    np.testing.assert_allclose(losses.hidden_mse(t, s2, mask).numpy(), expected, rtol=1e-5)


def np_attention_mse(t, s, mask):
    pair = mask[:, None, :, None] * mask[:, None, None, :]
    pair = np.broadcast_to(pair, t.shape)
    diff = (np.where(pair > 0, t, 0) - np.where(pair > 0, s, 0)) ** 2
    return diff.reshape(len(t), -1).sum(-1) / pair.reshape(len(t), -1).sum(-1)


def test_attention_mse_matches_numpy_and_masked_scores_do_not_leak():
    rng = np.random.default_rng(4)
    t, s = rng.random((2, 3, 6, 6)), rng.random((2, 3, 6, 6))
    mask = _mask([4, 6], 6)
    expected = np_attention_mse(t, s, mask)
    np.testing.assert_allclose(losses.attention_mse(t, s, mask).numpy(), expected, rtol=1e-5)
    t2, s2 = t.copy(), s.copy()
    t2[0, :, :, 4:] = -np.inf  # a model's masked scores
    s2[0, :, 4:, :] = -1e9
    np.testing.assert_allclose(losses.attention_mse(t2, s2, mask).numpy(), expected, rtol=1e-5)


def test_cosine_embedding_loss_matches_numpy():
    rng = np.random.default_rng(5)
    t, s = rng.normal(size=(2, 4, 3)), rng.normal(size=(2, 4, 3))
    mask = _mask([2, 4], 4)
    cos = (t * s).sum(-1) / np.linalg.norm(t, axis=-1) / np.linalg.norm(s, axis=-1)
    np.testing.assert_allclose(losses.cosine_embedding_loss(t, s, mask).numpy(),
                               np_masked_mean(1 - cos, mask), rtol=1e-5)


def np_softmax(x, axis=-1):
    return np.exp(np_log_softmax(x, axis))


def np_row_kl(p, q, mask):
    key = np.broadcast_to(mask[:, None, None, :] > 0, p.shape)
    terms = np.where(key, p * (np.log(np.maximum(p, 1e-12)) - np.log(np.maximum(q, 1e-12))), 0)
    kl = terms.sum(-1).mean(1)  # [batch, q]
    return np_masked_mean(kl, mask)


def test_attention_kl_matches_numpy():
    rng = np.random.default_rng(6)
    mask = _mask([3, 5], 5)
    logits_t, logits_s = rng.normal(size=(2, 2, 5, 5)), rng.normal(size=(2, 2, 5, 5))
    neg = np.where(mask[:, None, None, :] > 0, 0.0, -1e9)
    p, q = np_softmax(logits_t + neg), np_softmax(logits_s + neg)
    np.testing.assert_allclose(losses.attention_kl(p, q, mask).numpy(), np_row_kl(p, q, mask),
                               rtol=1e-4, atol=1e-6)


def np_relation(v, heads, mask):
    b, n = v.shape[:2]
    v = v.reshape(b, n, heads, -1).transpose(0, 2, 1, 3)
    scores = v @ v.transpose(0, 1, 3, 2) / np.sqrt(v.shape[-1])
    scores = np.where(mask[:, None, None, :] > 0, scores, -1e9)
    return np_softmax(scores)


def test_value_relation_kl_matches_numpy_with_different_head_counts():
    rng = np.random.default_rng(7)
    mask = _mask([4, 6], 6)
    vt = rng.normal(size=(2, 6, 4, 3))  # 4 heads x 3 = width 12
    vs = rng.normal(size=(2, 6, 2, 4))  # 2 heads x 4 = width 8
    expected = np_row_kl(np_relation(vt, 4, mask), np_relation(vs, 4, mask), mask)
    got = losses.value_relation_kl(vt, vs, relation_heads=4, mask=mask).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="relation_heads=5 must divide"):
        losses.value_relation_kl(vt, vs, relation_heads=5)


def test_pkd_normalized_mse_matches_numpy():
    rng = np.random.default_rng(8)
    t, s = rng.normal(size=(3, 4, 5)), rng.normal(size=(3, 4, 5))
    tn = t[:, 0] / np.linalg.norm(t[:, 0], axis=-1, keepdims=True)
    sn = s[:, 0] / np.linalg.norm(s[:, 0], axis=-1, keepdims=True)
    np.testing.assert_allclose(losses.pkd_normalized_mse(t, s).numpy(),
                               ((tn - sn) ** 2).sum(-1), rtol=1e-5)
