"""Long-form decoding of planned windows: windows of many inputs → one engine → each input's result.

Every window of a group of inputs goes through one `Engine`. As openai-whisper's transcribe does,
what Whisper leaves at the end of a window (text without a closing timestamp, speech after the
last timestamp) is decoded again from where it starts: that remainder (up to MAX_CONTINUATIONS
deep) joins the running batch as soon as its window's result is known. Remainders of packed
inputs (`stitched_sources`: short inputs already share windows) are held instead and stitched into
shared windows once they fill one, or once nothing else is left to decode: each would otherwise
cost a whole 30 s window for a few seconds of speech. An input's result is yielded once its last
window is done.
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
from .schedule import GAP, Window, remainder, stitch, to_file_time
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
    stitched_sources: frozenset[int] = frozenset()  # inputs whose remainders are stitched together

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

        held: dict[int, dict[Window, tuple[str | None, int]]] = defaultdict(dict)  # remainders to stitch
        in_engine, planned_left = 0, len(planned)

        def planned_items() -> Iterator[Item]:
            nonlocal in_engine, planned_left
            for w in planned:
                in_engine, planned_left = in_engine + 1, planned_left - 1
                yield item(w, self.languages[w.source], 0)

        def add(w: Window, language: str | None, depth: int) -> None:
            nonlocal in_engine
            in_engine += 1
            engine.add(item(w, language, depth))

        def decoded() -> Iterator[tuple[Item, DecodingResult, tuple[Segment, ...], Counter]]:
            nonlocal in_engine
            for it, result in engine.run(planned_items()):
                in_engine -= 1
                w, depth = it.key
                kept, rest = self._keep(w, result, allow_rest=depth < MAX_CONTINUATIONS)
                windows = Counter()  # windows to come, per input
                if rest is not None:  # decoded next, in the parent's language
                    windows[w.source] += 1
                    language = self.languages[w.source] or result.language
                    if w.source in self.stitched_sources:
                        held[w.source][rest] = (language, depth + 1)
                    else:
                        add(rest, language, depth + 1)
                last_call = planned_left == 0 and in_engine == 0
                for source, rests in held.items():
                    joined, kept_back = stitch(list(rests), keep_last=not last_call)
                    for j, members in joined:  # the first one's language, the deepest one's depth
                        add(j, rests[members[0]][0], max(rests[r][1] for r in members))
                        windows[source] -= len(members) - 1
                    held[source] = {r: rests[r] for r in kept_back}
                yield it, result, kept, windows

        stream = decoded()
        if self.words is not None:
            stream = with_words(self.words, stream, engine.batch_size)
        for it, result, kept, windows in stream:
            w, depth = it.key
            done[w.source].append((w, result, kept))
            pending.update(windows)
            pending[w.source] -= 1
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
    """A window's samples, never more than 30 s (the ends of a stretch are rounded to samples together);
    a stitched window's stretches GAP seconds of silence apart."""
    gap = np.zeros(round(GAP * SAMPLE_RATE), np.float32)
    pieces = []
    for a, b in window.stretches:
        start = round(a * SAMPLE_RATE)
        pieces += [audio[start : min(round(b * SAMPLE_RATE), start + N_SAMPLES)], gap]
    return pieces[0] if len(pieces) == 2 else np.concatenate(pieces[:-1])[:N_SAMPLES]


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
