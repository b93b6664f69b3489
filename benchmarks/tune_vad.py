#!/usr/bin/env python3
"""The VAD mode's WER on the real-speech dev set beside openai-whisper's `transcribe`, per setting.

Each `--vary NAME=v1,v2,...` is tried one value at a time around the base setting (the current
defaults, changed by `--base NAME=v ...`). NAME is a `VadOptions` field, `chunk_size` or `remainder_rounds`
(longform.MAX_CONTINUATIONS: rounds of decoding again what Whisper left at a window's end); values are numbers.
`--prompted` also decodes the windows of each file in order, with and without the text before as prompt.
openai-whisper's transcripts are computed once and cached in the dev-set folder.
tiny.en for English files, base for French and Spanish; language given; default temperature fallback.
Prints per-file WER (ours - openai) and, per setting, mean WER and the worst file; `--json` appends rows.
Usage: python benchmarks/tune_vad.py --vary speech_pad_ms=30,200,400 [--base threshold=0.4] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import mlxbatchwhisper  # noqa: E402  (binds the fast BLAS first)
from devset import devset, devset_audio, file_wer, folder, model_for, openai_transcripts, ours  # noqa: E402
from mlxbatchwhisper import longform, vad  # noqa: E402
from mlxbatchwhisper.schedule import plan_windows  # noqa: E402
from mlxbatchwhisper.vad import VadOptions  # noqa: E402
from reference import our_model  # noqa: E402


def setting(pairs: list[str]) -> dict[str, float]:
    out = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        out[name] = float(value)
    return out


def evaluate(names: list[str], params: dict[str, float], reference: dict[str, str]) -> dict:
    """Our WER per file (and openai's) with these VAD options / chunk size."""
    params = dict(params)
    chunk = params.pop("chunk_size", 30.0)
    rounds = longform.MAX_CONTINUATIONS
    longform.MAX_CONTINUATIONS = int(params.pop("remainder_rounds", rounds))
    start = time.perf_counter()
    try:
        texts = ours(names, vad_options=VadOptions(**params), chunk_size=chunk, batch_size=16)
    finally:
        params["remainder_rounds"], longform.MAX_CONTINUATIONS = longform.MAX_CONTINUATIONS, rounds
    wall = time.perf_counter() - start
    files = {n: {"ours": file_wer(n, texts[n]), "openai": file_wer(n, reference[n])} for n in names}
    mean = lambda key: sum(f[key] for f in files.values()) / len(files)  # noqa: E731
    worst = max(names, key=lambda n: files[n]["ours"] - files[n]["openai"])
    return {
        "params": {**params, "chunk_size": chunk},
        "wall_s": wall,
        "mean_wer": mean("ours"),
        "openai_mean_wer": mean("openai"),
        "worst": worst,
        "worst_gap": files[worst]["ours"] - files[worst]["openai"],
        "files": files,
    }


def windows_in_order(names: list[str], params: dict[str, float], prompted: bool) -> dict[str, str]:
    """The VAD mode's windows decoded file by file in time order (k-th window of every file together),
    each prompted by its file's text so far or not at all; no remainders. Measures conditioning."""
    params = dict(params)
    chunk = params.pop("chunk_size", 30.0)
    audios = {n: devset_audio(n) for n in names}
    found = vad.get_speech_timestamps_batch(list(audios.values()), return_probabilities=True, **params)
    plans = {}
    for n, (regions, probs) in zip(names, found):
        windows = plan_windows([[(r["start"], r["end"]) for r in regions]], chunk, [probs])
        plans[n] = sorted(windows, key=lambda w: w.start)
    texts = {n: [] for n in names}
    for k in range(max(len(p) for p in plans.values())):
        for model in sorted({model_for(devset()[n]["language"]) for n in names}):
            batch = [n for n in names if k < len(plans[n]) and model_for(devset()[n]["language"]) == model]
            if not batch:
                continue
            segments = [audios[n][int(plans[n][k].start * 16000) : int(plans[n][k].end * 16000)] for n in batch]
            results = our_model(model).transcribe(
                segments,
                language=[devset()[n]["language"] for n in batch],
                initial_prompt=[" ".join(texts[n]) or None if prompted else None for n in batch],
            )
            for n, r in zip(batch, results):
                if not (r.no_speech_prob > 0.6 and r.avg_logprob < -1.0):  # openai-whisper's silence skip
                    texts[n].append(r.text.strip())
    return {n: " ".join(t) for n, t in texts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vary", nargs="+", default=[], help="NAME=v1,v2,...")
    parser.add_argument("--base", nargs="*", default=[], help="NAME=v: the setting the others vary around")
    parser.add_argument("--languages", nargs="+", default=["en", "fr", "es"], help="only these files")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--skip-base", action="store_true", help="do not evaluate the base setting itself")
    parser.add_argument("--prompted", action="store_true", help="also: windows in order, with and without prompts")
    args = parser.parse_args()
    print(json.dumps(mlxbatchwhisper.runtime_info()))
    names = [n for n in folder() if devset()[n]["language"] in args.languages]
    reference = openai_transcripts(names)
    base = setting(args.base)
    trials = [base] * (not args.skip_base) + [
        {**base, name: float(v)} for spec in args.vary for name, _, vs in [spec.partition("=")] for v in vs.split(",")
    ]
    for params in trials:
        row = evaluate(names, params, reference)
        gaps = " ".join(
            f"{n.split('_')[0][:2]}{n[-2:]}:{100 * (f['ours'] - f['openai']):+.1f}" for n, f in row["files"].items()
        )
        print(
            f"{json.dumps(row['params'])}: mean WER {100 * row['mean_wer']:.2f}%"
            f" (openai {100 * row['openai_mean_wer']:.2f}%),"
            f" worst {row['worst']} {100 * row['worst_gap']:+.1f} pt, {row['wall_s']:.0f} s | {gaps}",
            flush=True,
        )
        if args.json:
            with args.json.open("a") as f:
                f.write(json.dumps(row) + "\n")
    if args.prompted:
        for prompted in (False, True):
            texts = windows_in_order(names, base, prompted)
            gaps = [file_wer(n, texts[n]) - file_wer(n, reference[n]) for n in names]
            print(
                f"windows in order, {'prompted by the text before' if prompted else 'no prompts'}, no remainders:"
                f" mean WER gap {100 * sum(gaps) / len(gaps):+.2f} pt, worst {100 * max(gaps):+.1f} pt"
                f" | {' '.join(f'{100 * g:+.1f}' for g in gaps)}",
                flush=True,
            )
    print(f"{len(names)} files, {sum(devset()[n]['duration_s'] for n in names):.0f} s")


if __name__ == "__main__":
    main()
