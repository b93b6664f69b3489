"""Long-form decoding of planned windows: windows of many inputs → one engine → each input's result.

Every window of a group of inputs goes through one `Engine`. As openai-whisper's transcribe does,
what Whisper leaves at the end of a window (text without a closing timestamp, speech after the
last timestamp) is decoded again from where it starts: that remainder (up to MAX_CONTINUATIONS
deep) joins the running batch as soon as its window's result is known. An input's result is
yielded once its last window is done.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from .audio import N_SAMPLES, SAMPLE_RATE
from .engine import Engine
from .options import DecodingOptions
from .prefill import Item, item_seed
from .results import DecodingResult, Segment, Word
from .schedule import Window, remainder, to_file_time
from .words import WordAligner, with_words

MAX_CONTINUATIONS = 3  # remainders of remainders decoded after a window


@dataclass
class WindowDecoder:
    """Decodes planned windows of loaded inputs; yields (input, whisperX-style result) as inputs complete."""

    engine: Engine
    languages: list[str | None]  # per input; None: detect per window
    prompts: list[tuple[int, ...]]  # per input
    progress: Callable[[float], None] | None
    words: WordAligner | None = None
    speech_pad: float = 0.0  # seconds the VAD padded each speech region with (0: regions given as they are)

    def run(self, audios: dict[int, np.ndarray], planned: list[Window]) -> Iterator[tuple[int, dict]]:
        """Decode `planned` windows of `audios` (input index → samples; each input has a window)."""
        pending = Counter(w.source for w in planned)
        done: dict[int, list[tuple[Window, DecodingResult, tuple[Segment, ...]]]] = defaultdict(list)
        reported: Counter = Counter()  # seconds passed to `progress`, per input
        engine = self.engine

        def item(w: Window, language: str | None, depth: int) -> Item:
            audio = window_audio(audios[w.source], w)
            seed = item_seed(w.source, round(w.start * SAMPLE_RATE))
            return Item((w, depth), audio, None, self.prompts[w.source], language, duration=w.duration, seed=seed)

        def decoded() -> Iterator[tuple[Item, DecodingResult, tuple[Segment, ...], int]]:
            for it, result in engine.run(item(w, self.languages[w.source], 0) for w in planned):
                w, depth = it.key
                kept, rest = self._keep(w, result, allow_rest=depth < MAX_CONTINUATIONS)
                if rest is not None:  # decoded next, in the parent's language
                    engine.add(item(rest, self.languages[w.source] or result.language, depth + 1))
                yield it, result, kept, int(rest is not None)

        stream = decoded()
        if self.words is not None:
            stream = with_words(self.words, stream, engine.batch_size)
        for it, result, kept, rests in stream:
            w, depth = it.key
            done[w.source].append((w, result, kept))
            pending[w.source] += rests - 1
            if depth == 0:
                self.report(w.duration)
                reported[w.source] += w.duration
            if pending[w.source] == 0:
                self.report(len(audios[w.source]) / SAMPLE_RATE - reported.pop(w.source, 0.0))
                yield (
                    w.source,
                    file_result(done.pop(w.source), self.languages[w.source], engine.options, self.words is not None),
                )
                del audios[w.source]

    def report(self, seconds: float) -> None:
        """Pass seconds of audio done to `progress`."""
        if self.progress:
            self.progress(seconds)

    def _keep(
        self, window: Window, result: DecodingResult, allow_rest: bool
    ) -> tuple[tuple[Segment, ...], Window | None]:
        """The segments to keep from a window, and the remainder to decode again (or None).

        As openai-whisper's transcribe does, trailing text without a closing timestamp is not
        kept but decoded again from where it starts, and so is speech after the last timestamp.
        """
        segments = result.segments
        if self.engine.options.without_timestamps or not allow_rest or not segments:
            return segments, None
        last = segments[-1]
        unclosed = last.tokens and last.tokens[-1] < self.engine.tokenizer.timestamp_begin
        rest = remainder(window, last.start if unclosed else last.end, self.speech_pad)
        if rest is not None and unclosed:
            segments = segments[:-1]
        return segments, rest


def window_audio(audio: np.ndarray, window: Window) -> np.ndarray:
    """A window's samples, never more than 30 s (its ends are rounded to samples together)."""
    start = round(window.start * SAMPLE_RATE)
    return audio[start : min(round(window.end * SAMPLE_RATE), start + N_SAMPLES)]


def file_result(
    windows: list[tuple[Window, DecodingResult, tuple[Segment, ...]]],
    language: str | None,
    options: DecodingOptions,
    words: bool = False,
) -> dict:
    """One input's segments on its own timeline, in order; silent windows dropped as openai-whisper does."""
    segments, speech_by_language = [], Counter()
    for w, r, kept in sorted(windows, key=lambda x: x[0].start):
        if options.is_silent(r):
            continue
        speech_by_language[r.language] += w.duration
        for s in kept:
            start, end = to_file_time(w, s.start, s.end)
            segment = {
                "start": start,
                "end": end,
                "text": s.text.strip(),
                "avg_logprob": r.avg_logprob,
                "no_speech_prob": r.no_speech_prob,
            }
            if words:
                segment["words"] = [word_dict(w, word) for word in s.words]
            segments.append(segment)
    detected = speech_by_language.most_common(1)[0][0] if speech_by_language else None
    result = {"segments": segments, "language": language or detected}
    if words:
        result["word_segments"] = [word for s in segments for word in s["words"]]
    return result


def word_dict(window: Window, word: Word) -> dict:
    """A word as whisperX writes it (text without the leading space, "score"), on the input's timeline."""
    start, end = to_file_time(window, word.start, word.end)
    return {"word": word.word.strip(), "start": start, "end": end, "score": round(word.probability, 3)}
