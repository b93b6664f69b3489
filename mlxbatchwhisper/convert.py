"""Convert any checkpoint `load_model` reads into the mlx-community layout, optionally quantized."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn

from .checkpoints import build_model, read_checkpoint, resolve
from .model import Whisper
from .quantize import float_layers, is_uniform, quantize_model


@dataclass(frozen=True)
class Conversion:
    """What `convert` wrote."""

    path: Path
    bytes_on_disk: int
    quantization: dict | None
    float_layers: tuple[str, ...]
    mlx_whisper_compatible: bool


def save_model(model: Whisper, out: str | os.PathLike, quantization: dict | None = None) -> int:
    """Write config.json and weights.safetensors (mlx-community layout); return the bytes written.

    `out` must not exist yet. The files are written to a temporary directory beside it that is
    renamed to `out` once complete, so a failed save leaves nothing behind. Weights holding NaN or
    infinite values are refused (ValueError).
    """
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; refusing to overwrite it")
    weights = check_finite(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        config = {**model.dims.to_dict(), "model_type": "whisper"}
        if quantization:
            config["quantization"] = quantization
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        weights["alignment_heads"] = mx.array(model.alignment_heads, dtype=mx.int32)  # where mlx-whisper keeps them
        mx.save_safetensors(str(tmp / "weights.safetensors"), weights, metadata={"format": "mlx"})
        size = sum(f.stat().st_size for f in tmp.iterdir())
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private; the output gets the user's usual mode
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return size


def check_finite(model: Whisper) -> dict[str, mx.array]:
    """The model's parameters by name, or a ValueError naming those that hold NaN or infinite values."""
    weights = dict(nn.utils.tree_flatten(model.parameters()))
    broken = [k for k, v in weights.items() if mx.issubdtype(v.dtype, mx.floating) and not mx.isfinite(v).all().item()]
    if broken:
        raise ValueError(
            f"{getattr(model, 'source', 'the model')}: weights hold NaN or infinite values "
            f"({', '.join(broken[:5])}{' …' if len(broken) > 5 else ''}); refusing to write them"
        )
    return weights


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def convert(
    src: str | os.PathLike,
    out: str | os.PathLike,
    dtype: str = "float16",
    quantize: bool = False,
    bits: int = 4,
    group_size: int = 64,
    recipe: str = "default",
) -> Conversion:
    """Read `src` (a path, model name or hub id), cast to `dtype`, quantize if asked, and save to `out`.

    A quantized source is expanded to float first (and quantized again only with `quantize`).
    """
    if Path(out).exists():
        raise FileExistsError(f"{out} exists; refusing to overwrite it")
    model = build_model(read_checkpoint(resolve(src)), dtype, dequantize=True)
    check_finite(model)  # before quantizing, which could hide them
    block = quantize_model(model, bits, group_size, recipe) if quantize else None
    size = save_model(model, out, block)
    return Conversion(Path(out), size, block, tuple(float_layers(block or {})), block is None or is_uniform(block))
