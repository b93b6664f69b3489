"""`mlxbatchwhisper`: transcribe audio files with VAD-fed batched decoding (options: `transcribe_args`)."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from . import Interrupts, interrupts_unwind
from .transcribe_args import parse_args, transcribe_options

PACK_HINT_FILES = 20  # this many short files without --pack_short_inputs: say that packing is faster


def print_segments(result: dict) -> None:
    """A file's segments as [mm:ss.mmm --> mm:ss.mmm] text lines (for --verbose/--print_progress)."""
    from tqdm import tqdm

    for s in result["segments"]:
        tqdm.write(f"[{_clock(s['start'])} --> {_clock(s['end'])}] {s['text']}")


def _clock(seconds: float) -> str:
    minutes, rest = divmod(round(seconds * 1000), 60_000)
    return f"{minutes:02d}:{rest / 1000:06.3f}"


def main(argv: list[str] | None = None) -> int:
    """Transcribe files; exit status 0 if all were transcribed, 1 if some failed, 2 on bad options or
    output paths, 130 when interrupted (Ctrl-C or SIGTERM; transcripts written so far are kept)."""
    args = parse_args(argv)
    run = _Run(args)
    try:
        with interrupts_unwind() as run.interrupts:
            status = run.main()
            run.interrupts.check()
            return status
    except KeyboardInterrupt:
        run.close()
        print(
            f"mlxbatchwhisper: interrupted: {run.completed}/{len(args.files)} files completed, transcripts in "
            f"{Path(args.output_dir).resolve()} (run again to continue: existing transcripts are kept)",
            file=sys.stderr,
        )
        return 130


class _Run:
    """One command: checks the output paths, loads the model, transcribes, writes and reports."""

    def __init__(self, args: argparse.Namespace):
        self.args, self.completed, self.bar = args, 0, None
        self.interrupts = Interrupts()  # replaced by the command's own while it runs

    def main(self) -> int:
        from ..checkpoints import CheckpointError
        from ..options import ModelOutputError
        from ..pipeline import BatchedWhisper
        from ..writers import output_names, output_paths

        args = self.args
        names = output_names(args.files)
        try:
            planned = [output_paths(name, args.output_dir, args.output_format) for name in names]
            _check_output(Path(args.output_dir), [p for paths in planned for p in paths])
        except (OSError, ValueError) as e:
            return _error(e)
        todo = [i for i, paths in enumerate(planned) if args.overwrite or not all(p.exists() for p in paths)]
        skipped = sorted(set(range(len(args.files))) - set(todo))
        for i in skipped:
            self.completed += 1
            self.say(f"{args.files[i]}: skipped, its transcripts exist (--overwrite to replace them)")
        if not todo:
            return 0
        if args.threads:
            from ..runtime import set_blas_threads

            set_blas_threads(args.threads)
        try:
            model = BatchedWhisper.from_pretrained(
                args.model,
                dtype=args.dtype,
                kv_bits=8 if args.cross_kv == "int8" else None,
                absorb_cross_kv=args.cross_kv == "absorbed",
            )
        except (FileNotFoundError, CheckpointError, ValueError) as e:
            return _error(e)
        try:
            failed, total, wall = self.transcribe(model, todo, names)
        except ValueError as e:  # options the decoder refuses
            return _error(e)
        except (ModelOutputError, OSError) as e:  # a broken model, or a disk that filled up
            return _error(e, 1)
        self.say(
            f"transcribed {self.completed - len(skipped)}/{len(todo)} files, {total:.1f} s of audio in "
            f"{wall:.1f} s (RTF {total / max(wall, 1e-9):.1f}x, batch size {args.batch_size}, model {args.model})"
            + (f"; {len(skipped)} skipped" if skipped else "")
        )
        return 0 if not failed else 1

    def transcribe(self, model, todo: list[int], names: list[str]) -> tuple[list[str], float, float]:
        """Transcribe the inputs `todo` and write their transcripts.

        Returns the failed paths, the seconds of audio and the wall time.
        """
        from tqdm import tqdm

        from ..audio import audio_duration
        from ..pieces import PACK_SECONDS
        from ..writers import write_result

        args = self.args
        options = transcribe_options(args, model.tokenizer)
        files = [args.files[i] for i in todo]
        durations = [audio_duration(f) for f in files]
        total = sum(durations)
        short = sum(0 < d <= PACK_SECONDS for d in durations)
        packable = args.language is not None or not model.tokenizer.multilingual  # as `pieces.Packer` packs
        if not args.pack_short_inputs and packable and short >= PACK_HINT_FILES:
            tqdm.write(
                f"mlxbatchwhisper: {short} of {len(files)} files are under {PACK_SECONDS:.0f} s; each takes a 30 s "
                "window of its own. --pack_short_inputs decodes such files in shared windows, 2-3x faster "
                "(see docs/reliability.md)",
                file=sys.stderr,
            )
        failed, start = [], time.perf_counter()
        self.bar = tqdm(total=round(total, 1), unit="s", unit_scale=True, desc="audio", dynamic_ncols=True)
        bar = self.bar

        def progress(seconds: float) -> None:
            self.interrupts.check()
            bar.update(max(0.0, min(round(seconds, 1), bar.total - bar.n)))  # headers may round differently
            bar.set_postfix_str(f"RTF {bar.n / max(time.perf_counter() - start, 1e-9):.1f}x")

        results = model.transcribe_audio_iter(
            files,
            batch_size=args.batch_size,
            vad=args.vad,
            chunk_size=args.chunk_size,
            language=args.language,
            task=args.task,
            progress=progress,
            on_error="yield",
            **options,
        )
        for k, result in results:
            path = files[k]
            if isinstance(result, Exception):
                failed.append(path)
                tqdm.write(f"{path}: failed: {result}", file=sys.stderr)
                continue
            written = write_result(
                result, names[todo[k]], args.output_dir, args.output_format, args.overwrite, args.subtitles
            )
            if args.verbose or args.print_progress:
                print_segments(result)
            self.completed += 1
            self.say(
                f"{path}: {len(result['segments'])} segments, language {result['language']} -> "
                f"{', '.join(str(p) for p in written)}"
            )
            self.interrupts.check()  # after writing: a file decoded before the signal is kept
        self.close()
        return failed, total, time.perf_counter() - start

    def say(self, line: str) -> None:
        """A line on stdout (above the progress bar); once stdout is closed (`| head`), lines are dropped."""
        from tqdm import tqdm

        try:
            tqdm.write(line, file=sys.stdout)
            sys.stdout.flush()
        except BrokenPipeError:  # the reader went away: keep transcribing, stop printing
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # so the flush at exit does not fail again
            os.close(devnull)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _error(e: Exception, status: int = 2) -> int:
    print(f"mlxbatchwhisper: error: {e}", file=sys.stderr)
    return status


def _check_output(out: Path, paths: list[Path]) -> None:
    """Refuse, before any decoding, an output folder that cannot be written or a transcript path that is a folder."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--output-dir {out} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):  # read-only, immutable or full folders fail here
            pass
    except OSError as e:
        raise OSError(f"--output-dir {out}: cannot write there ({e.strerror or e})") from e
    folders = [str(p) for p in paths if p.is_dir()]
    if folders:
        raise IsADirectoryError(
            f"transcript paths exist as directories: {', '.join(folders[:5])}{' …' if len(folders) > 5 else ''}"
        )


if __name__ == "__main__":
    sys.exit(main())
