import json
import shutil

import mlx.core as mx
import numpy as np
import pytest

from mlxbatchwhisper import load_model
from mlxbatchwhisper.checkpoints import CheckpointError, read_checkpoint, resolve
from reference import openai_model

torch = pytest.importorskip("torch")


def logits_of(model, seed=0):
    rng = np.random.default_rng(seed)
    mel = mx.array(rng.normal(size=(1, 2 * model.dims.n_audio_ctx, model.dims.n_mels)).astype(np.float32))
    tokens = mx.array([[50257, 50258, 50259, 440, 1049]])
    return np.array(model.logits(tokens, model.embed_audio(mel))), np.array(mel), np.array(tokens)


@pytest.fixture(scope="module")
def hf_random(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    config = transformers.WhisperConfig(
        vocab_size=51865,
        num_mel_bins=80,
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=256,
        decoder_ffn_dim=256,
        max_source_positions=1500,
        max_target_positions=448,
    )
    torch.manual_seed(0)
    model = transformers.WhisperForConditionalGeneration(config).eval()
    path = tmp_path_factory.mktemp("hf")
    model.save_pretrained(path)
    return path, model


def test_hf_layout_matches_transformers_forward(hf_random):
    path, ref = hf_random
    ours = load_model(path)
    logits, mel, tokens = logits_of(ours)
    with torch.no_grad():
        expected = ref(
            input_features=torch.from_numpy(mel).transpose(1, 2), decoder_input_ids=torch.from_numpy(tokens)
        ).logits.numpy()
    assert np.abs(logits - expected).max() <= 1e-3 * np.abs(expected).max()


def test_hf_alignment_heads_come_from_generation_config(tmp_path, hf_random):
    path = tmp_path / "hf"
    shutil.copytree(hf_random[0], path)
    generation = json.loads((path / "generation_config.json").read_text())
    (path / "generation_config.json").write_text(json.dumps({**generation, "alignment_heads": [[1, 2], [0, 3]]}))
    assert load_model(path).alignment_heads == ((0, 3), (1, 2))


def test_ct2_layout_holds_openai_weights():
    ckpt = read_checkpoint(resolve("tiny.en"))
    assert ckpt.dims.n_vocab == 51864 and ckpt.dims.n_audio_layer == 4 and ckpt.dims.n_text_head == 6
    base = read_checkpoint(resolve("base"))  # a model split over two pip packages
    assert base.dims.n_vocab == 51865 and base.dims.n_text_state == 512


def test_openai_pt_layout(tmp_path):
    ref = openai_model("tiny.en")
    path = tmp_path / "tiny.en.pt"
    torch.save({"dims": vars(ref.dims), "model_state_dict": ref.state_dict()}, path)
    a, _, _ = logits_of(load_model(path))
    b, _, _ = logits_of(load_model("tiny.en"))
    assert np.array_equal(a, b)


def write_mlx_layout(src: str, out, fmt: str = "safetensors"):
    ckpt = read_checkpoint(resolve(src))
    out.mkdir()
    (out / "config.json").write_text(json.dumps({**ckpt.dims.to_dict(), "model_type": "whisper"}))
    if fmt == "safetensors":
        mx.save_safetensors(str(out / "weights.safetensors"), ckpt.weights)
    else:
        mx.savez(str(out / "weights.npz"), **ckpt.weights)
    return out


@pytest.mark.parametrize("fmt", ["safetensors", "npz"])
def test_mlx_community_layout(tmp_path, fmt):
    path = write_mlx_layout("tiny.en", tmp_path / "mlx", fmt)
    a, _, _ = logits_of(load_model(path))
    b, _, _ = logits_of(load_model("tiny.en"))
    assert np.array_equal(a, b)


def test_truncated_ct2_file_is_named(tmp_path):
    src = resolve("tiny.en")
    out = tmp_path / "ct2"
    out.mkdir()
    shutil.copy(src / "config.json", out)
    data = (src / "model.bin").read_bytes()
    (out / "model.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"model\.bin: truncated"):
        load_model(out)


def test_truncated_safetensors_is_named(tmp_path):
    path = write_mlx_layout("tiny.en", tmp_path / "mlx")
    weights = path / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"weights\.safetensors"):
        load_model(path)


def test_missing_config_and_unknown_layout(tmp_path, hf_random):
    path = tmp_path / "hf"
    shutil.copytree(hf_random[0], path)
    (path / "config.json").unlink()
    with pytest.raises(CheckpointError, match="no config.json"):
        load_model(path)
    (path / "config.json").write_text(json.dumps({"hidden_size": 3}))
    with pytest.raises(CheckpointError, match="neither"):
        load_model(path)


def test_wrong_shapes_are_listed(tmp_path):
    path = write_mlx_layout("tiny.en", tmp_path / "mlx")
    config = json.loads((path / "config.json").read_text())
    config["n_text_state"], config["n_text_head"] = 512, 8  # heads must divide the width
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        CheckpointError, match=r"decoder\.token_embedding\.weight: checkpoint \(51864, 384\), model \(51864, 512\)"
    ):
        load_model(path)


def test_missing_weights_and_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_model(tmp_path / "nowhere" / "model")
    path = write_mlx_layout("tiny.en", tmp_path / "mlx")
    (path / "weights.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="weights"):
        load_model(path)
    with pytest.raises(FileNotFoundError, match="hub"):
        load_model("openai/whisper-does-not-exist")
    with pytest.raises(ValueError, match="dtype"):
        load_model("tiny.en", dtype="float8")


def test_openai_pt_without_torch_says_so(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_torch(name, *args, **kwargs):
        if name == "torch":
            raise ImportError("No module named 'torch'")
        return real_import(name, *args, **kwargs)

    path = tmp_path / "model.pt"
    path.write_bytes(b"not read")
    monkeypatch.setattr(builtins, "__import__", no_torch)
    with pytest.raises(CheckpointError, match=r"model\.pt: reading OpenAI \.pt checkpoints needs torch"):
        load_model(path)
