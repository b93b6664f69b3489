#!/usr/bin/env python3
"""The GPU's own timeline of decoding steps: which kernels run, for how long, and how idle it sits.

MLX has no kernel profiler of its own on CUDA; torch's profiler records every kernel the process
launches through CUPTI, MLX's included (those inside CUDA graphs too). Random weights at a model's
shapes, `--batch` rows `--offset` tokens into their windows; `--steps` greedy steps are queued back
to back (tokens fed back on the device, as the engine does) inside the profiler, after a warm-up.
Prints, per step: the kernels launched, the device's busy time (the union of kernel intervals)
against the wall time, and the busy time by kernel family; also the step graph's primitives.
`--encoder N` records one encoder call of N windows instead. `--trace` writes the Chrome trace.
Needs torch with CUDA beside MLX's CUDA backend.
Usage: python benchmarks/step_kernels.py --model large-v3 --batch 128 --dtype float16
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import mlxbatchwhisper  # noqa: E402, F401, I001  (first: runtime set-up)
import mlx.core as mx  # noqa: E402
from step_profile import prefilled  # noqa: E402
from throughput import SHAPES  # noqa: E402

from mlxbatchwhisper.checkpoints import to_dtype  # noqa: E402
from mlxbatchwhisper.model import Whisper  # noqa: E402

FAMILIES = [  # (family, pattern on the kernel's name), first match wins
    ("self-attention (ours)", r"one_query_attention_cached"),
    ("cross-attention (ours)", r"one_query"),
    ("attention (MLX)", r"sdpa|attention|flash"),
    ("matrix products", r"gemm|gemv|xmma|cutlass|sm90|matmul|qmm|qmv"),
    ("layer norm", r"layer_norm|layernorm"),
    ("copies", r"copy|Copy|scatter|slice|gather|Gather|Scatter"),
    ("reductions", r"reduce|arg_|Reduce|softmax|logsumexp"),
    ("elementwise (compiled)", r"Compiled|compiled"),
    ("elementwise", r"binary|unary|Binary|Unary|ternary|Ternary"),
]


def family(name: str) -> str:
    return next((f for f, p in FAMILIES if re.search(p, name)), "other")


def busy_us(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of [start, end) intervals."""
    total, end = 0.0, -float("inf")
    for s, e in sorted(intervals):
        if s > end:
            total, end = total + e - s, e
        elif e > end:
            total, end = total + e - end, e
    return total


def primitives(*outputs: mx.array) -> collections.Counter:
    """The primitives of the graph that computes `outputs` (from MLX's DOT export)."""
    with tempfile.NamedTemporaryFile(suffix=".dot") as f:
        mx.export_to_dot(f.name, *outputs)
        labels = re.findall(r'label ="([^"]*)", shape=rectangle', Path(f.name).read_text())
    return collections.Counter(labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(SHAPES), default="large-v3")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--offset", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--dtype", default="float16")
    parser.add_argument("--kv-bits", type=int, choices=[8])
    parser.add_argument("--encoder", type=int, help="record one encoder call of this many windows instead")
    parser.add_argument("--trace", type=Path, help="write the Chrome trace here")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import torch
    from torch.profiler import ProfilerActivity, profile

    dims, dtype, b = SHAPES[args.model], to_dtype(args.dtype), args.batch
    model = Whisper(dims, dtype)
    model.decoder.kv_bits = args.kv_bits
    mx.eval(model.parameters())
    dec = model.decoder
    if args.encoder:
        mel = mx.random.normal((args.encoder, 2 * dims.n_audio_ctx, dims.n_mels)).astype(dtype)

        def run() -> None:
            mx.eval(model.embed_audio(mel))

        units, graph = 1, primitives(model.embed_audio(mel))
    else:
        cache = prefilled(model, b, args.offset, reserve=args.offset + args.steps + 1)
        token = mx.zeros((b, 1), mx.int32)

        def step(tok: mx.array) -> mx.array:
            logits = dec.project(dec(tok, cache=cache)[:, -1]).astype(mx.float32)
            return mx.argmax(logits, axis=-1).astype(mx.int32)[:, None]

        def run() -> None:
            tok = token
            for _ in range(args.steps):
                tok = step(tok)
                mx.async_eval(tok)
            mx.eval(tok)
            for c in cache:
                c.offset -= args.steps

        units = args.steps
        graph = primitives(step(token))
        for c in cache:
            c.offset -= 1
    run()  # warm-up: kernels compiled, graphs cached
    run()
    mx.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        run()
        mx.synchronize()
        wall = time.perf_counter() - start
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        prof.export_chrome_trace(f.name)
        trace = json.loads(Path(f.name).read_text())
        if args.trace:
            args.trace.write_text(json.dumps(trace))
    kernels = [e for e in trace["traceEvents"] if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")]
    intervals = [(e["ts"], e["ts"] + e["dur"]) for e in kernels]
    busy = busy_us(intervals)
    by_family: dict[str, list] = collections.defaultdict(list)
    by_name: collections.Counter = collections.Counter()
    for e in kernels:
        by_family[family(e["name"])].append((e["ts"], e["ts"] + e["dur"]))
        by_name[e["name"][:90]] += e["dur"]
    span = max(e for _, e in intervals) - min(s for s, _ in intervals) if intervals else 0.0
    report = {
        "model": args.model,
        "batch": b,
        "what": f"encoder call of {args.encoder} windows" if args.encoder else f"decoding step at offset {args.offset}",
        "kv_bits": args.kv_bits,
        "torch": torch.__version__,
        "wall_ms_per_unit": wall * 1e3 / units,
        "kernels_per_unit": len(kernels) / units,
        "device_busy_ms_per_unit": busy / 1e3 / units,
        "device_span_ms_per_unit": span / 1e3 / units,
        "busy_ms_by_family": {k: busy_us(v) / 1e3 / units for k, v in sorted(by_family.items())},
        "kernels_by_family": {k: len(v) / units for k, v in sorted(by_family.items())},
        "top_kernels_ms": {k: v / 1e3 / units for k, v in by_name.most_common(25)},
        "graph_primitives": dict(graph.most_common()),
        "graph_nodes": sum(graph.values()),
    }
    print(json.dumps(report, indent=1), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
