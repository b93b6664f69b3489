"""Runtime set-up: bind a fast CBLAS before MLX loads, and report what is in use.

MLX's Linux CPU wheel links a reference BLAS, about 50x slower than OpenBLAS or MKL on
matrix products. Loading an optimized CBLAS with RTLD_GLOBAL before `mlx.core` is first
imported makes the dynamic linker resolve MLX's `cblas_*` calls to it.
"""

from __future__ import annotations

import ctypes
import glob
import os
import platform
import sys

BLAS_ENV = "MLXBATCHWHISPER_BLAS"

_SYSTEM_OPENBLAS = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
)

_bound: str | None = None
_bind_error: str | None = None


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
            lib.cblas_sgemm  # must export CBLAS
        except (OSError, AttributeError) as e:
            _bind_error = f"{path}: {e}"
            continue
        _bound = path
        return path
    return None


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
    return {
        "device": str(mx.default_device()),
        "blas": blas,
        "mlx": mx.__version__,
        "platform": f"{platform.system()} {platform.machine()}",
        "python": platform.python_version(),
    }
