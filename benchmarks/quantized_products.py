#!/usr/bin/env python3
"""Quantized against float16 matrix products at large-v3's shapes, on this device (a GPU question).

For the encoder's products (8 windows: 12,000 rows) and a decoding step's (1 to 128 rows, and the
output head), times `x @ w.T` in float16 beside MLX's `quantized_matmul` in each quantization mode
that runs here (affine int4 / int8 with groups of 64, the microscaling float modes), and beside
dequantizing the weights first then multiplying. Each time is the fastest of 5 evaluations of 10
products queued together (so that launch latency is spread; a product over 50 ms is timed once);
prints ms a product, TFLOP/s and the rate at which the weights' bytes are read.
Usage: python benchmarks/quantized_products.py [--dim 1280] [--rows 64 12000] [--modes "int4 g64"] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import mlx.core as mx

import mlxbatchwhisper  # noqa: F401  (runtime set-up; a GPU question: the CPU's BLAS binding does not matter)
from mlxbatchwhisper.runtime import fastest_seconds

QUEUED = 10
MODES = [  # label, mode, bits, group size
    ("int4 g64", "affine", 4, 64),
    ("int8 g64", "affine", 8, 64),
    ("mxfp8", "mxfp8", 8, 32),
    ("mxfp4", "mxfp4", 4, 32),
    ("nvfp4", "nvfp4", 4, 16),
]


def shapes(d: int, vocab: int) -> list[tuple[str, int, int, int]]:
    """(label, rows, in, out) of the products a model of width d runs."""
    out = []
    for rows in (1, 16, 64, 128):
        out += [(f"step, {rows} rows: {k}→{n}", rows, k, n) for k, n in ((d, d), (d, 4 * d), (4 * d, d))]
    out.append((f"step, 128 rows: {d}→{vocab}", 128, d, vocab))
    return out + [(f"encoder, 8 windows: {k}→{n}", 12000, k, n) for k, n in ((d, d), (d, 4 * d), (4 * d, d))]


def seconds(fn) -> float:
    """One product's time: a slow one (over 50 ms) timed once, others the fastest of 5 queues of 10."""
    mx.eval(fn())  # warm-up: MLX compiles a kernel for each new shape
    start = time.perf_counter()
    mx.eval(fn())
    once = time.perf_counter() - start
    return once if once > 0.05 else fastest_seconds(lambda: [fn() for _ in range(QUEUED)]) / QUEUED


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=1280, help="model width (large-v3: 1280)")
    parser.add_argument("--vocab", type=int, default=51866)
    parser.add_argument("--rows", type=int, nargs="+", help="only the shapes of these row counts (12000: encoder)")
    parser.add_argument("--modes", nargs="+", choices=[m[0] for m in MODES], help="only these quantization modes")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    modes = [m for m in MODES if not args.modes or m[0] in args.modes]
    for label, m, k, n in shapes(args.dim, args.vocab):
        if args.rows and m not in args.rows:
            continue
        x = mx.random.normal((m, k)).astype(mx.float16)
        w = (mx.random.normal((n, k)) * 0.02).astype(mx.float16)
        mx.eval(x, w)
        flops = 2 * m * k * n
        base = seconds(lambda: x @ w.T)
        row = {"shape": label, "float16_ms": base * 1e3, "float16_tflop_s": flops / base / 1e12}
        for name, mode, bits, group in modes:
            try:
                packed = mx.quantize(w, group_size=group, bits=bits, mode=mode)
                mx.eval(packed)
                wq, scales, *biases = packed
                bias = biases[0] if biases else None

                def product(wq=wq, scales=scales, bias=bias, group=group, bits=bits, mode=mode):
                    return mx.quantized_matmul(x, wq, scales, bias, True, group, bits, mode)

                def expanded(wq=wq, scales=scales, bias=bias, group=group, bits=bits, mode=mode):
                    return x @ mx.dequantize(wq, scales, bias, group, bits, mode).T

                t = seconds(product)
                nbytes = wq.nbytes + scales.nbytes + (bias.nbytes if bias is not None else 0)
                row[f"{name}_ms"] = t * 1e3
                row[f"{name}_vs_float16"] = base / t
                row[f"{name}_weights_tb_s"] = nbytes / t / 1e12
                row[f"{name}_dequantize_then_multiply_ms"] = seconds(expanded) * 1e3
            except (ValueError, RuntimeError) as error:  # a mode this device or build lacks
                row[f"{name}_error"] = str(error).splitlines()[0][:120]
        rows.append(row)
        print("  ".join(f"{key}={v:.3f}" if isinstance(v, float) else f"{key}={v}" for key, v in row.items()))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
