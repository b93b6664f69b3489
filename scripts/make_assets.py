#!/usr/bin/env python3
"""Regenerate mlxbatchwhisper/assets/*.tiktoken (Whisper's BPE ranks) from the openai-whisper wheel.

The vocabularies are data published by OpenAI under the MIT license (assets/WHISPER_LICENSE).
Usage: scripts/make_assets.py [WHEEL]   (default: pip download openai-whisper into a temp dir)
"""

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ASSETS = Path(__file__).resolve().parents[1] / "mlxbatchwhisper" / "assets"
NAMES = ("gpt2.tiktoken", "multilingual.tiktoken")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        if len(sys.argv) > 1:
            wheel = Path(sys.argv[1])
        else:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "openai-whisper==20250625", "-d", tmp],
                check=True,
            )
            wheel = next(Path(tmp).glob("openai[-_]whisper*"))
        if wheel.suffix == ".whl":
            with zipfile.ZipFile(wheel) as z:
                for name in NAMES:
                    (ASSETS / name).write_bytes(z.read(f"whisper/assets/{name}"))
        else:  # an sdist
            import tarfile

            with tarfile.open(wheel) as t:
                for member in t.getmembers():
                    if member.name.endswith(tuple(f"whisper/assets/{n}" for n in NAMES)):
                        (ASSETS / Path(member.name).name).write_bytes(t.extractfile(member).read())
    for name in NAMES:
        print(ASSETS / name, (ASSETS / name).stat().st_size, "bytes")


if __name__ == "__main__":
    main()
