"""Checkpoints to models: a name resolved to a path (`checkpoint_names`), its layout recognized and read
(`checkpoint_formats`: transformers, mlx-community, OpenAI; `ctranslate2`), the `Whisper` built from it."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn

from .checkpoint_formats import Checkpoint, CheckpointError, read_json, read_mlx, read_openai, read_transformers
from .checkpoint_names import resolve
from .ctranslate2 import read_ct2
from .heads import check_heads, default_heads, heads_for_name
from .kernels import on_cuda
from .model import Whisper

DEFAULT_MODEL = "tiny.en"

DTYPES = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}


def load_model(
    path_or_repo: str | os.PathLike = DEFAULT_MODEL, dtype: str | mx.Dtype = "float32", dequantize: bool | None = None
) -> Whisper:
    """A `Whisper` with weights from a local checkpoint, a pip-installed model or the hub.

    Quantized checkpoints load quantized; with `dequantize` their weights are expanded to `dtype`
    once, which computes the same outputs through float products. Default (None): by device, as
    `dequantized_part` says.
    """
    if to_dtype(dtype) != mx.float32 and mx.default_device() == mx.cpu:
        warnings.warn(
            f"dtype {dtype} on the CPU is several times slower than float32 (MLX has no fast "
            "half-precision kernels there); use float32 unless memory is short",
            stacklevel=2,
        )
    ckpt = read_checkpoint(resolve(path_or_repo))
    if ckpt.alignment_heads is None:
        ckpt.alignment_heads = heads_for_name(str(path_or_repo))
    return build_model(ckpt, dtype, dequantize)


def device_kind() -> str:
    """Where MLX computes: "cpu", "cuda" or "metal"."""
    if mx.default_device() == mx.cpu:
        return "cpu"
    return "cuda" if on_cuda() else "metal"


def dequantized_part(model: Whisper, dequantize: bool | None, device: str) -> nn.Module | None:
    """What of a quantized model is expanded to float at load: all or none of it when told, else by
    device: all on the CPU (MLX's quantized kernels there are a reference loop, 25-80x slower than
    BLAS); the encoder on CUDA (its products of 1500-row windows run quantized at 0.24-0.53 of float16's
    rate on an H200, where a decoding step's products of 1-128 rows run as fast or faster quantized);
    nothing on Apple GPUs."""
    if dequantize is not None:
        return model if dequantize else None
    return {"cpu": model, "cuda": model.encoder}.get(device)


def build_model(ckpt: Checkpoint, dtype: str | mx.Dtype = "float32", dequantize: bool | None = None) -> Whisper:
    """Instantiate, quantize as recorded, cast floats to `dtype`, and load the weights strictly."""
    from .quantize import apply_quantization, dequantize_model

    dtype = to_dtype(dtype)
    model = Whisper(ckpt.dims, dtype)
    model.source = ckpt.source  # named in errors about the model's output
    if ckpt.quantization:
        apply_quantization(model, ckpt.quantization, ckpt.weights)
    weights = {k: v.astype(dtype) if mx.issubdtype(v.dtype, mx.floating) else v for k, v in ckpt.weights.items()}
    check_shapes(model, weights, ckpt.source)
    model.load_weights(list(weights.items()), strict=True)
    part = dequantized_part(model, dequantize, device_kind()) if ckpt.quantization else None
    if part is not None:
        dequantize_model(part)
    mx.eval(model.parameters())
    d = ckpt.dims
    try:
        model.alignment_heads = (
            default_heads(d.n_text_layer, d.n_text_head)
            if ckpt.alignment_heads is None
            else check_heads(ckpt.alignment_heads, d.n_text_layer, d.n_text_head, str(ckpt.source))
        )
    except ValueError as e:
        raise CheckpointError(str(e)) from e
    return model


def to_dtype(dtype: str | mx.Dtype) -> mx.Dtype:
    """An MLX float dtype from its name (float32, float16, bfloat16) or itself."""
    if isinstance(dtype, mx.Dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    return DTYPES[dtype]


def check_shapes(model: nn.Module, weights: dict[str, mx.array], source: Path) -> None:
    """Raise a CheckpointError listing missing, unexpected and mis-shaped parameters."""
    expected = dict(nn.utils.tree_flatten(model.parameters()))
    missing = sorted(set(expected) - set(weights))
    extra = sorted(set(weights) - set(expected))
    wrong = [
        f"{k}: checkpoint {tuple(weights[k].shape)}, model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in weights and weights[k].shape != v.shape
    ]
    problems = (
        ([f"missing {', '.join(missing[:5])}" + (" …" if len(missing) > 5 else "")] if missing else [])
        + ([f"unexpected {', '.join(extra[:5])}" + (" …" if len(extra) > 5 else "")] if extra else [])
        + wrong[:5]
    )
    if problems:
        raise CheckpointError(f"{source}: weights do not fit the model: " + "; ".join(problems))


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read any supported layout at `path` (a directory, or an OpenAI .pt file)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if path.is_file():
        if path.suffix == ".pt":
            return read_openai(path)
        raise CheckpointError(f"{path}: a checkpoint is a directory, or an OpenAI .pt file")
    files = {p.name for p in path.iterdir()}
    config_path = path / "config.json"
    if "model.bin" in files or "model.bin.part1" in files:
        return read_ct2(path)
    if "config.json" not in files:
        raise CheckpointError(
            f"{path}: no config.json; expected a Hugging Face, mlx-community or CTranslate2 "
            f"checkpoint directory (found: {', '.join(sorted(files)) or 'nothing'})"
        )
    config = read_json(config_path)
    if "d_model" in config:
        return read_transformers(path, config)
    if "n_mels" in config:
        return read_mlx(path, config)
    raise CheckpointError(f"{config_path}: neither a transformers Whisper config (d_model) nor an mlx one (n_mels)")
