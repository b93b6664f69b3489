#!/usr/bin/env python3
"""Build the test data under corpus-audio/ (git-ignored): the synthetic corpus and real speech.

- the espeak-ng corpus from ../shared/corpus/make_corpus.py (needs espeak-ng and ffmpeg);
- pyannote-audio's 30 s two-speaker sample (sample.wav, sample.stm), from its wheel;
- silero-vad's wheel, whose ONNX model is the VAD reference.
Usage: scripts/make_test_data.py [OUT_DIR]   (default: corpus-audio)
"""
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAKE_CORPUS = ROOT.parent / "shared" / "corpus" / "make_corpus.py"
WHEELS = {"pyannote-audio": "pyannote/audio/sample/", "silero-vad": "silero_vad/data/"}


def fetch_wheel_files(package: str, prefix: str, out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        package, "-d", tmp], check=True)
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as z:
            for name in z.namelist():
                if name.startswith(prefix) and not name.endswith((".py", "/")):
                    (out / Path(name).name).write_bytes(z.read(name))


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "corpus-audio")
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "manifest.json").exists():
        subprocess.run([sys.executable, str(MAKE_CORPUS), str(out)], check=True)
    for package, prefix in WHEELS.items():
        marker = out / ("sample.wav" if package == "pyannote-audio" else "silero_vad.onnx")
        if not marker.exists():
            fetch_wheel_files(package, prefix, out)
    print("test data in", out)


if __name__ == "__main__":
    main()
