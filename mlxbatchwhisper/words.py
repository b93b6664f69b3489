"""Word timestamps: aligned tokens grouped into words, punctuation attached, and segments fitted to them.

The rules are openai-whisper's `word_timestamps=True`, so that words and times agree with it:
words split at spaces (at unicode code points for languages written without spaces), a word's
probability the mean of its tokens', over-long words clamped at sentence ends and after pauses,
punctuation merged into the neighbouring word, and each segment's start and end moved to its
words unless the word is clearly too long.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

import mlx.core as mx
import numpy as np

from .alignment import AlignmentRow, TokenAlignment, align_tokens
from .audio import SAMPLE_RATE
from .kernels import CrossKV
from .model import Whisper
from .prefill import Item
from .results import DecodingResult, Segment, Word
from .tokenizer import Tokenizer

T = TypeVar("T")

NO_SPACE_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "my", "yue"})
SENTENCE_END = ".。!！?？"


@dataclass(frozen=True)
class WordOptions:
    """openai-whisper's punctuation sets: marks that join the following / the preceding word."""

    prepend_punctuations: str = "\"'“¿([{-"
    append_punctuations: str = "\"'.。,，!！?？:：”)]}、"


@dataclass
class _Timing:
    word: str
    tokens: list[int]
    start: float
    end: float
    probability: float


def split_words(tokenizer: Tokenizer, tokens: Sequence[int], language: str | None) -> tuple[list[str], list[list[int]]]:
    """Words and their tokens: at spaces and punctuation, or at every complete code point for
    languages written without spaces (zh, ja, th, lo, my, yue)."""
    pieces, piece_tokens = _split_code_points(tokenizer, tokens)
    if language in NO_SPACE_LANGUAGES:
        return pieces, piece_tokens
    words: list[str] = []
    word_tokens: list[list[int]] = []
    for piece, toks in zip(pieces, piece_tokens):
        starts_word = toks[0] >= tokenizer.eot or piece.startswith(" ") or piece.strip() in string.punctuation
        if starts_word or not words:
            words.append(piece)
            word_tokens.append(list(toks))
        else:
            words[-1] += piece
            word_tokens[-1].extend(toks)
    return words, word_tokens


def _split_code_points(tokenizer: Tokenizer, tokens: Sequence[int]) -> tuple[list[str], list[list[int]]]:
    """Runs of tokens that decode to whole code points (a character may span several tokens)."""
    full = tokenizer.decode_with_timestamps(list(tokens))
    pieces, piece_tokens, current, offset = [], [], [], 0
    for t in tokens:
        current.append(t)
        text = tokenizer.decode_with_timestamps(current)
        bad = text.find("\ufffd")
        if bad < 0 or full[offset + bad] == "\ufffd":  # complete, or the text really holds U+FFFD there
            pieces.append(text)
            piece_tokens.append(current)
            current = []
            offset += len(text)
    return pieces, piece_tokens


def _timings(
    tokenizer: Tokenizer, text_tokens: list[int], aligned: TokenAlignment, language: str | None
) -> list[_Timing]:
    """Each word's start and end (the start of its first token and of the next word's) and probability."""
    words, word_tokens = split_words(tokenizer, text_tokens + [tokenizer.eot], language)
    if len(word_tokens) <= 1:
        return []
    bounds = np.concatenate([[0], np.cumsum([len(t) for t in word_tokens[:-1]])])
    return [
        _Timing(w, toks, float(aligned.starts[a]), float(aligned.starts[b]), float(np.mean(aligned.probabilities[a:b])))
        for w, toks, a, b in zip(words, word_tokens, bounds[:-1], bounds[1:])
    ]


def _merge_punctuation(timings: list[_Timing], prepended: str, appended: str) -> None:
    """Opening marks join the next word, closing marks the previous one (emptied entries stay)."""
    target = len(timings) - 1
    for i in range(len(timings) - 2, -1, -1):
        prev, nxt = timings[i], timings[target]
        if prev.word.startswith(" ") and prev.word.strip() in prepended:
            nxt.word, nxt.tokens = prev.word + nxt.word, prev.tokens + nxt.tokens
            prev.word, prev.tokens = "", []
        else:
            target = i
    target = 0
    for j in range(1, len(timings)):
        prev, nxt = timings[target], timings[j]
        if not prev.word.endswith(" ") and nxt.word in appended:
            prev.word, prev.tokens = prev.word + nxt.word, prev.tokens + nxt.tokens
            nxt.word, nxt.tokens = "", []
        else:
            target = j


def attach_words(
    tokenizer: Tokenizer,
    segments: Sequence[Segment],
    aligned: TokenAlignment,
    language: str | None,
    options: WordOptions = WordOptions(),
    last_speech: float = 0.0,
    offset: float = 0.0,
) -> tuple[Segment, ...]:
    """`segments` (one window's, aligned together) with their words, and starts/ends fitted to them.

    `offset` is the window's start on the segments' timeline, `last_speech` the end of the speech
    before the window there (openai-whisper's `last_speech_timestamp`).
    """
    per_segment = [[t for t in s.tokens if t < tokenizer.eot] for s in segments]
    timings = _timings(tokenizer, [t for toks in per_segment for t in toks], aligned, language)
    durations = np.array([t.end - t.start for t in timings])
    durations = durations[durations.nonzero()]
    median = min(0.7, float(np.median(durations))) if len(durations) else 0.0
    longest = 2 * median
    if len(durations):  # words at sentence boundaries no longer than twice the median
        for prev, cur in zip(timings, timings[1:]):
            if cur.end - cur.start > longest:
                if cur.word in SENTENCE_END:
                    cur.end = cur.start + longest
                elif prev.word in SENTENCE_END:
                    cur.start = cur.end - longest
    _merge_punctuation(timings, options.prepend_punctuations, options.append_punctuations)
    out, k = [], 0
    for segment, tokens in zip(segments, per_segment):
        words, used = [], 0
        while k < len(timings) and used < len(tokens):
            t = timings[k]
            if t.word:
                words.append(
                    [t.word, float(np.round(offset + t.start, 2)), float(np.round(offset + t.end, 2)), t.probability]
                )
            used += len(t.tokens)
            k += 1
        start, end = segment.start, segment.end
        if words:
            start, end = _fit(words, start, end, median, longest, last_speech)
            last_speech = end
        out.append(replace(segment, start=start, end=end, words=tuple(Word(*w) for w in words)))
    return tuple(out)


def _fit(
    words: list[list], start: float, end: float, median: float, longest: float, last_speech: float
) -> tuple[float, float]:
    """Clamp over-long first/last words (after a pause, or against the segment's own timestamps);
    returns the segment's start and end, moved to its words where those are plausible."""
    first, second = words[0], words[1] if len(words) > 1 else None
    if first[2] - last_speech > 4 * median and (
        first[2] - first[1] > longest or (second is not None and second[2] - first[1] > 2 * longest)
    ):
        if second is not None and second[2] - second[1] > longest:
            first[2] = second[1] = max(second[2] / 2, second[2] - longest)
        first[1] = max(0, first[2] - longest)
    if start < first[2] and start - 0.5 > first[1]:
        first[1] = max(0, min(first[2] - median, start))
    else:
        start = first[1]
    last = words[-1]
    if end > last[1] and end + 0.5 < last[2]:
        last[2] = max(last[1] + median, end)
    else:
        end = last[2]
    return start, end


@dataclass(frozen=True)
class WordJob:
    """One window to time: its encoder output, the segments to align together, language and length."""

    features: mx.array
    segments: tuple[Segment, ...]
    language: str | None
    num_samples: int
    offset: float = 0.0  # the window's start on the segments' timeline
    last_speech: float = 0.0  # where the speech before the window ended, on that timeline
    cross_kv: list[CrossKV] | None = None  # the decoder's, when it kept them


class WordAligner:
    """Adds words to the segments of many windows with one alignment pass per batch."""

    def __init__(self, model: Whisper, tokenizer: Tokenizer, task: str, options: WordOptions = WordOptions()):
        self.model, self.tokenizer, self.task, self.options = model, tokenizer, task, options

    def __call__(self, jobs: Sequence[WordJob]) -> list[tuple[Segment, ...]]:
        tok = self.tokenizer
        rows = [
            AlignmentRow(
                job.features,
                self._prefix(job.language),
                tuple(t for s in job.segments for t in s.tokens if t < tok.eot),
                job.num_samples,
                job.cross_kv,
            )
            for job in jobs
        ]
        aligned = align_tokens(self.model, rows, tok.eot)
        return [
            attach_words(tok, job.segments, a, job.language, self.options, job.last_speech, job.offset)
            if row.text_tokens
            else job.segments
            for job, row, a in zip(jobs, rows, aligned)
        ]

    def _prefix(self, language: str | None) -> tuple[int, ...]:
        tok = self.tokenizer
        sot = tok.sot_sequence(language if tok.multilingual else None, self.task)
        return (*sot, tok.no_timestamps)


def with_words(
    aligner: WordAligner, stream: Iterable[tuple[Item, DecodingResult, tuple[Segment, ...], T]], batch_size: int
) -> Iterator[tuple[Item, DecodingResult, tuple[Segment, ...], T]]:
    """Pass (item, result, segments, payload) through, the segments given their words; windows are
    aligned `batch_size` at a time, so results come out in bursts, in the order they went in."""
    pending: list[tuple[Item, DecodingResult, tuple[Segment, ...], T, WordJob]] = []

    def flush() -> Iterator[tuple[Item, DecodingResult, tuple[Segment, ...], T]]:
        timed = aligner([p[-1] for p in pending])
        for (item, result, _, payload, _), segments in zip(pending, timed):
            yield item, result, segments, payload
        pending.clear()

    for item, result, segments, payload in stream:
        samples = len(item.audio) if item.audio is not None else round(item.duration * SAMPLE_RATE)
        job = WordJob(
            item.features,
            tuple(segments),
            result.language,
            samples,  # before the decoder drops them
            cross_kv=item.cross_kv,
        )
        pending.append((item, result, segments, payload, job))
        if len(pending) >= batch_size:
            yield from flush()
    if pending:
        yield from flush()
