import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests use local weights only

import mlxbatchwhisper  # noqa: E402,F401  (binds the fast BLAS before anything imports mlx)
