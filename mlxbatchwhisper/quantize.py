"""Weight quantization bookkeeping: which layers are quantized, at which bits and group size.

A checkpoint's `quantization` block holds the default `bits` and `group_size` and, keyed by
module path, per-layer overrides (a dict of bits/group_size); the layers a checkpoint stores
quantized are those with `.scales` weights.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn


def apply_quantization(model: nn.Module, quantization: dict, weights: dict[str, mx.array]) -> None:
    """Turn the layers that `weights` stores quantized into quantized layers, in place."""

    def predicate(path: str, module: nn.Module) -> bool | dict:
        if f"{path}.scales" not in weights:
            return False
        override = quantization.get(path)
        return override if isinstance(override, dict) else True

    nn.quantize(model, quantization["group_size"], quantization["bits"], class_predicate=predicate)
