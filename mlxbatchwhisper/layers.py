"""The model's linear layers, convolutions and layer norms: MLX's, with their float32 work on the CPU
through the native kernels (`_kernels.linear`, `_kernels.dot_linear`, `_kernels.layer_norm`) where those
beat the BLAS; the same parameters, so checkpoints load as into MLX's."""

from __future__ import annotations

import functools
import os

import mlx.core as mx
import mlx.nn as nn

from . import runtime
from .kernels import THREADS, _kernels, native_available

TILES_ENV = "MLXBATCHWHISPER_TILES"  # on / off: the native tiles without measuring
TEXT_POSITIONS = 448  # Whisper's longest token sequence (n_text_ctx); audio has 1500 positions a window


# each kernel's measurement shape: an encoder's product; a decoding step's 16 rows by the same weights
SPEEDUP_SHAPES = {"panels": ((1500, 384), (1536, 384)), "dots": ((16, 384), (1536, 384))}


@functools.cache
def tiles_speedup(kind: str = "panels") -> float:
    """How many times faster a native kernel ("panels": `_kernels.linear`; "dots": `_kernels.dot_linear`)
    multiplies its float32 shape of `SPEEDUP_SHAPES` than the bound BLAS, at this process's threads:
    measured once per CPU, BLAS, build and thread count (cached with the BLAS measurements).
    $MLXBATCHWHISPER_TILES=on or off decides without measuring (2.0 or 0.0)."""
    choice = os.environ.get(TILES_ENV, "")
    if choice in ("on", "off"):
        return 2.0 if choice == "on" else 0.0
    build = os.stat(_kernels.__file__)
    key = f"linear {kind} over BLAS|{runtime.blas_key()}|{build.st_size}|{int(build.st_mtime)}|{THREADS} threads"
    return runtime.cached_measurement(key, lambda: _measure(kind))


def _measure(kind: str) -> float:
    x, w = (mx.random.normal(s, key=mx.random.key(i)) for i, s in enumerate(SPEEDUP_SHAPES[kind]))
    kernel = _kernels.linear if kind == "panels" else _kernels.dot_linear
    return runtime.fastest_seconds(lambda: x @ w.T) / runtime.fastest_seconds(lambda: kernel(x, w))


def native_linear(x: mx.array, weight: mx.array, bias: mx.array | None = None) -> str | None:
    """Which native kernel `linear` runs these operands through, if any: for float32, by sequence length
    (never by batch) audio positions (T longer than any token sequence: the encoder, the cross-attention
    K/V) through "panels", token rows (a decoding step's (B, K) rows, prompts, the output head) through
    "dots"; each where it takes the shape and measured faster than the BLAS (`tiles_speedup`)."""
    float32 = x.dtype == weight.dtype == mx.float32 and (bias is None or bias.dtype == mx.float32)
    if not float32 or x.ndim < 1 or weight.size == 0 or not native_available():
        return None
    n, k = weight.shape
    if x.ndim >= 3 and x.shape[-2] > TEXT_POSITIONS:
        return "panels" if n % 32 == 0 and tiles_speedup("panels") > 1.0 else None
    return "dots" if k % _kernels.lanes() == 0 and tiles_speedup("dots") > 1.0 else None


def linear(x: mx.array, weight: mx.array, bias: mx.array | None = None, views: _Views | None = None) -> mx.array:
    """x Wᵀ (+ b) for x (..., T, K) or (B, K) and W (N, K): the weights packed into panels (`_kernels.linear`),
    or dot products that read them in place, each output summed the same way whatever the other rows
    (`_kernels.dot_linear`), or MLX's product (`native_linear`), through `views` of W and b if given."""
    kind = native_linear(x, weight, bias)
    if kind == "panels":
        return _kernels.linear(x, weight, bias)
    if kind == "dots":
        return _kernels.dot_linear(x, weight, bias)
    wt, b = (weight.T, bias) if views is None else (views.transposed, views.bias_for(x))
    return x @ wt if b is None else mx.addmm(b, x, wt)


class _Views:
    """A layer's weight transposed and its bias broadcast to the rows of the last (B, K) input, as MLX's
    product takes them: evaluated views of the same memory, made once, so that a decoding step's graph
    holds no transpose or broadcast node per layer."""

    def __init__(self, weight: mx.array, bias: mx.array | None):
        self.weight, self.bias, self.transposed = weight, bias, weight.T
        self.rows: tuple[int, mx.array | None] = (-1, None)
        mx.async_eval(self.transposed)

    def bias_for(self, x: mx.array) -> mx.array | None:
        if self.bias is None or x.ndim != 2:
            return self.bias
        if self.rows[0] != x.shape[0]:
            self.rows = (x.shape[0], mx.broadcast_to(self.bias, (x.shape[0], self.bias.shape[-1])))
            mx.async_eval(self.rows[1])  # evaluated with the step that first uses it; no wait
        return self.rows[1]


class Linear(nn.Linear):
    """`nn.Linear` whose products go through `linear`, with `_Views` of its parameters made once per
    weight and bias arrays."""

    def __call__(self, x: mx.array) -> mx.array:
        bias = self.bias if "bias" in self else None
        views = getattr(self, "_views", None)
        if views is None or views.weight is not self.weight or views.bias is not bias:
            self._views = views = _Views(self.weight, bias)
        return linear(x, self.weight, bias, views)


class LayerNorm(nn.LayerNorm):
    """`nn.LayerNorm`; float32 on the CPU as one native pass a row (MLX's CPU build runs it as a
    dozen operations, each a pass over the activations and a node of the graph)."""

    def __call__(self, x: mx.array) -> mx.array:
        float32 = "weight" in self and "bias" in self and x.dtype == self.weight.dtype == mx.float32
        if not float32 or x.size == 0 or not native_available():
            return super().__call__(x)
        return _kernels.layer_norm(x, self.weight, self.bias, self.eps)


class Conv1d(nn.Conv1d):
    """`nn.Conv1d`; without dilation or groups and where `linear` is native, one product of
    each output position's window of inputs (B, T_out, width · C_in) with the flattened kernel."""

    def __call__(self, x: mx.array) -> mx.array:
        n_out, width, n_in = self.weight.shape
        weight = self.weight.reshape(n_out, width * n_in)
        bias = self.bias if "bias" in self else None
        if self.dilation != 1 or self.groups != 1 or x.ndim != 3 or native_linear(x, weight, bias) != "panels":
            return super().__call__(x)
        x = mx.pad(x, [(0, 0), (self.padding, self.padding), (0, 0)])
        batch, length, _ = x.shape
        positions = (length - width) // self.stride + 1
        windows = mx.as_strided(x, (batch, positions, width * n_in), (length * n_in, self.stride * n_in, 1))
        return linear(windows, weight, bias)
