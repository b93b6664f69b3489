"""Checkpoint layouts read into one state dict with mlx-whisper's parameter names: Hugging Face transformers
(config.json + model.safetensors), mlx-community (config.json + weights.safetensors / weights.npz, possibly
quantized) and OpenAI's `.pt` (needs torch); the `Checkpoint` record and config checks every layout shares."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx

from .heads import Heads, heads_for_name
from .model import ModelDimensions


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or does not fit the model."""


@dataclass
class Checkpoint:
    """A checkpoint read into mlx-whisper's parameter names, whatever its layout."""

    dims: ModelDimensions
    weights: dict[str, mx.array]
    quantization: dict | None
    source: Path
    alignment_heads: Heads | None = None  # as the checkpoint records them, if it does


def read_json(path: Path) -> dict:
    """A JSON file's contents, or a CheckpointError naming it."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable JSON ({e})") from e


def load_arrays(path: Path) -> dict[str, mx.array]:
    """The arrays of a safetensors or npz file, or an error naming it."""
    if not path.exists():
        raise FileNotFoundError(f"missing weights file {path}")
    try:
        return dict(mx.load(str(path)))
    except Exception as e:  # mx.load raises RuntimeError/ValueError on truncated or foreign files
        raise CheckpointError(f"{path}: could not read weights ({e})") from e


def read_mlx(path: Path, config: dict) -> Checkpoint:
    """mlx-community layout: mlx-whisper names, conv weights as (out, kernel, in)."""
    quantization = config.pop("quantization", None)
    if quantization is not None and not (
        isinstance(quantization, dict) and {"bits", "group_size"} <= set(quantization)
    ):
        raise CheckpointError(
            f"{path / 'config.json'}: 'quantization' needs 'bits' and 'group_size', got {quantization!r}"
        )
    dims = _dims(config, path / "config.json")
    for name in ("weights.safetensors", "weights.npz", "model.safetensors"):
        if (path / name).exists():
            weights = load_arrays(path / name)
            stored = weights.pop("alignment_heads", None)  # mlx-whisper stores its word-timing heads as a parameter
            heads = config.get("alignment_heads", None if stored is None else stored.tolist())
            return Checkpoint(dims, weights, quantization, path, heads)
    raise FileNotFoundError(f"{path}: no weights.safetensors or weights.npz beside config.json")


def _dims(config: dict, source: Path) -> ModelDimensions:
    fields = ModelDimensions.__dataclass_fields__
    missing = [f for f in fields if f not in config]
    if missing:
        raise CheckpointError(f"{source}: config lacks {', '.join(missing)}")
    return checked_dims({f: config[f] for f in fields}, source)


def checked_dims(values: dict, source: Path, names: dict[str, str] | None = None) -> ModelDimensions:
    """`ModelDimensions` from config values, each a positive integer and every width split evenly into heads.

    `names` gives the config's own name of a field, for the message (e.g. d_model for n_audio_state).
    """
    names = names or {}
    for field, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise CheckpointError(f"{source}: {names.get(field, field)} must be a positive integer, not {value!r}")
    for width, heads in (("n_audio_state", "n_audio_head"), ("n_text_state", "n_text_head")):
        if values[width] % values[heads]:
            raise CheckpointError(
                f"{source}: {names.get(heads, heads)} ({values[heads]}) does not divide "
                f"{names.get(width, width)} ({values[width]})"
            )
    return ModelDimensions(**values)


_HF_RENAMES = [
    (r"^model\.", ""),
    (r"\.layers\.", ".blocks."),
    (r"\.self_attn_layer_norm\.", ".attn_ln."),
    (r"\.encoder_attn_layer_norm\.", ".cross_attn_ln."),
    (r"\.final_layer_norm\.", ".mlp_ln."),
    (r"\.self_attn\.", ".attn."),
    (r"\.encoder_attn\.", ".cross_attn."),
    (r"\.q_proj\.", ".query."),
    (r"\.k_proj\.", ".key."),
    (r"\.v_proj\.", ".value."),
    (r"\.out_proj\.", ".out."),
    (r"\.fc1\.", ".mlp1."),
    (r"\.fc2\.", ".mlp2."),
    (r"^encoder\.layer_norm\.", "encoder.ln_post."),
    (r"^decoder\.layer_norm\.", "decoder.ln."),
    (r"^decoder\.embed_tokens\.", "decoder.token_embedding."),
    (r"^decoder\.embed_positions\.weight$", "decoder.positional_embedding"),
]


def _rename(name: str, rules: list[tuple[str, str]]) -> str:
    for pattern, repl in rules:
        name = re.sub(pattern, repl, name)
    return name


def conv_to_mlx(weights: dict[str, mx.array]) -> dict[str, mx.array]:
    """PyTorch conv weights (out, in, kernel) → MLX (out, kernel, in)."""
    return {k: v.transpose(0, 2, 1) if re.match(r"encoder\.conv\d\.weight", k) else v for k, v in weights.items()}


_HF_DIMS = {  # ModelDimensions field: transformers' config name
    "n_mels": "num_mel_bins",
    "n_audio_ctx": "max_source_positions",
    "n_audio_state": "d_model",
    "n_audio_head": "encoder_attention_heads",
    "n_audio_layer": "encoder_layers",
    "n_vocab": "vocab_size",
    "n_text_ctx": "max_target_positions",
    "n_text_state": "d_model",
    "n_text_head": "decoder_attention_heads",
    "n_text_layer": "decoder_layers",
}


def read_transformers(path: Path, config: dict) -> Checkpoint:
    """Hugging Face transformers layout (single or sharded safetensors)."""
    source = path / "config.json"
    try:
        values = {field: config[name] for field, name in _HF_DIMS.items()}
    except KeyError as e:
        raise CheckpointError(f"{source}: config lacks {e}") from e
    dims = checked_dims(values, source, _HF_DIMS)
    index = path / "model.safetensors.index.json"
    if index.exists():
        shards = sorted(set(read_json(index)["weight_map"].values()))
        raw = {}
        for shard in shards:
            raw.update(load_arrays(path / shard))
    elif (path / "model.safetensors").exists():
        raw = load_arrays(path / "model.safetensors")
    else:
        raise FileNotFoundError(
            f"{path}: no model.safetensors (pytorch_model.bin alone is not read: convert it with transformers first)"
        )
    weights = {}
    for k, v in raw.items():
        if k in ("proj_out.weight", "model.encoder.embed_positions.weight"):
            continue  # tied to the token embedding; sinusoids recomputed
        weights[_rename(k, _HF_RENAMES)] = v
    generation = path / "generation_config.json"
    heads = read_json(generation).get("alignment_heads") if generation.exists() else None
    return Checkpoint(dims, conv_to_mlx(weights), None, path, heads)


def read_openai(path: Path) -> Checkpoint:
    """OpenAI's .pt checkpoint (needs torch)."""
    try:
        import torch
    except ImportError as e:
        raise CheckpointError(f"{path}: reading OpenAI .pt checkpoints needs torch (pip install torch)") from e
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        dims = ModelDimensions(**ckpt["dims"])
        state = ckpt["model_state_dict"]
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable OpenAI Whisper checkpoint ({e})") from e
    dims = checked_dims(dims.to_dict(), path)
    weights = {}
    for k, v in state.items():
        if k == "encoder.positional_embedding":
            continue
        k = k.replace(".mlp.0.", ".mlp1.").replace(".mlp.2.", ".mlp2.")
        weights[k] = mx.array(v.float().numpy()) if v.dtype == torch.bfloat16 else mx.array(v.numpy())
    return Checkpoint(dims, conv_to_mlx(weights), None, path, heads_for_name(path.name))
