"""`mlxbatchwhisper-convert`: convert (and quantize) a checkpoint into the mlx-community layout."""

from __future__ import annotations

import argparse
import sys

from ..quantize import RECIPES
from . import interrupts_unwind


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="mlxbatchwhisper-convert",
        description="Convert a Whisper checkpoint (Hugging Face id or directory, mlx-community directory, "
        "CTranslate2 directory, or OpenAI .pt file) to the mlx-community layout "
        "(config.json + weights.safetensors), optionally quantized.",
    )
    parser.add_argument("src", help="checkpoint path, model name (tiny.en, base, …) or Hugging Face repo id")
    parser.add_argument("-o", "--out", required=True, help="output directory (must not exist)")
    parser.add_argument("--dtype", choices=["float16", "bfloat16", "float32"], default="float16")
    parser.add_argument("-q", "--quantize", action="store_true", help="quantize the weights")
    parser.add_argument("--q-bits", type=int, choices=[4, 8], default=None, help="with -q (default 4)")
    parser.add_argument("--q-group-size", type=int, choices=[32, 64, 128], default=None, help="with -q (default 64)")
    parser.add_argument(
        "--q-recipe",
        choices=sorted(RECIPES),
        default=None,
        help="with -q (default 'default'); " + "; ".join(f"{k}: {v}" for k, v in RECIPES.items()),
    )
    args = parser.parse_args(argv)
    given = [f"--{k.replace('_', '-')}" for k in ("q_bits", "q_group_size", "q_recipe") if getattr(args, k) is not None]
    if given and not args.quantize:
        parser.error(f"{', '.join(given)} only apply with -q/--quantize")
    args.q_bits, args.q_group_size = args.q_bits or 4, args.q_group_size or 64
    args.q_recipe = args.q_recipe or "default"
    return args


def main(argv: list[str] | None = None) -> int:
    """Convert one checkpoint; exit status 0 on success, 2 on a bad source, output or option."""
    args = parse_args(argv)
    from ..checkpoints import CheckpointError
    from ..convert import convert

    try:
        with interrupts_unwind():  # as Ctrl-C does, SIGTERM removes the partial output folder
            done = convert(args.src, args.out, args.dtype, args.quantize, args.q_bits, args.q_group_size, args.q_recipe)
    except (FileNotFoundError, FileExistsError, CheckpointError, ValueError) as e:
        print(f"mlxbatchwhisper-convert: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mlxbatchwhisper-convert: interrupted; nothing written", file=sys.stderr)
        return 130
    what = "float" if not done.quantization else f"{args.q_bits}-bit, group {args.q_group_size}, recipe {args.q_recipe}"
    print(f"wrote {done.path} ({what}, {args.dtype}): {done.bytes_on_disk / 2**20:.1f} MiB")
    if done.float_layers:
        print(f"kept in float (width not divisible by {args.q_group_size}): {', '.join(done.float_layers)}")
    if not done.mlx_whisper_compatible:
        print("note: layers use different bit widths; mlx-whisper reads only uniform ones (use --q-recipe uniform)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
