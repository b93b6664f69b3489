"""Result building: a segment's chosen tokens → its text, timestamped segments and scores."""

from __future__ import annotations

from .audio import TIME_PRECISION
from .results import DecodingResult, Segment, compression_ratio
from .tokenizer import Tokenizer


def build_result(
    tokens: tuple[int, ...],
    sum_logprob: float,
    tokenizer: Tokenizer,
    duration: float,
    language: str | None,
    language_probs: dict[str, float] | None,
    no_speech_prob: float,
    temperature: float,
) -> DecodingResult:
    """openai-whisper's `DecodingResult` of one segment (the tokens without <|endoftext|>)."""
    text = tokenizer.decode(list(tokens)).strip()
    return DecodingResult(
        text=text,
        tokens=tokens,
        segments=split_segments(list(tokens), tokenizer, duration),
        language=language,
        language_probability=language_probs[language] if language_probs else None,
        avg_logprob=sum_logprob / (len(tokens) + 1),
        no_speech_prob=no_speech_prob,
        compression_ratio=compression_ratio(text),
        temperature=temperature,
        language_probs=language_probs,
    )


def split_segments(tokens: list[int], tokenizer: Tokenizer, duration: float) -> tuple[Segment, ...]:
    """Segments from timestamp tokens, as openai-whisper's transcribe cuts one window.

    Text after the last closed pair (no closing timestamp) is kept as a final segment that ends
    at `duration` rather than dropped: each window is decoded once, so nothing may be lost.
    """
    tb = tokenizer.timestamp_begin
    is_ts = [t >= tb for t in tokens]
    text_of = lambda ts: tokenizer.decode([t for t in ts if t < tokenizer.eot])  # noqa: E731
    time_of = lambda t: round((t - tb) * TIME_PRECISION, 2)  # noqa: E731
    consecutive = [i for i in range(1, len(tokens)) if is_ts[i - 1] and is_ts[i]]
    if not consecutive:
        timestamps = [t for t in tokens if t >= tb]
        end = time_of(timestamps[-1]) if timestamps and timestamps[-1] != tb else duration
        text = text_of(tokens)
        return (Segment(0.0, end, text, tuple(tokens)),) if text.strip() else ()
    single_ending = is_ts[-2:] == [False, True]
    cuts = consecutive + ([len(tokens)] if single_ending else [])
    segments, last = [], 0
    for cut in cuts:
        part = tokens[last:cut]
        segments.append(Segment(time_of(part[0]), time_of(part[-1]), text_of(part), tuple(part)))
        last = cut
    tail = tokens[last:]
    if tail and text_of(tail).strip():
        start = time_of(tail[0]) if tail[0] >= tb else segments[-1].end
        segments.append(Segment(start, max(start, duration), text_of(tail), tuple(tail)))
    return tuple(s for s in segments if s.text.strip())
