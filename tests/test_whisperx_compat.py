"""`mlxbatchwhisper.whisperx` against whisperX itself: its result types, writers, speaker assignment and alignment.

whisperX is installed without its dependencies (scripts/test.sh: its metadata pins torch 2.8, we test
beside torch 2.13). What these tests use needs no more than torch, transformers, pandas and nltk, except
two module-level imports of packages that have no build for our torch: `whisperx.diarize` imports
pyannote.audio (for its diarization pipeline, not for `assign_word_speakers`) and `whisperx.alignment`
imports torchaudio (for torchaudio's model bundles, not for aligning with a transformers model). Where those
packages are missing, empty placeholder modules stand in for them while whisperX's modules are imported;
the functions under test are whisperX's own.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import sys
import types

import numpy as np
import pytest

import mlxbatchwhisper.whisperx as wx
from mlxbatchwhisper.vad import VadOptions
from reference import DATA, manifest, read_wav, wer

whisperx = pytest.importorskip("whisperx")
pd = pytest.importorskip("pandas")


def import_whisperx(module: str, placeholders: dict[str, dict]) -> types.ModuleType:
    """A whisperX module, empty modules (with the given attributes) standing in for those of `placeholders`
    that are not installed while it is imported."""
    saved = {}
    for name, attributes in placeholders.items():
        parts = name.split(".")
        for sub in (".".join(parts[: i + 1]) for i in range(len(parts))):
            if not _installed(sub):
                saved[sub] = sys.modules.get(sub)
                sys.modules[sub] = types.ModuleType(sub)
        if name in saved:
            vars(sys.modules[name]).update(attributes)
    try:
        return importlib.import_module(module)
    finally:
        for sub, previous in saved.items():
            if previous is None:
                sys.modules.pop(sub, None)
            else:
                sys.modules[sub] = previous


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ModuleNotFoundError, ValueError):
        return False


@pytest.fixture(scope="module")
def pipeline() -> wx.WhisperXPipeline:
    return wx.load_model("tiny.en", "cpu", compute_type="float32")


@pytest.fixture(scope="module")
def audio() -> np.ndarray:
    manifest()  # the corpus must be there
    return wx.load_audio(str(DATA / "long_60s.wav"))


@pytest.fixture(scope="module")
def result(pipeline, audio) -> dict:
    return pipeline.transcribe(audio, batch_size=4)


def test_load_audio_is_mono_float32_at_16k():
    path = DATA / "d01.wav"
    manifest()
    samples = wx.load_audio(str(path))
    assert samples.dtype == np.float32 and samples.ndim == 1
    np.testing.assert_allclose(samples, read_wav(path), atol=1e-6)


def test_result_is_whisperx_transcription_result(result):
    schema = importlib.import_module("whisperx.schema")
    assert set(result) == set(schema.TranscriptionResult.__annotations__) == {"segments", "language"}
    assert result["language"] == "en"
    allowed = schema.SingleSegment.__required_keys__ | schema.SingleSegment.__optional_keys__
    assert len(result["segments"]) >= 2
    previous_end = 0.0
    for s in result["segments"]:
        assert list(s) == ["text", "start", "end", "avg_logprob"] and set(s) <= allowed
        assert schema.SingleSegment.__required_keys__ <= set(s)
        assert isinstance(s["text"], str) and s["text"] == s["text"].strip() and s["text"]
        assert previous_end <= s["start"] < s["end"] <= 60.0
        assert s["start"] == round(s["start"], 3) and s["end"] == round(s["end"], 3)
        previous_end = s["end"]
    reference = manifest()["long_60s"]["text"]
    assert wer([reference], [" ".join(s["text"] for s in result["segments"])]) < 0.3


def test_progress_and_verbose_print_as_whisperx(pipeline, audio, capsys):
    out = pipeline.transcribe(
        audio[: 16000 * 20], batch_size=2, print_progress=True, combined_progress=True, verbose=True
    )
    lines = capsys.readouterr().out.splitlines()
    progress = [float(m.group(1)) for m in map(re.compile(r"Progress: ([\d.]+)%\.\.\.").fullmatch, lines) if m]
    assert progress and progress == sorted(progress) and progress[-1] == 50.0  # the other half is alignment's
    transcripts = [line for line in lines if line.startswith("Transcript: [")]
    assert transcripts == [f"Transcript: [{s['start']} --> {s['end']}] {s['text']}" for s in out["segments"]]


def test_vad_options_chunk_size_limits_segments(pipeline, audio):
    short = wx.load_model("tiny.en", model=pipeline.model, vad_options={"chunk_size": 8})
    segments = short.transcribe(audio, batch_size=4)["segments"]
    assert len(segments) > 4 and all(s["end"] - s["start"] <= 8.0 for s in segments)


def test_suppress_numerals(pipeline):
    manifest()
    d04 = wx.load_audio(str(DATA / "d04.wav"))  # "...more than two hundred years old..."
    plain = pipeline.transcribe(d04)["segments"]
    assert re.search(r"\d", " ".join(s["text"] for s in plain))  # tiny.en writes "200"
    words = wx.load_model("tiny.en", model=pipeline.model, asr_options={"suppress_numerals": True})
    text = " ".join(s["text"] for s in words.transcribe(d04)["segments"])
    assert "hundred" in text.lower() and not re.search(r"[\d%$£]", text)


def test_asr_options_map_onto_ours():
    assert wx.AsrOptions().transcribe_options() == {
        "temperature": (0.0, 0.2, 0.4, 0.6, 0.8, 1.0),
        "beam_size": 5,
        "best_of": 5,
        "patience": 1.0,
        "length_penalty": None,
        "compression_ratio_threshold": 2.4,
        "logprob_threshold": -1.0,
        "no_speech_threshold": 0.6,
        "suppress_tokens": [-1],
        "suppress_blank": True,
        "without_timestamps": True,
        "max_initial_timestamp": 0.0,
        "sample_len": None,
    }
    options = wx.AsrOptions.from_dict(
        {
            "beam_size": 1,
            "temperatures": 0.2,
            "log_prob_threshold": None,
            "length_penalty": 0.5,
            "max_new_tokens": 40,
            "suppress_tokens": [1, 2],
        }
    )
    mapped = options.transcribe_options(numeral_tokens=(7,))
    assert mapped["beam_size"] is None and mapped["patience"] is None  # beam 1 is greedy
    assert mapped["temperature"] == (0.2,) and mapped["logprob_threshold"] is None
    assert mapped["length_penalty"] == 0.5 and mapped["sample_len"] == 40 and mapped["suppress_tokens"] == [1, 2, 7]


@pytest.mark.parametrize(
    "options, error",
    [
        ({"no_such_option": 1}, "unknown option.*no_such_option"),
        ({"condition_on_previous_text": True}, "condition_on_previous_text=True is not supported"),
        ({"hotwords": "MLX"}, "hotwords='MLX' is not supported"),
        ({"repetition_penalty": 1.2}, "repetition_penalty=1.2 is not supported"),
        ({"beam_size": 0}, "beam_size must be a positive integer"),
    ],
)
def test_asr_options_refused_by_name(options, error):
    with pytest.raises((ValueError, NotImplementedError), match=error):
        wx.AsrOptions.from_dict(options)


def test_vad_options_map_onto_ours():
    assert wx.vad_options_from_dict(None) == (VadOptions(0.5, 0.363, 30.0), 30.0)
    assert wx.vad_options_from_dict({"vad_onset": 0.6, "vad_offset": 0.4, "chunk_size": 12}) == (
        VadOptions(0.6, 0.4, 12.0),
        12.0,
    )
    for bad, error in (
        ({"vad_onset": 1.5}, "threshold"),
        ({"vad_offset": 0.7}, "neg_threshold"),
        ({"chunk_size": 40}, "chunk_size"),
        ({"onset": 0.5}, "unknown option.*onset"),
    ):
        with pytest.raises(ValueError, match=error):
            wx.vad_options_from_dict(bad)


def test_load_model_refuses_what_it_cannot_do(pipeline):
    with pytest.raises(ValueError, match="compute_type"):
        wx.load_model("tiny.en", "cpu", compute_type="int4", model=pipeline.model)
    with pytest.raises(ValueError, match="vad_method"):
        wx.load_model("tiny.en", "cpu", vad_method="webrtc", model=pipeline.model)
    with pytest.raises(ValueError, match="vad_model"):
        wx.load_model("tiny.en", "cpu", vad_model=object(), model=pipeline.model)
    with pytest.raises(ValueError, match="sample_len must be at least 1.*max_new_tokens is sample_len"):
        wx.load_model("tiny.en", asr_options={"max_new_tokens": 0}, model=pipeline.model)
    with pytest.raises(ValueError, match="length_penalty"):
        wx.load_model("tiny.en", "cpu", asr_options={"length_penalty": 2.0}, model=pipeline.model)
    with pytest.raises(ValueError, match="English-only"):
        wx.load_model("tiny", "cpu", language="de", model=pipeline.model)
    ignored = wx.load_model(
        "tiny.en",
        "cuda",
        device_index=3,
        compute_type="int8_float16",
        threads=8,
        download_root="/nowhere",
        local_files_only=True,
        model=pipeline.model,
    )
    assert ignored.preset_language == "en" and ignored.model is pipeline.model


def test_assign_word_speakers(result):
    diarize = import_whisperx("whisperx.diarize", {"pyannote.audio": {"Pipeline": object}})
    first = result["segments"][0]
    frame = pd.DataFrame(
        {"start": [0.0, first["end"] + 0.1], "end": [first["end"] + 0.1, 60.0], "speaker": ["SPEAKER_00", "SPEAKER_01"]}
    )
    copied = json.loads(json.dumps(result))
    labelled = diarize.assign_word_speakers(frame, copied)
    assert labelled["segments"][0]["speaker"] == "SPEAKER_00"
    assert labelled["segments"][-1]["speaker"] == "SPEAKER_01"
    assert [s["text"] for s in labelled["segments"]] == [s["text"] for s in result["segments"]]


def test_word_timestamps_give_words_that_assign_word_speakers_labels(audio):
    diarize = import_whisperx("whisperx.diarize", {"pyannote.audio": {"Pipeline": object}})
    timed = wx.load_model("tiny.en", "cpu", compute_type="float32", asr_options={"word_timestamps": True})
    result = timed.transcribe(audio[: 16000 * 20], batch_size=4)
    words = result["word_segments"]
    assert words and words == [w for s in result["segments"] for w in s["words"]]
    assert all(set(w) == {"word", "start", "end", "score"} for w in words)
    middle = words[len(words) // 2]["start"]
    frame = pd.DataFrame({"start": [0.0, middle], "end": [middle, 20.0], "speaker": ["SPEAKER_00", "SPEAKER_01"]})
    labelled = diarize.assign_word_speakers(frame, json.loads(json.dumps(result)))
    speakers = [w.get("speaker") for s in labelled["segments"] for w in s["words"]]
    assert speakers[0] == "SPEAKER_00" and speakers[-1] == "SPEAKER_01"


def test_whisperx_writers_take_our_result(result, tmp_path):
    import srt
    import webvtt
    from whisperx.utils import get_writer

    options = {"max_line_width": None, "max_line_count": None, "highlight_words": False}
    get_writer("all", str(tmp_path))(result, "talk.wav", options)
    get_writer("aud", str(tmp_path))(result, "talk.wav", options)
    texts = [s["text"] for s in result["segments"]]
    assert (tmp_path / "talk.txt").read_text().splitlines() == texts
    assert json.loads((tmp_path / "talk.json").read_text())["segments"] == result["segments"]
    subtitles = list(srt.parse((tmp_path / "talk.srt").read_text()))
    assert [s.content for s in subtitles] == texts
    assert [round(s.start.total_seconds(), 3) for s in subtitles] == [s["start"] for s in result["segments"]]
    assert [c.text for c in webvtt.read(str(tmp_path / "talk.vtt"))] == texts
    rows = (tmp_path / "talk.tsv").read_text().splitlines()
    assert rows[0] == "start\tend\ttext" and [r.split("\t")[2] for r in rows[1:]] == texts
    assert [float(r.split("\t")[0]) for r in (tmp_path / "talk.aud").read_text().splitlines()] == [
        s["start"] for s in result["segments"]
    ]


def test_whisperx_align_takes_our_result(result, audio, monkeypatch):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("nltk")
    alignment = import_whisperx("whisperx.alignment", {"torchaudio": {}})
    from nltk.tokenize.punkt import PunktSentenceTokenizer

    # sentence splitting without NLTK's data download: an untrained Punkt tokenizer
    monkeypatch.setattr(alignment, "nltk_load", lambda resource: PunktSentenceTokenizer())

    letters = ["<pad>", "|", *"abcdefghijklmnopqrstuvwxyz'"]
    torch.manual_seed(0)
    config = transformers.Wav2Vec2Config(
        vocab_size=len(letters),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
    )
    model = transformers.Wav2Vec2ForCTC(config).eval()
    metadata = {"language": "en", "dictionary": {c: i for i, c in enumerate(letters)}, "type": "huggingface"}

    aligned = alignment.align(result["segments"], model, metadata, audio, "cpu")
    assert set(aligned) == {"segments", "word_segments"}
    words = [w for s in aligned["segments"] for w in s["words"]]
    assert [w["word"] for w in words] == " ".join(s["text"] for s in result["segments"]).split()
    assert aligned["word_segments"] == words
    assert len(aligned["segments"]) >= len(result["segments"])  # split into sentences
    timed = [w for w in words if "start" in w]
    assert timed and all(
        any(s["start"] <= w["start"] <= w["end"] <= s["end"] + 0.02 for s in result["segments"]) for w in timed
    )
