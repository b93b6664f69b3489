import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlxbatchwhisper.audio import N_SAMPLES, SAMPLE_RATE, check_audio, load_audio, log_mel_spectrogram, mel_filters
from reference import DATA, corpus_audio, manifest, pyannote_sample

whisper = pytest.importorskip("whisper")
torch = pytest.importorskip("torch")


def openai_mel(audio: np.ndarray, n_mels: int) -> np.ndarray:
    mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.from_numpy(audio)), n_mels=n_mels)
    return mel.numpy().T


def windows(audio: np.ndarray) -> list[np.ndarray]:
    return [audio[i : i + N_SAMPLES] for i in range(0, len(audio), N_SAMPLES)]


@pytest.mark.parametrize("n_mels", [80, 128])
def test_mel_filters_match_openai(n_mels):
    ref = np.load(f"{whisper.__path__[0]}/assets/mel_filters.npz")[f"mel_{n_mels}"]
    assert np.abs(np.array(mel_filters(n_mels)) - ref).max() < 1e-6


@pytest.mark.parametrize("n_mels", [80, 128])
def test_log_mel_matches_openai_on_every_corpus_file(n_mels):
    audios = [w for name in manifest() for w in windows(corpus_audio(name))] + windows(pyannote_sample())
    worst = 0.0
    for start in range(0, len(audios), 8):
        batch = audios[start : start + 8]
        mel, valid = log_mel_spectrogram(batch, n_mels=n_mels)
        mel = np.array(mel)
        assert mel.shape == (len(batch), 3000, n_mels)
        assert valid == [len(a) // 160 for a in batch]
        for row, audio in zip(mel, batch):
            worst = max(worst, float(np.abs(row - openai_mel(audio, n_mels)).max()))
    assert worst <= 1e-4, worst


@settings(max_examples=15, deadline=None)
@given(st.lists(st.integers(0, N_SAMPLES), min_size=1, max_size=4), st.integers(0, 2**31 - 1))
def test_each_row_is_normalized_on_its_own(lengths, seed):
    rng = np.random.default_rng(seed)
    audios = [rng.normal(0, rng.uniform(0.01, 0.5), n).astype(np.float32) for n in lengths]
    batch, _ = log_mel_spectrogram(audios)
    for row, audio in zip(np.array(batch), audios):
        alone, _ = log_mel_spectrogram([audio])
        # equal up to BLAS rounding: another row's level would shift the clamp by far more
        assert np.abs(row - np.array(alone)[0]).max() < 1e-5


def test_silence_and_empty_audio_give_the_floor():
    mel, valid = log_mel_spectrogram([np.zeros(0, np.float32), np.zeros(SAMPLE_RATE, np.float32)])
    assert valid == [0, 100]
    assert np.allclose(np.array(mel), -1.5)  # log10(1e-10) = -10 → (-10 + 4) / 4


@pytest.mark.parametrize(
    "audio, error, match",
    [
        (np.zeros(100, np.int16), TypeError, "int16"),
        (np.zeros((16000, 2), np.float32), ValueError, "mix it down"),
        (np.array([0.0, np.nan], np.float32), ValueError, "NaN"),
        (np.array([0.0, 12000.0, -9000.0], np.float32), ValueError, "divide by 32768"),
        (np.zeros(N_SAMPLES + 1, np.float32), ValueError, "long-form"),
        (np.zeros((2, 2, 2), np.float32), ValueError, "1-D"),
    ],
)
def test_bad_audio_is_refused_clearly(audio, error, match):
    with pytest.raises(error, match=match):
        log_mel_spectrogram([audio])
    with pytest.raises(error, match=match):
        check_audio(audio, max_samples=N_SAMPLES)


def test_load_audio_matches_wav_reader_and_resamples(tmp_path):
    path = DATA / manifest()["d01"]["path"]
    assert np.array_equal(load_audio(path), corpus_audio("d01"))
    import av

    # a stereo 44.1 kHz file: mixed down and resampled to 16 kHz, duration kept
    t = np.arange(44100 * 2) / 44100
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t)]).astype(np.float32) * 0.5
    out = tmp_path / "tone.flac"
    with av.open(str(out), "w") as container:
        stream = container.add_stream("flac", rate=44100, layout="stereo")
        frame = av.AudioFrame.from_ndarray(
            (stereo * 32767).astype(np.int16).T.reshape(1, -1), format="s16", layout="stereo"
        )
        frame.rate = 44100
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    audio = load_audio(out)
    assert abs(len(audio) - 2 * SAMPLE_RATE) <= 160
    assert 0.3 < np.abs(audio).max() < 0.6


def test_load_audio_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_audio(tmp_path / "missing.wav")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really a wave file")
    with pytest.raises(ValueError, match="bad.wav"):
        load_audio(bad)


def test_load_audio_and_duration_from_file_objects():
    import io

    from mlxbatchwhisper.audio import audio_duration

    path = DATA / manifest()["d02"]["path"]
    data = io.BytesIO(path.read_bytes())
    assert audio_duration(data) == pytest.approx(manifest()["d02"]["duration_s"], abs=1e-3) == audio_duration(path)
    assert np.array_equal(load_audio(data), load_audio(path))  # read from the start, even after a first read
    assert np.array_equal(load_audio(data), load_audio(path))
    with pytest.raises(ValueError, match="audio bytes: cannot decode"):
        load_audio(io.BytesIO(b"RIFF not really a wave file"))
