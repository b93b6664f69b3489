#!/usr/bin/env python3
"""Quantization report: size on disk, memory, CPU throughput, corpus WER and agreement with fp32.

For each model and variant (fp32, fp16, int8 g64, int4 g64, int4 g32 with the default recipe,
and int4 g64 `uniform`), converts the checkpoint with `mlxbatchwhisper.convert`, then on the
corpus's English passages measures:
- size on disk, and the weights' size in memory when loaded natively (quantized);
- batch 1 and batch 16 throughput (RTF) and peak memory as run on this CPU, where every variant
  computes in float32: quantized weights are expanded at load (MLX's CPU quantized kernels are a
  reference loop, 25-80x slower than BLAS) and so are float16 ones (MLX has no fast CPU fp16);
- WER against the corpus text and agreement with fp32 (1 - WER between the outputs).
Usage: python benchmarks/quantization.py [--models tiny.en base] [--markdown docs/quantization.md]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import mlx.core as mx  # noqa: E402
import mlx.nn as nn  # noqa: E402

import mlxbatchwhisper  # noqa: E402  (binds the fast BLAS first)
from mlxbatchwhisper import BatchedWhisper, load_model  # noqa: E402
from mlxbatchwhisper.convert import convert  # noqa: E402
from reference import corpus_audio, manifest, segment_names, wer  # noqa: E402

VARIANTS = [  # label, dtype, quantize, bits, group size, recipe
    ("fp32", "float32", False, 0, 0, ""),
    ("fp16", "float16", False, 0, 0, ""),
    ("int8 g64", "float16", True, 8, 64, "default"),
    ("int4 g64", "float16", True, 4, 64, "default"),
    ("int4 g32", "float16", True, 4, 32, "default"),
    ("int4 g64 uniform", "float16", True, 4, 64, "uniform"),
]


def weights_mb(path: Path, dtype: str) -> float:
    """The weights' size in memory when loaded as stored (quantized layers kept quantized)."""
    model = load_model(path, dtype=dtype, dequantize=False)
    return sum(v.nbytes for _, v in nn.utils.tree_flatten(model.parameters())) / 2**20


def run(model: BatchedWhisper, audios, batch: int) -> tuple[list[str], float, float]:
    mx.clear_cache()
    mx.reset_peak_memory()
    start = time.perf_counter()
    texts = [r.text for r in model.transcribe(audios, batch_size=batch, temperature=0.0, language="en")]
    return texts, time.perf_counter() - start, mx.get_peak_memory() / 2**20


def report(name: str) -> list[dict]:
    names = [n for n in segment_names() if manifest()[n]["language"] == "en"]
    audios = [corpus_audio(n) for n in names]
    refs = [manifest()[n]["text"] for n in names]
    seconds = sum(len(a) for a in audios) / 16000
    rows, fp32_texts = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for label, dtype, quantize, bits, group, recipe in VARIANTS:
            out = Path(tmp) / label.replace(" ", "_")
            done = convert(
                name,
                out,
                dtype=dtype,
                quantize=quantize,
                bits=bits or 4,
                group_size=group or 64,
                recipe=recipe or "default",
            )
            model = BatchedWhisper.from_pretrained(out, dtype="float32")
            model.transcribe(audios[:1], temperature=0.0, language="en")  # warm-up
            row = {
                "model": name,
                "variant": label,
                "disk_mb": done.bytes_on_disk / 2**20,
                "weights_mb": weights_mb(out, dtype),
            }
            for batch in (1, 16):
                texts, wall, peak = run(model, audios, batch)
                row[f"rtf_b{batch}"], row[f"peak_mb_b{batch}"] = seconds / wall, peak
            fp32_texts = fp32_texts or texts
            row["wer"], row["agreement"] = wer(refs, texts), 1 - wer(fp32_texts, texts)
            row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            rows.append(row)
            print(json.dumps(row), flush=True)
            del model
    return rows


def markdown(rows: list[dict]) -> str:
    head = (
        "| model | variant | disk MiB | % of fp16 | weights in memory (native) MiB | RTF b1 | RTF b16 |"
        " peak MLX MiB b16 | WER | agreement with fp32 |\n|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        fp16 = next(x["disk_mb"] for x in rows if x["model"] == r["model"] and x["variant"] == "fp16")
        lines.append(
            f"| {r['model']} | {r['variant']} | {r['disk_mb']:.1f} | {100 * r['disk_mb'] / fp16:.0f}% |"
            f" {r['weights_mb']:.1f} | {r['rtf_b1']:.1f} | {r['rtf_b16']:.1f} | {r['peak_mb_b16']:.0f} |"
            f" {100 * r['wer']:.1f}% | {100 * r['agreement']:.1f}% |"
        )
    return head + "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny.en", "base"])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    print(json.dumps(mlxbatchwhisper.runtime_info()))
    rows = [r for name in args.models for r in report(name)]
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
