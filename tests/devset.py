"""The real-speech dev set (scripts/make_devset.py): files, models, WER, openai-whisper's transcripts (cached)."""

from __future__ import annotations

import json
import os
import unicodedata
from functools import cache
from pathlib import Path

import numpy as np

from reference import ROOT, normalize, openai_model, our_model, read_wav

DEVSET = Path(os.environ.get("MLXBW_DEVSET", ROOT / "devset"))


def model_for(language: str) -> str:
    """tiny.en for English, multilingual base for the others."""
    return "tiny.en" if language == "en" else "base"


@cache
def devset() -> dict:
    """The dev set's manifest: name → {path, language, text, duration_s, source[, long]}."""
    path = DEVSET / "manifest.json"
    if not path.exists():
        import pytest

        pytest.skip(f"no dev set at {DEVSET}: run scripts/make_devset.py")
    return json.loads(path.read_text())["files"]


def folder() -> list[str]:
    """The dev set's files without the long one."""
    return [k for k, v in devset().items() if not v.get("long")]


def devset_audio(name: str) -> np.ndarray:
    return read_wav(DEVSET / devset()[name]["path"])


def _words(text: str, language: str) -> str:
    """openai-whisper's normalizer; other languages also lose diacritics (the Spanish transcripts lack them)."""
    text = normalize(text, language)
    if language != "en":
        text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return text


def file_wer(name: str, hypothesis: str, reference: str | None = None) -> float:
    """WER of one dev-set file's transcript against its reference text (or against `reference`)."""
    import jiwer

    language = devset()[name]["language"]
    return jiwer.wer(_words(reference or devset()[name]["text"], language), _words(hypothesis, language))


def _openai_cache() -> Path:
    return DEVSET / "openai-transcribe.json"


def store_openai_transcripts(texts: dict[str, str]) -> None:
    """Put openai-whisper transcripts (made as `openai_transcripts` makes them) into its cache."""
    path = _openai_cache()
    cached = json.loads(path.read_text()) if path.exists() else {}
    cached.update({f"{n}:{model_for(devset()[n]['language'])}": t for n, t in texts.items()})
    path.write_text(json.dumps(cached, indent=1, ensure_ascii=False))


def openai_transcripts(names: list[str], compute: bool = True) -> dict[str, str]:
    """openai-whisper's `transcribe` (defaults, language given) on our weights, cached in the dev-set folder
    (compute=False: only the files already there)."""
    import torch
    import whisper

    path = _openai_cache()
    cached = json.loads(path.read_text()) if path.exists() else {}
    for name in names:
        language = devset()[name]["language"]
        key = f"{name}:{model_for(language)}"
        if key not in cached and compute:
            audio = torch.from_numpy(devset_audio(name))
            cached[key] = whisper.transcribe(openai_model(model_for(language)), audio, fp16=False, language=language)[
                "text"
            ]
            path.write_text(json.dumps(cached, indent=1, ensure_ascii=False))
    keys = {n: f"{n}:{model_for(devset()[n]['language'])}" for n in names}
    return {n: cached[k] for n, k in keys.items() if k in cached}


def ours(names: list[str], **options) -> dict[str, str]:
    """Our `transcribe_audio` transcripts (language given, `options` passed on), each model's files batched."""
    out = {}
    for model in sorted({model_for(devset()[n]["language"]) for n in names}):
        group = [n for n in names if model_for(devset()[n]["language"]) == model]
        results = our_model(model).transcribe_audio(
            [devset_audio(n) for n in group], language=[devset()[n]["language"] for n in group], **options
        )
        for n, r in zip(group, results):
            out[n] = " ".join(s["text"] for s in r["segments"])
    return out
