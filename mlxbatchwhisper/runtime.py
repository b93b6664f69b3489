"""Runtime set-up on Linux: a fast CBLAS and a tuned allocator for MLX's CPU backend.

MLX's Linux CPU wheel links a reference BLAS, about 20-50x slower than OpenBLAS or MKL on
matrix products. Loading an optimized CBLAS with RTLD_GLOBAL before `mlx.core` is first
imported makes the dynamic linker resolve MLX's `cblas_*` calls to it.

MLX's CPU backend allocates its arrays with malloc. glibc serves large blocks with mmap and
returns them to the system on free, so every large temporary (attention scores: 54 MB per
layer for tiny) is page-faulted in again: that cost as much as the matrix product producing
it. Raising glibc's mmap and trim thresholds keeps such blocks in the heap for reuse.
"""

from __future__ import annotations

import ctypes
import glob
import os
import platform
import sys

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
_allocator = "default"


def _mkl_candidates() -> list[str]:
    roots = {sys.prefix, sys.base_prefix, os.path.dirname(os.path.dirname(sys.executable))}
    found = []
    for root in roots:
        found += sorted(glob.glob(os.path.join(root, "lib", "libmkl_rt.so*")))
    return found


def blas_candidates() -> list[str]:
    """Libraries to try, in order: $MLXBATCHWHISPER_BLAS, the system's OpenBLAS, MKL's wheel."""
    env = os.environ.get(BLAS_ENV)
    return ([env] if env else []) + [p for p in _SYSTEM_OPENBLAS if os.path.exists(p)] + _mkl_candidates()


def bind_fast_blas() -> str | None:
    """Load the first available optimized CBLAS globally; return its path (None if none or too late).

    Does nothing off Linux (macOS MLX uses Accelerate) or when MLX is already imported.
    Setting MLXBATCHWHISPER_BLAS=none disables the binding.
    """
    global _bound, _bind_error
    if _bound or platform.system() != "Linux" or os.environ.get(BLAS_ENV) == "none":
        return _bound
    if "mlx.core" in sys.modules:
        _bind_error = "mlx.core was imported before mlxbatchwhisper; reference BLAS in use"
        return None
    for path in blas_candidates():
        try:
            lib = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            _ = lib.cblas_sgemm  # must export CBLAS
        except (OSError, AttributeError) as e:
            _bind_error = f"{path}: {e}"
            continue
        _bound = path
        return path
    return None


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
    from .kernels import native_available

    return {
        "device": str(mx.default_device()),
        "blas": blas,
        "allocator": _allocator,
        "native_cpu_kernels": native_available(),
        "mlx": mx.__version__,
        "platform": f"{platform.system()} {platform.machine()}",
        "python": platform.python_version(),
    }
