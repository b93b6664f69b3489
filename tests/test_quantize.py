"""Conversion round trips, quantization accuracy, mlx-whisper interoperability and the CLI."""

import json
import shutil

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from mlxbatchwhisper import BatchedWhisper, load_model
from mlxbatchwhisper.checkpoints import dequantized_part, read_checkpoint, resolve
from mlxbatchwhisper.cli.convert import main as convert_cli
from mlxbatchwhisper.convert import convert
from mlxbatchwhisper.model import ModelDimensions, Whisper
from mlxbatchwhisper.quantize import dequantize_model, quantize_model
from mlxbatchwhisper.tokenizer import get_tokenizer
from reference import corpus_audio, manifest

torch = pytest.importorskip("torch")


def teacher_forced_logits(model: Whisper, segment: str = "d01") -> np.ndarray:
    """Logits along the reference transcript of a corpus passage (real audio, real text)."""
    from mlxbatchwhisper.audio import log_mel_spectrogram

    tok = get_tokenizer(model.is_multilingual, model.num_languages)
    mel, _ = log_mel_spectrogram([corpus_audio(segment)], model.dims.n_mels)
    tokens = list(tok.sot_sequence("en")) + [tok.no_timestamps] + tok.encode(" " + manifest()[segment]["text"])
    return np.array(model.logits(mx.array([tokens]), model.embed_audio(mel)).astype(mx.float32))[0]


@pytest.fixture(scope="module")
def float_logits():
    return teacher_forced_logits(load_model("tiny.en"))


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """The same tiny.en weights in every layout `convert` reads."""
    from reference import openai_model

    root = tmp_path_factory.mktemp("sources")
    pt = root / "tiny.en.pt"
    ref = openai_model("tiny.en")
    torch.save({"dims": vars(ref.dims), "model_state_dict": ref.state_dict()}, pt)
    mlx_dir = root / "mlx"
    convert("tiny.en", mlx_dir, dtype="float32")
    return {"ctranslate2": resolve("tiny.en"), "openai-pt": pt, "mlx-community": mlx_dir}


@pytest.mark.parametrize("layout", ["ctranslate2", "openai-pt", "mlx-community"])
def test_float_round_trip_from_each_layout(layout, sources, float_logits, tmp_path):
    out = tmp_path / "out"
    done = convert(sources[layout], out, dtype="float32")
    assert done.quantization is None and done.mlx_whisper_compatible
    assert set(p.name for p in out.iterdir()) == {"config.json", "weights.safetensors"}
    assert np.array_equal(teacher_forced_logits(load_model(out)), float_logits)


def test_round_trip_from_hugging_face_layout(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.WhisperConfig(
        vocab_size=51865,
        num_mel_bins=80,
        d_model=64,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=256,
        decoder_ffn_dim=256,
    )
    torch.manual_seed(0)
    transformers.WhisperForConditionalGeneration(config).save_pretrained(tmp_path / "hf")
    convert(tmp_path / "hf", tmp_path / "out", dtype="float32")
    a, b = load_model(tmp_path / "hf"), load_model(tmp_path / "out")
    mel, tokens = mx.random.normal((1, 3000, 80), key=mx.random.key(0)), mx.array([[50258, 50259, 50359, 440]])
    assert np.array_equal(np.array(a(mel, tokens)), np.array(b(mel, tokens)))


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


# Tolerances. Affine quantization rounds each weight to one of 2^bits levels spanning its
# group's range, so the rounding error is up to half a step: range/510 at 8 bits, range/30 at
# 4 bits, 17x more. Measured along two transcripts (tiny.en, d01 and d09): int8 moves the logits
# by 1.2-1.8% of their spread (RMS), keeps 97.7-100% of the top-1 choices and leaves the
# next-token distributions within a mean KL of 0.0005; int4 moves them by 16-27%, keeps 84-95%
# and mean KL 0.04-0.09. The bounds allow about 2-3x the measured error, no more, so that a
# broken scale, group layout or dequantization (errors of 100% and more) cannot pass.
@pytest.mark.parametrize(
    "bits, group, max_rms, max_kl, min_top1",
    [(8, 64, 0.05, 0.005, 0.95), (4, 64, 0.45, 0.2, 0.75), (4, 32, 0.45, 0.2, 0.75)],
)
def test_quantized_logits_stay_close(bits, group, max_rms, max_kl, min_top1, float_logits, tmp_path):
    convert("tiny.en", tmp_path / "q", dtype="float32", quantize=True, bits=bits, group_size=group)
    q = teacher_forced_logits(load_model(tmp_path / "q"))
    rms = np.sqrt(np.mean((q - float_logits) ** 2)) / float_logits.std()
    p = np.exp(log_softmax(float_logits))
    kl = (p * (log_softmax(float_logits) - log_softmax(q))).sum(-1).mean()
    top1 = (q.argmax(-1) == float_logits.argmax(-1)).mean()
    print(f"int{bits} g{group}: rms/std {rms:.4f}, mean KL {kl:.4f}, top-1 {top1:.3f}")
    assert rms <= max_rms and kl <= max_kl and top1 >= min_top1


def test_quantized_config_block_and_sizes(tmp_path):
    fp16 = convert("tiny.en", tmp_path / "fp16", dtype="float16")
    q4 = convert("tiny.en", tmp_path / "q4", quantize=True, bits=4, group_size=64)
    config = json.loads((tmp_path / "q4" / "config.json").read_text())
    assert config["quantization"] == {
        "group_size": 64,
        "bits": 4,
        "decoder.token_embedding": {"group_size": 64, "bits": 8},
    }
    assert not q4.mlx_whisper_compatible
    weights = mx.load(str(tmp_path / "q4" / "weights.safetensors"))
    assert weights["encoder.blocks.0.mlp1.weight"].dtype == mx.uint32  # packed
    assert "encoder.conv1.scales" not in weights and "encoder.blocks.0.attn_ln.scales" not in weights
    assert q4.bytes_on_disk < 0.45 * fp16.bytes_on_disk
    uniform = convert("tiny.en", tmp_path / "q4u", quantize=True, recipe="uniform")
    assert uniform.mlx_whisper_compatible and uniform.bytes_on_disk < q4.bytes_on_disk
    decoder_only = convert("tiny.en", tmp_path / "q4d", quantize=True, recipe="decoder")
    assert "encoder.blocks.0.mlp1.scales" not in mx.load(str(tmp_path / "q4d" / "weights.safetensors"))
    assert fp16.bytes_on_disk > decoder_only.bytes_on_disk > q4.bytes_on_disk


def test_layers_the_group_size_does_not_divide_stay_float_and_are_listed():
    dims = ModelDimensions(80, 1500, 96, 2, 1, 51864, 448, 96, 2, 1)
    block = quantize_model(Whisper(dims), bits=4, group_size=64)
    assert block["decoder.blocks.0.attn.query"] is False  # input width 96
    assert "encoder.blocks.0.mlp2" not in block  # input width 384: quantized
    assert block["decoder.token_embedding"] is False


def test_native_quantized_kernels_match_dequantized_weights(tmp_path):
    convert("tiny.en", tmp_path / "q", dtype="float32", quantize=True, recipe="decoder")
    native = load_model(tmp_path / "q", dequantize=False)
    assert isinstance(native.decoder.blocks[0].mlp1, nn.QuantizedLinear)
    expanded = load_model(tmp_path / "q")
    assert isinstance(expanded.decoder.blocks[0].mlp1, nn.Linear)
    a, b = teacher_forced_logits(native), teacher_forced_logits(expanded)
    assert np.abs(a - b).max() < 1e-3 * np.abs(a).max()


def test_what_a_quantized_model_expands_at_load_by_device():
    """All of it on the CPU, the encoder on CUDA (its 1500-row products are slow quantized there), nothing
    on Apple GPUs; `dequantize=True / False` decides for every device."""
    model = Whisper(ModelDimensions(80, 1500, 64, 1, 1, 51864, 448, 64, 1, 1))
    assert dequantized_part(model, None, "cpu") is model
    assert dequantized_part(model, None, "cuda") is model.encoder
    assert dequantized_part(model, None, "metal") is None
    assert all(dequantized_part(model, True, d) is model for d in ("cpu", "cuda", "metal"))
    assert all(dequantized_part(model, False, d) is None for d in ("cpu", "cuda", "metal"))
    quantize_model(model, bits=4, group_size=64)
    dequantize_model(dequantized_part(model, None, "cuda"))
    assert isinstance(model.encoder.blocks[0].mlp1, nn.Linear)
    assert not isinstance(model.encoder.blocks[0].mlp1, nn.QuantizedLinear)
    assert isinstance(model.decoder.blocks[0].mlp1, nn.QuantizedLinear)


def test_quantized_batched_decoding_is_batch_invariant(tmp_path):
    convert("tiny.en", tmp_path / "q", dtype="float32", quantize=True)
    model = BatchedWhisper.from_pretrained(tmp_path / "q")
    audios = [corpus_audio(n) for n in ("d01", "d06", "d12")]
    together = model.transcribe(audios, batch_size=3, temperature=0.0)
    for audio, r in zip(audios, together):
        assert r.tokens == model.transcribe([audio], batch_size=1, temperature=0.0)[0].tokens
    assert "station" in together[0].text


def test_mlx_whisper_reads_our_output_and_we_read_theirs(tmp_path):
    pytest.importorskip("mlx_whisper")
    from mlx_whisper.load_models import load_model as their_load
    from mlx_whisper.whisper import ModelDimensions as TheirDims
    from mlx_whisper.whisper import Whisper as TheirWhisper

    # Float weights agree to rounding; quantized ones differ by ~1e-3 of the logit scale because
    # MLX's quantized kernels round differently on the two models' layouts (int8 itself moves
    # logits by ~1.5e-2, int4 by ~2e-1).
    mel, tokens = mx.random.normal((1, 3000, 80), key=mx.random.key(1)), mx.array([[50257, 50362, 440, 1049]])
    for recipe, tolerance in ((None, 1e-4), ("uniform", 3e-3)):
        out = tmp_path / f"ours-{recipe}"
        convert("tiny.en", out, dtype="float32", quantize=recipe is not None, recipe=recipe or "default")
        theirs, ours = their_load(str(out)), load_model(out, dequantize=False)
        a = np.array(theirs.logits(tokens, theirs.encoder(mel)))
        b = np.array(ours.logits(tokens, ours.embed_audio(mel)))
        assert np.abs(a - b).max() < tolerance * np.abs(a).max()

    # theirs: their model class, quantized the way their converter does, saved in their layout
    ckpt = read_checkpoint(resolve("tiny.en"))
    model = TheirWhisper(TheirDims(**ckpt.dims.to_dict()), mx.float32)
    model.load_weights(list(ckpt.weights.items()), strict=False)  # all but their alignment_heads buffer
    nn.quantize(model, group_size=64, bits=8)
    out = tmp_path / "theirs"
    out.mkdir()
    (out / "config.json").write_text(
        json.dumps({**ckpt.dims.to_dict(), "model_type": "whisper", "quantization": {"group_size": 64, "bits": 8}})
    )
    saved = dict(nn.utils.tree_flatten(model.parameters()))
    assert "alignment_heads" in saved  # as their converter writes it
    mx.save_safetensors(str(out / "weights.safetensors"), saved)
    ours = load_model(out, dequantize=False)
    a = np.array(model.logits(tokens, model.encoder(mel)))
    b = np.array(ours.logits(tokens, ours.embed_audio(mel)))
    assert np.abs(a - b).max() < 3e-3 * np.abs(a).max()


def test_cli_converts_and_refuses_bad_requests(tmp_path, capsys):
    assert convert_cli(["tiny.en", "-o", str(tmp_path / "q"), "-q", "--q-bits", "8"]) == 0
    assert "8-bit, group 64" in capsys.readouterr().out
    assert convert_cli(["tiny.en", "-o", str(tmp_path / "q")]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert convert_cli([str(tmp_path / "missing"), "-o", str(tmp_path / "x")]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    for bad in (["--q-bits", "3"], ["--q-group-size", "48"], ["--q-recipe", "magic"]):
        with pytest.raises(SystemExit) as exit_:
            convert_cli(["tiny.en", "-o", str(tmp_path / "y"), "-q", *bad])
        assert exit_.value.code == 2
    assert not (tmp_path / "y").exists()
    broken = tmp_path / "broken"
    shutil.copytree(resolve("tiny.en"), broken)
    (broken / "model.bin").write_bytes(b"\x06\x00\x00\x00")
    assert convert_cli([str(broken), "-o", str(tmp_path / "z")]) == 2
    assert "truncated" in capsys.readouterr().err
