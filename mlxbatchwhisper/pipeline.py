"""`BatchedWhisper`: the public face that wires model, tokenizer, features and decoding together."""

from __future__ import annotations

import os
from collections.abc import Sequence

import mlx.core as mx
import numpy as np

from .audio import N_SAMPLES, SAMPLE_RATE, check_audio
from .checkpoints import DEFAULT_MODEL, load_model
from .decoding import DecodingOptions, FallbackOptions, Item, decode_with_fallback
from .model import Whisper
from .results import DecodingResult
from .tokenizer import Tokenizer, get_tokenizer

DEFAULT_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


class BatchedWhisper:
    """A Whisper model that decodes many segments as one batch."""

    def __init__(self, model: Whisper):
        self.model = model
        self.tokenizer: Tokenizer = get_tokenizer(model.is_multilingual, model.num_languages)

    @classmethod
    def from_pretrained(cls, path_or_repo: str | os.PathLike = DEFAULT_MODEL, dtype: str | mx.Dtype = "float32") -> "BatchedWhisper":
        """Load any checkpoint `load_model` reads (a path, a model name, or a hub repo id)."""
        return cls(load_model(path_or_repo, dtype))

    def transcribe(
        self,
        segments: Sequence[np.ndarray],
        batch_size: int = 16,
        language: str | Sequence[str | None] | None = None,
        task: str = "transcribe",
        without_timestamps: bool = False,
        initial_prompt: str | Sequence[str | None] | None = None,
        temperature: float | Sequence[float] = DEFAULT_TEMPERATURES,
        beam_size: int | None = None,
        best_of: int = 5,
        patience: float | None = None,
        length_penalty: float | None = None,
        compression_ratio_threshold: float | None = 2.4,
        logprob_threshold: float | None = -1.0,
        no_speech_threshold: float | None = 0.6,
        suppress_tokens: str | Sequence[int] | None = "-1",
        suppress_blank: bool = True,
        max_initial_timestamp: float | None = 1.0,
        sample_len: int | None = None,
        seed: int = 0,
    ) -> list[DecodingResult]:
        """Transcribe 16 kHz mono float32 segments (each ≤ 30 s) in batches; results in input order.

        `language` and `initial_prompt` may be one value for all segments or one per segment;
        `language=None` detects each segment's language. Rows whose output looks wrong
        (compression ratio, average log-probability) are decoded again at the next temperature.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, not {batch_size!r}")
        if isinstance(segments, np.ndarray) and segments.ndim == 1:
            raise TypeError("segments must be a list of 1-D arrays; wrap a single segment in a list")
        audios = [check_audio(s, f"segments[{i}]", N_SAMPLES) for i, s in enumerate(segments)]
        for i, a in enumerate(audios):
            if len(a) == 0:
                raise ValueError(f"segments[{i}] is empty")
        languages = _per_segment(language, len(audios), "language")
        prompts = _per_segment(initial_prompt, len(audios), "initial_prompt")
        if not self.tokenizer.multilingual and any(lang not in (None, "en", "english", "English") for lang in languages):
            raise ValueError("this model is English-only; language must be None or 'en'")
        items = [
            Item(key=i, audio=a, language=lang, duration=len(a) / SAMPLE_RATE,
                 prompt=tuple(self.tokenizer.encode(" " + p.strip())) if p else ())
            for i, (a, lang, p) in enumerate(zip(audios, languages, prompts))
        ]
        temperatures = (temperature,) if isinstance(temperature, (int, float)) else tuple(temperature)
        options = DecodingOptions(
            task=task, beam_size=beam_size, patience=patience, length_penalty=length_penalty,
            suppress_tokens=suppress_tokens, suppress_blank=suppress_blank, without_timestamps=without_timestamps,
            max_initial_timestamp=max_initial_timestamp, sample_len=sample_len,
        )
        fallback = FallbackOptions(temperatures, compression_ratio_threshold, logprob_threshold, no_speech_threshold)
        results: list[DecodingResult | None] = [None] * len(items)
        order = sorted(range(len(items)), key=lambda i: -len(audios[i]))  # similar lengths decode together
        stream = (items[i] for i in order)
        for item, result in decode_with_fallback(self.model, self.tokenizer, stream, options, fallback, batch_size,
                                                 best_of=best_of, seed=seed):
            results[item.key] = result
        return results


def _per_segment(value, n: int, name: str) -> list:
    if value is None or isinstance(value, str):
        return [value] * n
    values = list(value)
    if len(values) != n:
        raise ValueError(f"{name} has {len(values)} entries for {n} segments")
    return values
