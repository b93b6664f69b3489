"""Weight quantization: which layers, at which bits and group size, and the bookkeeping for config.json.

The `quantization` block of a checkpoint's config.json follows mlx-lm's convention: default
`bits` and `group_size`, plus per-layer entries keyed by module path, either a dict of
bits/group_size (an override) or `false` (a quantizable layer kept in float). A checkpoint whose
quantized layers all share one setting is also readable by mlx-whisper.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from .layers import Linear

RECIPES = {
    "default": "attention and MLP layers at the chosen bits; the token embedding (also the output head) at 8 bits",
    "uniform": "attention and MLP layers and the token embedding all at the chosen bits (mlx-whisper reads it)",
    "decoder": "the decoder only (its layers at the chosen bits, the embedding at 8); the encoder stays float",
}
EMBEDDING = "decoder.token_embedding"


def quantize_model(model: nn.Module, bits: int = 4, group_size: int = 64, recipe: str = "default") -> dict:
    """Quantize `model` in place per `recipe`; return the config block describing what was done.

    Convolutions and norms stay float. A layer whose input width `group_size` does not divide
    stays float and is listed in the block as `false`.
    """
    if recipe not in RECIPES:
        raise ValueError(f"unknown quantization recipe {recipe!r}; choose from {', '.join(RECIPES)}")
    if bits not in (4, 8):
        raise ValueError(f"bits must be 4 or 8, not {bits}")
    if group_size not in (32, 64, 128):
        raise ValueError(f"group size must be 32, 64 or 128, not {group_size}")
    block: dict = {"group_size": group_size, "bits": bits}
    embedding_bits = bits if recipe == "uniform" else 8

    def predicate(path: str, module: nn.Module) -> bool | dict:
        if not isinstance(module, (nn.Linear, nn.Embedding)):
            return False
        if recipe == "decoder" and not path.startswith("decoder."):
            return False
        if module.weight.shape[-1] % group_size:
            block[path] = False
            return False
        if path == EMBEDDING and embedding_bits != bits:
            block[path] = {"group_size": group_size, "bits": embedding_bits}
            return block[path]
        return True

    nn.quantize(model, group_size, bits, class_predicate=predicate)
    return block


def float_layers(block: dict) -> list[str]:
    """Quantizable layers the block records as kept in float."""
    return [k for k, v in block.items() if v is False]


def is_uniform(block: dict) -> bool:
    """Whether every quantized layer uses the block's default bits and group size."""
    return not any(isinstance(v, dict) or v is False for v in block.values())


def apply_quantization(model: nn.Module, quantization: dict, weights: dict[str, mx.array]) -> None:
    """Turn the layers that `weights` stores quantized into quantized layers, in place."""

    def predicate(path: str, module: nn.Module) -> bool | dict:
        if f"{path}.scales" not in weights:
            return False
        override = quantization.get(path)
        return override if isinstance(override, dict) else True

    nn.quantize(model, quantization["group_size"], quantization["bits"], class_predicate=predicate)


def float_weight(layer: nn.Module) -> mx.array:
    """A linear or embedding layer's weight as a float matrix (dequantized if the layer is quantized)."""
    if isinstance(layer, (nn.QuantizedLinear, nn.QuantizedEmbedding)):
        return mx.dequantize(layer.weight, layer.scales, layer.biases, layer.group_size, layer.bits)
    return layer.weight


def dequantize_model(model: nn.Module) -> int:
    """Replace quantized layers by float ones holding the dequantized weights; return how many.

    The outputs are those of the quantized model (the same weights, rounded the same way), but
    matrix products go through BLAS: MLX's CPU quantized kernels are a reference loop, 25-80x
    slower than a float product on x86.
    """
    replaced = 0

    def swap(module: nn.Module) -> None:
        nonlocal replaced
        for name, child in module.children().items():
            children = child if isinstance(child, list) else [child]
            for i, c in enumerate(children):
                if isinstance(c, nn.QuantizedLinear):
                    weight = float_weight(c)
                    new = Linear(weight.shape[1], weight.shape[0], bias="bias" in c)
                    new.weight = weight.astype(c.scales.dtype)
                    if "bias" in c:
                        new.bias = c.bias
                elif isinstance(c, nn.QuantizedEmbedding):
                    weight = float_weight(c)
                    new = nn.Embedding(*weight.shape)
                    new.weight = weight.astype(c.scales.dtype)
                elif isinstance(c, nn.Module):
                    swap(c)
                    continue
                else:
                    continue
                replaced += 1
                if isinstance(child, list):
                    child[i] = new
                else:
                    setattr(module, name, new)

    swap(model)
    return replaced
