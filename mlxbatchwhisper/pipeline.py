"""`BatchedWhisper`: the public face that wires audio, VAD, scheduling and decoding together."""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence

import mlx.core as mx
import numpy as np

from . import vad
from .audio import N_SAMPLES, SAMPLE_RATE, check_audio, load_audio
from .checkpoints import DEFAULT_MODEL, load_model
from .decoding import DecodingOptions, FallbackOptions, Item, decode_with_fallback
from .model import Whisper
from .results import DecodingResult, Segment
from .schedule import Window, frame_energy, plan_windows, remainder, to_file_time
from .tokenizer import Tokenizer, get_tokenizer, language_code


DEFAULT_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
MAX_CONTINUATIONS = 3  # rounds of decoding what Whisper left at the end of a window


class BatchedWhisper:
    """A Whisper model that decodes many segments as one batch."""

    def __init__(self, model: Whisper):
        self.model = model
        self.tokenizer: Tokenizer = get_tokenizer(model.is_multilingual, model.num_languages)

    @classmethod
    def from_pretrained(cls, path_or_repo: str | os.PathLike = DEFAULT_MODEL, dtype: str | mx.Dtype = "float32",
                        dequantize: bool | None = None) -> "BatchedWhisper":
        """Load any checkpoint `load_model` reads (a path, a model name, or a hub repo id)."""
        return cls(load_model(path_or_repo, dtype, dequantize))

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
        batch_size = self._batch_size(batch_size)
        if isinstance(segments, np.ndarray) and segments.ndim == 1:
            raise TypeError("segments must be a list of 1-D arrays; wrap a single segment in a list")
        audios = [check_audio(s, f"segments[{i}]", N_SAMPLES) for i, s in enumerate(segments)]
        for i, a in enumerate(audios):
            if len(a) == 0:
                raise ValueError(f"segments[{i}] is empty")
        languages = [self._language(lang) for lang in _per_segment(language, len(audios), "language")]
        prompts = _per_segment(initial_prompt, len(audios), "initial_prompt")
        items = [
            Item(key=i, audio=a, language=lang, duration=len(a) / SAMPLE_RATE,
                 prompt=tuple(self.tokenizer.encode(" " + p.strip())) if p else ())
            for i, (a, lang, p) in enumerate(zip(audios, languages, prompts))
        ]
        decoding, fallback, extra = _split_options(task, dict(
            beam_size=beam_size, patience=patience, length_penalty=length_penalty, suppress_tokens=suppress_tokens,
            suppress_blank=suppress_blank, without_timestamps=without_timestamps,
            max_initial_timestamp=max_initial_timestamp, sample_len=sample_len, temperature=temperature,
            compression_ratio_threshold=compression_ratio_threshold, logprob_threshold=logprob_threshold,
            no_speech_threshold=no_speech_threshold, best_of=best_of, seed=seed))
        results: list[DecodingResult | None] = [None] * len(items)
        order = sorted(range(len(items)), key=lambda i: -len(audios[i]))  # similar lengths decode together
        stream = (items[i] for i in order)
        for item, result in decode_with_fallback(self.model, self.tokenizer, stream, decoding, fallback, batch_size,
                                                 **extra):
            results[item.key] = result
        return results

    def transcribe_audio(self, audio_or_paths, batch_size: int | str = 16, vad: bool = True, chunk_size: float = 30,
                         language: str | None = None, task: str = "transcribe",
                         vad_segments: Sequence[Sequence[dict]] | None = None, **options) -> list[dict]:
        """Transcribe whole recordings (files or 16 kHz mono arrays, any length), many at once.

        Speech found by Silero VAD (or given as `vad_segments`, one list of {"start", "end"}
        per input; or, with `vad=False`, the whole input) is cut into windows of at most
        `chunk_size` seconds; the windows of all inputs are decoded together in batches of
        `batch_size` ("auto": sized from free memory). Returns, in input order, whisperX-style
        dicts: {"segments": [{"start", "end", "text", "avg_logprob", "no_speech_prob"}],
        "language": code}. `options` are `transcribe`'s decoding options.
        """
        inputs = _as_list(audio_or_paths)
        results: list[dict | None] = [None] * len(inputs)
        for i, result in self.transcribe_audio_iter(inputs, batch_size, vad, chunk_size, language, task,
                                                    vad_segments, **options):
            results[i] = result
        return results

    def transcribe_audio_iter(
        self, audio_or_paths, batch_size: int | str = 16, vad: bool = True, chunk_size: float = 30,
        language: str | None = None, task: str = "transcribe", vad_segments: Sequence[Sequence[dict]] | None = None,
        progress: Callable[[float], None] | None = None, on_error: str = "raise", **options,
    ) -> Iterator[tuple[int, dict | Exception]]:
        """`transcribe_audio`, yielding (input index, result) as each input completes.

        `progress` is called with seconds of audio done; with on_error="yield", an input that
        cannot be read yields its exception instead of stopping the others.
        """
        if on_error not in ("raise", "yield"):
            raise ValueError(f"on_error must be 'raise' or 'yield', not {on_error!r}")
        if not 0 < chunk_size <= 30:
            raise ValueError(f"chunk_size must be in (0, 30] seconds, not {chunk_size}")
        inputs = _as_list(audio_or_paths)
        if vad_segments is not None and len(vad_segments) != len(inputs):
            raise ValueError(f"vad_segments has {len(vad_segments)} entries for {len(inputs)} inputs")
        batch_size = self._batch_size(batch_size)
        language = self._language(language)
        audios, speech, scores = {}, [[] for _ in inputs], [None] * len(inputs)
        for i, x in enumerate(inputs):
            try:
                audios[i] = _load(x, f"input {i}")
                speech[i], scores[i] = self._speech(audios[i], vad, None if vad_segments is None else vad_segments[i])
            except (OSError, ValueError, TypeError) as e:
                if on_error == "raise":
                    raise
                audios.pop(i, None)
                yield i, e
        planned = [w for w in plan_windows(speech, chunk_size, scores) if w.source in audios]
        pending = Counter(w.source for w in planned)
        for i in sorted(set(audios) - set(pending)):  # nothing to decode (empty or no speech)
            if progress:
                progress(len(audios[i]) / SAMPLE_RATE)
            yield i, {"segments": [], "language": language}
        decoding, fallback, extra = _split_options(task, options)
        done: dict[int, list[tuple[Window, DecodingResult, list[Segment]]]] = defaultdict(list)
        reported: Counter = Counter()  # seconds passed to `progress`, per input
        windows = [(w, language) for w in planned]
        for round_ in range(MAX_CONTINUATIONS + 1):
            items = (Item(key=w, audio=audios[w.source][int(w.start * SAMPLE_RATE):int(w.end * SAMPLE_RATE)],
                          language=lang, duration=w.duration) for w, lang in windows)
            windows = []
            for item, result in decode_with_fallback(self.model, self.tokenizer, items, decoding, fallback,
                                                     batch_size, **extra):
                w: Window = item.key
                kept, rest = self._keep(w, result, decoding, allow_rest=round_ < MAX_CONTINUATIONS)
                done[w.source].append((w, result, kept))
                pending[w.source] -= 1
                if rest is not None:  # the remainder goes in the next round, in the parent's language
                    windows.append((rest, language or result.language))
                    pending[w.source] += 1
                if progress and round_ == 0:
                    progress(w.duration)
                    reported[w.source] += w.duration
                if pending[w.source] == 0:
                    if progress:
                        progress(len(audios[w.source]) / SAMPLE_RATE - reported.pop(w.source, 0.0))
                    yield w.source, _file_result(done.pop(w.source), language, fallback)
                    del audios[w.source]
            if not windows:
                break
            windows.sort(key=lambda x: -x[0].duration)

    def _keep(self, window: Window, result: DecodingResult, decoding: DecodingOptions, allow_rest: bool):
        """The segments to keep from a window, and the remainder to decode again (or None).

        As openai-whisper's transcribe does, trailing text without a closing timestamp is not
        kept but decoded again from where it starts, and so is speech after the last timestamp.
        """
        segments = list(result.segments)
        if decoding.without_timestamps or not allow_rest or not segments:
            return segments, None
        last = segments[-1]
        unclosed = last.tokens and last.tokens[-1] < self.tokenizer.timestamp_begin
        rest = remainder(window, last.start if unclosed else last.end)
        if rest is not None and unclosed:
            segments.pop()
        return segments, rest

    def _speech(self, audio: np.ndarray, use_vad: bool, given: Sequence[dict] | None):
        """Speech regions (seconds) of one input, and per-frame scores to cut long ones at."""
        if given is not None:
            return [(float(s["start"]), float(s["end"])) for s in given], frame_energy(audio)
        if not use_vad:
            return [(0.0, len(audio) / SAMPLE_RATE)], frame_energy(audio)
        regions, probs = vad.get_speech_timestamps(audio, return_probabilities=True)
        return [(r["start"], r["end"]) for r in regions], probs

    def _language(self, language: str | None) -> str | None:
        """A language code this model knows (None: detect), or a clear error."""
        if language is None:
            return None
        code = language_code(language)
        if not self.tokenizer.multilingual and code != "en":
            raise ValueError(f"this model is English-only; language must be None or 'en', not {language!r}")
        if self.tokenizer.multilingual:
            self.tokenizer.language_token(code)  # raises for a language outside the vocabulary
        return code

    def _batch_size(self, batch_size: int | str) -> int:
        if batch_size == "auto":
            return auto_batch_size(self.model)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer or 'auto', not {batch_size!r}")
        return batch_size


def _split_options(task: str, options: dict) -> tuple[DecodingOptions, FallbackOptions, dict]:
    """`transcribe`'s keyword options as decoding options, fallback options and the rest."""
    opts = dict(options)
    temperature = opts.pop("temperature", DEFAULT_TEMPERATURES)
    fallback = FallbackOptions(
        (temperature,) if isinstance(temperature, (int, float)) else tuple(temperature),
        opts.pop("compression_ratio_threshold", 2.4), opts.pop("logprob_threshold", -1.0),
        opts.pop("no_speech_threshold", 0.6))
    extra = {"best_of": opts.pop("best_of", 5), "seed": opts.pop("seed", 0)}
    return DecodingOptions(task=task, **opts), fallback, extra


def _file_result(windows: list[tuple[Window, DecodingResult, list[Segment]]], language: str | None,
                 fallback: FallbackOptions) -> dict:
    """One input's segments on its own timeline, in order; silent windows dropped as openai-whisper does."""
    segments, speech_by_language = [], Counter()
    for w, r, kept in sorted(windows, key=lambda x: x[0].start):
        silent = (fallback.no_speech_threshold is not None and r.no_speech_prob > fallback.no_speech_threshold
                  and (fallback.logprob_threshold is None or r.avg_logprob < fallback.logprob_threshold))
        if silent:
            continue
        speech_by_language[r.language] += w.duration
        for s in kept:
            start, end = to_file_time(w, s.start, s.end)
            segments.append({"start": start, "end": end, "text": s.text.strip(),
                             "avg_logprob": r.avg_logprob, "no_speech_prob": r.no_speech_prob})
    detected = speech_by_language.most_common(1)[0][0] if speech_by_language else None
    return {"segments": segments, "language": language or detected}


def auto_batch_size(model: Whisper, limit: int = 64, share: float = 0.25) -> int:
    """Rows whose caches and activations fit in `share` of the free memory (CPU RAM or GPU)."""
    d = model.dims
    itemsize = model.dtype.size
    per_row = itemsize * (2 * d.n_text_layer * d.n_audio_ctx * d.n_text_state  # cross-attention K/V
                          + 2 * d.n_text_layer * d.n_text_ctx * d.n_text_state  # self-attention K/V
                          + 8 * d.n_audio_ctx * d.n_audio_state)  # encoder output and activations
    info = mx.device_info()
    free = info.get("max_recommended_working_set_size") or info.get("memory_size")
    if not free:  # MLX reports no memory size for the CPU: use the free RAM
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return int(max(1, min(limit, share * free // per_row)))


def _as_list(audio_or_paths) -> list:
    if isinstance(audio_or_paths, (str, os.PathLike)) or (isinstance(audio_or_paths, np.ndarray) and audio_or_paths.ndim == 1):
        return [audio_or_paths]
    return list(audio_or_paths)


def _load(x, name: str) -> np.ndarray:
    """A file decoded to 16 kHz mono, or an array checked to be one."""
    if isinstance(x, (str, os.PathLike)):
        return load_audio(x)
    return check_audio(x, name)


def _per_segment(value, n: int, name: str) -> list:
    if value is None or isinstance(value, str):
        return [value] * n
    values = list(value)
    if len(values) != n:
        raise ValueError(f"{name} has {len(values)} entries for {n} segments")
    return values
