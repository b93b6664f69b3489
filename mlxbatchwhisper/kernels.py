"""Attention and GELU, with native fast paths on MLX's CPU backend.

MLX's Linux CPU build computes exp and erf one element at a time, which makes the encoder's
softmax (B·H·1500² scores a layer) and GELU cost more than its matrix products, and it runs a
decoding step's cross-attention as one small matrix call per head. For float32 work on the CPU
over at least `MIN_LENGTH` positions, the optional `_kernels` extension computes these in place
on evaluated arrays instead; everywhere else (GPU, half precision, short sequences) MLX's own
operations run.
"""

from __future__ import annotations

import os

import mlx.core as mx
import mlx.nn as nn

try:
    from . import _kernels
except ImportError:  # the optional extension was not built: MLX's kernels only
    _kernels = None

MIN_LENGTH = 64
THREADS = max(1, min(os.cpu_count() or 1, 16))


def native_available() -> bool:
    """Whether the native CPU kernels are built and MLX runs on the CPU."""
    return _kernels is not None and mx.default_device() == mx.cpu


def _native(x: mx.array, length: int) -> bool:
    return length >= MIN_LENGTH and x.dtype == mx.float32 and native_available()


def attention(q: mx.array, k: mx.array, v: mx.array, mask: mx.array | str | None = None) -> mx.array:
    """softmax(q kᵀ / √D + mask) v for (B, H, T, D) queries, keys and values."""
    scale = q.shape[-1] ** -0.5
    if mask is not None or not _native(q, q.shape[2]):
        return mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask)
    outputs = []
    for b in range(q.shape[0]):  # one row's scores at a time: H·T² floats, not B·H·T²
        scores = (q[b] * scale) @ k[b].swapaxes(-1, -2)
        mx.eval(scores)
        _kernels.softmax_(scores, scores.shape[-1], THREADS)
        outputs.append(scores @ v[b])
    return mx.stack(outputs)


def cross_attention(q: mx.array, k: mx.array, v: mx.array) -> mx.array:
    """Attention against precomputed (contiguous) keys/values; one query per head is a decoding step."""
    if q.shape[2] != 1 or not _native(q, k.shape[2]):
        return attention(q, k, v)
    out = mx.array(q)  # a private copy: the kernel writes its output over it
    mx.eval(out, k, v)
    _kernels.attend_one_(out, k, v, k.shape[2], q.shape[-1], q.shape[-1] ** -0.5, THREADS)
    return out


def gelu(x: mx.array) -> mx.array:
    """Exact (erf) GELU of a (B, T, F) activation.

    On the native path the result overwrites `x`: pass a freshly computed array that nothing
    else holds (a layer's output), as the model does.
    """
    if x.ndim < 2 or not _native(x, x.shape[-2]):
        return nn.gelu(x)
    mx.eval(x)
    _kernels.gelu_(x, THREADS)
    return x
