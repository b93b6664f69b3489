import mlx.core as mx
import numpy as np
import pytest

from mlxbatchwhisper import load_model
from mlxbatchwhisper.audio import log_mel_spectrogram
from mlxbatchwhisper.tokenizer import get_tokenizer
from reference import corpus_audio, manifest, openai_model, pyannote_sample, segment_names, wer

torch = pytest.importorskip("torch")
whisper = pytest.importorskip("whisper")

MODELS = ["tiny.en", "base"]


@pytest.fixture(scope="module", params=MODELS)
def pair(request):
    return request.param, load_model(request.param), openai_model(request.param)


def test_encoder_and_logits_match_openai_on_real_audio(pair):
    name, ours, ref = pair
    tok = get_tokenizer(ours.is_multilingual, ours.num_languages)
    cases = [(corpus_audio("d01"), manifest()["d01"]["text"]), (pyannote_sample(), "Hello? Hello? Oh, hello.")]
    for audio, text in cases:
        mel, _ = log_mel_spectrogram([audio[:480000]], ours.dims.n_mels)
        features = ours.embed_audio(mel)
        tokens = list(tok.sot_sequence("en")) + [tok.no_timestamps] + tok.encode(" " + text)
        logits = np.array(ours.logits(mx.array([tokens]), features))
        with torch.no_grad():
            ref_features = ref.embed_audio(torch.from_numpy(np.array(mel)).transpose(1, 2))
            ref_logits = ref.logits(torch.tensor([tokens]), ref_features).numpy()
        ref_features = ref_features.numpy()
        assert np.abs(np.array(features) - ref_features).max() <= 1e-3 * np.abs(ref_features).max()
        assert np.abs(logits - ref_logits).max() <= 1e-3 * np.abs(ref_logits).max()
        assert (logits.argmax(-1) == ref_logits.argmax(-1)).mean() > 0.95


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_models_stay_close(dtype):
    full, half = load_model("tiny.en"), load_model("tiny.en", dtype=dtype)
    assert half.dtype == getattr(mx, dtype)
    mel, _ = log_mel_spectrogram([corpus_audio("d02")])
    tokens = mx.array([[50257, 50362, 440, 1049, 286]])
    a = np.array(full.logits(tokens, full.embed_audio(mel)))
    b = np.array(half.logits(tokens, half.embed_audio(mel)).astype(mx.float32))
    assert np.abs(a - b).max() < 0.05 * np.abs(a).max()
    assert (a.argmax(-1) == b.argmax(-1)).all()


def incremental(model, cache, tokens):
    return np.array(model.decoder.project(model.decoder(mx.array(tokens), cache=cache)[:, -1]))


def test_cache_rows_of_different_lengths_match_whole_sequences():
    """Left-padded rows, filtered and extended, give each row's own full-sequence logits."""
    model = load_model("tiny.en")
    rng = np.random.default_rng(0)
    mel, _ = log_mel_spectrogram([corpus_audio(n) for n in ("d01", "d02", "d03", "d04")])
    features = model.embed_audio(mel)
    rows = [rng.integers(0, 50000, n).tolist() for n in (3, 5, 8)]

    def reference(i, feature_row):
        return np.array(model.logits(mx.array([rows[i]]), features[feature_row : feature_row + 1])[:, -1])[0]

    def check(logits, order, feature_rows):
        for out, i, f in zip(logits, order, feature_rows):
            ref = reference(i, f)
            assert np.abs(out - ref).max() < 1e-4 * np.abs(ref).max()

    width = max(map(len, rows))
    pads = [width - len(r) for r in rows]
    cache = model.new_cache(features[:3], left_padding=pads)
    padded = [[0] * p + r for p, r in zip(pads, rows)]
    check(incremental(model, cache, padded), [0, 1, 2], [0, 1, 2])
    for _ in range(3):  # a few single-token steps
        step = [[int(t)] for t in rng.integers(0, 50000, 3)]
        for r, s in zip(rows, step):
            r += s
        check(incremental(model, cache, step), [0, 1, 2], [0, 1, 2])

    cache_rows = [0, 1]  # drop row 2 (finished), the longest
    for c in cache:
        c.filter(cache_rows)
    assert cache[0].left_padding == [2, 0]  # the padding both rows shared is trimmed
    step = [[int(t)] for t in rng.integers(0, 50000, 2)]
    for i, s in zip(cache_rows, step):
        rows[i] += s
    check(incremental(model, cache, step), cache_rows, [0, 1])

    rows.append(rng.integers(0, 50000, 4).tolist())  # a new row joins: prefilled alone, then extended
    new = model.new_cache(features[3:4])
    incremental(model, new, [rows[3]])
    for c, n in zip(cache, new):
        c.extend(n)
    assert cache[0].lengths() == [len(rows[0]), len(rows[1]), len(rows[3])]
    step = [[int(t)] for t in rng.integers(0, 50000, 3)]
    for i, s in zip([0, 1, 3], step):
        rows[i] += s
    check(incremental(model, cache, step), [0, 1, 3], [0, 1, 3])


@pytest.mark.parametrize("host_permute", [True, False])
def test_grouped_rows_share_cross_attention_and_permute_within_groups(host_permute, monkeypatch):
    """Beams: rows in groups sharing one audio row, reordered within groups, dropped as groups.

    Both ways of permuting: in place through host views (CPU) and with MLX ops (GPUs).
    """
    from mlxbatchwhisper import cache as cache_module

    monkeypatch.setattr(cache_module, "_on_cpu", lambda: host_permute)
    model = load_model("tiny.en")
    rng = np.random.default_rng(2)
    mel, _ = log_mel_spectrogram([corpus_audio(n) for n in ("d01", "d02", "d03")])
    features = model.embed_audio(mel)
    audio_of = [0, 0, 0, 1, 1, 1]  # two segments, three beams each
    rows = [[50257, 50362] + rng.integers(0, 50000, 2).tolist() for _ in audio_of]

    def check(logits, live):
        for out, r in zip(logits, live):
            f = audio_of[r]
            ref = np.array(model.logits(mx.array([rows[r]]), features[f : f + 1])[:, -1])[0]
            assert np.abs(out - ref).max() < 1e-4 * np.abs(ref).max()

    cache = model.new_cache(features[:2], group=3)
    check(incremental(model, cache, rows), range(6))
    order = [2, 0, 0, 4, 3, 5]  # beam search keeps some beams twice and drops others
    for c in cache:
        c.permute(order)
    rows = [list(rows[i]) for i in order]
    step = [[int(t)] for t in rng.integers(0, 50000, 6)]
    for r, s in zip(rows, step):
        r += s
    check(incremental(model, cache, step), range(6))
    with pytest.raises(ValueError, match="inside their groups"):
        cache[0].permute([3, 1, 2, 0, 4, 5])
    with pytest.raises(ValueError, match="whole groups"):
        cache[0].filter([0, 1, 3, 4, 5])
    for c in cache:
        c.filter([3, 4, 5])  # the first segment is done
    audio_of, rows = audio_of[3:], rows[3:]
    step = [[int(t)] for t in rng.integers(0, 50000, 3)]
    for r, s in zip(rows, step):
        r += s
    check(incremental(model, cache, step), range(3))


@pytest.mark.parametrize("dtype", [mx.float32, mx.float16, mx.bfloat16])
def test_permute_moves_whole_rows_in_every_dtype(dtype):
    from mlxbatchwhisper.cache import KVCache

    cross = mx.zeros((2, 2, 5, 4), dtype)
    cache = KVCache((cross, cross), group=3)
    keys = mx.arange(6 * 2 * 3 * 4).reshape(6, 2, 3, 4).astype(dtype)
    cache.update_and_fetch(keys, -keys)
    order = [2, 0, 0, 4, 3, 5]
    cache.permute(order)
    k, v = cache.update_and_fetch(mx.zeros((6, 2, 1, 4), dtype), mx.zeros((6, 2, 1, 4), dtype))
    expected = np.array(keys.astype(mx.float32))[order]
    assert np.array_equal(np.array(k[:, :, :3].astype(mx.float32)), expected)
    assert np.array_equal(np.array(v[:, :, :3].astype(mx.float32)), -expected)


def test_cache_grows_past_its_block_size():
    model = load_model("tiny.en")
    mel, _ = log_mel_spectrogram([corpus_audio("d05")])
    features = model.embed_audio(mel)
    tokens = np.random.default_rng(1).integers(0, 50000, 300).tolist()
    cache = model.new_cache(features)
    incremental(model, cache, [tokens[:250]])
    for t in tokens[250:]:
        out = incremental(model, cache, [[t]])
    ref = np.array(model.logits(mx.array([tokens]), features)[:, -1])
    assert cache[0].offset == 300 and cache[0].keys.shape[2] == 512
    assert np.abs(out - ref).max() < 1e-4 * np.abs(ref).max()


def test_cross_kv_peak_memory_is_the_kv_itself_plus_one_layer():
    from mlxbatchwhisper.model import ModelDimensions, Whisper

    model = Whisper(ModelDimensions(80, 1500, 256, 4, 1, 51865, 448, 256, 4, 6))
    mx.eval(model.parameters())
    features = mx.random.normal((8, 1500, 256))
    mx.eval(features)
    base = mx.get_active_memory()
    mx.reset_peak_memory()
    kv = model.decoder.cross_kv(features)
    total = sum(a.nbytes for layer in kv for a in layer)
    layer = total // len(kv)
    assert mx.get_peak_memory() - base <= total + 2 * layer  # evaluated together: 2 × total


def test_absorbed_cross_attention_gives_the_logits_of_keys_and_values():
    """`TextDecoder.absorb`: every layer's cache holds one shared array, the audio features, and
    gives the logits of attending to keys and values: beams in groups, rows filtered and added
    (the memo keeps the array shared), and the alignment heads' scores."""
    from mlxbatchwhisper.heads import default_heads

    model, absorbed = load_model("tiny.en"), load_model("tiny.en")
    absorbed.decoder.absorb()
    mel, _ = log_mel_spectrogram([corpus_audio(n) for n in ("d01", "d02", "d03")])
    features = model.embed_audio(mel)
    rng = np.random.default_rng(4)
    rows = [[50257, 50362] + rng.integers(0, 50000, 3).tolist() for _ in range(6)]  # 3 segments × 2 beams
    kv, features_only = model.new_cache(features, group=2), absorbed.new_cache(features, group=2)

    def shared_by_all(cache) -> bool:
        return len(cache[0].cross_kv) == 1 and all(c.cross_kv[0] is cache[0].cross_kv[0] for c in cache)

    def close(tokens) -> None:
        a, b = incremental(model, kv, tokens), incremental(absorbed, features_only, tokens)
        assert np.abs(a - b).max() < 1e-4 * np.abs(a).max()
        assert (a.argmax(-1) == b.argmax(-1)).all()

    assert shared_by_all(features_only) and features_only[0].cross_kv[0].shape == features.shape
    close(rows)
    for cache in (kv, features_only):
        memo: dict = {}
        for c in cache:
            c.filter([0, 1, 4, 5], memo)  # the second segment is done
    assert shared_by_all(features_only)
    close([[int(t)] for t in rng.integers(0, 50000, 4)])
    for m, cache in ((model, kv), (absorbed, features_only)):
        new, memo = m.new_cache(features[1:2], group=2), {}
        m.decoder(mx.array([[50257, 50362]] * 2), cache=new)
        for c, n in zip(cache, new):
            c.extend(n, memo)
    assert shared_by_all(features_only) and features_only[0].cross_kv[0].shape[0] == 3
    close([[int(t)] for t in rng.integers(0, 50000, 6)])

    heads = default_heads(4, 6)
    tokens = mx.array(rows[:2])
    cross = [[tuple(a[:1] for a in c.cross_kv) for c in m.new_cache(features)] for m in (model, absorbed)]
    (ha, sa), (hb, sb) = (m.decoder.forward_with_scores(tokens, c, heads) for m, c in zip((model, absorbed), cross))
    assert np.abs(np.array(sa) - np.array(sb)).max() < 1e-4 * np.abs(np.array(sa)).max()
    assert np.abs(np.array(ha) - np.array(hb)).max() < 1e-4 * np.abs(np.array(ha)).max()


def test_int8_cross_kv_attends_like_the_full_precision_keys():
    from mlxbatchwhisper.kernels import cross_attention, dequantize_kv, quantize_kv

    rng = np.random.default_rng(0)
    k, v = (mx.array(rng.normal(0, 1, (3, 4, 1500, 64)).astype(np.float32)) for _ in range(2))
    q = mx.array(rng.normal(0, 1, (6, 4, 1, 64)).astype(np.float32))  # two rows (beams) per audio row
    kq, vq, ks, vs = quantize_kv(k, v)
    assert kq.dtype == vq.dtype == mx.int8 and ks.shape == (3, 4, 1500)
    rel = mx.abs(dequantize_kv(kq, ks, mx.float32) - k).max(axis=-1) / mx.abs(k).max(axis=-1)
    assert float(rel.max()) <= 0.5 / 127 + 1e-6  # rounding: at most half a step of max|x|/127
    exact = np.array(cross_attention(q, k, v))
    quantized = np.array(cross_attention(q, kq, vq, ks, vs))
    assert np.abs(quantized - exact).max() < 0.02 and not np.array_equal(quantized, exact)


@pytest.mark.parametrize("name", ["tiny.en", "base"])
def test_int8_cross_kv_keeps_the_transcripts(name):
    """kv_bits=8 on real weights: tiny.en decodes the English segments to the same text as full
    precision; base detects the same languages and its word error is no worse than 2 points (its
    greedy output is brittle: single segments change both ways)."""
    from mlxbatchwhisper import BatchedWhisper

    english = [n for n in segment_names() if manifest()[n]["language"] == "en"]
    others = [n for n in segment_names() if manifest()[n]["language"] != "en"]
    names = english[:8] if name == "tiny.en" else english[:2] + others
    audio = [corpus_audio(n) for n in names]
    full = BatchedWhisper.from_pretrained(name).transcribe(audio, batch_size=8, temperature=0.0)
    int8 = BatchedWhisper.from_pretrained(name, kv_bits=8).transcribe(audio, batch_size=8, temperature=0.0)
    if name == "tiny.en":
        assert [r.text for r in int8] == [r.text for r in full]
    else:
        assert [r.language for r in int8] == [r.language for r in full] == [manifest()[n]["language"] for n in names]

        def mean_wer(results) -> float:
            texts = [(manifest()[n]["text"], r.text, manifest()[n]["language"]) for n, r in zip(names, results)]
            return float(np.mean([wer([ref], [hyp], lang) for ref, hyp, lang in texts]))

        assert mean_wer(int8) <= mean_wer(full) + 0.02
    with pytest.raises(ValueError, match="kv_bits"):
        BatchedWhisper.from_pretrained(name, kv_bits=4)
    with pytest.raises(ValueError, match="choose one"):
        BatchedWhisper.from_pretrained(name, kv_bits=8, absorb_cross_kv=True)


def test_absorbed_cross_attention_keeps_the_transcripts():
    """absorb_cross_kv on real weights: greedy, beam and word times as with keys and values (which
    match openai-whisper's: test_decoding), each row batched."""
    from mlxbatchwhisper import BatchedWhisper

    english = [n for n in segment_names() if manifest()[n]["language"] == "en"]
    audio = [corpus_audio(n) for n in english[:8]]
    full, absorbed = (
        BatchedWhisper.from_pretrained("tiny.en"),
        BatchedWhisper.from_pretrained("tiny.en", absorb_cross_kv=True),
    )
    for options in ({"batch_size": 8}, {"batch_size": 3, "beam_size": 5}):
        a, b = (m.transcribe(audio, temperature=0.0, **options) for m in (full, absorbed))
        assert [r.tokens for r in b] == [r.tokens for r in a]
    a, b = (m.transcribe(audio[:4], temperature=0.0, batch_size=4, word_timestamps=True) for m in (full, absorbed))
    words = [[(w.word, w.start, w.end) for s in r.segments for w in s.words] for r in a]
    assert [[(w.word, w.start, w.end) for s in r.segments for w in s.words] for r in b] == words
    others = [corpus_audio(n) for n in segment_names() if manifest()[n]["language"] != "en"][:3]
    a, b = (  # multilingual: language detection reads the cross-attention too
        BatchedWhisper.from_pretrained("base", absorb_cross_kv=absorb).transcribe(others, temperature=0.0)
        for absorb in (False, True)
    )
    assert [(r.language, r.tokens) for r in b] == [(r.language, r.tokens) for r in a]


def test_absorbed_cross_attention_of_a_quantized_model():
    """A quantized model's key/value projections are dequantized once for the absorbed path."""
    import mlx.nn as nn

    model, absorbed = load_model("tiny.en"), load_model("tiny.en")
    for m in (model, absorbed):
        nn.quantize(m.decoder, group_size=64, bits=4)
    absorbed.decoder.absorb()
    assert isinstance(absorbed.decoder.blocks[0].cross_attn.key, nn.QuantizedLinear)
    mel, _ = log_mel_spectrogram([corpus_audio("d01")])
    features = model.embed_audio(mel)
    tokens = [[50257, 50362, 383, 1110, 318]]
    a = incremental(model, model.new_cache(features), tokens)
    b = incremental(absorbed, absorbed.new_cache(features), tokens)
    assert np.abs(a - b).max() < 1e-3 * np.abs(a).max() and a.argmax() == b.argmax()


def test_absorbed_features_stay_shared_when_sampled_rows_copy_them():
    """Samples of best_of take rows of their own: the prefill copies each segment's audio per row,
    once for all layers when they share one features array (absorbed)."""
    from mlxbatchwhisper.options import DecodingOptions
    from mlxbatchwhisper.prefill import AudioEncoder, Item, Prefill

    model = load_model("tiny.en")
    model.decoder.absorb()
    options = DecodingOptions.of(None, temperature=0.5, best_of=3)
    prefill = Prefill(model, get_tokenizer(multilingual=False), options, AudioEncoder(model))
    sampled = options.passes()[0]
    new = prefill([(Item(key=n, audio=corpus_audio(n)), sampled) for n in ("d01", "d02")])
    features = new.cache[0].cross_kv[0]
    assert features.shape[0] == 6 and all(c.cross_kv[0] is features for c in new.cache)


def test_auto_batch_size_counts_what_cross_attention_keeps(monkeypatch):
    """batch_size="auto" fits more rows when the cross-attention K/V are int8, more still when absorbed."""
    from mlxbatchwhisper.pipeline import auto_batch_size

    model = load_model("tiny.en")
    monkeypatch.setattr(mx, "device_info", lambda: {"memory_size": 64 * 2**30})  # the same free memory each time
    plain = auto_batch_size(model, limit=10**6)
    model.decoder.kv_bits = 8
    int8 = auto_batch_size(model, limit=10**6)
    model.decoder.kv_bits = None
    model.decoder.absorb()
    assert plain < int8 < auto_batch_size(model, limit=10**6)
