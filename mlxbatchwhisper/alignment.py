"""Token-level alignment of decoded text to audio, for a whole batch of segments at once.

openai-whisper's recipe, vectorized over rows: one teacher-forced decoder pass over every row's
[start-of-transcript sequence, <|notimestamps|>, text tokens, <|endoftext|>] (rows right-padded,
so the causal mask alone keeps padding out of real positions) returns the alignment heads'
cross-attention scores; then a softmax over the segment's own frames, per-head normalization
over tokens, a median filter in time, the average over heads, and dynamic time warping. The DTW
runs in numpy along anti-diagonals, every row of the batch at once; its tie-breaking and
float32 cost accumulation are openai-whisper's, so paths (and times) agree with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from .audio import HOP_LENGTH
from .cache import shared
from .kernels import CrossKV, dtw_token_starts_cuda, logsumexp, native_median, softmax
from .kernels import median_filter as native_median_filter
from .model import Whisper

TOKENS_PER_SECOND = 50  # audio positions per second: the encoder halves the 100 mel frames per second
MEDIAN_FILTER_WIDTH = 7
HEADS_PER_PASS = 8  # heads median-filtered at once (openai's default heads can number hundreds)


@dataclass(frozen=True)
class AlignmentRow:
    """One segment to align: its encoder output, the prefix before the text, the text, its length."""

    features: mx.array  # (1, n_audio_ctx, n_audio_state)
    prefix: tuple[int, ...]  # start-of-transcript sequence and <|notimestamps|>
    text_tokens: tuple[int, ...]
    num_samples: int  # of the audio the segment holds (16 kHz)
    cross_kv: list[CrossKV] | None = None  # per layer, if the decoder kept them


@dataclass(frozen=True)
class TokenAlignment:
    """Where each text token starts (seconds; one more entry for the end-of-text) and its probability."""

    starts: np.ndarray  # (len(text_tokens) + 1,)
    probabilities: np.ndarray  # (len(text_tokens),), softmax over text tokens only


def align_tokens(
    model: Whisper, rows: Sequence[AlignmentRow], eot: int, medfilt_width: int = MEDIAN_FILTER_WIDTH
) -> list[TokenAlignment]:
    """Align every row's text tokens to its audio in one decoder pass; rows without text get empty arrays."""
    todo = [i for i, r in enumerate(rows) if r.text_tokens]
    out = [TokenAlignment(np.zeros(0), np.zeros(0))] * len(rows)
    if not todo:
        return out
    batch = [rows[i] for i in todo]
    prefix = len(batch[0].prefix)
    if any(len(r.prefix) != prefix for r in batch):
        raise ValueError("rows aligned together need prefixes of one length (one model, one task)")
    sequences = [list(r.prefix) + list(r.text_tokens) + [eot] for r in batch]
    width = max(map(len, sequences))
    tokens = mx.array([s + [eot] * (width - len(s)) for s in sequences], dtype=mx.int32)
    n_text = np.array([len(r.text_tokens) for r in batch])
    frames = np.array([min(r.num_samples // HOP_LENGTH, 2 * model.dims.n_audio_ctx) // 2 for r in batch])

    if all(r.cross_kv is not None for r in batch):
        memo: dict = {}  # arrays the layers share (absorbed cross-attention's features) are joined once
        cross = [
            tuple(
                shared(memo, parts, lambda p=parts: mx.concatenate(p)) for parts in zip(*(r.cross_kv[i] for r in batch))
            )
            for i in range(model.dims.n_text_layer)
        ]
    else:
        cross = model.decoder.cross_kv(mx.concatenate([r.features for r in batch]))
    hidden, scores = model.decoder.forward_with_scores(tokens, cross, model.alignment_heads)
    probs = _text_probabilities(model, hidden[:, prefix - 1 : prefix - 1 + int(n_text.max())], tokens, prefix, eot)
    matrix = _attention_matrix(
        scores, np.array([len(s) for s in sequences]), frames, prefix - 1, int(n_text.max()) + 1, medfilt_width
    )
    probs = np.array(probs)
    if isinstance(matrix, mx.array) and mx.cuda.is_available():  # the DTW on the GPU too, one block per row
        starts = np.array(dtw_token_starts_cuda(-matrix, n_text + 1, frames)).astype(np.int64)
    else:
        starts = dtw_token_starts(-np.asarray(matrix, np.float64), n_text + 1, frames)
    for k, i in enumerate(todo):
        out[i] = TokenAlignment(starts[k, : n_text[k] + 1] / TOKENS_PER_SECOND, probs[k, : n_text[k]])
    return out


def _text_probabilities(model: Whisper, hidden: mx.array, tokens: mx.array, prefix: int, eot: int) -> mx.array:
    """(B, N) probability of each text token given the ones before, over the text vocabulary only."""
    batch, n, width = hidden.shape
    text_vocab = model.decoder.token_embedding.weight[:eot]  # the output head, cut to text tokens
    logits = (hidden.reshape(-1, width) @ text_vocab.T).astype(mx.float32)
    targets = mx.minimum(tokens[:, prefix : prefix + n], eot - 1).reshape(-1, 1)
    chosen = mx.take_along_axis(logits, targets, axis=-1)[:, 0]
    return mx.exp(chosen - logsumexp(logits)).reshape(batch, n)


def _attention_matrix(
    scores: mx.array, lengths: np.ndarray, frames: np.ndarray, first: int, n_rows: int, width: int
) -> np.ndarray | mx.array:
    """(B, n_rows, max frames) token-by-time similarity from the heads' scores (B, H, T, n_audio).

    Per row: softmax over its own frames, standardized over its own tokens per head and frame,
    then rows `first` .. `first + n_rows` (the positions that predict the text and end-of-text)
    median-filtered in time, reflecting at the row's own last frame, and averaged over heads.
    """
    n_frames = int(frames.max())
    scores = scores[..., :n_frames]
    time_ok = mx.array(np.arange(n_frames)[None, :] < frames[:, None])[:, None, None, :]
    weights = softmax(mx.where(time_ok, scores, -1e30))  # finite: the native softmax is built for finite input
    token_ok = mx.array(np.arange(scores.shape[2])[None, :] < lengths[:, None])[:, None, :, None].astype(mx.float32)
    count = mx.array(lengths.astype(np.float32))[:, None, None, None]
    mean = (weights * token_ok).sum(axis=2, keepdims=True) / count
    var = (mx.square(weights - mean) * token_ok).sum(axis=2, keepdims=True) / count
    weights = ((weights - mean) / mx.sqrt(var))[:, :, first : first + n_rows]
    weights = mx.where(time_ok, weights, 0.0)
    # numpy's element-wise passes beat MLX's on the CPU, and the native filter beats both
    in_numpy = mx.default_device() == mx.cpu and not native_median(weights.dtype, width)
    total = 0.0
    for h in range(0, weights.shape[1], HEADS_PER_PASS):  # bounded memory, whatever the number of heads
        part = weights[:, h : h + HEADS_PER_PASS]
        filtered = median_filter(np.array(part) if in_numpy else part, frames, width).sum(axis=1)
        total = total + filtered
        if not in_numpy:
            mx.eval(total)
    return total / weights.shape[1]


def median_filter(x: np.ndarray | mx.array, lengths: np.ndarray, width: int) -> np.ndarray | mx.array:
    """Median of `width` neighbours along the last axis of (B, ..., F), each row reflected at its own
    length; rows no longer than width // 2 are returned unfiltered (as openai-whisper does). Positions
    past a row's length are not part of the result (what they hold depends on where it ran).

    Natively on the CPU where the kernels are built (float32 MLX arrays); otherwise by a sorting
    network over `width` shifted copies (element-wise min/max), several times faster than sorting
    each window; numpy or MLX arrays, computed where they live.
    """
    if isinstance(x, mx.array) and native_median(x.dtype, width):
        return native_median_filter(x, lengths, width)
    xp = mx if isinstance(x, mx.array) else np
    half = width // 2
    n = x.shape[-1]
    last = np.maximum(lengths - 1, 0)[:, None]
    shifted = []
    for k in range(-half, half + 1):
        idx = np.abs(np.arange(n)[None, :] + k)
        idx = np.clip(np.where(idx > last, 2 * last - idx, idx), 0, n - 1)  # (B, F): reflect at each row's end
        idx = idx.reshape((len(lengths),) + (1,) * (x.ndim - 2) + (n,))
        shifted.append(xp.take_along_axis(x, idx if xp is np else mx.array(idx), axis=-1))
    for i, j in _sorting_network(width):
        shifted[i], shifted[j] = xp.minimum(shifted[i], shifted[j]), xp.maximum(shifted[i], shifted[j])
    keep = (lengths > half).reshape((-1,) + (1,) * (x.ndim - 1))
    return xp.where(keep if xp is np else mx.array(keep), shifted[half], x)


def _sorting_network(n: int) -> list[tuple[int, int]]:
    """Compare-exchange pairs that sort n values (odd-even transposition: n rounds)."""
    return [(i, i + 1) for r in range(n) for i in range(r % 2, n - 1, 2)]


def dtw_token_starts(cost: np.ndarray, n_rows: np.ndarray, n_cols: np.ndarray) -> np.ndarray:
    """For each batch row, the column at which the cheapest monotonic path first reaches each row.

    `cost` is (B, N, M); row b uses only its top-left n_rows[b] x n_cols[b] block. The path and
    its ties are openai-whisper's `dtw_cpu`: from each cell, diagonal if strictly cheapest, else
    up if strictly cheapest, else left; costs accumulate in float32. Returns (B, N) int columns.
    """
    batch, n, m = cost.shape
    acc = np.full((batch, n + 1, m + 1), np.inf, np.float32)
    acc[:, 0, 0] = 0
    trace = np.full((batch, n + 1, m + 1), -1, np.int8)
    for d in range(2, n + m + 1):  # cells (i, j) with i + j = d depend only on the two diagonals before
        i = np.arange(max(1, d - m), min(n, d - 1) + 1)
        j = d - i
        c0, c1, c2 = acc[:, i - 1, j - 1], acc[:, i - 1, j], acc[:, i, j - 1]
        t = np.where((c0 < c1) & (c0 < c2), 0, np.where((c1 < c0) & (c1 < c2), 1, 2)).astype(np.int8)
        best = np.where(t == 0, c0, np.where(t == 1, c1, c2))
        acc[:, i, j] = (cost[:, i - 1, j - 1] + best).astype(np.float32)
        trace[:, i, j] = t
    trace[:, 0, :] = 2
    trace[:, :, 0] = 1
    rows = np.arange(batch)
    i, j = n_rows.astype(np.int64).copy(), n_cols.astype(np.int64).copy()
    starts = np.zeros((batch, n), np.int64)
    while True:  # walk every row's path back at once; the last visit of a row is its first column
        live = (i > 0) | (j > 0)
        if not live.any():
            return starts
        b = rows[live & (i > 0)]  # a path leaves row 0 only at the origin
        starts[b, i[b] - 1] = j[b] - 1
        b = rows[live]
        t = trace[b, i[b], j[b]]
        i[b] -= ((t == 0) | (t == 1)).astype(np.int64)
        j[b] -= ((t == 0) | (t == 2)).astype(np.int64)
