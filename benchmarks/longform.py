#!/usr/bin/env python3
"""Long recordings: both modes beside the peers on the real-speech dev set, same weights, one run (CPU).

Cases (`--cases`, run in turn; each is a function that returns rows):
- folder: the dev set's 12 files (30-108 s): English with tiny.en, French and Spanish with base,
  each implementation given all the files of a model at once (ours batches across them);
- long: the dev set's 5 min English recording (en_prompts_long), tiny.en.
Implementations, each with its own defaults but the language (given), on the CPU in float32:
- ours: `transcribe_audio(mode="vad")`, the same `without_timestamps=True` (one segment per window,
  as faster-whisper's batched pipeline decodes) and `mode="sequential"` (batch 16);
- openai-whisper's `transcribe` (the reference algorithm);
- faster-whisper: `WhisperModel.transcribe` (sequential, beam 5 by default) and `BatchedInferencePipeline`
  (its VAD, batch 16);
- whisperX is not run: its default VAD needs pyannote.audio, which is not installed (whisperX is installed
  without dependencies; pyannote.audio's pull in another torch).
WER ("wer", per-file mean) is against the dev set's transcripts, "wer_vs_openai" against openai-whisper's
output (this run's, or cached by an earlier run or by tests/devset.py when `--impls` leaves it out);
RTF is audio seconds per wall second over the case. Build the dev set first (scripts/make_devset.py).
Usage: python benchmarks/longform.py [--cases folder long] [--impls LABEL_PART ...] [--json OUT]
       python benchmarks/longform.py --short-files tiny.en [--short-source prompts|pieces]   (`short_files`)
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import mlxbatchwhisper  # noqa: E402  (binds the fast BLAS first)
from devset import (  # noqa: E402
    devset,
    devset_audio,
    file_wer,
    folder,
    model_for,
    openai_transcripts,
    store_openai_transcripts,
)
from reference import ct2_model_dir, openai_model, our_model  # noqa: E402

# an implementation: (model name, [(audio, language)]) -> one transcript per audio
Runner = Callable[[str, list], list[str]]
REFERENCE = "openai-whisper transcribe"


def runners() -> dict[str, Runner]:
    import torch
    import whisper
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    fw: dict[str, WhisperModel] = {}

    def faster(name: str) -> WhisperModel:
        if name not in fw:
            fw[name] = WhisperModel(str(ct2_model_dir(name)), device="cpu", compute_type="float32", cpu_threads=2)
        return fw[name]

    def ours(mode: str, without_timestamps: bool = False) -> Runner:
        def run(name, inputs):
            results = our_model(name).transcribe_audio(
                [a for a, _ in inputs],
                language=[lang for _, lang in inputs],
                batch_size=16,
                mode=mode,
                without_timestamps=without_timestamps,
            )
            return [" ".join(s["text"] for s in r["segments"]) for r in results]

        return run

    return {
        REFERENCE: lambda name, inputs: [
            whisper.transcribe(openai_model(name), torch.from_numpy(a), fp16=False, language=lang)["text"]
            for a, lang in inputs
        ],
        "ours, mode=vad": ours("vad"),
        "ours, mode=vad, without timestamps": ours("vad", without_timestamps=True),
        "ours, mode=sequential": ours("sequential"),
        "faster-whisper sequential": lambda name, inputs: [
            " ".join(s.text for s in faster(name).transcribe(a, language=lang)[0]) for a, lang in inputs
        ],
        "faster-whisper batched 16": lambda name, inputs: [
            " ".join(
                s.text for s in BatchedInferencePipeline(faster(name)).transcribe(a, language=lang, batch_size=16)[0]
            )
            for a, lang in inputs
        ],
    }


def run_case(case: str, names: list[str], impls: dict[str, Runner]) -> list[dict]:
    """Every implementation on the files `names` (grouped by model), timed; WER per file against the
    dev set's text and openai-whisper's transcript."""
    groups: dict[str, list[str]] = {}
    for n in names:
        groups.setdefault(model_for(devset()[n]["language"]), []).append(n)
    audios = {n: devset_audio(n) for n in names}
    seconds = sum(len(a) for a in audios.values()) / 16000
    texts: dict[str, dict[str, str]] = {}
    rows = []
    for label, run in impls.items():
        for name in groups:  # warm-up: load the model, first kernels
            run(name, [(audios[groups[name][0]][: 16000 * 5], devset()[groups[name][0]]["language"])])
        start = time.perf_counter()
        texts[label] = {}
        for name, group in groups.items():
            out = run(name, [(audios[n], devset()[n]["language"]) for n in group])
            texts[label].update(zip(group, out))
        wall = time.perf_counter() - start
        rows.append({"case": case, "impl": label, "files": len(names), "audio_s": seconds, "wall_s": wall})
        print(f"{case}: {label}: {wall:.1f} s", flush=True)
        if label == REFERENCE:
            store_openai_transcripts(texts[label])
    # this run's openai-whisper transcripts, else those an earlier run cached (files without one are left out)
    reference = openai_transcripts(names, compute=False)
    for row in rows:
        got = texts[row["impl"]]
        per_file = {n: file_wer(n, got[n]) for n in names}
        vs_openai = {n: file_wer(n, got[n], reference=text) for n, text in reference.items()}
        row.update(
            rtf=seconds / row["wall_s"],
            wer=sum(per_file.values()) / len(names),
            files_vs_openai=len(reference),
            wer_vs_openai=sum(vs_openai.values()) / max(1, len(reference)),
            worst_vs_reference_gap=max((per_file[n] - file_wer(n, text) for n, text in reference.items()), default=0),
            per_file=per_file,
            texts=got,
        )
    return rows


CASES: dict[str, Callable[[dict[str, Runner]], list[dict]]] = {
    "folder": lambda impls: run_case("folder", folder(), impls),
    "long": lambda impls: run_case("long", [n for n, f in devset().items() if f.get("long")], impls),
}


def short_pieces(source: str, count: int = 200) -> tuple[list, list[str | None]]:
    """`count` short inputs and their texts (None: unknown). "prompts": the shortest English Asterisk prompts of
    three or more words (real, independent utterances of 1-3 s, the dev set's source); "pieces": 2 s cut from
    the synthetic long_form one after the other (wrapping round), so speech runs across their edges."""
    import numpy as np

    if source == "pieces":
        from reference import corpus_audio

        audio, size = corpus_audio("long_form"), 2 * 16000
        return [np.take(audio, np.arange(k * size, (k + 1) * size), mode="wrap") for k in range(count)], [None] * count
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from make_devset import prompts

    from mlxbatchwhisper.audio import load_audio

    chosen = sorted(((load_audio(wav), text) for wav, text in prompts("en")), key=lambda p: len(p[0]))[:count]
    return [a for a, _ in chosen], [t for _, t in chosen]


def short_files(name: str, source: str, count: int = 200) -> None:
    """Many short files against one long file of the same speech, through the command (model loading included).

    Each of `count` short inputs (`short_pieces`) a WAV, and the same audio joined into one WAV; audio seconds
    per wall second of each as a ratio to the long file's (issue [reliability]'s target: >= 0.7), without and
    with --pack_short_inputs; WER of all the texts joined against the long file's text and, where the inputs'
    texts are known, against them (joined, and the mean of per-file WERs: text given to the wrong file counts).
    """
    import tempfile
    import wave

    import numpy as np

    from reference import wer

    pieces, truths = short_pieces(source, count)
    seconds = sum(len(p) for p in pieces) / 16000

    def write(path: Path, x: np.ndarray) -> None:
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
            w.writeframes((np.clip(x, -1, 1) * 32767).astype(np.int16).tobytes())

    print(f"{count} {source} of {seconds / count:.2f} s on average, {seconds:.0f} s in all")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = [tmp / f"s{k:03d}.wav" for k in range(count)]
        for path, x in zip(files, pieces):
            write(path, x)
        write(tmp / "long.wav", np.concatenate(pieces))
        runs = {
            "one long file": [str(tmp / "long.wav")],
            f"{count} files": [str(f) for f in files],
            f"{count} files, --pack_short_inputs": [*map(str, files), "--pack_short_inputs"],
        }
        rates, texts = {}, {}
        for label, argv in runs.items():
            out = tmp / label.replace(" ", "_").replace(",", "")
            command = [sys.executable, "-m", "mlxbatchwhisper.cli.transcribe", *argv, "--model", name]
            start = time.perf_counter()
            subprocess.run([*command, "-o", str(out), "-f", "txt"], check=True, capture_output=True)
            wall = time.perf_counter() - start
            rates[label] = seconds / wall
            texts[label] = [p.read_text().strip() for p in sorted(out.glob("*.txt"))]
            print(f"{name:8s} {label:32s} {wall:6.1f} s wall, {rates[label]:5.1f} audio s/s", flush=True)
        long = rates["one long file"]
        for label in runs:
            joined = " ".join(texts[label])
            line = f"  {label}: {rates[label] / long:.2f} of the long file's speed"
            if label != "one long file":
                against_long = wer([texts["one long file"][0]], [joined])
                line += f" (target >= 0.7), WER against the long file's text {100 * against_long:.1f}%"
            if truths[0] is not None:
                line += f"; WER against the true text {100 * wer([' '.join(truths)], [joined]):.1f}%"
                if len(texts[label]) == count:
                    per_file = np.mean([wer([t], [h]) if h else 1.0 for t, h in zip(truths, texts[label])])
                    line += f", per file {100 * per_file:.1f}% on average"
            print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument(
        "--impls", nargs="+", help="only the implementations whose label has one of these (and openai's)"
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--short-files", metavar="MODEL", help="instead: many short files against one long file (`short_files`)"
    )
    parser.add_argument("--short-source", choices=["prompts", "pieces"], default="prompts", help="see `short_pieces`")
    args = parser.parse_args()
    if args.short_files:
        short_files(args.short_files, args.short_source)
        return
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in cpu.splitlines() if line.startswith("Model name")), "")
    info = {**mlxbatchwhisper.runtime_info(), "cpu_model": model or platform.processor()}
    print(json.dumps(info))
    impls = {label: run for label, run in runners().items() if not args.impls or any(k in label for k in args.impls)}
    rows = []
    for case in args.cases:
        rows += CASES[case](impls)
        if args.json:
            args.json.write_text(json.dumps({"info": info, "rows": rows}, indent=1, ensure_ascii=False))
    print("\n| case | implementation | wall | RTF | WER | WER vs openai | worst file vs openai's WER |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['case']} | {r['impl']} | {r['wall_s']:.1f} s | {r['rtf']:.1f} | {100 * r['wer']:.1f}% |"
            f" {100 * r['wer_vs_openai']:.1f}% | {100 * r['worst_vs_reference_gap']:+.1f} pt |"
        )


if __name__ == "__main__":
    main()
