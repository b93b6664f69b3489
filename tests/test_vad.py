"""Tests of the MLX Silero VAD port against silero-vad's ONNX model and its own Python code.

Data from scripts/make_test_data.py (tests skip what is missing; in CI a skip fails): the corpus WAVs and
pyannote's sample.wav in the test-data folder, and the unpacked silero-vad wheel in its
silero/ folder, whose silero_vad/data/silero_vad.onnx is the reference network and whose
silero_vad/utils_vad.py the reference timestamp code.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import wave
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlxbatchwhisper import vad
from reference import DATA

CORPUS = DATA
PYANNOTE_SAMPLE = DATA / "sample.wav"
SILERO_ONNX = DATA / "silero" / "silero_vad" / "data" / "silero_vad.onnx"
REPO = Path(__file__).resolve().parent.parent

# Name -> WAV path: every corpus file, then the pyannote sample. A missing corpus leaves a
# placeholder entry whose tests skip.
AUDIO = {p.stem: p for p in sorted(CORPUS.glob("*.wav")) if p != PYANNOTE_SAMPLE} or {"corpus": CORPUS / "missing.wav"}
AUDIO["pyannote_sample"] = PYANNOTE_SAMPLE

# Timestamp options exercised on real probabilities, beside the defaults.
OPTIONS = [
    {},
    {"max_speech_duration_s": 3.0},
    {"max_speech_duration_s": 3.0, "use_max_poss_sil_at_max_speech": False},
    {"threshold": 0.3, "min_silence_duration_ms": 300, "speech_pad_ms": 100},
    {"threshold": 0.7, "neg_threshold": 0.6, "min_speech_duration_ms": 500, "speech_pad_ms": 0},
]

# OpenBLAS sums in an order that depends on the matrix sizes, so a stream's probabilities
# in a batch differ from its probabilities alone by rounding (measured <= 3e-5); with a
# batch-invariant BLAS (MLX's own) they are equal.
BATCH_TOLERANCE = 1e-4


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path)) as f:
        assert (f.getframerate(), f.getnchannels(), f.getsampwidth()) == (16000, 1, 2), path
        pcm = np.frombuffer(f.readframes(f.getnframes()), np.int16)
    return pcm.astype(np.float32) / 32768


@functools.cache
def load(name: str) -> np.ndarray:
    path = AUDIO[name]
    if not path.exists():
        pytest.skip(f"{path} not found (run scripts/make_test_data.py)")
    return read_wav(path)


def available() -> dict[str, np.ndarray]:
    found = {name: load(name) for name in AUDIO if AUDIO[name].exists()}
    if not found:
        pytest.skip("no test audio (run scripts/make_test_data.py)")
    return found


@functools.cache
def onnx_session():
    ort = pytest.importorskip("onnxruntime")
    if not SILERO_ONNX.exists():
        pytest.skip(f"{SILERO_ONNX} not found (run scripts/make_test_data.py)")
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(str(SILERO_ONNX), options, providers=["CPUExecutionProvider"])


@functools.cache
def onnx_probabilities(name: str) -> np.ndarray:
    """The ONNX model run as silero's get_speech_timestamps runs it: chunk by chunk."""
    audio, session = load(name), onnx_session()
    n = -(-len(audio) // 512)
    padded = np.zeros(64 + 512 * n, np.float32)
    padded[64 : 64 + len(audio)] = audio
    state = np.zeros((2, 1, 128), np.float32)
    probs = np.empty(n, np.float32)
    for t in range(n):
        window = padded[None, 512 * t : 512 * t + 576]
        out, state = session.run(None, {"input": window, "state": state, "sr": np.array(16000)})
        probs[t] = out[0, 0]
    return probs


@functools.cache
def mlx_probabilities() -> dict[str, np.ndarray]:
    """MLX probabilities of all available audio, from one batched run."""
    audio = available()
    return dict(zip(audio, vad.speech_probabilities(list(audio.values()))))


@functools.cache
def silero_utils():
    """silero-vad's utils_vad module, loaded from the unpacked wheel (needs torch)."""
    pytest.importorskip("torch")
    pytest.importorskip("packaging")
    path = SILERO_ONNX.parent.parent / "utils_vad.py"
    if not path.exists():
        pytest.skip(f"{path} not found (run scripts/make_test_data.py)")
    spec = importlib.util.spec_from_file_location("silero_utils_vad", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# silero's own defaults where ours differ (VadOptions: chosen for transcription, docs/longform.md)
SILERO = {"min_silence_duration_ms": 100, "speech_pad_ms": 30}


def silero_timestamps(probs: np.ndarray, num_samples: int, **options) -> list[dict]:
    """silero-vad's own segment logic, converted to our seconds."""
    samples = silero_utils().get_speech_timestamps_from_probs(
        probs.tolist(), audio_length_samples=num_samples, **options
    )
    return [{"start": s["start"] / 16000, "end": s["end"] / 16000} for s in samples]


@pytest.mark.parametrize("name", AUDIO)
def test_network_matches_onnx(name):
    audio, reference = load(name), onnx_probabilities(name)
    ours = mlx_probabilities()[name]
    assert ours.shape == reference.shape
    assert np.abs(ours - reference).max() < 1e-3
    for options in OPTIONS:
        expected = vad.timestamps_from_probabilities(reference, len(audio), **options)
        assert vad.timestamps_from_probabilities(ours, len(audio), **options) == expected


@pytest.mark.parametrize("name", AUDIO)
def test_timestamps_match_silero(name):
    audio, probs = load(name), onnx_probabilities(name)
    for options in OPTIONS:
        expected = silero_timestamps(probs, len(audio), **options)
        assert vad.timestamps_from_probabilities(probs, len(audio), **{**SILERO, **options}) == expected


@pytest.mark.parametrize("name, options", [("long_60s", {}), ("pyannote_sample", {"max_speech_duration_s": 3.0})])
def test_end_to_end_matches_silero(name, options):
    """Our get_speech_timestamps against silero's, which runs its ONNX model itself."""
    if name not in AUDIO:
        pytest.skip(f"{name} not in the corpus")
    audio, utils = load(name), silero_utils()
    import torch

    model = utils.OnnxWrapper(str(SILERO_ONNX), force_onnx_cpu=True)
    samples = utils.get_speech_timestamps(torch.from_numpy(audio), model, **options)
    expected = [{"start": s["start"] / 16000, "end": s["end"] / 16000} for s in samples]
    assert vad.get_speech_timestamps(audio, **SILERO, **options) == expected


def test_batch_matches_one_by_one():
    audio = available()
    names = [n for n in audio if n != "long_form"][:6] + ["long_60s", "pyannote_sample"]
    rng = np.random.default_rng(0)
    extras = [np.zeros(0, np.float32), rng.uniform(-0.1, 0.1, 300).astype(np.float32)]
    batch = [audio[n] for n in dict.fromkeys(names) if n in audio] + extras
    together = vad.get_speech_timestamps_batch(batch, return_probabilities=True)
    for wav, (segments, probs) in zip(batch, together):
        alone, alone_probs = vad.get_speech_timestamps(wav, return_probabilities=True)
        assert probs.shape == alone_probs.shape == (math.ceil(len(wav) / 512),)
        if len(wav):
            assert np.abs(probs - alone_probs).max() <= BATCH_TOLERANCE
        assert segments == alone


def test_model_carries_state_across_calls():
    audio = available()
    wav = next(iter(audio.values()))[: 100 * 512]
    padded = np.concatenate([np.zeros(64, np.float32), wav])
    windows = np.stack([padded[i : i + 576] for i in range(0, 100 * 512, 512)])[None]
    model = vad.load_model()
    whole, _ = model(mx.array(windows))
    first, state = model(mx.array(windows[:, :37]))
    rest, _ = model(mx.array(windows[:, 37:]), state)
    split = np.concatenate([np.array(first), np.array(rest)], axis=1)
    assert np.abs(split - np.array(whole)).max() <= BATCH_TOLERANCE
    assert np.abs(np.array(whole)[0] - vad.speech_probabilities(wav)).max() <= BATCH_TOLERANCE


def test_shipped_weights_match_the_wheel():
    torch = pytest.importorskip("torch")
    jit = SILERO_ONNX.with_name("silero_vad.jit")
    if not jit.exists():
        pytest.skip(f"{jit} not found (run scripts/make_test_data.py)")
    path = REPO / "scripts" / "make_vad_weights.py"
    spec = importlib.util.spec_from_file_location("make_vad_weights", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    expected = script.convert(torch.jit.load(str(jit), map_location="cpu")._model.state_dict())
    shipped = dict(mx.load(str(vad.WEIGHTS)))
    assert shipped.keys() == expected.keys()
    for key, value in expected.items():
        np.testing.assert_array_equal(np.array(shipped[key]), value, err_msg=key)


def test_empty_and_short_audio():
    assert vad.get_speech_timestamps(np.zeros(0, np.float32)) == []
    segments, probs = vad.get_speech_timestamps(np.zeros(0), return_probabilities=True)
    assert segments == [] and probs.shape == (0,)
    assert vad.speech_probabilities(np.zeros(513, np.float64)).shape == (2,)
    assert vad.speech_probabilities([np.zeros(0), np.zeros(0)])[1].shape == (0,)


@pytest.mark.parametrize(
    "audio, error",
    [
        (np.zeros((2, 1600), np.float32), ValueError),
        (np.zeros((1600, 1), np.float32), ValueError),
        (np.float32(0.5), ValueError),
        (np.zeros(1600, np.int16), TypeError),
        (np.array([0.0, np.nan] * 800, np.float32), ValueError),
        (np.array([0.0, np.inf] * 800, np.float32), ValueError),
    ],
)
def test_rejects_bad_audio(audio, error):
    with pytest.raises(error):
        vad.get_speech_timestamps(audio)
    with pytest.raises(error):
        vad.get_speech_timestamps_batch([np.zeros(1600, np.float32), audio])
    with pytest.raises(error):
        vad.speech_probabilities([audio])


def test_rejects_other_sample_rates():
    with pytest.raises(ValueError, match="16000"):
        vad.get_speech_timestamps(np.zeros(1600, np.float32), sample_rate=8000)
    with pytest.raises(ValueError, match="16000"):
        vad.speech_probabilities(np.zeros(1600, np.float32), sample_rate=32000)


# Probability tracks made of runs, with values near the usual thresholds.
probability = st.one_of(st.floats(0, 1), st.sampled_from([0.0, 0.34, 0.35, 0.36, 0.49, 0.5, 0.51, 1.0]))
track = st.lists(st.tuples(probability, st.integers(1, 40)), max_size=30).map(
    lambda runs: np.array([p for p, n in runs for _ in range(n)], np.float32)
)
timestamp_options = st.fixed_dictionaries(
    {},
    optional={
        "threshold": st.floats(0.05, 0.95),
        "min_speech_duration_ms": st.integers(0, 1000),
        "min_silence_duration_ms": st.integers(0, 1000),
        "speech_pad_ms": st.integers(0, 300),
        "max_speech_duration_s": st.floats(0.05, 10),
        "min_silence_at_max_speech": st.integers(0, 300),
        "use_max_poss_sil_at_max_speech": st.booleans(),
    },
)


@st.composite
def cases(draw):
    probs = draw(track)
    options = draw(timestamp_options)
    if draw(st.booleans()):
        threshold = options.get("threshold", 0.5)
        options["neg_threshold"] = draw(st.floats(0, threshold))
    tail = draw(st.integers(0, 511)) if len(probs) else 0
    return probs, max(0, 512 * len(probs) - tail), options


@settings(max_examples=400, deadline=None)
@given(cases())
def test_timestamp_logic_equals_silero(case):
    probs, num_samples, options = case
    expected = silero_timestamps(probs, num_samples, **options)
    assert vad.timestamps_from_probabilities(probs, num_samples, **{**SILERO, **options}) == expected


@settings(max_examples=400, deadline=None)
@given(cases())
def test_timestamp_properties(case):
    probs, num_samples, options = case
    segments = vad.timestamps_from_probabilities(probs, num_samples, **options)
    bounds = [t for s in segments for t in (s["start"], s["end"])]
    assert bounds == sorted(bounds)
    assert all(0 <= t <= num_samples / 16000 for t in bounds)
    assert all(s["start"] < s["end"] for s in segments)
    if math.isinf(options.get("max_speech_duration_s", math.inf)):
        shortest = options.get("min_speech_duration_ms", 250) / 1000
        assert all(s["end"] - s["start"] > shortest - 1e-9 for s in segments)


def test_the_scheduler_cuts_on_the_vad_frame_grid():
    from mlxbatchwhisper import schedule
    from mlxbatchwhisper.audio import SAMPLE_RATE

    assert schedule.FRAME == vad.CHUNK / SAMPLE_RATE


@settings(max_examples=300, deadline=None)
@given(cases(), st.lists(st.integers(1, 60), min_size=1, max_size=8))
def test_regions_streamed_in_blocks_equal_the_whole_pass(case, sizes):
    """The hysteresis fed block by block gives each region once it is final, and the same regions."""
    probs, num_samples, options = case
    expected = [(s["start"], s["end"]) for s in vad.timestamps_from_probabilities(probs, num_samples, **options)]
    stream = vad.SpeechStream(**options)
    got, first, k = [], 0, 0
    while first < len(probs):
        block = probs[first : first + sizes[k % len(sizes)]]
        earliest = stream.earliest
        stream._machine.feed(block)
        first += len(block)
        stream.samples = min(num_samples, first * vad.CHUNK)
        new = stream._ready(final=False)
        assert all(start >= earliest for start, _ in new)  # nothing lands before what was promised
        got += new
        k += 1
    stream.samples = num_samples
    stream._machine.finish(num_samples)
    assert got + stream._ready(final=True) == expected


@pytest.mark.parametrize("block", [333, 16000, 700_001])
def test_speech_stream_equals_the_whole_input(block):
    """Fed in blocks of any size, the network's passes and so probabilities and regions are the whole input's."""
    audio = np.concatenate([load("long_form"), np.zeros(40_000, np.float32), load("long_60s")])
    regions, probs = vad.get_speech_timestamps(audio, return_probabilities=True, max_speech_duration_s=20)
    stream = vad.SpeechStream(max_speech_duration_s=20)
    got = []
    for start in range(0, len(audio), block):
        got += stream.feed(audio[start : start + block])
    got += stream.finish()
    assert np.array_equal(stream.probabilities, probs)
    assert got == [(r["start"], r["end"]) for r in regions] and len(got) > 5
