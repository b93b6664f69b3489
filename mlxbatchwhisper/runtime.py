"""Runtime set-up on Linux: a fast CBLAS and a tuned allocator for MLX's CPU backend.

MLX's Linux CPU wheel links a reference BLAS, about 20-50x slower than OpenBLAS or MKL on
matrix products. Loading an optimized CBLAS with RTLD_GLOBAL before `mlx.core` is first
imported makes the dynamic linker resolve MLX's `cblas_*` calls to it.

Which one is fastest depends on the CPU, so when there is a choice each candidate runs a short
set of float32 matrix products shaped like Whisper's (in a child process each, so the losers
are never loaded here); the results are cached per CPU model and library in
`~/.cache/mlxbatchwhisper/blas.json` ($XDG_CACHE_HOME is honoured), so this happens once per
machine.

MLX's CPU backend allocates its arrays with malloc. glibc serves large blocks with mmap and
returns them to the system on free, so every large temporary (attention scores: 54 MB per
layer for tiny) is page-faulted in again: that cost as much as the matrix product producing
it. Raising glibc's mmap and trim thresholds keeps such blocks in the heap for reuse.
"""

from __future__ import annotations

import ctypes
import glob
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

BLAS_ENV = "MLXBATCHWHISPER_BLAS"
MALLOC_ENV = "MLXBATCHWHISPER_MALLOC"
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3

_SYSTEM_OPENBLAS = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
)

_bound: str | None = None
_bind_error: str | None = None
_measured: dict[str, float] = {}  # GFLOP/s per candidate library
_chosen_by = "none"
_allocator = "default"

# (M, N, K, weight): blocks of an encoder projection and of attention scores, a decoding step's projection,
# MLP and vocabulary-head products for 16 rows. Each product is small (under ~1 ms) and timed at its
# fastest of 15 calls, so time slices lost to other processes on a busy machine drop out; the weights
# make the total about a Whisper batch's mix. Run in a child: ctypes only, no numpy, no MLX.
_SGEMM_PROBE = """
import ctypes, sys, time
lib = ctypes.CDLL(sys.argv[1])
f = lib.cblas_sgemm
f.restype = None
f.argtypes = [ctypes.c_int] * 6 + [ctypes.c_float, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int,
                                   ctypes.c_float, ctypes.c_void_p, ctypes.c_int]
flops = seconds = 0.0
for m, n, k, weight in ((256, 1536, 384, 4), (512, 512, 64, 2), (16, 384, 384, 40), (16, 1536, 384, 20),
                        (16, 4096, 384, 10)):
    a, b, c = (ctypes.c_float * (m * k))(), (ctypes.c_float * (k * n))(), (ctypes.c_float * (m * n))()
    f(101, 111, 112, m, n, k, 1.0, a, k, b, k, 0.0, c, n)  # warm-up: threads, packing buffers
    best = float("inf")
    for _ in range(15):
        start = time.perf_counter()
        f(101, 111, 112, m, n, k, 1.0, a, k, b, k, 0.0, c, n)
        best = min(best, time.perf_counter() - start)
    flops += 2.0 * m * n * k * weight
    seconds += best * weight
print(flops / seconds / 1e9)
"""


def _mkl_candidates() -> list[str]:
    roots = {sys.prefix, sys.base_prefix, os.path.dirname(os.path.dirname(sys.executable))}
    found = []
    for root in roots:
        found += sorted(glob.glob(os.path.join(root, "lib", "libmkl_rt.so*")))
    return found


def blas_candidates() -> list[str]:
    """Optimized CBLAS libraries found here: the system's OpenBLAS, MKL's wheel."""
    found = [p for p in _SYSTEM_OPENBLAS if os.path.exists(p)] + _mkl_candidates()
    unique = {os.path.realpath(p): p for p in reversed(found)}  # one path per library file
    return [p for p in found if unique[os.path.realpath(p)] == p]


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo), or the machine type."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "Model name")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cache_path() -> str:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "mlxbatchwhisper", "blas.json")


def _cache_key(path: str) -> str:
    real = os.path.realpath(path)
    st = os.stat(real)
    probe = hashlib.sha1(_SGEMM_PROBE.encode()).hexdigest()[:8]  # a changed probe measures again
    return f"{cpu_model()}|{os.cpu_count()}|{real}|{st.st_size}|{int(st.st_mtime)}|{probe}"


def measure_blas(path: str, timeout: float = 60.0) -> float:
    """GFLOP/s of `path`'s cblas_sgemm on one thread, Whisper-shaped float32 products (0.0 if it cannot run)."""
    # one thread: the ranking of the libraries' kernels, which other processes' load on the machine
    # barely moves (a multithreaded product waits for its slowest thread)
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    try:
        out = subprocess.run(
            [sys.executable, "-I", "-c", _SGEMM_PROBE, path], capture_output=True, text=True, timeout=timeout, env=env
        )
        return float(out.stdout.strip()) if out.returncode == 0 else 0.0
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return 0.0


def cached_measurement(key: str, measure: Callable[[], float]) -> float:
    """`measure()`, or what it gave before for `key` (kept with the BLAS measurements)."""
    cache_file = _cache_path()
    try:
        with open(cache_file) as f:
            cache = json.load(f)
    except (OSError, ValueError):
        cache = {}
    if key in cache:
        return cache[key]
    cache[key] = value = measure()
    try:
        os.makedirs(os.path.dirname(cache_file), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(cache_file))
        with os.fdopen(fd, "w") as f:
            json.dump(cache, f, indent=1)
        os.replace(tmp, cache_file)
    except OSError:  # read-only home: measured again next time
        pass
    return value


def _measured_speeds(paths: list[str]) -> dict[str, float]:
    """GFLOP/s per library, from the cache where this CPU and library were measured before."""
    return {path: cached_measurement(_cache_key(path), lambda path=path: measure_blas(path)) for path in paths}


def fastest_seconds(fn: Callable[[], object], repeat: int = 5) -> float:
    """Seconds of the fastest of `repeat` evaluations of `fn()`'s arrays, after one to warm up."""
    import mlx.core as mx

    mx.eval(fn())
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        mx.eval(fn())
        times.append(time.perf_counter() - start)
    return min(times)


def blas_key() -> str:
    """What identifies the bound BLAS on this CPU (for measurements that depend on it)."""
    return _cache_key(_bound) if _bound else f"{cpu_model()}|{os.cpu_count()}|no BLAS bound"


def _bind(path: str) -> bool:
    global _bound, _bind_error
    try:
        lib = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
        _ = lib.cblas_sgemm  # must export CBLAS
    except (OSError, AttributeError) as e:
        _bind_error = f"{path}: {e}"
        return False
    _bound = path
    return True


def bind_fast_blas() -> str | None:
    """Load the fastest available optimized CBLAS globally; return its path (None if none or too late).

    $MLXBATCHWHISPER_BLAS names a library to bind without measuring; `none` disables the binding.
    Does nothing off Linux (macOS MLX uses Accelerate) or when MLX is already imported.
    """
    global _bind_error, _measured, _chosen_by
    if _bound or platform.system() != "Linux" or os.environ.get(BLAS_ENV) == "none":
        return _bound
    if "mlx.core" in sys.modules:
        _bind_error = "mlx.core was imported before mlxbatchwhisper; reference BLAS in use"
        return None
    _quiet_blas_threads()
    if os.environ.get(BLAS_ENV):
        _chosen_by = f"${BLAS_ENV}"
        return _bound if _bind(os.environ[BLAS_ENV]) else None
    candidates = blas_candidates()
    if len(candidates) > 1:
        _measured = _measured_speeds(candidates)
        candidates = sorted(candidates, key=lambda p: -_measured[p])  # stable: ties keep the listed order
        _chosen_by = "measured"
    else:
        _chosen_by = "only candidate"
    for path in candidates:
        if _bind(path):
            return path
    return None


def _quiet_blas_threads() -> None:
    """Unless set: the BLAS's threads sleep right after a product instead of spinning on the cores that
    MLX's stream and the native kernels use next (MKL's OpenMP threads for 200 ms: KMP_BLOCKTIME=0; a
    decoding-step-shaped loop of products and native attention ran 1.1-2x faster on a 2-core Xeon;
    OpenBLAS's for 2^28 cycles: OPENBLAS_THREAD_TIMEOUT=4, its least; a tiny.en encoder window 10-25%
    faster on a 2-core AMD EPYC), and MKL uses the CPUs this process may run on."""
    os.environ.setdefault("KMP_BLOCKTIME", "0")
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
    if hasattr(os, "sched_getaffinity"):
        os.environ.setdefault("MKL_NUM_THREADS", str(len(os.sched_getaffinity(0))))


def set_blas_threads(n: int) -> bool:
    """Let the bound BLAS (OpenBLAS or MKL) use `n` threads; False if none that can be told is bound."""
    if n < 1:
        raise ValueError(f"threads must be at least 1, not {n}")
    if not _bound:
        return False
    lib = ctypes.CDLL(_bound)
    for name in ("openblas_set_num_threads", "MKL_Set_Num_Threads"):
        setter = getattr(lib, name, None)
        if setter is not None:
            setter(ctypes.c_int(n))
            return True
    return False


def tune_allocator() -> str:
    """Keep large blocks in glibc's heap (mmap threshold 1 GiB, trim threshold 2 GiB).

    Setting MLXBATCHWHISPER_MALLOC=default leaves the allocator alone.
    """
    global _allocator
    if platform.system() != "Linux" or os.environ.get(MALLOC_ENV) == "default" or _allocator != "default":
        return _allocator
    try:
        libc = ctypes.CDLL("libc.so.6")
        if libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30) and libc.mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1):
            _allocator = "glibc, large blocks kept in the heap"
    except (OSError, AttributeError):  # not glibc (musl, …)
        pass
    return _allocator


def release_free_memory() -> None:
    """Give back what the heap holds free (and MLX's cache of freed buffers), between pieces of work.

    With large blocks kept in the heap, the holes a piece of work leaves stay resident; the next piece
    would add its own on top, so a long input's peak would creep up piece by piece."""
    import mlx.core as mx

    mx.clear_cache()
    if _allocator != "default":
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def loaded_blas() -> list[str]:
    """Paths of BLAS libraries mapped into this process (from /proc/self/maps)."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "/" in line}
    except OSError:
        return []
    return sorted(p for p in paths if any(k in os.path.basename(p) for k in ("blas", "mkl_rt")))


def runtime_info() -> dict:
    """Device, BLAS library and MLX version in use."""
    import mlx.core as mx

    if platform.system() == "Darwin":
        blas = "Accelerate"
    elif _bound:
        blas = _bound
    else:
        blas = "reference (slow)" + (f": {_bind_error}" if _bind_error else "")
    from .kernels import NATIVE_STATUS, native_available
    from .layers import tiles_speedup

    return {
        "device": str(mx.default_device()),
        "cpu": cpu_model(),
        "blas": blas,
        "blas_chosen_by": _chosen_by,
        "blas_gflops": {path: round(g, 1) for path, g in _measured.items()},
        "allocator": _allocator,
        "native_cpu_kernels": native_available(),
        "linear_tiles_speedup": round(tiles_speedup("panels"), 2) if native_available() else None,
        "dot_products_speedup": round(tiles_speedup("dots"), 2) if native_available() else None,
        "native_cpu_kernels_status": NATIVE_STATUS,
        "mlx": mx.__version__,
        "platform": f"{platform.system()} {platform.machine()}",
        "python": platform.python_version(),
    }
