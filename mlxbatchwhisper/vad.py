"""Silero VAD v6 (16 kHz) in MLX, batched over audio streams.

The network scores 512-sample chunks (32 ms), each seen with the 64 samples before it:
a fixed Fourier basis applied as a strided convolution, four 1-D convolutions, an LSTM
cell carried from chunk to chunk, and a linear decoder. The convolutional part runs on
many chunks of many streams in one batched call; only the LSTM steps one chunk at a
time, for all streams together.

`get_speech_timestamps` turns the probabilities into speech regions with the rules of
silero-vad's function of the same name (v6.2), returned in seconds.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from .audio import SAMPLE_RATE, check_audio

CHUNK = 512  # samples scored per probability
CONTEXT = 64  # samples of the previous chunk prepended to each chunk
WEIGHTS = Path(__file__).parent / "assets" / "silero_vad_16k.safetensors"

# Windows (chunk + context) per pass through the network: bounds memory and graph size on
# long inputs; larger passes gain nothing on CPU.
_WINDOWS_PER_PASS = 1024

Segment = dict[str, float]


class STFTMagnitude(nn.Module):
    """Magnitude spectrum of a window: a fixed Fourier basis applied with stride `hop`."""

    def __init__(self, n_fft: int = 256, hop: int = 128, pad: int = 64):
        super().__init__()
        self.hop = hop
        self.pad = pad
        # Real parts of the n_fft // 2 + 1 bins, then their imaginary parts.
        self.basis = mx.zeros((n_fft + 2, n_fft))

    def __call__(self, x: mx.array) -> mx.array:
        """(N, L) samples -> (N, frames, n_fft // 2 + 1) magnitudes."""
        x = mx.concatenate([x, x[:, -self.pad - 1 : -1][:, ::-1]], axis=1)  # reflect right
        n, length = x.shape
        hops = x.reshape(n, length // self.hop, self.hop)
        frames = mx.concatenate([hops[:, :-1], hops[:, 1:]], axis=-1)  # n_fft = 2 * hop
        real, imag = mx.split(frames @ self.basis.T, 2, axis=-1)
        return mx.sqrt(real * real + imag * imag)


class SileroVAD(nn.Module):
    """Silero VAD v6, 16 kHz.

    Call with windows (B, T, CONTEXT + CHUNK): T consecutive chunks of B streams, each
    chunk preceded by the last CONTEXT samples of the chunk before it (zeros for a
    stream's first chunk). Returns speech probabilities (B, T) and the LSTM state
    (hidden, cell), each (B, 128), to pass with the stream's next windows.
    """

    def __init__(self):
        super().__init__()
        self.stft = STFTMagnitude()
        self.encoder = [
            nn.Conv1d(129, 128, kernel_size=3, stride=1, padding=1),
            nn.Conv1d(128, 64, kernel_size=3, stride=2, padding=1),
            nn.Conv1d(64, 64, kernel_size=3, stride=2, padding=1),
            nn.Conv1d(64, 128, kernel_size=3, stride=1, padding=1),
        ]
        self.lstm = nn.LSTM(128, 128)
        self.decoder = nn.Linear(128, 1)

    def features(self, windows: mx.array) -> mx.array:
        """(N, CONTEXT + CHUNK) windows -> (N, 128) LSTM inputs."""
        x = self.stft(windows)
        for conv in self.encoder:
            x = nn.relu(conv(x))
        return x[:, 0]  # the encoder reduces the 4 STFT frames to 1

    def __call__(
        self, windows: mx.array, state: tuple[mx.array, mx.array] | None = None
    ) -> tuple[mx.array, tuple[mx.array, mx.array]]:
        b, t, width = windows.shape
        x = self.features(windows.reshape(b * t, width)).reshape(b, t, -1)
        hidden, cell = self.lstm(x, *(state or (None, None)))
        probs = mx.sigmoid(self.decoder(nn.relu(hidden)))[..., 0]
        return probs, (hidden[:, -1], cell[:, -1])


@functools.lru_cache(maxsize=1)
def load_model() -> SileroVAD:
    """The shipped Silero VAD weights, loaded once."""
    model = SileroVAD()
    model.load_weights(str(WEIGHTS))
    model.eval()
    mx.eval(model.parameters())
    return model


def _check_sample_rate(sample_rate: int) -> None:
    if sample_rate != SAMPLE_RATE:
        raise ValueError(f"Silero VAD here supports only {SAMPLE_RATE} Hz audio, got {sample_rate}")


def _num_chunks(audio: np.ndarray) -> int:
    return -(-len(audio) // CHUNK)


def _windows(audio: np.ndarray, first: int, count: int) -> np.ndarray:
    """(count, CONTEXT + CHUNK) windows of chunks first.. of `audio`, zeros past its ends."""
    lo = first * CHUNK - CONTEXT
    part = audio[max(lo, 0) : (first + count) * CHUNK]
    padded = np.zeros(CONTEXT + count * CHUNK, np.float32)
    padded[max(-lo, 0) : max(-lo, 0) + len(part)] = part
    view = np.lib.stride_tricks.sliding_window_view(padded, CONTEXT + CHUNK)
    return view[::CHUNK]


def _batch_probabilities(audios: list[np.ndarray]) -> list[np.ndarray]:
    """Per-chunk speech probabilities of validated float32 waveforms, run as one batch.

    Streams go longest first, in blocks of consecutive chunks that end no later than the
    shortest stream in them, so no stream is run past its end.
    """
    counts = [_num_chunks(a) for a in audios]
    order = sorted(range(len(audios)), key=lambda i: -counts[i])
    probs = [np.zeros(n, np.float32) for n in counts]
    model = load_model()
    state, first = None, 0
    while rows := [i for i in order if counts[i] > first]:
        count = min(max(1, _WINDOWS_PER_PASS // len(rows)), counts[rows[-1]] - first)
        windows = mx.array(np.stack([_windows(audios[i], first, count) for i in rows]))
        if state is not None:
            state = tuple(s[: len(rows)] for s in state)
        block, state = model(windows, state)
        mx.eval(block, state)
        block = np.array(block)
        for row, i in enumerate(rows):
            out = probs[i][first : first + count]
            out[:] = block[row, : len(out)]
        first += count
    return probs


def speech_probabilities(
    audio: np.ndarray | list[np.ndarray], sample_rate: int = SAMPLE_RATE
) -> np.ndarray | list[np.ndarray]:
    """Speech probability of each 512-sample chunk (the last one zero-padded).

    Takes one 16 kHz mono float waveform, or a list of them run as one batch; the LSTM
    state starts fresh for every waveform.
    """
    _check_sample_rate(sample_rate)
    if isinstance(audio, (list, tuple)):
        return _batch_probabilities([check_audio(a) for a in audio])
    return _batch_probabilities([check_audio(audio)])[0]


class _Hysteresis:
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


def _pad_run(
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
    """Every run padded (`_pad_run`)."""
    return [
        _pad_run(runs[k - 1] if k else None, run, runs[k + 1] if k + 1 < len(runs) else None, pad, num_samples)
        for k, run in enumerate(runs)
    ]


def _hysteresis(
    pad: float,
    threshold: float,
    neg_threshold: float | None,
    min_speech_duration_ms: float,
    min_silence_duration_ms: float,
    max_speech_duration_s: float,
    min_silence_at_max_speech: float,
    use_max_poss_sil_at_max_speech: bool,
) -> _Hysteresis:
    """The run machine for silero's options (times in ms or s, as `get_speech_timestamps` takes them) and a
    padding of `pad` samples each side."""
    return _Hysteresis(
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
    threshold: float = 0.5,
    neg_threshold: float | None = None,
    min_speech_duration_ms: float = 250,
    min_silence_duration_ms: float = 100,
    speech_pad_ms: float = 30,
    max_speech_duration_s: float = float("inf"),
    min_silence_at_max_speech: float = 98,
    use_max_poss_sil_at_max_speech: bool = True,
) -> list[Segment]:
    """Speech regions, in seconds, from the chunk probabilities of `num_samples` of audio.

    Options as in `get_speech_timestamps`.
    """
    pad = SAMPLE_RATE * speech_pad_ms / 1000
    machine = _hysteresis(
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


@dataclass(frozen=True)
class VadOptions:
    """The speech-region thresholds a pipeline passes to `get_speech_timestamps` (same names and meaning)."""

    threshold: float = 0.5  # a region opens at a chunk this likely to be speech
    neg_threshold: float | None = None  # ... and closes below this (default max(threshold - 0.15, 0.01))
    max_speech_duration_s: float = float("inf")  # longer regions are split (at their longest silence)
    min_speech_duration_ms: float = 250  # shorter regions are dropped
    min_silence_duration_ms: float = 300  # a region ends after this much silence (silero: 100; docs/longform.md)
    speech_pad_ms: float = 200  # regions grow this much each side (silero: 30; docs/longform.md)

    def __post_init__(self) -> None:
        if not 0 < self.threshold < 1:
            raise ValueError(f"VAD threshold must be in (0, 1), not {self.threshold!r}")
        if self.neg_threshold is not None and not 0 < self.neg_threshold <= self.threshold:
            raise ValueError(
                f"VAD neg_threshold must be in (0, threshold={self.threshold}], not {self.neg_threshold!r}"
            )
        if math.isnan(self.max_speech_duration_s) or self.max_speech_duration_s <= 0:
            raise ValueError(f"VAD max_speech_duration_s must be positive, not {self.max_speech_duration_s!r}")
        for name in ("min_speech_duration_ms", "min_silence_duration_ms", "speech_pad_ms"):
            value = getattr(self, name)
            if math.isnan(value) or value < 0:
                raise ValueError(f"VAD {name} must be >= 0, not {value!r}")


def get_speech_timestamps_batch(
    audios: list[np.ndarray],
    threshold: float = 0.5,
    neg_threshold: float | None = None,
    min_speech_duration_ms: float = 250,
    min_silence_duration_ms: float = 100,
    speech_pad_ms: float = 30,
    max_speech_duration_s: float = float("inf"),
    return_probabilities: bool = False,
    min_silence_at_max_speech: float = 98,
    use_max_poss_sil_at_max_speech: bool = True,
    sample_rate: int = SAMPLE_RATE,
) -> list[list[Segment]] | list[tuple[list[Segment], np.ndarray]]:
    """`get_speech_timestamps` for many waveforms, run through the network as one batch."""
    # the rules' options: every parameter but the inputs and what is handled here
    options = {k: v for k, v in locals().items() if k not in ("audios", "return_probabilities", "sample_rate")}
    _check_sample_rate(sample_rate)
    audios = [check_audio(a) for a in audios]
    results = []
    for audio, probs in zip(audios, _batch_probabilities(audios)):
        segments = timestamps_from_probabilities(probs, len(audio), **options)
        results.append((segments, probs) if return_probabilities else segments)
    return results


def get_speech_timestamps(
    audio: np.ndarray,
    threshold: float = 0.5,
    neg_threshold: float | None = None,
    min_speech_duration_ms: float = 250,
    min_silence_duration_ms: float = 100,
    speech_pad_ms: float = 30,
    max_speech_duration_s: float = float("inf"),
    return_probabilities: bool = False,
    min_silence_at_max_speech: float = 98,
    use_max_poss_sil_at_max_speech: bool = True,
    sample_rate: int = SAMPLE_RATE,
) -> list[Segment] | tuple[list[Segment], np.ndarray]:
    """Speech regions of a 16 kHz mono float waveform, as [{"start": s, "end": s}] seconds.

    Same rules and defaults as silero-vad's `get_speech_timestamps`: a region opens at a
    chunk with probability >= threshold and closes once probability stays below
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

    The network runs on the same passes as on the whole input (state carried across blocks), so
    the probabilities, and the regions, are those of `get_speech_timestamps_batch([whole input])`.
    `feed` and `finish` return the regions, as (start, end) seconds, that no later sample can change.
    """

    def __init__(
        self,
        threshold: float = 0.5,
        neg_threshold: float | None = None,
        min_speech_duration_ms: float = 250,
        min_silence_duration_ms: float = 100,
        speech_pad_ms: float = 30,
        max_speech_duration_s: float = float("inf"),
        min_silence_at_max_speech: float = 98,
        use_max_poss_sil_at_max_speech: bool = True,
    ):
        self.pad = SAMPLE_RATE * speech_pad_ms / 1000
        self._machine = _hysteresis(
            self.pad,
            threshold,
            neg_threshold,
            min_speech_duration_ms,
            min_silence_duration_ms,
            max_speech_duration_s,
            min_silence_at_max_speech,
            use_max_poss_sil_at_max_speech,
        )
        self.samples = 0  # fed so far
        self._unscored: list[np.ndarray] = []  # samples fed but not yet through the network
        self._context = np.zeros(CONTEXT, np.float32)
        self._state: tuple[mx.array, mx.array] | None = None
        self._probs: list[np.ndarray] = []
        self._given = 0  # runs already returned
        self._before: list[int] | None = None  # the last returned run, unpadded

    @property
    def probabilities(self) -> np.ndarray:
        """Speech probability of every chunk scored so far."""
        if len(self._probs) > 1:
            self._probs = [np.concatenate(self._probs)]
        return self._probs[0] if self._probs else np.zeros(0, np.float32)

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
        self._unscored.append(audio)
        pass_samples = _WINDOWS_PER_PASS * CHUNK
        if sum(len(a) for a in self._unscored) >= pass_samples:
            pending = np.concatenate(self._unscored)
            whole = len(pending) // pass_samples * pass_samples
            self._score(pending[:whole])
            self._unscored = [pending[whole:]]
        return self._ready(final=False)

    def finish(self) -> list[tuple[float, float]]:
        """The input has ended: the remaining regions."""
        if self._unscored:
            rest = np.concatenate(self._unscored)
            self._unscored = []
            if len(rest):
                self._score(rest)
        self._machine.finish(self.samples)
        return self._ready(final=True)

    def _score(self, audio: np.ndarray) -> None:
        """Run the network over `audio` (the next samples), a pass of _WINDOWS_PER_PASS chunks at a time."""
        samples = np.concatenate([self._context, audio])
        for first in range(0, _num_chunks(audio), _WINDOWS_PER_PASS):
            count = min(_WINDOWS_PER_PASS, _num_chunks(audio) - first)
            windows = _windows(samples[CONTEXT:], first, count)
            if first == 0:  # the context is the previous block's end, not zeros
                windows = windows.copy()
                windows[0, :CONTEXT] = self._context
            probs, self._state = load_model()(mx.array(windows[None]), self._state)
            mx.eval(probs, self._state)
            self._probs.append(np.array(probs[0]))
            self._machine.feed(self._probs[-1])
        self._context = samples[-CONTEXT:].copy()

    def _ready(self, final: bool) -> list[tuple[float, float]]:
        runs, out = self._machine.runs, []
        while self._given < len(runs):
            run = runs[self._given]
            after = runs[self._given + 1] if self._given + 1 < len(runs) else None
            if after is None and not final and self._machine.frontier - run[1] < 2 * self.pad:
                break  # the next run, not closed yet, may share the gap after this one
            start, end = _pad_run(self._before, run, after, self.pad, self.samples)
            out.append((start / SAMPLE_RATE, end / SAMPLE_RATE))
            self._before = run
            self._given += 1
        return out
