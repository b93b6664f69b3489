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


def _speech_runs(
    probs: np.ndarray,
    num_samples: int,
    threshold: float,
    neg_threshold: float,
    min_speech: float,
    min_silence: float,
    max_speech: float,
    min_silence_at_max: float,
    use_longest_silence: bool,
) -> list[list[int]]:
    """Silero's hysteresis state machine over chunk probabilities: [start, end] samples."""
    runs: list[list[int]] = []
    start = None  # sample where the open run began; None outside speech
    temp_end = 0  # start of the silence inside the open run (0: none)
    prev_end = next_start = 0  # last long silence inside the run (legacy split mode)
    silences: list[tuple[int, int]] = []  # (start, duration) of silences inside the run

    def close(end: int | None) -> None:
        """End the open run, keeping it as [start, end] unless `end` is None."""
        nonlocal start, temp_end, prev_end, next_start, silences
        if end is not None:
            runs.append([start, end])
        start, temp_end, prev_end, next_start, silences = None, 0, 0, 0, []

    for i, p in enumerate(probs.tolist()):
        sample = i * CHUNK
        if p >= threshold and temp_end:  # speech resumes after a dip
            if sample - temp_end > min_silence_at_max:
                silences.append((temp_end, sample - temp_end))
            temp_end = 0
            if next_start < prev_end:
                next_start = sample
        if p >= threshold and start is None:
            start = sample
            continue
        if start is not None and sample - start > max_speech:
            if use_longest_silence and silences:
                # Split at the longest silence; that silence is over, so speech goes on.
                cut, length = max(silences, key=lambda s: s[1])
                close(cut)
                start = cut + length
            elif prev_end:
                cut, resume = prev_end, next_start
                close(cut)
                if resume >= cut:  # speech came back after that silence
                    start = resume
            else:
                close(sample)
                continue
        if p < neg_threshold and start is not None:
            temp_end = temp_end or sample
            if not use_longest_silence and sample - temp_end > min_silence_at_max:
                prev_end = temp_end
            if sample - temp_end >= min_silence:
                close(temp_end if temp_end - start > min_speech else None)
    if start is not None and num_samples - start > min_speech:
        runs.append([start, num_samples])
    return runs


def _pad_runs(runs: list[list[int]], pad: float, num_samples: int) -> None:
    """Widen runs by `pad` samples each side, sharing shorter gaps between neighbours."""
    if runs:
        runs[0][0] = int(max(0, runs[0][0] - pad))
    for run, following in zip(runs, runs[1:]):
        gap = following[0] - run[1]
        if gap < 2 * pad:
            run[1] += gap // 2
            following[0] = int(max(0, following[0] - gap // 2))
        else:
            run[1] = int(min(num_samples, run[1] + pad))
            following[0] = int(max(0, following[0] - pad))
    if runs:
        runs[-1][1] = int(min(num_samples, runs[-1][1] + pad))


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
    if neg_threshold is None:
        neg_threshold = max(threshold - 0.15, 0.01)
    pad = SAMPLE_RATE * speech_pad_ms / 1000
    runs = _speech_runs(
        np.asarray(probs),
        num_samples,
        threshold=threshold,
        neg_threshold=neg_threshold,
        min_speech=SAMPLE_RATE * min_speech_duration_ms / 1000,
        min_silence=SAMPLE_RATE * min_silence_duration_ms / 1000,
        max_speech=SAMPLE_RATE * max_speech_duration_s - CHUNK - 2 * pad,
        min_silence_at_max=SAMPLE_RATE * min_silence_at_max_speech / 1000,
        use_longest_silence=use_max_poss_sil_at_max_speech,
    )
    _pad_runs(runs, pad, num_samples)
    return [{"start": s / SAMPLE_RATE, "end": e / SAMPLE_RATE} for s, e in runs]


@dataclass(frozen=True)
class VadOptions:
    """The speech-region thresholds a pipeline passes to `get_speech_timestamps` (same names and meaning)."""

    threshold: float = 0.5  # a region opens at a chunk this likely to be speech
    neg_threshold: float | None = None  # ... and closes below this (default max(threshold - 0.15, 0.01))
    max_speech_duration_s: float = float("inf")  # longer regions are split (at their longest silence)
    min_speech_duration_ms: float = 250  # shorter regions are dropped
    min_silence_duration_ms: float = 100  # a region ends after this much silence
    speech_pad_ms: float = 30  # regions grow this much each side (200, with 300 above: see docs/longform.md)

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
