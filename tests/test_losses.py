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
