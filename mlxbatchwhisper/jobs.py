"""`transcribe_audio_iter`'s work once its options are checked: inputs read in groups (`transcribe_groups`; long
inputs in pieces), each group through its mode's job, `LongFormJob` (mode="vad") or `SequentialJob`
(mode="sequential", whose options `sequential_options` checks)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np

from . import checks, vad
from .audio import SAMPLE_RATE
from .inputs import clip_regions, read
from .longform import WindowDecoder
from .pieces import decode_streamed
from .schedule import frame_energy, plan_windows
from .sequential import SequentialOptions, SequentialTranscriber, as_segments
from .vad import VadOptions

GROUP_SECONDS = 3600.0  # audio read, VAD-ed and decoded together by transcribe_audio
STREAM_SECONDS = 600.0  # inputs longer than this are read and decoded in pieces of about this length

Regions = list[tuple[float, float]]  # speech regions, (start, end) seconds
Group = dict[int, tuple[np.ndarray, Regions | None]]  # input index -> (samples, given regions or None: VAD them)


def transcribe_groups(
    inputs: list,
    flush: Callable[[Group], Iterator[tuple[int, dict]]],
    given: list[Regions] | None,
    vad: bool,
    on_error: str,
    sample_rate: int,
    streamed: LongFormJob | None,
) -> Iterator[tuple[int, dict | Exception]]:
    """(input index, result) as each input completes: inputs read in groups of about GROUP_SECONDS of audio, each
    group through `flush`, with its `given` regions (clipped to it), none (VAD finds them), or with `vad=False`
    the whole input. With a `streamed` job, an input longer than STREAM_SECONDS is read, VAD-ed and decoded by
    it a piece at a time. An input that cannot be read raises once the inputs before it are yielded
    (on_error="raise"), or is yielded as its exception ("yield")."""
    group: Group = {}
    seconds = 0.0
    for i, x in enumerate(inputs):
        try:
            audio, rest = read(x, f"input {i}", sample_rate, STREAM_SECONDS if streamed is not None else None)
            regions = None if given is None else clip_regions(given[i], len(audio) / SAMPLE_RATE)
            if rest is not None:  # a long input: read, VAD-ed and decoded a piece at a time
                if group:
                    yield from flush(group)
                    group, seconds = {}, 0.0
                yield (
                    i,
                    decode_streamed(
                        streamed, i, rest, streamed.vad_options, streamed.chunk_size, STREAM_SECONDS, GROUP_SECONDS
                    ),
                )
                continue
        except (OSError, ValueError, TypeError) as e:
            if on_error == "raise":
                if group:  # the inputs before this one are finished first, then it raises
                    yield from flush(group)
                raise
            yield i, e
            continue
        group[i] = (audio, regions if vad or regions is not None else [(0.0, len(audio) / SAMPLE_RATE)])
        seconds += len(audio) / SAMPLE_RATE
        if seconds >= GROUP_SECONDS:
            yield from flush(group)
            group, seconds = {}, 0.0
    if group:
        yield from flush(group)


@dataclass
class LongFormJob:
    """One `transcribe_audio` call: finds speech in groups of loaded inputs, plans their windows and
    hands them to `WindowDecoder`."""

    windows: WindowDecoder
    chunk_size: float
    vad_options: VadOptions

    def run(self, group: Group) -> Iterator[tuple[int, dict]]:
        """Decode a group of inputs (audio, given speech regions or None for VAD) together."""
        keys, inputs = list(group), list(group.values())
        group.clear()  # the arrays live here only while their windows are being decoded
        audios = {i: audio for i, (audio, _) in zip(keys, inputs)}
        speech, scores = _speech(inputs, self.vad_options)
        del inputs
        planned = [replace(w, source=keys[w.source]) for w in plan_windows(speech, self.chunk_size, scores)]
        with_speech = {w.source for w in planned}
        for i in [i for i in keys if i not in with_speech]:  # nothing to decode (empty or no speech)
            self.windows.report(len(audios.pop(i)) / SAMPLE_RATE)
            yield i, {"segments": [], "language": self.windows.languages[i]}
        yield from self.windows.run(audios, planned)


def _speech(
    inputs: list[tuple[np.ndarray, Regions | None]], vad_options: VadOptions
) -> tuple[list[Regions], list[np.ndarray]]:
    """Speech regions (seconds) of each input and per-frame scores to cut long ones at.

    Inputs without given regions go through Silero VAD together, as one batch.
    """
    need = [audio for audio, given in inputs if given is None]
    found = iter(
        vad.get_speech_timestamps_batch(need, return_probabilities=True, **asdict(vad_options)) if need else []
    )
    speech, scores = [], []
    for audio, given in inputs:
        if given is None:
            regions, probs = next(found)
            speech.append([(r["start"], r["end"]) for r in regions])
            scores.append(probs)
        else:
            speech.append(given)
            scores.append(frame_energy(audio))
    return speech, scores


def sequential_options(
    mode: str,
    vad_segments: list[Regions] | None,
    condition_on_previous_text: bool,
    clip_timestamps: str | Sequence[float],
    carry_initial_prompt: bool,
    hallucination_silence_threshold: float | None,
) -> SequentialOptions | None:
    """The sequential mode's options, checked before any work; None for mode="vad" (where they keep their defaults)."""
    if mode == "sequential":
        if vad_segments is not None:
            raise ValueError("vad_segments do not apply with mode='sequential' (openai-whisper's own windows)")
        checks.flag("carry_initial_prompt", carry_initial_prompt)
        options = SequentialOptions(
            condition_on_previous_text, clip_timestamps, carry_initial_prompt, hallucination_silence_threshold
        )
        options.clips(0)  # checks clip_timestamps before any work
        return options
    if mode == "vad":
        if clip_timestamps != SequentialOptions.clip_timestamps:
            raise ValueError("clip_timestamps applies with mode='sequential'; with VAD give vad_segments")
        if carry_initial_prompt or hallucination_silence_threshold is not None:
            raise ValueError(
                "carry_initial_prompt and hallucination_silence_threshold apply with mode='sequential'"
                " (with VAD, initial_prompt prompts every window)"
            )
        return None
    raise ValueError(f"mode must be 'vad' or 'sequential', not {mode!r}")


@dataclass
class SequentialJob:
    """One `transcribe_audio(mode="sequential")` call: groups of loaded inputs through openai's algorithm."""

    transcriber: SequentialTranscriber
    languages: list[str | None]  # per input
    prompts: list[tuple[int, ...]]
    batch_size: int
    progress: Callable[[float], None] | None
    words: bool

    def run(self, group: Group) -> Iterator[tuple[int, dict]]:
        """Transcribe a group of loaded inputs together."""
        audios = {i: audio for i, (audio, _) in group.items()}
        group.clear()
        languages = {i: self.languages[i] for i in audios}
        prompts = {i: self.prompts[i] for i in audios}
        for i, result in self.transcriber.run(audios, languages, prompts, self.batch_size):
            if self.progress:
                self.progress(len(audios.pop(i)) / SAMPLE_RATE)
            yield i, as_segments(result, self.words)
