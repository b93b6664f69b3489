"""openai-whisper's long-form `transcribe`, each file on its own, the windows of many files decoded together.

A file is a stream of 30 s windows over its log-mel (computed over the whole file, as openai-whisper
computes it): each window starts where the last timestamp of the previous one left off (its
`seek`), is prompted by the text before it, falls back to hotter temperatures, is skipped when
silent, and may be cut by `clip_timestamps`. A stream's next window depends on its previous one,
so the batch holds one window per file: a folder of files runs at batch speed, one file at
batch-1 speed. Decisions follow openai-whisper's `transcribe` step for step, so that greedy output
is token-identical to it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import mlx.core as mx
import numpy as np

from .audio import HOP_LENGTH, N_FRAMES, SAMPLE_RATE, TIME_PRECISION, file_log_mel
from .engine import Engine
from .model import Whisper
from .options import DecodingOptions
from .prefill import Item, detect_languages, item_seed
from .results import DecodingResult, Segment
from .tokenizer import Tokenizer
from .words import WordAligner, WordJob

FRAMES_PER_SECOND = SAMPLE_RATE // HOP_LENGTH
INPUT_STRIDE = 2  # mel frames per audio position (and timestamp step)


@dataclass(frozen=True)
class SequentialOptions:
    """openai-whisper's `transcribe` options that only make sense window after window."""

    condition_on_previous_text: bool = True
    clip_timestamps: str | Sequence[float] = "0"
    carry_initial_prompt: bool = False  # the initial prompt leads every window's prompt
    hallucination_silence_threshold: float | None = None  # with word timestamps: skip silences this long
    # (seconds) around a window's likely hallucinations

    def __post_init__(self) -> None:
        t = self.hallucination_silence_threshold
        if t is not None and not (isinstance(t, (int, float)) and t >= 0):
            raise ValueError(f"hallucination_silence_threshold must be None or seconds >= 0, not {t!r}")

    def clips(self, content_frames: int) -> list[tuple[int, int]]:
        """(start, end) mel frames to transcribe: pairs of `clip_timestamps` seconds, the last end the file's."""
        stamps = self.clip_timestamps
        if isinstance(stamps, str):
            try:
                stamps = [float(t) for t in stamps.split(",")] if stamps.strip() else []
            except ValueError as e:
                raise ValueError(
                    f"clip_timestamps must be comma-separated seconds, not {self.clip_timestamps!r}"
                ) from e
        points = [round(float(t) * FRAMES_PER_SECOND) for t in stamps] or [0]
        if any(p < 0 for p in points):
            raise ValueError(f"clip_timestamps must not be negative, not {self.clip_timestamps!r}")
        if len(points) % 2:
            points.append(content_frames)
        return list(zip(points[::2], points[1::2]))


@dataclass
class _Stream:
    """One recording as openai-whisper walks it: its log-mel, where it has got to, what it said."""

    key: object
    mel: mx.array  # (frames of the file and 30 s of padding, n_mels)
    content_frames: int
    clips: list[tuple[int, int]]
    all_tokens: list[int]
    language: str | None
    clip: int = 0
    seek: int = 0
    prompt_reset_since: int = 0
    last_speech: float = 0.0
    segments: list[dict] = field(default_factory=list)
    initial_prompt_length: int = field(init=False)  # tokens of all_tokens that are the initial prompt

    def __post_init__(self) -> None:
        self.initial_prompt_length = len(self.all_tokens)
        self.seek = self.clips[0][0] if self.clips else 0

    def next_window(self) -> tuple[int, int] | None:
        """(seek, frames) of the next window, or None when the clips are done."""
        while self.clip < len(self.clips):
            start, end = self.clips[self.clip]
            self.seek = max(self.seek, start)
            if self.seek < end:
                return self.seek, min(N_FRAMES, self.content_frames - self.seek, end - self.seek)
            self.clip += 1
            if self.clip < len(self.clips):
                self.seek = self.clips[self.clip][0]
        return None

    def window_mel(self, seek: int, size: int) -> mx.array:
        """The window's frames, zero-padded (in the log-mel domain) to 30 s, as openai-whisper pads them."""
        part = self.mel[seek : seek + size]
        return mx.pad(part, [(0, N_FRAMES - size), (0, 0)]) if size < N_FRAMES else part

    def prompt(self, carry_initial: bool, n_text_ctx: int) -> tuple[int, ...]:
        """The window's prompt: the text since the last reset, after the initial prompt when it is carried."""
        if not carry_initial:
            return tuple(self.all_tokens[self.prompt_reset_since :])
        n = self.initial_prompt_length
        room = n_text_ctx // 2 - 1 - n  # openai-whisper's slice, kept as it is (0 keeps all)
        return tuple(self.all_tokens[:n] + self.all_tokens[max(n, self.prompt_reset_since) :][-room:])


def cut_window(
    tokens: Sequence[int], tokenizer: Tokenizer, seek: int, size: int
) -> tuple[list[tuple[float, float, list[int]]], int, bool]:
    """openai-whisper's segments of one window ((start, end, tokens) in file seconds), where the
    next window starts, and whether the window ended on a single timestamp (nothing left unsaid)."""
    tb = tokenizer.timestamp_begin
    offset = seek * HOP_LENGTH / SAMPLE_RATE
    is_ts = [t >= tb for t in tokens]
    single_ending = is_ts[-2:] == [False, True]
    cuts = [i + 1 for i in range(len(tokens) - 1) if is_ts[i] and is_ts[i + 1]]
    if not cuts:
        stamps = [t for t in tokens if t >= tb]
        duration = size * HOP_LENGTH / SAMPLE_RATE
        if stamps and stamps[-1] != tb:
            duration = (stamps[-1] - tb) * TIME_PRECISION
        return [(offset, offset + duration, list(tokens))], seek + size, single_ending
    if single_ending:
        cuts.append(len(tokens))
    segments, last = [], 0
    for cut in cuts:
        part = list(tokens[last:cut])
        segments.append((offset + (part[0] - tb) * TIME_PRECISION, offset + (part[-1] - tb) * TIME_PRECISION, part))
        last = cut
    next_seek = seek + size if single_ending else seek + (tokens[last - 1] - tb) * INPUT_STRIDE
    return segments, next_seek, single_ending


class SequentialTranscriber:
    """Runs openai-whisper's `transcribe` over many recordings at once, one window of each per batch."""

    ENCODE_BATCH = 8

    def __init__(
        self,
        model: Whisper,
        tokenizer: Tokenizer,
        decoding: DecodingOptions,
        options: SequentialOptions = SequentialOptions(),
        words: WordAligner | None = None,
    ):
        self.model, self.tokenizer, self.decoding = model, tokenizer, decoding
        self.options, self.words = options, words

    def run(
        self,
        audios: dict[object, np.ndarray],
        languages: dict[object, str | None],
        prompts: dict[object, tuple[int, ...]],
        batch_size: int,
    ) -> Iterator[tuple[object, dict]]:
        """Yield (key, openai-whisper's result dict: text, segments, language) as each recording ends;
        each recording has its language (None: detected from its first 30 s) and initial prompt tokens."""
        streams = []
        for key, audio in audios.items():
            mel = file_log_mel(audio, self.model.dims.n_mels)
            frames = mel.shape[0] - N_FRAMES
            streams.append(_Stream(key, mel, frames, self.options.clips(frames), list(prompts[key]), languages[key]))
        self._detect([s for s in streams if s.language is None])
        while streams:
            windows = []
            for s in streams:
                window = s.next_window()
                if window is None:
                    yield s.key, self._result(s)
                else:
                    windows.append((s, *window))
            streams = [s for s, _, _ in windows]
            for start in range(0, len(windows), batch_size):
                self._step(windows[start : start + batch_size])

    def _detect(self, streams: list[_Stream]) -> None:
        """Each file's language from its first 30 s, as openai-whisper detects it once per file."""
        if not self.tokenizer.multilingual:
            for s in streams:
                s.language = "en"
            return
        for start in range(0, len(streams), self.ENCODE_BATCH):
            chunk = streams[start : start + self.ENCODE_BATCH]
            features = self.model.embed_audio(mx.stack([s.mel[:N_FRAMES] for s in chunk]))
            for s, (code, _) in zip(
                chunk, detect_languages(self.model, self.tokenizer, self.model.decoder.cross_kv(features))
            ):
                s.language = code

    def _step(self, windows: list[tuple[_Stream, int, int]]) -> None:
        """Decode one window of each stream together, then move each stream on."""
        features: list[mx.array] = []
        for start in range(0, len(windows), self.ENCODE_BATCH):
            chunk = windows[start : start + self.ENCODE_BATCH]
            encoded = self.model.embed_audio(mx.stack([s.window_mel(seek, size) for s, seek, size in chunk]))
            mx.eval(encoded)
            features += [encoded[k : k + 1] for k in range(len(chunk))]
        items = [
            Item(
                key=i,
                features=f,
                prompt=s.prompt(self.options.carry_initial_prompt, self.model.dims.n_text_ctx),
                language=s.language,
                duration=size * HOP_LENGTH / SAMPLE_RATE,
                seed=item_seed(s.key, seek),
            )
            for i, ((s, seek, size), f) in enumerate(zip(windows, features))
        ]
        results: dict[int, DecodingResult] = {}
        for item, result in Engine(self.model, self.tokenizer, self.decoding, len(items)).run(items):
            results[item.key] = result
        cut = []
        for (s, seek, size), f, i in zip(windows, features, range(len(windows))):
            result = results[i]
            if self._silent(result):
                s.seek = seek + size
                continue
            segments, next_seek, single_ending = cut_window(result.tokens, self.tokenizer, seek, size)
            cut.append((s, seek, size, f, result, segments, next_seek, single_ending))
        timed = self._time_words(cut) if self.words is not None else [None] * len(cut)
        for (s, seek, size, _, result, segments, next_seek, single_ending), words in zip(cut, timed):
            self._advance(s, seek, size, result, segments, next_seek, single_ending, words)

    def _silent(self, result: DecodingResult) -> bool:
        f = self.decoding
        if f.no_speech_threshold is None or result.no_speech_prob <= f.no_speech_threshold:
            return False
        return not (f.logprob_threshold is not None and result.avg_logprob > f.logprob_threshold)

    def _time_words(self, cut: list) -> list[tuple[Segment, ...]]:
        """Words for each window's segments, all windows in one alignment pass."""
        jobs = []
        for s, seek, size, features, _, segments, _, _ in cut:
            window = tuple(Segment(a, b, "", tuple(t)) for a, b, t in segments)
            jobs.append(
                WordJob(features, window, s.language, size * HOP_LENGTH, seek * HOP_LENGTH / SAMPLE_RATE, s.last_speech)
            )
        return self.words(jobs)

    def _advance(
        self,
        s: _Stream,
        seek: int,
        size: int,
        result: DecodingResult,
        segments: list,
        next_seek: int,
        single_ending: bool,
        timed: tuple[Segment, ...] | None,
    ) -> None:
        """Record a window's segments and move the stream to its next window."""
        tok = self.tokenizer
        offset = seek * HOP_LENGTH / SAMPLE_RATE
        s.seek = next_seek
        rows = []
        for k, (start, end, tokens) in enumerate(segments):
            row = {
                "seek": seek,
                "start": start,
                "end": end,
                "text": tok.decode([t for t in tokens if t < tok.eot]),
                "tokens": tokens,
                "temperature": result.temperature,
                "avg_logprob": result.avg_logprob,
                "compression_ratio": result.compression_ratio,
                "no_speech_prob": result.no_speech_prob,
            }
            if timed is not None:
                row.update(
                    start=timed[k].start,
                    end=timed[k].end,
                    words=[
                        {"word": w.word, "start": w.start, "end": w.end, "probability": w.probability}
                        for w in timed[k].words
                    ],
                )
            rows.append(row)
        if timed is not None:
            last_word_end = _last_end(rows)
            if not single_ending and last_word_end is not None and last_word_end > offset:
                s.seek = round(last_word_end * FRAMES_PER_SECOND)
            threshold = self.options.hallucination_silence_threshold
            if threshold is not None and not self._skip_hallucinations(s, seek, size, rows, single_ending, threshold):
                return  # the window began with a likely hallucination after a silence: decoded again after it
            last_word_end = _last_end(rows)
            if last_word_end is not None:
                s.last_speech = last_word_end
        for row in rows:
            if row["start"] == row["end"] or not row["text"].strip():
                row.update(text="", tokens=[], **({"words": []} if timed is not None else {}))
            s.segments.append({"id": len(s.segments), **row})
            s.all_tokens.extend(row["tokens"])
        if not self.options.condition_on_previous_text or result.temperature > 0.5:
            s.prompt_reset_since = len(s.all_tokens)

    def _skip_hallucinations(
        self, s: _Stream, seek: int, size: int, rows: list[dict], single_ending: bool, threshold: float
    ) -> bool:
        """openai-whisper's `hallucination_silence_threshold`: move the stream's seek past long silences
        around likely hallucinations and drop the rows from the first hallucination surrounded by silence
        (in place). False when the window's first worded row is one after a silence: nothing is kept."""
        offset = seek * HOP_LENGTH / SAMPLE_RATE
        window_end = (seek + N_FRAMES) * HOP_LENGTH / SAMPLE_RATE
        if not single_ending:
            last_word_end = _last_end(rows)
            if last_word_end is not None and last_word_end > offset:
                s.seek = (
                    round(last_word_end * FRAMES_PER_SECOND) if window_end - last_word_end > threshold else seek + size
                )
        first = next((r for r in rows if r["words"]), None)
        if first is not None and _anomalous(first) and first["start"] - offset > threshold:
            s.seek = seek + round((first["start"] - offset) * FRAMES_PER_SECOND)
            return False
        previous_end = s.last_speech
        for k, row in enumerate(rows):
            if not row["words"]:
                continue
            if _anomalous(row):
                following = next((r for r in rows[k + 1 :] if r["words"]), None)
                next_start = (
                    following["words"][0]["start"]
                    if following is not None
                    else offset + size * HOP_LENGTH / SAMPLE_RATE
                )
                silence_before = (
                    row["start"] - previous_end > threshold or row["start"] < threshold or row["start"] - offset < 2.0
                )
                silence_after = (
                    next_start - row["end"] > threshold or _anomalous(following) or window_end - row["end"] < 2.0
                )
                if silence_before and silence_after:
                    s.seek = round(max(offset + 1, row["start"]) * FRAMES_PER_SECOND)
                    if (s.content_frames * HOP_LENGTH / SAMPLE_RATE) - row["end"] < threshold:
                        s.seek = s.content_frames
                    del rows[k:]
                    break
            previous_end = row["end"]
        return True

    def _result(self, s: _Stream) -> dict:
        text = self.tokenizer.decode(s.all_tokens[s.initial_prompt_length :])
        return {"text": text, "segments": s.segments, "language": s.language}


PUNCTUATION = "\"'“¿([{-\"'.。,，!！?？:：”)]}、"  # openai-whisper's: words equal to (or inside) it do not count


def _last_end(rows: list[dict]) -> float | None:
    """Where the last word of the rows ends (the last row's end if none has words; None if no rows)."""
    return next((w["end"] for r in reversed(rows) for w in reversed(r["words"])), rows[-1]["end"] if rows else None)


def _anomalous(row: dict | None) -> bool:
    """openai-whisper's guess that a row is a hallucination: its first 8 words are too short, long or improbable."""
    if row is None or not row["words"]:
        return False
    words = [w for w in row["words"] if w["word"] not in PUNCTUATION][:8]
    score = 0.0
    for w in words:  # added term by term, in openai-whisper's order, for the same rounding
        duration = w["end"] - w["start"]
        if w["probability"] < 0.15:
            score += 1.0
        if duration < 0.133:
            score += (0.133 - duration) * 15
        if duration > 2.0:
            score += duration - 2.0
    return score >= 3 or score + 0.01 >= len(words)


def as_segments(result: dict, words: bool) -> dict:
    """An openai-whisper result in the form `transcribe_audio` returns (whisperX's keys, empty segments dropped)."""
    segments = []
    for r in result["segments"]:
        if not r["text"].strip():
            continue
        segment = {
            "start": round(r["start"], 3),
            "end": round(r["end"], 3),
            "text": r["text"].strip(),
            "avg_logprob": r["avg_logprob"],
            "no_speech_prob": r["no_speech_prob"],
        }
        if words:
            segment["words"] = [
                {"word": w["word"].strip(), "start": w["start"], "end": w["end"], "score": round(w["probability"], 3)}
                for w in r["words"]
            ]
        segments.append(segment)
    out = {"segments": segments, "language": result["language"]}
    if words:
        out["word_segments"] = [w for s in segments for w in s["words"]]
    return out
