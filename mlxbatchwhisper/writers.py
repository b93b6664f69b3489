"""Transcripts to files: srt, vtt, json, txt, tsv (openai-whisper's and whisperX's formats)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
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
    return [(s["start"], s["end"], s["text"].strip().replace("-->", "->")) for s in result["segments"]]


def to_srt(result: dict) -> str:
    blocks = [f"{i}\n{format_timestamp(a, ',', True)} --> {format_timestamp(b, ',', True)}\n{text}\n"
              for i, (a, b, text) in enumerate(_lines(result), start=1)]
    return "\n".join(blocks)


def to_vtt(result: dict) -> str:
    cues = [f"{format_timestamp(a)} --> {format_timestamp(b)}\n{text}\n" for a, b, text in _lines(result)]
    return "WEBVTT\n\n" + "\n".join(cues)


def to_txt(result: dict) -> str:
    return "".join(f"{text}\n" for _, _, text in _lines(result))


def to_tsv(result: dict) -> str:
    rows = [f"{round(1000 * a)}\t{round(1000 * b)}\t{text.replace(chr(9), ' ')}" for a, b, text in _lines(result)]
    return "start\tend\ttext\n" + "".join(r + "\n" for r in rows)


def to_json(result: dict) -> str:
    return json.dumps(result, ensure_ascii=False, indent=1)


WRITERS: dict[str, Callable[[dict], str]] = {"srt": to_srt, "vtt": to_vtt, "json": to_json, "txt": to_txt, "tsv": to_tsv}


def write_result(result: dict, audio_path: str | os.PathLike, output_dir: str | os.PathLike, fmt: str = "all") -> list[Path]:
    """Write `result` as <output_dir>/<audio file stem>.<fmt> (every format for "all"); return the paths."""
    formats = FORMATS if fmt == "all" else (fmt,)
    unknown = [f for f in formats if f not in WRITERS]
    if unknown:
        raise ValueError(f"unknown output format {unknown[0]!r}; choose from {', '.join(FORMATS)} or all")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for f in formats:
        path = out / f"{Path(audio_path).stem}.{f}"
        path.write_text(WRITERS[f](result), encoding="utf-8")
        paths.append(path)
    return paths


def parse_subtitles(text: str) -> list[tuple[float, float, str]]:
    """(start, end, text) cues of an SRT or WebVTT document."""
    cues = []
    text = text.replace("\r\n", "\n")
    if text.startswith("WEBVTT"):
        text = text.split("\n\n", 1)[1] if "\n\n" in text else ""
    for block in text.split("\n\n"):
        lines = [line for line in block.strip().split("\n") if line]
        for i, line in enumerate(lines):
            if "-->" in line:
                a, b = (_seconds(t.strip()) for t in line.split("-->"))
                cues.append((a, b, "\n".join(lines[i + 1 :])))
                break
    return cues


def _seconds(stamp: str) -> float:
    parts = stamp.replace(",", ".").split(":")
    return sum(float(p) * 60**i for i, p in enumerate(reversed(parts)))
