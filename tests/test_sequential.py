"""mode="sequential": openai-whisper's own `transcribe`, token for token, with many files batched."""

import mlx.core as mx
import numpy as np
import pytest

from mlxbatchwhisper.sequential import SequentialOptions, SequentialTranscriber, _Stream
from mlxbatchwhisper.words import WordAligner
from reference import corpus_audio, pyannote_sample
from reference import openai_model_with_heads as reference
from reference import our_model as model

torch = pytest.importorskip("torch")
whisper = pytest.importorskip("whisper")


def audio(name: str) -> np.ndarray:
    return pyannote_sample() if name == "pyannote" else corpus_audio(name)


def ours(
    name: str,
    files: list[str],
    batch_size: int = 8,
    words: bool = False,
    clips: str = "0",
    prompt: str | None = None,
    sequential: dict | None = None,
    **options,
):
    """Our sequential transcriber's openai-style results (with tokens), by file name; `sequential` holds
    SequentialOptions fields besides the clips."""
    m = model(name)
    transcriber = SequentialTranscriber(
        m.model,
        m.tokenizer,
        m._options(**options),
        SequentialOptions(clip_timestamps=clips, **(sequential or {})),
        WordAligner(m.model, m.tokenizer, "transcribe") if words else None,
    )
    language = None if m.tokenizer.multilingual else "en"
    return dict(
        transcriber.run(
            {f: audio(f) for f in files},
            dict.fromkeys(files, language),
            dict.fromkeys(files, m._prompt(prompt)),
            batch_size,
        )
    )


def theirs(name: str, file: str, **options) -> dict:
    ref = reference(name)
    return whisper.transcribe(
        ref, torch.from_numpy(audio(file)), fp16=False, language=None if ref.is_multilingual else "en", **options
    )


def assert_same(label: str, expected: dict, got: dict, words: bool = False) -> None:
    assert got["language"] == expected["language"], label
    pairs = list(zip(expected["segments"], got["segments"]))
    for e, g in pairs:
        assert g["tokens"] == e["tokens"], f"{label} at seek {e['seek']}: openai {e['text']!r}, ours {g['text']!r}"
        assert g["seek"] == e["seek"] and g["temperature"] == e["temperature"], label
        assert g["start"] == pytest.approx(e["start"], abs=0.0201) and g["end"] == pytest.approx(e["end"], abs=0.0201)
        if words:
            assert [w["word"] for w in g["words"]] == [w["word"] for w in e["words"]], label
            off = [
                (w, v)
                for w, v in zip(e["words"], g["words"])
                if abs(w["start"] - v["start"]) > 0.0201 or abs(w["end"] - v["end"]) > 0.0201
            ]
            assert not off, f"{label}: {off}"
    assert len(got["segments"]) == len(expected["segments"]), label
    assert got["text"] == expected["text"], label


@pytest.mark.slow
def test_greedy_is_token_identical_to_openai_transcribe_tiny_en():
    files = ["long_60s", "pyannote", "d09"]  # long_form too, in docs/longform.md (4.5 min of openai-whisper)
    got = ours("tiny.en", files, temperature=0.0)
    for f in files:
        assert_same(f, theirs("tiny.en", f, temperature=0.0), got[f])


@pytest.mark.slow
def test_word_timestamps_and_fallback_match_openai_base():
    files = ["pyannote", "long_60s", "f01", "s01"]
    got = ours("base", files, words=True)  # default temperatures: the pyannote sample needs the fallback
    whole = 0
    for f in files:
        expected = theirs("base", f, word_timestamps=True)
        hot = next((i for i, s in enumerate(expected["segments"]) if s["temperature"] > 0), None)
        if hot is None:
            assert_same(f, expected, got[f], words=True)
            whole += 1
        else:  # sampling draws differ from torch's: the same up to the first window that fell back
            first = expected["segments"][hot]["seek"]
            cut = {k: [s for s in v["segments"] if s["seek"] < first] for k, v in (("e", expected), ("g", got[f]))}
            assert [s["tokens"] for s in cut["g"]] == [s["tokens"] for s in cut["e"]], f
            assert any(s["seek"] == first and s["temperature"] > 0 for s in got[f]["segments"]), f
    assert whole >= 2, "too few files decoded without a fallback to compare whole"


@pytest.mark.slow
def test_clip_timestamps_match_openai():
    got = ours("tiny.en", ["long_60s"], temperature=0.0, clips="5,21.5,30")
    assert_same("clips", theirs("tiny.en", "long_60s", temperature=0.0, clip_timestamps="5,21.5,30"), got["long_60s"])


@pytest.mark.slow
def test_carry_initial_prompt_matches_openai():
    prompt = "Passages read aloud, with pauses between them. " * 12  # long: the carried prompt is cut to fit
    got = ours("tiny.en", ["long_60s"], temperature=0.0, prompt=prompt, sequential={"carry_initial_prompt": True})
    expected = theirs("tiny.en", "long_60s", temperature=0.0, initial_prompt=prompt, carry_initial_prompt=True)
    assert_same("carry_initial_prompt", expected, got["long_60s"])


def test_carried_prompt_keeps_the_initial_prompt_and_the_latest_text():
    stream = _Stream("f", mx.zeros((10, 80)), 10, [(0, 10)], [1, 2, 3], "en")
    stream.all_tokens += list(range(100, 400))
    room = 448 // 2 - 1 - 3
    assert stream.prompt(True, 448) == (1, 2, 3, *range(400 - room, 400))
    assert stream.prompt(False, 448) == (1, 2, 3, *range(100, 400))
    stream.prompt_reset_since = 303 - 5  # a reset: only the text after it follows the initial prompt
    assert stream.prompt(True, 448) == (1, 2, 3, *range(395, 400)) and stream.prompt(False, 448) == tuple(
        range(395, 400)
    )


@pytest.mark.slow
def test_hallucination_silence_threshold_matches_openai():
    files = ["pyannote", "long_60s"]
    got = ours("tiny.en", files, words=True, sequential={"hallucination_silence_threshold": 0.5}, temperature=0.0)
    for f in files:  # (on these files openai-whisper finds no hallucination to skip: the seek rules are compared)
        expected = theirs("tiny.en", f, hallucination_silence_threshold=0.5, temperature=0.0, word_timestamps=True)
        assert_same(f, expected, got[f], words=True)


def test_files_batched_are_the_same_as_alone():
    files = ["d02", "long_60s", "d05"]
    together = ours("tiny.en", files, batch_size=3, temperature=0.0)
    key = lambda r: [(s["seek"], s["start"], s["end"], s["tokens"]) for s in r["segments"]]  # noqa: E731
    for f in files:
        alone = ours("tiny.en", [f], batch_size=1, temperature=0.0)[f]
        assert key(together[f]) == key(alone) and together[f]["text"] == alone["text"], f


def test_transcribe_audio_sequential_mode_and_its_checks():
    m = model("tiny.en")
    out = m.transcribe_audio(
        [corpus_audio("long_60s"), corpus_audio("d03")],
        mode="sequential",
        temperature=0.0,
        word_timestamps=True,
        condition_on_previous_text=False,
    )
    for r in out:
        assert r["language"] == "en" and r["segments"] and r["word_segments"]
        starts = [s["start"] for s in r["segments"]]
        assert starts == sorted(starts) and all(set(s) >= {"start", "end", "text", "words"} for s in r["segments"])
    with pytest.raises(ValueError, match="mode"):
        m.transcribe_audio([corpus_audio("d03")], mode="fast")
    with pytest.raises(ValueError, match="clip_timestamps"):
        m.transcribe_audio([corpus_audio("d03")], clip_timestamps="1,2")
    with pytest.raises(ValueError, match="clip_timestamps"):
        m.transcribe_audio([corpus_audio("d03")], mode="sequential", clip_timestamps="a,b")
    with pytest.raises(ValueError, match="vad_segments"):
        m.transcribe_audio([corpus_audio("d03")], mode="sequential", vad_segments=[[{"start": 0, "end": 1}]])
    with pytest.raises(ValueError, match="carry_initial_prompt"):
        m.transcribe_audio([corpus_audio("d03")], carry_initial_prompt=True)
    with pytest.raises(ValueError, match="hallucination_silence_threshold"):
        m.transcribe_audio([corpus_audio("d03")], mode="sequential", hallucination_silence_threshold=-1)
