"""`mlxbatchwhisper`: transcribe audio files with VAD-fed batched decoding."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..words import WordOptions
from ..writers import FORMATS, SubtitleOptions


def _boolean(text: str) -> bool:
    """openai-whisper's spelling of flags: --word_timestamps True (or just --word_timestamps)."""
    value = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(text.lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"expected True or False, not {text!r}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="mlxbatchwhisper",
        description="Transcribe audio or video files with Whisper in MLX: speech found by Silero VAD is cut "
                    "into windows of at most --chunk-size seconds, and the windows of all files are decoded "
                    "together in batches.",
    )
    parser.add_argument("files", nargs="+", help="audio/video files (anything FFmpeg decodes)")
    parser.add_argument("--model", default="tiny.en", help="model name (tiny.en, base, …), path or Hugging Face repo id")
    parser.add_argument("--batch-size", default="16", help="windows decoded together, or 'auto' (from free memory)")
    parser.add_argument("--language", default=None, help="language code or name; detected per window if omitted")
    parser.add_argument("--task", choices=["transcribe", "translate"], default="transcribe")
    parser.add_argument("--vad", action=argparse.BooleanOptionalAction, default=True,
                        help="cut at speech found by Silero VAD (default) or only at the quietest moments")
    parser.add_argument("--chunk-size", type=float, default=30, help="longest window, seconds (≤ 30)")
    parser.add_argument("--output-dir", "-o", default=".", help="where to write the transcripts")
    parser.add_argument("--output-format", "-f", choices=[*FORMATS, "all"], default="all")
    parser.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32")
    parser.add_argument("--beam-size", type=int, default=None, help="beam search width (default: greedy)")
    parser.add_argument("--temperature", type=float, nargs="+", default=None,
                        help="decoding temperatures, tried in turn for rows that need a fallback")
    words = parser.add_argument_group("word timestamps")
    words.add_argument("--word-timestamps", "--word_timestamps", type=_boolean, nargs="?", const=True, default=False,
                       help="time every word (json gets the words; srt/vtt can cut and highlight by them)")
    words.add_argument("--highlight-words", "--highlight_words", type=_boolean, nargs="?", const=True, default=False,
                       help="srt/vtt: underline each word while it is spoken (needs --word-timestamps)")
    words.add_argument("--max-line-width", "--max_line_width", type=int, default=None,
                       help="srt/vtt: wrap lines at this many characters (needs --word-timestamps)")
    words.add_argument("--max-line-count", "--max_line_count", type=int, default=None,
                       help="srt/vtt: lines per cue; with --max-line-width, cues ignore segment boundaries")
    words.add_argument("--max-words-per-line", "--max_words_per_line", type=int, default=None,
                       help="srt/vtt: words per line at most (needs --word-timestamps)")
    words.add_argument("--prepend-punctuations", "--prepend_punctuations", default=WordOptions.prepend_punctuations,
                       help="marks joined to the word after them")
    words.add_argument("--append-punctuations", "--append_punctuations", default=WordOptions.append_punctuations,
                       help="marks joined to the word before them")
    args = parser.parse_args(argv)
    uses_words = [n for n in ("highlight_words", "max_line_width", "max_line_count", "max_words_per_line")
                  if getattr(args, n)]
    if uses_words and not args.word_timestamps:
        parser.error(f"--{uses_words[0].replace('_', '-')} needs --word-timestamps")
    try:
        args.subtitles = SubtitleOptions(args.max_line_width, args.max_line_count, args.max_words_per_line,
                                         args.highlight_words)
    except ValueError as e:
        parser.error(str(e))
    if args.batch_size != "auto":
        try:
            args.batch_size = int(args.batch_size)
        except ValueError:
            parser.error(f"--batch-size must be an integer or 'auto', not {args.batch_size!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Transcribe files; exit status 0 if all were transcribed, 1 if some failed, 2 on bad options."""
    args = parse_args(argv)
    from tqdm import tqdm

    from ..checkpoints import CheckpointError
    from ..pipeline import BatchedWhisper
    from ..writers import output_names, write_result

    try:
        model = BatchedWhisper.from_pretrained(args.model, dtype=args.dtype)
    except (FileNotFoundError, CheckpointError, ValueError) as e:
        print(f"mlxbatchwhisper: error: {e}", file=sys.stderr)
        return 2
    options = {"beam_size": args.beam_size, "word_timestamps": args.word_timestamps,
               "prepend_punctuations": args.prepend_punctuations, "append_punctuations": args.append_punctuations}
    if args.temperature:
        options["temperature"] = tuple(args.temperature)
    total = sum(_duration(f) for f in args.files)
    names = output_names(args.files)
    failed, start = [], time.perf_counter()
    with tqdm(total=round(total, 1), unit="s", unit_scale=True, desc="audio", dynamic_ncols=True) as bar:
        def progress(seconds: float) -> None:
            bar.update(max(0.0, min(round(seconds, 1), bar.total - bar.n)))  # headers may round differently
            bar.set_postfix_str(f"RTF {bar.n / max(time.perf_counter() - start, 1e-9):.1f}x")

        try:
            results = model.transcribe_audio_iter(
                args.files, batch_size=args.batch_size, vad=args.vad, chunk_size=args.chunk_size,
                language=args.language, task=args.task, progress=progress, on_error="yield", **options)
            for i, result in results:
                path = args.files[i]
                if isinstance(result, Exception):
                    failed.append(path)
                    tqdm.write(f"{path}: failed: {result}", file=sys.stderr)
                    continue
                written = write_result(result, names[i], args.output_dir, args.output_format, args.subtitles)
                tqdm.write(f"{path}: {len(result['segments'])} segments, language {result['language']} -> "
                           f"{', '.join(str(p) for p in written)}")
        except ValueError as e:  # options the decoder refuses
            print(f"mlxbatchwhisper: error: {e}", file=sys.stderr)
            return 2
    wall = time.perf_counter() - start
    done = len(args.files) - len(failed)
    print(f"transcribed {done}/{len(args.files)} files, {total:.1f} s of audio in {wall:.1f} s "
          f"(RTF {total / max(wall, 1e-9):.1f}x, batch size {args.batch_size}, model {args.model})")
    return 0 if not failed else 1


def _duration(path: str) -> float:
    """Seconds of audio in a file by its header (0 when unknown or unreadable)."""
    import av

    try:
        with av.open(str(Path(path))) as container:
            stream = container.streams.audio[0]
            if stream.duration and stream.time_base:
                return float(stream.duration * stream.time_base)
            return container.duration / 1e6 if container.duration else 0.0
    except (av.error.FFmpegError, OSError, IndexError):
        return 0.0


if __name__ == "__main__":
    sys.exit(main())
