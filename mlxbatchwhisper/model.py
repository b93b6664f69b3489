"""Whisper's encoder and decoder in MLX, with OpenAI's parameter names (as mlx-whisper spells them).

Shapes: mel (B, n_frames, n_mels); audio features (B, n_audio_ctx, n_audio_state); tokens (B, T).
The decoder runs either whole sequences (`logits`) or incrementally against a list of
`KVCache`s, one per layer, whose rows may hold different numbers of tokens.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import mlx.core as mx
import mlx.nn as nn

from .cache import KVCache
from .heads import Heads, default_heads
from .kernels import CrossKV, attention, cross_attention, dequantize_kv, gelu, quantize_kv
from .layers import Conv1d, LayerNorm, Linear, linear
from .quantize import float_weight


@dataclass(frozen=True)
class ModelDimensions:
    """The sizes that define a Whisper model (openai-whisper's names)."""

    n_mels: int
    n_audio_ctx: int
    n_audio_state: int
    n_audio_head: int
    n_audio_layer: int
    n_vocab: int
    n_text_ctx: int
    n_text_state: int
    n_text_head: int
    n_text_layer: int

    def to_dict(self) -> dict:
        return asdict(self)


def sinusoids(length: int, channels: int, max_timescale: float = 10000) -> mx.array:
    """The encoder's fixed sinusoidal position embedding, (length, channels)."""
    log_timescale_increment = math.log(max_timescale) / (channels // 2 - 1)
    inv_timescales = mx.exp(-log_timescale_increment * mx.arange(channels // 2))
    scaled_time = mx.arange(length)[:, None] * inv_timescales[None, :]
    table = mx.concatenate([mx.sin(scaled_time), mx.cos(scaled_time)], axis=1)
    mx.eval(table)  # computed now: a lazy array is bound to this thread's stream, and a model may run on another
    return table


class MultiHeadAttention(nn.Module):
    """Self- or cross-attention; keys and values can come from a `KVCache`."""

    def __init__(self, n_state: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.query = Linear(n_state, n_state)
        self.key = Linear(n_state, n_state, bias=False)
        self.value = Linear(n_state, n_state)
        self.out = Linear(n_state, n_state)
        self.absorbed: tuple[mx.array, mx.array, mx.array] | None = None  # see `absorb`

    def absorb(self) -> None:
        """Keep the key and value projections as (H, D_head, D) matrices, so that cross-attention
        can run against the audio features themselves (`attend_features`). Views of the weights;
        a quantized model's are dequantized copies (2 × D² values a layer)."""
        h = self.n_head
        wk, wv = float_weight(self.key), float_weight(self.value)
        self.absorbed = (
            wk.reshape(h, -1, wk.shape[-1]),
            wv.reshape(h, -1, wv.shape[-1]),
            self.value.bias.reshape(h, 1, -1),
        )

    def attend_features(self, q: mx.array, x: mx.array) -> mx.array:
        """Cross-attention of q (B, H, T, D_head) against audio features x (B/G, N, D), each group of G
        consecutive rows of q sharing one row of x (beams): the key projection is folded into the
        queries and the value projection applied after the weighted sum (keys have no bias, and the
        weights sum to one), so no per-layer keys/values exist. The same products as attending to
        keys and values, summed in another order."""
        wk, wv, bv = self.absorbed
        b, h, t, dh = q.shape
        rows = b // x.shape[0] * t  # queries per head that share one row of x
        qk = (q * dh**-0.5).transpose(1, 0, 2, 3).reshape(h, b * t, dh) @ wk  # (H, B·T, D)
        qk = qk.reshape(h, x.shape[0], rows, -1).transpose(1, 0, 2, 3).reshape(x.shape[0], h * rows, -1)
        weights = mx.softmax(qk @ x.swapaxes(-1, -2), axis=-1, precise=True)  # (B/G, H·rows, N)
        z = (weights @ x).reshape(x.shape[0], h, rows, -1).transpose(1, 0, 2, 3).reshape(h, b * t, -1)
        return (z @ wv.swapaxes(-1, -2) + bv).reshape(h, b, t, dh).transpose(1, 0, 2, 3)

    def heads(self, x: mx.array) -> mx.array:
        """(B, T, D) → (B, H, T, D_head); a decoding step's (B, D) is already laid out as (B, H, 1, D_head)."""
        if x.ndim == 2:
            return x.reshape(x.shape[0], self.n_head, 1, -1)
        batch, length, _ = x.shape
        return x.reshape(batch, length, self.n_head, -1).transpose(0, 2, 1, 3)

    def kv(self, x: mx.array) -> tuple[mx.array, mx.array]:
        """Keys and values of x, split into heads: (B, H, T, D) each."""
        return self.heads(self.key(x)), self.heads(self.value(x))

    def __call__(
        self,
        x: mx.array,
        mask: mx.array | str | None = None,
        kv: CrossKV | None = None,
        cache: KVCache | None = None,
    ) -> mx.array:
        """Self-attention over x (B, T, D), or cross-attention against precomputed `kv`; x (B, D) is
        one position a row (a decoding step)."""
        q = self.heads(self.query(x))
        if kv is None:
            k, v = self.kv(x)
            o = attention(q, k, v, mask) if cache is None else cache.attend(q, k, v, mask)
        elif len(kv) == 1:
            o = self.attend_features(q, kv[0])
        else:
            o = cross_attention(q, *kv)
        return self.out(self.merge(o, x.ndim))

    @staticmethod
    def merge(o: mx.array, ndim: int) -> mx.array:
        """Heads (B, H, T, D_head) back to rows: (B, T, D), or (B, D) for a step's `ndim` 2 rows."""
        batch, _, length, _ = o.shape
        if ndim == 2:
            return o.reshape(batch, -1)
        return o.transpose(0, 2, 1, 3).reshape(batch, length, -1)

    def scores(self, x: mx.array, kv: CrossKV, heads: list[int]) -> mx.array:
        """Pre-softmax cross-attention scores of the given heads, (B, len(heads), T, n_audio) float32."""
        q = self.heads(self.query(x))[:, heads]
        if len(kv) == 1:
            k = kv[0][:, None] @ self.absorbed[0][mx.array(heads)].swapaxes(-1, -2)[None]
        else:
            k = kv[0][:, heads] if len(kv) == 2 else dequantize_kv(kv[0][:, heads], kv[2][:, heads], q.dtype)
        return (q @ k.swapaxes(-1, -2)).astype(mx.float32) * q.shape[-1] ** -0.5


class ResidualAttentionBlock(nn.Module):
    """Pre-norm transformer block: self-attention, optional cross-attention, GELU MLP."""

    def __init__(self, n_state: int, n_head: int, cross_attention: bool = False):
        super().__init__()
        self.attn = MultiHeadAttention(n_state, n_head)
        self.attn_ln = LayerNorm(n_state)
        self.cross_attn = MultiHeadAttention(n_state, n_head) if cross_attention else None
        self.cross_attn_ln = LayerNorm(n_state) if cross_attention else None
        self.mlp1 = Linear(n_state, 4 * n_state)
        self.mlp2 = Linear(4 * n_state, n_state)
        self.mlp_ln = LayerNorm(n_state)

    def __call__(
        self,
        x: mx.array,
        mask: mx.array | str | None = None,
        cross_kv: CrossKV | None = None,
        cache: KVCache | None = None,
    ) -> mx.array:
        x = x + self.attn(self.attn_ln(x), mask=mask, cache=cache)
        if self.cross_attn is not None:
            x = x + self.cross_attn(self.cross_attn_ln(x), kv=cross_kv)
        return x + self.mlp2(gelu(self.mlp1(self.mlp_ln(x))))

    def with_scores(self, x: mx.array, cross_kv: CrossKV, heads: list[int]) -> tuple[mx.array, mx.array | None]:
        """A causal pass of whole sequences that also returns the cross-attention scores of `heads`."""
        x = x + self.attn(self.attn_ln(x), mask="causal")
        h = self.cross_attn_ln(x)
        scores = self.cross_attn.scores(h, cross_kv, heads) if heads else None
        x = x + self.cross_attn(h, kv=cross_kv)
        return x + self.mlp2(gelu(self.mlp1(self.mlp_ln(x)))), scores


class AudioEncoder(nn.Module):
    """Two convolutions (the second with stride 2), sinusoidal positions, transformer blocks."""

    def __init__(self, n_mels: int, n_ctx: int, n_state: int, n_head: int, n_layer: int):
        super().__init__()
        self.conv1 = Conv1d(n_mels, n_state, kernel_size=3, padding=1)
        self.conv2 = Conv1d(n_state, n_state, kernel_size=3, stride=2, padding=1)
        self._positional_embedding = sinusoids(n_ctx, n_state)
        mx.eval(self._positional_embedding)  # not a parameter: evaluate now, so any thread can use it
        self.blocks = [ResidualAttentionBlock(n_state, n_head) for _ in range(n_layer)]
        self.ln_post = LayerNorm(n_state)

    def __call__(self, mel: mx.array) -> mx.array:
        *_, features = self.stages(mel)
        return features

    def stages(self, mel: mx.array) -> Iterator[mx.array]:
        """The pass in n_layer + 2 pieces (lazy): the convolutions' output, each block's, the features last."""
        x = gelu(self.conv1(mel))
        x = gelu(self.conv2(x))
        if x.shape[1:] != self._positional_embedding.shape:
            raise ValueError(
                f"mel gives {x.shape[1]} audio positions, the model expects "
                f"{self._positional_embedding.shape[0]} (3000 frames for 30 s)"
            )
        x = x + self._positional_embedding.astype(x.dtype)
        yield x
        for block in self.blocks:
            x = block(x)
            yield x
        yield self.ln_post(x)


class TextDecoder(nn.Module):
    """Token and learned position embeddings, cross-attending blocks, tied output projection."""

    def __init__(self, n_vocab: int, n_ctx: int, n_state: int, n_head: int, n_layer: int):
        super().__init__()
        self.token_embedding = nn.Embedding(n_vocab, n_state)
        self.positional_embedding = mx.zeros((n_ctx, n_state))
        self.blocks = [ResidualAttentionBlock(n_state, n_head, cross_attention=True) for _ in range(n_layer)]
        self.ln = LayerNorm(n_state)
        self.kv_bits: int | None = None  # 8: keep the cross-attention K/V as int8 with a scale per vector
        self.absorbed = False  # True: cross-attention against the audio features, no K/V (`absorb`)

    def absorb(self) -> None:
        """Cross-attend to the audio features themselves, with the key and value projections folded
        into each step (`MultiHeadAttention.attend_features`): the features are held once for all
        layers in place of every layer's keys and values (large-v3: 3.8 MB a segment, not 246 MB)."""
        for block in self.blocks:
            block.cross_attn.absorb()
        self.absorbed = True

    def cross_kv(self, audio_features: mx.array) -> list[CrossKV]:
        """Cross-attention keys/values of each layer, computed once per audio (contiguous, so that
        every decoding step reads them in place rather than copying a transposed view).

        Each layer is evaluated before the next is built: evaluated together, every layer's
        projection would be alive beside its contiguous copy, doubling the peak. Absorbed
        (`absorb`): the features themselves, one array that every layer's entry shares.
        """
        if self.absorbed:
            features = mx.contiguous(audio_features)
            mx.eval(features)
            return [(features,)] * len(self.blocks)
        layers = []
        for block in self.blocks:
            kv = tuple(map(mx.contiguous, block.cross_attn.kv(audio_features)))
            layers.append(quantize_kv(*kv) if self.kv_bits == 8 else kv)
            mx.eval(layers[-1])
        return layers

    def __call__(
        self,
        tokens: mx.array,
        audio_features: mx.array | None = None,
        cache: list[KVCache] | None = None,
    ) -> mx.array:
        """Final hidden states (B, T, n_text_state); `project` turns them into logits.

        Without a cache, tokens are whole sequences that attend to `audio_features`. With one,
        they continue the rows held there (cross K/V come from the cache).
        """
        length = tokens.shape[1]
        if cache is None:
            if length > self.positional_embedding.shape[0]:
                raise ValueError(f"{length} tokens exceed the decoder's {self.positional_embedding.shape[0]}")
            pos = self.positional_embedding[:length]
            cross = self.cross_kv(audio_features)
            mask = "causal" if length > 1 else None
        else:
            # rows that already finished may run past the last position: clamp, their output is unused
            positions = mx.minimum(cache[0].positions(length), self.positional_embedding.shape[0] - 1)
            if length == 1:  # a decoding step: (B, D) rows throughout, fewer reshapes in its graph
                tokens, positions = tokens[:, 0], positions[:, 0]
            pos = self.positional_embedding[positions]
            cross = [c.cross_kv for c in cache]
            mask = cache[0].mask(length)
        x = self.token_embedding(tokens) + pos
        for i, block in enumerate(self.blocks):
            x = block(x, mask=mask, cross_kv=cross[i], cache=None if cache is None else cache[i])
        x = self.ln(x)
        return x if x.ndim == 3 else x[:, None]

    def forward_with_scores(self, tokens: mx.array, cross: list[CrossKV], heads: Heads) -> tuple[mx.array, mx.array]:
        """Hidden states of whole (right-padded) sequences and the cross-attention scores of the
        (layer, head) pairs `heads`, stacked as (B, len(heads), T, n_audio) in the order given.

        Layers after the last one named still run: the hidden states feed the word probabilities.
        """
        x = self.token_embedding(tokens) + self.positional_embedding[: tokens.shape[1]]
        by_layer: list[mx.array] = []
        order = []
        for i, block in enumerate(self.blocks):
            wanted = [h for layer, h in heads if layer == i]
            x, scores = block.with_scores(x, cross[i], wanted)
            if scores is not None:
                by_layer.append(scores)
                order += [(i, h) for h in wanted]
        stacked = mx.concatenate(by_layer, axis=1)
        return self.ln(x), stacked[:, mx.array([order.index(tuple(p)) for p in heads])]

    def project(self, x: mx.array) -> mx.array:
        """Logits over the vocabulary (the output head is the token embedding)."""
        if isinstance(self.token_embedding, nn.Embedding):
            return linear(x, self.token_embedding.weight)
        return self.token_embedding.as_linear(x)  # quantized


class Whisper(nn.Module):
    """The encoder-decoder; `embed_audio` and `logits` mean what they mean in openai-whisper."""

    def __init__(self, dims: ModelDimensions, dtype: mx.Dtype = mx.float32):
        super().__init__()
        self.dims = dims
        self.encoder = AudioEncoder(
            dims.n_mels, dims.n_audio_ctx, dims.n_audio_state, dims.n_audio_head, dims.n_audio_layer
        )
        self.decoder = TextDecoder(
            dims.n_vocab, dims.n_text_ctx, dims.n_text_state, dims.n_text_head, dims.n_text_layer
        )
        self.set_dtype(dtype)
        self.alignment_heads: Heads = default_heads(dims.n_text_layer, dims.n_text_head)  # for word timing

    def embed_audio(self, mel: mx.array) -> mx.array:
        """Encoder output (B, n_audio_ctx, n_audio_state) for mel (B, 3000, n_mels)."""
        return self.encoder(mel.astype(self.dtype))

    def embed_audio_stages(self, mel: mx.array) -> Iterator[mx.array]:
        """`embed_audio` in pieces, as `AudioEncoder.stages` (lazy; the features last)."""
        return self.encoder.stages(mel.astype(self.dtype))

    def logits(self, tokens: mx.array, audio_features: mx.array) -> mx.array:
        """Decoder logits (B, T, n_vocab) for whole token sequences, as openai-whisper's `logits`."""
        return self.decoder.project(self.decoder(tokens, audio_features))

    def __call__(self, mel: mx.array, tokens: mx.array) -> mx.array:
        return self.logits(tokens, self.embed_audio(mel))

    def new_cache(
        self, audio_features: mx.array, left_padding: list[int] | None = None, group: int = 1
    ) -> list[KVCache]:
        """Empty per-layer caches holding the cross-attention K/V of these audio rows; with
        `group` > 1, each audio row serves that many consecutive decoder rows (beams)."""
        return [KVCache(kv, left_padding, group) for kv in self.decoder.cross_kv(audio_features)]

    @property
    def dtype(self) -> mx.Dtype:
        return self.decoder.positional_embedding.dtype

    @property
    def is_multilingual(self) -> bool:
        return self.dims.n_vocab >= 51865

    @property
    def num_languages(self) -> int:
        return self.dims.n_vocab - 51765 - int(self.is_multilingual)
