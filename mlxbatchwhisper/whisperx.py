"""A drop-in for whisperX's transcription API: `load_model(...)`, `pipeline.transcribe(audio, batch_size=16)`.

    import mlxbatchwhisper.whisperx as whisperx       # was: import whisperx
    model = whisperx.load_model("base", "cpu", compute_type="float32")
    result = model.transcribe(whisperx.load_audio("talk.mp3"), batch_size=16)

`result` is whisperX's `TranscriptionResult`: {"segments": [{"text", "start", "end", "avg_logprob"}],
"language": code}, so whisperX's `align`, `assign_word_speakers` and writers take it as they take their own.
With whisperX's defaults (`without_timestamps=True`) every segment is one VAD window, as in whisperX.

Differences: decoding runs in MLX on its default device (the GPU where MLX has one), whatever `device`
says; Silero VAD always finds the speech (whisperX's `vad_method` "pyannote" and "silero" both mean it);
the language is detected per window, not once from the first 30 s, and the result names the one spoken
longest. Arguments of whisperX's that have no meaning here are accepted and ignored (see `load_model`);
options that would change the output but are not implemented raise `NotImplementedError`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import numpy as np

from . import audio as _audio
from .pipeline import BatchedWhisper
from .vad import VadOptions

SAMPLE_RATE = _audio.SAMPLE_RATE
COMPUTE_TYPES = {
    "default": None,  # float16 on a GPU, float32 on the CPU
    "float16": "float16",
    "float32": "float32",
    "bfloat16": "bfloat16",
    # int8 variants: the weights' precision is the checkpoint's (quantize with mlxbatchwhisper-convert -q)
    "int8": "float32",
    "int8_float32": "float32",
    "int8_float16": "float16",
    "int8_bfloat16": "bfloat16",
}
VAD_METHODS = ("pyannote", "silero")


@dataclass(frozen=True)
class AsrOptions:
    """whisperX's `asr_options` (faster-whisper's names and whisperX's defaults).

    Accepted without effect: `prompt_reset_on_temperature` (only with condition_on_previous_text) and
    `multilingual` (the checkpoint says). `word_timestamps=True` times words with Whisper's own
    alignment heads (openai-whisper's method; whisperX's `align` still works on the result). The rest
    must keep their defaults where `_unsupported` says so.
    """

    beam_size: int = 5
    best_of: int = 5
    patience: float = 1.0
    length_penalty: float = 1.0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    temperatures: float | Sequence[float] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    compression_ratio_threshold: float | None = 2.4
    log_prob_threshold: float | None = -1.0
    no_speech_threshold: float | None = 0.6
    condition_on_previous_text: bool = False
    prompt_reset_on_temperature: float = 0.5
    initial_prompt: str | None = None
    prefix: str | None = None
    suppress_blank: bool = True
    suppress_tokens: Sequence[int] | None = (-1,)
    without_timestamps: bool = True
    max_initial_timestamp: float = 0.0
    word_timestamps: bool = False
    prepend_punctuations: str = "\"'“¿([{-"
    append_punctuations: str = "\"'.。,，!！?？:：”)]}、"
    multilingual: bool | None = None
    suppress_numerals: bool = False
    max_new_tokens: int | None = None
    clip_timestamps: Any = None
    hallucination_silence_threshold: float | None = None
    hotwords: str | None = None

    @classmethod
    def from_dict(cls, options: dict | None) -> AsrOptions:
        """Options from whisperX's `asr_options` dict, unknown names refused."""
        options = dict(options or {})
        unknown = sorted(set(options) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"asr_options: unknown option(s) {', '.join(unknown)}")
        return cls(**options)

    def __post_init__(self) -> None:
        if isinstance(self.beam_size, bool) or not isinstance(self.beam_size, int) or self.beam_size < 1:
            raise ValueError(f"asr_options beam_size must be a positive integer, not {self.beam_size!r}")
        for name, default, why in _UNSUPPORTED:
            value = getattr(self, name)
            if value != default:
                raise NotImplementedError(
                    f"asr_options {name}={value!r} is not supported ({why}); leave it at {default!r}"
                )

    def transcribe_options(self, numeral_tokens: Sequence[int] = ()) -> dict[str, Any]:
        """These options as `BatchedWhisper.transcribe_audio` keyword options.

        whisperX's beam_size 1 is greedy decoding; its length_penalty 1 (the log-probability divided by
        the length) is openai-whisper's default, other values are openai-whisper's length penalty.
        `numeral_tokens` are suppressed too (the tokenizer's numeral_symbol_tokens, for suppress_numerals).
        """
        beam = self.beam_size if self.beam_size > 1 else None
        temperatures = (self.temperatures,) if isinstance(self.temperatures, (int, float)) else self.temperatures
        return {
            "temperature": tuple(temperatures),
            "beam_size": beam,
            "best_of": self.best_of,
            "patience": self.patience if beam else None,
            "length_penalty": None if self.length_penalty == 1 else self.length_penalty,
            "compression_ratio_threshold": self.compression_ratio_threshold,
            "logprob_threshold": self.log_prob_threshold,
            "no_speech_threshold": self.no_speech_threshold,
            "suppress_tokens": [*(self.suppress_tokens or ()), *numeral_tokens],
            "suppress_blank": self.suppress_blank,
            "without_timestamps": self.without_timestamps,
            "max_initial_timestamp": self.max_initial_timestamp,
            "sample_len": self.max_new_tokens,
        }

    def word_options(self) -> dict[str, Any]:
        """The word-timestamp options, as `BatchedWhisper.transcribe_audio` keyword options."""
        return {
            "word_timestamps": self.word_timestamps,
            "prepend_punctuations": self.prepend_punctuations,
            "append_punctuations": self.append_punctuations,
        }


# (option, the only value supported, why)
_UNSUPPORTED = (
    ("repetition_penalty", 1.0, "openai-whisper's decoding has no repetition penalty"),
    ("no_repeat_ngram_size", 0, "openai-whisper's decoding has no n-gram blocking"),
    ("condition_on_previous_text", False, "windows are decoded together in batches, not one after another"),
    ("prefix", None, "not implemented"),
    ("clip_timestamps", None, "the VAD chooses what is decoded"),
    ("hallucination_silence_threshold", None, "needs word timestamps"),
    ("hotwords", None, "not implemented; use initial_prompt"),
)


def vad_options_from_dict(options: dict | None) -> tuple[VadOptions, float]:
    """whisperX's `vad_options` (vad_onset, vad_offset, chunk_size; whisperX's defaults) as our VAD's
    options and the window length: onset opens speech, offset closes it, and speech longer than
    chunk_size seconds is split."""
    merged = {"vad_onset": 0.5, "vad_offset": 0.363, "chunk_size": 30, **(options or {})}
    unknown = sorted(set(merged) - {"vad_onset", "vad_offset", "chunk_size"})
    if unknown:
        raise ValueError(
            f"vad_options: unknown option(s) {', '.join(unknown)} (known: vad_onset, vad_offset, chunk_size)"
        )
    chunk = merged["chunk_size"]
    if isinstance(chunk, bool) or not isinstance(chunk, (int, float)) or not 0 < chunk <= 30:
        raise ValueError(f"vad_options chunk_size must be in (0, 30] seconds, not {chunk!r}")
    try:
        vad = VadOptions(merged["vad_onset"], merged["vad_offset"], float(chunk))
    except ValueError as e:
        raise ValueError(f"vad_options: {e} (vad_onset is the threshold, vad_offset the neg_threshold)") from e
    return vad, float(chunk)


class WhisperXPipeline:
    """What whisperX's `load_model` returns: a model, its options and VAD settings, and `transcribe`."""

    def __init__(
        self,
        model: BatchedWhisper,
        options: AsrOptions,
        vad_options: VadOptions,
        chunk_size: float,
        language: str | None = None,
        task: str = "transcribe",
    ):
        self.model = model
        self.options = options
        self.vad_options = vad_options
        self.chunk_size = chunk_size
        self.preset_language = language
        self.task = task
        numerals = model.tokenizer.numeral_symbol_tokens if options.suppress_numerals else ()
        self._decoding = options.transcribe_options(numerals)
        try:  # bad values fail here, before any audio is read
            model._options(task=task, **self._decoding)
        except ValueError as e:
            raise ValueError(
                f"asr_options: {e} (named as in BatchedWhisper.transcribe_audio: max_new_tokens is "
                "sample_len, temperatures temperature, log_prob_threshold logprob_threshold)"
            ) from e

    def transcribe(
        self,
        audio: str | os.PathLike | np.ndarray,
        batch_size: int | None = None,
        num_workers: int = 0,
        language: str | None = None,
        task: str | None = None,
        chunk_size: float = 30,
        print_progress: bool = False,
        combined_progress: bool = False,
        verbose: bool = False,
    ) -> dict:
        """Transcribe one recording (a path or 16 kHz mono float32 samples) as whisperX does.

        `batch_size` windows are decoded together (None: 16); windows are at most `chunk_size` seconds (and
        the load_model vad_options' chunk_size). `print_progress` prints the share of audio done
        (halved with `combined_progress`, as whisperX leaves the second half to alignment); `verbose`
        prints each segment. `num_workers` is accepted and ignored (audio is not preprocessed in workers).
        """
        samples = load_audio(audio) if isinstance(audio, (str, os.PathLike)) else audio
        total = len(samples) / SAMPLE_RATE
        done = 0.0

        def progress(seconds: float) -> None:
            nonlocal done
            done += seconds
            share = 100 * min(done / total, 1.0) if total else 100.0
            print(f"Progress: {share / 2 if combined_progress else share:.2f}%...")

        language = language or self.preset_language
        ((_, result),) = self.model.transcribe_audio_iter(
            [samples],
            batch_size=16 if batch_size is None else batch_size,
            chunk_size=min(chunk_size, self.chunk_size),
            language=language,
            task=task or self.task,
            initial_prompt=self.options.initial_prompt,
            progress=progress if print_progress else None,
            vad_options=self.vad_options,
            **self._decoding,
            **self.options.word_options(),
        )
        segments = [_segment(s) for s in result["segments"]]
        if verbose:
            for s in segments:
                print(f"Transcript: [{s['start']} --> {s['end']}] {s['text']}")
        detected = result["language"] or (None if self.model.tokenizer.multilingual else "en")
        out = {"segments": segments, "language": detected}
        if "word_segments" in result:  # asr_options word_timestamps=True: words as whisperX.align gives them
            out["word_segments"] = result["word_segments"]
        return out


def _segment(s: dict) -> dict:
    """One of our segments as whisperX's SingleSegment (plus its words, where there are any)."""
    out = {"text": s["text"], "start": round(s["start"], 3), "end": round(s["end"], 3), "avg_logprob": s["avg_logprob"]}
    if "words" in s:
        out["words"] = s["words"]
    return out


def load_model(
    whisper_arch: str,
    device: str = "cpu",
    device_index: int = 0,
    compute_type: str = "default",
    asr_options: dict | None = None,
    language: str | None = None,
    vad_model: Any = None,
    vad_method: str | None = "pyannote",
    vad_options: dict | None = None,
    model: BatchedWhisper | None = None,
    task: str = "transcribe",
    download_root: str | None = None,
    local_files_only: bool = False,
    threads: int = 4,
    use_auth_token: str | bool | None = None,
) -> WhisperXPipeline:
    """whisperX's `load_model`: a checkpoint (any name, path or hub repo id `from_pretrained` reads) ready to
    `transcribe`.

    `compute_type` picks the float type (int8 variants their float part: quantization comes with the
    checkpoint); on the CPU it is always float32, which MLX computes fastest there. `asr_options` and
    `vad_options` take whisperX's names (see `AsrOptions`, `vad_options_from_dict`); `model` may be a
    loaded `BatchedWhisper` to share. Ignored: `device` and `device_index` (MLX uses its default device),
    `download_root`, `local_files_only` and `use_auth_token` (the Hugging Face hub's own settings and
    HF_HUB_OFFLINE apply), `threads`, and `vad_method` (Silero VAD in MLX either way).
    """
    if compute_type not in COMPUTE_TYPES:
        raise ValueError(f"compute_type must be one of {', '.join(COMPUTE_TYPES)}, not {compute_type!r}")
    if vad_model is not None:
        raise ValueError("vad_model: whisperX VAD models cannot run here; leave it None (Silero VAD in MLX is used)")
    if vad_method not in VAD_METHODS:
        raise ValueError(f"vad_method must be one of {', '.join(VAD_METHODS)}, not {vad_method!r}")
    if task not in ("transcribe", "translate"):
        raise ValueError(f"task must be 'transcribe' or 'translate', not {task!r}")
    options = AsrOptions.from_dict(asr_options)
    vad, chunk_size = vad_options_from_dict(vad_options)
    if model is None:
        on_cpu = mx.default_device() == mx.cpu
        dtype = "float32" if on_cpu else COMPUTE_TYPES[compute_type] or "float16"
        model = BatchedWhisper.from_pretrained(whisper_arch, dtype=dtype)
    elif not isinstance(model, BatchedWhisper):
        raise TypeError(f"model must be a BatchedWhisper (or None), not {type(model).__name__}")
    if str(whisper_arch).endswith(".en"):
        language = "en"
    if language is not None:
        language = model._language(language)
    return WhisperXPipeline(model, options, vad, chunk_size, language, task)


def load_audio(file: str | os.PathLike, sr: int = SAMPLE_RATE) -> np.ndarray:
    """whisperX's `load_audio`: any audio/video file as mono float32 samples at `sr` Hz."""
    return _audio.load_audio(file, sr)


__all__ = ["AsrOptions", "WhisperXPipeline", "load_audio", "load_model", "vad_options_from_dict"]
