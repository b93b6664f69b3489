"""The native CPU kernels against MLX's own operations and float64 references."""

import math

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from mlxbatchwhisper import kernels

pytestmark = pytest.mark.skipif(not kernels.native_available(), reason="native CPU kernels not built")


def f64_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_softmax_in_place(threads):
    x = mx.random.normal((2, 5, 300, 1500), key=mx.random.key(0)) * 4
    mx.eval(x)
    ref = f64_softmax(np.array(x))
    kernels._kernels.softmax_(x, 1500, threads)
    assert np.abs(np.array(x) - ref).max() < 2e-6


def test_gelu_in_place_is_exact():
    x = mx.linspace(-12, 12, 300001)
    mx.eval(x)
    exact = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in np.array(x).astype(np.float64)])
    kernels._kernels.gelu_(x, 2)
    assert np.abs(np.array(x) - exact).max() < 2e-6


def test_one_query_attention_matches_sdpa():
    key = mx.random.key(1)
    q, k, v = (
        mx.random.normal(s, key=kk)
        for s, kk in zip([(3, 6, 1, 64), (3, 6, 1500, 64), (3, 6, 1500, 64)], mx.random.split(key, 3))
    )
    ref = mx.fast.scaled_dot_product_attention(q, k, v, scale=0.125)
    assert np.abs(np.array(kernels.cross_attention(q, k, v)) - np.array(ref)).max() < 1e-5


@pytest.mark.parametrize("group, tokens", [(5, 1), (4, 3)])
def test_grouped_cross_attention_matches_repeated_keys(group, tokens):
    """Rows sharing keys/values (beams) attend together; same as each row with its own copy."""
    key = mx.random.key(5)
    kq, kk, kv = mx.random.split(key, 3)
    q = mx.random.normal((3 * group, 6, tokens, 64), key=kq)
    k, v = mx.random.normal((3, 6, 1500, 64), key=kk), mx.random.normal((3, 6, 1500, 64), key=kv)
    repeat = mx.array(np.repeat(np.arange(3), group).astype(np.int32))
    ref = mx.fast.scaled_dot_product_attention(q, k[repeat], v[repeat], scale=0.125)
    assert np.abs(np.array(kernels.cross_attention(q, k, v)) - np.array(ref)).max() < 1e-5


def test_top_logprobs_are_the_largest_log_probabilities():
    key = mx.random.key(6)
    x = mx.random.normal((7, 51864), key=key) * 4
    x = mx.where(mx.random.uniform(shape=x.shape, key=key) < 0.3, -mx.inf, x)
    x = mx.concatenate([x, mx.where(mx.arange(51864) < 3, 0.5, -mx.inf)[None]])  # 3 allowed tokens
    idx, vals = kernels.top_logprobs(x, 6)
    logprobs = np.array(x - mx.logsumexp(x, axis=-1, keepdims=True))
    best = -np.sort(-logprobs, axis=1)[:, :6]
    assert np.allclose(-np.sort(-vals, axis=1), best, atol=1e-4, rtol=0)
    assert np.allclose(np.take_along_axis(logprobs, idx, 1)[:-1], vals[:-1], atol=1e-4, rtol=0)
    assert sorted(idx[-1][:3]) == [0, 1, 2] and np.isneginf(vals[-1][3:]).all()


def test_encoder_attention_and_gelu_match_mlx():
    key = mx.random.key(2)
    q, k, v = (mx.random.normal((2, 6, 200, 64), key=kk) for kk in mx.random.split(key, 3))
    ref = mx.fast.scaled_dot_product_attention(q, k, v, scale=0.125)
    assert np.abs(np.array(kernels.attention(q, k, v)) - np.array(ref)).max() < 1e-5
    x = mx.random.normal((2, 100, 256), key=key) * 3
    assert np.abs(np.array(kernels.gelu(x * 1)) - np.array(nn.gelu(x))).max() < 1e-5


def test_short_or_half_precision_inputs_use_mlx():
    x = mx.random.normal((1, 8, 32))
    assert not kernels._native(x, x.shape[-2])
    assert not kernels._native(x.astype(mx.float16), 1500)


def test_wrong_buffers_are_refused():
    with pytest.raises(TypeError, match="'f' buffer"):
        kernels._kernels.gelu_(mx.zeros((4,), mx.float16))
    with pytest.raises(ValueError, match="divide"):
        kernels._kernels.softmax_(mx.zeros((10,)), 3)
    with pytest.raises(ValueError, match="units"):
        kernels._kernels.attend_(mx.zeros((2, 64)), mx.zeros((2, 10, 64)), mx.zeros((2, 11, 64)), 10, 64, 1, 0.1)


def test_logsumexp_rows_match_mlx_including_masked_rows():
    x = mx.random.normal((5, 51864), key=mx.random.key(3)) * 6
    x = mx.where(mx.random.uniform(shape=x.shape, key=mx.random.key(4)) < 0.2, -mx.inf, x)
    x = mx.concatenate([x, mx.full((1, 51864), -mx.inf)])
    ours, ref = np.array(kernels.logsumexp(x)), np.array(mx.logsumexp(x, axis=-1))
    assert np.isneginf(ours[-1]) and np.isneginf(ref[-1])
    assert np.abs(ours[:-1] - ref[:-1]).max() < 1e-5 * np.abs(ref[:-1]).max()
