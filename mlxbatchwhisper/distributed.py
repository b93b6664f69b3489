"""Transcribing a Ray Dataset of audio files: one model per actor, the windows of each batch of files pooled.

Ray is optional (`pip install mlxbatchwhisper[ray]`). Each actor loads the model once; each Ray batch
of files goes through `BatchedWhisper.transcribe_audio_iter`, so windows are batched across files
inside every worker, and a file that cannot be read gets an `error` row instead of failing the job.
"""

from __future__ import annotations

import inspect
import io
import json
from dataclasses import asdict, dataclass, fields
from typing import Any, BinaryIO

try:
    import pyarrow as pa
    import pyarrow.fs as pafs
    import ray
    import ray.data
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("mlxbatchwhisper.distributed needs Ray Data: pip install 'mlxbatchwhisper[ray]'") from e

import mlx.core as mx

from .audio import audio_duration
from .checkpoints import DEFAULT_MODEL
from .kernels import THREADS_ENV
from .options import DecodingOptions
from .pipeline import BatchedWhisper

_LOAD = inspect.signature(BatchedWhisper.from_pretrained).parameters
_LONG = inspect.signature(BatchedWhisper.transcribe_audio_iter).parameters
_DECODE = {f.name: f for f in fields(DecodingOptions)}

# One row per input file; `segments` is a JSON list of {"start", "end", "text", ...} as transcribe_audio gives.
SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("text", pa.string()),
        ("language", pa.string()),
        ("duration", pa.float64()),
        ("segments", pa.string()),
        ("error", pa.string()),
    ]
)


@dataclass(frozen=True)
class TranscribeOptions:
    """What every worker runs: the model, and `transcribe_audio`'s options (same names and defaults)."""

    model: str = DEFAULT_MODEL
    dtype: str = _LOAD["dtype"].default
    batch_size: int | str = _LONG["batch_size"].default
    vad: bool = _LONG["vad"].default
    chunk_size: float = _LONG["chunk_size"].default
    language: str | None = _LONG["language"].default
    task: str = _DECODE["task"].default
    initial_prompt: str | None = _LONG["initial_prompt"].default
    without_timestamps: bool = _DECODE["without_timestamps"].default
    temperature: float | tuple[float, ...] = _DECODE["temperature"].default
    beam_size: int | None = _DECODE["beam_size"].default
    best_of: int = _DECODE["best_of"].default
    patience: float | None = _DECODE["patience"].default
    length_penalty: float | None = _DECODE["length_penalty"].default
    compression_ratio_threshold: float | None = _DECODE["compression_ratio_threshold"].default
    logprob_threshold: float | None = _DECODE["logprob_threshold"].default
    no_speech_threshold: float | None = _DECODE["no_speech_threshold"].default
    suppress_tokens: str | tuple[int, ...] | None = _DECODE["suppress_tokens"].default
    suppress_blank: bool = _DECODE["suppress_blank"].default
    max_initial_timestamp: float | None = _DECODE["max_initial_timestamp"].default
    sample_len: int | None = _DECODE["sample_len"].default
    seed: int = _DECODE["seed"].default
    word_timestamps: bool = _LONG["word_timestamps"].default
    prepend_punctuations: str = _LONG["prepend_punctuations"].default
    append_punctuations: str = _LONG["append_punctuations"].default

    @classmethod
    def from_kwargs(cls, **options: Any) -> TranscribeOptions:
        """Options by name, with a clear error for a name that is not one."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(f"unknown transcription option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**options)

    def audio_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `transcribe_audio_iter` (all but the model and dtype)."""
        kwargs = asdict(self)
        del kwargs["model"], kwargs["dtype"]
        return kwargs


class Transcriber:
    """A Ray Data worker: loads the model once, then transcribes each batch of files together."""

    def __init__(self, options: TranscribeOptions, audio_column: str):
        self.model = BatchedWhisper.from_pretrained(options.model, dtype=options.dtype)
        mx.eval(self.model.model.parameters())  # Ray calls the worker on another thread: nothing lazy may stay here
        self.kwargs = options.audio_kwargs()
        self.audio_column = audio_column
        list(self.model.transcribe_audio_iter([], **self.kwargs))  # bad options fail here, before any file

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self.audio_column not in batch.column_names:
            raise KeyError(
                f"audio_column {self.audio_column!r} is not a column of the dataset "
                f"(columns: {', '.join(batch.column_names)})"
            )
        values = batch.column(self.audio_column).to_pylist()
        paths = batch.column("path").to_pylist() if "path" in batch.column_names else [None] * len(values)
        rows: list[dict | None] = [None] * len(values)
        sources, keys = [], []
        for i, value in enumerate(values):
            try:
                sources.append(_source(value, paths[i]))
                keys.append(i)
            except (OSError, TypeError, ValueError) as e:
                rows[i] = _row(paths[i], e, None)
        for k, result in self.model.transcribe_audio_iter(sources, on_error="yield", **self.kwargs):
            i = keys[k]
            duration = audio_duration(sources[k]) if not isinstance(result, Exception) else None
            rows[i] = _row(paths[i], result, duration)
        return pa.Table.from_pylist(rows, schema=SCHEMA)


def transcribe_dataset(
    ds: ray.data.Dataset,
    model: str = TranscribeOptions.model,
    batch_size: int | str = TranscribeOptions.batch_size,
    concurrency: int = 1,
    num_gpus: float = 0,
    audio_column: str = "path",
    files_per_batch: int = 8,
    threads: int = 1,
    **options: Any,
) -> ray.data.Dataset:
    """Transcribe the audio files of a Ray Dataset on `concurrency` actors, one model each.

    `audio_column` holds each file as a path (local, or a URI pyarrow's filesystems read, e.g.
    s3://…) or as the file's bytes (`ray.data.read_binary_files(..., include_paths=True)` gives
    "bytes" and "path"). Each actor takes `files_per_batch` files at a time and decodes their
    windows together in batches of `batch_size`; it reserves `threads` CPUs and limits its BLAS
    and native kernels to as many threads (`num_gpus=1`: one GPU each). `options` are
    `transcribe_audio`'s (see `TranscribeOptions`). A block of `ds` is one worker task: give it at
    least `concurrency` blocks (`ray.data.from_items(rows, override_num_blocks=...)`), and leave
    upstream operators (reads) a CPU the workers don't reserve.

    Returns a dataset of SCHEMA rows, one per input row: an unreadable file has its message in
    `error` (and null text), never failing the job; actors that die are restarted and their
    batches retried (Ray Data's defaults), so every input comes out exactly once.
    """
    opts = TranscribeOptions.from_kwargs(model=model, batch_size=batch_size, **options)
    for name, value in (("concurrency", concurrency), ("files_per_batch", files_per_batch), ("threads", threads)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, not {value!r}")
    if not isinstance(num_gpus, (int, float)) or isinstance(num_gpus, bool) or num_gpus < 0:
        raise ValueError(f"num_gpus must be a number ≥ 0 (GPUs per worker), not {num_gpus!r}")
    limit = {name: str(threads) for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", THREADS_ENV)}
    return ds.map_batches(
        Transcriber,
        fn_constructor_kwargs={"options": opts, "audio_column": audio_column},
        batch_size=files_per_batch,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=concurrency),
        num_cpus=threads,
        num_gpus=num_gpus,
        runtime_env={"env_vars": limit},
        udf_modifying_row_count=False,
    )


def _source(value: Any, name: str | None) -> str | BinaryIO:
    """What `transcribe_audio_iter` reads: a local path as is; bytes, or a remote URI's bytes, as a file object."""
    if isinstance(value, (bytes, bytearray)):
        data = io.BytesIO(value)
        data.name = name or "audio bytes"
        return data
    if not isinstance(value, str):
        raise TypeError(f"an audio value must be a path or the file's bytes, not {type(value).__name__}")
    if "://" not in value or value.startswith("file://"):
        return value.removeprefix("file://")
    fs, path = pafs.FileSystem.from_uri(value)
    with fs.open_input_stream(path) as f:
        data = io.BytesIO(f.read())
    data.name = value
    return data


def _row(path: str | None, result: dict | Exception, duration: float | None) -> dict:
    """One output row: the transcript, or the error that stopped it."""
    if isinstance(result, Exception):
        return {
            "path": path,
            "text": None,
            "language": None,
            "duration": None,
            "segments": None,
            "error": f"{type(result).__name__}: {result}",
        }
    return {
        "path": path,
        "text": " ".join(s["text"] for s in result["segments"]),
        "language": result["language"],
        "duration": duration,
        "segments": json.dumps(result["segments"], ensure_ascii=False),
        "error": None,
    }
