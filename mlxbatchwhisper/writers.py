"""Transcripts to files: srt, vtt, json, txt, tsv (openai-whisper's and whisperX's formats)."""

from __future__ import annotations

import json
import os
from collections import Counter
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
    """A distinct transcript name per input: its file stem, numbered ("talk-2") where stems repeat."""
    seen: Counter = Counter()
    names = []
    for p in paths:
        stem = Path(p).stem
        seen[stem] += 1
        names.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return names


def write_result(result: dict, name: str, output_dir: str | os.PathLike, fmt: str = "all") -> list[Path]:
    """Write `result` as <output_dir>/<name>.<fmt> (every format for "all"); return the paths."""
    formats = FORMATS if fmt == "all" else (fmt,)
    unknown = [f for f in formats if f not in WRITERS]
    if unknown:
        raise ValueError(f"unknown output format {unknown[0]!r}; choose from {', '.join(FORMATS)} or all")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for f in formats:
        path = out / f"{name}.{f}"
        path.write_text(WRITERS[f](result), encoding="utf-8")
        paths.append(path)
    return paths
