"""The native CPU kernels against MLX's own operations and float64 references, and how they sit in MLX's graph."""

import json
import math
import os
from types import SimpleNamespace

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from mlxbatchwhisper import kernels, layers

pytestmark = pytest.mark.skipif(not kernels.native_available(), reason=f"native CPU kernels: {kernels.NATIVE_STATUS}")
K = kernels._kernels


@pytest.fixture
def threads():
    """Sets the kernels' thread count for a test and restores it."""
    yield K.set_threads
    K.set_threads(kernels.THREADS)


def at_thread_counts(threads, fn) -> np.ndarray:
    """fn()'s result with the kernels on 1, 2 and 5 threads: checked to be the same bits, returned."""
    outs = []
    for n in (1, 2, 5):
        threads(n)
        outs.append(np.array(fn()))
    assert all(np.array_equal(outs[0], o) for o in outs[1:])
    return outs[0]


def f64_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_softmax_matches_float64(threads, n):
    threads(n)
    x = mx.random.normal((2, 5, 300, 1500), key=mx.random.key(0)) * 4
    assert np.abs(np.array(K.softmax(x)) - f64_softmax(np.array(x))).max() < 2e-6


def test_gelu_is_exact(threads):
    threads(2)
    x = mx.linspace(-12, 12, 300001)
    exact = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in np.array(x).astype(np.float64)])
    assert np.abs(np.array(K.gelu(x)) - exact).max() < 2e-6


def test_layer_norm_matches_float64_and_each_row_alone(threads):
    keys = mx.random.split(mx.random.key(3), 3)
    x = mx.random.normal((4, 37, 384), key=keys[0]) * 3 + 1
    w, b = mx.random.normal((384,), key=keys[1]), mx.random.normal((384,), key=keys[2])
    out = at_thread_counts(threads, lambda: K.layer_norm(x, w, b, 1e-5))
    assert np.array_equal(np.array(K.layer_norm(x[2:3, 5:6], w, b, 1e-5))[0, 0], out[2, 5])
    x64 = np.array(x).astype(np.float64)
    ref = (x64 - x64.mean(-1, keepdims=True)) / np.sqrt(x64.var(-1, keepdims=True) + 1e-5) * np.array(w) + np.array(b)
    mlx_error = np.abs(np.array(mx.fast.layer_norm(x, w, b, 1e-5)) - ref).max()
    assert np.abs(out - ref).max() <= 2 * mlx_error + 1e-6


def test_layer_norm_layers_take_the_kernel_for_float32_only():
    layer = layers.LayerNorm(64)
    layer.update({"weight": mx.random.normal((64,)), "bias": mx.random.normal((64,))})
    x = mx.random.normal((2, 3, 64))
    assert mx.array_equal(layer(x), K.layer_norm(x, layer.weight, layer.bias, layer.eps)).item()
    half = layers.LayerNorm(64)
    half.set_dtype(mx.float16)
    assert half(x.astype(mx.float16)).dtype == mx.float16  # MLX's
    assert np.abs(np.array(layer(x)) - np.array(nn.LayerNorm.__call__(layer, x))).max() < 1e-5


def test_kernels_leave_their_inputs_and_views_of_them_unchanged():
    """A reshape shares its source's buffer: a kernel given one must not write through it."""
    key = mx.random.key(7)
    a = mx.random.normal((4, 96, 1536), key=key)
    q, k, v = (
        mx.random.normal(s, key=kk) for s, kk in zip([(2, 6, 3, 64)] + [(2, 6, 1500, 64)] * 2, mx.random.split(key, 3))
    )
    mx.eval(a, q, k, v)
    before = [np.array(t) for t in (a, q, k, v)]
    outs = [
        kernels.gelu(a.reshape(2, 192, 1536)),
        K.softmax(a.reshape(4 * 96, 1536)),
        K.logsumexp(a.reshape(-1, 1536)),
        *K.topk(a.reshape(-1, 1536), 5),
        kernels.cross_attention(q, k, v),
        kernels.attention(k[:, :, :200], k[:, :, :200], v[:, :, :200]),
    ]
    mx.eval(outs)
    for t, b in zip((a, q, k, v), before):
        assert np.array_equal(np.array(t), b)
    assert not np.array_equal(np.array(outs[0]).reshape(a.shape), before[0])  # the kernel did run


def test_kernel_graph_is_lazy_and_traceable():
    """The kernels add nodes to MLX's graph and evaluate nothing: mx.compile refuses any evaluation
    while it traces, so a traced decoder-step-shaped graph (cross-attention, GELU, log-sum-exp)
    proves none happens in the middle."""

    def step(x, q, k, v, w):
        h = kernels.gelu(x @ w)
        o = kernels.cross_attention(q, k, v)
        logits = h.reshape(h.shape[0], -1)
        return o, logits - kernels.logsumexp(logits)[:, None]

    key = mx.random.key(8)
    ks = mx.random.split(key, 5)
    x = mx.random.normal((2, 64, 384), key=ks[0])
    q = mx.random.normal((2, 6, 1, 64), key=ks[1])
    k, v = (mx.random.normal((2, 6, 1500, 64), key=kk) for kk in ks[2:4])
    w = mx.random.normal((384, 1536), key=ks[4]) * 0.05
    mx.eval(x, q, k, v, w)
    eager, traced = step(x, q, k, v, w), mx.compile(step)(x, q, k, v, w)
    for e, t in zip(eager, traced):
        assert np.abs(np.array(e) - np.array(t)).max() < 1e-5
    old_eval = mx.eval
    calls = []
    try:
        mx.eval = lambda *a, **kw: calls.append(a) or old_eval(*a, **kw)
        outs = step(x, q, k, v, w)
    finally:
        mx.eval = old_eval
    assert calls == []
    mx.eval(outs)


def test_worker_threads_are_reused(threads):
    threads(2)
    x = mx.random.normal((64, 4096))
    mx.eval(K.softmax(x))  # starts the pool
    count = len(os.listdir("/proc/self/task"))
    for _ in range(20):
        mx.eval(K.softmax(x), K.gelu(x))
    assert len(os.listdir("/proc/self/task")) == count


def test_one_query_attention_matches_sdpa():
    key = mx.random.key(1)
    q, k, v = (
        mx.random.normal(s, key=kk)
        for s, kk in zip([(3, 6, 1, 64), (3, 6, 1500, 64), (3, 6, 1500, 64)], mx.random.split(key, 3))
    )
    ref = mx.fast.scaled_dot_product_attention(q, k, v, scale=0.125)
    assert np.abs(np.array(kernels.cross_attention(q, k, v)) - np.array(ref)).max() < 1e-5


@pytest.mark.parametrize(
    "queries, length, dim", [(1, 1500, 64), (5, 1500, 64), (16, 1500, 64), (3, 37, 64), (2, 100, 48)]
)
def test_few_query_attention_matches_float64_and_is_the_same_for_each_head_alone(threads, queries, length, dim):
    """A decoding step's attention (`_kernels.attend`: blocks of keys folded into vectors of scores;
    a dimension not a multiple of 4 vectors takes the plain loop) against float64, at any thread count,
    and a head's result the same bits alone as among others."""
    keys = mx.random.split(mx.random.key(queries * length), 3)
    q = mx.random.normal((12, queries, dim), key=keys[0])
    k, v = mx.random.normal((12, length, dim), key=keys[1]), mx.random.normal((12, length, dim), key=keys[2])
    scale = dim**-0.5
    out = at_thread_counts(threads, lambda: K.attend(q, k, v, scale))
    assert np.array_equal(np.array(K.attend(q[5:6], k[5:6], v[5:6], scale)), out[5:6])
    assert np.array_equal(np.array(K.attend(q[5:6, -1:], k[5:6], v[5:6], scale))[0, 0], out[5, -1])
    s = np.einsum("uqd,ukd->uqk", np.array(q, np.float64), np.array(k, np.float64)) * scale
    p = np.exp(s - s.max(-1, keepdims=True))
    ref = np.einsum("uqk,ukd->uqd", p / p.sum(-1, keepdims=True), np.array(v, np.float64))
    assert np.abs(out - ref).max() < 2e-6


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


def test_argmax_is_the_first_largest_as_mlx(threads):
    threads(2)
    x = np.round(np.random.default_rng(2).standard_normal((9, 51864)), 1).astype(np.float32)  # with ties
    x[3] = -np.inf  # a row whose every column is banned
    x[4, 100:] = -np.inf
    got = kernels.argmax(mx.array(x))
    assert got.dtype == mx.int32 and np.array_equal(np.array(got), np.array(mx.argmax(mx.array(x), axis=-1)))


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
    assert np.abs(np.array(kernels.gelu(x)) - np.array(nn.gelu(x))).max() < 1e-5
    assert np.abs(np.array(kernels.gelu(x * 1)) - np.array(nn.gelu(x))).max() < 1e-5  # a donated buffer


def as_heads(x: mx.array, heads: int) -> mx.array:
    """(B, T, H·D) → the (B, H, T, D) view the model's attention takes (rows strided by H·D)."""
    return x.reshape(x.shape[0], x.shape[1], heads, -1).transpose(0, 2, 1, 3)


def f64_attention(q: mx.array, k: mx.array, v: mx.array, scale: float) -> np.ndarray:
    q, k, v = (np.array(x).astype(np.float64) for x in (q, k, v))
    return f64_softmax(q @ k.swapaxes(-1, -2) * scale) @ v


@pytest.mark.parametrize(
    "layout", ["model's views", "contiguous", "last axis strided", "positions broadcast", "one head", "one query"]
)
def test_encoder_attention_matches_float64_on_any_layout(threads, layout):
    """A head at a time in register tiles, whatever the operands' strides."""
    threads(2)
    keys = mx.random.split(mx.random.key(5), 3)
    heads, queries = (1, 150) if layout == "one head" else (6, 1 if layout == "one query" else 150)
    q, k, v = (
        as_heads(mx.random.normal((2, n, heads * 64), key=kk), heads) for kk, n in zip(keys, (queries, 170, 170))
    )
    if layout == "contiguous":
        q, k, v = (mx.contiguous(x) for x in (q, k, v))
    elif layout == "last axis strided":
        q, k, v = (mx.contiguous(x.swapaxes(-1, -2)).swapaxes(-1, -2) for x in (q, k, v))
    elif layout == "positions broadcast":  # row stride 0
        k = mx.broadcast_to(k[:, :, :1], k.shape)
    mx.eval(q, k, v)
    out = K.head_attention(q, k, v, 0.125)
    assert out.shape == (2, heads, queries, 64)
    assert np.abs(np.array(out) - f64_attention(q, k, v, 0.125)).max() < 1e-6


@pytest.mark.parametrize("dim, queries, length", [(64, 1500, 1500), (16, 13, 1), (32, 25, 17), (128, 40, 33)])
def test_encoder_attention_sizes_and_thread_counts(threads, dim, queries, length):
    """Every size of block and key tail; each row summed in one order whatever the threads or batch."""
    keys = mx.random.split(mx.random.key(dim), 3)
    q, k, v = (mx.random.normal((3, 2, n, dim), key=kk) * 2 for kk, n in zip(keys, (queries, length, length)))
    scale = dim**-0.5
    out = at_thread_counts(threads, lambda: K.head_attention(q, k, v, scale))
    assert np.array_equal(np.array(K.head_attention(q[1:2], k[1:2], v[1:2], scale)), out[1:2])
    ref = f64_attention(q, k, v, scale)
    mlx_error = np.abs(np.array(mx.fast.scaled_dot_product_attention(q, k, v, scale=scale)) - ref).max()
    assert np.abs(out - ref).max() <= 2 * mlx_error + 1e-6  # as accurate as MLX's own attention


@pytest.mark.parametrize("rows, depth, width", [(1500, 384, 1536), (1500, 2048, 512), (101, 300, 64), (7, 5, 32)])
def test_linear_matches_float64_whatever_the_threads_or_rows(threads, rows, depth, width):
    """Tails of every kind (rows past a tile or a thread's block, k past a block of 256), with and
    without a bias; each row summed in one order whatever the threads or the other rows."""
    keys = mx.random.split(mx.random.key(rows), 3)
    x = mx.random.normal((1, rows, depth), key=keys[0])
    w, b = mx.random.normal((width, depth), key=keys[1]), mx.random.normal((width,), key=keys[2])
    ref = np.array(x).astype(np.float64) @ np.array(w).astype(np.float64).T
    mlx_error = np.abs(np.array(x @ w.T) - ref).max()
    out = at_thread_counts(threads, lambda: K.linear(x, w, b))
    assert out.shape == (1, rows, width)
    assert np.abs(out - ref - np.array(b)).max() <= 2 * mlx_error + 1e-5
    assert np.abs(np.array(K.linear(x, w)) - ref).max() <= 2 * mlx_error + 1e-6
    alone = K.linear(x[:, rows // 2 : rows // 2 + 1], w, b)
    assert np.array_equal(np.array(alone)[0, 0], out[0, rows // 2])


def test_tiles_are_chosen_by_a_cached_measurement(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    for choice, speedup in (("on", 2.0), ("off", 0.0), ("", None)):
        monkeypatch.setenv(layers.TILES_ENV, choice)
        layers.tiles_speedup.cache_clear()
        measured = {kind: layers.tiles_speedup(kind) for kind in layers.SPEEDUP_SHAPES}
        assert all(m == speedup if speedup is not None else m > 0 for m in measured.values())
    cache = json.loads((tmp_path / "mlxbatchwhisper" / "blas.json").read_text())
    assert sorted(cache.values()) == sorted(measured.values())  # measured once, kept for the next process
    monkeypatch.setattr(layers, "_measure", lambda kind: pytest.fail("measured again"))
    layers.tiles_speedup.cache_clear()
    assert {kind: layers.tiles_speedup(kind) for kind in layers.SPEEDUP_SHAPES} == measured
    layers.tiles_speedup.cache_clear()


def test_linear_layers_take_a_kernel_by_sequence_length_never_by_batch(monkeypatch):
    monkeypatch.setattr(layers, "tiles_speedup", lambda kind="panels": 2.0)
    layer = layers.Linear(64, 96)
    assert set(layer.parameters()) == {"weight", "bias"}  # nn.Linear's names: checkpoints load as before
    audio, tokens, rows = mx.random.normal((1, 500, 64)), mx.random.normal((16, 448, 64)), mx.random.normal((5, 64))
    assert mx.array_equal(layer(audio), K.linear(audio, layer.weight, layer.bias)).item()
    for x in (tokens, rows, tokens[:1, :1]):  # prompts, a step's rows (B, K), a row alone: dot products
        assert mx.array_equal(layer(x), K.dot_linear(x, layer.weight, layer.bias)).item()
    half = layers.Linear(64, 96)
    half.set_dtype(mx.float16)
    assert half(audio.astype(mx.float16)).dtype == mx.float16  # MLX's product, not the float32 kernels
    odd = layers.Linear(64, 40)  # outputs not a multiple of a panel: audio positions go to the BLAS
    assert mx.array_equal(odd(audio), mx.addmm(odd.bias, audio, odd.weight.T)).item()
    monkeypatch.setattr(layers, "tiles_speedup", lambda kind="panels": 2.0 if kind == "panels" else 0.9)
    assert mx.array_equal(layer(rows), mx.addmm(layer.bias, rows, layer.weight.T)).item()  # each its measurement
    assert mx.array_equal(layer(audio), K.linear(audio, layer.weight, layer.bias)).item()
    monkeypatch.setattr(layers, "tiles_speedup", lambda kind="panels": 0.9)  # the BLAS measured faster
    assert mx.array_equal(layer(audio), mx.addmm(layer.bias, audio, layer.weight.T)).item()


@pytest.mark.parametrize("rows, depth, width", [(16, 384, 51866), (130, 1536, 384), (7, 64, 6), (1, 16, 1)])
def test_dot_products_match_float64_whatever_the_threads_or_the_other_rows(threads, rows, depth, width):
    """`_kernels.dot_linear` (a decoding step's products: tiles of rows × weights' rows, lanes along k
    folded in one tree) across every tail (rows past a tile or a block of 64, weights past a tile),
    with and without a bias: the same bits at any thread count and for a row alone as in a batch."""
    keys = mx.random.split(mx.random.key(depth), 3)
    x = mx.random.normal((rows, depth), key=keys[0])
    w, b = mx.random.normal((width, depth), key=keys[1]), mx.random.normal((width,), key=keys[2])
    ref = np.array(x).astype(np.float64) @ np.array(w).astype(np.float64).T
    mlx_error = np.abs(np.array(x @ w.T) - ref).max()
    out = at_thread_counts(threads, lambda: K.dot_linear(x, w, b))
    assert np.abs(out - ref - np.array(b)).max() <= 2 * mlx_error + 1e-5
    assert np.abs(np.array(K.dot_linear(x, w)) - ref).max() <= 2 * mlx_error + 1e-6
    for i in {0, rows // 2, rows - 1}:
        assert np.array_equal(np.array(K.dot_linear(x[i : i + 1], w, b))[0], out[i])


def test_output_head_over_any_vocabulary_is_the_dot_kernel(monkeypatch):
    """The output head (the token embedding, 51864 or 51866 rows) of a step's (B, K) rows."""
    from mlxbatchwhisper.model import TextDecoder

    monkeypatch.setattr(layers, "tiles_speedup", lambda kind="panels": 2.0)
    decoder = TextDecoder(51866, 448, 64, 1, 1)
    h = mx.random.normal((3, 64))
    assert mx.array_equal(decoder.project(h), K.dot_linear(h, decoder.token_embedding.weight)).item()
    ref = np.array(h).astype(np.float64) @ np.array(decoder.token_embedding.weight).astype(np.float64).T
    assert np.abs(np.array(decoder.project(h)) - ref).max() < 1e-5


@pytest.mark.parametrize("channels, stride, length", [((80, 384), 1, 3000), ((384, 384), 2, 3000), ((16, 32), 2, 1001)])
def test_convolution_as_one_product_matches_mlx(monkeypatch, channels, stride, length):
    """The encoder's two convolutions (windows of 3 positions flattened, one product) as MLX's."""
    monkeypatch.setattr(layers, "tiles_speedup", lambda kind="panels": 2.0)
    products = []
    monkeypatch.setattr(layers, "_kernels", SimpleNamespace(linear=lambda *a: products.append(a) or K.linear(*a)))
    ours = layers.Conv1d(*channels, kernel_size=3, stride=stride, padding=1)
    mlx = nn.Conv1d(*channels, kernel_size=3, stride=stride, padding=1)
    mlx.update(ours.parameters())
    x = mx.random.normal((2, length, channels[0]), key=mx.random.key(length))
    got, want = ours(x), mlx(x)
    assert got.shape == want.shape and len(products) == 1
    assert np.abs(np.array(got) - np.array(want)).max() < 1e-5


def test_short_or_half_precision_inputs_use_mlx():
    x = mx.random.normal((1, 8, 32))
    assert not kernels._native(x, x.shape[-2])
    assert not kernels._native(x.astype(mx.float16), 1500)


@pytest.mark.parametrize("width", [1, 3, 7, 11])
def test_median_filter_matches_sorting_each_window(threads, width):
    threads(3)
    rng = np.random.default_rng(width)
    lengths = np.array([1500, 3, 4, 5, 7, 1, 33, 0, 1499, 40, 1700])
    x = np.round(rng.standard_normal((len(lengths), 3, 5, 1500)), 1).astype(np.float32)  # with ties
    got = np.array(kernels.median_filter(mx.array(x), lengths, width))
    half = width // 2
    for b, n in enumerate(np.minimum(lengths, 1500)):
        row = x[b, ..., :n]
        if n > half:
            padded = np.pad(row, [(0, 0), (0, 0), (half, half)], mode="reflect")
            row = np.median(np.lib.stride_tricks.sliding_window_view(padded, width, axis=-1), axis=-1)
        assert np.array_equal(got[b, ..., :n], row), (b, n)
        assert not got[b, ..., n:].any()


def test_wrong_inputs_are_refused():
    with pytest.raises(ValueError, match="float32"):
        K.gelu(mx.zeros((4,), mx.float16))
    with pytest.raises(ValueError, match="0 < k"):
        K.topk(mx.zeros((2, 10)), 11)
    with pytest.raises(ValueError, match="units"):
        K.attend(mx.zeros((2, 1, 64)), mx.zeros((2, 10, 64)), mx.zeros((2, 11, 64)), 0.1)
    with pytest.raises(ValueError, match="head_attention"):
        K.head_attention(mx.zeros((1, 2, 10, 64)), mx.zeros((1, 3, 10, 64)), mx.zeros((1, 3, 10, 64)), 0.1)
    with pytest.raises(ValueError, match="head_attention"):
        K.head_attention(mx.zeros((1, 2, 10, 64)), mx.zeros((1, 2, 0, 64)), mx.zeros((1, 2, 0, 64)), 0.1)
    with pytest.raises(ValueError, match="multiple of 32"):
        K.linear(mx.zeros((100, 8)), mx.zeros((40, 8)))
    with pytest.raises(ValueError, match="w not empty"):
        K.linear(mx.zeros((100, 8)), mx.zeros((0, 8)))
    with pytest.raises(ValueError, match="K a multiple"):
        K.dot_linear(mx.zeros((2, 17)), mx.zeros((4, 17)))
    with pytest.raises(ValueError, match="bias"):
        K.linear(mx.zeros((100, 8)), mx.zeros((32, 8)), mx.zeros((31,)))
    with pytest.raises(ValueError, match="none empty"):
        K.head_attention(mx.zeros((0, 2, 100, 64)), mx.zeros((0, 2, 100, 64)), mx.zeros((0, 2, 100, 64)), 0.1)
    assert kernels.attention(*[mx.zeros((0, 2, 100, 64))] * 3).shape == (0, 2, 100, 64)  # MLX's, no kernel
    with pytest.raises(ValueError, match="multiple of 16"):
        K.head_attention(mx.zeros((1, 2, 10, 40)), mx.zeros((1, 2, 10, 40)), mx.zeros((1, 2, 10, 40)), 0.1)
    with pytest.raises(ValueError, match="odd width"):
        K.median_filter(mx.zeros((2, 10)), mx.array([10, 10]), 4)
    with pytest.raises(ValueError, match="lengths"):
        K.median_filter(mx.zeros((2, 10)), mx.array([10]), 3)


def test_an_extension_built_for_another_mlx_is_not_used(monkeypatch):
    monkeypatch.setattr(kernels.mx, "__version__", "0.0.1")
    ext, status = kernels._load_kernels()
    assert ext is None and "rebuild" in status


def test_an_old_build_of_the_extension_is_not_used(monkeypatch):
    monkeypatch.delattr(K, "MLX_VERSION")
    ext, status = kernels._load_kernels()
    assert ext is None and "older build" in status


def test_a_build_without_this_codes_ops_is_not_used(monkeypatch):
    monkeypatch.setattr(K, "API", kernels.API - 1)
    ext, status = kernels._load_kernels()
    assert ext is None and "rebuild" in status
    monkeypatch.delattr(K, "API")
    assert kernels._load_kernels()[0] is None


def test_the_median_filter_takes_float32_up_to_its_widest():
    """Wider windows and other dtypes go to MLX; a build older than the filter is not loaded at all
    (`test_a_build_without_this_codes_ops_is_not_used`)."""
    assert kernels.native_median(mx.float32, 7) and not kernels.native_median(mx.float32, K.MAX_MEDIAN_WIDTH + 2)
    assert not kernels.native_median(mx.float16, 7)


def test_logsumexp_rows_match_mlx_including_masked_rows():
    x = mx.random.normal((5, 51864), key=mx.random.key(3)) * 6
    x = mx.where(mx.random.uniform(shape=x.shape, key=mx.random.key(4)) < 0.2, -mx.inf, x)
    x = mx.concatenate([x, mx.full((1, 51864), -mx.inf)])
    ours, ref = np.array(kernels.logsumexp(x)), np.array(mx.logsumexp(x, axis=-1))
    assert np.isneginf(ours[-1]) and np.isneginf(ref[-1])
    assert np.abs(ours[:-1] - ref[:-1]).max() < 1e-5 * np.abs(ref[:-1]).max()


def test_encoder_attention_holds_a_block_of_scores_per_thread(threads):
    """MLX's own products would hold every row's and head's scores (16 × 6 × 1000² floats) at once."""
    threads(2)
    q, k, v = (mx.random.normal((16, 6, 1000, 64), key=kk) for kk in mx.random.split(mx.random.key(9), 3))
    mx.eval(q, k, v)
    per_thread = 1008 * (64 + 12) * 4  # a head's keys packed and one block of 12 queries' scores
    base = mx.get_active_memory()
    mx.reset_peak_memory()
    out = kernels.attention(q, k, v)
    mx.eval(out)
    assert mx.get_peak_memory() - base <= out.nbytes + 2 * per_thread + 4096  # the allocator rounds to pages


@pytest.mark.parametrize("n", [1, 2])
def test_lstm_matches_mlx_layer_from_zero_and_given_state(threads, n):
    """Silero VAD's recurrence: every hidden state and the last cell as MLX's `nn.LSTM` computes them."""
    threads(n)

    class NotStepped(nn.LSTM):  # the native path must not run MLX's step-by-step layer
        def __call__(self, *args):
            raise AssertionError("MLX's LSTM ran")

    layer, native = nn.LSTM(128, 128), NotStepped(128, 128)
    native.update(layer.parameters())
    x = mx.random.normal((3, 257, 128), key=mx.random.key(1))
    state = tuple(mx.random.normal((3, 128), key=mx.random.key(k)) for k in (2, 3))
    for given in (None, state):
        hidden, cells = layer(x, *(given or (None, None)))
        native_hidden, last_cell = kernels.lstm(native, x, given)
        assert np.abs(np.array(native_hidden) - np.array(hidden)).max() < 1e-5
        assert np.abs(np.array(last_cell) - np.array(cells[:, -1])).max() < 1e-5
    with pytest.raises(ValueError, match="lstm: gates"):
        K.lstm(mx.zeros((1, 2, 12)), layer.Wh, state[0][:1], state[1][:1])
