"""The decoder's key/value cache: one object per decoder layer, rows of different lengths.

Rows are left-padded so that every row writes its next token into the same column. A row's
`left_padding` counts the unused columns before its first token; `offset` is the number of
columns written. `filter` drops finished rows and `extend` adds rows (refilling a batch).
Cross-attention K/V are computed once per segment and travel with its rows; in beam search a
segment's beams are a `group` of consecutive rows that share them. They are a pair (keys,
values), with 8-bit K/V four arrays (int8 keys, int8 values, their scales), or with absorbed
cross-attention one array, the audio features, which every layer shares: `filter` and `extend`
take a `memo` (one dict for all layers of a batch) so that an array shared by layers is gathered
once and stays shared.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import mlx.core as mx
import numpy as np

from .kernels import attend_cached, attention, one_query_cuda


class KVCache:
    """Self-attention K/V grown in blocks of `step` columns, plus fixed cross-attention K/V."""

    step = 256

    def __init__(
        self,
        cross_kv: tuple[mx.array, ...],
        left_padding: Sequence[int] | None = None,
        group: int = 1,
        reserve: int = 0,
    ):
        self.cross_kv = cross_kv
        self.reserve = reserve  # columns the rows may reach: the first allocation holds them, no growth copies
        self.group = group  # consecutive rows sharing one cross-attention K/V (the beams of a segment)
        batch = cross_kv[0].shape[0] * group
        self.left_padding = list(left_padding) if left_padding is not None else [0] * batch
        if len(self.left_padding) != batch:
            raise ValueError(f"left_padding has {len(self.left_padding)} rows, cross K/V {batch}")
        self.keys: mx.array | None = None
        self.values: mx.array | None = None
        self.offset = 0
        self._starts: tuple[list[int] | None, mx.array | None] = (None, None)  # left_padding, as an array

    @property
    def batch_size(self) -> int:
        return len(self.left_padding)

    def lengths(self) -> list[int]:
        """Tokens held per row."""
        return [self.offset - p for p in self.left_padding]

    def positions(self, n: int) -> mx.array:
        """(B, n) positions of the next n tokens of each row."""
        cols = mx.arange(self.offset, self.offset + n)[None, :]
        return mx.maximum(cols - mx.array(self.left_padding)[:, None], 0)

    def mask(self, n: int) -> mx.array | None:
        """Boolean (B, 1, n, offset + n) mask for the next n queries, or None if none is needed.

        A query sees earlier columns of its own row; a padding query sees only itself, which
        keeps its (unused) output finite.
        """
        if n == 1 and not any(self.left_padding):
            return None
        q = mx.arange(self.offset, self.offset + n)[:, None]
        k = mx.arange(self.offset + n)[None, :]
        pad = mx.array(self.left_padding)[:, None, None, None]
        return (k <= q) & ((k >= pad) | (k == q))

    def attend(self, q: mx.array, keys: mx.array, values: mx.array, mask: mx.array | None) -> mx.array:
        """Append (B, H, n, D) keys/values and attend the n queries q to their rows' columns so far
        (`mask` is `self.mask(n)`); one query a row on CUDA reads the cache in place."""
        k, v = self.update_and_fetch(keys, values)
        if not one_query_cuda(q, self.keys):
            return attention(q, k, v, mask)
        if self._starts[0] is not self.left_padding:  # remade only when rows leave, join or move
            self._starts = (self.left_padding, mx.array(self.left_padding, dtype=mx.int32))
        return attend_cached(q, self.keys, self.values, self.offset, self._starts[1])

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        """Append (B, H, n, D) keys/values; return all columns written so far."""
        n = keys.shape[2]
        if self.keys is None or self.offset + n > self.keys.shape[2]:
            self._grow(self.offset + n, keys)
        self.keys[..., self.offset : self.offset + n, :] = keys
        self.values[..., self.offset : self.offset + n, :] = values
        self.offset += n
        return self.keys[..., : self.offset, :], self.values[..., : self.offset, :]

    def _grow(self, needed: int, like: mx.array) -> None:
        batch, heads, _, dim = like.shape
        if needed <= self.reserve:
            capacity = -(-self.reserve // 16) * 16
        else:
            capacity = -(-needed // self.step) * self.step
        k = mx.zeros((batch, heads, capacity, dim), like.dtype)
        v = mx.zeros((batch, heads, capacity, dim), like.dtype)
        if self.keys is not None:
            k[..., : self.offset, :] = self.keys[..., : self.offset, :]
            v[..., : self.offset, :] = self.values[..., : self.offset, :]
        self.keys, self.values = k, v

    def filter(self, keep: Sequence[int], memo: dict | None = None) -> None:
        """Keep only the rows at indices `keep`, in that order; drop padding all of them share."""
        keep = list(keep)
        idx = mx.array(keep, dtype=mx.int32)
        heads = keep[:: self.group]
        if [h + j for h in heads for j in range(self.group)] != keep or any(h % self.group for h in heads):
            raise ValueError(f"filter must keep whole groups of {self.group} rows")
        cross = mx.array([h // self.group for h in heads], dtype=mx.int32)
        self.cross_kv = tuple(shared(memo, (a,), lambda a=a: a[cross]) for a in self.cross_kv)
        self.left_padding = [self.left_padding[i] for i in keep]
        if self.keys is None:
            return
        shift = min(self.left_padding, default=0)
        self.keys = self.keys[idx, :, shift : self.offset, :]
        self.values = self.values[idx, :, shift : self.offset, :]
        self.offset -= shift
        self.reserve = max(self.reserve - shift, 0)
        self.left_padding = [p - shift for p in self.left_padding]

    def permute(self, order: Sequence[int] | mx.array) -> None:
        """Reorder rows within their groups (beams of one segment share cross-attention K/V).

        Only the columns written so far move. On a GPU the permutation (a host sequence, or a beam
        step's `mx.array`) is applied lazily, in the step's graph. On the CPU, whose memory is the
        host's, it is read (a wait for the step) and only the rows that change are moved, in place
        through host views: many times faster than copying every row.
        """
        if isinstance(order, mx.array):
            if not _on_cpu():
                if self.keys is not None:
                    self._move(order)
                return
            order = np.array(order)
        order = np.asarray(order)
        if np.any(order // self.group != np.arange(len(order)) // self.group):
            raise ValueError("permute must keep rows inside their groups")
        changed = np.nonzero(order != np.arange(len(order)))[0]
        if self.keys is None or not len(changed):
            return
        if _on_cpu() and self.keys.dtype in (mx.float32, mx.float16):
            mx.eval(self.keys, self.values)
            for buffer in (self.keys, self.values):
                rows = np.asarray(memoryview(buffer))
                rows[changed, :, : self.offset] = rows[order[changed], :, : self.offset]
            return
        self._move(mx.array(order.astype(np.int32)))

    def _move(self, order: mx.array) -> None:
        self.keys[:, :, : self.offset, :] = self.keys[order, :, : self.offset, :]
        self.values[:, :, : self.offset, :] = self.values[order, :, : self.offset, :]

    def extend(self, other: KVCache, memo: dict | None = None) -> None:
        """Append the rows of `other` (same layer and group), left-padding whichever holds fewer columns."""
        if other.group != self.group:
            raise ValueError(f"cannot extend a cache of groups of {self.group} rows with groups of {other.group}")
        a, b = self._trimmed(), other._trimmed()
        width = max(self.offset, other.offset)
        pads = (width - self.offset, width - other.offset)
        if a[0] is not None or b[0] is not None:
            like = a[0] if a[0] is not None else b[0]
            parts = [_left_pad(kv, pad, cache.batch_size, like) for kv, pad, cache in zip((a, b), pads, (self, other))]
            self.keys = mx.concatenate([p[0] for p in parts])
            self.values = mx.concatenate([p[1] for p in parts])
        self.cross_kv = tuple(
            shared(memo, (x, y), lambda x=x, y=y: mx.concatenate([x, y])) for x, y in zip(self.cross_kv, other.cross_kv)
        )
        self.left_padding = [p + pads[0] for p in self.left_padding] + [p + pads[1] for p in other.left_padding]
        self.reserve = max(self.reserve - self.offset, other.reserve - other.offset) + width
        self.offset = width

    def _trimmed(self) -> tuple[mx.array | None, mx.array | None]:
        if self.keys is None:
            return None, None
        return self.keys[..., : self.offset, :], self.values[..., : self.offset, :]


def shared(memo: dict | None, arrays: tuple[mx.array, ...], make: Callable[[], mx.array]) -> mx.array:
    """`make()`, computed once per distinct `arrays` while `memo` lives (None: every time)."""
    if memo is None:
        return make()
    key = tuple(map(id, arrays))
    if key not in memo:
        memo[key] = (arrays, make())  # the arrays are kept so that their ids stay theirs
    return memo[key][1]


def take_rows(cross: Sequence[tuple[mx.array, ...]], rows: mx.array) -> list[tuple[mx.array, ...]]:
    """Every layer's cross-attention arrays at `rows` (first axis); an array layers share (absorbed:
    the features) is taken once and stays shared."""
    memo: dict = {}
    return [tuple(shared(memo, (a,), lambda a=a: a[rows]) for a in kv) for kv in cross]


def _left_pad(kv, pad: int, batch: int, like: mx.array) -> tuple[mx.array, mx.array]:
    keys, values = kv
    if keys is None:  # a cache that has seen no tokens yet: zeros shaped like the other's
        shape = (batch, like.shape[1], pad, like.shape[3])
        return mx.zeros(shape, like.dtype), mx.zeros(shape, like.dtype)
    if pad == 0:
        return keys, values
    widths = [(0, 0), (0, 0), (pad, 0), (0, 0)]
    return mx.pad(keys, widths), mx.pad(values, widths)


def _on_cpu() -> bool:
    return mx.default_device() == mx.cpu
