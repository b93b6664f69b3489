"""Chunk probabilities → speech regions, by the rules of silero-vad's `get_speech_timestamps` (v6.2): a
hysteresis over the probabilities, long regions split, short ones dropped, the rest padded. `VadOptions`
holds the rules' options and their defaults."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import checks
from .audio import SAMPLE_RATE
from .silero import CHUNK

Segment = dict[str, float]


@dataclass(frozen=True)
class VadOptions:
    """The speech-region rules' options (names and meaning as in `get_speech_timestamps`); their defaults are
    written only here: `get_speech_timestamps`, its batch and `SpeechStream` take theirs from these fields."""

    threshold: float = 0.5  # a region opens at a chunk this likely to be speech
    neg_threshold: float | None = None  # ... and closes below this (default max(threshold - 0.15, 0.01))
    max_speech_duration_s: float = float("inf")  # longer regions are split (at their longest silence)
    min_speech_duration_ms: float = 250  # shorter regions are dropped
    min_silence_duration_ms: float = 300  # a region ends after this much silence (silero: 100; docs/longform.md)
    speech_pad_ms: float = 200  # regions grow this much each side (silero: 30; docs/longform.md)
    min_silence_at_max_speech: float = 98  # ms: only silences longer than this split a region too long
    use_max_poss_sil_at_max_speech: bool = True  # split at the longest such silence (False: at the last one)

    def __post_init__(self) -> None:
        if not 0 < self.threshold < 1:
            raise ValueError(f"VAD threshold must be in (0, 1), not {self.threshold!r}")
        if self.neg_threshold is not None and not 0 < self.neg_threshold <= self.threshold:
            raise ValueError(
                f"VAD neg_threshold must be in (0, threshold={self.threshold}], not {self.neg_threshold!r}"
            )
        if math.isnan(self.max_speech_duration_s) or self.max_speech_duration_s <= 0:
            raise ValueError(f"VAD max_speech_duration_s must be positive, not {self.max_speech_duration_s!r}")
        for name in ("min_speech_duration_ms", "min_silence_duration_ms", "speech_pad_ms", "min_silence_at_max_speech"):
            value = getattr(self, name)
            if math.isnan(value) or value < 0:
                raise ValueError(f"VAD {name} must be >= 0, not {value!r}")
        checks.flag("VAD use_max_poss_sil_at_max_speech", self.use_max_poss_sil_at_max_speech)


class Hysteresis:
    """Silero's hysteresis state machine over chunk probabilities, fed in blocks: closed runs are
    [start, end] samples in `runs`. Idle, its state is its initial state, so where it is fed does not matter."""

    def __init__(
        self,
        threshold: float,
        neg_threshold: float,
        min_speech: float,
        min_silence: float,
        max_speech: float,
        min_silence_at_max: float,
        use_longest_silence: bool,
    ):
        self.threshold, self.neg_threshold = threshold, neg_threshold
        self.min_speech, self.min_silence, self.max_speech = min_speech, min_silence, max_speech
        self.min_silence_at_max, self.use_longest_silence = min_silence_at_max, use_longest_silence
        self.runs: list[list[int]] = []
        self.chunks = 0  # probabilities fed so far
        self._close(None)

    def _close(self, end: int | None) -> None:
        """End the open run, keeping it as [start, end] unless `end` is None."""
        if end is not None:
            self.runs.append([self.start, end])
        self.start: int | None = None  # sample where the open run began; None outside speech
        self.temp_end = 0  # start of the silence inside the open run (0: none)
        self.prev_end = self.next_start = 0  # last long silence inside the run (legacy split mode)
        self.silences: list[tuple[int, int]] = []  # (start, duration) of silences inside the run

    @property
    def frontier(self) -> int:
        """No run closed later can start before this sample."""
        return self.start if self.start is not None else self.chunks * CHUNK

    def feed(self, probs: np.ndarray) -> None:
        for p in np.asarray(probs).tolist():
            sample = self.chunks * CHUNK
            self.chunks += 1
            if p >= self.threshold and self.temp_end:  # speech resumes after a dip
                if sample - self.temp_end > self.min_silence_at_max:
                    self.silences.append((self.temp_end, sample - self.temp_end))
                self.temp_end = 0
                if self.next_start < self.prev_end:
                    self.next_start = sample
            if p >= self.threshold and self.start is None:
                self.start = sample
                continue
            if self.start is not None and sample - self.start > self.max_speech:
                if self.use_longest_silence and self.silences:
                    # Split at the longest silence; that silence is over, so speech goes on.
                    cut, length = max(self.silences, key=lambda s: s[1])
                    self._close(cut)
                    self.start = cut + length
                elif self.prev_end:
                    cut, resume = self.prev_end, self.next_start
                    self._close(cut)
                    if resume >= cut:  # speech came back after that silence
                        self.start = resume
                else:
                    self._close(sample)
                    continue
            if p < self.neg_threshold and self.start is not None:
                self.temp_end = self.temp_end or sample
                if not self.use_longest_silence and sample - self.temp_end > self.min_silence_at_max:
                    self.prev_end = self.temp_end
                if sample - self.temp_end >= self.min_silence:
                    self._close(self.temp_end if self.temp_end - self.start > self.min_speech else None)

    def finish(self, num_samples: int) -> None:
        """The input ended after `num_samples`: keep the open run if it is long enough."""
        if self.start is not None and num_samples - self.start > self.min_speech:
            self.runs.append([self.start, num_samples])
        self._close(None)


def pad_run(
    before: list[int] | None, run: list[int], after: list[int] | None, pad: float, num_samples: int
) -> list[int]:
    """A run widened by `pad` samples each side, sharing gaps shorter than 2 * pad with its neighbours."""
    start, end = run
    if before is not None and start - before[1] < 2 * pad:
        start = int(max(0, start - (start - before[1]) // 2))
    else:
        start = int(max(0, start - pad))
    if after is not None and after[0] - end < 2 * pad:
        end = end + (after[0] - end) // 2
    else:
        end = int(min(num_samples, end + pad))
    return [start, end]


def _pad_runs(runs: list[list[int]], pad: float, num_samples: int) -> list[list[int]]:
    """Every run padded (`pad_run`)."""
    return [
        pad_run(runs[k - 1] if k else None, run, runs[k + 1] if k + 1 < len(runs) else None, pad, num_samples)
        for k, run in enumerate(runs)
    ]


def hysteresis(
    pad: float,
    threshold: float,
    neg_threshold: float | None,
    min_speech_duration_ms: float,
    min_silence_duration_ms: float,
    max_speech_duration_s: float,
    min_silence_at_max_speech: float,
    use_max_poss_sil_at_max_speech: bool,
) -> Hysteresis:
    """The run machine for silero's options (times in ms or s, as `get_speech_timestamps` takes them) and a
    padding of `pad` samples each side."""
    return Hysteresis(
        threshold=threshold,
        neg_threshold=max(threshold - 0.15, 0.01) if neg_threshold is None else neg_threshold,
        min_speech=SAMPLE_RATE * min_speech_duration_ms / 1000,
        min_silence=SAMPLE_RATE * min_silence_duration_ms / 1000,
        max_speech=SAMPLE_RATE * max_speech_duration_s - CHUNK - 2 * pad,
        min_silence_at_max=SAMPLE_RATE * min_silence_at_max_speech / 1000,
        use_longest_silence=use_max_poss_sil_at_max_speech,
    )


def timestamps_from_probabilities(
    probs: np.ndarray,
    num_samples: int,
    threshold: float = VadOptions.threshold,
    neg_threshold: float | None = VadOptions.neg_threshold,
    min_speech_duration_ms: float = VadOptions.min_speech_duration_ms,
    min_silence_duration_ms: float = VadOptions.min_silence_duration_ms,
    speech_pad_ms: float = VadOptions.speech_pad_ms,
    max_speech_duration_s: float = VadOptions.max_speech_duration_s,
    min_silence_at_max_speech: float = VadOptions.min_silence_at_max_speech,
    use_max_poss_sil_at_max_speech: bool = VadOptions.use_max_poss_sil_at_max_speech,
) -> list[Segment]:
    """Speech regions, in seconds, from the chunk probabilities of `num_samples` of audio.

    Options as in `get_speech_timestamps`.
    """
    pad = SAMPLE_RATE * speech_pad_ms / 1000
    machine = hysteresis(
        pad,
        threshold,
        neg_threshold,
        min_speech_duration_ms,
        min_silence_duration_ms,
        max_speech_duration_s,
        min_silence_at_max_speech,
        use_max_poss_sil_at_max_speech,
    )
    machine.feed(probs)
    machine.finish(num_samples)
    return [{"start": s / SAMPLE_RATE, "end": e / SAMPLE_RATE} for s, e in _pad_runs(machine.runs, pad, num_samples)]
