#!/usr/bin/env python3
"""One-query attention on CUDA: our kernel (kernels._attend_one_cuda) against MLX's sdpa.

For each dtype and (batch, heads) shape at 1500 keys, prints the largest difference from a
float32 reference and both times with the bandwidth they reach. Needs MLX's CUDA backend.
Usage: python benchmarks/cuda_attention.py
"""

import time

import mlx.core as mx

import mlxbatchwhisper  # noqa: F401  (runtime set-up first)
from mlxbatchwhisper import kernels


def best_ms(fn, n: int = 30) -> float:
    mx.eval(fn())
    mx.synchronize()
    start = time.perf_counter()
    for _ in range(n):
        mx.eval(fn())
    mx.synchronize()
    return (time.perf_counter() - start) / n * 1000


def main() -> None:
    for dtype in (mx.float16, mx.bfloat16, mx.float32):
        for batch, heads in ((1, 20), (16, 6), (32, 20), (64, 20)):
            q, k, v = (
                mx.random.normal(s).astype(dtype)
                for s in ((batch, heads, 1, 64), (batch, heads, 1500, 64), (batch, heads, 1500, 64))
            )
            mx.eval(q, k, v)
            ref = mx.fast.scaled_dot_product_attention(*(a.astype(mx.float32) for a in (q, k, v)), scale=0.125)
            ours = kernels._attend_one_cuda(q, k, v)
            err = mx.abs(ours.astype(mx.float32) - ref).max().item()
            t_mlx = best_ms(lambda: mx.fast.scaled_dot_product_attention(q, k, v, scale=0.125))
            t_ours = best_ms(lambda: kernels._attend_one_cuda(q, k, v))
            gb = 2 * k.nbytes / 1e9
            print(
                f"{dtype} B={batch} H={heads} max err {err:.2e}  mlx sdpa {t_mlx:.3f} ms ({gb / t_mlx:.2f} TB/s)"
                f"  ours {t_ours:.3f} ms ({gb / t_ours:.2f} TB/s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
