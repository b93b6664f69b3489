"""`BatchedWhisper`: the public face that wires audio, VAD, scheduling and decoding together."""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any, Union

import mlx.core as mx
import numpy as np

from . import checks
from .audio import (
    N_SAMPLES,
    SAMPLE_RATE,
    check_audio,
    check_sample_rate,
    resample,
)
from .checkpoints import DEFAULT_MODEL, load_model
from .engine import Engine
from .inputs import as_list, given_regions, per_input, precheck
from .jobs import LongFormJob, SequentialJob, sequential_options, transcribe_groups
from .longform import WindowDecoder
from .model import Whisper
from .options import DecodingOptions
from .pieces import Packer, without_words
from .prefill import Item
from .results import DecodingResult
from .sequential import SequentialOptions, SequentialTranscriber
from .tokenizer import Tokenizer, get_tokenizer, language_code
from .vad import VadOptions
from .words import WordAligner, WordOptions, with_words

AudioInputs = Union[str, os.PathLike, np.ndarray, Sequence[Union[str, os.PathLike, np.ndarray]]]


def _serialized(method: Callable[..., Iterator]) -> Callable[..., Iterator]:
    """A generator method that holds the instance's lock while it computes each item, not between items."""

    @functools.wraps(method)
    def steps(self, *args, **kwargs):
        work = method(self, *args, **kwargs)
        while True:
            with self._lock:
                try:
                    item = next(work)
                except StopIteration:
                    return
            yield item

    return steps


class BatchedWhisper:
    """A Whisper model that decodes many segments as one batch.

    Any thread may use it, several at once: calls are serialized by a lock (one batch at a time
    uses the whole machine anyway); `transcribe_audio_iter` holds it only while it computes, not
    while the caller holds a result.
    """

    def __init__(self, model: Whisper):
        self.model = model
        self.tokenizer: Tokenizer = get_tokenizer(model.is_multilingual, model.num_languages)
        self._lock = threading.RLock()

    @classmethod
    def from_pretrained(
        cls,
        path_or_repo: str | os.PathLike = DEFAULT_MODEL,
        dtype: str | mx.Dtype = "float32",
        dequantize: bool | None = None,
        kv_bits: int | None = None,
        absorb_cross_kv: bool = False,
    ) -> BatchedWhisper:
        """Load any checkpoint `load_model` reads (a path, a model name, or a hub repo id).

        `kv_bits=8` keeps the decoder's cross-attention keys/values as int8 with a scale per
        vector: half their memory and, on CUDA, half a decoding step's reads (see docs/benchmarks.md
        for its speed and word error). `absorb_cross_kv=True` keeps no keys/values at all: each
        step attends to the audio features with the key/value projections folded in
        (`TextDecoder.absorb`), a segment's cross-attention memory divided by 2 × the decoder's layers.
        """
        if kv_bits not in (None, 8):
            raise ValueError(f"kv_bits must be None (the model's dtype) or 8, not {kv_bits!r}")
        if kv_bits and absorb_cross_kv:
            raise ValueError("absorb_cross_kv keeps no keys/values to store in 8 bits: choose one")
        model = load_model(path_or_repo, dtype, dequantize)
        model.decoder.kv_bits = kv_bits
        if absorb_cross_kv:
            model.decoder.absorb()
        return cls(model)

    def transcribe(
        self,
        segments: Sequence[np.ndarray],
        options: DecodingOptions | None = None,
        *,
        batch_size: int = 16,
        language: str | Sequence[str | None] | None = None,
        initial_prompt: str | Sequence[str | None] | None = None,
        word_timestamps: bool = False,
        prepend_punctuations: str = WordOptions.prepend_punctuations,
        append_punctuations: str = WordOptions.append_punctuations,
        sample_rate: int = SAMPLE_RATE,
        **overrides: Any,
    ) -> list[DecodingResult]:
        """Transcribe mono float32 segments (each ≤ 30 s) in batches; results in input order.

        `options` (`DecodingOptions`; default: openai-whisper's) with `overrides` by name (task,
        temperature, beam_size, best_of, patience, length_penalty, the fallback thresholds, seed, ...)
        say how to decode. Segments at another `sample_rate` than 16 kHz are resampled first (as files
        are). `language` and `initial_prompt` may be one value for all segments or one per segment;
        `language=None` detects each segment's language. Rows whose output looks wrong (compression
        ratio, average log-probability) are decoded again at the next temperature. With
        `word_timestamps`, each segment gets its `words`, aligned in batches as openai-whisper aligns
        them (the punctuation sets are its options of the same names).
        """
        decoding = self._options(options, **overrides)
        batch_size = self._batch_size(batch_size, decoding.group)
        if isinstance(segments, np.ndarray) and segments.ndim == 1:
            raise TypeError("segments must be a list of 1-D arrays; wrap a single segment in a list")
        check_sample_rate(sample_rate)
        audios = [
            check_audio(resample(s, sample_rate, f"segments[{i}]"), f"segments[{i}]", N_SAMPLES)
            for i, s in enumerate(as_list(segments, "segments"))
        ]
        for i, a in enumerate(audios):
            if len(a) == 0:
                raise ValueError(f"segments[{i}] is empty")
        languages = [self._language(lang) for lang in per_input(language, len(audios), "language", "segments")]
        prompts = per_input(initial_prompt, len(audios), "initial_prompt", "segments")
        items = [
            Item(key=i, audio=a, language=lang, duration=len(a) / SAMPLE_RATE, prompt=self._prompt(p), seed=i)
            for i, (a, lang, p) in enumerate(zip(audios, languages, prompts))
        ]
        results: list[DecodingResult | None] = [None] * len(items)
        order = sorted(range(len(items)), key=lambda i: -len(audios[i]))  # similar lengths decode together
        stream = (items[i] for i in order)
        with self._lock:
            engine = Engine(
                self.model, self.tokenizer, decoding, batch_size, keep_cross_kv=word_timestamps and _reuse_cross_kv()
            )
            decoded = ((item, result, result.segments, None) for item, result in engine.run(stream))
            if word_timestamps:
                aligner = WordAligner(
                    self.model, self.tokenizer, decoding.task, WordOptions(prepend_punctuations, append_punctuations)
                )
                decoded = with_words(aligner, decoded, batch_size)
            for item, result, timed, _ in decoded:
                results[item.key] = replace(result, segments=timed)
        return results

    def transcribe_audio(
        self,
        audio_or_paths: AudioInputs,
        batch_size: int | str = 16,
        vad: bool = True,
        chunk_size: float = 30,
        language: str | Sequence[str | None] | None = None,
        task: str | None = None,
        vad_segments: Sequence[Sequence[dict]] | None = None,
        initial_prompt: str | Sequence[str | None] | None = None,
        on_error: str = "raise",
        sample_rate: int = SAMPLE_RATE,
        vad_options: VadOptions | None = None,
        **options: Any,
    ) -> list[dict | Exception]:
        """Transcribe whole recordings (files, or mono float arrays at `sample_rate` Hz; any length), many at once.

        Speech found by Silero VAD (or given as `vad_segments`, one list of {"start", "end"}
        seconds per input; or, with `vad=False`, the whole input) is cut into windows of at most
        `chunk_size` seconds; the windows of all inputs are decoded together in batches of
        `batch_size` segments ("auto": sized from free memory). `language` and `initial_prompt`
        (which prompts every window) may be one value or one per input; `vad_options` sets the VAD's
        thresholds. Returns, in input order, whisperX-style dicts: {"segments": [{"start", "end",
        "text", "avg_logprob", "no_speech_prob"}], "language": code}; with `word_timestamps=True` each
        segment also has "words" [{"word", "start", "end", "score"}] and the dict a flat
        "word_segments" list, on the input's timeline. `mode="sequential"` runs openai-whisper's own
        long-form algorithm instead (see `transcribe_audio_iter`). `options` are `transcribe_audio_iter`'s
        other options: `options=DecodingOptions(...)` and decoding options by name (temperature,
        beam_size, ...), word timestamps, the sequential mode's. `task` (None: the options') overrides.

        on_error="raise": missing or unreadable files are found before any decoding; an input that
        fails later raises after every input before it is transcribed, with the results so far (None
        where not done) as the exception's `partial_results`. on_error="yield": a failed input's
        place holds its exception and the others are transcribed.
        """
        inputs = as_list(audio_or_paths, "audio_or_paths")
        results: list[dict | Exception | None] = [None] * len(inputs)
        try:
            for i, result in self.transcribe_audio_iter(
                inputs,
                batch_size,
                vad,
                chunk_size,
                language,
                task,
                vad_segments,
                initial_prompt,
                on_error=on_error,
                sample_rate=sample_rate,
                vad_options=vad_options,
                **options,
            ):
                results[i] = result
        except Exception as e:
            e.partial_results = results
            raise
        return results

    @_serialized
    def transcribe_audio_iter(
        self,
        audio_or_paths: AudioInputs,
        batch_size: int | str = 16,
        vad: bool = True,
        chunk_size: float = 30,
        language: str | Sequence[str | None] | None = None,
        task: str | None = None,
        vad_segments: Sequence[Sequence[dict]] | None = None,
        initial_prompt: str | Sequence[str | None] | None = None,
        progress: Callable[[float], None] | None = None,
        on_error: str = "raise",
        sample_rate: int = SAMPLE_RATE,
        vad_options: VadOptions | None = None,
        word_timestamps: bool = False,
        prepend_punctuations: str = WordOptions.prepend_punctuations,
        append_punctuations: str = WordOptions.append_punctuations,
        mode: str = "vad",
        pack_short_inputs: bool = False,
        condition_on_previous_text: bool = SequentialOptions.condition_on_previous_text,
        clip_timestamps: str | Sequence[float] = SequentialOptions.clip_timestamps,
        carry_initial_prompt: bool = SequentialOptions.carry_initial_prompt,
        hallucination_silence_threshold: float | None = SequentialOptions.hallucination_silence_threshold,
        options: DecodingOptions | None = None,
        **overrides: Any,
    ) -> Iterator[tuple[int, dict | Exception]]:
        """`transcribe_audio`, yielding (input index, result) as each input completes.

        Inputs are read, VAD-ed and decoded in groups of about GROUP_SECONDS of audio, so memory
        does not grow with their number; an input longer than STREAM_SECONDS is read, VAD-ed and decoded
        a piece at a time, so memory does not grow with its length either. `pack_short_inputs=True` decodes
        the speech of short inputs (≤ PACK_SECONDS, of one language and prompt) in shared windows: faster on
        many short files, but an input's text may then depend on its neighbours (docs/reliability.md).
        `progress` is called with seconds of audio done. With
        on_error="yield", an input that cannot be read yields its exception instead of stopping
        the others; with "raise", missing files raise before any decoding, and an input that fails
        later raises once the inputs before it are yielded.

        `mode="sequential"` runs openai-whisper's own long-form algorithm on each input (30 s windows
        that follow the last timestamp, prompted by the text before them: `condition_on_previous_text`,
        `clip_timestamps`, `carry_initial_prompt`, `hallucination_silence_threshold` (with word timestamps)),
        one window of every input per batch; VAD and `chunk_size` do not apply.
        """
        checks.choice("on_error", on_error, ("raise", "yield"))
        checks.number("chunk_size", chunk_size, low=0, high=30, low_open=True)
        checks.flag("vad", vad)
        check_sample_rate(sample_rate)
        inputs = as_list(audio_or_paths, "audio_or_paths")
        if on_error == "raise":
            for i, x in enumerate(inputs):
                precheck(x, f"input {i}")
        if vad_segments is not None:
            if len(vad_segments) != len(inputs):
                raise ValueError(f"vad_segments has {len(vad_segments)} entries for {len(inputs)} inputs")
            vad_segments = [given_regions(given, f"vad_segments[{i}]") for i, given in enumerate(vad_segments)]
        decoding = self._options(options, **overrides, **({} if task is None else {"task": task}))
        batch_size = self._batch_size(batch_size, decoding.group)
        languages = [self._language(lang) for lang in per_input(language, len(inputs), "language", "inputs")]
        prompts = [self._prompt(p) for p in per_input(initial_prompt, len(inputs), "initial_prompt", "inputs")]
        checks.flag("pack_short_inputs", pack_short_inputs)
        packing = pack_short_inputs and mode == "vad"
        words = (  # packed inputs are told apart by their words
            WordAligner(
                self.model, self.tokenizer, decoding.task, WordOptions(prepend_punctuations, append_punctuations)
            )
            if word_timestamps or packing
            else None
        )
        sequential = sequential_options(
            mode,
            vad_segments,
            condition_on_previous_text,
            clip_timestamps,
            carry_initial_prompt,
            hallucination_silence_threshold,
        )
        vad_options = vad_options or VadOptions()
        if sequential is not None:
            transcriber = SequentialTranscriber(self.model, self.tokenizer, decoding, sequential, words)
            job = SequentialJob(transcriber, languages, prompts, batch_size, progress, word_timestamps)
        else:
            keep_cross_kv = words is not None and _reuse_cross_kv()
            engine = Engine(self.model, self.tokenizer, decoding, batch_size, keep_cross_kv=keep_cross_kv)
            pad = vad_options.speech_pad_ms / 1000 if vad and vad_segments is None else 0.0  # given: as they are
            job = LongFormJob(WindowDecoder(engine, languages, prompts, progress, words, pad), chunk_size, vad_options)
        if packing:
            flush = Packer(job, languages, prompts, vad_options, self.tokenizer.multilingual).run
        else:
            flush = job.run
        streamed = job if mode == "vad" and vad and vad_segments is None else None
        results = transcribe_groups(inputs, flush, vad_segments, vad, on_error, sample_rate, streamed)
        if packing and not word_timestamps:
            results = ((i, r if isinstance(r, Exception) else without_words(r)) for i, r in results)
        yield from results

    def _language(self, language: str | None) -> str | None:
        """A language code this model knows (None: detect), or a clear error."""
        if language is None:
            return None
        if not isinstance(language, str):
            raise ValueError(f"language must be a language code or name, or None (or a list of them), not {language!r}")
        code = language_code(language)
        if not self.tokenizer.multilingual and code != "en":
            raise ValueError(f"this model is English-only; language must be None or 'en', not {language!r}")
        if self.tokenizer.multilingual:
            self.tokenizer.language_token(code)  # raises for a language outside the vocabulary
        return code

    def _prompt(self, text: str | None) -> tuple[int, ...]:
        """An initial prompt's tokens, as openai-whisper encodes it (a leading space)."""
        if text is not None and not isinstance(text, str):
            raise ValueError(f"initial_prompt must be a string or None (or a list of them), not {text!r}")
        return tuple(self.tokenizer.encode(" " + text.strip())) if text else ()

    def _options(self, options: DecodingOptions | None = None, **overrides: Any) -> DecodingOptions:
        """`options` with `overrides` by name, checked against this model before any work."""
        return DecodingOptions.of(options, **overrides).validate(self.tokenizer, self.model.dims.n_vocab)

    def _batch_size(self, batch_size: int | str, rows_per_segment: int = 1) -> int:
        if batch_size == "auto":
            return max(1, auto_batch_size(self.model) // rows_per_segment)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer or 'auto', not {batch_size!r}")
        return batch_size


def _reuse_cross_kv() -> bool:
    """Word timing reuses the decoder's audio K/V on the CPU (where computing them again costs ~3%
    of a batch); a GPU recomputes them in no time and keeps the memory."""
    return mx.default_device() == mx.cpu


def auto_batch_size(model: Whisper, limit: int | None = None, share: float = 0.5) -> int:
    """Rows whose caches and activations fit in `share` of the memory left (free RAM, a CUDA GPU's free
    memory, a Metal GPU's working set), at most `limit` (default: 128 on a GPU, where larger batches keep
    gaining; 64 on the CPU). A batch's peak is its caches plus one encoder chunk (a finished batch is
    freed before the next one's prefill)."""
    if limit is None:
        limit = 64 if mx.default_device() == mx.cpu else 128
    d = model.dims
    itemsize = model.dtype.size
    cross = d.n_audio_ctx * d.n_text_state * (1 if model.decoder.absorbed else 2 * d.n_text_layer)
    if model.decoder.kv_bits == 8:  # int8, and a scale per vector of n_text_state / n_text_head
        cross = cross // itemsize + cross * d.n_text_head // d.n_text_state
    per_row = itemsize * (
        cross  # cross-attention K/V (absorbed: the audio features, once)
        + 2 * d.n_text_layer * d.n_text_ctx * d.n_text_state  # self-attention K/V
        + 8 * d.n_audio_ctx * d.n_audio_state
    )  # encoder output and activations
    info = mx.device_info()  # CUDA: the GPU's free memory; Metal: its recommended working set
    free = info.get("free_memory") or info.get("max_recommended_working_set_size") or info.get("memory_size")
    if not free:  # MLX reports no memory size for the CPU: use the free RAM
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return int(max(1, min(limit, share * free // per_row)))
