#!/usr/bin/env python3
"""One-query attention on CUDA: our kernel (kernels._attend_one_cuda) against MLX's sdpa.

Each call is timed inside a chain of 32 (each query the previous output, as a decoding step's 32
layers are), so launch latency does not count. For each dtype and (batch, heads) shape at 1500 keys,
prints the largest difference from a float32 reference and both times with the bandwidth they reach;
in float16 also the int8 kernel on the same keys and values quantized (`kernels.quantize_kv`; its error
against the dequantized ones, its bandwidth counting the int8 bytes and the scales).
Then the self-attention cache (`kernels.attend_cached`: (B, 20) heads, capacity 256, the first
`length` columns written, each row's left padding random): its largest difference from MLX's attention
over the cache's columns with a padding mask, and both times.
`--variants` also times the kernel with other unrolls (keys per lane group in flight) and warps a block,
float16 only. Needs MLX's CUDA backend.
Usage: python benchmarks/cuda_attention.py [--variants]
"""

import argparse
import re
import time

import mlx.core as mx

import mlxbatchwhisper  # noqa: F401  (runtime set-up)
from mlxbatchwhisper import kernels

CHAIN = 32
SHAPES = ((1, 20), (16, 6), (16, 20), (64, 20), (128, 20))


def chained_ms(fn, q: mx.array, rounds: int = 5) -> float:
    """Best time of one call, over `rounds` chains of CHAIN calls."""

    def chain() -> mx.array:
        x = q
        for _ in range(CHAIN):
            x = fn(x)
        return x

    mx.eval(chain())
    mx.synchronize()
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        mx.eval(chain())
        mx.synchronize()
        best = min(best, time.perf_counter() - start)
    return best / CHAIN * 1000


def variant(unroll: int, warps: int, k: mx.array, v: mx.array):
    """Our kernel with `unroll` rounds of keys a warp in flight and `warps` warps a block."""
    kernel = mx.fast.cuda_kernel(
        name=f"one_query_u{unroll}_w{warps}",
        input_names=["q", "k", "v", "scale"],
        output_names=["out"],
        source=re.sub(r"U = \d+,", f"U = {unroll},", kernels._ONE_QUERY_CUDA),
        header=kernels._ONE_QUERY_HEADER,
    )
    scale = mx.array([0.125], mx.float32)
    batch, heads, length, _ = k.shape

    def call(q: mx.array) -> mx.array:
        (out,) = kernel(
            inputs=[q, k, v, scale],
            template=[("T", q.dtype), ("KEYS", length), ("WARPS", warps)],
            grid=(batch * heads * 32 * warps, 1, 1),
            threadgroup=(32 * warps, 1, 1),
            output_shapes=[q.shape],
            output_dtypes=[q.dtype],
        )
        return out

    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", action="store_true", help="also other unrolls and warps (float16)")
    args = parser.parse_args()
    for dtype in (mx.float16, mx.bfloat16, mx.float32):
        for batch, heads in SHAPES:
            q, k, v = (
                mx.random.normal(s).astype(dtype)
                for s in ((batch, heads, 1, 64), (batch, heads, 1500, 64), (batch, heads, 1500, 64))
            )
            mx.eval(q, k, v)
            ref = mx.fast.scaled_dot_product_attention(*(a.astype(mx.float32) for a in (q, k, v)), scale=0.125)
            err = mx.abs(kernels._attend_one_cuda(q, k, v).astype(mx.float32) - ref).max().item()
            gb = 2 * k.nbytes / 1e9
            t_mlx = chained_ms(lambda x: mx.fast.scaled_dot_product_attention(x, k, v, scale=0.125), q)
            t_ours = chained_ms(lambda x: kernels._attend_one_cuda(x, k, v), q)
            line = (
                f"{dtype} B={batch} H={heads} max err {err:.2e}  mlx sdpa {t_mlx:.3f} ms ({gb / t_mlx:.2f} TB/s)"
                f"  ours {t_ours:.3f} ms ({gb / t_ours:.2f} TB/s)"
            )
            if dtype == mx.float16:
                kq, vq, ks, vs = kernels.quantize_kv(k, v)
                mx.eval(kq, vq, ks, vs)
                ref8 = mx.fast.scaled_dot_product_attention(
                    q.astype(mx.float32),
                    kernels.dequantize_kv(kq, ks, mx.float32),
                    kernels.dequantize_kv(vq, vs, mx.float32),
                    scale=0.125,
                )
                err8 = mx.abs(kernels._attend_one_cuda(q, kq, vq, ks, vs).astype(mx.float32) - ref8).max().item()
                gb8 = (kq.nbytes + vq.nbytes + ks.nbytes + vs.nbytes) / 1e9
                t8 = chained_ms(lambda x: kernels._attend_one_cuda(x, kq, vq, ks, vs), q)
                line += f"\n  int8 K/V: max err {err8:.2e}  {t8:.3f} ms ({gb8 / t8:.2f} TB/s)"
            if args.variants and dtype == mx.float16:
                for unroll in (1, 2, 4):
                    for warps in (2, 4, 8, 16):
                        call = variant(unroll, warps, k, v)
                        err = mx.abs(call(q).astype(mx.float32) - ref).max().item()
                        ms = chained_ms(call, q)
                        line += f"\n  unroll {unroll} warps {warps}: {ms:.3f} ms ({gb / ms:.2f} TB/s) err {err:.1e}"
            print(line, flush=True)
    for dtype in (mx.float16, mx.float32):
        for batch, length in ((16, 40), (64, 65), (128, 65), (128, 200)):
            cached_attention(dtype, batch, length)


def cached_attention(dtype: mx.Dtype, batch: int, length: int, heads: int = 20, capacity: int = 256) -> None:
    """Our kernel over a self-attention cache against MLX's over the cache's columns with a mask."""
    q = mx.random.normal((batch, heads, 1, 64)).astype(dtype)
    k, v = (mx.random.normal((batch, heads, capacity, 64)).astype(dtype) for _ in range(2))
    starts = mx.random.randint(0, length // 2, (batch,)).astype(mx.int32)
    mx.eval(q, k, v, starts)
    mask = (mx.arange(length)[None, :] >= starts[:, None])[:, None, None, :]
    ks, vs = k[..., :length, :], v[..., :length, :]
    ref = mx.fast.scaled_dot_product_attention(*(a.astype(mx.float32) for a in (q, ks, vs)), scale=0.125, mask=mask)
    err = mx.abs(kernels.attend_cached(q, k, v, length, starts).astype(mx.float32) - ref).max().item()
    gb = 2 * mx.sum(length - starts).item() * heads * 64 * k.itemsize / 1e9
    t_mlx = chained_ms(lambda x: mx.fast.scaled_dot_product_attention(x, ks, vs, scale=0.125, mask=mask), q)
    t_ours = chained_ms(lambda x: kernels.attend_cached(x, k, v, length, starts), q)
    print(
        f"cache {dtype} B={batch} H={heads} length {length}: max err {err:.2e}  mlx sdpa (masked) {t_mlx:.3f} ms"
        f"  ours {t_ours:.3f} ms ({gb / t_ours:.2f} TB/s)",
        flush=True,
    )


if __name__ == "__main__":
    main()
