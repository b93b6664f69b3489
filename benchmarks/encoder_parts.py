#!/usr/bin/env python3
"""Where an encoder pass goes: the whole pass beside its matrix products alone and its self-attention alone,
same shapes, random weights, on the default device (a GPU where there is one).

For each chunk (windows per call): the full `AudioEncoder` pass, and the same with each block under
`mx.compile` (its elementwise work fused); the products of every layer (q, k, v,
out, both MLP layers, and the second convolution as one product) chained; every layer's
`mx.fast.scaled_dot_product_attention`; what is left (norms, GELU, residuals, copies) as the difference.
Each is timed at its fastest of `--repeat` evaluations and given per window and in TFLOP/s, beside one
large square product's rate (`throughput.measure_hardware`) measured in the same run. Also the memory
each needs above what is already in use (`mx.get_peak_memory`): the whole pass, the two convolutions,
one block, one layer's attention.
Usage: python benchmarks/encoder_parts.py --model large-v3 --chunks 8 16 32 [--dtype float16]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import mlxbatchwhisper  # noqa: E402, F401, I001  (first: binds the fast BLAS before MLX loads)
import mlx.core as mx  # noqa: E402
import mlx.nn as nn  # noqa: E402
from throughput import SHAPES, measure_hardware  # noqa: E402

from mlxbatchwhisper.model import Whisper  # noqa: E402
from mlxbatchwhisper.runtime import fastest_seconds  # noqa: E402


def peak_gb(fn) -> float:
    """The most memory in use while `fn()` is evaluated, above what was in use before, in GB."""
    mx.synchronize()
    mx.clear_cache()
    base = mx.get_active_memory()
    mx.reset_peak_memory()
    mx.eval(fn())
    return round((mx.get_peak_memory() - base) / 1e9, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(SHAPES), default="large-v3")
    parser.add_argument("--chunks", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--dtype", default="float16")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    dtype = getattr(mx, args.dtype)
    dims = dataclasses.replace(SHAPES[args.model], n_text_layer=1)  # the encoder's shapes; one decoder layer
    n_mels, d, h, layers = dims.n_mels, dims.n_audio_state, dims.n_audio_head, dims.n_audio_layer
    model = Whisper(dims, dtype=dtype)
    mx.eval(model.parameters())
    print(json.dumps({"device": str(mx.default_device()), "mlx": mx.__version__, **vars(args)}))
    print(json.dumps(measure_hardware(args.repeat)))  # a square product's rate (8192², float16 on a GPU)
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

        full = fastest_seconds(lambda: model.encoder(mel), args.repeat)
        blocks = [mx.compile(b) for b in model.encoder.blocks]  # each block's elementwise work fused

        def compiled():
            enc = model.encoder
            y = nn.gelu(enc.conv2(nn.gelu(enc.conv1(mel)))) + enc._positional_embedding.astype(dtype)
            for block in blocks:
                y = block(y)
            return enc.ln_post(y)

        enc = model.encoder
        memory = {
            "peak_gb_pass": peak_gb(lambda: enc(mel)),
            "peak_gb_convolutions": peak_gb(lambda: nn.gelu(enc.conv2(nn.gelu(enc.conv1(mel))))),
            "peak_gb_one_block": peak_gb(lambda: enc.blocks[0](x)),
            "peak_gb_one_attention": peak_gb(lambda: mx.fast.scaled_dot_product_attention(q, q, q, scale=0.125)),
        }
        fused = fastest_seconds(compiled, args.repeat)
        prod = fastest_seconds(products, args.repeat)
        attn = fastest_seconds(attention, args.repeat)
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
                    **memory,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
