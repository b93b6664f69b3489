"""Speech regions of 16 kHz waveforms, as silero-vad's `get_speech_timestamps` finds them, in seconds: of
whole inputs (many run through the network as one batch) or of one input fed in blocks (`SpeechStream`).

`silero` holds the network (samples → chunk probabilities), `speech_regions` the rules (probabilities →
regions) and `VadOptions`, their defaults.
"""

from __future__ import annotations

import numpy as np

from .audio import SAMPLE_RATE, check_audio
from .silero import (
    CHUNK,
    WEIGHTS,
    ProbabilityStream,
    SileroVAD,
    batch_probabilities,
    check_rate,
    load_model,
    speech_probabilities,
)
from .speech_regions import Segment, VadOptions, hysteresis, pad_run, timestamps_from_probabilities


def get_speech_timestamps_batch(
    audios: list[np.ndarray],
    threshold: float = VadOptions.threshold,
    neg_threshold: float | None = VadOptions.neg_threshold,
    min_speech_duration_ms: float = VadOptions.min_speech_duration_ms,
    min_silence_duration_ms: float = VadOptions.min_silence_duration_ms,
    speech_pad_ms: float = VadOptions.speech_pad_ms,
    max_speech_duration_s: float = VadOptions.max_speech_duration_s,
    return_probabilities: bool = False,
    min_silence_at_max_speech: float = VadOptions.min_silence_at_max_speech,
    use_max_poss_sil_at_max_speech: bool = VadOptions.use_max_poss_sil_at_max_speech,
    sample_rate: int = SAMPLE_RATE,
) -> list[list[Segment]] | list[tuple[list[Segment], np.ndarray]]:
    """`get_speech_timestamps` for many waveforms, run through the network as one batch."""
    # the rules' options: every parameter but the inputs and what is handled here
    options = {k: v for k, v in locals().items() if k not in ("audios", "return_probabilities", "sample_rate")}
    check_rate(sample_rate)
    audios = [check_audio(a) for a in audios]
    results = []
    for audio, probs in zip(audios, batch_probabilities(audios)):
        segments = timestamps_from_probabilities(probs, len(audio), **options)
        results.append((segments, probs) if return_probabilities else segments)
    return results


def get_speech_timestamps(
    audio: np.ndarray,
    threshold: float = VadOptions.threshold,
    neg_threshold: float | None = VadOptions.neg_threshold,
    min_speech_duration_ms: float = VadOptions.min_speech_duration_ms,
    min_silence_duration_ms: float = VadOptions.min_silence_duration_ms,
    speech_pad_ms: float = VadOptions.speech_pad_ms,
    max_speech_duration_s: float = VadOptions.max_speech_duration_s,
    return_probabilities: bool = False,
    min_silence_at_max_speech: float = VadOptions.min_silence_at_max_speech,
    use_max_poss_sil_at_max_speech: bool = VadOptions.use_max_poss_sil_at_max_speech,
    sample_rate: int = SAMPLE_RATE,
) -> list[Segment] | tuple[list[Segment], np.ndarray]:
    """Speech regions of a 16 kHz mono float waveform, as [{"start": s, "end": s}] seconds.

    Same rules as silero-vad's `get_speech_timestamps`, with `VadOptions`' defaults: a region
    opens at a chunk with probability >= threshold and closes once probability stays below
    neg_threshold (default max(threshold - 0.15, 0.01)) for min_silence_duration_ms;
    regions not longer than min_speech_duration_ms are dropped; regions reaching
    max_speech_duration_s are split at the longest silence over min_silence_at_max_speech
    ms inside them (at the last such silence if use_max_poss_sil_at_max_speech is false),
    or cut where the limit is hit if none; finally regions grow by speech_pad_ms each side
    (sharing gaps shorter than twice that). With return_probabilities, also returns the
    per-chunk probabilities.
    """
    options = {k: v for k, v in locals().items() if k != "audio"}  # every parameter, passed on
    return get_speech_timestamps_batch([audio], **options)[0]


class SpeechStream:
    """`get_speech_timestamps` over one input fed in blocks of samples, for inputs too long to hold.

    The network runs on the same passes as on the whole input (`ProbabilityStream`), so the
    probabilities, and the regions, are those of `get_speech_timestamps_batch([whole input])`.
    `feed` and `finish` return the regions, as (start, end) seconds, that no later sample can change.
    """

    def __init__(
        self,
        threshold: float = VadOptions.threshold,
        neg_threshold: float | None = VadOptions.neg_threshold,
        min_speech_duration_ms: float = VadOptions.min_speech_duration_ms,
        min_silence_duration_ms: float = VadOptions.min_silence_duration_ms,
        speech_pad_ms: float = VadOptions.speech_pad_ms,
        max_speech_duration_s: float = VadOptions.max_speech_duration_s,
        min_silence_at_max_speech: float = VadOptions.min_silence_at_max_speech,
        use_max_poss_sil_at_max_speech: bool = VadOptions.use_max_poss_sil_at_max_speech,
    ):
        self.pad = SAMPLE_RATE * speech_pad_ms / 1000
        self._machine = hysteresis(
            self.pad,
            threshold,
            neg_threshold,
            min_speech_duration_ms,
            min_silence_duration_ms,
            max_speech_duration_s,
            min_silence_at_max_speech,
            use_max_poss_sil_at_max_speech,
        )
        self._network = ProbabilityStream()
        self.samples = 0  # fed so far
        self._given = 0  # runs already returned
        self._before: list[int] | None = None  # the last returned run, unpadded

    @property
    def probabilities(self) -> np.ndarray:
        """Speech probability of every chunk scored so far."""
        return self._network.probabilities

    @property
    def earliest(self) -> float:
        """No region returned later can start before this time (seconds)."""
        runs = self._machine.runs
        first = runs[self._given][0] if self._given < len(runs) else self._machine.frontier
        return max(0.0, (min(first, self._machine.frontier) - self.pad) / SAMPLE_RATE)

    def feed(self, audio: np.ndarray) -> list[tuple[float, float]]:
        """Take the next samples (16 kHz mono float32); the regions now final."""
        audio = check_audio(audio)
        self.samples += len(audio)
        self._machine.feed(self._network.feed(audio))
        return self._ready(final=False)

    def finish(self) -> list[tuple[float, float]]:
        """The input has ended: the remaining regions."""
        self._machine.feed(self._network.finish())
        self._machine.finish(self.samples)
        return self._ready(final=True)

    def _ready(self, final: bool) -> list[tuple[float, float]]:
        runs, out = self._machine.runs, []
        while self._given < len(runs):
            run = runs[self._given]
            after = runs[self._given + 1] if self._given + 1 < len(runs) else None
            if after is None and not final and self._machine.frontier - run[1] < 2 * self.pad:
                break  # the next run, not closed yet, may share the gap after this one
            start, end = pad_run(self._before, run, after, self.pad, self.samples)
            out.append((start / SAMPLE_RATE, end / SAMPLE_RATE))
            self._before = run
            self._given += 1
        return out


__all__ = [
    "CHUNK",
    "WEIGHTS",
    "Segment",
    "SileroVAD",
    "SpeechStream",
    "VadOptions",
    "get_speech_timestamps",
    "get_speech_timestamps_batch",
    "load_model",
    "speech_probabilities",
    "timestamps_from_probabilities",
]
