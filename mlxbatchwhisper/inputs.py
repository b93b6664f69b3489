"""Inputs of `transcribe_audio`: paths, file objects and waveforms checked, loaded (resampled) or read
in blocks; per-input options and given speech regions checked."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import mlx.core as mx
import numpy as np

from .audio import SAMPLE_RATE, audio_blocks, is_file_object, load_audio, resample


def given_regions(given: Sequence[dict], name: str) -> list[tuple[float, float]]:
    """Speech regions given for one input, as (start, end) seconds, checked."""
    out = []
    for k, region in enumerate(given):
        try:
            start, end = float(region["start"]), float(region["end"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(
                f"{name}[{k}] must be a dict with numeric 'start' and 'end' seconds, not {region!r}"
            ) from e
        if not (np.isfinite(start) and np.isfinite(end) and 0 <= start < end):
            raise ValueError(f"{name}[{k}] needs 0 <= start < end (seconds), got {region!r}")
        out.append((start, end))
    return out


def clip_regions(regions: list[tuple[float, float]], duration: float) -> list[tuple[float, float]]:
    """Regions cut to an input's duration."""
    return [(a, min(b, duration)) for a, b in regions if a < duration]


def as_list(inputs: Any, name: str) -> list:
    """One path or 1-D waveform, or a sequence of them, as a list; 2-D arrays refused with a hint."""
    if isinstance(inputs, (str, os.PathLike)):
        return [inputs]
    if isinstance(inputs, (np.ndarray, mx.array)):
        if inputs.ndim == 1:
            return [inputs]
        if inputs.ndim == 2:
            axis = int(np.argmin(inputs.shape))
            raise ValueError(
                f"{name} is a 2-D array of shape {tuple(inputs.shape)}: for multi-channel audio, mix it down "
                f"to mono first (a.mean(axis={axis})); for several recordings, pass a list of 1-D arrays (list(a))"
            )
        raise ValueError(
            f"{name} must be a 1-D waveform or a list of them, not an array of shape {tuple(inputs.shape)}"
        )
    if isinstance(inputs, (bytes, dict)) or not isinstance(inputs, Iterable):
        raise TypeError(f"{name} must be a path, a 1-D float waveform, or a list of them, not {type(inputs).__name__}")
    return list(inputs)


def precheck(x: Any, name: str) -> None:
    """Refuse, before any decoding, an input that is not a path or waveform, or a file that is not there."""
    if isinstance(x, (str, os.PathLike)):
        if not os.path.exists(x):
            raise FileNotFoundError(f"{name}: no such file: {os.fspath(x)}")
        if os.path.isdir(x):
            raise IsADirectoryError(f"{name}: {os.fspath(x)} is a directory, not an audio file")
        if not os.access(x, os.R_OK):
            raise PermissionError(f"{name}: {os.fspath(x)} is not readable")
    elif is_file_object(x):
        return
    elif not isinstance(x, (np.ndarray, mx.array, Sequence)) or isinstance(x, bytes):
        raise TypeError(f"{name} must be a path, a binary file object or a 1-D float waveform, not {type(x).__name__}")


def load(x: Any, name: str, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A file (path or binary file object) decoded to 16 kHz mono, or a waveform checked (and resampled
    from `sample_rate`)."""
    if isinstance(x, (str, os.PathLike)) or is_file_object(x):
        return load_audio(x)
    precheck(x, name)
    return resample(np.asarray(x), sample_rate, name)


def read(
    x: Any, name: str, sample_rate: int, stream_after: float | None
) -> tuple[np.ndarray, Iterator[np.ndarray] | None]:
    """`load` and None, or for an input that lasts more than `stream_after` seconds, an empty array and an
    iterator of its samples (in blocks of a few seconds), read as they are asked for."""
    if stream_after is None:
        return load(x, name, sample_rate), None
    if isinstance(x, (str, os.PathLike)) or is_file_object(x):
        blocks = audio_blocks(x)
    else:
        whole = load(x, name, sample_rate)
        blocks = (whole[k : k + _BLOCK] for k in range(0, len(whole), _BLOCK))
    blocks = _rechunk(blocks, _BLOCK)
    head, count = [], 0
    for block in blocks:
        head.append(block)
        count += len(block)
        if count > stream_after * SAMPLE_RATE:
            return np.zeros(0, np.float32), itertools.chain(_drain(head), blocks)
    return (np.concatenate(head) if head else np.zeros(0, np.float32)), None


def _drain(blocks: list[np.ndarray]) -> Iterator[np.ndarray]:
    """The list's items, each let go of as it is handed on."""
    while blocks:
        yield blocks.pop(0)


_BLOCK = 8 * SAMPLE_RATE  # samples handed on at a time while reading a long input


def _rechunk(blocks: Iterable[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """Blocks of samples joined into blocks of at least `size` (the last one may be shorter)."""
    pending, count = [], 0
    for block in blocks:
        pending.append(block)
        count += len(block)
        if count >= size:
            yield np.concatenate(pending) if len(pending) > 1 else pending[0]
            pending, count = [], 0
    if pending:
        yield np.concatenate(pending)


def per_input(value: Any, n: int, name: str, inputs: str) -> list:
    """One value for every input, or a list of one per input."""
    if value is None or isinstance(value, str):
        return [value] * n
    if not isinstance(value, Iterable):
        raise ValueError(f"{name} must be a string, None, or a list of one per input, not {value!r}")
    values = list(value)
    if len(values) != n:
        raise ValueError(f"{name} has {len(values)} entries for {n} {inputs}")
    return values
