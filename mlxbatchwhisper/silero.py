"""Silero VAD v6 (16 kHz) in MLX, batched over audio streams: samples → speech probability per chunk.

The network scores 512-sample chunks (32 ms), each seen with the 64 samples before it:
a fixed Fourier basis applied as a strided convolution, four 1-D convolutions, an LSTM
cell carried from chunk to chunk, and a linear decoder. The convolutional part runs on
many chunks of many streams in one batched call; only the LSTM steps one chunk at a
time, for all streams together.
"""

from __future__ import annotations

import functools
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from .audio import SAMPLE_RATE, check_audio
from .kernels import lstm

CHUNK = 512  # samples scored per probability
CONTEXT = 64  # samples of the previous chunk prepended to each chunk
WEIGHTS = Path(__file__).parent / "assets" / "silero_vad_16k.safetensors"

# Windows (chunk + context) per pass through the network: bounds memory and graph size on
# long inputs; larger passes gain nothing on CPU.
_WINDOWS_PER_PASS = 1024


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
        hidden, cell = lstm(self.lstm, x, state)
        probs = mx.sigmoid(self.decoder(nn.relu(hidden)))[..., 0]
        return probs, (hidden[:, -1], cell)


@functools.lru_cache(maxsize=1)
def load_model() -> SileroVAD:
    """The shipped Silero VAD weights, loaded once."""
    model = SileroVAD()
    model.load_weights(str(WEIGHTS))
    model.eval()
    mx.eval(model.parameters())
    return model


def check_rate(sample_rate: int) -> None:
    """Refuse any rate but 16 kHz (the only one this network runs at)."""
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


def batch_probabilities(audios: list[np.ndarray]) -> list[np.ndarray]:
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
    check_rate(sample_rate)
    if isinstance(audio, (list, tuple)):
        return batch_probabilities([check_audio(a) for a in audio])
    return batch_probabilities([check_audio(audio)])[0]


class ProbabilityStream:
    """The network over one input fed in blocks of samples: the passes of the whole input (context and LSTM
    state carried across blocks), so its probabilities."""

    def __init__(self) -> None:
        self._unscored: list[np.ndarray] = []  # samples fed but not yet through the network
        self._context = np.zeros(CONTEXT, np.float32)
        self._state: tuple[mx.array, mx.array] | None = None
        self._probs: list[np.ndarray] = []

    @property
    def probabilities(self) -> np.ndarray:
        """Speech probability of every chunk scored so far."""
        if len(self._probs) > 1:
            self._probs = [np.concatenate(self._probs)]
        return self._probs[0] if self._probs else np.zeros(0, np.float32)

    def feed(self, audio: np.ndarray) -> np.ndarray:
        """Take the next samples (checked float32); the probabilities of the chunks scored now (whole passes)."""
        self._unscored.append(audio)
        pass_samples = _WINDOWS_PER_PASS * CHUNK
        if sum(len(a) for a in self._unscored) < pass_samples:
            return np.zeros(0, np.float32)
        pending = np.concatenate(self._unscored)
        whole = len(pending) // pass_samples * pass_samples
        self._unscored = [pending[whole:]]
        return self._score(pending[:whole])

    def finish(self) -> np.ndarray:
        """The input has ended: the probabilities of the chunks left (the last one zero-padded)."""
        rest = np.concatenate(self._unscored) if self._unscored else np.zeros(0, np.float32)
        self._unscored = []
        return self._score(rest)

    def _score(self, audio: np.ndarray) -> np.ndarray:
        """Run the network over `audio` (the next samples), a pass of _WINDOWS_PER_PASS chunks at a time."""
        samples = np.concatenate([self._context, audio])
        scored = []
        for first in range(0, _num_chunks(audio), _WINDOWS_PER_PASS):
            count = min(_WINDOWS_PER_PASS, _num_chunks(audio) - first)
            windows = _windows(samples[CONTEXT:], first, count)
            if first == 0:  # the context is the previous block's end, not zeros
                windows = windows.copy()
                windows[0, :CONTEXT] = self._context
            probs, self._state = load_model()(mx.array(windows[None]), self._state)
            mx.eval(probs, self._state)
            scored.append(np.array(probs[0]))
        self._probs += scored
        self._context = samples[-CONTEXT:].copy()
        return np.concatenate(scored) if scored else np.zeros(0, np.float32)
