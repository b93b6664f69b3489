"""`LogitRules` against openai-whisper's logit filters on random logits and token histories (no model)."""

import mlx.core as mx
import numpy as np
import pytest

from mlxbatchwhisper import kernels
from mlxbatchwhisper import rules as rules_module
from mlxbatchwhisper.options import DecodingOptions, suppress_token_ids
from mlxbatchwhisper.rules import LogitRules
from mlxbatchwhisper.tokenizer import get_tokenizer

torch = pytest.importorskip("torch")
whisper = pytest.importorskip("whisper")
from whisper.decoding import ApplyTimestampRules, SuppressBlank, SuppressTokens  # noqa: E402

N_VOCAB = 51864  # tiny.en


def histories(rng: np.random.Generator, rows: int, length: int, tb: int) -> np.ndarray:
    """Token histories mixing text and timestamps (pairs, single ones, going back in time)."""
    text = rng.integers(0, 50000, (rows, length))
    stamps = tb + rng.integers(0, 1501, (rows, length))
    return np.where(rng.random((rows, length)) < 0.45, stamps, text)


@pytest.mark.parametrize("without_timestamps", [False, True])
@pytest.mark.parametrize("max_initial_timestamp", [1.0, None])
@pytest.mark.parametrize("native", [True, False])
def test_masks_match_openai_whisper(monkeypatch, without_timestamps, max_initial_timestamp, native):
    """MLX's masks (the GPU's) and, where the extension is built, the CPU's native pass."""
    if native and not kernels.native_available():
        pytest.skip(f"native CPU kernels: {kernels.NATIVE_STATUS}")
    monkeypatch.setattr(rules_module, "native_available", lambda: native)
    ours_tok = get_tokenizer(False)
    theirs_tok = whisper.tokenizer.get_tokenizer(False)
    options = DecodingOptions(without_timestamps=without_timestamps, max_initial_timestamp=max_initial_timestamp)
    rules = LogitRules(ours_tok, options, N_VOCAB)
    tb = ours_tok.timestamp_begin
    prefix = 3  # <|startoftranscript|> and two more
    filters = [
        SuppressBlank(theirs_tok, prefix),
        SuppressTokens(list(suppress_token_ids(ours_tok, options.suppress_tokens))),
    ]
    if not without_timestamps:
        index = None if max_initial_timestamp is None else round(max_initial_timestamp / 0.02)
        filters.append(ApplyTimestampRules(theirs_tok, prefix, index))
    rng = np.random.default_rng(0)
    for length in range(7):
        rows = 12
        sampled = histories(rng, rows, length, tb)
        logits = rng.standard_normal((rows, N_VOCAB)).astype(np.float32) * 3
        logits[::2, tb:] += rng.uniform(0, 6, (rows // 2 + rows % 2, 1)).astype(np.float32)  # timestamps weigh more
        tokens = torch.from_numpy(np.concatenate([np.full((rows, prefix), 50257), sampled], axis=1))
        expected = torch.from_numpy(logits.copy())
        for f in filters:
            f.apply(expected, tokens)
        last = sampled[:, -1] if length else np.zeros(rows, np.int64)
        penult = sampled[:, -2] if length > 1 else np.zeros(rows, np.int64)
        last_ts = np.array([next((t for t in row[::-1] if t >= tb), -1) for row in sampled])
        got = rules(
            mx.array(logits),
            mx.full((rows,), length, mx.int32),
            mx.array(last.astype(np.int32)),
            mx.array(penult.astype(np.int32)),
            mx.array(last_ts.astype(np.int32)),
        )
        got, expected = np.array(got), expected.numpy()
        assert np.array_equal(np.isinf(got), np.isinf(expected)), length
        assert np.array_equal(got[np.isfinite(got)], expected[np.isfinite(expected)])
        assert np.isinf(expected).any(axis=1).all()  # the rules did something on every row


def test_suppress_tokens_beyond_the_vocabulary_are_refused_by_validate():
    tok = get_tokenizer(False)
    with pytest.raises(ValueError, match="beyond the vocabulary"):
        DecodingOptions(suppress_tokens=[N_VOCAB + 5]).validate(tok, N_VOCAB)
    with pytest.raises(ValueError, match="English-only"):
        DecodingOptions(task="translate").validate(tok, N_VOCAB)
    assert DecodingOptions(suppress_tokens="-1,220").validate(tok, N_VOCAB).suppress_tokens == "-1,220"
