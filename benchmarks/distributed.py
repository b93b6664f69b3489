"""Scale-out on one machine: throughput of 1 worker × T threads against N workers × T threads through Ray Data.

    python benchmarks/distributed.py --model tiny.en --workers 1 2 --threads 1 --copies 2

Every run transcribes the same files (the corpus's English passages, `--copies` times over) on a
local Ray cluster with one CPU per thread; each worker loads its own model. Reported per run: wall
time from submitting the dataset to its last row (worker start and model load included), and the
steady rate from the first row to the last (audio seconds of the rows after the first batch).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import mlxbatchwhisper  # noqa: E402,F401  (binds the fast BLAS before anything imports mlx)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def run(files: list[str], model: str, workers: int, threads: int, files_per_batch: int) -> dict:
    import ray.data

    from mlxbatchwhisper.distributed import transcribe_dataset

    blocks = -(-len(files) // files_per_batch)
    ds = ray.data.from_items([{"path": f} for f in files], override_num_blocks=blocks)
    out = transcribe_dataset(ds, model=model, concurrency=workers, threads=threads, files_per_batch=files_per_batch)
    start, first, audio, after_first, rows, errors = time.perf_counter(), None, 0.0, 0.0, 0, 0
    for table in out.iter_batches(batch_format="pyarrow", batch_size=None):
        seconds = sum(d or 0.0 for d in table.column("duration").to_pylist())
        errors += table.num_rows - table.column("error").null_count
        rows += table.num_rows
        audio += seconds
        if first is None:
            first = time.perf_counter()
        else:
            after_first += seconds
    end = time.perf_counter()
    return {
        "workers": workers,
        "threads": threads,
        "files": rows,
        "errors": errors,
        "audio_s": round(audio, 1),
        "wall_s": round(end - start, 2),
        "rtf": round(audio / (end - start), 2),
        "steady_rtf": round(after_first / (end - first), 2) if end > first else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--threads", type=int, default=1, help="threads (and CPUs) per worker")
    parser.add_argument("--copies", type=int, default=2, help="times each corpus file is transcribed")
    parser.add_argument("--files-per-batch", type=int, default=4)
    parser.add_argument("--corpus", default=str(ROOT / "corpus-audio"))
    parser.add_argument("--output", default=None, help="also write the results here as JSON")
    args = parser.parse_args()

    import ray
    import ray.data

    manifest = json.loads((Path(args.corpus) / "manifest.json").read_text())["files"]
    english = [
        str(Path(args.corpus) / e["path"])
        for k, e in sorted(manifest.items())
        if k.startswith("d") and e["language"] == "en"
    ]
    files = english * args.copies
    load_before = os.getloadavg()
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    ray.init(num_cpus=max(args.workers) * args.threads, include_dashboard=False, logging_level="WARNING")
    ray.data.DataContext.get_current().enable_progress_bars = False
    results = [run(files, args.model, w, args.threads, args.files_per_batch) for w in args.workers]
    ray.shutdown()
    report = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "model": args.model,
        "files": len(files),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "runs": results,
    }
    base = results[0]
    print(
        f"CPU: {report['cpu']} ({report['cores']} cores), model {args.model}, {len(files)} files, "
        f"load average before/after {load_before[0]:.1f}/{report['load_average_after'][0]:.1f}"
    )
    print("| workers × threads | files | audio s | wall s | RTF | steady RTF | speed-up (wall) | speed-up (steady) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['workers']} × {r['threads']} | {r['files']} | {r['audio_s']} | {r['wall_s']} | {r['rtf']} | "
            f"{r['steady_rtf']} | {r['rtf'] / base['rtf']:.2f}× | {r['steady_rtf'] / base['steady_rtf']:.2f}× |"
        )
    if args.output:
        Path(args.output).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
