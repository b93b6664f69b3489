#!/usr/bin/env python3
"""Parity with openai-whisper on the same weights, and the fast-BLAS speed-up, in one run.

Prints, for tiny.en and base (fp32): log-mel, encoder and logit differences on real audio, and
tokenizer agreement; then matmul throughput with the reference BLAS and the bound one
(each measured in a fresh subprocess, side by side).
Usage: python benchmarks/parity.py [--models tiny.en base]   (needs scripts/make_test_data.py)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402

import mlxbatchwhisper  # noqa: E402  (binds the fast BLAS first)
from mlxbatchwhisper import load_model  # noqa: E402
from mlxbatchwhisper.audio import N_SAMPLES, log_mel_spectrogram  # noqa: E402
from mlxbatchwhisper.tokenizer import get_tokenizer  # noqa: E402
from reference import corpus_audio, manifest, openai_model, pyannote_sample  # noqa: E402

BLAS_PROBE = r"""
import json, time, mlxbatchwhisper, mlx.core as mx
def best(f, n=5):
    mx.eval(f()); times = []
    for _ in range(n):
        t = time.perf_counter(); mx.eval(f()); times.append(time.perf_counter() - t)
    return min(times)
out = {"blas": mlxbatchwhisper.runtime_info()["blas"]}
a = mx.random.normal((1024, 1024))
out["matmul_1024_gflops"] = 2 * 1024**3 / best(lambda: a @ a) / 1e9
for d, vocab in ((384, 51864), (512, 51865)):
    w = mx.random.normal((vocab, d))
    for b in (1, 32):
        x = mx.random.normal((b, d))
        out[f"vocab_proj_d{d}_B{b}_ms"] = best(lambda: x @ w.T) * 1e3
print(json.dumps(out))
"""


def mel_parity(torch, whisper) -> float:
    worst = 0.0
    audios = [corpus_audio(n) for n in manifest()] + [pyannote_sample()]
    for audio in audios:
        for start in range(0, len(audio), N_SAMPLES):
            window = audio[start : start + N_SAMPLES]
            ours, _ = log_mel_spectrogram([window])
            ref = whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.from_numpy(window))).numpy().T
            worst = max(worst, float(np.abs(np.array(ours)[0] - ref).max()))
    return worst


def model_parity(name: str, torch) -> dict:
    ours, ref = load_model(name), openai_model(name)
    tok = get_tokenizer(ours.is_multilingual, ours.num_languages)
    rows = {}
    for label, audio, text in (
        ("d01", corpus_audio("d01"), manifest()["d01"]["text"]),
        ("pyannote", pyannote_sample()[:N_SAMPLES], "Hello? Hello? Oh, hello."),
    ):
        mel, _ = log_mel_spectrogram([audio], ours.dims.n_mels)
        tokens = list(tok.sot_sequence("en")) + [tok.no_timestamps] + tok.encode(" " + text)
        feats = ours.embed_audio(mel)
        logits = np.array(ours.logits(mx.array([tokens]), feats))
        with torch.no_grad():
            rf = ref.embed_audio(torch.from_numpy(np.array(mel)).transpose(1, 2))
            rl = ref.logits(torch.tensor([tokens]), rf).numpy()
        rf = rf.numpy()
        rows[label] = {
            "encoder_max_abs_diff": float(np.abs(np.array(feats) - rf).max()),
            "encoder_scale": float(np.abs(rf).max()),
            "logits_max_abs_diff": float(np.abs(logits - rl).max()),
            "logits_scale": float(np.abs(rl).max()),
            "argmax_agreement": float((logits.argmax(-1) == rl.argmax(-1)).mean()),
        }
        rows[label]["logits_diff_over_scale"] = rows[label]["logits_max_abs_diff"] / rows[label]["logits_scale"]
    return rows


def tokenizer_parity() -> dict:
    import whisper.tokenizer as ref_tok

    out = {}
    texts = [f["text"] for f in manifest().values()]
    for multilingual in (False, True):
        ours, ref = get_tokenizer(multilingual), ref_tok.get_tokenizer(multilingual)
        same = sum(ours.encode(t) == ref.encode(t) for t in texts)
        out["multilingual" if multilingual else "english"] = {
            "texts_identical": f"{same}/{len(texts)}",
            "special_tokens_identical": ours.special_tokens == ref.special_tokens,
            "non_speech_identical": list(ours.non_speech_tokens) == list(ref.non_speech_tokens),
        }
    return out


def blas_speedup() -> dict:
    results = {}
    for label, env in (("reference", "none"), ("fast", os.environ.get("MLXBATCHWHISPER_BLAS", ""))):
        e = {**os.environ, "MLXBATCHWHISPER_BLAS": env}
        if not env:
            e.pop("MLXBATCHWHISPER_BLAS")
        out = subprocess.run([sys.executable, "-c", BLAS_PROBE], env=e, capture_output=True, text=True, check=True)
        results[label] = json.loads(out.stdout)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny.en", "base"])
    args = parser.parse_args()
    import torch
    import whisper

    print("runtime:", json.dumps(mlxbatchwhisper.runtime_info()))
    print(f"log-mel max abs diff (fp32, every corpus file + pyannote, 30 s windows): {mel_parity(torch, whisper):.2e}")
    for name in args.models:
        for label, row in model_parity(name, torch).items():
            print(
                f"{name:8s} {label:9s} encoder diff {row['encoder_max_abs_diff']:.2e} "
                f"(scale {row['encoder_scale']:.1f})"
                f"  logits diff {row['logits_max_abs_diff']:.2e} (scale {row['logits_scale']:.1f},"
                f" ratio {row['logits_diff_over_scale']:.1e})  argmax agreement {row['argmax_agreement']:.3f}"
            )
    for vocab, row in tokenizer_parity().items():
        print(f"tokenizer {vocab:12s} {row}")
    blas = blas_speedup()
    ref, fast = blas["reference"], blas["fast"]
    print(f"BLAS: reference vs {fast['blas']}")
    for key in ref:
        if key != "blas":
            ratio = fast[key] / ref[key] if "gflops" in key else ref[key] / fast[key]
            print(f"  {key:24s} reference {ref[key]:9.2f}   fast {fast[key]:9.2f}   speed-up {ratio:5.1f}x")


if __name__ == "__main__":
    main()
