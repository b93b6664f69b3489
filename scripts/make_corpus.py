#!/usr/bin/env python3
"""Synthesize the speech test corpus with known text (needs espeak-ng and ffmpeg).

Reads the passages from tests/data/passages.tsv (id, language, espeak-ng voice, speed, text) and writes into
OUT_DIR (default: corpus-audio):
  <id>.wav        one passage each, 16 kHz mono PCM16 (English d01-d16, fr/de/es/it one each)
  long_60s.wav    d01-d04 joined by 0.5-2 s silences, padded to 60 s
  long_form.wav   all English passages joined the same way (~3.3 min)
  manifest.json   per file: path, duration, language, reference text
Deterministic apart from the espeak-ng version, which the manifest records.
Usage: scripts/make_corpus.py [OUT_DIR]
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np

SR = 16000
PASSAGES = Path(__file__).resolve().parents[1] / "tests" / "data" / "passages.tsv"
SEED = 7  # the silences between joined passages


def synthesize(voice: str, speed: int, text: str) -> np.ndarray:
    """One passage spoken by espeak-ng, as 16 kHz mono int16 samples."""
    with tempfile.TemporaryDirectory() as tmp:
        raw, pcm = f"{tmp}/raw.wav", f"{tmp}/out.raw"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", raw, text], check=True)
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-i", raw, "-ar", str(SR), "-ac", "1", "-f", "s16le", pcm], check=True
        )
        return np.fromfile(pcm, dtype=np.int16)


def write_wav(path: Path, pcm: np.ndarray) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes(pcm.tobytes())


def join(parts: list[np.ndarray], rng: np.random.Generator, pad_to: float | None = None) -> np.ndarray:
    """Passages separated by 0.5-2 s of silence, with 0.5 s at each end; padded or cut to `pad_to` seconds."""

    def silence(seconds: float) -> np.ndarray:
        return np.zeros(int(seconds * SR), np.int16)

    out = [silence(0.5)]
    for i, part in enumerate(parts):
        out += [part] if i == 0 else [silence(rng.uniform(0.5, 2.0)), part]
    pcm = np.concatenate([*out, silence(0.5)])
    if pad_to:
        pcm = np.concatenate([pcm, silence(max(0.0, pad_to - len(pcm) / SR))])[: int(pad_to * SR)]
    return pcm


def read_passages(path: Path = PASSAGES) -> list[tuple[str, str, str, int, str]]:
    """(id, language, voice, speed, text) rows of the passages file."""
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines()[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 5 or not fields[3].isdigit():
            raise ValueError(f"{path}:{n}: expected id, lang, voice, speed, text separated by tabs")
        pid, lang, voice, speed, text = fields
        rows.append((pid, lang, voice, int(speed), text))
    return rows


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "corpus-audio")
    missing = [tool for tool in ("espeak-ng", "ffmpeg") if shutil.which(tool) is None]
    if missing:
        sys.exit(f"make_corpus.py needs {' and '.join(missing)} (apt-get install espeak-ng ffmpeg)")
    out.mkdir(parents=True, exist_ok=True)
    rows = read_passages()
    files, pcm = {}, {}
    for pid, lang, voice, speed, text in rows:
        pcm[pid] = synthesize(voice, speed, text)
        write_wav(out / f"{pid}.wav", pcm[pid])
        files[pid] = {"path": f"{pid}.wav", "language": lang, "text": text, "duration_s": round(len(pcm[pid]) / SR, 3)}
    english = [row[0] for row in rows if row[1] == "en"]
    rng = np.random.default_rng(SEED)
    for name, ids, pad in (("long_60s", english[:4], 60.0), ("long_form", english, None)):
        joined = join([pcm[i] for i in ids], rng, pad)
        write_wav(out / f"{name}.wav", joined)
        files[name] = {
            "path": f"{name}.wav",
            "language": "en",
            "duration_s": round(len(joined) / SR, 3),
            "text": " ".join(files[i]["text"] for i in ids),
        }
    version = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout.strip()
    manifest = {"sample_rate": SR, "espeak_ng": version, "files": files}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    print(f"{len(files)} files in {out}")


if __name__ == "__main__":
    main()
