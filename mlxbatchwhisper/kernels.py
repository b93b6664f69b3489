"""Attention and GELU, with fast paths where MLX's own kernels fall short.

CPU: MLX's Linux CPU build computes exp and erf one element at a time, which makes the
encoder's softmax (B·H·1500² scores a layer) and GELU cost more than its matrix products, and
a decoding step's log-sum-exp over the vocabulary cost more than the step's attention; Silero
VAD's LSTM runs op by op, and word alignment's median filter as dozens of passes over its
scores; and the BLAS libraries at hand can leave half of a CPU's vector rate unused (OpenBLAS
0.3.21 and MKL on a 2-core AVX-512 AMD EPYC: ~100-120 GFLOP/s a core, where register tiles in
AVX-512 reach ~200), most on the encoder's K = 64 attention products; a decoding step's products
of a few rows pack the whole weight matrix first. For float32 work (softmax and attention over at
least `MIN_LENGTH` positions; products, GELU and layer norms of any size, so that a row's result
does not depend on its batch), the optional `_kernels` extension computes these as MLX primitives
(`_kernels.cpp`): they return lazy arrays in MLX's graph, write only into buffers MLX allocates
for them (or donates), and run when the graph is evaluated.

CUDA: a decoding step's cross-attention streams every row's keys and values (large-v3 at batch
128: 1 GB a layer); MLX's attention reads them at ~1.7 TB/s on an H200, ours (`_ONE_QUERY_CUDA`, one
block per head with an online softmax, float or int8 keys/values) at ~4. The same kernel reads a
step's self-attention cache in place (`attend_cached`), where MLX's would be given a copied slice.

Everywhere else (Metal, half precision on the CPU, short sequences) MLX's own operations run.
"""

from __future__ import annotations

import functools
import os

import mlx.core as mx
import mlx.nn as nn
import numpy as np

API = 2  # the extension's ops this code calls (`_kernels.API`)


def _load_kernels() -> tuple[object | None, str]:
    """The native extension when it was built against the MLX running here, and why not otherwise."""
    try:
        from . import _kernels as ext
    except ImportError as e:  # the optional extension was not built: MLX's kernels only
        return None, f"not built ({e})"
    built_for = getattr(ext, "MLX_VERSION", "an unknown version (an older build)")
    if built_for != mx.__version__:
        return None, f"built for MLX {built_for}, running {mx.__version__}: rebuild it"
    if getattr(ext, "API", 0) < API:
        return None, f"an older build (its ops are API {getattr(ext, 'API', 0)}, this code needs {API}): rebuild it"
    return ext, "loaded"


_kernels, NATIVE_STATUS = _load_kernels()

MIN_LENGTH = 64
MAX_QUERIES = 16  # queries per head for the native cross-attention (beams × tokens); more go to BLAS
THREADS_ENV = "MLXBATCHWHISPER_THREADS"  # threads for the native CPU kernels (default: the usable CPUs, ≤ 16)
_CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
THREADS = int(os.environ.get(THREADS_ENV) or 0) or max(1, min(_CPUS, 16))
if _kernels is not None:
    _kernels.set_threads(THREADS)
_WARPS = 8
_CUDA_MIN_HEADS = 256  # fewer (row, head) blocks leave the GPU idle: MLX's kernel is faster there

# One block of _WARPS warps per (row, head). Each lane loads 16 bytes of a key and of its value:
# 8 dimensions in half precision (8 lanes a key), 16 of int8 (4 lanes a key), 4 of float32 (16 lanes).
# A lane group keeps its own running softmax over the keys it reads, rescaled once per U keys rather
# than per key; the groups are merged at the end. int8 keys/values become floats by a byte
# permutation into a float's mantissa (an integer add in place of a conversion instruction).
_ONE_QUERY_HEADER = """
template <typename S> __device__ inline void expand16(uint4 raw, float* out) {
    if constexpr (sizeof(S) == 1) {
        const unsigned w[4] = {raw.x ^ 0x80808080u, raw.y ^ 0x80808080u, raw.z ^ 0x80808080u, raw.w ^ 0x80808080u};
        #pragma unroll
        for (int j = 0; j < 4; j++) {
            #pragma unroll
            for (int b = 0; b < 4; b++)
                out[4 * j + b] = __int_as_float(__byte_perm(w[j], 0x4Bu, 0x4550u | b)) - 8388736.f;
        }
    } else {
        const S* e = reinterpret_cast<const S*>(&raw);
        #pragma unroll
        for (int i = 0; i < 16 / (int)sizeof(S); i++) out[i] = (float)e[i];
    }
}
"""
# The kernel's body: {storage} is the keys' and values' element type, {key_scale} and {value_scale}
# a position's scales (int8) or 1; a (row, head) reads keys [{first}, {length}) of the {row} it holds.
_ONE_QUERY_BODY = """
    using S = {storage};
    constexpr int U = 4, E = 16 / (int)sizeof(S), LPK = 64 / E, KPW = 32 / LPK, PARTS = WARPS * KPW;
    constexpr int STRIDE = 64 * (int)sizeof(S) / 16;  // a key's length in 16-byte loads
    const int unit = blockIdx.x, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int group = lane / LPK, sub = lane % LPK;
    const int L = {length}, first = min({first}, L - 1);  // a row of padding only sees the last column
    const uint4* kk = reinterpret_cast<const uint4*>(k + (size_t)unit * {row} * 64 + sub * E);
    const uint4* vv = reinterpret_cast<const uint4*>(v + (size_t)unit * {row} * 64 + sub * E);
    float qf[E], acc[E];
    #pragma unroll
    for (int i = 0; i < E; i++) {{ qf[i] = (float)q[unit * 64 + sub * E + i] * scale[0]; acc[i] = 0.f; }}
    float m = -INFINITY, l = 0.f;
    for (int t0 = first + warp * KPW * U; t0 < L; t0 += WARPS * KPW * U) {{
        float s[U], w[U];
        uint4 vraw[U];
        #pragma unroll
        for (int u = 0; u < U; u++) {{
            const int t = min(t0 + u * KPW + group, L - 1);
            const uint4 kraw = kk[(size_t)t * STRIDE];
            vraw[u] = vv[(size_t)t * STRIDE];
            float kf[E], d = 0.f;
            expand16<S>(kraw, kf);
            #pragma unroll
            for (int i = 0; i < E; i++) d += qf[i] * kf[i];
            s[u] = d * {key_scale};
            w[u] = {value_scale};
        }}
        #pragma unroll
        for (int off = LPK / 2; off > 0; off >>= 1) {{
            #pragma unroll
            for (int u = 0; u < U; u++) s[u] += __shfl_xor_sync(0xffffffff, s[u], off);
        }}
        float mn = m;
        #pragma unroll
        for (int u = 0; u < U; u++) if (t0 + u * KPW + group < L) mn = fmaxf(mn, s[u]);
        if (mn == -INFINITY) continue;  // every key of this round lies past the end
        const float c = __expf(m - mn);
        l *= c;
        #pragma unroll
        for (int i = 0; i < E; i++) acc[i] *= c;
        #pragma unroll
        for (int u = 0; u < U; u++) {{
            if (t0 + u * KPW + group < L) {{
                const float p = __expf(s[u] - mn), pw = p * w[u];
                float vf[E];
                expand16<S>(vraw[u], vf);
                l += p;
                #pragma unroll
                for (int i = 0; i < E; i++) acc[i] += pw * vf[i];
            }}
        }}
        m = mn;
    }}
    __shared__ float sm[PARTS], sl[PARTS], sa[PARTS][64];
    const int part = warp * KPW + group;
    if (sub == 0) {{ sm[part] = m; sl[part] = l; }}
    #pragma unroll
    for (int i = 0; i < E; i++) sa[part][sub * E + i] = acc[i];
    __syncthreads();
    if (warp == 0) {{
        float top = -INFINITY, total = 0.f, o0 = 0.f, o1 = 0.f;
        for (int p = 0; p < PARTS; p++) top = fmaxf(top, sm[p]);
        for (int p = 0; p < PARTS; p++) {{
            const float c = sm[p] == -INFINITY ? 0.f : __expf(sm[p] - top);
            total += sl[p] * c;
            o0 += sa[p][2 * lane] * c;
            o1 += sa[p][2 * lane + 1] * c;
        }}
        out[unit * 64 + 2 * lane] = (T)(o0 / total);
        out[unit * 64 + 2 * lane + 1] = (T)(o1 / total);
    }}
"""
_CROSS = dict(length="KEYS", first="0", row="KEYS")  # all KEYS positions of the audio
_ONE_QUERY_CUDA = _ONE_QUERY_BODY.format(storage="T", key_scale="1.f", value_scale="1.f", **_CROSS)
_ONE_QUERY_INT8_CUDA = _ONE_QUERY_BODY.format(
    storage="int8_t",
    key_scale="(float)ks[(size_t)unit * KEYS + t]",
    value_scale="(float)vs[(size_t)unit * KEYS + t]",
    **_CROSS,
)
# a self-attention cache (B, H, capacity, 64): columns [left padding of the row, length) written so far
_ONE_QUERY_CACHED_CUDA = _ONE_QUERY_BODY.format(
    storage="T",
    key_scale="1.f",
    value_scale="1.f",
    length="extent[0]",
    first="starts[unit / extent[2]]",
    row="extent[1]",
)

_CACHED_WARPS = 4  # a self-attention cache holds at most 448 columns: fewer warps a block
CrossKV = tuple  # (keys, values), or (int8 keys, int8 values, key scales, value scales): see quantize_kv


def on_cuda() -> bool:
    """Whether MLX computes on a CUDA GPU."""
    return mx.default_device() == mx.gpu and mx.cuda.is_available()


@functools.cache
def _one_query_kernel(name: str, source: str, inputs: tuple[str, ...]):
    return mx.fast.cuda_kernel(
        name=name, input_names=list(inputs), output_names=["out"], source=source, header=_ONE_QUERY_HEADER
    )


@functools.lru_cache(maxsize=4096)
def _constant(values: tuple, dtype: mx.Dtype) -> mx.array:
    """A small constant array, made once: a kernel's scalars are not uploaded again every step."""
    return mx.array(values, dtype)


def one_query_cuda(q: mx.array, keys: mx.array) -> bool:
    """Whether our CUDA kernel attends q (B, H, 1, 64) to these keys: enough (row, head) blocks to fill
    the GPU (fewer: MLX's kernel is faster)."""
    b, h, t, d = q.shape
    return t == 1 and d == 64 and b * h >= _CUDA_MIN_HEADS and keys.shape[-1] == 64 and on_cuda()


def _attend_one_cuda(q: mx.array, k: mx.array, v: mx.array, *scales: mx.array) -> mx.array:
    """One query per head (B, H, 1, 64) against contiguous keys/values (B, H, T, 64), on CUDA;
    with `scales`, int8 keys/values and their (B, H, T) scales."""
    if scales:
        inputs = ("q", "k", "v", "ks", "vs", "scale")
        kernel = _one_query_kernel("one_query_attention_int8", _ONE_QUERY_INT8_CUDA, inputs)
    else:
        kernel = _one_query_kernel("one_query_attention", _ONE_QUERY_CUDA, ("q", "k", "v", "scale"))
    batch, heads, _, dim = q.shape
    (out,) = kernel(
        inputs=[q, k, v, *scales, _constant((dim**-0.5,), mx.float32)],
        template=[("T", q.dtype), ("KEYS", k.shape[2]), ("WARPS", _WARPS)],
        grid=(batch * heads * 32 * _WARPS, 1, 1),
        threadgroup=(32 * _WARPS, 1, 1),
        output_shapes=[q.shape],
        output_dtypes=[q.dtype],
    )
    return out


def attend_cached(q: mx.array, keys: mx.array, values: mx.array, length: int, starts: mx.array) -> mx.array:
    """One query per head (B, H, 1, 64) against a self-attention cache (B, H, capacity, 64) on CUDA:
    row b attends to columns [starts[b], length), its tokens (before them: its left padding).
    The cache is read in place, without the copy a slice of its columns would take."""
    kernel = _one_query_kernel(
        "one_query_attention_cached", _ONE_QUERY_CACHED_CUDA, ("q", "k", "v", "starts", "extent", "scale")
    )
    batch, heads, _, dim = q.shape
    (out,) = kernel(
        inputs=[
            q,
            keys,
            values,
            starts,
            _constant((length, keys.shape[2], heads), mx.int32),
            _constant((dim**-0.5,), mx.float32),
        ],
        template=[("T", q.dtype), ("WARPS", _CACHED_WARPS)],
        grid=(batch * heads * 32 * _CACHED_WARPS, 1, 1),
        threadgroup=(32 * _CACHED_WARPS, 1, 1),
        output_shapes=[q.shape],
        output_dtypes=[q.dtype],
    )
    return out


_DTW_CUDA = """
    // One block per batch row: the cost matrix is filled along anti-diagonals (cells with
    // i + j = d depend only on diagonals d - 1 and d - 2), then thread 0 walks the path back.
    const int b = blockIdx.x, tid = threadIdx.x;
    const int n = rows[b], m = cols[b];
    const int W = MAXM + 1;
    float* A = acc + (size_t)b * (MAXN + 1) * W;
    signed char* S = steps + (size_t)b * (MAXN + 1) * W;
    for (int j = tid; j <= m; j += blockDim.x) A[j] = j == 0 ? 0.f : INFINITY;
    for (int i = tid + 1; i <= n; i += blockDim.x) A[(size_t)i * W] = INFINITY;
    __syncthreads();
    for (int d = 2; d <= n + m; d++) {
        for (int i = tid + 1; i <= n; i += blockDim.x) {
            const int j = d - i;
            if (j < 1 || j > m) continue;
            const float c0 = A[(size_t)(i - 1) * W + j - 1], c1 = A[(size_t)(i - 1) * W + j];
            const float c2 = A[(size_t)i * W + j - 1];
            float c; signed char t;
            if (c0 < c1 && c0 < c2) { c = c0; t = 0; }
            else if (c1 < c0 && c1 < c2) { c = c1; t = 1; }
            else { c = c2; t = 2; }
            A[(size_t)i * W + j] = (float)((double)cost[((size_t)b * MAXN + i - 1) * MAXM + j - 1] + (double)c);
            S[(size_t)i * W + j] = t;
        }
        __syncthreads();
    }
    if (tid == 0) {
        int i = n, j = m;
        while (i > 0 || j > 0) {
            if (i > 0) starts[(size_t)b * MAXN + i - 1] = j - 1;
            const int t = i == 0 ? 2 : (j == 0 ? 1 : S[(size_t)i * W + j]);
            if (t != 2) i--;
            if (t != 1) j--;
        }
    }
"""
_dtw_cuda = None


def dtw_token_starts_cuda(cost: mx.array, n_rows: np.ndarray, n_cols: np.ndarray) -> mx.array:
    """`alignment.dtw_token_starts` on a CUDA GPU for (B, N, M) float32 costs: (B, N) int32 columns."""
    global _dtw_cuda
    if _dtw_cuda is None:
        _dtw_cuda = mx.fast.cuda_kernel(
            name="dtw_token_starts",
            input_names=["cost", "rows", "cols"],
            output_names=["starts", "acc", "steps"],
            source=_DTW_CUDA,
        )
    batch, n, m = cost.shape
    starts, _, _ = _dtw_cuda(
        inputs=[cost.astype(mx.float32), mx.array(n_rows.astype(np.int32)), mx.array(n_cols.astype(np.int32))],
        template=[("MAXN", n), ("MAXM", m)],
        grid=(batch * 256, 1, 1),
        threadgroup=(256, 1, 1),
        output_shapes=[(batch, n), (batch, n + 1, m + 1), (batch, n + 1, m + 1)],
        output_dtypes=[mx.int32, mx.float32, mx.int8],
        init_value=0,
    )
    return starts


def native_available() -> bool:
    """Whether the native CPU kernels are built and MLX runs on the CPU."""
    return _kernels is not None and mx.default_device() == mx.cpu


def _native(x: mx.array, length: int) -> bool:
    return length >= MIN_LENGTH and x.dtype == mx.float32 and native_available()


def attention(q: mx.array, k: mx.array, v: mx.array, mask: mx.array | str | None = None) -> mx.array:
    """softmax(q kᵀ / √D + mask) v for (B, H, T, D) queries, keys and values."""
    scale = q.shape[-1] ** -0.5
    native = _native(q, q.shape[2]) and q.size > 0 and k.dtype == v.dtype == q.dtype and q.shape[-1] % 16 == 0
    if mask is not None or not native:
        return mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask)
    # a head at a time: a block of queries' scores alive per thread, not B·H·T²; laid out (B, T, H, D)
    return _kernels.head_attention(q, k, v, scale)


def quantize_kv(k: mx.array, v: mx.array) -> CrossKV:
    """Keys and values as int8 with one scale per (row, head, position) vector (symmetric, max-abs)."""
    out = []
    for x in (k, v):
        scale = mx.maximum(mx.abs(x).max(axis=-1), 1e-8) / 127
        out.append((mx.round(x / scale[..., None])).astype(mx.int8))
        out.append(scale.astype(x.dtype))
    return out[0], out[2], out[1], out[3]


def dequantize_kv(x: mx.array, scale: mx.array, dtype: mx.Dtype) -> mx.array:
    """The keys or values `quantize_kv` stored, back in `dtype`."""
    return x.astype(dtype) * scale[..., None].astype(dtype)


def cross_attention(
    q: mx.array, k: mx.array, v: mx.array, k_scale: mx.array | None = None, v_scale: mx.array | None = None
) -> mx.array:
    """Attention against precomputed (contiguous) keys/values; one query per head is a decoding step.

    When k, v hold fewer rows than q, each consecutive group of q's rows shares one row of them
    (the beams of a segment): the group's queries attend together, reading the keys once. With
    scales, k and v are `quantize_kv`'s int8 arrays.
    """
    scales = () if k_scale is None else (k_scale, v_scale)
    group = q.shape[0] // k.shape[0]
    if group == 1:
        return _cross_attention(q, k, v, scales)
    b, h, t, d = q.shape
    q = q.reshape(b // group, group, h, t, d).transpose(0, 2, 1, 3, 4).reshape(b // group, h, group * t, d)
    o = _cross_attention(q, k, v, scales)
    return o.reshape(b // group, h, group, t, d).transpose(0, 2, 1, 3, 4).reshape(b, h, t, d)


def _cross_attention(q: mx.array, k: mx.array, v: mx.array, scales: tuple = ()) -> mx.array:
    if one_query_cuda(q, k):
        return _attend_one_cuda(q, k, v, *scales)
    if scales:
        k, v = dequantize_kv(k, scales[0], q.dtype), dequantize_kv(v, scales[1], q.dtype)
    if q.shape[2] > MAX_QUERIES or not _native(q, k.shape[2]):
        return attention(q, k, v)
    b, h, t, d = q.shape
    out = _kernels.attend(q.reshape(b * h, t, d), k.reshape(b * h, -1, d), v.reshape(b * h, -1, d), d**-0.5)
    return out.reshape(b, h, t, d)


def logsumexp(x: mx.array) -> mx.array:
    """log Σ exp over the last axis of (B, V) scores (a decoding step's log-probability normalizer)."""
    if x.ndim != 2 or not _native(x, x.shape[-1]):
        return mx.logsumexp(x, axis=-1)
    return _kernels.logsumexp(x)


def argmax(x: mx.array) -> mx.array:
    """Each row's first largest column of (B, V) scores, int32 (a greedy step's token; natively on the CPU,
    where MLX's argmax takes a row at a time)."""
    if x.ndim != 2 or not _native(x, x.shape[-1]):
        return mx.argmax(x, axis=-1).astype(mx.int32)
    return _kernels.topk(x, 1)[0][:, 0]


def top_logprobs(logits: mx.array, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest log-probabilities of each row of (B, V) logits, and their token ids (host arrays).

    A beam search step's candidates; the order within a row is not specified.
    """
    if logits.ndim != 2 or not _native(logits, logits.shape[-1]):
        logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        idx = mx.argpartition(-logprobs, kth=k - 1, axis=-1)[:, :k]
        return np.array(idx), np.array(mx.take_along_axis(logprobs, idx, axis=-1))
    idx, top = _kernels.topk(logits, k)
    return np.array(idx), np.array(top - _kernels.logsumexp(logits)[:, None])


def softmax(x: mx.array) -> mx.array:
    """Softmax over the last axis, in float32 where x is float32."""
    if not _native(x, x.shape[-1]):
        return mx.softmax(x, axis=-1, precise=True)
    return _kernels.softmax(x)


def native_median(dtype: mx.Dtype, width: int) -> bool:
    """Whether `median_filter` runs here for this dtype and width (an older build, without the filter, is not
    loaded at all: `API`)."""
    return native_available() and dtype == mx.float32 and width <= _kernels.MAX_MEDIAN_WIDTH


def median_filter(x: mx.array, lengths: np.ndarray, width: int) -> mx.array:
    """The native median filter of (B, ..., F) float32 rows, each reflected at lengths[b] (only where
    `native_median`; `alignment.median_filter` says what it computes and runs elsewhere)."""
    return _kernels.median_filter(x, mx.array(lengths.astype(np.int32)), width)


def lstm(module: nn.LSTM, x: mx.array, state: tuple[mx.array, mx.array] | None = None) -> tuple[mx.array, mx.array]:
    """`module` (MLX's LSTM) over (B, T, D) inputs from `state` (hidden, cell; zeros if None): every step's
    hidden state (B, T, H) and the last cell (B, H). The recurrence steps one token at a time, which MLX's
    own layer does op by op (Silero VAD over 5 minutes: 9,400 steps, 2.3 s); natively it is one primitive."""
    if x.dtype != mx.float32 or not native_available():
        hidden, cell = module(x, *(state or (None, None)))
        return hidden, cell[:, -1]
    gates = x @ module.Wx.T if module.bias is None else mx.addmm(module.bias, x, module.Wx.T)
    if state is None:
        state = (mx.zeros((x.shape[0], module.Wh.shape[1])),) * 2
    hidden, cell = _kernels.lstm(gates, module.Wh, *state)
    return hidden, cell


def gelu(x: mx.array) -> mx.array:
    """Exact (erf) GELU of a (B, T, F) activation: natively for float32 of any size (MLX's erf takes an
    element at a time), so a row's result is the same alone or in any batch."""
    if x.size == 0 or x.dtype != mx.float32 or not native_available():
        return nn.gelu(x)
    return _kernels.gelu(x)
