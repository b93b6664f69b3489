#!/usr/bin/env python3
"""Where the decoding engine's time goes, part by part, inside a real `transcribe` (random weights).

`Engine._launch` (the host builds a step and queues it), `mx.async_eval` inside it, `Engine._read`
(the host waits for the device), `Engine._admit` (prefill: log-mel, encoder, cross K/V, prompt) and
`Engine._encode_ahead` (on a GPU: queuing pieces of the next items' encoder) are wrapped in timers;
the rest is harvesting results and scheduling. Greedy, `--steps` tokens per
window, `--batches` × `--batch` windows. Variants, each a change tried on the engine's step, applied by
replacing methods in this process only:
- `fused`: the self-attention's queries, keys and values from one (3D, D) product;
- `compile`: each block's cross-attention + MLP half as an `mx.compile`d function;
- `static`: the whole decoder step as one compiled function of arrays over a static-shape cache
  (keys/values written with `mx.slice_update` at a column given as an array, attention over all
  reserved columns with a mask);
- `check` (with `static`): compare its hidden state with the regular step's at every step;
- `side`: the encoder work queued ahead (`Engine._encode_ahead`) on a second stream.
Each timed function also reports the most memory in use between the end of its previous call and its
own end (`mx.get_peak_memory`), which says which part reaches the run's peak.
`python benchmarks/loop_profile.py --model large-v3 --batch 128 --variants static` (on a GPU).
Random weights give near-tied logits, so the tokens of different variants differ; compare speed only.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
import zlib
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import mlxbatchwhisper  # noqa: E402, I001  (first: binds the fast BLAS before MLX loads)
import mlx.core as mx  # noqa: E402
import mlx.nn as nn  # noqa: E402
import numpy as np  # noqa: E402
from throughput import SHAPES  # noqa: E402

from mlxbatchwhisper import BatchedWhisper  # noqa: E402
from mlxbatchwhisper import engine, prefill  # noqa: E402
from mlxbatchwhisper.kernels import gelu  # noqa: E402
from mlxbatchwhisper.model import MultiHeadAttention, ResidualAttentionBlock, Whisper  # noqa: E402

spent: Counter = Counter()
calls: Counter = Counter()
peaks: Counter = Counter()  # by timed function: the most memory in use between its previous call's end and its own


def timer(owner, name: str, label: str | None = None, memory: bool = True) -> None:
    """Replace owner.name by the same function, timed under `label` (and its `memory` peak: not for a
    function that the others call)."""
    inner = getattr(owner, name)

    def timed(*args, **kwargs):
        start = time.perf_counter()
        out = inner(*args, **kwargs)
        spent[label or name] += time.perf_counter() - start
        calls[label or name] += 1
        if memory:  # the peak since the previous timed call's end
            peaks[label or name] = max(peaks[label or name], mx.get_peak_memory(), mx.get_active_memory())
            mx.reset_peak_memory()
        return out

    setattr(owner, name, timed)


def fuse_qkv(model: Whisper) -> None:
    for block in model.decoder.blocks:
        a = block.attn
        a.fused = (
            mx.concatenate([a.query.weight, a.key.weight, a.value.weight]),
            mx.concatenate([a.query.bias, mx.zeros_like(a.query.bias), a.value.bias]),
        )
        mx.eval(a.fused)
    regular = MultiHeadAttention.__call__

    def call(self, x, mask=None, kv=None, cache=None):
        if kv is None and cache is not None and getattr(self, "fused", None) is not None:
            w, bias = self.fused
            q, k, v = (self.heads(t) for t in mx.split(mx.addmm(bias, x, w.T), 3, axis=-1))
            return self.out(self.merge(cache.attend(q, k, v, mask), x.ndim))
        return regular(self, x, mask, kv, cache)

    MultiHeadAttention.__call__ = call


def compile_second_half(model: Whisper) -> None:
    for block in model.decoder.blocks:

        def second_half(x, k, v, block=block):
            x = x + block.cross_attn(block.cross_attn_ln(x), kv=(k, v))
            return x + block.mlp2(gelu(block.mlp1(block.mlp_ln(x))))

        block.second_half = mx.compile(second_half)
    regular = ResidualAttentionBlock.__call__

    def call(self, x, mask=None, cross_kv=None, cache=None):
        if cache is None or x.ndim != 2 or len(cross_kv) != 2:
            return regular(self, x, mask, cross_kv, cache)
        return self.second_half(x + self.attn(self.attn_ln(x), mask=mask, cache=cache), *cross_kv)

    ResidualAttentionBlock.__call__ = call


def compile_whole_step(model: Whisper, check: bool) -> list[int]:
    """Replace Engine._launch by one compiled step over static-shape caches; returns the trace count."""
    dec, traces = model.decoder, []

    def whole_step(last, offset, pads, keys, values, cross):
        traces.append(1)
        b, width = last.shape[0], keys[0].shape[2]
        pos = mx.minimum(mx.maximum(offset - pads, 0), dec.positional_embedding.shape[0] - 1)
        x = dec.token_embedding(last[:, None]) + dec.positional_embedding[pos][:, None, :]
        cols = mx.arange(width)[None, :]
        mask = ((cols <= offset) & ((cols >= pads[:, None]) | (cols == offset)))[:, None, None, :]
        new_k, new_v = [], []
        for i, block in enumerate(dec.blocks):
            a = block.attn
            h = block.attn_ln(x)
            q, k, v = a.heads(a.query(h)), a.heads(a.key(h)), a.heads(a.value(h))
            k = mx.slice_update(keys[i], k, offset.reshape(1), axes=(2,))
            v = mx.slice_update(values[i], v, offset.reshape(1), axes=(2,))
            o = mx.fast.scaled_dot_product_attention(q, k, v, scale=q.shape[-1] ** -0.5, mask=mask)
            x = x + a.out(o.transpose(0, 2, 1, 3).reshape(b, 1, -1))
            x = x + block.cross_attn(block.cross_attn_ln(x), kv=cross[i])
            x = x + block.mlp2(nn.gelu(block.mlp1(block.mlp_ln(x))))
            new_k.append(k)
            new_v.append(v)
        return dec.ln(x)[:, -1], new_k, new_v

    step = mx.compile(whole_step)

    def launch(self, batch):
        cache = batch.cache
        for c in cache:
            if c.offset + 1 > c.keys.shape[2]:
                c._grow(c.offset + 1, c.keys)
        offset, pads = mx.array(cache[0].offset, mx.int32), mx.array(cache[0].left_padding, mx.int32)
        if check:
            copies = [copy.copy(c) for c in cache]
            for d, c in zip(copies, cache):
                d.keys, d.values = mx.array(c.keys), mx.array(c.values)
            reference = self.model.decoder(batch.rows.last[:, None], cache=copies)[:, -1]
        keys, values = [c.keys for c in cache], [c.values for c in cache]
        for c in cache:
            c.keys = c.values = None  # so that the step may write over them in place
        start = time.perf_counter()
        hidden, keys, values = step(batch.rows.last, offset, pads, keys, values, [c.cross_kv for c in cache])
        spent["compiled call"] += time.perf_counter() - start
        calls["compiled call"] += 1
        if check:
            error = float(mx.abs(hidden - reference).max() / mx.abs(reference).max())
            print(f"  step {cache[0].offset}: largest difference {error:.2e} of the largest value", flush=True)
        for c, k, v in zip(cache, keys, values):
            c.keys, c.values = k, v
            c.offset += 1
        batch.rows, _ = self.selector(self.model.decoder.project(hidden), batch.rows, *self._kinds(batch.jobs))
        mx.async_eval(*batch.rows.arrays())

    engine.Engine._launch = launch
    return traces


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=128, help="tokens per window")
    parser.add_argument("--batches", type=int, default=2, help="batches of windows in the timed call")
    parser.add_argument("--absorb", action="store_true", help="absorbed cross-attention (no K/V)")
    parser.add_argument("--variants", nargs="*", default=[], choices=["fused", "compile", "static", "check", "side"])
    parser.add_argument("--encoder-batch", type=int, help="windows per encoder call on a GPU (default: the engine's)")
    parser.add_argument("--ahead", type=int, help="encoder pieces per step for the next items (GPU; 0: off)")
    args = parser.parse_args()
    if args.encoder_batch:
        prefill.AudioEncoder.GPU_BATCH = args.encoder_batch
    print(json.dumps(mlxbatchwhisper.runtime_info()), flush=True)
    mx.random.seed(0)  # the same random weights in every run, so that token digests compare
    model = Whisper(SHAPES[args.model], mx.float32 if mx.default_device() == mx.cpu else mx.float16)
    mx.eval(model.parameters())
    if args.absorb:
        model.decoder.absorb()
    traces = None
    if "fused" in args.variants:
        fuse_qkv(model)
    if "compile" in args.variants:
        compile_second_half(model)
    if "static" in args.variants:
        traces = compile_whole_step(model, "check" in args.variants)
    for name in ("_launch", "_read", "_admit", "_encode_ahead"):
        if hasattr(engine.Engine, name):  # an older engine (an earlier tree, for comparison) may lack one
            timer(engine.Engine, name)
    if args.ahead is not None:
        engine.Engine.AHEAD_PER_STEP = args.ahead
    if "side" in args.variants:
        side, ahead = mx.new_stream(mx.default_device()), engine.Engine._encode_ahead

        def on_side_stream(self, scheduler):
            with mx.stream(side):
                ahead(self, scheduler)

        engine.Engine._encode_ahead = on_side_stream
    timer(mx, "async_eval", "mx.async_eval", memory=False)
    ours = BatchedWhisper(model)
    eot = ours.tokenizer.eot
    options = dict(
        temperature=0.0, language="en", without_timestamps=True, suppress_tokens=[eot], sample_len=args.steps
    )
    rng = np.random.default_rng(0)
    windows = [rng.normal(0, 0.1, 480000).astype(np.float32) for _ in range(args.batches * args.batch)]
    ours.transcribe(windows[: args.batch], batch_size=args.batch, **options)  # warm-up at this shape
    spent.clear(), calls.clear()
    start = time.perf_counter()
    results = ours.transcribe(windows, batch_size=args.batch, **options)
    wall = time.perf_counter() - start
    steps = calls["_launch"]
    digest = zlib.crc32(repr([r.tokens for r in results]).encode())
    print(
        f"{args.model}{' absorbed' if args.absorb else ''} batch {args.batch} {args.variants}"
        f" encoder batch {prefill.AudioEncoder.GPU_BATCH}: "
        f"{len(windows) / wall:.1f} windows/s, "
        f"{wall:.2f} s, {steps} steps, tokens crc32 {digest:08x}"
    )
    for name in spent:
        peak = f", peak memory up to its end {peaks[name] / 2**30:.2f} GiB" if name in peaks else ""
        print(f"  {name}: {spent[name]:.3f} s, {1e3 * spent[name] / calls[name]:.2f} ms a call × {calls[name]}{peak}")
    if traces is not None:
        print(f"  the compiled step was traced {len(traces)} time(s)")
    rest = wall - sum(spent[n] for n in ("_launch", "_read", "_admit", "_encode_ahead"))
    print(f"  rest (harvest, scheduler, results): {rest:.3f} s, {1e3 * rest / steps:.2f} ms a step")


if __name__ == "__main__":
    main()
