#!/usr/bin/env python3
"""Where a decoding step's time goes, against what the hardware allows (random weights, one batch).

Each part is timed alone between `mx.eval` boundaries (median of `--repeat` runs), beside the
machine's measured memory bandwidth and matmul rate, so every line also prints the part's floor:
the bytes it must read divided by the bandwidth. Parts:
- the encoder, per chunk size;
- one decoder step at `--batch` rows, `--offset` tokens into the window: the whole step (layers,
  output head, logit rules, token choice), the layers alone, the cross-attention reads alone,
  the linear layers alone, and the output head with the rules alone;
- peak memory of a window batch's parts: weights, cross K/V, self K/V, one encoder chunk.
`python benchmarks/step_profile.py --model large-v3 --batch 128 --dtype float16` (on a GPU).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import mlxbatchwhisper  # noqa: E402, I001  (first: binds the fast BLAS before MLX loads)
import mlx.core as mx  # noqa: E402
import mlx.nn as nn  # noqa: E402
import numpy as np  # noqa: E402
from mlx.utils import tree_flatten  # noqa: E402
from throughput import SHAPES, measure_hardware  # noqa: E402

from mlxbatchwhisper.cache import KVCache  # noqa: E402
from mlxbatchwhisper.checkpoints import to_dtype  # noqa: E402
from mlxbatchwhisper.options import DecodingOptions  # noqa: E402
from mlxbatchwhisper.rules import LogitRules  # noqa: E402
from mlxbatchwhisper.kernels import argmax, cross_attention, logsumexp, quantize_kv  # noqa: E402
from mlxbatchwhisper.model import Whisper  # noqa: E402
from mlxbatchwhisper.tokenizer import get_tokenizer  # noqa: E402


def median_time(fn, repeat: int) -> float:
    mx.eval(fn())  # warm-up (kernel compilation, allocation)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        mx.eval(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def nbytes(tree) -> int:
    """Bytes of every array in a tree of arrays (lists, tuples, dicts)."""
    return sum(v.nbytes for _, v in tree_flatten(tree))


def prefilled(model: Whisper, batch: int, offset: int, reserve: int = 0) -> list[KVCache]:
    """Every decoder layer's cache for `batch` rows of random audio features, `offset` random tokens in."""
    dims, dec = model.dims, model.decoder
    features = mx.random.normal((batch, dims.n_audio_ctx, dims.n_audio_state)).astype(model.dtype)
    cache = [KVCache(kv, reserve=reserve) for kv in dec.cross_kv(features)]
    prompt = mx.array(np.random.default_rng(0).integers(0, 50000, (batch, offset)), dtype=mx.int32)
    mx.eval(dec(prompt, cache=cache), [(c.keys, c.values) for c in cache])
    return cache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--offset", type=int, default=64, help="tokens already in each row's cache")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--chunks", nargs="+", type=int, default=[8, 32], help="encoder chunk sizes")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    info = mlxbatchwhisper.runtime_info()
    print(json.dumps(info), flush=True)
    hw = measure_hardware()
    print(json.dumps(hw), flush=True)
    bw = hw["read_gb_s"] * 1e9
    rows: list[dict] = []

    def report(part: str, seconds: float, floor_bytes: int = 0, **extra) -> None:
        row = {"part": part, "ms": seconds * 1e3, **extra}
        if floor_bytes:
            row["floor_ms"] = floor_bytes / bw * 1e3
            row["fraction_of_floor"] = row["floor_ms"] / row["ms"]
        rows.append(row)
        print("  ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)

    dims = SHAPES[args.model]
    dtype = to_dtype(args.dtype)
    model = Whisper(dims, dtype)
    mx.eval(model.parameters())
    weights = nbytes(model.parameters())
    b, dec = args.batch, model.decoder

    for chunk in args.chunks:
        mel = mx.random.normal((chunk, 2 * dims.n_audio_ctx, dims.n_mels)).astype(dtype)
        mx.reset_peak_memory()
        t = median_time(lambda: model.embed_audio(mel), max(3, args.repeat // 4))
        report(f"encoder chunk {chunk}", t, windows_per_s=chunk / t, peak_gb=mx.get_peak_memory() / 1e9)

    cache = prefilled(model, b, args.offset)
    cross = [c.cross_kv for c in cache]
    cross_bytes = nbytes(cross)
    self_bytes = sum(c.keys[..., : c.offset, :].nbytes * 2 for c in cache)
    token = mx.zeros((b, 1), mx.int32)
    tokenizer = get_tokenizer(dims.n_vocab >= 51865, num_languages=dims.n_vocab - 51765 - 1)
    rules = mx.compile(LogitRules(tokenizer, DecodingOptions(), dims.n_vocab))  # compiled, as the engine's
    state = mx.zeros((4, b), mx.int32) + tokenizer.timestamp_begin

    def step(cache_list):
        hidden = dec(token, cache=cache_list)
        logits = rules(dec.project(hidden[:, -1]).astype(mx.float32), state[0] + 3, state[1], state[2], state[3])
        return argmax(logits), logsumexp(logits)  # native on the CPU, as the engine's

    def fresh_step():  # the cache is rewound after each step so that every run sees the same offset
        out = step(cache)
        mx.eval(out)
        for c in cache:
            c.offset -= 1
        return out

    decoder_weights = nbytes(dec.parameters())
    report(
        "decoder step (all)",
        median_time(fresh_step, args.repeat),
        cross_bytes + decoder_weights + self_bytes,
        rows=b,
    )

    def layers_only():
        out = dec(token, cache=cache)
        mx.eval(out)
        for c in cache:
            c.offset -= 1
        return out

    report("decoder layers", median_time(layers_only, args.repeat), cross_bytes + self_bytes)
    q = [mx.random.normal((b, dims.n_text_head, 1, dims.n_text_state // dims.n_text_head)).astype(dtype) for _ in cross]
    report(
        "cross-attention reads",
        median_time(lambda: [cross_attention(qi, *kv) for qi, kv in zip(q, cross)], args.repeat),
        cross_bytes,
    )
    quantized = [quantize_kv(*kv) for kv in cross]
    mx.eval(quantized)
    report(
        "cross-attention reads, int8 K/V",
        median_time(lambda: [cross_attention(qi, *kv) for qi, kv in zip(q, quantized)], args.repeat),
        nbytes(quantized),
    )
    exact = cross_attention(q[0].astype(mx.float32), *(a.astype(mx.float32) for a in cross[0]))
    approx = cross_attention(q[0], *quantized[0]).astype(mx.float32)
    print(json.dumps({"int8_kv_max_abs_error": mx.abs(approx - exact).max().item()}), flush=True)
    quantized = None
    scale = q[0].shape[-1] ** -0.5
    report(
        "cross-attention reads (MLX sdpa)",
        median_time(
            lambda: [mx.fast.scaled_dot_product_attention(qi, *kv, scale=scale) for qi, kv in zip(q, cross)],
            args.repeat,
        ),
        cross_bytes,
    )
    x = mx.random.normal((b, 1, dims.n_text_state)).astype(dtype)

    def linears():
        outs = []
        for block in dec.blocks:
            for lin in (block.attn.query, block.attn.key, block.attn.value, block.attn.out):
                outs.append(lin(x))
            outs += [block.cross_attn.query(x), block.cross_attn.out(x)]
            outs.append(block.mlp2(nn.gelu(block.mlp1(x))))
        return outs

    report("linear layers", median_time(linears, args.repeat), decoder_weights - dec.token_embedding.weight.nbytes)
    h = mx.random.normal((b, dims.n_text_state)).astype(dtype)

    def head_and_rules():
        logits = rules(dec.project(h).astype(mx.float32), state[0] + 3, state[1], state[2], state[3])
        return argmax(logits), logsumexp(logits)

    report("output head + rules", median_time(head_and_rules, args.repeat), dec.token_embedding.weight.nbytes)
    report("output head alone", median_time(lambda: dec.project(h), args.repeat), dec.token_embedding.weight.nbytes)

    def pipelined(n: int = 16):
        """n steps queued back to back (tokens fed back on the device), one sync at the end."""
        tok = token
        outs = []
        for _ in range(n):
            hidden = dec(tok, cache=cache)
            nxt = mx.argmax(dec.project(hidden[:, -1]).astype(mx.float32), axis=-1).astype(mx.int32)
            tok = nxt[:, None]
            mx.async_eval(tok)
            outs.append(nxt)
        mx.eval(outs)
        for c in cache:
            c.offset -= n
        return outs

    report("16 steps pipelined, per step", median_time(pipelined, max(3, args.repeat // 4)) / 16)
    memory = {
        "weights_gb": weights / 1e9,
        "cross_kv_gb": cross_bytes / 1e9,
        "self_kv_gb_at_offset": self_bytes / 1e9,
        "cache_capacity_gb": sum(c.keys.nbytes * 2 for c in cache) / 1e9,
        "active_gb": mx.get_active_memory() / 1e9,
    }
    print(json.dumps(memory), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"runtime": info, "hardware": hw, "rows": rows, "memory": memory}, indent=1))


if __name__ == "__main__":
    main()
