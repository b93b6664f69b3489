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
