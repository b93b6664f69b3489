"""Transcribing through Ray Data on a local cluster: same results as one machine, errors as rows, restarts, resume."""

import json
import os
import signal
import time
from pathlib import Path

import pytest
import ray  # the ray extra is part of the test extras: a missing Ray fails here, it is not skipped
import ray.data

from mlxbatchwhisper.cli import dataset as cli
from mlxbatchwhisper.distributed import TranscribeOptions, transcribe_dataset

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "corpus-audio"
WORKER = "MapWorker(MapBatches(Transcriber))"


@pytest.fixture(scope="module")
def cluster():
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def reference():
    from mlxbatchwhisper import BatchedWhisper

    model = BatchedWhisper.from_pretrained("tiny.en")
    return lambda paths, **options: dict(
        zip(map(str, paths), model.transcribe_audio([str(p) for p in paths], batch_size=16, **options))
    )


def corpus(*names: str) -> list[Path]:
    paths = [CORPUS / f"{n}.wav" for n in names]
    if not all(p.exists() for p in paths):
        pytest.fail(f"test audio missing in {CORPUS}: run scripts/make_test_data.py")
    return paths


def by_path(rows: list[dict]) -> dict[str, dict]:
    paths = [r["path"] for r in rows]
    assert len(paths) == len(set(paths)), f"a file came out more than once: {sorted(paths)}"
    return {r["path"]: r for r in rows}


def assert_same(row: dict, expected: dict) -> None:
    """Same text and times; probabilities to float rounding (other batch shapes sum in another order)."""
    assert row["error"] is None
    segments = json.loads(row["segments"])
    assert [(s["start"], s["end"], s["text"]) for s in segments] == [
        (s["start"], s["end"], s["text"]) for s in expected["segments"]
    ]
    for got, want in zip(segments, expected["segments"]):
        assert got["avg_logprob"] == pytest.approx(want["avg_logprob"], abs=1e-4)
        assert got["no_speech_prob"] == pytest.approx(want["no_speech_prob"], abs=1e-4)
    for got, want in zip(segments, expected["segments"]):
        assert [(w["word"], w["start"], w["end"]) for w in got.get("words", [])] == [
            (w["word"], w["start"], w["end"]) for w in want.get("words", [])
        ]
    assert row["text"] == " ".join(s["text"] for s in expected["segments"]) and row["text"]
    assert row["language"] == expected["language"]


def test_paths_give_one_machines_results_and_a_corrupt_file_its_error(cluster, reference, tmp_path):
    files = corpus("d01", "d02", "d03", "d04")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF" + b"\x00not audio" * 20)
    missing = tmp_path / "missing.wav"
    ds = ray.data.from_items([{"path": str(p)} for p in [*files, bad, missing]], override_num_blocks=3)
    rows = by_path(transcribe_dataset(ds, model="tiny.en", concurrency=2, files_per_batch=2).take_all())
    assert set(rows) == {str(p) for p in [*files, bad, missing]}
    for path, expected in reference(files).items():
        assert_same(rows[path], expected)
        assert rows[path]["duration"] == pytest.approx(float(manifest()[Path(path).stem]["duration_s"]), abs=0.01)
    for p in (bad, missing):
        assert rows[str(p)]["text"] is None and rows[str(p)]["segments"] is None
        assert str(p) in rows[str(p)]["error"]


def test_file_bytes_rows_with_word_timestamps(cluster, reference):
    files = corpus("d05", "d06")
    ds = ray.data.read_binary_files([str(p) for p in files], include_paths=True)
    rows = by_path(
        transcribe_dataset(
            ds, model="tiny.en", audio_column="bytes", files_per_batch=2, word_timestamps=True
        ).take_all()
    )
    for path, expected in reference(files, word_timestamps=True).items():
        assert all(s["words"] for s in expected["segments"])
        assert_same(rows[path], expected)


def test_a_killed_worker_still_yields_every_file_once(cluster, reference):
    files = corpus("d07", "d08", "d09", "d10", "d11", "d12")
    ds = ray.data.from_items([{"path": str(p)} for p in files], override_num_blocks=len(files))
    out = transcribe_dataset(ds, model="tiny.en", concurrency=2, files_per_batch=1)
    rows, killed, before = [], None, 0
    for batch in out.iter_batches(batch_format="pandas", batch_size=None):
        rows += batch.to_dict("records")
        if killed is None:
            killed, before = kill_one(WORKER), len(rows)
    assert killed is not None, "no worker process to kill"
    assert before < len(files), "the run ended before a worker could be killed"
    result = by_path(rows)
    assert set(result) == {str(p) for p in files}
    for path, expected in reference(files).items():
        assert_same(result[path], expected)


def test_cli_resumes_where_it_stopped(cluster, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for p in corpus("d13", "d14", "d15"):
        (inputs / p.name).symlink_to(p)
    (inputs / "notes.txt").write_text("not audio: skipped in directories")
    out = tmp_path / "out"
    args = ["-o", str(out), "--workers", "2", "--files-per-batch", "1", "--format", "jsonl"]
    assert cli.main([str(inputs / "d13.wav"), str(inputs / "d14.wav"), *args]) == 0  # a run that covered two
    (out / ".part-crashed.jsonl.tmp").write_text('{"path": "half written')  # and one that died mid-write
    first = set(out.glob("part-*"))
    assert cli.main([str(inputs), *args]) == 0
    new = set(out.glob("part-*")) - first
    assert [json.loads(line)["path"] for p in new for line in p.read_text().splitlines()] == [str(inputs / "d15.wav")]
    assert sorted(part_rows(out)) == sorted(str(inputs / f"d1{i}.wav") for i in (3, 4, 5))
    assert not list(out.glob(".part-*.tmp"))
    assert cli.main([str(inputs), *args, "--format", "parquet"]) == 0  # nothing left: no new parts
    assert set(out.glob("part-*")) == first | new


def test_cli_reports_a_worker_that_cannot_start(cluster, tmp_path, capsys):
    code = cli.main([str(corpus("d16")[0]), "-o", str(tmp_path / "out"), "--model", str(tmp_path / "no-model")])
    assert code == 2
    assert "a worker failed: FileNotFoundError: no checkpoint at" in capsys.readouterr().err
    assert not list((tmp_path / "out").glob("part-*"))


def test_options_are_checked_before_any_work():
    with pytest.raises(TypeError, match="unknown transcription option.*beam_width"):
        TranscribeOptions.from_kwargs(beam_width=5)
    assert TranscribeOptions.from_kwargs(beam_size=5).audio_kwargs()["beam_size"] == 5
    with pytest.raises(SystemExit):
        cli.parse_args(["x.wav", "-o", "out", "--workers", "0"])


def test_list_inputs_largest_first_each_once(tmp_path):
    (tmp_path / "sub").mkdir()
    for name, size in (("a.wav", 10), ("sub/b.flac", 30), ("c.MP3", 20), ("notes.txt", 99)):
        (tmp_path / name).write_bytes(b"x" * size)
    listed = cli.list_inputs([str(tmp_path), str(tmp_path / "a.wav"), str(tmp_path / "notes.txt")])
    assert listed == [str(tmp_path / n) for n in ("notes.txt", "sub/b.flac", "c.MP3", "a.wav")]
    with pytest.raises(FileNotFoundError, match="nope"):
        cli.list_inputs([str(tmp_path / "nope")])


def part_rows(out: Path) -> list[str]:
    return [json.loads(line)["path"] for p in out.glob("part-*.jsonl") for line in p.read_text().splitlines()]


def manifest() -> dict:
    return json.loads((CORPUS / "manifest.json").read_text())["files"]


def kill_one(title: str, timeout: float = 30.0) -> int | None:
    """SIGKILL one process whose command line (Ray's process title) names `title`; its pid."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or int(pid) == os.getpid():
                continue
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if title in cmdline:
                os.kill(int(pid), signal.SIGKILL)
                return int(pid)
        time.sleep(0.2)
    return None
