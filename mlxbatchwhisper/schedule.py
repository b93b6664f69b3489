"""From speech regions to decoding windows, and from window results back to files.

Pure functions on numbers (seconds), whisperX's `merge_chunks` semantics:
1. a speech region longer than `chunk_size` is split at its least speech-like frame (lowest
   speech probability, or lowest energy when no probabilities are given) in the second half
   of the part that overflows, so every piece fits and cuts fall in pauses;
2. consecutive regions of a file are merged greedily into windows spanning at most
   `chunk_size` seconds (the pauses between them included);
3. windows of all files are pooled and sorted longest first, so that batches hold windows
   of similar length (less padding, rows that finish together);
4. where Whisper stops before a window's speech ends (it tends to leave a sentence that ends
   near the window's edge to the next window, as openai-whisper's seeking expects), the
   `remainder` of the window is decoded again, in a later batch; remainders of packed short
   inputs are `stitched` into shared windows, stretches of the input laid end to end.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

FRAME = 512 / 16000  # seconds per score frame: Silero VAD's chunk (vad.CHUNK samples at 16 kHz)
GAP = 0.5  # seconds of silence between the stretches of a stitched window
MAX_WINDOW = 30.0  # seconds a window may hold (Whisper's input)


@dataclass(frozen=True)
class Window:
    """A span of one input to decode as a unit; `regions` are the speech regions inside it.

    A stitched window (`parts` given) is several stretches of the input, in order, laid end to end
    GAP seconds apart; `start` and `end` are its first stretch's start and its last one's end.
    """

    source: int
    start: float
    end: float
    regions: tuple[tuple[float, float], ...]
    parts: tuple[tuple[float, float], ...] = ()

    @property
    def stretches(self) -> tuple[tuple[float, float], ...]:
        """The stretches of the input the window holds, in order."""
        return self.parts or ((self.start, self.end),)

    @property
    def duration(self) -> float:
        """Seconds of audio the window holds, gaps between stretches included."""
        return sum(b - a for a, b in self.stretches) + GAP * (len(self.stretches) - 1)

    def stretch_at(self, t: float) -> int:
        """Which stretch a time on the window's own timeline falls in (in a gap: the one before it)."""
        offset = 0.0
        for k, (a, b) in enumerate(self.stretches):
            offset += b - a + GAP
            if t < offset:
                return k
        return len(self.stretches) - 1

    def to_input(self, t: float, stretch: int | None = None) -> float:
        """A time on the window's own timeline on its input's timeline, kept inside its stretch (by
        default the one it falls in; a time in a gap goes to the end of the stretch before it)."""
        k = self.stretch_at(t) if stretch is None else stretch
        offset = sum(b - a + GAP for a, b in self.stretches[:k])
        a, b = self.stretches[k]
        return min(a + max(t - offset, 0.0), b)


def frame_energy(audio: np.ndarray, frame: int = 512, block: int = 4096) -> np.ndarray:
    """Mean square of each `frame`-sample frame: a score for where to cut without VAD.

    Computed `block` frames at a time, so a file-backed input is never copied whole.
    """
    n = len(audio) // frame
    out = np.empty(n, np.float32)
    for i in range(0, n, block):
        j = min(n, i + block)
        out[i:j] = np.square(np.asarray(audio[i * frame : j * frame], np.float32).reshape(j - i, frame)).mean(axis=1)
    return out


def split_long(
    regions: Sequence[tuple[float, float]], chunk_size: float, scores: np.ndarray | None, frame: float = FRAME
) -> list[tuple[float, float]]:
    """Split every region longer than `chunk_size` at its lowest-scoring frame, as often as needed.

    The cut is searched in [start + chunk_size / 2, start + chunk_size) of the remaining part;
    without scores (or frames there) it falls at start + chunk_size.
    """
    out = []
    for start, end in regions:
        while end - start > chunk_size:
            cut = start + chunk_size
            if scores is not None and len(scores):
                lo, hi = int(np.ceil((start + chunk_size / 2) / frame)), int((start + chunk_size) / frame)
                hi = min(hi, len(scores))
                if hi > lo:
                    cut = (lo + int(np.argmin(scores[lo:hi]))) * frame
            out.append((start, cut))
            start = cut
        if end > start:
            out.append((start, end))
    return out


def merge_regions(regions: Sequence[tuple[float, float]], chunk_size: float) -> list[list[tuple[float, float]]]:
    """Group consecutive regions (each ≤ chunk_size) into runs spanning at most chunk_size."""
    groups: list[list[tuple[float, float]]] = []
    for region in regions:
        if groups and _fits(groups[-1], region, chunk_size):
            groups[-1].append(region)
        else:
            groups.append([region])
    return groups


def _fits(group: list[tuple[float, float]], region: tuple[float, float], chunk_size: float) -> bool:
    return region[1] - group[0][0] <= chunk_size


class WindowStream:
    """`plan_windows` for one input whose speech regions arrive in order (before it has all been read).

    `add` and `advance` return each window once it is complete (no later region can join it), in
    order of time; together they are the windows `plan_windows` gives for all the regions at once.
    """

    def __init__(self, chunk_size: float = 30.0, source: int = 0):
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, not {chunk_size}")
        self.chunk_size, self.source = chunk_size, source
        self._group: list[tuple[float, float]] = []

    @property
    def open_start(self) -> float | None:
        """Where the window still open starts (None: none is open)."""
        return self._group[0][0] if self._group else None

    def add(
        self, regions: Sequence[tuple[float, float]], scores: np.ndarray | None, frame: float = FRAME
    ) -> list[Window]:
        """Take the next regions (cut at `scores`, the input's per-frame scores so far, if too long)."""
        out = []
        for piece in split_long([(float(a), float(b)) for a, b in regions if b > a], self.chunk_size, scores, frame):
            if self._group and not _fits(self._group, piece, self.chunk_size):
                out.append(self._close())
            self._group.append(piece)
        return out

    def advance(self, earliest: float) -> list[Window]:
        """No region to come starts before `earliest` seconds: close the open window if none can join it."""
        if self._group and earliest - self._group[0][0] >= self.chunk_size:
            return [self._close()]
        return []

    def finish(self) -> list[Window]:
        """The input has ended."""
        return [self._close()] if self._group else []

    def _close(self) -> Window:
        group, self._group = self._group, []
        return Window(self.source, group[0][0], group[-1][1], tuple(group))


def plan_windows(
    speech: Sequence[Sequence[tuple[float, float]]],
    chunk_size: float = 30.0,
    scores: Sequence[np.ndarray | None] | None = None,
) -> list[Window]:
    """Windows for every input (`speech[i]` are input i's sorted speech regions), longest first."""
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, not {chunk_size}")
    windows = []
    for source, regions in enumerate(speech):
        s = scores[source] if scores is not None else None
        pieces = split_long(sorted((float(a), float(b)) for a, b in regions if b > a), chunk_size, s)
        for group in merge_regions(pieces, chunk_size):
            windows.append(Window(source, group[0][0], group[-1][1], tuple(group)))
    return sorted(windows, key=lambda w: (-w.duration, w.source, w.start))


def remainder(
    window: Window, covered: float, pad: float = 0.0, min_progress: float = 1.0, min_speech: float = 0.5
) -> Window | None:
    """What is left of `window` after its first `covered` seconds, if it still holds speech.

    The remainder starts at the first speech after the covered part. None when less than
    `min_speech` seconds of speech are left, not counting the `pad` seconds the VAD added to
    each side of a region (padding alone is silence, where Whisper makes text up), or when
    `covered` is under `min_progress` and short of the end of the window's first stretch (so that
    continuing always moves forward; a stitched window's later stretches are kept).
    """
    cut = window.to_input(covered)
    regions = tuple((max(a, cut), b) for a, b in window.regions if b > cut)
    speech = sum(max(0.0, (b - pad) - max(a + pad, cut)) for a, b in window.regions)
    if (covered < min_progress and cut < window.stretches[0][1]) or speech < min_speech:
        return None
    first = regions[0][0]
    parts = tuple((max(a, first), b) for a, b in window.stretches if b > first)
    return stitched(window.source, parts, regions)


def stitched(source: int, parts: Sequence[tuple[float, float]], regions: Sequence[tuple[float, float]]) -> Window:
    """The window of `source` holding `parts` (stretches in order, apart) with speech `regions`."""
    parts, regions = tuple(parts), tuple(regions)
    return Window(source, parts[0][0], parts[-1][1], regions, parts if len(parts) > 1 else ())


def stitch(rests: Sequence[Window], keep_last: bool) -> tuple[list[tuple[Window, list[Window]]], list[Window]]:
    """Windows of one input (disjoint) as fewer windows of at most MAX_WINDOW seconds, each of
    consecutive ones stitched in order; with `keep_last`, the last, still unfilled, is given back
    as the windows it would hold. Returns ([(stitched window, the windows it holds)], given back)."""
    groups: list[list[Window]] = []
    for w in sorted(rests, key=lambda w: w.start):
        if groups and sum(g.duration for g in groups[-1]) + GAP * len(groups[-1]) + w.duration <= MAX_WINDOW:
            groups[-1].append(w)
        else:
            groups.append([w])
    kept = groups.pop() if keep_last and groups else []
    joined = [
        (stitched(g[0].source, [p for w in g for p in w.stretches], [r for w in g for r in w.regions]), g)
        for g in groups
    ]
    return joined, kept


def to_file_time(window: Window, start: float, end: float) -> tuple[float, float]:
    """A segment's window-relative times on its input's timeline, kept inside the window (a stitched
    window's: inside the stretch that holds their middle, as stretches far apart lie side by side)."""
    k = window.stretch_at((start + end) / 2)
    a, b = window.to_input(start, k), window.to_input(end, k)
    return round(a, 3), round(max(a, b), 3)
