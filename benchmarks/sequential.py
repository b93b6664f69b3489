#!/usr/bin/env python3
"""mode="sequential" (openai-whisper's own long-form algorithm) on a folder of files, against the peers (CPU).

Files: the corpus's sixteen English passages and long_60s (17 files, ~237 s). Every implementation runs
openai-whisper's `transcribe` algorithm with its defaults (temperature fallback, previous-text prompts),
in English:
- ours, all files at once (`transcribe_audio(files, mode="sequential", batch_size=16)`): one window of
  every file per batch;
- ours, one file at a time (batch 1);
- openai-whisper's and mlx-whisper's `transcribe`, one file at a time.
Prints wall time, RTF, and how many files came out token-identical to openai-whisper's.
Usage: python benchmarks/sequential.py [--model tiny.en] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import mlxbatchwhisper  # noqa: E402  (binds the fast BLAS first)
from mlxbatchwhisper import BatchedWhisper  # noqa: E402
from mlxbatchwhisper.convert import convert  # noqa: E402
from mlxbatchwhisper.sequential import SequentialOptions, SequentialTranscriber  # noqa: E402
from reference import corpus_audio, manifest, openai_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import mlx_whisper
    import torch
    import whisper

    print(json.dumps(mlxbatchwhisper.runtime_info()))
    names = [n for n, v in manifest().items() if v["language"] == "en" and n != "long_form"]
    audios = {n: corpus_audio(n) for n in names}
    seconds = sum(len(a) for a in audios.values()) / 16000
    model = BatchedWhisper.from_pretrained(args.model)
    decoding, fallback, extra = model._options("transcribe", {})
    seq = SequentialTranscriber(model.model, model.tokenizer, decoding, fallback, SequentialOptions(), **extra)

    def ours(batch: int) -> dict:
        if batch == 1:
            return {n: dict(seq.run({n: a}, {n: "en"}, {n: ()}, 1))[n] for n, a in audios.items()}
        return dict(seq.run(audios, dict.fromkeys(audios, "en"), dict.fromkeys(audios, ()), batch))

    ref = openai_model(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        convert(args.model, Path(tmp) / "mlx", dtype="float32")
        runners = {
            "mlxbatchwhisper sequential, 17 files batched": lambda: ours(16),
            "mlxbatchwhisper sequential, one file at a time": lambda: ours(1),
            "openai-whisper transcribe, one file at a time": lambda: {
                n: whisper.transcribe(ref, torch.from_numpy(a), fp16=False, language="en") for n, a in audios.items()
            },
            "mlx-whisper transcribe, one file at a time": lambda: {
                n: mlx_whisper.transcribe(a, path_or_hf_repo=str(Path(tmp) / "mlx"), fp16=False, language="en")
                for n, a in audios.items()
            },
        }
        ours(16)  # warm-up
        rows, outputs = [], {}
        for label, run in runners.items():
            start = time.perf_counter()
            outputs[label] = run()
            wall = time.perf_counter() - start
            rows.append({"impl": label, "wall_s": wall, "rtf": seconds / wall})
    reference = outputs["openai-whisper transcribe, one file at a time"]
    for r in rows:
        out = outputs[r["impl"]]
        same = sum(
            [s["tokens"] for s in out[n]["segments"]] == [s["tokens"] for s in reference[n]["segments"]] for n in names
        )
        r["identical_files"] = f"{same}/{len(names)}"
        print(
            f"{r['impl']:48s} {r['wall_s']:7.1f} s  RTF {r['rtf']:6.1f}  token-identical to openai-whisper "
            f"{r['identical_files']}",
            flush=True,
        )
    print(
        f"{len(names)} files, {seconds:.0f} s of audio, model {args.model}; batched / one at a time: "
        f"{rows[1]['wall_s'] / rows[0]['wall_s']:.2f}x; "
        f"batched / openai-whisper: {rows[2]['wall_s'] / rows[0]['wall_s']:.2f}x"
    )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
