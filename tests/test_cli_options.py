"""The CLI's options: both spellings, openai-whisper's defaults, and how they become `transcribe_audio` options."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from mlxbatchwhisper.cli.transcribe import print_segments
from mlxbatchwhisper.cli.transcribe_args import build_parser, parse_args, transcribe_options
from mlxbatchwhisper.options import DEFAULT_TEMPERATURES
from mlxbatchwhisper.tokenizer import get_tokenizer
from mlxbatchwhisper.vad import VadOptions
from mlxbatchwhisper.words import WordOptions
from reference import DATA, ROOT, manifest

TOKENIZER = get_tokenizer(multilingual=False)

# (option, a value, the parsed attribute's value)
VALUED = [
    ("batch_size", "8", 8),
    ("chunk_size", "12.5", 12.5),
    ("output_dir", "out", "out"),
    ("output_format", "srt", "srt"),
    ("beam_size", "3", 3),
    ("best_of", "2", 2),
    ("length_penalty", "0.5", 0.5),
    ("suppress_tokens", "1,2", [1, 2]),
    ("initial_prompt", "Hello.", "Hello."),
    ("condition_on_previous_text", "False", False),
    ("compression_ratio_threshold", "2.0", 2.0),
    ("logprob_threshold", "None", None),
    ("no_speech_threshold", "0.5", 0.5),
    ("vad_onset", "0.6", 0.6),
    ("vad_offset", "0.3", 0.3),
    ("temperature_increment_on_fallback", "0.25", 0.25),
    ("print_progress", "True", True),
    ("threads", "2", 2),
    ("fp16", "False", False),
    ("cross_kv", "absorbed", "absorbed"),
]


@pytest.mark.parametrize("name, value, parsed", VALUED)
def test_both_spellings(name, value, parsed):
    for flag in (f"--{name}", f"--{name.replace('_', '-')}"):
        assert getattr(parse_args(["a.wav", flag, value]), name) == parsed, flag


def test_every_option_has_both_spellings():
    for action in build_parser()._actions:
        long = [o for o in action.option_strings if o.startswith("--") and o != "--help"]
        for option in long:
            other = "--" + (option[2:].replace("_", "-") if "_" in option else option[2:].replace("-", "_"))
            assert other in build_parser()._option_string_actions, f"{option} has no {other}"


def test_openai_whisper_defaults():
    args = parse_args(["a.wav"])
    expected = {
        "temperature": [0.0],
        "temperature_increment_on_fallback": 0.2,
        "best_of": 5,
        "beam_size": 5,
        "patience": None,
        "length_penalty": None,
        "suppress_tokens": [-1],
        "initial_prompt": None,
        "condition_on_previous_text": True,
        "fp16": True,
        "compression_ratio_threshold": 2.4,
        "logprob_threshold": -1.0,
        "no_speech_threshold": 0.6,
        "threads": 0,
        "output_dir": ".",
        "output_format": "all",
        "task": "transcribe",
        "language": None,
    }
    assert {k: getattr(args, k) for k in expected} == expected
    assert args.dtype == "float32"  # fp16 on the CPU is float32, as in openai-whisper
    assert args.vad_options == VadOptions()


def test_default_options_are_the_pipelines():
    options = transcribe_options(parse_args(["a.wav"]), TOKENIZER)
    assert options == {
        "temperature": DEFAULT_TEMPERATURES,
        "beam_size": 5,
        "best_of": 5,
        "patience": None,
        "length_penalty": None,
        "suppress_tokens": [-1],
        "compression_ratio_threshold": 2.4,
        "logprob_threshold": -1.0,
        "no_speech_threshold": 0.6,
        "initial_prompt": None,
        "vad_options": VadOptions(),
        "mode": "vad",
        "pack_short_inputs": False,
        "condition_on_previous_text": True,
        "clip_timestamps": "0",
        "carry_initial_prompt": False,
        "hallucination_silence_threshold": None,
        "word_timestamps": False,
        "prepend_punctuations": WordOptions.prepend_punctuations,
        "append_punctuations": WordOptions.append_punctuations,
    }


@pytest.mark.parametrize(
    "argv, temperatures",
    [
        (["--temperature", "0.4"], (0.4, 0.6, 0.8, 1.0)),
        (["--temperature", "0.4", "--temperature_increment_on_fallback", "None"], (0.4,)),
        (["--temperature", "0", "--temperature_increment_on_fallback", "0.5"], (0.0, 0.5, 1.0)),
        (["--temperature", "0", "0.3"], (0.0, 0.3)),
        (["--temperature", "1.5"], (1.5,)),
    ],
)
def test_temperatures(argv, temperatures):
    assert transcribe_options(parse_args(["a.wav", *argv]), TOKENIZER)["temperature"] == temperatures


def test_mapping_onto_options():
    argv = ["a.wav", "--beam_size", "1", "--best-of", "None", "--suppress_numerals", "--vad-onset", "0.6"]
    argv += ["--vad_offset", "0.4", "--initial-prompt", "Names.", "--dtype", "bfloat16", "--no_vad"]
    args = parse_args(argv)
    options = transcribe_options(args, TOKENIZER)
    assert options["beam_size"] is None and options["best_of"] == 1  # one beam is greedy
    assert options["suppress_tokens"] == [-1, *TOKENIZER.numeral_symbol_tokens]
    assert options["vad_options"] == VadOptions(threshold=0.6, neg_threshold=0.4)
    assert options["initial_prompt"] == "Names." and args.dtype == "bfloat16" and args.vad is False


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--patience", "2", "--beam_size", "1"], "--patience needs --beam_size"),
        (["--suppress_tokens", "1,x"], "--suppress_tokens must be comma-separated"),
        (["--vad_offset", "0.9"], "neg_threshold"),
        (["--batch_size", "many"], "--batch_size must be an integer or 'auto'"),
        (["--threads", "-1"], "--threads must be"),
        (["--fp16", "maybe"], "expected True or False"),
    ],
)
def test_bad_options_exit_2_naming_the_option(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_args(["a.wav", *argv])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_print_segments(capsys):
    print_segments({"segments": [{"start": 1.5, "end": 62.25, "text": "Hello there."}]})
    assert capsys.readouterr().out == "[00:01.500 --> 01:02.250] Hello there.\n"


def test_cli_run_with_whisper_spellings(tmp_path):
    manifest()
    argv = ["--output_dir", str(tmp_path), "--output_format", "txt", "--batch_size", "2", "--beam_size", "1"]
    argv += ["--verbose", "True", "--threads", "1", "--suppress_numerals", "--logprob_threshold", "None"]
    run = subprocess.run(
        [sys.executable, "-m", "mlxbatchwhisper.cli.transcribe", str(DATA / "d04.wav"), *argv],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    text = (tmp_path / "d04.txt").read_text()
    assert "hundred" in text.lower() and not re.search(r"\d", text)
    printed = re.findall(r"^\[\d\d:\d\d\.\d{3} --> \d\d:\d\d\.\d{3}\] (.*)$", run.stdout, re.M)
    assert printed == text.splitlines()


def test_cross_kv_ways_give_the_same_transcript(tmp_path):
    """--cross_kv absorbed and int8 load the model that way (tiny.en: the same text as full K/V here)."""
    from mlxbatchwhisper.cli import transcribe as cli
    from mlxbatchwhisper.pipeline import BatchedWhisper

    loaded = []
    real = BatchedWhisper.from_pretrained.__func__

    def recording(cls, *args, **kwargs):
        model = real(cls, *args, **kwargs)
        loaded.append((model.model.decoder.kv_bits, model.model.decoder.absorbed))
        return model

    texts = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(BatchedWhisper, "from_pretrained", classmethod(recording))
        for way in ("full", "int8", "absorbed"):
            out = tmp_path / way
            assert cli.main([str(DATA / "d01.wav"), "-o", str(out), "-f", "txt", "--cross_kv", way]) == 0
            texts[way] = (out / "d01.txt").read_text()
    assert loaded == [(None, False), (8, False), (None, True)]
    assert texts["int8"] == texts["absorbed"] == texts["full"] and texts["full"].strip()
