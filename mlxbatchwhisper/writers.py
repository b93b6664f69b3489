"""Transcripts to files: srt, vtt, json, txt, tsv (openai-whisper's and whisperX's formats)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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


NO_SPACE_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "my", "yue"})


@dataclass(frozen=True)
class SubtitleOptions:
    """How srt/vtt cues are cut when segments carry words (openai-whisper's writer options).

    Lines wrap at `max_line_width` characters; with `max_line_count` as well, cues hold that many
    lines and segments are no longer kept apart (a pause of over 3 s still starts a new cue);
    `max_words_per_line` caps the words of a line; `highlight_words` underlines each word in turn.
    """

    max_line_width: int | None = None
    max_line_count: int | None = None
    max_words_per_line: int | None = None
    highlight_words: bool = False

    def __post_init__(self) -> None:
        for name in ("max_line_width", "max_line_count", "max_words_per_line"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer or None, not {value!r}")


def _lines(result: dict) -> list[tuple[float, float, str]]:
    """(start, end, text) per segment, text on one line and free of the cue arrow."""
    return [
        (s["start"], s["end"], " ".join(s["text"].strip().splitlines()).replace("-->", "->"))
        for s in result["segments"]
    ]


def _cues(result: dict, options: SubtitleOptions) -> list[tuple[float, float, str]]:
    """Subtitle cues: one per segment, or, when segments carry words, cut and highlighted by `options`."""
    segments = result["segments"]
    if not segments or "words" not in segments[0]:
        return _lines(result)
    cues = []
    for group in _word_groups(segments, result.get("language"), options):
        text = "".join(word for _, _, word in group)
        if not options.highlight_words:
            cues.append((group[0][0], group[-1][1], text))
            continue
        shown = group[0][0]
        for i, (start, end, _) in enumerate(group):
            if _ms(shown) != _ms(start):
                cues.append((shown, start, text))
            marked = [_underline(word) if j == i else word for j, (_, _, word) in enumerate(group)]
            cues.append((start, end, "".join(marked)))
            shown = end
    return cues


def _word_groups(
    segments: list[dict], language: str | None, options: SubtitleOptions
) -> list[list[tuple[float, float, str]]]:
    """Words grouped into cues, each word's text carrying the space or line break before it."""
    keep_segments = options.max_line_count is None or options.max_line_width is None
    width = options.max_line_width or 1000
    per_line = options.max_words_per_line or 1000
    gap = "" if language in NO_SPACE_LANGUAGES else " "
    groups: list[list[tuple[float, float, str]]] = []
    cue: list[tuple[float, float, str]] = []
    used, lines = 0, 1
    last = next((s["words"][0]["start"] for s in segments if s.get("words")), segments[0]["start"])
    for segment in segments:
        words = segment.get("words", [])
        for first in range(0, len(words), per_line):
            for i, w in enumerate(words[first : first + per_line]):
                text = gap + w["word"].strip().replace("-->", "->")
                pause = not keep_segments and w["start"] - last > 3.0
                new_segment = keep_segments and i == 0 and bool(cue)
                if used > 0 and used + len(text) <= width and not pause and not new_segment:
                    used += len(text)
                else:
                    text = text.strip()
                    if new_segment or (
                        cue and options.max_line_count is not None and (pause or lines >= options.max_line_count)
                    ):
                        groups.append(cue)
                        cue, lines = [], 1
                    elif used > 0:
                        lines += 1
                        text = "\n" + text
                    used = len(text.strip())
                cue.append((w["start"], w["end"], text))
                last = w["start"]
    if cue:
        groups.append(cue)
    return groups


def _underline(word: str) -> str:
    body = word.lstrip()
    return word[: len(word) - len(body)] + f"<u>{body}</u>"


def _ms(seconds: float) -> int:
    return round(max(seconds, 0.0) * 1000)


def to_srt(result: dict, options: SubtitleOptions = SubtitleOptions()) -> str:
    """SubRip: numbered cues, HH:MM:SS,mmm times."""
    blocks = [
        f"{i}\n{format_timestamp(a, ',', True)} --> {format_timestamp(b, ',', True)}\n{text}\n"
        for i, (a, b, text) in enumerate(_cues(result, options), start=1)
    ]
    return "\n".join(blocks)


def to_vtt(result: dict, options: SubtitleOptions = SubtitleOptions()) -> str:
    """WebVTT: cue text escaped (&, <, >) as the format requires, but for the <u> of highlighted words."""
    escape = {ord("&"): "&amp;", ord("<"): "&lt;", ord(">"): "&gt;"}

    def escaped(text: str) -> str:
        if not options.highlight_words:
            return text.translate(escape)
        return "<u>".join("</u>".join(p.translate(escape) for p in part.split("</u>")) for part in text.split("<u>"))

    cues = [
        f"{format_timestamp(a)} --> {format_timestamp(b)}\n{escaped(text)}\n" for a, b, text in _cues(result, options)
    ]
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


WRITERS: dict[str, Callable[..., str]] = {"srt": to_srt, "vtt": to_vtt, "json": to_json, "txt": to_txt, "tsv": to_tsv}
SUBTITLES = ("srt", "vtt")  # the writers that take SubtitleOptions


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


def write_result(
    result: dict,
    name: str,
    output_dir: str | os.PathLike,
    fmt: str = "all",
    overwrite: bool = True,
    subtitles: SubtitleOptions = SubtitleOptions(),
) -> list[Path]:
    """Write `result` as <output_dir>/<name>.<fmt> (every format for "all"), each file atomically;
    return the paths written (without `overwrite`, files that exist are kept and not returned)."""
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    paths = []
    for path in output_paths(name, output_dir, fmt):
        if overwrite or not path.exists():
            f = path.suffix[1:]
            write_atomic(path, WRITERS[f](result, subtitles) if f in SUBTITLES else WRITERS[f](result))
            paths.append(path)
    return paths
