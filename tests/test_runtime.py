import json
import os
import subprocess
import sys

import pytest

import mlxbatchwhisper
from mlxbatchwhisper import runtime


def run_python(code: str, **env) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env}, check=True
    )
    return out.stdout.strip()


@pytest.mark.skipif(sys.platform != "linux", reason="the BLAS binding is for Linux")
def test_fast_blas_is_bound_and_mapped():
    if not runtime.blas_candidates():
        pytest.skip("no optimized BLAS installed here (install libopenblas0-pthread or the mkl wheel)")
    info = mlxbatchwhisper.runtime_info()
    assert info["blas"] == runtime._bound, info
    mapped = runtime.loaded_blas()
    assert any(os.path.realpath(p) == os.path.realpath(info["blas"]) for p in mapped), mapped
    assert set(info) >= {"device", "blas", "mlx"}


@pytest.mark.skipif(sys.platform != "linux", reason="the BLAS binding is for Linux")
def test_binding_can_be_disabled_and_reports_reference_blas():
    code = "import mlxbatchwhisper as m; print(m.runtime_info()['blas'])"
    assert run_python(code, MLXBATCHWHISPER_BLAS="none").startswith("reference")


@pytest.mark.skipif(sys.platform != "linux", reason="the BLAS binding is for Linux")
def test_environment_variable_names_the_library():
    candidates = [p for p in runtime.blas_candidates() if p != os.environ.get(runtime.BLAS_ENV)]
    if not candidates:
        pytest.skip("no optimized BLAS installed here")
    code = (
        "import mlxbatchwhisper as m; from mlxbatchwhisper import runtime as r; "
        "print(m.runtime_info()['blas']); print(r.loaded_blas())"
    )
    out = run_python(code, MLXBATCHWHISPER_BLAS=candidates[-1]).splitlines()
    assert out[0] == candidates[-1]
    assert os.path.realpath(candidates[-1]) in [os.path.realpath(p) for p in eval(out[1])]


def test_importing_mlx_first_is_reported():
    code = "import mlx.core; import mlxbatchwhisper as m; print(m.runtime_info()['blas'])"
    out = run_python(code)
    if sys.platform == "linux":
        assert "imported before mlxbatchwhisper" in out


@pytest.mark.skipif(sys.platform != "linux", reason="the BLAS binding is for Linux")
def test_blas_threads_can_be_set():
    """--threads: the bound OpenBLAS or MKL is told how many threads to use (in a child: the setting is global)."""
    code = (
        "import ctypes, mlxbatchwhisper; from mlxbatchwhisper import runtime as r; lib = ctypes.CDLL(r._bound)\n"
        "get = getattr(lib, 'openblas_get_num_threads', None) or lib.MKL_Get_Max_Threads\n"
        "print(r.set_blas_threads(1), get())"
    )
    assert run_python(code) == "True 1"
    with pytest.raises(ValueError, match="threads must be at least 1"):
        runtime.set_blas_threads(0)


def _choice_with_cache(tmp_path, speeds: dict[str, float]) -> dict:
    """runtime_info of a child whose BLAS cache holds `speeds` (GFLOP/s per candidate) for this machine."""
    cache = tmp_path / "mlxbatchwhisper" / "blas.json"
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({runtime._cache_key(p): g for p, g in speeds.items()}))
    return _child_runtime_info(tmp_path)


def _child_runtime_info(cache_home) -> dict:
    """runtime_info of a fresh interpreter (no $MLXBATCHWHISPER_BLAS) whose cache folder is `cache_home`."""
    code = "import json, mlxbatchwhisper as m; print(json.dumps(m.runtime_info()))"
    env = {k: v for k, v in os.environ.items() if k != runtime.BLAS_ENV}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**env, "XDG_CACHE_HOME": str(cache_home)},
    )
    return json.loads(out.stdout)


@pytest.mark.skipif(sys.platform != "linux", reason="the BLAS binding is for Linux")
def test_the_fastest_measured_blas_is_bound_whatever_the_order(tmp_path):
    candidates = runtime.blas_candidates()
    if len(candidates) < 2:
        pytest.skip("needs two optimized BLAS libraries (libopenblas0-pthread and the mkl wheel)")
    for fast in (candidates[0], candidates[-1]):
        info = _choice_with_cache(tmp_path, {p: 500.0 if p == fast else 1.0 for p in candidates})
        assert info["blas"] == fast and info["blas_chosen_by"] == "measured"
        assert info["blas_gflops"][fast] == 500.0


@pytest.mark.skipif(sys.platform != "linux", reason="the BLAS binding is for Linux")
def test_measurements_are_cached_per_cpu_and_library(tmp_path):
    candidates = runtime.blas_candidates()
    if len(candidates) < 2:
        pytest.skip("needs two optimized BLAS libraries (libopenblas0-pthread and the mkl wheel)")
    info = _child_runtime_info(tmp_path)
    cached = json.loads((tmp_path / "mlxbatchwhisper" / "blas.json").read_text())
    blas_keys = {runtime._cache_key(p) for p in candidates}
    tiles_keys = set(cached) - blas_keys  # the native kernels against the chosen BLAS (runtime_info asks)
    assert blas_keys <= set(cached) and len(tiles_keys) == (2 if info["native_cpu_kernels"] else 0)
    for key in tiles_keys:
        name = "linear_tiles_speedup" if key.startswith("linear panels") else "dot_products_speedup"
        assert info[name] == round(cached[key], 2)
    assert all(g > 0 for g in cached.values()), cached
    assert info["blas_gflops"] == {p: round(cached[runtime._cache_key(p)], 1) for p in candidates}
    assert info["blas"] == max(candidates, key=lambda p: cached[runtime._cache_key(p)])
    assert info["cpu"] == runtime.cpu_model() and runtime.cpu_model() in runtime._cache_key(candidates[0])


def test_a_library_that_cannot_multiply_measures_zero(tmp_path):
    assert runtime.measure_blas(str(tmp_path / "missing.so")) == 0.0
