#!/usr/bin/env python3
"""One encoder window (30 s of real speech, batch 1), timed in a checkout of this project, on the CPU.

Each (tree, model) is timed in a child process of its own (the fastest of 5 passes after a warm-up), and
the trees are interleaved round by round, so that a shared machine's load falls on all of them alike.
A tree is a checkout with its native kernels built (`python setup.py build_ext --inplace`), e.g. a
`git worktree` of an earlier commit, and the test audio made (`corpus-audio/`, scripts/make_test_data.py).
Usage: python benchmarks/encoder_window.py [--trees . ../old] [--models tiny.en base] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

_CHILD = """
import json, sys, time
from pathlib import Path
tree = Path(sys.argv[1]).resolve()
sys.path[:0] = [str(tree), str(tree / "tests")]
import mlxbatchwhisper
import mlx.core as mx
from mlxbatchwhisper.audio import log_mel_spectrogram
from reference import our_model, pyannote_sample
assert Path(mlxbatchwhisper.__file__).resolve().is_relative_to(tree), mlxbatchwhisper.__file__
audio, out = pyannote_sample()[: 16000 * 30], {}
for name in sys.argv[2:]:
    model = our_model(name).model
    mel, _ = log_mel_spectrogram(audio, n_mels=model.dims.n_mels)
    mx.eval(model.embed_audio(mel))
    times = []
    for _ in range(5):
        start = time.perf_counter()
        mx.eval(model.embed_audio(mel))
        times.append(time.perf_counter() - start)
    out[name] = min(times) * 1000
print(json.dumps(out))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trees", nargs="+", default=["."], help="checkouts to time, interleaved")
    parser.add_argument("--models", nargs="+", default=["tiny.en", "base"])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    info = subprocess.run(
        [sys.executable, "-c", "import mlxbatchwhisper, json; print(json.dumps(mlxbatchwhisper.runtime_info()))"],
        capture_output=True,
        text=True,
        check=True,
    )
    print(info.stdout.strip())
    times: dict[str, dict[str, list[float]]] = {t: {m: [] for m in args.models} for t in args.trees}
    for r in range(args.rounds):
        for tree in args.trees:
            out = subprocess.run(
                [sys.executable, "-c", _CHILD, tree, *args.models], capture_output=True, text=True, check=True
            )
            got = json.loads(out.stdout.strip().splitlines()[-1])
            for m in args.models:
                times[tree][m].append(got[m])
            print(f"round {r + 1} {tree}: " + ", ".join(f"{m} {got[m]:.1f} ms" for m in args.models), flush=True)
    print("\n| tree | " + " | ".join(f"{m} window (ms, each round)" for m in args.models) + " |")
    print("|---|" + "---|" * len(args.models))
    for tree in args.trees:
        cells = [" / ".join(f"{t:.0f}" for t in times[tree][m]) for m in args.models]
        print(f"| {tree} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
