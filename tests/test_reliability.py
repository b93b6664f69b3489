"""Bad input, interruptions and odd paths: one test per case of the reliability issue (docs/reliability.md)."""

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from functools import cache
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from mlxbatchwhisper import BatchedWhisper
from mlxbatchwhisper.audio import load_audio
from mlxbatchwhisper.checkpoints import CheckpointError, load_model
from mlxbatchwhisper.cli.convert import main as convert_cli
from mlxbatchwhisper.cli.transcribe import main as cli
from mlxbatchwhisper.convert import convert, save_model
from mlxbatchwhisper.options import ModelOutputError
from mlxbatchwhisper.writers import output_names, write_result
from reference import DATA, corpus_audio

ROOT = Path(__file__).resolve().parents[1]
ONE_SECOND = [np.zeros(16000, np.float32)]


@cache
def model() -> BatchedWhisper:
    return BatchedWhisper.from_pretrained("tiny.en")


def text_of(result: dict) -> str:
    return " ".join(s["text"] for s in result["segments"])


@pytest.fixture(scope="module")
def mlx_dir(tmp_path_factory) -> Path:
    """tiny.en in the mlx-community layout, float32."""
    out = tmp_path_factory.mktemp("ckpt") / "tiny"
    save_model(load_model("tiny.en"), out)
    return out


# ---------------------------------------------------------------- options and inputs


@pytest.mark.parametrize(
    "options, match",
    [
        ({"temperature": "hot"}, "temperature must be one number"),
        ({"temperature": float("inf")}, "temperature must be a finite number"),
        ({"temperature": (0.0, "x")}, "temperature must be a finite number"),
        ({"temperature": -0.5}, "temperature must be ≥ 0"),
        ({"suppress_tokens": "abc"}, "suppress_tokens must be comma-separated token ids"),
        ({"suppress_tokens": [1.5]}, "suppress_tokens must be"),
        ({"max_initial_timestamp": -5}, "max_initial_timestamp must be ≥ 0"),
        ({"beam_size": 2, "patience": -1.0}, "patience must be > 0"),
        ({"beam_size": 2.5}, "beam_size must be an integer"),
        ({"length_penalty": "long"}, "length_penalty must be a finite number"),
        ({"sample_len": 0}, "sample_len must be at least 1"),
        ({"best_of": True}, "best_of must be an integer"),
        ({"seed": "x"}, "seed must be an integer"),
        ({"no_speech_threshold": 2}, "no_speech_threshold must be ≥ 0 and ≤ 1"),
        ({"compression_ratio_threshold": float("nan")}, "compression_ratio_threshold must be a finite number"),
        ({"suppress_blank": "yes"}, "suppress_blank must be True or False"),
    ],
)
def test_bad_options_are_refused_naming_the_option(options, match):
    with pytest.raises(ValueError, match=match):
        model().transcribe(ONE_SECOND, **options)
    with pytest.raises(ValueError, match=match):
        model().transcribe_audio(ONE_SECOND, **options)


def test_inputs_that_are_not_audio_are_refused_with_a_type_error():
    for bad in (5, None):
        with pytest.raises(TypeError, match="audio_or_paths must be a path, a 1-D float waveform, or a list"):
            model().transcribe_audio(bad)
    with pytest.raises(
        TypeError, match="input 1 must be a path, a binary file object or a 1-D float waveform, not int"
    ):
        model().transcribe_audio([ONE_SECOND[0], 5])


def test_two_dimensional_arrays_are_refused_with_how_to_pass_stereo_or_a_batch():
    left, right = corpus_audio("d01"), corpus_audio("d01") * 0.5
    with pytest.raises(ValueError, match=r"shape \(2, \d+\).*a.mean\(axis=0\).*list\(a\)"):
        model().transcribe_audio(np.stack([left, right]))
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"shape \(\d+, 2\).*a.mean\(axis=1\)"):
        model().transcribe(np.stack([left, right], 1))
    assert time.perf_counter() - start < 5  # refused, not decoded as two-sample segments


def test_per_input_language_and_initial_prompt():
    a, b = corpus_audio("d01"), corpus_audio("d02")
    prompt = "Trains, stations and maps."
    both = model().transcribe_audio([a, b], language=["en", "english"], initial_prompt=[prompt, None])
    assert text_of(both[0]) == text_of(model().transcribe_audio(a, language="en", initial_prompt=prompt)[0])
    assert text_of(both[1]) == text_of(model().transcribe_audio(b, language="en")[0])
    unprompted = model().transcribe_audio(a, language="en")[0]["segments"]
    assert [(s["end"], s["text"]) for s in both[0]["segments"]] != [(s["end"], s["text"]) for s in unprompted]  # used
    with pytest.raises(ValueError, match="initial_prompt has 1 entries for 2 inputs"):
        model().transcribe_audio([a, b], initial_prompt=[prompt])
    with pytest.raises(ValueError, match="language must be a language code or name"):
        model().transcribe_audio([a], language=[3])


def test_sample_rate_resamples_arrays_as_files_are():
    at_48k = load_audio(DATA / "d01.wav", sr=48000)
    from_file = model().transcribe_audio(DATA / "d01.wav")[0]
    assert "station" in text_of(from_file)
    assert text_of(model().transcribe_audio(at_48k, sample_rate=48000)[0]) == text_of(from_file)
    assert "station" in model().transcribe([at_48k], sample_rate=48000)[0].text
    for bad in (0, 16000.5, "16k", 10**7):
        with pytest.raises(ValueError, match="sample_rate must be"):
            model().transcribe_audio(at_48k, sample_rate=bad)


def test_on_error_raise_keeps_the_finished_results(tmp_path):
    corrupt = tmp_path / "corrupt.mp3"
    corrupt.write_bytes(b"ID3 this is not audio" * 10)
    with pytest.raises(ValueError, match="corrupt.mp3") as error:
        model().transcribe_audio([DATA / "d01.wav", DATA / "d02.wav", corrupt])
    partial = error.value.partial_results
    assert "station" in text_of(partial[0]) and "map" in text_of(partial[1]) and partial[2] is None
    progress = []
    with pytest.raises(FileNotFoundError, match="input 1: no such file"):
        list(model().transcribe_audio_iter([DATA / "d01.wav", tmp_path / "missing.wav"], progress=progress.append))
    assert progress == []  # found before any decoding


# ---------------------------------------------------------------- checkpoints and the converter


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("n_audio_head", 5, r"config\.json: n_audio_head \(5\) does not divide n_audio_state \(384\)"),
        ("n_text_layer", "four", r"config\.json: n_text_layer must be a positive integer, not 'four'"),
        ("n_vocab", 0, r"config\.json: n_vocab must be a positive integer"),
    ],
)
def test_bad_checkpoint_configs_name_the_file_and_field(tmp_path, mlx_dir, field, value, match):
    bad = tmp_path / "bad"
    shutil.copytree(mlx_dir, bad)
    config = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**config, field: value}))
    with pytest.raises(CheckpointError, match=match):
        load_model(bad)


def test_nan_weights_are_a_model_error_and_are_not_converted(tmp_path, mlx_dir):
    bad = tmp_path / "nan"
    bad.mkdir()
    shutil.copy(mlx_dir / "config.json", bad)
    weights = dict(mx.load(str(mlx_dir / "weights.safetensors")))
    weights["decoder.blocks.0.mlp1.weight"] = weights["decoder.blocks.0.mlp1.weight"] * float("nan")
    mx.save_safetensors(str(bad / "weights.safetensors"), weights)
    with pytest.raises(ModelOutputError, match=f"{bad}: the model computed NaN"):
        BatchedWhisper.from_pretrained(bad).transcribe([corpus_audio("d01")])
    with pytest.raises(ValueError, match=r"decoder\.blocks\.0\.mlp1\.weight.*refusing to write"):
        convert(bad, tmp_path / "out", quantize=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nan"]  # no output, no partial folder


def test_converter_folders_sigterm_and_quantization_flags(tmp_path, monkeypatch):
    old = os.umask(0o027)
    try:
        convert("tiny.en", tmp_path / "plain", dtype="float16")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "plain").stat().st_mode) == 0o750
    with pytest.raises(SystemExit) as exit_:
        convert_cli(["tiny.en", "-o", str(tmp_path / "q"), "--q-bits", "8"])
    assert exit_.value.code == 2 and not (tmp_path / "q").exists()

    def terminated(*args, **kwargs):  # SIGTERM arrives while the weights are being written
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)

    monkeypatch.setattr(mx, "save_safetensors", terminated)
    handler = signal.getsignal(signal.SIGTERM)
    assert convert_cli(["tiny.en", "-o", str(tmp_path / "killed")]) == 130
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain"]  # no hidden partial folder
    assert signal.getsignal(signal.SIGTERM) == handler  # the command's handler is gone again


def test_half_precision_on_the_cpu_warns(recwarn):
    load_model("tiny.en", "float16")
    warned = [w for w in recwarn if "slower than float32" in str(w.message)]
    assert len(warned) == (1 if mx.default_device() == mx.cpu else 0)


# ---------------------------------------------------------------- threads


THREADS = r"""
import sys, threading
from mlxbatchwhisper import BatchedWhisper
from mlxbatchwhisper.audio import load_audio
model = BatchedWhisper.from_pretrained("tiny.en")
files = [sys.argv[1], sys.argv[2]]
segment = [load_audio(files[0])]
out = {}
def work(k):
    try:
        out[k] = (model.transcribe(segment)[0].text, model.transcribe_audio(files, batch_size=2))
    except Exception as e:
        out[k] = repr(e)
first = threading.Thread(target=work, args=("first",))
first.start(); first.join()  # a model's first use in a worker thread
pair = [threading.Thread(target=work, args=(k,)) for k in ("a", "b")]
[t.start() for t in pair]; [t.join() for t in pair]  # two threads at once
serial = (model.transcribe(segment)[0].text, model.transcribe_audio(files, batch_size=2))
print("identical" if all(out[k] == serial for k in ("first", "a", "b")) else f"differ: {out} {serial}", flush=True)
"""


def test_a_model_is_usable_from_worker_threads_with_serial_results():
    run = subprocess.run(
        [sys.executable, "-c", THREADS, str(DATA / "d01.wav"), str(DATA / "d02.wav")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    assert run.stdout.strip().splitlines()[-1:] == ["identical"], run.stdout + run.stderr[-2000:]
    assert "Stream" not in run.stderr


# ---------------------------------------------------------------- long inputs and memory


def write_wav(path: Path, audio: np.ndarray) -> None:
    import wave

    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype(np.int16).tobytes())


def test_a_long_input_read_in_pieces_gives_the_whole_inputs_result(tmp_path, monkeypatch):
    """Past STREAM_SECONDS an input is read, VAD-ed and decoded in pieces: same segments as decoded whole."""
    from mlxbatchwhisper import jobs

    audio = np.concatenate([corpus_audio("long_60s"), np.zeros(16000 * 45, np.float32), corpus_audio("long_60s")])
    write_wav(tmp_path / "long.wav", audio)
    audio = load_audio(tmp_path / "long.wav")
    whole = model().transcribe_audio([audio], word_timestamps=True)[0]
    monkeypatch.setattr(jobs, "STREAM_SECONDS", 20.0)  # pieces of about 20 s of windows
    monkeypatch.setattr(jobs, "GROUP_SECONDS", 60.0)
    runs = []
    monkeypatch.setattr(
        jobs.LongFormJob, "run", lambda job, group, run=jobs.LongFormJob.run: runs.append(1) or run(job, group)
    )
    done = []
    for source in (audio, tmp_path / "long.wav"):  # an array, and a file decoded as it is read
        runs.clear()
        pieces = list(model().transcribe_audio_iter([source], word_timestamps=True, progress=done.append))
        assert [i for i, _ in pieces] == [0] and len(runs) >= 3
        streamed = pieces[0][1]
        assert sum(done) == pytest.approx(len(audio) / 16000) and streamed["language"] == whole["language"]
        assert len(streamed["segments"]) == len(whole["segments"]) > 10
        for a, b in zip(streamed["segments"], whole["segments"]):
            assert (a["start"], a["end"], a["text"]) == (b["start"], b["end"], b["text"])
            assert a["avg_logprob"] == pytest.approx(b["avg_logprob"], abs=1e-4)  # batch neighbours differ
            assert [(w["word"], w["start"], w["end"]) for w in a["words"]] == [
                (w["word"], w["start"], w["end"]) for w in b["words"]
            ]
        assert streamed["word_segments"] == [w for s in streamed["segments"] for w in s["words"]]
        done.clear()


def test_a_packed_segment_spanning_a_gap_is_cut_between_its_inputs():
    from mlxbatchwhisper.pieces import unpacked

    def word(w, start, end):
        return {"word": w, "start": start, "end": end, "score": 0.9}

    words = [word("Hello", 0.5, 1.0), word("there.", 1.0, 1.6), word("Next", 4.2, 4.6), word("one.", 4.6, 5.3)]
    one = {"start": 0.4, "end": 5.3, "text": " Hello there. Next one.", "avg_logprob": -0.2, "words": words}
    alone = {"start": 5.5, "end": 6.0, "text": " Yes.", "avg_logprob": -0.1, "words": [word("Yes.", 5.5, 6.0)]}
    out = dict(unpacked({"language": "en", "segments": [one, alone]}, [(5, 0.0, 2.0), (7, 4.0, 3.0), (9, 9.0, 1.0)]))
    assert [(s["start"], s["end"], s["text"]) for s in out[5]["segments"]] == [(0.5, 1.6, "Hello there.")]
    assert [(s["start"], s["end"], s["text"]) for s in out[7]["segments"]] == [
        (0.2, 1.3, "Next one."),
        (1.5, 2.0, " Yes."),
    ]
    assert out[7]["word_segments"] == [word("Next", 0.2, 0.6), word("one.", 0.6, 1.3), word("Yes.", 1.5, 2.0)]
    assert out[9] == {"segments": [], "language": "en", "word_segments": []}
    assert out[7]["segments"][0]["avg_logprob"] == -0.2


def test_packed_short_inputs_map_back_to_their_own_files():
    """pack_short_inputs: three passages share windows; each gets back its own text, on its own timeline."""
    from reference import manifest, wer

    names = ["d01", "d02", "d03"]
    audios = [corpus_audio(n) for n in names]
    done = []
    packed = model().transcribe_audio(audios, pack_short_inputs=True, word_timestamps=True, progress=done.append)
    assert sum(done) == pytest.approx(sum(len(a) for a in audios) / 16000)  # the gaps between them not counted
    for name, audio, result in zip(names, audios, packed):
        assert wer([manifest()[name]["text"]], [text_of(result)]) < 0.3
        others = " ".join(manifest()[n]["text"] for n in names if n != name)
        assert wer([others], [text_of(result)]) > 0.7
        times = [t for s in result["segments"] for t in (s["start"], s["end"])]
        assert times == sorted(times) and 0 <= times[0] and times[-1] <= len(audio) / 16000
        assert result["word_segments"] == [w for s in result["segments"] for w in s["words"]]
    plain = model().transcribe_audio(audios, pack_short_inputs=True)  # words only cut the packed text apart
    assert [text_of(r) for r in plain] == [text_of(r) for r in packed]
    assert all("words" not in s for r in plain for s in r["segments"]) and "word_segments" not in plain[0]
    with pytest.raises(ValueError, match="pack_short_inputs must be True or False"):
        model().transcribe_audio(audios[:1], pack_short_inputs="yes")


def test_remainders_of_packed_inputs_are_stitched_together(monkeypatch):
    """2 s pieces cut from one recording, packed: what Whisper leaves at the ends of their windows is
    decoded in shared windows of several stretches (fewer than one window each), and none of it is lost."""
    from mlxbatchwhisper import longform
    from mlxbatchwhisper.schedule import MAX_WINDOW
    from reference import wer

    audio = corpus_audio("long_form")[: 60 * 16000]
    pieces = np.split(audio, 30)
    windows = []
    original = longform.window_audio

    def spy(samples, window):
        windows.append(window)
        return original(samples, window)

    monkeypatch.setattr(longform, "window_audio", spy)
    packed = model().transcribe_audio(pieces, pack_short_inputs=True, language="en")
    stitched = [w for w in windows if w.parts]
    assert stitched and all(w.duration <= MAX_WINDOW for w in windows)
    assert len(windows) < 4 + len({p for w in stitched for p in w.parts})  # 3 planned windows (75 s packed)
    whole = " ".join(text_of(r) for r in model().transcribe_audio([audio], language="en"))
    assert wer([whole], [" ".join(text_of(r) for r in packed)]) < 0.3  # words cut at every edge are lost
    for piece, result in zip(pieces, packed):  # each input's segments in time order, inside it
        starts = [s["start"] for s in result["segments"]]
        assert starts == sorted(starts) and all(0 <= s["end"] <= len(piece) / 16000 for s in result["segments"])


MEMORY_PROBE = r"""
import resource, sys
from mlxbatchwhisper import BatchedWhisper
model = BatchedWhisper.from_pretrained("tiny.en")
result = model.transcribe_audio(sys.argv[1], batch_size=1)[0]  # batches as full in both
print(len(result["segments"]), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


def test_peak_memory_of_two_hours_is_that_of_ten_minutes(tmp_path):
    """A passage every five minutes, silence between: a 2 h file's peak RSS within 10% of a 10 min file's."""
    import wave

    speech = (corpus_audio("d01") * 32767).astype(np.int16)
    peaks = {}
    for minutes in (10, 120):
        path = tmp_path / f"{minutes}min.wav"
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
            for _ in range(0, minutes, 5):  # a passage in every five minutes
                w.writeframes(speech.tobytes() + bytes(2 * (16000 * 300 - len(speech))))
        out = subprocess.run(
            [sys.executable, "-c", MEMORY_PROBE, str(path)], capture_output=True, text=True, check=True, cwd=ROOT
        )
        segments, peaks[minutes] = map(int, out.stdout.split()[-2:])
        assert segments >= minutes // 5
        path.unlink()
    print(f"peak RSS: 10 min {peaks[10]} MB, 120 min {peaks[120]} MB")
    assert peaks[120] < 1.10 * peaks[10]  # measured +8% (batches of one row); before streaming, 3.5 times


def test_a_streamed_window_is_read_without_a_copy():
    """A long input's pieces hold each window's samples as a span: reading the window is a view of it,
    as slicing the whole input would be; a read across spans fills the samples not held with zeros."""
    from mlxbatchwhisper.pieces import Spans

    held = np.arange(1, 11, dtype=np.float32)
    spans = Spans(30, [(5, held), (20, held[:3])])
    window = spans[6:12]
    assert np.shares_memory(window, held) and window.tolist() == held[1:7].tolist()
    assert spans[3:23].tolist() == [0, 0, *held.tolist(), 0, 0, 0, 0, 0, 1, 2, 3]


# ---------------------------------------------------------------- the command


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "mlxbatchwhisper.cli.transcribe", *args]


def at_a_terminal() -> None:
    """Ctrl-C as a terminal delivers it: a test run started in the background (CI) ignores SIGINT, and
    its children inherit that, which the command honours (`test_an_ignored_ctrl_c_stays_ignored`)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_exits_130_with_one_line_and_no_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    files = [str(DATA / "long_form.wav")] * 3
    proc = subprocess.Popen(
        command(*files, "-o", str(tmp_path), "--batch-size", "2"),
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=at_a_terminal,
    )
    seen = b""
    while b"audio:" not in seen:  # the progress bar: the model is loaded and decoding has begun
        chunk = os.read(proc.stderr.fileno(), 4096)
        assert chunk, "the command ended before decoding"
        seen += chunk
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    err = (seen + err).decode()
    assert proc.returncode == 130
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    lines = [line for line in err.replace("\r", "\n").splitlines() if "interrupted" in line]
    assert len(lines) == 1 and f"files completed, transcripts in {tmp_path}" in lines[0], err[-1000:]


def test_an_interrupt_a_library_swallows_still_stops_the_command(tmp_path, monkeypatch, capsys):
    """PyAV's resampler swallows a KeyboardInterrupt raised while it runs (seen in CI: Ctrl-C, then exit 0
    after the whole run); the command raises it again at its next check."""
    real = BatchedWhisper.transcribe_audio_iter

    def swallowing(self, *args, **kwargs):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler runs here and its KeyboardInterrupt is dropped below
        except KeyboardInterrupt:
            pass
        yield from real(self, *args, **kwargs)

    monkeypatch.setattr(BatchedWhisper, "transcribe_audio_iter", swallowing)
    ignored = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as at a terminal (see `at_a_terminal`)
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    files = [str(DATA / f"d0{i}.wav") for i in (1, 2, 3)]
    try:
        assert cli([*files, "-o", str(tmp_path), "--batch-size", "1"]) == 130
    finally:
        restored = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGINT, ignored)
    assert "interrupted: 0/3 files completed" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    assert restored == handlers


def test_an_ignored_ctrl_c_stays_ignored():
    """A command started with SIGINT ignored (`cmd &` in a script) is not made interruptible by it."""
    from mlxbatchwhisper.cli import interrupts_unwind

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with interrupts_unwind():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) not in (before[1], signal.SIG_IGN)
            os.kill(os.getpid(), signal.SIGINT)  # ignored: nothing is raised
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN and signal.getsignal(signal.SIGTERM) == before[1]
    finally:
        signal.signal(signal.SIGINT, before[0])


def test_a_closed_stdout_is_not_an_error(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    files = [str(DATA / f"d0{i}.wav") for i in (1, 2, 3)]
    proc = subprocess.Popen(
        command(*files, "-o", str(tmp_path), "-f", "txt"),
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    first = proc.stdout.readline()  # as `| head -1` does: read one line, then close the pipe
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert b"d0" in first and proc.returncode == 0
    assert "Traceback" not in err and "BrokenPipe" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d01.txt", "d02.txt", "d03.txt"]


def test_output_names_never_collide(tmp_path, capsys):
    inputs = []
    for folder, name in (("c1", "x.wav"), ("c2", "x.wav"), ("c3", "x-2.wav"), ("c4", "X.wav")):
        (tmp_path / folder).mkdir()
        inputs.append(str(shutil.copy(DATA / "d05.wav", tmp_path / folder / name)))
    assert output_names(inputs) == ["x", "x-3", "x-2", "X-4"]
    out = tmp_path / "out"
    assert cli([*inputs, "-o", str(out), "-f", "txt"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["X-4.txt", "x-2.txt", "x-3.txt", "x.txt"]
    assert "transcribed 4/4 files" in capsys.readouterr().out


def test_existing_transcripts_are_kept_unless_overwrite(tmp_path, capsys):
    (tmp_path / "d05.txt").write_text("kept")
    assert cli([str(DATA / "d05.wav"), "-o", str(tmp_path), "-f", "txt"]) == 0
    assert (tmp_path / "d05.txt").read_text() == "kept"
    assert "skipped, its transcripts exist (--overwrite" in capsys.readouterr().out
    assert cli([str(DATA / "d05.wav"), "-o", str(tmp_path), "-f", "txt", "--overwrite"]) == 0
    assert (tmp_path / "d05.txt").read_text() != "kept"
    assert [p.name for p in tmp_path.iterdir()] == ["d05.txt"]  # no temporary files left


def test_many_short_files_without_packing_get_a_hint(tmp_path, capsys):
    """Twenty 1 s files (silence: nothing to decode) are each a window of their own unless packed: the
    command says so once, and not when --pack_short_inputs is given or the files are few."""
    import wave

    from mlxbatchwhisper.cli.transcribe import PACK_HINT_FILES

    files = []
    for k in range(PACK_HINT_FILES):
        files.append(str(tmp_path / f"s{k}.wav"))
        with wave.open(files[-1], "wb") as w:
            w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
            w.writeframes(bytes(2 * 16000))
    hint = f"{PACK_HINT_FILES} of {PACK_HINT_FILES} files are under 15 s"
    assert cli([*files, "-o", str(tmp_path / "a"), "-f", "txt"]) == 0
    assert capsys.readouterr().err.count(hint) == 1
    assert cli([*files, "-o", str(tmp_path / "b"), "-f", "txt", "--pack_short_inputs"]) == 0
    assert cli([*files[1:], "-o", str(tmp_path / "c"), "-f", "txt"]) == 0
    assert "--pack_short_inputs decodes" not in capsys.readouterr().err


def test_unusable_output_paths_are_refused_before_decoding(tmp_path, capsys):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    (tmp_path / "out" / "d05.json").mkdir(parents=True)
    cases = [
        (a_file, "exists and is not a directory"),
        (a_file / "sub", "cannot write there"),
        (tmp_path / "out", "transcript paths exist as directories"),
    ]
    for out, message in cases:
        start = time.perf_counter()
        assert cli([str(DATA / "d05.wav"), str(DATA / "d06.wav"), "-o", str(out)]) == 2
        captured = capsys.readouterr()
        assert message in captured.err and "audio" not in captured.err
        assert time.perf_counter() - start < 2  # before the model is even loaded
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["d05.json"]


def test_transcripts_are_written_atomically(tmp_path, monkeypatch):
    from mlxbatchwhisper import writers

    result = {"segments": [{"start": 0.0, "end": 1.0, "text": "hello"}], "language": "en"}
    write_result(result, "x", tmp_path, "txt")

    def broken(src, dst):  # the disk fills up as the new transcript is put in place
        raise OSError("disk full")

    monkeypatch.setattr(writers.os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        write_result({**result, "segments": []}, "x", tmp_path, "txt")
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"] and (tmp_path / "x.txt").read_text() == "hello\n"
