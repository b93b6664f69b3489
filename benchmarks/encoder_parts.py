#!/usr/bin/env python3
"""Where an encoder pass goes: the whole pass beside its matrix products alone and its self-attention alone,
same shapes, random weights, on the default device (a GPU where there is one).

For each chunk (windows per call): the full `AudioEncoder` pass, and the same with each block under
`mx.compile` (its elementwise work fused); the products of every layer (q, k, v,
out, both MLP layers, and the second convolution as one product) chained; every layer's
`mx.fast.scaled_dot_product_attention`; what is left (norms, GELU, residuals, copies) as the difference.
Each is timed at its fastest of `--repeat` evaluations and given per window and in TFLOP/s, beside one
large square product's rate measured in the same run.
Usage: python benchmarks/encoder_parts.py --model large-v3 --chunks 8 16 32 [--dtype float16]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

# isort: off
import mlxbatchwhisper  # noqa: F401  (first: binds the fast BLAS before MLX loads)
import mlx.core as mx
import mlx.nn as nn
# isort: on

from mlxbatchwhisper.model import ModelDimensions, Whisper

SHAPES = {  # n_mels, n_audio_state, n_audio_head, n_audio_layer
    "tiny": (80, 384, 6, 4),
    "base": (80, 512, 8, 6),
    "large-v3": (128, 1280, 20, 32),
}


def fastest(fn: Callable[[], object], repeat: int) -> float:
    mx.eval(fn())
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        mx.eval(fn())
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(SHAPES), default="large-v3")
    parser.add_argument("--chunks", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--dtype", default="float16")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    dtype = getattr(mx, args.dtype)
    n_mels, d, h, layers = SHAPES[args.model]
    dims = ModelDimensions(n_mels, 1500, d, h, layers, 51866, 448, d, h, 1)
    model = Whisper(dims, dtype=dtype)
    mx.eval(model.parameters())
    print(json.dumps({"device": str(mx.default_device()), "mlx": mx.__version__, **vars(args)}))
    n = 8192 if mx.default_device() == mx.gpu else 2048
    square = mx.random.normal((n, n)).astype(dtype)
    peak = 2 * n**3 / fastest(lambda: square @ square, args.repeat) / 1e12
    print(f"square {n} product: {peak:.2f} TFLOP/s")
    t = 1500
    shapes = {"qkvo": (d, d), "mlp1": (4 * d, d), "mlp2": (d, 4 * d), "conv2": (d, 3 * d)}
    w = {n: (mx.random.normal(s) * 0.02).astype(dtype) for n, s in shapes.items()}
    mx.eval(w)
    for chunk in args.chunks:
        mel = mx.random.normal((chunk, 2 * t, n_mels)).astype(dtype)
        x = (mx.random.normal((chunk, t, d)) * 0.1).astype(dtype)
        wide = (mx.random.normal((chunk, t, 4 * d)) * 0.1).astype(dtype)
        q = (mx.random.normal((chunk, h, t, d // h))).astype(dtype)
        windows = mx.concatenate([x, x, x], -1)  # the second convolution's flattened windows
        mx.eval(mel, x, wide, q, windows)

        def products():
            outs = [windows @ w["conv2"].T]
            for _ in range(layers):
                outs += [x @ w["qkvo"].T for _ in range(4)] + [x @ w["mlp1"].T, wide @ w["mlp2"].T]
            return outs

        def attention():
            return [mx.fast.scaled_dot_product_attention(q, q, q, scale=(d // h) ** -0.5) for _ in range(layers)]

        full = fastest(lambda: model.encoder(mel), args.repeat)
        blocks = [mx.compile(b) for b in model.encoder.blocks]  # each block's elementwise work fused

        def compiled():
            enc = model.encoder
            y = nn.gelu(enc.conv2(nn.gelu(enc.conv1(mel)))) + enc._positional_embedding.astype(dtype)
            for block in blocks:
                y = block(y)
            return enc.ln_post(y)

        fused = fastest(compiled, args.repeat)
        prod = fastest(products, args.repeat)
        attn = fastest(attention, args.repeat)
        prod_flops = 2 * chunk * t * d * d * (3 + layers * 12)
        attn_flops = 4 * chunk * t * t * d * layers
        print(
            json.dumps(
                {
                    "chunk": chunk,
                    "full_ms_per_window": round(full / chunk * 1e3, 2),
                    "blocks_compiled_ms_per_window": round(fused / chunk * 1e3, 2),
                    "products_ms_per_window": round(prod / chunk * 1e3, 2),
                    "products_tflop_s": round(prod_flops / prod / 1e12),
                    "attention_ms_per_window": round(attn / chunk * 1e3, 2),
                    "attention_tflop_s": round(attn_flops / attn / 1e12),
                    "rest_ms_per_window": round((full - prod - attn) / chunk * 1e3, 2),
                    "full_tflop_s": round((prod_flops + attn_flops) / full / 1e12),
                    "windows_per_s": round(chunk / full, 1),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
