"""Inputs decoded in pieces: a long input read, VAD-ed and decoded as it is read (`decode_streamed`), and
short inputs packed into shared windows (`Packer`, with `pack_short_inputs`)."""

from __future__ import annotations

import bisect
import itertools
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from . import vad
from .audio import SAMPLE_RATE
from .runtime import release_free_memory
from .schedule import Window, WindowStream
from .vad import VadOptions
from .words import NO_SPACE_LANGUAGES

if TYPE_CHECKING:
    from .jobs import LongFormJob

PACK_SECONDS = 15.0  # with pack_short_inputs, inputs at most this long share windows
PACK_GAP = 0.5  # seconds of silence between packed inputs (0.5 to 2 give the same per-file WER on real prompts)


def decode_streamed(
    job: LongFormJob,
    i: int,
    blocks: Iterator[np.ndarray],
    vad_options: VadOptions,
    chunk_size: float,
    stream_seconds: float,
    group_seconds: float,
) -> dict:
    """A long input's result, reading it as it goes.

    Silero VAD and the window plan follow the reading (the windows are those of the whole input); only
    the samples a window may still need are kept, and each closed window's samples are set aside. Once
    they hold `stream_seconds` of audio (or `group_seconds` have been read), those windows are decoded as a
    piece (a group of its own, given the windows' regions) and dropped.
    """
    speech = vad.SpeechStream(**asdict(vad_options))
    planner = WindowStream(chunk_size)
    buffer, buffer_start = np.zeros(0, np.float32), 0  # the samples read from `buffer_start` on
    piece: list[Window] = []  # closed windows not yet decoded
    spans: list[tuple[int, np.ndarray]] = []  # their samples: (first sample, samples)
    piece_start, held, parts = 0, 0, []
    for block in itertools.chain(blocks, [None]):
        if block is None:  # the end
            closed = planner.add(speech.finish(), speech.probabilities) + planner.finish()
        else:
            buffer = np.concatenate([buffer, block])
            closed = planner.add(speech.feed(block), speech.probabilities) + planner.advance(speech.earliest)
        for w in closed:  # a sample more each side: times are rounded to samples again after the shift
            first = max(buffer_start, round(w.start * SAMPLE_RATE) - 1)
            last = round(w.end * SAMPLE_RATE) + 1
            spans.append((first, buffer[first - buffer_start : last - buffer_start].copy()))
            held += len(spans[-1][1])
        piece += closed
        start = planner.open_start
        if block is None:
            keep = speech.samples
        else:  # no window to come starts before this sample
            keep = max(buffer_start, round(min(speech.earliest, np.inf if start is None else start) * SAMPLE_RATE))
        buffer, buffer_start = buffer[keep - buffer_start :].copy(), keep
        if (
            block is not None
            and held < stream_seconds * SAMPLE_RATE
            and keep - piece_start < group_seconds * SAMPLE_RATE
        ):
            continue
        offset = piece_start / SAMPLE_RATE
        regions = [(a - offset, b - offset) for w in piece for a, b in w.regions]
        audio = Spans(keep - piece_start, [(first - piece_start, x) for first, x in spans])
        parts += [(offset, result) for _, result in job.run({i: (audio, regions)})]
        del audio, regions
        piece, spans, held, piece_start = [], [], 0, keep
        release_free_memory()  # each piece starts from the heap the first one found
    return joined(parts)


class Spans:
    """A stretch of an input of which only some spans are held (zeros elsewhere), read by slicing as an array is."""

    def __init__(self, length: int, spans: list[tuple[int, np.ndarray]]):
        self.length, self.spans = length, spans

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, key: slice) -> np.ndarray:
        start, stop, _ = key.indices(self.length)
        for first, samples in self.spans:  # a window's own span: a view, as slicing an array gives
            if first <= start and stop <= first + len(samples):
                return samples[start - first : stop - first]
        out = np.zeros(max(0, stop - start), np.float32)
        for first, samples in self.spans:
            lo, hi = max(start, first), min(stop, first + len(samples))
            if lo < hi:
                out[lo - start : hi - start] = samples[lo - first : hi - first]
        return out


def joined(parts: list[tuple[float, dict]]) -> dict:
    """Results of consecutive pieces of one input (each with its offset in seconds) as one result."""
    segments, speech_by_language = [], Counter()
    for offset, result in parts:
        for segment in result["segments"]:
            segment["start"], segment["end"] = round(segment["start"] + offset, 3), round(segment["end"] + offset, 3)
            for word in segment.get("words", ()):
                word["start"], word["end"] = round(word["start"] + offset, 3), round(word["end"] + offset, 3)
            segments.append(segment)
            speech_by_language[result["language"]] += segment["end"] - segment["start"]
    language = speech_by_language.most_common(1)[0][0] if speech_by_language else parts[-1][1]["language"]
    joined = {"segments": segments, "language": language}
    if any("word_segments" in result for _, result in parts):
        joined["word_segments"] = [word for s in segments for word in s["words"]]
    return joined


@dataclass
class Packer:
    """`LongFormJob.run` with short inputs packed (pack_short_inputs): the speech of inputs of at most PACK_SECONDS
    that share a language and a prompt is laid end to end, PACK_GAP seconds apart, and decoded as one input
    (its remainders stitched together); its words go back to the input their middle falls in, on that input's
    timeline (`unpacked`): the job must align words."""

    job: LongFormJob
    languages: list[str | None]
    prompts: list[tuple[int, ...]]
    vad_options: VadOptions
    multilingual: bool  # then only inputs of a given language are packed (not detected per window)

    def __post_init__(self) -> None:
        # The job reports a packed input's length, gaps included: what it reports is first taken off the gaps.
        windows = self.job.windows
        self.report, windows.progress, self.gaps = windows.progress, self._discounted, 0.0

    def _discounted(self, seconds: float) -> None:
        taken = min(seconds, self.gaps)
        self.gaps -= taken
        if self.report and seconds > taken:
            self.report(seconds - taken)

    def run(self, group: dict[int, tuple[np.ndarray, list[tuple[float, float]] | None]]) -> Iterator[tuple[int, dict]]:
        short = [
            i
            for i, (audio, given) in group.items()
            if given is None
            and len(audio) <= PACK_SECONDS * SAMPLE_RATE
            and (self.languages[i] is not None or not self.multilingual)
        ]
        found = vad.get_speech_timestamps_batch([group[i][0] for i in short], **asdict(self.vad_options))
        by_kind: dict[tuple, list[tuple[int, list[tuple[float, float]]]]] = defaultdict(list)
        for i, regions in zip(short, found):
            by_kind[self.languages[i], self.prompts[i]].append((i, [(r["start"], r["end"]) for r in regions]))
        packs: dict[int, list[tuple[int, float, float]]] = {}  # key -> (input, offset, duration) seconds
        for members in by_kind.values():
            if len(members) < 2:
                continue
            parts, regions, placed, offset = [], [], [], 0
            for i, speech in members:
                audio = group.pop(i)[0]
                start = offset / SAMPLE_RATE
                regions += [(start + a, start + b) for a, b in speech]
                placed.append((i, start, len(audio) / SAMPLE_RATE))
                parts += [audio, np.zeros(round(PACK_GAP * SAMPLE_RATE), np.float32)]
                offset += len(parts[-2]) + len(parts[-1])
            group[members[0][0]] = (np.concatenate(parts[:-1]), regions)
            self.gaps += (len(members) - 1) * len(parts[-1]) / SAMPLE_RATE
            packs[members[0][0]] = placed
        self.job.windows.stitched_sources = frozenset(packs)
        for key, result in self.job.run(group):
            if key not in packs:
                yield key, result
                continue
            for i, part in unpacked(result, packs.pop(key)):
                yield i, part


def without_words(result: dict) -> dict:
    """A result as it is without word timestamps."""
    segments = [{k: v for k, v in s.items() if k != "words"} for s in result["segments"]]
    return {**{k: v for k, v in result.items() if k != "word_segments"}, "segments": segments}


def unpacked(result: dict, placed: list[tuple[int, float, float]]) -> list[tuple[int, dict]]:
    """A packed input's result split back, on each input's timeline: a segment's words each go to the input
    their middle falls in (a segment that spans a gap between inputs is cut there), a segment without words
    to the input its middle falls in."""
    starts = [start for _, start, _ in placed]

    def owner(item: dict) -> int:
        return max(0, bisect.bisect_right(starts, (item["start"] + item["end"]) / 2) - 1)

    out = [{"segments": [], "language": result["language"]} for _ in placed]
    for segment in result["segments"]:
        words = segment.get("words") or []
        runs = [(k, list(run)) for k, run in itertools.groupby(words, key=owner)] or [(owner(segment), [])]
        for k, run in runs:
            part = dict(segment)
            if len(runs) > 1:  # cut at the gap: the words' own text and times
                sep = "" if result["language"] in NO_SPACE_LANGUAGES else " "
                part.update(text=sep.join(w["word"] for w in run), start=run[0]["start"], end=run[-1]["end"])
            start, duration = placed[k][1:]
            part["words"] = [dict(w) for w in run]
            for item in [part, *part["words"]]:
                item["start"] = round(min(max(item["start"] - start, 0.0), duration), 3)
                item["end"] = round(min(max(item["end"] - start, 0.0), duration), 3)
            out[k]["segments"].append(part)
    for part in out:  # a stitched window's segments come in its own order: each input's in time order
        part["segments"].sort(key=lambda s: s["start"])
        part["word_segments"] = [w for s in part["segments"] for w in s["words"]]
    return [(i, part) for (i, _, _), part in zip(placed, out)]
