"""Builds the optional CPU kernels (mlxbatchwhisper/_kernels.c); everything else is in pyproject.toml.

If the extension cannot be compiled, the package still installs and uses MLX's own (slower)
CPU kernels.
"""

import sys

from setuptools import Extension, setup

compile_args = [] if sys.platform == "win32" else ["-O3", "-ffast-math", "-fopenmp-simd"]
setup(
    ext_modules=[
        Extension(
            "mlxbatchwhisper._kernels",
            ["mlxbatchwhisper/_kernels.c"],
            extra_compile_args=compile_args,
            libraries=[] if sys.platform == "win32" else ["m"],
            optional=True,
        )
    ]
)
