"""Long-form transcription: VAD windows pooled across files, against openai-whisper's transcribe()."""

import html
import json
import wave
from dataclasses import asdict
from functools import cache

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlxbatchwhisper import BatchedWhisper
from mlxbatchwhisper.cli.transcribe import main as cli
from mlxbatchwhisper.writers import format_timestamp
from reference import DATA, corpus_audio, manifest, openai_model, wer

whisper = pytest.importorskip("whisper")


@cache
def model(name: str = "tiny.en") -> BatchedWhisper:
    return BatchedWhisper.from_pretrained(name)


def text_of(result: dict) -> str:
    return " ".join(s["text"] for s in result["segments"])


def write_wav(path, audio: np.ndarray, rate: int = 16000, channels: int = 1) -> None:
    pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


@pytest.mark.parametrize("name", ["long_60s", "long_form"])
def test_long_form_wer_within_three_points_of_openai(name):
    """A regression bound on synthetic speech: issue [longform]'s per-file bound (the defaults were tuned on
    real speech, tests/test_devset.py; with them long_60s is 14.5% against openai's 12.3%, long_form 19.3% / 21.5%)."""
    audio = corpus_audio(name)
    ref_text = manifest()[name]["text"]
    ours = model().transcribe_audio(audio, batch_size=16)[0]
    import torch

    torch.manual_seed(0)  # openai-whisper's temperature fallback samples with torch's generator
    theirs = whisper.transcribe(openai_model("tiny.en"), audio, fp16=False, language="en")
    ours_wer, their_wer = wer([ref_text], [text_of(ours)]), wer([ref_text], [theirs["text"]])
    print(f"{name}: WER ours {ours_wer:.4f}, openai-whisper {their_wer:.4f}")
    assert ours_wer <= their_wer + 0.03
    starts = [s["start"] for s in ours["segments"]]
    assert starts == sorted(starts)
    assert all(0 <= s["start"] <= s["end"] <= len(audio) / 16000 for s in ours["segments"])
    assert ours["language"] == "en"


def test_pooled_files_give_each_file_its_own_text():
    inputs = [corpus_audio("long_60s"), DATA / "d03.wav", corpus_audio("d07")]
    pooled = model().transcribe_audio(inputs, batch_size=4)
    for x, result in zip(inputs, pooled):
        alone = model().transcribe_audio([x], batch_size=4)[0]
        assert [(s["start"], s["end"], s["text"]) for s in result["segments"]] == [
            (s["start"], s["end"], s["text"]) for s in alone["segments"]
        ]
        # log-probabilities agree to BLAS rounding (batch shapes differ)
        assert all(
            abs(a["avg_logprob"] - b["avg_logprob"]) < 1e-5 for a, b in zip(result["segments"], alone["segments"])
        )
    assert "honey" in text_of(pooled[1])


def test_multilingual_files_are_detected_per_window():
    results = BatchedWhisper.from_pretrained("base").transcribe_audio([DATA / "f01.wav", DATA / "g01.wav"])
    assert [r["language"] for r in results] == ["fr", "de"]


def test_external_vad_segments_and_no_vad():
    audio = corpus_audio("long_60s")
    from mlxbatchwhisper import vad

    # given regions are taken as they are: the same as the VAD's own when it pads nothing (with padding, the
    # VAD mode does not count the padding as speech when it decides whether a window's remainder is decoded)
    unpadded = vad.VadOptions(speech_pad_ms=0)
    regions = vad.get_speech_timestamps(audio, **asdict(unpadded))
    given = model().transcribe_audio(audio, vad_segments=[regions])[0]
    found = model().transcribe_audio(audio, vad_options=unpadded)[0]
    assert [s["text"] for s in given["segments"]] == [s["text"] for s in found["segments"]]
    # only the speech we point at is transcribed
    first = regions[0]
    part = model().transcribe_audio(audio, vad_segments=[[first]])[0]
    assert part["segments"] and all(first["start"] <= s["start"] <= s["end"] <= first["end"] for s in part["segments"])
    alone = model().transcribe([audio[round(first["start"] * 16000) : round(first["end"] * 16000)]])[0]
    assert text_of(part) == " ".join(s.text.strip() for s in alone.segments)
    whole = model().transcribe_audio(audio, vad=False)[0]
    assert wer([manifest()["long_60s"]["text"]], [text_of(whole)]) < 0.3


@pytest.mark.parametrize(
    "regions, match",
    [
        ([{"start": -1.0, "end": 2.0}], "start < end"),
        ([{"start": 3.0, "end": 2.0}], "start < end"),
        ([{"begin": 0.0, "end": 2.0}], "'start' and 'end'"),
        (["0-2"], "'start' and 'end'"),
    ],
)
def test_bad_vad_segments_are_refused(regions, match):
    with pytest.raises(ValueError, match=match):
        model().transcribe_audio(corpus_audio("d01"), vad_segments=[regions])


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 16000 * 60), st.sampled_from([30.0, 29.99, 15.0]))
def test_a_window_never_holds_more_than_30_s_of_samples(start_sample, length):
    from mlxbatchwhisper.longform import window_audio as _window_audio
    from mlxbatchwhisper.schedule import Window

    audio = np.zeros(16000 * 100, np.float32)
    start = start_sample / 16000 + 1e-7 * (start_sample % 7)
    w = Window(0, start, start + length, ((start, start + length),))
    assert len(_window_audio(audio, w)) <= 16000 * 30
    assert abs(len(_window_audio(audio, w)) - 16000 * length) <= 1


def test_initial_prompt_reaches_every_window():
    audio = corpus_audio("d01")
    prompt = "Stations, trains and timetables."
    prompted = model().transcribe_audio(audio, vad=False, initial_prompt=prompt)[0]
    alone = model().transcribe([audio], initial_prompt=prompt)[0]
    assert text_of(prompted) == " ".join(s.text.strip() for s in alone.segments)
    with pytest.raises(TypeError, match="unknown decoding option"):
        model().transcribe_audio(audio, beam_width=5)


def test_files_of_any_rate_and_layout(tmp_path):
    speech = corpus_audio("d01")
    rate8k = tmp_path / "d01_8k.wav"
    write_wav(rate8k, speech[::2], rate=8000)
    stereo = tmp_path / "d01_stereo.wav"
    write_wav(stereo, np.repeat(speech, 2), channels=2)
    silence = tmp_path / "silence.wav"
    write_wav(silence, np.zeros(16000 * 20, np.float32))
    empty = tmp_path / "empty.wav"
    write_wav(empty, np.zeros(0, np.float32))
    results = model().transcribe_audio([rate8k, stereo, silence, empty])
    assert "station" in text_of(results[0]) and "station" in text_of(results[1])
    assert results[2]["segments"] == [] and results[3]["segments"] == []


def test_bad_inputs_are_reported_and_the_others_finish(tmp_path):
    corrupt = tmp_path / "corrupt.mp3"
    corrupt.write_bytes(b"ID3 this is not audio" * 10)
    inputs = [tmp_path / "missing.wav", corrupt, DATA / "d02.wav", np.zeros((100, 2), np.float32)]
    out = dict(model().transcribe_audio_iter(inputs, on_error="yield"))
    assert isinstance(out[0], FileNotFoundError)
    assert isinstance(out[1], ValueError) and "corrupt.mp3" in str(out[1])
    assert isinstance(out[3], ValueError) and "mix it down" in str(out[3])
    assert "map" in text_of(out[2])
    with pytest.raises(FileNotFoundError):
        model().transcribe_audio([tmp_path / "missing.wav"])
    with pytest.raises(ValueError, match="chunk_size"):
        model().transcribe_audio([corpus_audio("d01")], chunk_size=45)


def test_cli_writes_every_format_and_reports_failures(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli([str(DATA / "long_60s.wav"), "-o", str(out), "--batch-size", "8"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"long_60s.{f}" for f in ("srt", "vtt", "json", "txt", "tsv")
    )
    result = json.loads((out / "long_60s.json").read_text())
    import srt
    import webvtt

    expected = [(round(s["start"], 3), round(s["end"], 3), s["text"]) for s in result["segments"]]
    cues = srt.parse((out / "long_60s.srt").read_text())
    assert [(c.start.total_seconds(), c.end.total_seconds(), c.content) for c in cues] == expected
    cues = webvtt.read(str(out / "long_60s.vtt"))
    assert [c.start for c in cues] == [format_timestamp(s["start"], always_hours=True) for s in result["segments"]]
    assert [html.unescape(c.raw_text) for c in cues] == [s["text"] for s in result["segments"]]
    assert "transcribed 1/1 files" in capsys.readouterr().out
    assert cli([str(DATA / "d05.wav"), str(tmp_path / "nope.wav"), "-o", str(out), "-f", "txt"]) == 1
    captured = capsys.readouterr()
    assert "nope.wav: failed" in captured.err and "transcribed 1/2 files" in captured.out
    assert (out / "d05.txt").exists()
    assert cli([str(DATA / "d05.wav"), "--model", str(tmp_path / "no-model")]) == 2
