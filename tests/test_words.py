"""Word timestamps against openai-whisper's `word_timestamps=True`, and batched against alone."""

from functools import cache

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlxbatchwhisper.alignment import dtw_token_starts, median_filter
from mlxbatchwhisper.audio import N_SAMPLES
from mlxbatchwhisper.tokenizer import get_tokenizer
from mlxbatchwhisper.transcripts import split_segments
from mlxbatchwhisper.words import split_words
from reference import corpus_audio, manifest, pyannote_sample, segment_names
from reference import openai_model_with_heads as reference
from reference import our_model as model

torch = pytest.importorskip("torch")
whisper = pytest.importorskip("whisper")

GREEDY = dict(temperature=0.0)


def names_for(name: str) -> list[str]:
    return [n for n in segment_names() if name == "base" or manifest()[n]["language"] == "en"]


def padded(audio: np.ndarray) -> np.ndarray:
    """A clip zero-padded to 30 s: openai's transcribe then sees the same window our segment API does."""
    return np.pad(audio, (0, N_SAMPLES - len(audio)))


def compare(label: str, theirs: list[dict], ours: list, report: list[str]) -> tuple[int, int]:
    """(words compared, words off by more than one frame); differing word lists are reported."""
    if [w["word"] for w in theirs] != [w.word for w in ours]:
        report.append(
            f"{label}: words differ\n  openai {[w['word'] for w in theirs]}\n  ours   {[w.word for w in ours]}"
        )
        return 0, 0
    off = 0
    for t, o in zip(theirs, ours):
        if abs(t["start"] - o.start) > 0.0201 or abs(t["end"] - o.end) > 0.0201:
            off += 1
            report.append(
                f"{label}: {t['word']!r} openai {t['start']:.2f}-{t['end']:.2f} ours {o.start:.2f}-{o.end:.2f}"
            )
        assert abs(t["probability"] - o.probability) < 2e-3, (label, t, o)
    return len(theirs), off


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tiny.en", "base"])
def test_words_match_openai_transcribe(name):
    names = names_for(name)
    audios = [padded(corpus_audio(n)) for n in names]
    ours = model(name).transcribe(audios, batch_size=8, word_timestamps=True, **GREEDY)
    ref = reference(name)
    report, total, off = [], 0, 0
    for label, audio, r in zip(names, audios, ours):
        out = whisper.transcribe(
            ref, torch.from_numpy(audio), word_timestamps=True, fp16=False, **GREEDY, language=language_of(name)
        )
        first = [s for s in out["segments"] if s["seek"] == 0 and s["text"].strip()]  # one window, as ours
        if [s["text"] for s in first] != [s.text for s in r.segments][: len(first)]:
            report.append(f"{label}: segments differ (openai {[s['text'] for s in first]}, ours {r.text!r})")
            continue
        n, bad = compare(
            label, [w for s in first for w in s["words"]], [w for s in r.segments for w in s.words], report
        )
        total, off = total + n, off + bad
        for s, ref_s in zip(r.segments, first):
            assert abs(s.start - ref_s["start"]) <= 0.0201 and abs(s.end - ref_s["end"]) <= 0.0201, (label, s, ref_s)
    print(f"\n{name}: {total} words, {off} more than one frame off", *report, sep="\n")
    assert total >= 0.9 * sum(len(r.text.split()) for r in ours), "\n".join(report)
    assert off <= 0.01 * total, "\n".join(report)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tiny.en", "base"])
def test_words_of_real_speech_match_openai_transcribe(name):
    """The real 30 s two-speaker sample through mode="sequential" (openai-whisper's own windows)."""
    audio = pyannote_sample()
    ours = model(name).transcribe_audio([audio], mode="sequential", word_timestamps=True, **GREEDY)[0]
    out = whisper.transcribe(
        reference(name), torch.from_numpy(audio), word_timestamps=True, fp16=False, **GREEDY, language=language_of(name)
    )
    theirs = [w for s in out["segments"] for w in s["words"]]
    got = ours["word_segments"]
    assert [w["word"].strip() for w in theirs] == [w["word"] for w in got]
    off = [
        (t, o)
        for t, o in zip(theirs, got)
        if abs(t["start"] - o["start"]) > 0.0201 or abs(t["end"] - o["end"]) > 0.0201
    ]
    print(f"\n{name}: {len(got)} words of real speech, {len(off)} more than one frame off", *off, sep="\n")
    assert len(got) > 40 and len(off) <= 0.01 * len(got)


def language_of(name: str) -> str | None:
    return None if reference(name).is_multilingual else "en"


def test_dtw_matches_openai_on_rows_of_different_sizes():
    from whisper.timing import dtw_cpu

    rng = np.random.default_rng(0)
    shapes = [(int(rng.integers(1, 40)), int(rng.integers(1, 300))) for _ in range(12)] + [(1, 1), (30, 2)]
    n, m = max(s[0] for s in shapes), max(s[1] for s in shapes)
    cost = rng.standard_normal((len(shapes), n, m)).astype(np.float32).astype(np.float64)
    cost[3] = 0.0  # all ties: the tie-breaking order decides the path
    starts = dtw_token_starts(cost, np.array([s[0] for s in shapes]), np.array([s[1] for s in shapes]))
    for b, (rows, cols) in enumerate(shapes):
        text_idx, time_idx = dtw_cpu(cost[b, :rows, :cols].copy())
        first = np.pad(np.diff(text_idx), (1, 0), constant_values=1).astype(bool)
        assert np.array_equal(starts[b, :rows], time_idx[first]), (b, rows, cols)


def test_median_filter_matches_openai_reflecting_at_each_row_end():
    from whisper.timing import median_filter as openai_median

    rng = np.random.default_rng(1)
    lengths = np.array([50, 3, 4, 7, 1, 33])
    x = rng.standard_normal((len(lengths), 2, 5, 50)).astype(np.float32)
    ours = median_filter(x, lengths, 7)
    for b, n in enumerate(lengths):
        expected = openai_median(torch.from_numpy(x[b, :, :, :n].copy()), 7).numpy()
        assert np.array_equal(ours[b, :, :, :n], expected), b


@pytest.mark.parametrize(
    "language, text",
    [
        ("en", " Hello, world! It's 3.5 o'clock (roughly) — isn't it?"),
        ("zh", "今天天气很好，我们去公园散步吧。"),
        ("ja", "東京は日本の首都です。ラーメンが好き！"),
        ("th", "สวัสดีครับ วันนี้อากาศดีมาก"),
        ("fr", " « Bonjour », dit-il à l'élève."),
    ],
)
def test_word_splitting_matches_openai_tokenizer(language, text):
    from whisper.tokenizer import get_tokenizer as openai_tokenizer

    ours = get_tokenizer(True)
    theirs = openai_tokenizer(True, language=language)
    tokens = ours.encode(text) + [ours.eot]
    assert tokens == theirs.encode(text) + [theirs.eot]
    words, word_tokens = split_words(ours, tokens, language)
    assert (words, word_tokens) == theirs.split_to_word_tokens(tokens)
    assert "".join(words[:-1]) == text and len(words) > 2


def openai_words_for(name: str, audio: np.ndarray, result) -> list[dict]:
    """openai-whisper's `add_word_timestamps` on our decoded segments, with the mel our segment API
    decodes (the clip padded with silence to 30 s) and the clip's own frame count."""
    from whisper.timing import add_word_timestamps
    from whisper.tokenizer import get_tokenizer as openai_tokenizer

    ref = reference(name)
    tokenizer = openai_tokenizer(ref.is_multilingual, num_languages=ref.num_languages, language=result.language)
    mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.from_numpy(audio)), n_mels=ref.dims.n_mels)
    decoded = split_segments(list(result.tokens), model(name).tokenizer, len(audio) / 16000)  # before word timing
    segments = [{"seek": 0, "start": s.start, "end": s.end, "tokens": list(s.tokens)} for s in decoded]
    add_word_timestamps(
        segments=segments,
        model=ref,
        tokenizer=tokenizer,
        mel=mel,
        num_frames=len(audio) // 160,
        last_speech_timestamp=0.0,
    )
    return segments


@pytest.mark.parametrize("name", ["tiny.en", "base"])
def test_word_recipe_matches_openai_on_our_segments(name):
    names = names_for(name)
    audios = [corpus_audio(n) for n in names]
    ours = model(name).transcribe(audios, batch_size=6, word_timestamps=True, **GREEDY)
    report, total, off = [], 0, 0
    for label, audio, r in zip(names, audios, ours):
        expected = openai_words_for(name, audio, r)
        n, bad = compare(
            label, [w for s in expected for w in s["words"]], [w for s in r.segments for w in s.words], report
        )
        total, off = total + n, off + bad
        for s, e in zip(r.segments, expected):
            assert (s.start, s.end) == pytest.approx((e["start"], e["end"]), abs=0.0201), (label, s, e)
    print(f"\n{name}: {total} words, {off} more than one frame off", *report, sep="\n")
    assert total >= 0.95 * sum(len(r.text.split()) for r in ours), "\n".join(report)
    assert off <= 0.01 * total, "\n".join(report)


@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_words_are_the_same_alone_and_in_any_batch(data):
    names = names_for("tiny.en")
    chosen = data.draw(st.lists(st.sampled_from(names), min_size=2, max_size=5, unique=True))
    batch_size = data.draw(st.integers(1, 5))
    batched = model("tiny.en").transcribe(
        [corpus_audio(n) for n in chosen], batch_size=batch_size, word_timestamps=True, **GREEDY
    )
    for n, r in zip(chosen, batched):
        single = alone(n)
        assert [(w.word, w.start, w.end) for s in r.segments for w in s.words] == [
            (w.word, w.start, w.end) for s in single.segments for w in s.words
        ], n
        assert [w.probability for s in r.segments for w in s.words] == pytest.approx(
            [w.probability for s in single.segments for w in s.words], abs=1e-5
        )
        assert [(s.start, s.end) for s in r.segments] == [(s.start, s.end) for s in single.segments]


@cache
def alone(name: str):
    return model("tiny.en").transcribe([corpus_audio(name)], batch_size=1, word_timestamps=True, **GREEDY)[0]


def test_long_form_words_are_on_the_file_timeline():
    audio = corpus_audio("long_60s")
    result = model("tiny.en").transcribe_audio([audio, audio[: 16000 * 20]], word_timestamps=True)
    for r, duration in zip(result, (60.0, 20.0)):
        words = r["word_segments"]
        assert len(words) > (40 if duration == 60 else 15)
        assert [w for s in r["segments"] for w in s["words"]] == words
        assert all(set(w) == {"word", "start", "end", "score"} and w["word"] == w["word"].strip() for w in words)
        assert all(0 <= w["start"] <= w["end"] <= duration and 0 <= w["score"] <= 1 for w in words)
        starts = [w["start"] for w in words]
        assert starts == sorted(starts)
        for s in r["segments"]:
            assert all(s["start"] - 0.02 <= w["start"] and w["end"] <= s["end"] + 0.02 for w in s["words"]), s
    assert "word_segments" not in model("tiny.en").transcribe_audio([audio[: 16000 * 20]])[0]


def test_alignment_heads_come_from_each_checkpoint_layout(tmp_path):
    import json

    import mlx.core as mx

    from mlxbatchwhisper import load_model
    from mlxbatchwhisper.checkpoints import CheckpointError, read_checkpoint, resolve
    from mlxbatchwhisper.convert import convert
    from mlxbatchwhisper.heads import OPENAI_HEADS, default_heads, heads_for_name

    assert read_checkpoint(resolve("tiny.en")).alignment_heads == [list(p) for p in OPENAI_HEADS["tiny.en"]]  # CT2
    assert model("base").model.alignment_heads == OPENAI_HEADS["base"]
    out = convert("tiny.en", tmp_path / "converted", dtype="float32")  # our converter writes them down
    weights = dict(mx.load(str(out.path / "weights.safetensors")))
    assert weights["alignment_heads"].tolist() == [list(p) for p in OPENAI_HEADS["tiny.en"]]  # as mlx-whisper does
    assert load_model(out.path).alignment_heads == OPENAI_HEADS["tiny.en"]
    del weights["alignment_heads"]
    mx.save_safetensors(str(out.path / "weights.safetensors"), weights)
    assert load_model(out.path).alignment_heads == default_heads(4, 6)  # nothing recorded, no name: openai's default
    config = json.loads((out.path / "config.json").read_text())
    (out.path / "config.json").write_text(json.dumps({**config, "alignment_heads": [[3, 1], [2, 0]]}))
    assert load_model(out.path).alignment_heads == ((2, 0), (3, 1))  # a config that lists them
    assert heads_for_name("openai/whisper-large-v3-turbo") == OPENAI_HEADS["turbo"]
    assert heads_for_name("mlx-community/whisper-small.en-mlx") == OPENAI_HEADS["small.en"]
    assert heads_for_name("my-model") is None
    (out.path / "config.json").write_text(json.dumps({**config, "alignment_heads": [[9, 0]]}))
    with pytest.raises(CheckpointError, match="alignment_heads"):
        load_model(out.path)


@pytest.mark.parametrize("native", [False, True])
def test_median_filter_is_the_same_in_mlx(monkeypatch, native):
    import mlx.core as mx

    from mlxbatchwhisper import alignment, kernels

    if native and not kernels.native_available():
        pytest.skip(f"native CPU kernels: {kernels.NATIVE_STATUS}")
    monkeypatch.setattr(alignment, "native_median", lambda dtype, width: native)
    rng = np.random.default_rng(2)
    lengths = np.array([40, 2, 9])
    x = rng.standard_normal((3, 4, 40)).astype(np.float32)
    got, expected = np.array(median_filter(mx.array(x), lengths, 7)), median_filter(x, lengths, 7)
    for b, n in enumerate(lengths):  # past a row's length the result is not defined
        assert np.array_equal(got[b, :, :n], expected[b, :, :n])
