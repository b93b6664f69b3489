"""Builds the optional CPU kernels (mlxbatchwhisper/_kernels.cpp); everything else is in pyproject.toml.

The kernels are MLX primitives, compiled against the installed MLX's headers and libmlx with
nanobind, so they need the MLX they will run with at build time:
`pip install nanobind && pip install --no-build-isolation -e .` (or `python setup.py build_ext --inplace`).
Without MLX's headers, nanobind or a C++ compiler the extension is skipped, and the package runs on
MLX's own (slower) CPU kernels.
"""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


def _paths() -> tuple[str, str, str] | None:
    """(MLX package dir, nanobind package dir, MLX version) when both can be imported."""
    try:
        import mlx.core
        import nanobind
    except ImportError:
        return None
    mlx_dir = os.path.dirname(os.path.dirname(os.path.abspath(mlx.core.__file__)))
    return os.path.join(mlx_dir, "mlx"), os.path.dirname(os.path.abspath(nanobind.__file__)), mlx.core.__version__


class BuildNanobind(build_ext):
    """Compiles nanobind's runtime with the standard flags and only our kernels with -ffast-math."""

    def build_extension(self, ext: Extension) -> None:
        support = getattr(ext, "nanobind_sources", [])
        if support:
            objects = self.compiler.compile(
                support,
                output_dir=self.build_temp,
                include_dirs=ext.include_dirs,
                macros=ext.define_macros,
                extra_postargs=["-std=c++20", "-O2", "-g0", "-fPIC", "-fvisibility=hidden"],
            )
            ext.extra_objects = objects
        super().build_extension(ext)


def _extensions() -> list[Extension]:
    found = _paths()
    if found is None or sys.platform not in ("linux", "darwin"):
        print("mlxbatchwhisper: MLX or nanobind not importable; skipping the native CPU kernels", file=sys.stderr)
        return []
    mlx_dir, nb_dir, mlx_version = found
    ext = Extension(
        "mlxbatchwhisper._kernels",
        ["mlxbatchwhisper/_kernels.cpp"],
        depends=[
            f"mlxbatchwhisper/{h}" for h in ("_primitives.h", "_kernel_loops.h", "_kernel_dots.h", "_kernel_tiles.h")
        ],
        include_dirs=[
            os.path.join(mlx_dir, "include"),
            os.path.join(nb_dir, "include"),
            os.path.join(nb_dir, "ext", "robin_map", "include"),
        ],
        define_macros=[
            ("MLX_BUILT_VERSION", f'"{mlx_version}"'),
            ("NDEBUG", None),
            ("NB_DOMAIN", "mlx"),
        ],  # MLX's nanobind domain,
        library_dirs=[os.path.join(mlx_dir, "lib")],
        libraries=["mlx"],
        runtime_library_dirs=[os.path.join(mlx_dir, "lib")],
        extra_compile_args=[
            "-std=c++20",
            "-O3",
            "-g0",
            "-ffast-math",
            "-fopenmp-simd",
            "-fvisibility=hidden",
            "-Wno-psabi",
        ],
        optional=True,
    )
    ext.nanobind_sources = [os.path.join(nb_dir, "src", "nb_combined.cpp")]
    return [ext]


setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildNanobind})
