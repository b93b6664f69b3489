"""Audio in: decoding files (PyAV), input checks, and Whisper's log-mel spectrogram for a padded batch."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from functools import cache
from typing import BinaryIO

import mlx.core as mx
import numpy as np

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
CHUNK_LENGTH = 30
N_SAMPLES = CHUNK_LENGTH * SAMPLE_RATE  # 480000 samples in a 30 s window
N_FRAMES = N_SAMPLES // HOP_LENGTH  # 3000 mel frames in a window
TIME_PRECISION = 0.02  # seconds per audio position (encoder output) and per timestamp token


MAX_AMPLITUDE = 8.0  # float samples beyond this are integer PCM in disguise, not audio in [-1, 1]
SPILL_SECONDS = 600  # decoded audio longer than this lives in a temporary file, not in memory


class _Samples:
    """Decoded samples as float32: in memory up to `limit`, then spilled to an unlinked temporary file."""

    def __init__(self, limit: int):
        self.limit, self.chunks, self.count, self.file = limit, [], 0, None

    def add(self, x: np.ndarray) -> None:
        if self.file is None and self.count + len(x) > self.limit:
            self.file = tempfile.TemporaryFile(prefix="mlxbatchwhisper-audio-")
            for chunk in self.chunks:
                self.file.write(chunk.tobytes())
            self.chunks = []
        if self.file is None:
            self.chunks.append(x)
        else:
            self.file.write(x.tobytes())
        self.count += len(x)

    def array(self) -> np.ndarray:
        if self.file is None:
            return np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.float32)
        self.file.flush()
        with self.file:
            return np.memmap(self.file, dtype=np.float32, mode="r", shape=(self.count,))


def load_audio(path: str | os.PathLike | BinaryIO, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Decode any audio/video file PyAV reads into mono float32 at `sr` Hz (channels averaged).

    `path` may also be a binary file object (e.g. `io.BytesIO` of a file's bytes). Audio longer
    than SPILL_SECONDS comes back as a read-only array backed by an unlinked temporary file, so
    memory does not grow with the file's length.
    """
    samples = _Samples(SPILL_SECONDS * sr)
    for block in audio_blocks(path, sr):
        samples.add(block)
    return samples.array()


def audio_blocks(path: str | os.PathLike | BinaryIO, sr: int = SAMPLE_RATE) -> Iterator[np.ndarray]:
    """`load_audio` piece by piece: the file's samples as consecutive float32 blocks, decoded as they are asked for.

    Errors are `load_audio`'s: FileNotFoundError, or ValueError naming the file (unreadable, no audio, corrupt).
    """
    import av

    label = getattr(path, "name", "audio bytes") if is_file_object(path) else path
    try:
        container = av.open(_openable(path))
    except FileNotFoundError:
        raise
    except (av.error.FFmpegError, OSError) as e:  # unreadable or not media
        raise ValueError(f"{label}: cannot decode audio ({e})") from e
    with container:
        if not container.streams.audio:
            raise ValueError(f"{label}: no audio stream")
        resampler = av.AudioResampler(format="s16", layout="mono", rate=sr)
        frames = container.decode(audio=0)
        while True:
            try:
                frame = next(frames, None)
                out = resampler.resample(frame)
            except av.error.FFmpegError as e:
                raise ValueError(f"{label}: corrupt audio ({e})") from e
            for o in out:
                yield o.to_ndarray().reshape(-1).astype(np.float32) / 32768.0
            if frame is None:  # the resampler is flushed
                return


def is_file_object(x: object) -> bool:
    """Whether `x` is a readable binary file object rather than a path or samples."""
    return hasattr(x, "read") and hasattr(x, "seek")


def _openable(path: str | os.PathLike | BinaryIO) -> str | BinaryIO:
    """What `av.open` takes: a path string, or a file object rewound to its start."""
    if is_file_object(path):
        path.seek(0)
        return path
    return os.fspath(path)


def audio_duration(path: str | os.PathLike | BinaryIO) -> float:
    """Seconds of audio in a file by its header (0 when unknown or unreadable)."""
    import av

    try:
        with av.open(_openable(path)) as container:
            stream = container.streams.audio[0]
            if stream.duration and stream.time_base:
                return float(stream.duration * stream.time_base)
            return container.duration / 1e6 if container.duration else 0.0
    except (av.error.FFmpegError, OSError, IndexError):
        return 0.0


MIN_RATE, MAX_RATE = 4000, 384000  # sample rates outside these are mistakes (seconds or samples, not Hz)


def check_sample_rate(sample_rate: int) -> int:
    """A plausible sample rate in Hz, or a clear error."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)):
        raise ValueError(f"sample_rate must be an integer number of Hz, not {sample_rate!r}")
    if not MIN_RATE <= sample_rate <= MAX_RATE:
        raise ValueError(f"sample_rate must be between {MIN_RATE} and {MAX_RATE} Hz, not {sample_rate}")
    return int(sample_rate)


def resample(audio: np.ndarray, sample_rate: int, name: str = "audio") -> np.ndarray:
    """A float waveform at `sample_rate` Hz brought to 16 kHz with the resampler files go through (FFmpeg's)."""
    check_sample_rate(sample_rate)
    audio = check_audio(audio, name)
    if sample_rate == SAMPLE_RATE or len(audio) == 0:
        return audio
    import av

    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    out = []
    for start in range(0, len(audio), 1 << 18):  # in blocks: FFmpeg frames are bounded
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(audio[None, start : start + (1 << 18)]), format="flt", layout="mono"
        )
        frame.sample_rate = int(sample_rate)
        out += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    out += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(out).astype(np.float32, copy=False)


def check_audio(audio: np.ndarray | Sequence[float], name: str = "audio", max_samples: int | None = None) -> np.ndarray:
    """Validate one mono 16 kHz float waveform and return it as a float32 numpy array."""
    a = np.asarray(audio)
    if a.ndim == 2 and min(a.shape) <= 8:
        axis = int(np.argmin(a.shape))
        raise ValueError(
            f"{name} has shape {a.shape}: looks multi-channel; mix it down to mono (e.g. a.mean(axis={axis}))"
        )
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D waveform, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.floating):
        hint = " (int16 PCM: divide by 32768)" if a.dtype == np.int16 else ""
        raise TypeError(f"{name} must be float samples in [-1, 1], got {a.dtype}{hint}")
    a = a.astype(np.float32, copy=False)
    for start in range(0, len(a), 1 << 20):  # in blocks: long inputs may be file-backed
        block = a[start : start + (1 << 20)]
        if not np.isfinite(block).all():
            raise ValueError(f"{name} contains NaN or infinite samples")
        if len(block) and np.abs(block).max() > MAX_AMPLITUDE:
            raise ValueError(
                f"{name} has samples of magnitude {np.abs(block).max():.0f}: expected float audio "
                "in [-1, 1] (integer PCM stored as floats? divide by 32768)"
            )
    if max_samples is not None and len(a) > max_samples:
        raise ValueError(
            f"{name} lasts {len(a) / SAMPLE_RATE:.1f} s, more than {max_samples / SAMPLE_RATE:.0f} s "
            "(at 16 kHz); cut it first or use the long-form API (transcribe_audio)"
        )
    return a


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    linear = f * 3.0 / 200.0
    log = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(f >= 1000.0, log, linear)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    return np.where(m >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0)), m * 200.0 / 3.0)


@cache
def mel_filters(n_mels: int) -> mx.array:
    """(n_mels, N_FFT // 2 + 1) triangular filters, Slaney-normalized (librosa's defaults)."""
    fft_freqs = np.linspace(0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(SAMPLE_RATE / 2), n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_freqs[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return mx.array(weights.astype(np.float32))


@cache
def hann_window(size: int = N_FFT) -> mx.array:
    """The periodic Hann window (torch.hann_window's default)."""
    n = np.arange(size)
    return mx.array((0.5 - 0.5 * np.cos(2 * np.pi * n / size)).astype(np.float32))


def log_mel_spectrogram(
    audios: Sequence[np.ndarray | mx.array] | np.ndarray | mx.array, n_mels: int = 80
) -> tuple[mx.array, list[int]]:
    """Whisper's log-mel of a batch of ≤ 30 s waveforms: ((B, 3000, n_mels), valid frames per row).

    Each row is zero-padded to 30 s, and normalized on its own (clamped to its max − 8 in
    log10 units, then (x + 4) / 4), exactly as openai-whisper does for `pad_or_trim(audio)`.
    """
    if isinstance(audios, (np.ndarray, mx.array)) and audios.ndim == 1:
        audios = [audios]
    rows = [check_audio(np.asarray(a), f"audio[{i}]", N_SAMPLES) for i, a in enumerate(audios)]
    if not rows:
        raise ValueError("log_mel_spectrogram needs at least one waveform")
    batch = np.zeros((len(rows), N_SAMPLES), np.float32)
    for i, a in enumerate(rows):
        batch[i, : len(a)] = a
    mel = _log_mel(mx.array(batch), n_mels)
    return mel, [len(a) // HOP_LENGTH for a in rows]


def file_log_mel(audio: np.ndarray, n_mels: int = 80) -> mx.array:
    """A whole recording's log-mel (frames, n_mels) with 30 s of silence after it, normalized over all
    of it: openai-whisper's `log_mel_spectrogram(audio, padding=N_SAMPLES)`, which its `transcribe` slices."""
    audio = check_audio(audio, "audio")
    return _log_mel(mx.array(np.concatenate([audio, np.zeros(N_SAMPLES, np.float32)]))[None], n_mels)[0]


def _log_mel(x: mx.array, n_mels: int) -> mx.array:
    pad = N_FFT // 2
    x = mx.concatenate([x[:, 1 : pad + 1][:, ::-1], x, x[:, -pad - 1 : -1][:, ::-1]], axis=1)
    batch, length = x.shape
    n_frames = 1 + (length - N_FFT) // HOP_LENGTH
    frames = mx.as_strided(x, shape=(batch, n_frames, N_FFT), strides=(length, HOP_LENGTH, 1))
    spectrum = mx.fft.rfft(frames * hann_window(), axis=-1)[:, :-1]
    power = mx.square(mx.abs(spectrum))
    log_spec = mx.log10(mx.maximum(power @ mel_filters(n_mels).T, 1e-10))
    log_spec = mx.maximum(log_spec, log_spec.max(axis=(1, 2), keepdims=True) - 8.0)
    return (log_spec + 4.0) / 4.0
