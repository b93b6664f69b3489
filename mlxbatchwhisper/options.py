"""Decoding options in one place: openai-whisper's decoding and temperature-fallback options, defaults
written once, checked when made (`__post_init__`) and against a model (`validate`).

A segment is decoded in passes, one per temperature until its output looks right; `Pass` is what
one pass needs to know (beam search at temperature 0, `best_of` samples above it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from numbers import Real
from typing import Any

from . import checks
from .results import DecodingResult
from .tokenizer import Tokenizer

DEFAULT_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


@dataclass(frozen=True)
class DecodingOptions:
    """openai-whisper's decoding and fallback options (same names and meaning); the language is per item.

    `temperature` is one number or the sequence tried in order (a row whose output is too repetitive
    or too improbable, and not silence, is decoded again at the next one); `best_of` samples are drawn
    per pass above temperature 0. `seed` seeds the sampling (see `Pass.row_seed`).
    """

    task: str = "transcribe"
    temperature: float | tuple[float, ...] = DEFAULT_TEMPERATURES
    sample_len: int | None = None  # most tokens to sample; default n_text_ctx // 2
    best_of: int = 5
    beam_size: int | None = None  # beams per row at temperature 0
    patience: float | None = None
    length_penalty: float | None = None
    suppress_tokens: str | Sequence[int] | None = "-1"
    suppress_blank: bool = True
    without_timestamps: bool = False
    max_initial_timestamp: float | None = 1.0
    compression_ratio_threshold: float | None = 2.4
    logprob_threshold: float | None = -1.0
    no_speech_threshold: float | None = 0.6
    seed: int = 0

    def __post_init__(self) -> None:
        t = self.temperature
        if isinstance(t, (str, bytes)) or not isinstance(t, (Real, Sequence)) or (isinstance(t, Sequence) and not t):
            raise ValueError(f"temperature must be one number ≥ 0 or a non-empty sequence of them, not {t!r}")
        object.__setattr__(self, "temperature", (t,) if isinstance(t, Real) else tuple(t))
        for value in self.temperature:
            checks.number("temperature", value, low=0)
        checks.choice("task", self.task, ("transcribe", "translate"))
        checks.integer("best_of", self.best_of, low=1)
        checks.integer("seed", self.seed, low=0)
        for name in ("beam_size", "sample_len"):
            checks.integer(name, getattr(self, name), low=1, optional=True)
        checks.number("patience", self.patience, low=0, low_open=True, optional=True)
        checks.number("length_penalty", self.length_penalty, low=0, high=1, optional=True)
        checks.number("max_initial_timestamp", self.max_initial_timestamp, low=0, optional=True)
        checks.flag("suppress_blank", self.suppress_blank)
        checks.flag("without_timestamps", self.without_timestamps)
        checks.number("compression_ratio_threshold", self.compression_ratio_threshold, low=0, optional=True)
        checks.number("logprob_threshold", self.logprob_threshold, optional=True)
        checks.number("no_speech_threshold", self.no_speech_threshold, low=0, high=1, optional=True)
        if self.patience is not None and self.beam_size is None:
            raise ValueError("patience requires beam_size")
        suppress_token_ids(None, self.suppress_tokens)  # the list's form; ids are checked by `validate`

    @classmethod
    def of(cls, options: DecodingOptions | None = None, **overrides: Any) -> DecodingOptions:
        """`options` (or the defaults) with `overrides` by name; an unknown name is a TypeError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"unknown decoding option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        if options is not None and not isinstance(options, DecodingOptions):
            raise TypeError(f"options must be DecodingOptions or None, not {type(options).__name__}")
        base = {f.name: getattr(options, f.name) for f in fields(cls)} if options is not None else {}
        return cls(**{**base, **overrides})

    def validate(self, tokenizer: Tokenizer, n_vocab: int) -> DecodingOptions:
        """Check what depends on the model: its task support and its vocabulary; returns self."""
        if self.task == "translate" and not tokenizer.multilingual:
            raise ValueError("this model is English-only: it cannot translate (task must be 'transcribe')")
        ids = suppress_token_ids(tokenizer, self.suppress_tokens)
        if ids and ids[-1] >= n_vocab:
            raise ValueError(
                f"suppress_tokens has ids beyond the vocabulary ({n_vocab} tokens): {[t for t in ids if t >= n_vocab]}"
            )
        return self

    @property
    def group(self) -> int:
        """Consecutive decoder rows that share one copy of a segment's audio K/V: its beams, or one."""
        return self.beam_size or 1

    def passes(self) -> tuple[Pass, ...]:
        """One pass per temperature, in the order they are tried."""
        return tuple(
            Pass(i, t, self.beam_size if t == 0 else None, self.best_of if t > 0 else 1, self.group)
            for i, t in enumerate(self.temperature)
        )

    def needs_fallback(self, r: DecodingResult) -> bool:
        """Too repetitive or too improbable, and not silence."""
        too_low = self.logprob_threshold is not None and r.avg_logprob < self.logprob_threshold
        if self.no_speech_threshold is not None and too_low and r.no_speech_prob > self.no_speech_threshold:
            return False  # silence
        repetitive = (
            self.compression_ratio_threshold is not None and r.compression_ratio > self.compression_ratio_threshold
        )
        return repetitive or too_low

    def is_silent(self, r: DecodingResult) -> bool:
        """openai-whisper's skip rule: probably no speech, and not confidently decoded."""
        return (
            self.no_speech_threshold is not None
            and r.no_speech_prob > self.no_speech_threshold
            and (self.logprob_threshold is None or r.avg_logprob < self.logprob_threshold)
        )


@dataclass(frozen=True)
class Pass:
    """One decoding pass of a segment: its temperature, beams (at 0) or samples (above 0), and its rows.

    A segment's rows come in groups of `group` rows sharing one copy of its audio K/V; samples fill
    whole groups (extra rows start finished and are never read).
    """

    index: int  # position in the options' temperatures
    temperature: float
    beam_size: int | None
    samples: int  # rows whose results are ranked: best_of above 0, else 1 (or the beams)
    group: int

    @property
    def rows(self) -> int:
        """Decoder rows the segment takes in the batch."""
        if self.beam_size:
            return self.beam_size
        return -(-self.samples // self.group) * self.group

    def row_seed(self, seed: int, item_seed: int, row: int) -> int:
        """The 32-bit sampling seed of one row: a hash of the options' seed, the item's seed, this pass
        and the row within the segment, so a sample never depends on what else is in the batch."""
        return _mix(_mix(_mix(_mix(seed) ^ item_seed) ^ self.index) ^ row)


def _mix(x: int) -> int:
    """A 32-bit integer hash (murmur3's finalizer)."""
    x &= 0xFFFFFFFF
    x = ((x ^ (x >> 16)) * 0x85EBCA6B) & 0xFFFFFFFF
    x = ((x ^ (x >> 13)) * 0xC2B2AE35) & 0xFFFFFFFF
    return x ^ (x >> 16)


def suppress_token_ids(tokenizer: Tokenizer | None, suppress_tokens: str | Sequence[int] | None) -> tuple[int, ...]:
    """openai-whisper's suppression list: '-1' means the non-speech tokens; special tokens always.

    Without a tokenizer, only the list's form is checked (and its ids returned as given).
    """
    accepted = "comma-separated token ids in a string ('-1', '-1,50256'), a list of ints, or None"
    try:
        if isinstance(suppress_tokens, str):
            ids = [int(t) for t in suppress_tokens.split(",") if t.strip()]
        else:
            ids = [checks.integer("suppress_tokens", t) for t in suppress_tokens or []]
    except (ValueError, TypeError) as e:
        raise ValueError(f"suppress_tokens must be {accepted}, not {suppress_tokens!r}") from e
    if any(t < -1 for t in ids):
        raise ValueError(f"suppress_tokens must be token ids or -1, not {[t for t in ids if t < -1]}")
    if tokenizer is None:
        return tuple(ids)
    if -1 in ids:
        ids = [t for t in ids if t >= 0] + list(tokenizer.non_speech_tokens)
    ids += [
        tokenizer.transcribe,
        tokenizer.translate,
        tokenizer.sot,
        tokenizer.sot_prev,
        tokenizer.sot_lm,
        tokenizer.no_speech,
    ]
    return tuple(sorted(set(ids)))


def check_finite(result: DecodingResult, source: str) -> None:
    """Refuse a result whose log-probabilities are not numbers: the model's weights, not the input."""
    if math.isnan(result.avg_logprob) or result.avg_logprob == math.inf:
        raise ModelOutputError(
            f"{source}: the model computed NaN/infinite log-probabilities; its weights may be corrupt"
        )


class ModelOutputError(RuntimeError):
    """The model computed numbers that are not numbers (NaN, infinity): corrupt weights, not bad input."""
