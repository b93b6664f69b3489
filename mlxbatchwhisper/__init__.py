"""mlxbatchwhisper: Whisper speech recognition in MLX with real batched decoding."""

from .runtime import bind_fast_blas

bind_fast_blas()  # before mlx.core is first imported

from .checkpoints import load_model  # noqa: E402
from .runtime import runtime_info  # noqa: E402

__version__ = "0.1.0"
__all__ = ["load_model", "runtime_info", "__version__"]
