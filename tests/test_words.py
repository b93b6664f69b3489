"""Word timestamps against openai-whisper's `word_timestamps=True`, and batched against alone."""

from functools import lru_cache

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlxbatchwhisper import BatchedWhisper
from mlxbatchwhisper.alignment import dtw_token_starts, median_filter
from mlxbatchwhisper.audio import N_SAMPLES
from mlxbatchwhisper.tokenizer import get_tokenizer
from mlxbatchwhisper.words import split_words
from reference import corpus_audio, manifest, openai_model, pyannote_sample, segment_names

torch = pytest.importorskip("torch")
whisper = pytest.importorskip("whisper")

GREEDY = dict(temperature=0.0)


@lru_cache(maxsize=None)
def model(name: str) -> BatchedWhisper:
    return BatchedWhisper.from_pretrained(name)


@lru_cache(maxsize=None)
def reference(name: str):
    """openai-whisper's model on our weights, with the alignment heads we resolved for the checkpoint."""
    ref = openai_model(name)
    heads = np.zeros((ref.dims.n_text_layer, ref.dims.n_text_head), bool)
    for layer, head in model(name).model.alignment_heads:
        heads[layer, head] = True
    ref.register_buffer("alignment_heads", torch.from_numpy(heads).to_sparse(), persistent=False)
    return ref


def names_for(name: str) -> list[str]:
    return [n for n in segment_names() if name == "base" or manifest()[n]["language"] == "en"]


def padded(audio: np.ndarray) -> np.ndarray:
    """A clip zero-padded to 30 s: openai's transcribe then sees the same window our segment API does."""
    return np.pad(audio, (0, N_SAMPLES - len(audio)))


def compare(label: str, theirs: list[dict], ours: list, report: list[str]) -> tuple[int, int]:
    """(words compared, words off by more than one frame); differing word lists are reported."""
    if [w["word"] for w in theirs] != [w.word for w in ours]:
        report.append(f"{label}: words differ\n  openai {[w['word'] for w in theirs]}\n  ours   {[w.word for w in ours]}")
        return 0, 0
    off = 0
    for t, o in zip(theirs, ours):
        if abs(t["start"] - o.start) > 0.0201 or abs(t["end"] - o.end) > 0.0201:
            off += 1
            report.append(f"{label}: {t['word']!r} openai {t['start']:.2f}-{t['end']:.2f} ours {o.start:.2f}-{o.end:.2f}")
        assert abs(t["probability"] - o.probability) < 2e-3, (label, t, o)
    return len(theirs), off


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tiny.en", "base"])
def test_words_match_openai_transcribe(name):
    names = names_for(name)
    audios = [padded(corpus_audio(n)) for n in names] + [pyannote_sample()]
    labels = names + ["pyannote"]
    ours = model(name).transcribe(audios, batch_size=8, word_timestamps=True, **GREEDY)
    ref = reference(name)
    report, total, off = [], 0, 0
    for label, audio, r in zip(labels, audios, ours):
        out = whisper.transcribe(ref, torch.from_numpy(audio), word_timestamps=True, fp16=False, **GREEDY,
                                 language=None if ref.is_multilingual else "en")
        first = [s for s in out["segments"] if s["seek"] == 0 and s["text"].strip()]  # one window; ours drops empty ones
        if [s["text"] for s in first] != [s.text for s in r.segments][: len(first)]:
            report.append(f"{label}: segments differ (openai {[s['text'] for s in first]}, ours {r.text!r})")
            continue
        n, bad = compare(label, [w for s in first for w in s["words"]], [w for s in r.segments for w in s.words], report)
        total, off = total + n, off + bad
        for s, ref_s in zip(r.segments, first):
            assert abs(s.start - ref_s["start"]) <= 0.0201 and abs(s.end - ref_s["end"]) <= 0.0201, (label, s, ref_s)
    print(f"\n{name}: {total} words, {off} more than one frame off", *report, sep="\n")
    assert total >= 0.9 * sum(len(r.text.split()) for r in ours)
    assert off <= 0.01 * total, "\n".join(report)
