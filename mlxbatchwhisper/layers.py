"""The model's linear layers and convolutions: MLX's, with their float32 products on the CPU through the
native register tiles (`_kernels.linear`) where those beat the BLAS; the same parameters, so checkpoints
load as into MLX's."""

from __future__ import annotations

import functools
import os

import mlx.core as mx
import mlx.nn as nn

from . import runtime
from .kernels import THREADS, _kernels, native_available

TILES_ENV = "MLXBATCHWHISPER_TILES"  # on / off: the native tiles without measuring


@functools.cache
def tiles_speedup() -> float:
    """How many times faster the native tiles multiply an encoder-shaped product (1500 × 384 by
    384 × 1536, float32) than the bound BLAS, at this process's threads: measured once per CPU,
    BLAS, build and thread count (cached with the BLAS measurements). $MLXBATCHWHISPER_TILES=on or
    off decides without measuring (2.0 or 0.0)."""
    choice = os.environ.get(TILES_ENV, "")
    if choice in ("on", "off"):
        return 2.0 if choice == "on" else 0.0
    build = os.stat(_kernels.__file__)
    key = f"linear tiles over BLAS|{runtime.blas_key()}|{build.st_size}|{int(build.st_mtime)}|{THREADS} threads"
    return runtime.cached_measurement(key, _measure_tiles)


def _measure_tiles() -> float:
    x, w = (mx.random.normal(s, key=mx.random.key(i)) for i, s in enumerate(((1500, 384), (1536, 384))))
    return runtime.fastest_seconds(lambda: x @ w.T) / runtime.fastest_seconds(lambda: _kernels.linear(x, w))


def native_linear(x: mx.array, weight: mx.array, bias: mx.array | None = None) -> bool:
    """Whether `linear` runs these operands through the native tiles: float32 and the tiles faster than
    the BLAS on this CPU (`tiles_speedup`). The choice never depends on the number of rows, and the
    tiles sum each output the same way whatever the rows (few rows read the weights in place, many
    pack them: the same bits), so a row's result never depends on its batch."""
    float32 = x.dtype == weight.dtype == mx.float32 and (bias is None or bias.dtype == mx.float32)
    return float32 and x.ndim >= 1 and weight.size > 0 and native_available() and tiles_speedup() > 1.0


def linear(x: mx.array, weight: mx.array, bias: mx.array | None = None) -> mx.array:
    """x Wᵀ (+ b) for x (..., K) and W (N, K)."""
    if native_linear(x, weight, bias):
        return _kernels.linear(x, weight, bias)
    return x @ weight.T if bias is None else mx.addmm(bias, x, weight.T)


class Linear(nn.Linear):
    """`nn.Linear` whose products go through `linear`."""

    def __call__(self, x: mx.array) -> mx.array:
        return linear(x, self.weight, self.bias if "bias" in self else None)


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
        if self.dilation != 1 or self.groups != 1 or x.ndim != 3 or not native_linear(x, weight, bias):
            return super().__call__(x)
        x = mx.pad(x, [(0, 0), (self.padding, self.padding), (0, 0)])
        batch, length, _ = x.shape
        positions = (length - width) // self.stride + 1
        windows = mx.as_strided(x, (batch, positions, width * n_in), (length * n_in, self.stride * n_in, 1))
        return linear(windows, weight, bias)
