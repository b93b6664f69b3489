"""Transcripts to files: srt, vtt, json, txt, tsv (openai-whisper's and whisperX's formats)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

FORMATS = ("srt", "vtt", "json", "txt", "tsv")


def format_timestamp(seconds: float, decimal: str = ".", always_hours: bool = False) -> str:
    """HH:MM:SS.mmm (hours only when non-zero unless `always_hours`)."""
    ms = round(max(seconds, 0.0) * 1000)
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    head = f"{hours:02d}:" if always_hours or hours else ""
    return f"{head}{minutes:02d}:{secs:02d}{decimal}{ms:03d}"


def _lines(result: dict) -> list[tuple[float, float, str]]:
    """(start, end, text) per segment, text on one line and free of the cue arrow."""
    return [(s["start"], s["end"], " ".join(s["text"].strip().splitlines()).replace("-->", "->"))
            for s in result["segments"]]


def to_srt(result: dict) -> str:
    """SubRip: numbered cues, HH:MM:SS,mmm times."""
    blocks = [f"{i}\n{format_timestamp(a, ',', True)} --> {format_timestamp(b, ',', True)}\n{text}\n"
              for i, (a, b, text) in enumerate(_lines(result), start=1)]
    return "\n".join(blocks)


def to_vtt(result: dict) -> str:
    """WebVTT: cue text escaped (&, <, >), as the format requires."""
    escape = {ord("&"): "&amp;", ord("<"): "&lt;", ord(">"): "&gt;"}
    cues = [f"{format_timestamp(a)} --> {format_timestamp(b)}\n{text.translate(escape)}\n"
            for a, b, text in _lines(result)]
    return "WEBVTT\n\n" + "\n".join(cues)


def to_txt(result: dict) -> str:
    """One line of text per segment."""
    return "".join(f"{text}\n" for _, _, text in _lines(result))


def to_tsv(result: dict) -> str:
    """start and end in integer milliseconds, then the text (openai-whisper's tsv)."""
    rows = [f"{round(1000 * a)}\t{round(1000 * b)}\t{text.replace(chr(9), ' ')}" for a, b, text in _lines(result)]
    return "start\tend\ttext\n" + "".join(r + "\n" for r in rows)


def to_json(result: dict) -> str:
    """The result as JSON, as returned by `transcribe_audio`."""
    return json.dumps(result, ensure_ascii=False, indent=1)


WRITERS: dict[str, Callable[[dict], str]] = {"srt": to_srt, "vtt": to_vtt, "json": to_json, "txt": to_txt, "tsv": to_tsv}


def output_names(paths: Sequence[str | os.PathLike]) -> list[str]:
    """A distinct transcript name per input: its file stem, numbered ("talk-2") where stems repeat.

    A number is never one that another input's own stem already holds (a/x, b/x, c/x-2 give x,
    x-3, x-2), and names are compared without case, as macOS and Windows file systems do.
    """
    stems = [Path(p).stem for p in paths]
    taken = {stem.casefold() for stem in stems}
    first: set[str] = set()
    names = []
    for stem in stems:
        if stem.casefold() not in first:
            first.add(stem.casefold())
            names.append(stem)
            continue
        k = 2
        while f"{stem}-{k}".casefold() in taken:
            k += 1
        taken.add(f"{stem}-{k}".casefold())
        names.append(f"{stem}-{k}")
    return names


def output_paths(name: str, output_dir: str | os.PathLike, fmt: str = "all") -> list[Path]:
    """Where `write_result` writes <name>.<fmt> (every format for "all")."""
    formats = FORMATS if fmt == "all" else (fmt,)
    unknown = [f for f in formats if f not in WRITERS]
    if unknown:
        raise ValueError(f"unknown output format {unknown[0]!r}; choose from {', '.join(FORMATS)} or all")
    return [Path(output_dir) / f"{name}.{f}" for f in formats]


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, then rename it there: never a half-written file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; a transcript gets the usual mode
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_result(result: dict, name: str, output_dir: str | os.PathLike, fmt: str = "all",
                 overwrite: bool = True) -> list[Path]:
    """Write `result` as <output_dir>/<name>.<fmt> (every format for "all"), each file atomically;
    return the paths written (without `overwrite`, files that exist are kept and not returned)."""
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    paths = []
    for path in output_paths(name, output_dir, fmt):
        if overwrite or not path.exists():
            write_atomic(path, WRITERS[path.suffix[1:]](result))
            paths.append(path)
    return paths
