#!/usr/bin/env python3
"""Decoding throughput by batch size: segments/s, tokens/s, real-time factor, peak memory.

Two modes, each one run:
- real weights (default): the corpus segments (each used `--repeat` times) transcribed with
  greedy decoding at each batch size, e.g. `--models tiny.en base --batch-sizes 1 2 4 8 16 32`;
- random weights at a model's shapes (`--random large-v3 large-v3-turbo`): 30 s windows of
  noise, exactly `--steps` tokens decoded per window (end-of-text suppressed), with
  `--transformers` adding Hugging Face transformers' `generate` on the same shapes, fp16, on
  the same machine (for GPU runs).
Prints one row per (model, batch size) and, with --json, writes them too.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import mlxbatchwhisper  # noqa: E402, I001  (first: binds the fast BLAS before MLX loads)
import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402
from mlx.utils import tree_flatten  # noqa: E402

from mlxbatchwhisper import BatchedWhisper  # noqa: E402
from mlxbatchwhisper.checkpoints import to_dtype  # noqa: E402
from mlxbatchwhisper.heads import heads_for_name  # noqa: E402
from mlxbatchwhisper.model import ModelDimensions, Whisper  # noqa: E402
from mlxbatchwhisper.prefill import AudioEncoder  # noqa: E402
from mlxbatchwhisper.quantize import quantize_model  # noqa: E402
from mlxbatchwhisper.runtime import fastest_seconds  # noqa: E402

SHAPES = {
    "large-v3": ModelDimensions(128, 1500, 1280, 20, 32, 51866, 448, 1280, 20, 32),
    "large-v3-turbo": ModelDimensions(128, 1500, 1280, 20, 32, 51866, 448, 1280, 20, 4),
    "base": ModelDimensions(80, 1500, 512, 8, 6, 51865, 448, 512, 8, 6),
    "tiny": ModelDimensions(80, 1500, 384, 6, 4, 51865, 448, 384, 6, 4),
}


def measure_hardware(repeat: int = 10) -> dict:
    """This device's read bandwidth (a sum over 1 GiB on a GPU) and matmul rate (float16 on a GPU)."""
    gpu = mx.default_device() == mx.gpu
    dtype = mx.float16 if gpu else mx.float32
    a = mx.random.normal((1 << 29 if gpu else 1 << 25,)).astype(dtype)
    size = 8192 if gpu else 1024
    x = mx.random.normal((size, size)).astype(dtype)
    mx.eval(a, x)

    return {
        "read_gb_s": a.nbytes / fastest_seconds(lambda: a.sum(), repeat) / 1e9,
        "matmul_tflop_s": 2 * size**3 / fastest_seconds(lambda: x @ x, repeat) / 1e12,
    }


def window_limit(dims: ModelDimensions, batch: int, steps: int, dtype_bytes: int, hw: dict) -> float:
    """Windows/s this device allows at least cost: the encoder's matmul work at the measured rate,
    then every step reading each row's cross-attention K/V and the decoder's weights once at the
    measured bandwidth (self-attention K/V and everything else counted as free)."""
    t, d = dims.n_audio_ctx, dims.n_audio_state
    encoder_flops = dims.n_audio_layer * (24 * t * d * d + 4 * t * t * d) + 2 * 3 * (
        2 * t * dims.n_mels * d + t * d * d
    )
    dt = dims.n_text_state
    cross_bytes = 2 * dims.n_text_layer * t * dt * dtype_bytes
    weight_bytes = (dims.n_text_layer * 12 * dt * dt + dims.n_vocab * dt) * dtype_bytes
    seconds = batch * encoder_flops / (hw["matmul_tflop_s"] * 1e12)
    seconds += steps * (batch * cross_bytes + weight_bytes) / (hw["read_gb_s"] * 1e9)
    return batch / seconds


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def release_cached_memory() -> None:
    """Hand back what MLX's and (if loaded) torch's allocators cache, so that each run starts level."""
    mx.clear_cache()
    if "torch" in sys.modules and sys.modules["torch"].cuda.is_available():
        sys.modules["torch"].cuda.empty_cache()


def timed(fn):
    release_cached_memory()
    mx.reset_peak_memory()
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start, mx.get_peak_memory() / 2**20


def real_weights(args) -> list[dict]:
    from reference import corpus_audio, manifest, segment_names

    rows = []
    for name in args.models:
        model = BatchedWhisper.from_pretrained(name, dtype=args.dtype, absorb_cross_kv=args.absorb)
        names = [n for n in segment_names() if model.tokenizer.multilingual or manifest()[n]["language"] == "en"]
        audios = [corpus_audio(n) for n in names] * args.repeat
        seconds = sum(len(a) for a in audios) / 16000
        model.transcribe(audios[:2], batch_size=2, temperature=0.0)  # warm-up (kernels, compile)
        for b in args.batch_sizes:
            results, wall, peak = timed(lambda: model.transcribe(audios, batch_size=b, temperature=0.0))
            tokens = sum(len(r.tokens) for r in results)
            rows.append(
                {
                    "model": name + (" absorbed K/V" if args.absorb else ""),
                    "dtype": args.dtype,
                    "batch": b,
                    "segments": len(audios),
                    "segments_per_s": len(audios) / wall,
                    "tokens_per_s": tokens / wall,
                    "rtf": seconds / wall,
                    "wall_s": wall,
                    "peak_mlx_mb": peak,
                    "peak_rss_mb": peak_rss_mb(),
                }
            )
            print_row(rows[-1])
    return rows


def random_weights(args) -> list[dict]:
    rows = []
    rng = np.random.default_rng(0)
    hw = measure_hardware()
    print(json.dumps(hw), flush=True)
    for name in args.random:
        dims = SHAPES[name]
        model = Whisper(dims, to_dtype(args.dtype))
        model.decoder.kv_bits = args.kv_bits
        if args.quantize:  # weights as MLX's quantized layers (affine, groups of 64), run as they are
            mx.eval(model.parameters())
            quantize_model(model, args.quantize, 64)
        if args.absorb:
            model.decoder.absorb()
        model.alignment_heads = heads_for_name(name) or model.alignment_heads  # the real model's heads
        mx.eval(model.parameters())
        ours = BatchedWhisper(model)
        eot = ours.tokenizer.eot
        suppress = [eot]
        if args.word_timestamps:  # words, not byte soup: only " " + ASCII letters may be sampled
            word = re.compile(rb"^ [A-Za-z]+$")
            encoding = ours.tokenizer.encoding
            suppress += [t for t in range(eot) if not word.match(encoding.decode_single_token_bytes(t))]
        options = dict(
            temperature=0.0,
            language="en",
            without_timestamps=True,
            suppress_tokens=suppress,
            sample_len=args.steps,
            beam_size=args.beam_size,
        )
        for b in args.batch_sizes:
            windows = [rng.normal(0, 0.1, 480000).astype(np.float32) for _ in range(b * args.batches)]
            ours.transcribe(windows[:b], batch_size=b, **options)  # warm-up at this shape
            results, wall, peak = timed(lambda: ours.transcribe(windows, batch_size=b, **options))
            assert all(len(r.tokens) == args.steps for r in results)
            impl = "mlxbatchwhisper" + (f" beam {args.beam_size}" if args.beam_size else "")
            impl += " int8 K/V" if args.kv_bits else ""
            impl += " absorbed K/V" if args.absorb else ""
            impl += f" int{args.quantize} g64 weights" if args.quantize else ""
            limit = window_limit(dims, b, args.steps, to_dtype(args.dtype).size, hw)
            rows.append(
                {
                    "impl": impl,
                    "model": name,
                    "dtype": args.dtype,
                    "batch": b,
                    "windows_per_s": len(windows) / wall,
                    "limit_windows_per_s": limit,
                    "fraction_of_limit": len(windows) / wall / limit,
                    "tokens_per_s": len(windows) * args.steps / wall,
                    "wall_s": wall,
                    "peak_mb": peak,
                    "unavoidable_mb": unavoidable_mb(ours.model, b, args.steps) if not args.beam_size else None,
                    "unavoidable_absorbed_mb": unavoidable_mb(ours.model, b, args.steps, absorbed=True),
                }
            )
            print_row(rows[-1])
            if args.word_timestamps:  # the same windows again, each aligned word by word after decoding
                ours.transcribe(windows[:b], batch_size=b, word_timestamps=True, **options)
                _, timed_wall, timed_peak = timed(
                    lambda: ours.transcribe(windows, batch_size=b, word_timestamps=True, **options)
                )
                rows.append(
                    {
                        **rows[-1],
                        "impl": impl + " + words",
                        "windows_per_s": len(windows) / timed_wall,
                        "tokens_per_s": len(windows) * args.steps / timed_wall,
                        "wall_s": timed_wall,
                        "peak_mb": timed_peak,
                        "words_share": 1 - wall / timed_wall,
                    }
                )
                print_row(rows[-1])
            if args.transformers:
                rows.append(transformers_generate(name, dims, b, args))
                print_row(rows[-1])
        model = ours = None  # freed before the next model
        mx.clear_cache()
    return rows


def unavoidable_mb(model: Whisper, batch: int, steps: int, absorbed: bool = False) -> float:
    """Memory no implementation can do without: weights, every row's cross-attention K/V, the
    self-attention K/V of the steps taken (and the 4 prompt tokens), and one encoder chunk's
    activations (its input and output, one layer's queries, keys, values and MLP hidden state).
    `absorbed`: the same with each row's audio features in place of its cross-attention K/V."""
    dims, size = model.dims, model.dtype.size
    weights = sum(v.nbytes for _, v in tree_flatten(model.parameters()))
    cross = batch * (1 if absorbed else 2 * dims.n_text_layer) * dims.n_audio_ctx * dims.n_text_state * size
    own = batch * 2 * dims.n_text_layer * (steps + 4) * dims.n_text_state * size
    chunk, t, d = min(batch, AudioEncoder(model).batch), dims.n_audio_ctx, dims.n_audio_state
    encoder = chunk * (2 + 3 + 4) * t * d * size
    return (weights + cross + own + encoder) / 2**20


def transformers_generate(name: str, dims: ModelDimensions, b: int, args) -> dict:
    import torch
    from transformers import GenerationMixin, WhisperConfig, WhisperForConditionalGeneration

    if not hasattr(transformers_generate, "models"):
        transformers_generate.models = {}
    if name not in transformers_generate.models:
        transformers_generate.models.clear()
        torch.cuda.empty_cache()
        config = WhisperConfig(
            vocab_size=dims.n_vocab,
            num_mel_bins=dims.n_mels,
            d_model=dims.n_audio_state,
            encoder_layers=dims.n_audio_layer,
            decoder_layers=dims.n_text_layer,
            encoder_attention_heads=dims.n_audio_head,
            decoder_attention_heads=dims.n_text_head,
            encoder_ffn_dim=4 * dims.n_audio_state,
            decoder_ffn_dim=4 * dims.n_text_state,
            max_source_positions=dims.n_audio_ctx,
            max_target_positions=dims.n_text_ctx,
        )
        torch.manual_seed(0)
        transformers_generate.models[name] = WhisperForConditionalGeneration(config).half().cuda().eval()
    model = transformers_generate.models[name]
    prompt = torch.tensor([[50258, 50259, 50360, 50364]] * b, device="cuda")

    def run(features):
        with torch.no_grad():
            return GenerationMixin.generate(
                model,
                input_features=features,
                decoder_input_ids=prompt,
                max_new_tokens=args.steps,
                min_new_tokens=args.steps,
                do_sample=False,
                num_beams=1,
            )

    release_cached_memory()
    features = [torch.randn(b, dims.n_mels, 3000, device="cuda", dtype=torch.float16) for _ in range(args.batches)]
    run(features[0])
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for f in features:
        out = run(f)
    torch.cuda.synchronize()
    wall = time.perf_counter() - start
    assert out.shape[1] == 4 + args.steps
    n = b * args.batches
    return {
        "impl": "transformers",
        "model": name,
        "dtype": "float16",
        "batch": b,
        "windows_per_s": n / wall,
        "tokens_per_s": n * args.steps / wall,
        "wall_s": wall,
        "peak_mb": torch.cuda.max_memory_allocated() / 2**20,
    }


def print_row(row: dict) -> None:
    print("  ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny.en", "base"])
    parser.add_argument("--random", nargs="+", choices=sorted(SHAPES), help="random weights at these shapes")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--repeat", type=int, default=2, help="corpus passes (real weights)")
    parser.add_argument("--steps", type=int, default=128, help="tokens per window (random weights)")
    parser.add_argument(
        "--word-timestamps",
        action="store_true",
        help="random weights: also time each batch with word timestamps (the alignment's share)",
    )
    parser.add_argument("--beam-size", type=int, default=None, help="beam search (random weights; default greedy)")
    parser.add_argument("--kv-bits", type=int, choices=[8], help="random weights: int8 cross-attention K/V")
    parser.add_argument("--absorb", action="store_true", help="cross-attention against the features (no K/V)")
    parser.add_argument("--quantize", type=int, choices=[4, 8], help="random weights: quantized layers, groups of 64")
    parser.add_argument("--batches", type=int, default=2, help="batches per size (random weights)")
    parser.add_argument("--transformers", action="store_true", help="also time transformers' generate (CUDA)")
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args()
    print(json.dumps(mlxbatchwhisper.runtime_info()))
    rows = random_weights(args) if args.random else real_weights(args)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
