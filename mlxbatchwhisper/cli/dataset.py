"""`mlxbatchwhisper-dataset`: transcribe a corpus on a Ray cluster into parquet or JSON-lines parts, resumably."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import uuid
from pathlib import Path

AUDIO_EXTENSIONS = {
    ".wav",
    ".flac",
    ".mp3",
    ".m4a",
    ".aac",
    ".ogg",
    ".opus",
    ".webm",
    ".mp4",
    ".mkv",
    ".mov",
    ".wma",
    ".aiff",
    ".aif",
    ".amr",
    ".3gp",
}
PART_EXTENSIONS = {"parquet": ".parquet", "jsonl": ".jsonl"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="mlxbatchwhisper-dataset",
        description="Transcribe many audio files on a Ray cluster (one model per worker, windows of each worker's "
        "files decoded together). Results go to --output as part files, one per finished block; "
        "running again over the same --output skips the files already there.",
    )
    parser.add_argument(
        "inputs",
        nargs="+",
        help="audio files or directories (searched recursively for audio "
        "extensions); local paths, or URIs pyarrow reads (s3://…, gs://…) visible to every worker",
    )
    parser.add_argument("--output", "-o", required=True, help="directory for the part files")
    parser.add_argument("--format", choices=sorted(PART_EXTENSIONS), default="parquet")
    parser.add_argument(
        "--address",
        default="local",
        help="'local' starts Ray on this machine; 'auto' joins the running cluster; or a ray:// address",
    )
    parser.add_argument("--workers", type=int, default=1, help="workers (actors), each with its own model")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (and CPUs reserved) per worker")
    parser.add_argument("--gpus", type=float, default=0, help="GPUs per worker (1 on GPU nodes)")
    parser.add_argument("--files-per-batch", type=int, default=8, help="files a worker transcribes together")
    parser.add_argument("--model", default="tiny.en", help="model name (tiny.en, base, …), path or hub repo id")
    parser.add_argument("--batch-size", default="16", help="windows decoded together, or 'auto' (from free memory)")
    parser.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32")
    parser.add_argument("--language", default=None, help="language code or name; detected per window if omitted")
    parser.add_argument("--task", choices=["transcribe", "translate"], default="transcribe")
    parser.add_argument(
        "--vad",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="cut at speech found by Silero VAD (default) or only at the quietest moments",
    )
    parser.add_argument("--beam-size", type=int, default=None, help="beam search width (default: greedy)")
    parser.add_argument("--word-timestamps", action="store_true", help="time every word (words in the segments JSON)")
    args = parser.parse_args(argv)
    for name in ("workers", "threads", "files_per_batch"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, not {getattr(args, name)}")
    if args.gpus < 0:
        parser.error(f"--gpus must be ≥ 0, not {args.gpus}")
    if args.batch_size != "auto":
        try:
            args.batch_size = int(args.batch_size)
        except ValueError:
            parser.error(f"--batch-size must be an integer or 'auto', not {args.batch_size!r}")
    return args


class PartStore:
    """A directory of result parts: each written under a temporary name and renamed when complete."""

    def __init__(self, directory: str | os.PathLike, fmt: str):
        self.directory, self.fmt = Path(directory), fmt
        self.directory.mkdir(parents=True, exist_ok=True)
        for stale in self.directory.glob(".part-*.tmp"):  # a run that died while writing
            stale.unlink()

    def done(self) -> set[str]:
        """Paths with a row in any complete part (transcribed or failed), whatever the parts' format."""
        import pyarrow.parquet as pq

        paths: set[str] = set()
        for part in self.directory.glob("part-*.parquet"):
            paths.update(pq.read_table(part, columns=["path"]).column("path").to_pylist())
        for part in self.directory.glob("part-*.jsonl"):
            with open(part, encoding="utf-8") as f:
                paths.update(json.loads(line)["path"] for line in f if line.strip())
        return paths

    def write(self, table) -> Path:
        """Write one block of rows as a new part, atomically."""
        import pyarrow.parquet as pq

        name = f"part-{time.time_ns()}-{uuid.uuid4().hex[:8]}{PART_EXTENSIONS[self.fmt]}"
        tmp, final = self.directory / f".{name}.tmp", self.directory / name
        if self.fmt == "parquet":
            pq.write_table(table, tmp)
        else:
            with open(tmp, "w", encoding="utf-8") as f:
                for row in table.to_pylist():
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, final)
        return final


def list_inputs(inputs: list[str]) -> list[str]:
    """Files named, and audio files under directories named, as absolute paths or URIs, each once.

    Largest first: long recordings start early instead of holding the job up at its end.
    """
    import pyarrow.fs as pafs

    sizes: dict[str, int] = {}
    for given in inputs:
        remote = "://" in given and not given.startswith("file://")
        if remote:
            fs, root = pafs.FileSystem.from_uri(given)
            scheme = given.split("://", 1)[0]
        else:
            fs, root, scheme = pafs.LocalFileSystem(), os.path.abspath(given.removeprefix("file://")), None
        info = fs.get_file_info(root)
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(f"input not found: {given}")
        if info.type == pafs.FileType.Directory:
            entries = [
                e
                for e in fs.get_file_info(pafs.FileSelector(root, recursive=True))
                if e.type == pafs.FileType.File and Path(e.path).suffix.lower() in AUDIO_EXTENSIONS
            ]
        else:
            entries = [info]
        sizes.update((f"{scheme}://{e.path}" if remote else e.path, e.size or 0) for e in entries)
    return sorted(sizes, key=lambda path: (-sizes[path], path))


def main(argv: list[str] | None = None) -> int:
    """Transcribe; exit status 0 if every file was transcribed, 1 if some failed, 2 on bad options or inputs
    (or a worker that cannot run them: parts already written stay, and a new run resumes)."""
    args = parse_args(argv)
    import ray
    import ray.data

    from ..distributed import transcribe_dataset

    try:
        files = list_inputs(args.inputs)
    except (OSError, ValueError) as e:
        print(f"mlxbatchwhisper-dataset: error: {e}", file=sys.stderr)
        return 2
    store = PartStore(args.output, args.format)
    done = store.done()
    todo = [f for f in files if f not in done]
    if not ray.is_initialized():
        ray.init(
            address=None if args.address == "local" else args.address,
            include_dashboard=False,
            logging_level=logging.WARNING,
        )
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    blocks = max(1, -(-len(todo) // args.files_per_batch))  # a block is one worker task
    ds = ray.data.from_items([{"path": f} for f in todo], override_num_blocks=blocks)
    try:
        out = transcribe_dataset(
            ds,
            model=args.model,
            batch_size=args.batch_size,
            concurrency=args.workers,
            num_gpus=args.gpus,
            files_per_batch=args.files_per_batch,
            threads=args.threads,
            dtype=args.dtype,
            language=args.language,
            task=args.task,
            vad=args.vad,
            beam_size=args.beam_size,
            word_timestamps=args.word_timestamps,
        )
    except (TypeError, ValueError) as e:
        print(f"mlxbatchwhisper-dataset: error: {e}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    try:
        failed, seconds = _write_all(out, store, len(todo)) if todo else (0, 0.0)
    except ray.exceptions.RayError as e:  # a worker that cannot start (bad model or option) or keeps failing
        lines = [line for line in str(e).splitlines() if line.strip()]
        print(f"mlxbatchwhisper-dataset: error: a worker failed: {lines[-1] if lines else e}", file=sys.stderr)
        return 2
    wall = time.perf_counter() - start
    print(
        f"transcribed {len(todo) - failed}/{len(todo)} files ({len(files) - len(todo)} already done), "
        f"{seconds / 3600:.3f} h of audio in {wall:.1f} s (RTF {seconds / max(wall, 1e-9):.1f}x, "
        f"{args.workers} workers), {failed} failed -> {args.output}"
    )
    return 0 if not failed else 1


def _write_all(out, store: PartStore, total: int) -> tuple[int, float]:
    """Stream the results into parts with a progress bar; (files failed, seconds of audio)."""
    from tqdm import tqdm

    failed, seconds, start = 0, 0.0, time.perf_counter()
    with tqdm(total=total, unit="file", desc="files", dynamic_ncols=True) as bar:
        for table in out.iter_batches(batch_format="pyarrow", batch_size=None):
            store.write(table)
            rows = table.select(["path", "duration", "error"]).to_pylist()
            for row in rows:
                if row["error"] is not None:
                    failed += 1
                    tqdm.write(f"{row['path']}: failed: {row['error']}", file=sys.stderr)
                seconds += row["duration"] or 0.0
            bar.update(len(rows))
            rtf = seconds / (time.perf_counter() - start)
            bar.set_postfix_str(f"audio {tqdm.format_interval(seconds)}, RTF {rtf:.1f}x")
    return failed, seconds


if __name__ == "__main__":
    sys.exit(main())
