#!/usr/bin/env python3
"""The native CPU kernels (MLX primitives) against MLX's own operations, interleaved in one run.

Shapes are tiny.en's at batch 16: an encoder layer's self-attention (16 × 6 heads × 1500²) and GELU
(16 × 1500 × 1536), a decoding step's cross-attention (16 × 6 heads, one query, 1500 keys) and
log-sum-exp over the vocabulary. Prints the best time of each, the CPU model and the BLAS in use.
Usage: python benchmarks/cpu_kernels.py [--repeat 20]
"""

from __future__ import annotations

import argparse
import json
import time

import mlxbatchwhisper  # binds the fast BLAS before anything imports mlx
from mlxbatchwhisper import kernels

mx, nn = kernels.mx, kernels.nn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20, help="calls of each small kernel (large ones: a tenth)")
    args = parser.parse_args()
    info = mlxbatchwhisper.runtime_info()
    print(json.dumps(info))
    if not kernels.native_available():
        raise SystemExit(f"native CPU kernels: {kernels.NATIVE_STATUS}")
    keys = mx.random.split(mx.random.key(0), 6)
    q, k, v = (mx.random.normal((16, 6, 1500, 64), key=key) for key in keys[:3])
    x = mx.random.normal((16, 1500, 1536), key=keys[3])
    step_q = mx.random.normal((16, 6, 1, 64), key=keys[4])
    logits = mx.random.normal((16, 51864), key=keys[5])
    mx.eval(q, k, v, x, step_q, logits)
    sdpa = mx.fast.scaled_dot_product_attention
    cases = {
        "encoder self-attention": (lambda: kernels.attention(q, k, v), lambda: sdpa(q, k, v, scale=0.125)),
        "encoder GELU": (lambda: kernels.gelu(x * 1), lambda: nn.gelu(x * 1)),
        "step cross-attention": (
            lambda: kernels.cross_attention(step_q, k, v),
            lambda: sdpa(step_q, k, v, scale=0.125),
        ),
        "step log-sum-exp": (lambda: kernels.logsumexp(logits), lambda: mx.logsumexp(logits, axis=-1)),
    }
    for name, fns in cases.items():
        reps = args.repeat if name.startswith("step") else max(2, args.repeat // 10)
        best = [float("inf")] * 2
        for fn in fns:
            mx.eval(fn())
        for _ in range(reps):
            for i, fn in enumerate(fns):
                start = time.perf_counter()
                mx.eval(fn())
                best[i] = min(best[i], time.perf_counter() - start)
        print(f"{name:24s} native {1e3 * best[0]:9.2f} ms   MLX {1e3 * best[1]:9.2f} ms   {best[1] / best[0]:6.1f}x")


if __name__ == "__main__":
    main()
