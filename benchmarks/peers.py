#!/usr/bin/env python3
"""Ours against the peers on the same weights and segments, in one run (CPU).

Segments: the corpus's English passages (≈11 s each). Every implementation decodes greedily
(temperature 0, beam 1) in English without the previous-text prompt:
- ours at batch 1 and 16 (float32);
- mlx-whisper transcribing the segments one by one (the faux batching we replace), float32, with
  the same BLAS bound in this process;
- faster-whisper (CTranslate2, the same weights) one by one in float32 and int8, and its
  BatchedInferencePipeline(batch_size=16) in float32 and int8 over the segments laid end to end
  (with clip timestamps, no VAD);
- openai-whisper's decode, one by one, whose texts are the agreement reference.
Prints wall time, real-time factor, agreement with openai-whisper (1 - WER between the texts,
normalized; with --only, against the first implementation listed), exact matches and WER against the
corpus text; ratios against the targets.
Usage: python benchmarks/peers.py [--models tiny.en base] [--json OUT] [--only LABEL ...] [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import numpy as np  # noqa: E402

import mlxbatchwhisper  # noqa: E402  (binds the fast BLAS before anything imports mlx)
from mlxbatchwhisper import BatchedWhisper  # noqa: E402
from mlxbatchwhisper.convert import convert  # noqa: E402
from reference import corpus_audio, ct2_model_dir, manifest, normalize, openai_model, segment_names, wer  # noqa: E402

SR = 16000


def timed(fn):
    start = time.perf_counter()
    texts = fn()
    return texts, time.perf_counter() - start


def ours(name: str, batch: int):
    model = BatchedWhisper.from_pretrained(name)

    def run(audios):
        return [r.text for r in model.transcribe(audios, batch_size=batch, temperature=0.0, language="en")]

    return run


def mlx_whisper_loop(mlx_dir: Path):
    import mlx_whisper

    def run(audios):
        return [
            mlx_whisper.transcribe(
                a,
                path_or_hf_repo=str(mlx_dir),
                temperature=0.0,
                fp16=False,
                language="en",
                condition_on_previous_text=False,
            )["text"].strip()
            for a in audios
        ]

    return run


def faster_whisper(ct2_dir: Path, compute_type: str, batched: bool):
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    model = WhisperModel(str(ct2_dir), device="cpu", compute_type=compute_type, cpu_threads=2)
    options = dict(language="en", beam_size=1, temperature=0.0, condition_on_previous_text=False)

    def one_by_one(audios):
        return [" ".join(s.text.strip() for s in model.transcribe(a, vad_filter=False, **options)[0]) for a in audios]

    def pipeline(audios):
        gap = np.zeros(SR, np.float32)
        joined = np.concatenate([x for a in audios for x in (a, gap)])
        clips, start = [], 0.0
        for a in audios:
            clips.append({"start": start, "end": start + len(a) / SR})
            start += len(a) / SR + 1.0
        segments, _ = BatchedInferencePipeline(model).transcribe(
            joined, batch_size=16, clip_timestamps=clips, vad_filter=False, without_timestamps=True, **options
        )
        texts = [[] for _ in audios]
        for s in segments:
            texts[max(i for i, c in enumerate(clips) if c["start"] <= s.start + 0.01)].append(s.text.strip())
        return [" ".join(t) for t in texts]

    return pipeline if batched else one_by_one


def openai_decode(name: str):
    import torch
    import whisper

    model = openai_model(name)

    def run(audios):
        options = whisper.DecodingOptions(temperature=0.0, language="en", fp16=False)
        out = []
        for a in audios:
            mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.from_numpy(a)), n_mels=model.dims.n_mels)
            out.append(whisper.decode(model, mel, options).text)
        return out

    return run


def compare(name: str, only: list[str] | None = None, repeat: int = 1) -> list[dict]:
    names = [n for n in segment_names() if manifest()[n]["language"] == "en"]
    audios = [corpus_audio(n) for n in names]
    refs = [manifest()[n]["text"] for n in names]
    seconds = sum(len(a) for a in audios) / SR
    ct2_dir = ct2_model_dir(name)
    with tempfile.TemporaryDirectory() as tmp:
        mlx_dir = Path(tmp) / "mlx"
        convert(name, mlx_dir, dtype="float32")
        runners = {
            "openai-whisper decode, one by one": openai_decode(name),
            "mlxbatchwhisper batch 1": ours(name, 1),
            "mlxbatchwhisper batch 16": ours(name, 16),
            "mlx-whisper, one by one": mlx_whisper_loop(mlx_dir),
            "faster-whisper float32, one by one": faster_whisper(ct2_dir, "float32", False),
            "faster-whisper int8, one by one": faster_whisper(ct2_dir, "int8", False),
            "faster-whisper float32 batched 16": faster_whisper(ct2_dir, "float32", True),
            "faster-whisper int8 batched 16": faster_whisper(ct2_dir, "int8", True),
        }
        if only:
            runners = {label: run for label, run in runners.items() if label in only}
        for run in runners.values():
            run(audios[:1])  # warm-up: loads, compiles, touches memory
        results = {label: (None, float("inf")) for label in runners}
        for _ in range(repeat):  # interleaved rounds, the best wall time of each
            for label, run in runners.items():
                texts, wall = timed(lambda: run(audios))
                results[label] = (texts, min(wall, results[label][1]))
        rows, reference = [], None
        for label, (texts, wall) in results.items():
            reference = reference or texts
            same = sum(normalize(a) == normalize(b) for a, b in zip(texts, reference))
            rows.append(
                {
                    "model": name,
                    "impl": label,
                    "wall_s": wall,
                    "rtf": seconds / wall,
                    "agreement": 1 - wer(reference, texts),
                    "exact": f"{same}/{len(texts)}",
                    "wer": wer(refs, texts),
                }
            )
            r = rows[-1]
            print(
                f"{name:8s} {label:38s} {r['wall_s']:7.2f} s  RTF {r['rtf']:6.1f}  agreement {r['agreement']:.3f}"
                f"  exact {r['exact']:>5s}  WER {r['wer']:.3f}",
                flush=True,
            )
    return rows


def ratios(rows: list[dict]) -> None:
    by = {r["impl"]: r["rtf"] for r in rows}
    ours16 = by["mlxbatchwhisper batch 16"]
    if "mlxbatchwhisper batch 1" in by:
        print(f"  batch 16 / batch 1: {ours16 / by['mlxbatchwhisper batch 1']:.2f}x (target >= 4)")
    if "mlx-whisper, one by one" in by:
        print(f"  batch 16 / mlx-whisper one by one: {ours16 / by['mlx-whisper, one by one']:.2f}x (target >= 4)")
    print(
        f"  batch 16 / faster-whisper float32 batched: {ours16 / by['faster-whisper float32 batched 16']:.2f}x"
        f" (target >= 1.2); / int8 batched: {ours16 / by['faster-whisper int8 batched 16']:.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny.en"])
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--only", nargs="+", help="these implementations (labels as printed); the first is the reference"
    )
    parser.add_argument("--repeat", type=int, default=1, help="interleaved rounds; each row's best wall time")
    args = parser.parse_args()
    info = mlxbatchwhisper.runtime_info()  # CPU model, BLAS chosen and its measured GFLOP/s, MLX
    print(json.dumps(info))
    rows = []
    for name in args.models:
        model_rows = compare(name, args.only, args.repeat)
        ratios(model_rows)
        rows += model_rows
    if args.json:
        args.json.write_text(json.dumps({"runtime": info, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
