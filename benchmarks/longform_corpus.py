#!/usr/bin/env python3
"""Long-form transcription against the peers, same weights, one run (CPU): RTF and WER.

On the corpus's long_60s (four passages with pauses, 60 s) and long_form (all English passages,
~3.3 min):
- ours: Silero VAD, windows of ≤ 30 s, batch 16 (`transcribe_audio`), greedy and beam 5, and
  without timestamps (one segment per window, as faster-whisper's batched mode decodes);
- mlx-whisper's `transcribe` (sequential 30 s windows), float32;
- faux batching: our VAD's windows transcribed one by one with mlx-whisper (the seed's pipeline);
- faster-whisper's BatchedInferencePipeline (its own VAD, batch 16), float32 and int8, with its
  default beam 5 and greedy;
- openai-whisper's `transcribe` (the reference implementation), float32.
All with their default temperature fallback, in English. WER is against the corpus text after
openai-whisper's English normalizer.
Usage: python benchmarks/longform_corpus.py [--models tiny.en] [--json OUT]
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
from mlxbatchwhisper import BatchedWhisper, vad  # noqa: E402
from mlxbatchwhisper.convert import convert  # noqa: E402
from mlxbatchwhisper.schedule import plan_windows  # noqa: E402
from reference import corpus_audio, ct2_model_dir, manifest, openai_model, wer  # noqa: E402

FILES = ("long_60s", "long_form")


def runners(name: str, mlx_dir: Path) -> dict:
    import mlx_whisper
    import whisper
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    ours = BatchedWhisper.from_pretrained(name)
    ct2 = str(ct2_model_dir(name))
    fw = {
        ct: BatchedInferencePipeline(WhisperModel(ct2, device="cpu", compute_type=ct, cpu_threads=2))
        for ct in ("float32", "int8")
    }

    def faux(audio):
        regions, probs = vad.get_speech_timestamps(audio, return_probabilities=True)
        windows = sorted(plan_windows([[(r["start"], r["end"]) for r in regions]], 30, [probs]), key=lambda w: w.start)
        return " ".join(
            mlx_whisper.transcribe(
                audio[int(w.start * 16000) : int(w.end * 16000)],
                path_or_hf_repo=str(mlx_dir),
                fp16=False,
                language="en",
            )["text"]
            for w in windows
        )

    def fw_run(compute: str, beam: int):
        return lambda a: " ".join(
            s.text for s in fw[compute].transcribe(a, batch_size=16, language="en", beam_size=beam)[0]
        )

    def ours_run(beam: int | None, without_timestamps: bool = False):
        return lambda a: " ".join(
            s["text"]
            for s in ours.transcribe_audio(
                a, batch_size=16, language="en", beam_size=beam, without_timestamps=without_timestamps
            )[0]["segments"]
        )

    return {
        "mlxbatchwhisper VAD + batch 16": ours_run(None),
        "mlxbatchwhisper VAD + batch 16, no timestamps": ours_run(None, True),
        "mlxbatchwhisper VAD + batch 16, beam 5": ours_run(5),
        "mlx-whisper transcribe (sequential)": lambda a: mlx_whisper.transcribe(
            a, path_or_hf_repo=str(mlx_dir), fp16=False, language="en"
        )["text"],
        "faux batching (our VAD, mlx-whisper one by one)": faux,
        "faster-whisper batched 16 float32": fw_run("float32", 1),
        "faster-whisper batched 16 float32, beam 5": fw_run("float32", 5),
        "faster-whisper batched 16 int8": fw_run("int8", 1),
        "faster-whisper batched 16 int8, beam 5": fw_run("int8", 5),
        "openai-whisper transcribe": lambda a: whisper.transcribe(openai_model(name), a, fp16=False, language="en")[
            "text"
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny.en"])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    print(json.dumps(mlxbatchwhisper.runtime_info()))
    rows = []
    for name in args.models:
        with tempfile.TemporaryDirectory() as tmp:
            mlx_dir = Path(tmp) / "mlx"
            convert(name, mlx_dir, dtype="float32")
            for label, run in runners(name, mlx_dir).items():
                run(corpus_audio("d01"))  # warm-up
                for f in FILES:
                    audio = corpus_audio(f)
                    start = time.perf_counter()
                    text = run(audio)
                    wall = time.perf_counter() - start
                    rows.append(
                        {
                            "model": name,
                            "impl": label,
                            "file": f,
                            "rtf": len(audio) / 16000 / wall,
                            "wall_s": wall,
                            "wer": wer([manifest()[f]["text"]], [text]),
                        }
                    )
                    r = rows[-1]
                    print(f"{name:8s} {f:10s} {label:48s} RTF {r['rtf']:6.1f}  WER {100 * r['wer']:5.1f}%", flush=True)
        by = {(r["impl"], r["file"]): r for r in rows if r["model"] == name}
        for f in FILES:
            ours = by[("mlxbatchwhisper VAD + batch 16", f)]["rtf"]
            beam = by[("mlxbatchwhisper VAD + batch 16, beam 5", f)]["rtf"]
            plain = by[("mlxbatchwhisper VAD + batch 16, no timestamps", f)]["rtf"]
            fw = by[("faster-whisper batched 16 float32", f)]["rtf"]
            print(
                f"  {f}: ours / faux batching "
                f"{ours / by[('faux batching (our VAD, mlx-whisper one by one)', f)]['rtf']:.2f}x"
                f" (target >= 4); / faster-whisper float32 batched (greedy, no timestamps): ours without"
                f" timestamps {plain / fw:.2f}x, with {ours / fw:.2f}x; beam 5 "
                f"{beam / by[('faster-whisper batched 16 float32, beam 5', f)]['rtf']:.2f}x (target >= 1)"
            )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
