#!/usr/bin/env python3
"""Build the real-speech dev set (git-ignored) that tunes and bounds the VAD mode: recordings with transcripts.

Sources (installed packages only):
- pyannote-audio's wheel (pip): its 30 s two-speaker telephone sample, transcript from sample.stm;
- Debian's asterisk-core-sounds-{en,fr,es}-wav with asterisk-core-sounds-{en,fr,es} (transcripts in
  /usr/share/doc/.../core-sounds-LANG.txt.gz): studio-read telephone prompts by one speaker per
  language (en-US, fr-CA, es-MX). Prompts of three or more words are shuffled (fixed seed) and joined,
  with pauses of 0.2-6 s between them, into recordings of 30-90 s, plus one ~5 min English file for
  the long-file benchmark.
Writes OUT/*.wav (16 kHz mono 16-bit) and OUT/manifest.json ({"files": {name: {path, language, text,
duration_s, source}}}); `long` marks the long file, which the dev set's WER test leaves out.
Usage: scripts/make_devset.py [OUT_DIR]   (default: devset, or $MLXBW_DEVSET; kept if its manifest exists)
"""

from __future__ import annotations

import gzip
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import wave
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mlxbatchwhisper.audio import SAMPLE_RATE, load_audio  # noqa: E402

SOUNDS = Path("/usr/share/asterisk/sounds")
DOCS = Path("/usr/share/doc")
# (language, files, first target length in seconds, long file length or 0)
PLAN = [("en", 5, 35, 300), ("fr", 3, 40, 0), ("es", 3, 45, 0)]
SEED = 12


def write_wav(path: Path, audio: np.ndarray) -> None:
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm.tobytes())


def pyannote_sample(out: Path) -> dict:
    """pyannote-audio's sample.wav and the text of its sample.stm, in time order."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "pyannote-audio"]
            + ["-d", tmp],
            check=True,
        )
        with zipfile.ZipFile(next(Path(tmp).glob("*.whl"))) as wheel:
            (out / "pyannote_sample.wav").write_bytes(wheel.read("pyannote/audio/sample/sample.wav"))
            stm = wheel.read("pyannote/audio/sample/sample.stm").decode()
    rows = sorted((float(p[3]), p[5]) for p in (line.split(maxsplit=5) for line in stm.splitlines()) if len(p) == 6)
    audio = load_audio(out / "pyannote_sample.wav")
    return {
        "path": "pyannote_sample.wav",
        "language": "en",
        "text": " ".join(t for _, t in rows),
        "duration_s": round(len(audio) / SAMPLE_RATE, 3),
        "source": "pip: pyannote-audio (pyannote/audio/sample/sample.wav, sample.stm)",
    }


def prompts(language: str) -> list[tuple[Path, str]]:
    """(wav, transcript) of the prompts of three or more words, without bracketed notes, sorted by name."""
    index = DOCS / f"asterisk-core-sounds-{language}" / f"core-sounds-{language}.txt.gz"
    if not index.exists():
        sys.exit(
            f"{index} missing: apt-get install asterisk-core-sounds-{language} asterisk-core-sounds-{language}-wav"
        )
    out = []
    for line in gzip.open(index, "rt", encoding="utf-8", errors="replace"):
        name, sep, text = line.partition(":")
        text = text.strip()
        wav = SOUNDS / language / f"{name.strip()}.wav"
        if line.startswith(";") or not sep or "[" in text or len(re.findall(r"\w+", text)) < 3 or not wav.exists():
            continue
        out.append((wav, text))
    return sorted(out)


def recordings(language: str, count: int, first: float, long: float, rng: random.Random) -> list[tuple]:
    """Recordings of joined prompts: `count` of first, first + 12, ... seconds, then one of `long` seconds."""
    pool = prompts(language)
    rng.shuffle(pool)
    targets = [first + 12 * k for k in range(count)] + ([long] if long else [])
    made = []
    for k, target in enumerate(targets):
        parts, texts, length = [], [], 0.0
        while length < target and pool:
            wav, text = pool.pop()
            speech = load_audio(wav)
            pause = rng.uniform(3.0, 6.0) if rng.random() < 0.15 else rng.uniform(0.2, 1.5)
            parts += [speech, np.zeros(int(pause * SAMPLE_RATE), np.float32)]
            texts.append(text)
            length += (len(speech) + len(parts[-1])) / SAMPLE_RATE
        name = f"{language}_prompts_{'long' if long and k == count else f'{k + 1:02d}'}"
        made.append((name, np.concatenate(parts[:-1]), " ".join(texts), long and k == count))
    return made


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("MLXBW_DEVSET", ROOT / "devset"))
    if (out / "manifest.json").exists():
        print("dev set already in", out)
        return
    out.mkdir(parents=True, exist_ok=True)
    files = {"pyannote_sample": pyannote_sample(out)}
    rng = random.Random(SEED)
    for language, count, first, long in PLAN:
        package = f"apt: asterisk-core-sounds-{language}-wav, asterisk-core-sounds-{language}"
        for name, audio, text, is_long in recordings(language, count, first, long, rng):
            write_wav(out / f"{name}.wav", audio)
            files[name] = {
                "path": f"{name}.wav",
                "language": language,
                "text": text,
                "duration_s": round(len(audio) / SAMPLE_RATE, 3),
                "source": package,
                **({"long": True} if is_long else {}),
            }
    (out / "manifest.json").write_text(json.dumps({"files": files}, indent=1, ensure_ascii=False))
    total = sum(f["duration_s"] for f in files.values())
    print(f"dev set in {out}: {len(files)} files, {total / 60:.1f} min")


if __name__ == "__main__":
    main()
