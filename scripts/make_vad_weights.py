"""Regenerate mlxbatchwhisper/assets/silero_vad_16k.safetensors from the silero-vad wheel.

    pip download --no-deps silero-vad -d /tmp/silero
    python scripts/make_vad_weights.py /tmp/silero/silero_vad-*.whl

The argument is the wheel or the folder it was unpacked into. (The tests read the wheel's ONNX
model from the test data, corpus-audio/silero/, which scripts/make_test_data.py unpacks.)

The weights are read from the wheel's TorchScript model (`silero_vad/data/silero_vad.jit`,
its 16 kHz sub-model): that model and `silero_vad.onnx` are the v6 network, whereas the
wheel's `silero_vad_16k.safetensors` (in 6.2.3) holds other weights that match neither.
Needs torch. Also copies the wheel's MIT license next to the weights.
"""

from __future__ import annotations

import argparse
import io
import zipfile
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save_file

ASSETS = Path(__file__).resolve().parent.parent / "mlxbatchwhisper" / "assets"
JIT = "silero_vad/data/silero_vad.jit"


def read_member(source: Path, suffix: str) -> bytes:
    """Bytes of the file whose path ends with `suffix`, from a wheel or an unpacked folder."""
    if source.is_dir():
        found = source.rglob(Path(suffix).name)
        matches = sorted(p for p in found if p.as_posix().endswith(suffix))
        if not matches:
            raise FileNotFoundError(f"no {suffix} under {source}")
        return matches[0].read_bytes()
    with zipfile.ZipFile(source) as wheel:
        name = next((n for n in wheel.namelist() if n.endswith(suffix)), None)
        if name is None:
            raise FileNotFoundError(f"no {suffix} in {source}")
        return wheel.read(name)


def convert(state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Map the TorchScript 16 kHz state dict onto `mlxbatchwhisper.vad.SileroVAD`'s parameters."""
    w = {k: v.detach().to(torch.float64).numpy() for k, v in state.items()}
    out = {"stft.basis": w["stft.forward_basis_buffer"][:, 0, :]}
    for i in range(4):
        prefix = f"encoder.{i}.reparam_conv"
        # PyTorch Conv1d weights are (out, in, kernel); MLX's are (out, kernel, in).
        out[f"encoder.{i}.weight"] = w[f"{prefix}.weight"].transpose(0, 2, 1)
        out[f"encoder.{i}.bias"] = w[f"{prefix}.bias"]
    out["lstm.Wx"] = w["decoder.rnn.weight_ih"]
    out["lstm.Wh"] = w["decoder.rnn.weight_hh"]
    out["lstm.bias"] = w["decoder.rnn.bias_ih"] + w["decoder.rnn.bias_hh"]
    out["decoder.weight"] = w["decoder.decoder.2.weight"][:, :, 0]
    out["decoder.bias"] = w["decoder.decoder.2.bias"]
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", type=Path, help="silero-vad wheel or its unpacked folder")
    parser.add_argument("--out", type=Path, default=ASSETS, help="assets folder to write")
    args = parser.parse_args()

    jit = torch.jit.load(io.BytesIO(read_member(args.wheel, JIT)), map_location="cpu")
    weights = convert(jit._model.state_dict())
    args.out.mkdir(parents=True, exist_ok=True)
    metadata = {"source": f"silero-vad {JIT}"}
    save_file(weights, str(args.out / "silero_vad_16k.safetensors"), metadata=metadata)
    (args.out / "SILERO_VAD_LICENSE").write_bytes(read_member(args.wheel, "licenses/LICENSE"))
    for name, value in weights.items():
        print(f"{name:16s} {tuple(value.shape)}")


if __name__ == "__main__":
    main()
