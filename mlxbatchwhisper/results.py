"""Result types every layer returns."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Word:
    """A word with its time span (seconds, as its segment's) and mean token probability."""

    word: str
    start: float
    end: float
    probability: float


@dataclass(frozen=True)
class Segment:
    """A span of text between two timestamp tokens; times in seconds from the segment's start.

    `words` is filled when word timestamps are asked for.
    """

    start: float
    end: float
    text: str
    tokens: tuple[int, ...] = ()
    words: tuple[Word, ...] = ()


@dataclass(frozen=True)
class DecodingResult:
    """One audio segment's transcription, as decoded (alone or inside a batch)."""

    text: str
    tokens: tuple[int, ...]
    segments: tuple[Segment, ...]
    language: str | None
    language_probability: float | None
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    temperature: float
    language_probs: dict[str, float] | None = field(default=None, repr=False, compare=False)


def compression_ratio(text: str) -> float:
    """Bytes of text over bytes of its zlib compression (high means repetitive)."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data))
