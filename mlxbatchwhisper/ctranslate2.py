"""CTranslate2 / faster-whisper checkpoints (model.bin, or model.bin.part1, .part2 … read in order)."""

from __future__ import annotations

import mmap
import re
import struct
from pathlib import Path

import mlx.core as mx
import numpy as np

from .checkpoint_formats import Checkpoint, CheckpointError, read_json
from .model import ModelDimensions

_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}


def read_ct2_variables(data: bytes | mmap.mmap, source: Path) -> dict[str, np.ndarray]:
    """Parse a CTranslate2 model.bin (binary version ≥ 5) into named arrays, aliases resolved."""
    pos = 0

    def take(fmt: str):
        nonlocal pos
        size = struct.calcsize(fmt)
        if pos + size > len(data):
            raise CheckpointError(f"{source}: truncated at byte {pos} of {len(data)}")
        (value,) = struct.unpack_from(fmt, data, pos)
        pos += size
        return value

    def string() -> str:
        nonlocal pos
        n = take("H")
        text = data[pos : pos + n - 1].decode("utf-8", errors="replace")
        pos += n
        return text

    version = take("I")
    if not 5 <= version <= 6:
        raise CheckpointError(f"{source}: CTranslate2 binary version {version} is not supported (5–6)")
    spec = string()
    if spec != "WhisperSpec":
        raise CheckpointError(f"{source}: a CTranslate2 {spec}, not a Whisper model")
    take("I")  # spec revision
    variables = {}
    for _ in range(take("I")):
        name = string()
        shape = tuple(take("I") for _ in range(take("B")))
        type_id, nbytes = take("B"), take("I")
        if pos + nbytes > len(data):
            raise CheckpointError(f"{source}: truncated inside variable {name!r}")
        raw = np.frombuffer(data, dtype=np.uint8, count=nbytes, offset=pos)
        pos += nbytes
        if type_id == 5:  # bfloat16: widen to float32 through the upper half-words
            arr = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
        elif type_id in _CT2_DTYPES:
            arr = raw.view(_CT2_DTYPES[type_id])
        else:
            raise CheckpointError(f"{source}: variable {name!r} has unknown type id {type_id}")
        variables[name] = arr.reshape(shape)
    for _ in range(take("I")):
        alias, target = string(), string()
        variables[alias] = variables[target]
    return variables


def _ct2_weight(v: dict[str, np.ndarray], prefix: str) -> np.ndarray:
    """A linear layer's weight, dequantized when CTranslate2 stored it as int8 with row scales."""
    w = v[f"{prefix}/weight"]
    scale = v.get(f"{prefix}/weight_scale")
    if w.dtype == np.int8:
        if scale is None:
            raise CheckpointError(f"{prefix}: int8 weight without weight_scale")
        return w.astype(np.float32) / scale.astype(np.float32).reshape(-1, 1)
    return w


def read_ct2(path: Path) -> Checkpoint:
    """A CTranslate2 checkpoint directory (its model.bin mapped, or its parts joined in order)."""
    parts = sorted(path.glob("model.bin.part*"), key=lambda p: int(re.sub(r"\D", "", p.suffix) or 0))
    files = [path / "model.bin"] if (path / "model.bin").exists() else parts
    try:
        if len(files) == 1:  # mapped, not read: the file is not held in memory besides the weights
            with open(files[0], "rb") as f:
                data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if f.seek(0, 2) else b""
        else:
            data = b"".join(f.read_bytes() for f in files)
    except OSError as e:
        raise CheckpointError(f"{path}: could not read {e.filename}: {e.strerror}") from e
    source = files[0] if len(files) == 1 else path / "model.bin.part*"
    v = read_ct2_variables(data, source)
    try:
        dims = _ct2_dims(v)
        config = path / "config.json"
        heads = read_json(config).get("alignment_heads") if config.exists() else None
        return Checkpoint(dims, _ct2_weights(v, dims), None, path, heads)
    except KeyError as e:
        raise CheckpointError(f"{source}: missing variable {e}") from e


def _ct2_dims(v: dict[str, np.ndarray]) -> ModelDimensions:
    def n_layers(side: str) -> int:
        return len({m.group(1) for k in v if (m := re.match(rf"{side}/layer_(\d+)/", k))})

    audio, text = v["encoder/position_encodings/encodings"].shape, v["decoder/position_encodings/encodings"].shape
    return ModelDimensions(
        n_mels=v["encoder/conv1/weight"].shape[1],
        n_audio_ctx=audio[0],
        n_audio_state=audio[1],
        n_audio_head=int(v["encoder/num_heads"]),
        n_audio_layer=n_layers("encoder"),
        n_vocab=v["decoder/embeddings/weight"].shape[0],
        n_text_ctx=text[0],
        n_text_state=text[1],
        n_text_head=int(v["decoder/num_heads"]),
        n_text_layer=n_layers("decoder"),
    )


def _ct2_weights(v: dict[str, np.ndarray], dims: ModelDimensions) -> dict[str, mx.array]:
    out: dict[str, np.ndarray] = {}

    def linear(src: str, dst: str) -> None:
        out[f"{dst}.weight"] = _ct2_weight(v, src)
        if f"{src}/bias" in v:
            out[f"{dst}.bias"] = v[f"{src}/bias"]

    def norm(src: str, dst: str) -> None:
        out[f"{dst}.weight"], out[f"{dst}.bias"] = v[f"{src}/gamma"], v[f"{src}/beta"]

    def split(src: str, dsts: list[str]) -> None:
        """A fused projection (q,k,v or k,v) into its parts; the key has no bias in Whisper."""
        weights = np.split(_ct2_weight(v, src), len(dsts))
        biases = np.split(v[f"{src}/bias"], len(dsts))
        for dst, w, b in zip(dsts, weights, biases):
            out[f"{dst}.weight"] = w
            if not dst.endswith(".key"):
                out[f"{dst}.bias"] = b

    for side, n_layer in (("encoder", dims.n_audio_layer), ("decoder", dims.n_text_layer)):
        for i in range(n_layer):
            src, dst = f"{side}/layer_{i}", f"{side}.blocks.{i}"
            split(f"{src}/self_attention/linear_0", [f"{dst}.attn.query", f"{dst}.attn.key", f"{dst}.attn.value"])
            linear(f"{src}/self_attention/linear_1", f"{dst}.attn.out")
            norm(f"{src}/self_attention/layer_norm", f"{dst}.attn_ln")
            linear(f"{src}/ffn/linear_0", f"{dst}.mlp1")
            linear(f"{src}/ffn/linear_1", f"{dst}.mlp2")
            norm(f"{src}/ffn/layer_norm", f"{dst}.mlp_ln")
            if side == "decoder":
                linear(f"{src}/attention/linear_0", f"{dst}.cross_attn.query")
                split(f"{src}/attention/linear_1", [f"{dst}.cross_attn.key", f"{dst}.cross_attn.value"])
                linear(f"{src}/attention/linear_2", f"{dst}.cross_attn.out")
                norm(f"{src}/attention/layer_norm", f"{dst}.cross_attn_ln")
    for i in (1, 2):
        out[f"encoder.conv{i}.weight"] = v[f"encoder/conv{i}/weight"].transpose(0, 2, 1)
        out[f"encoder.conv{i}.bias"] = v[f"encoder/conv{i}/bias"]
    norm("encoder/layer_norm", "encoder.ln_post")
    norm("decoder/layer_norm", "decoder.ln")
    out["decoder.token_embedding.weight"] = v["decoder/embeddings/weight"]
    out["decoder.positional_embedding"] = v["decoder/position_encodings/encodings"]
    return {k: mx.array(np.ascontiguousarray(a)) for k, a in out.items()}
