#!/usr/bin/env python3
"""What word timestamps cost, ours against the peers, on the same weights and segments in one run (CPU).

Segments: the corpus's English passages (≈11 s each), greedy, English, no previous-text prompt.
Each implementation runs twice, without and with word timestamps, and the ratio is the overhead:
- ours at batch 16 (`transcribe(segments, word_timestamps=True)`);
- openai-whisper's `transcribe`, one segment at a time;
- mlx-whisper's `transcribe`, one segment at a time (same BLAS bound in this process);
- faster-whisper float32, one by one and its BatchedInferencePipeline(batch_size=16).
Usage: python benchmarks/words.py [--model tiny.en] [--repeats 2] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import numpy as np  # noqa: E402

from mlxbatchwhisper import BatchedWhisper, runtime_info  # noqa: E402
from mlxbatchwhisper.convert import convert  # noqa: E402
from reference import corpus_audio, ct2_model_dir, manifest, openai_model, segment_names  # noqa: E402

SR = 16000
GREEDY = dict(temperature=0.0, language="en", condition_on_previous_text=False)


def ours(name: str):
    model = BatchedWhisper.from_pretrained(name)
    return lambda audios, words: model.transcribe(
        audios, batch_size=16, temperature=0.0, language="en", word_timestamps=words
    )


def openai_loop(name: str):
    import torch
    import whisper

    model = openai_model(name)
    return lambda audios, words: [
        whisper.transcribe(model, torch.from_numpy(a), fp16=False, word_timestamps=words, **GREEDY) for a in audios
    ]


def mlx_whisper_loop(path: Path):
    import mlx_whisper

    return lambda audios, words: [
        mlx_whisper.transcribe(a, path_or_hf_repo=str(path), fp16=False, word_timestamps=words, **GREEDY)
        for a in audios
    ]


def faster_whisper(name: str, batched: bool):
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    model = WhisperModel(str(ct2_model_dir(name)), device="cpu", compute_type="float32", cpu_threads=2)
    options = dict(language="en", beam_size=1, temperature=0.0, condition_on_previous_text=False)

    def one_by_one(audios, words):
        return [list(model.transcribe(a, vad_filter=False, word_timestamps=words, **options)[0]) for a in audios]

    def pipeline(audios, words):
        gap = np.zeros(SR, np.float32)
        joined = np.concatenate([x for a in audios for x in (a, gap)])
        clips, start = [], 0.0
        for a in audios:
            clips.append({"start": start, "end": start + len(a) / SR})
            start += len(a) / SR + 1.0
        segments, _ = BatchedInferencePipeline(model).transcribe(
            joined, batch_size=16, clip_timestamps=clips, vad_filter=False, word_timestamps=words, **options
        )
        return list(segments)

    return pipeline if batched else one_by_one


def best_of(repeats: int, run, audios, words: bool) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(audios, words)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each case; the fastest counts")
    parser.add_argument("--only", default=None, help="run only the implementations whose label contains this")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    names = [n for n in segment_names() if manifest()[n]["language"] == "en"]
    audios = [corpus_audio(n) for n in names]
    seconds = sum(len(a) for a in audios) / SR
    cpu = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
        platform.processor(),
    )
    print(f"{len(audios)} segments, {seconds:.0f} s of audio, model {args.model}, CPU {cpu}, {runtime_info()}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        mlx_dir = Path(tmp) / "mlx"
        convert(args.model, mlx_dir, dtype="float32")
        runners = {
            "mlxbatchwhisper batch 16": lambda: ours(args.model),
            "openai-whisper transcribe, one by one": lambda: openai_loop(args.model),
            "mlx-whisper transcribe, one by one": lambda: mlx_whisper_loop(mlx_dir),
            "faster-whisper float32, one by one": lambda: faster_whisper(args.model, batched=False),
            "faster-whisper float32 batched 16": lambda: faster_whisper(args.model, batched=True),
        }
        for label, make in runners.items():
            if args.only and args.only not in label:
                continue
            run = make()
            run(audios[:2], True)  # warm-up: loads, compiles, touches memory
            plain = best_of(args.repeats, run, audios, False)
            timed = best_of(args.repeats, run, audios, True)
            rows.append(
                {
                    "impl": label,
                    "without_s": plain,
                    "with_s": timed,
                    "overhead": timed / plain - 1,
                    "rtf_with_words": seconds / timed,
                }
            )
            print(
                f"{label:40s} without {plain:6.2f} s  with words {timed:6.2f} s  "
                f"overhead {100 * (timed / plain - 1):+5.1f}%"
                f"  RTF with words {seconds / timed:5.1f}",
                flush=True,
            )
    base = rows[0]["with_s"]
    for r in rows[1:] if rows[0]["impl"].startswith("mlxbatchwhisper") else []:
        print(f"ours with words / {r['impl']} with words: {r['with_s'] / base:.2f}x faster")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"cpu": cpu, "model": args.model, "seconds": seconds, "rows": rows}, indent=1)
        )


if __name__ == "__main__":
    main()
