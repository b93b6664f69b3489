"""Subtitle and text writers: output parses back to the same segments."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlxbatchwhisper.writers import FORMATS, format_timestamp, parse_subtitles, to_srt, to_tsv, to_vtt, write_result

texts = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1, max_size=40).map(
    lambda t: t.strip() or "x")


@st.composite
def results(draw):
    times = sorted(draw(st.lists(st.integers(0, 10_000_000), min_size=2, max_size=20)))
    segments = [{"start": a / 1000, "end": b / 1000, "text": draw(texts), "avg_logprob": -0.2, "no_speech_prob": 0.01}
                for a, b in zip(times[::2], times[1::2])]
    return {"segments": segments, "language": "en"}


@settings(max_examples=100, deadline=None)
@given(results())
def test_srt_and_vtt_parse_back_to_the_segments(result):
    expected = [(s["start"], s["end"], s["text"].replace("-->", "->")) for s in result["segments"]]
    for document in (to_srt(result), to_vtt(result)):
        cues = parse_subtitles(document)
        assert [(round(a, 3), round(b, 3), t) for a, b, t in cues] == expected


def test_formats_and_timestamps(tmp_path):
    assert format_timestamp(3725.5) == "01:02:05.500"
    assert format_timestamp(65.0049, ",", always_hours=True) == "00:01:05,005"
    result = {"segments": [{"start": 0.0, "end": 1.5, "text": " Hello there.", "avg_logprob": -0.1,
                            "no_speech_prob": 0.0}], "language": "en"}
    paths = write_result(result, "/some/dir/talk.flac", tmp_path, "all")
    assert sorted(p.name for p in paths) == sorted(f"talk.{f}" for f in FORMATS)
    assert json.loads((tmp_path / "talk.json").read_text()) == result
    assert (tmp_path / "talk.txt").read_text() == "Hello there.\n"
    assert to_tsv(result) == "start\tend\ttext\n0\t1500\tHello there.\n"
    assert to_srt(result) == "1\n00:00:00,000 --> 00:00:01,500\nHello there.\n"
    with pytest.raises(ValueError, match="unknown output format"):
        write_result(result, "a.wav", tmp_path, "docx")
