#!/usr/bin/env python3
"""The same texts at every batch size, and on another device: a sanity check of real weights.

Transcribes the corpus's segments (greedy; `--language` filters them) at each `--batch-sizes`,
prints whether every batch size gave the same texts, and with
`--save` writes the texts; `--against` compares them with texts saved elsewhere (e.g. on the CPU).
Usage: python benchmarks/same_texts.py --model <dir> --dtype float16 --batch-sizes 1 16 [--save t.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import mlxbatchwhisper  # noqa: E402, F401, I001  (first: binds the fast BLAS before MLX loads)
import mlx.core as mx  # noqa: E402

from mlxbatchwhisper import BatchedWhisper  # noqa: E402
from reference import corpus_audio, manifest, segment_names  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--language", default="en", help="segments in this language only ('all': every one)")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 16])
    parser.add_argument("--save", type=Path, help="write {segment: text} here")
    parser.add_argument("--against", type=Path, help="compare with texts saved by --save elsewhere")
    args = parser.parse_args()
    model = BatchedWhisper.from_pretrained(args.model, dtype=args.dtype)
    names = [n for n in segment_names() if args.language in ("all", manifest()[n]["language"])]
    audios = [corpus_audio(n) for n in names]
    print(f"{args.model} {args.dtype} on {mx.default_device()}: {len(names)} segments", flush=True)
    texts = {}
    for b in args.batch_sizes:
        model.transcribe(audios[:b], batch_size=b, temperature=0.0)  # warm-up at this shape
        start = time.perf_counter()
        results = model.transcribe(audios, batch_size=b, temperature=0.0)
        wall = time.perf_counter() - start
        texts[b] = {n: r.text.strip() for n, r in zip(names, results)}
        print(f"batch {b}: {len(names) / wall:.1f} segments/s", flush=True)
    first = texts[args.batch_sizes[0]]
    for b in args.batch_sizes[1:]:
        print(f"batch {args.batch_sizes[0]} == batch {b}: {texts[b] == first}", flush=True)
    if args.save:
        args.save.write_text(json.dumps(first, indent=1))
    if args.against:
        other = json.loads(args.against.read_text())
        same = [n for n in names if other.get(n) == first[n]]
        print(f"same as {args.against}: {len(same)}/{len(names)}", flush=True)
        for n in names:
            if n not in same:
                print(f"  {n}: here {first[n]!r}\n  {' ' * len(n)}  there {other.get(n)!r}", flush=True)


if __name__ == "__main__":
    main()
