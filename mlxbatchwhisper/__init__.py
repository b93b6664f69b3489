"""mlxbatchwhisper: Whisper speech recognition in MLX with real batched decoding."""

from .runtime import bind_fast_blas, tune_allocator

bind_fast_blas()  # before mlx.core is first imported
tune_allocator()

from .checkpoints import load_model  # noqa: E402
from .options import DecodingOptions  # noqa: E402
from .pipeline import BatchedWhisper  # noqa: E402
from .results import DecodingResult, Segment  # noqa: E402
from .runtime import runtime_info  # noqa: E402

__version__ = "0.1.0"
__all__ = [
    "BatchedWhisper",
    "DecodingOptions",
    "DecodingResult",
    "Segment",
    "load_model",
    "runtime_info",
    "__version__",
]
