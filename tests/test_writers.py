"""Subtitle and text writers: output parses back to the same segments with independent parsers."""

import html
import json

import pytest
import srt
import webvtt
from hypothesis import given, settings
from hypothesis import strategies as st

from mlxbatchwhisper.writers import FORMATS, format_timestamp, output_names, to_srt, to_tsv, to_vtt, write_result

texts = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1, max_size=40).map(
    lambda t: t.strip() or "x"
)


@st.composite
def results(draw):
    times = sorted(draw(st.lists(st.integers(0, 10_000_000), min_size=2, max_size=20)))
    segments = [
        {"start": a / 1000, "end": b / 1000, "text": draw(texts), "avg_logprob": -0.2, "no_speech_prob": 0.01}
        for a, b in zip(times[::2], times[1::2])
    ]
    return {"segments": segments, "language": "en"}


def _seconds(stamp: str) -> float:
    h, m, sec = stamp.split(":")
    return int(h) * 3600 + int(m) * 60 + float(sec)


@settings(max_examples=100, deadline=None)
@given(results())
def test_srt_and_vtt_parse_back_to_the_segments(result):
    """The `srt` and `webvtt-py` packages read our files back as the segments we wrote."""
    expected = [(s["start"], s["end"], s["text"].strip().replace("-->", "->")) for s in result["segments"]]
    cues = [(c.start.total_seconds(), c.end.total_seconds(), c.content) for c in srt.parse(to_srt(result))]
    assert [(round(a, 3), round(b, 3), t.strip()) for a, b, t in cues] == [(a, b, t.strip()) for a, b, t in expected]
    cues = [(_seconds(c.start), _seconds(c.end), html.unescape(c.raw_text)) for c in webvtt.from_string(to_vtt(result))]
    assert [(round(a, 3), round(b, 3), t.strip()) for a, b, t in cues] == [(a, b, t.strip()) for a, b, t in expected]


def test_formats_and_timestamps(tmp_path):
    assert format_timestamp(3725.5) == "01:02:05.500"
    assert format_timestamp(65.0049, ",", always_hours=True) == "00:01:05,005"
    result = {
        "segments": [{"start": 0.0, "end": 1.5, "text": " Hello there.", "avg_logprob": -0.1, "no_speech_prob": 0.0}],
        "language": "en",
    }
    paths = write_result(result, "talk", tmp_path, "all")
    assert sorted(p.name for p in paths) == sorted(f"talk.{f}" for f in FORMATS)
    assert json.loads((tmp_path / "talk.json").read_text()) == result
    assert (tmp_path / "talk.txt").read_text() == "Hello there.\n"
    assert to_tsv(result) == "start\tend\ttext\n0\t1500\tHello there.\n"
    assert to_srt(result) == "1\n00:00:00,000 --> 00:00:01,500\nHello there.\n"
    assert to_vtt(result) == "WEBVTT\n\n00:00.000 --> 00:01.500\nHello there.\n"
    with pytest.raises(ValueError, match="unknown output format"):
        write_result(result, "a", tmp_path, "docx")


def test_inputs_with_the_same_stem_get_distinct_names():
    assert output_names(["a/talk.mp3", "b/talk.mp3", "talk.wav", "x.flac"]) == ["talk", "talk-2", "talk-3", "x"]


WORDY = {
    "language": "en",
    "segments": [
        {
            "start": 0.5,
            "end": 2.9,
            "text": "Hello there, my old friend.",
            "words": [
                {"word": w, "start": a, "end": b, "score": 0.9}
                for w, a, b in [
                    ("Hello", 0.5, 0.9),
                    ("there,", 0.9, 1.3),
                    ("my", 1.4, 1.6),
                    ("old", 1.6, 2.2),
                    ("friend.", 2.2, 2.9),
                ]
            ],
        },
        {
            "start": 7.0,
            "end": 9.0,
            "text": "How are you doing today?",
            "words": [
                {"word": w, "start": a, "end": b, "score": 0.8}
                for w, a, b in [
                    ("How", 7.0, 7.2),
                    ("are", 7.2, 7.4),
                    ("you", 7.4, 7.9),
                    ("doing", 7.9, 8.4),
                    ("today?", 8.4, 9.0),
                ]
            ],
        },
    ],
}


@pytest.mark.parametrize("fmt", ["srt", "vtt"])
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"highlight_words": True},
        {"max_line_width": 12},
        {"max_line_width": 12, "max_line_count": 2},
        {"max_words_per_line": 2},
        {"max_line_width": 10, "max_line_count": 1, "highlight_words": True},
    ],
)
def test_word_subtitles_match_openai_writers(tmp_path, fmt, options):
    from whisper.utils import get_writer

    from mlxbatchwhisper.writers import SubtitleOptions, to_srt, to_vtt

    theirs = {
        "language": "en",
        "text": "",
        "segments": [
            {
                **s,
                "words": [
                    {"word": " " + w["word"], "start": w["start"], "end": w["end"], "probability": w["score"]}
                    for w in s["words"]
                ],
            }
            for s in WORDY["segments"]
        ],
    }
    full = {
        "highlight_words": False,
        "max_line_width": None,
        "max_line_count": None,
        "max_words_per_line": None,
        **options,
    }
    get_writer(fmt, str(tmp_path))(theirs, str(tmp_path / "x.wav"), full)
    ours = (to_srt if fmt == "srt" else to_vtt)(WORDY, SubtitleOptions(**options))
    assert ours.strip() == (tmp_path / f"x.{fmt}").read_text().strip()
