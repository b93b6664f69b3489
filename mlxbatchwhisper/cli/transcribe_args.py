"""The `mlxbatchwhisper` command's arguments: the parser (our options, openai-whisper's and whisperX's, each in
both spellings), their checks, and their mapping onto `transcribe_audio_iter`'s options."""

from __future__ import annotations

import argparse

import numpy as np

from ..tokenizer import Tokenizer
from ..vad import VadOptions
from ..words import WordOptions
from ..writers import FORMATS, SubtitleOptions


def build_parser() -> argparse.ArgumentParser:
    """The command line: our options plus openai-whisper's and whisperX's, each in both spellings."""
    parser = argparse.ArgumentParser(
        prog="mlxbatchwhisper",
        description="Transcribe audio or video files with Whisper in MLX: speech found by Silero VAD is cut "
        "into windows of at most --chunk_size seconds, and the windows of all files are decoded "
        "together in batches. Options are spelled with underscores or hyphens (--batch_size, --batch-size).",
    )
    parser.add_argument("files", nargs="+", help="audio/video files (anything FFmpeg decodes)")

    def add(name: str, *short: str, **kwargs) -> None:
        flags = dict.fromkeys([f"--{name}", f"--{name.replace('_', '-')}", *short])
        parser.add_argument(*flags, dest=name, **kwargs)

    add("model", default="tiny.en", help="model name (tiny.en, base, ...), path or Hugging Face repo id")
    add("batch_size", default="16", help="windows decoded together, or 'auto' (sized from free memory)")
    add("language", default=None, help="language code or name; detected per window if omitted")
    add("task", choices=["transcribe", "translate"], default="transcribe", help="transcribe, or translate to English")
    parser.add_argument(
        "--vad",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="cut at speech found by Silero VAD (default) or only at the quietest moments",
    )
    parser.add_argument("--no_vad", dest="vad", action="store_false", help=argparse.SUPPRESS)
    add("vad_onset", type=float, default=None, help=f"VAD: speech starts at this probability ({VadOptions.threshold})")
    add("vad_offset", type=float, default=None, help="VAD: speech ends below this probability (onset - 0.15)")
    add("chunk_size", type=float, default=30, help="longest window, seconds (at most 30)")
    add(
        "pack_short_inputs",
        type=_bool,
        nargs="?",
        const=True,
        default=False,
        help="decode the speech of short files (<= 15 s) together in shared windows: several times faster on "
        "many short files, but a file's text may then depend on its neighbours (see docs/reliability.md)",
    )
    add("output_dir", "-o", default=".", help="where to write the transcripts")
    add("output_format", "-f", choices=[*FORMATS, "all"], default="all", help="transcript format, or all of them")
    add(
        "overwrite",
        action="store_true",
        help="replace existing transcripts (default: an input whose transcripts "
        "all exist is skipped, so an interrupted run can be continued)",
    )
    add("verbose", type=_bool, nargs="?", const=True, default=False, help="print each file's segments when done")
    add("print_progress", type=_bool, nargs="?", const=True, default=False, help="the same as --verbose")
    add("dtype", choices=["float32", "float16", "bfloat16"], default=None, help="weights' type (default: from --fp16)")
    add("fp16", type=_bool, default=True, help="float16 on a GPU (default True); the CPU always uses float32")
    add("threads", type=int, default=0, help="CPU threads for matrix products (0: the BLAS library's default)")
    add(
        "cross_kv",
        choices=["full", "int8", "absorbed"],
        default="full",
        help="how the decoder keeps each segment's cross-attention keys/values: full; int8 (half the memory); "
        "absorbed (none: the audio features once, 2 x decoder layers less memory, same text on the CPU)",
    )

    add(
        "temperature",
        type=float,
        nargs="+",
        default=[0.0],
        help="temperature to start from (several: the temperatures to try in turn)",
    )
    add(
        "temperature_increment_on_fallback",
        type=_optional_float,
        default=0.2,
        help="a window whose text fails the thresholds below is decoded again this much hotter, up to 1.0 "
        "(None: no fallback)",
    )
    add("beam_size", type=_optional_int, default=5, help="beams at temperature 0 (None or 1: greedy)")
    add("best_of", type=_optional_int, default=5, help="samples drawn per window at temperatures above 0")
    add("patience", type=float, default=None, help="beam search patience: finished beams to wait for, x beam size")
    add("length_penalty", type=float, default=None, help="0-1: Google NMT's length penalty (default: mean log prob)")
    add("suppress_tokens", default="-1", help="token ids never written, comma-separated (-1: symbols, the default)")
    add("suppress_numerals", action="store_true", help="never write digits, '%%', '$' or '£' (numbers as words)")
    add("initial_prompt", default=None, help="text that prompts every window (names, spelling, style)")
    add(
        "condition_on_previous_text",
        type=_bool,
        default=True,
        help="--mode sequential: prompt each window with the text before it (--mode vad: ignored)",
    )
    add(
        "mode",
        choices=["vad", "sequential"],
        default="vad",
        help="vad: speech found by Silero VAD, windows of all files decoded together (fast); sequential: "
        "openai-whisper's own long-form algorithm per file, one window of every file per batch (faithful)",
    )
    add("clip_timestamps", default="0", help="--mode sequential: start,end,... seconds of the parts to transcribe")
    add(
        "carry_initial_prompt",
        type=_bool,
        default=False,
        help="--mode sequential: put --initial_prompt before every window's prompt, not only the first's",
    )
    add(
        "hallucination_silence_threshold",
        type=_optional_float,
        default=None,
        help="--mode sequential with --word_timestamps: skip silences longer than this (seconds) around "
        "likely hallucinations",
    )
    add("compression_ratio_threshold", type=_optional_float, default=2.4, help="decode again above this gzip ratio")
    add("logprob_threshold", type=_optional_float, default=-1.0, help="decode again below this mean log prob")
    add("no_speech_threshold", type=_optional_float, default=0.6, help="silence above this no-speech probability")

    add(
        "word_timestamps",
        type=_bool,
        nargs="?",
        const=True,
        default=False,
        help="time every word (json gets the words; srt/vtt can cut and highlight by them)",
    )
    add(
        "highlight_words",
        type=_bool,
        nargs="?",
        const=True,
        default=False,
        help="srt/vtt: underline each word while it is spoken (needs --word_timestamps)",
    )
    add("max_line_width", type=int, default=None, help="srt/vtt: wrap lines at this many characters (needs words)")
    add(
        "max_line_count",
        type=int,
        default=None,
        help="srt/vtt: lines per cue; with --max_line_width, cues no longer keep to segments (needs words)",
    )
    add("max_words_per_line", type=int, default=None, help="srt/vtt: words per line at most (needs words)")
    add("prepend_punctuations", default=WordOptions.prepend_punctuations, help="marks joined to the word after them")
    add("append_punctuations", default=WordOptions.append_punctuations, help="marks joined to the word before them")
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parsed options, checked; `dtype` resolved from --fp16 and the device."""
    parser = build_parser()
    args = parser.parse_args(argv)
    uses_words = [
        n for n in ("highlight_words", "max_line_width", "max_line_count", "max_words_per_line") if getattr(args, n)
    ]
    if uses_words and not args.word_timestamps:
        parser.error(f"--{uses_words[0]} needs --word_timestamps")
    try:
        args.subtitles = SubtitleOptions(
            args.max_line_width, args.max_line_count, args.max_words_per_line, args.highlight_words
        )
    except ValueError as e:
        parser.error(str(e))
    if args.batch_size != "auto":
        try:
            args.batch_size = int(args.batch_size)
        except ValueError:
            parser.error(f"--batch_size must be an integer or 'auto', not {args.batch_size!r}")
    if args.beam_size is not None and args.beam_size <= 1:
        args.beam_size = None  # one beam is greedy decoding
    if args.patience is not None and args.beam_size is None:
        parser.error("--patience needs --beam_size of 2 or more")
    if args.temperature_increment_on_fallback is not None and not args.temperature_increment_on_fallback > 0:
        parser.error("--temperature_increment_on_fallback must be positive or None")
    if args.threads < 0:
        parser.error(f"--threads must be 0 (the default) or more, not {args.threads}")
    try:
        args.suppress_tokens = [int(t) for t in args.suppress_tokens.split(",") if t.strip()]
    except ValueError:
        parser.error(f"--suppress_tokens must be comma-separated token ids, not {args.suppress_tokens!r}")
    thresholds = {"threshold": args.vad_onset, "neg_threshold": args.vad_offset}
    try:
        args.vad_options = VadOptions(**{k: v for k, v in thresholds.items() if v is not None})
    except ValueError as e:
        parser.error(f"--vad_onset/--vad_offset: {e}")
    if args.dtype is None:
        import mlx.core as mx

        args.dtype = "float16" if args.fp16 and mx.default_device() != mx.cpu else "float32"
    return args


def transcribe_options(args: argparse.Namespace, tokenizer: Tokenizer) -> dict:
    """The parsed options as `transcribe_audio_iter`'s keyword options (decoding, prompt, VAD)."""
    temperatures = tuple(args.temperature)
    if len(temperatures) == 1 and args.temperature_increment_on_fallback is not None:
        step = args.temperature_increment_on_fallback
        ladder = np.arange(temperatures[0], 1.0 + 1e-6, step)  # empty for a start above 1: the start alone
        temperatures = tuple(round(float(t), 6) for t in ladder) or temperatures
    suppress = [*args.suppress_tokens, *(tokenizer.numeral_symbol_tokens if args.suppress_numerals else ())]
    return {
        "temperature": temperatures,
        "beam_size": args.beam_size,
        "best_of": args.best_of if args.best_of is not None else 1,
        "patience": args.patience,
        "length_penalty": args.length_penalty,
        "suppress_tokens": suppress,
        "compression_ratio_threshold": args.compression_ratio_threshold,
        "logprob_threshold": args.logprob_threshold,
        "no_speech_threshold": args.no_speech_threshold,
        "initial_prompt": args.initial_prompt,
        "vad_options": args.vad_options,
        "mode": args.mode,
        "pack_short_inputs": args.pack_short_inputs,
        "condition_on_previous_text": args.condition_on_previous_text,
        "clip_timestamps": args.clip_timestamps,
        "carry_initial_prompt": args.carry_initial_prompt,
        "hallucination_silence_threshold": args.hallucination_silence_threshold,
        "word_timestamps": args.word_timestamps,
        "prepend_punctuations": args.prepend_punctuations,
        "append_punctuations": args.append_punctuations,
    }


def _bool(text: str) -> bool:
    values = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
    if text.lower() not in values:
        raise argparse.ArgumentTypeError(f"expected True or False, not {text!r}")
    return values[text.lower()]


def _optional_float(text: str) -> float | None:
    return None if text.lower() == "none" else float(text)


def _optional_int(text: str) -> int | None:
    return None if text.lower() == "none" else int(text)
