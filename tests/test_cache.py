"""`KVCache` on random arrays: positions and masks of left-padded rows, filter, extend, permute, groups."""

import mlx.core as mx
import numpy as np
import pytest

from mlxbatchwhisper.cache import KVCache

H, D, AUDIO = 2, 4, 3


def cross(rows: int, seed: int) -> tuple[mx.array, mx.array]:
    rng = np.random.default_rng(seed)
    k = mx.array(rng.standard_normal((rows, H, AUDIO, D)).astype(np.float32))
    return k, -k


def columns(rows: int, n: int, start: float) -> mx.array:
    """(rows, H, n, D) keys whose value names their row and column: row * 1000 + column."""
    r = np.arange(rows)[:, None, None, None] * 1000.0
    c = start + np.arange(n)[None, None, :, None]
    return mx.array(np.broadcast_to(r + c, (rows, H, n, D)).astype(np.float32))


def held(cache: KVCache) -> np.ndarray:
    """Each row's written columns as (row, column) names, padding as -1."""
    k = np.array(cache.keys[:, 0, : cache.offset, 0].astype(mx.float32))
    for row, pad in enumerate(cache.left_padding):
        k[row, :pad] = -1
    return k


def test_left_padded_rows_have_their_own_positions_and_never_see_padding():
    cache = KVCache(cross(3, 0), left_padding=[2, 0, 1])
    assert cache.mask(1) is not None
    cache.update_and_fetch(columns(3, 4, 0), columns(3, 4, 0))
    assert cache.lengths() == [2, 4, 3]
    assert np.array(cache.positions(2)).tolist() == [[2, 3], [4, 5], [3, 4]]
    mask = np.array(cache.mask(1))[:, 0, 0]  # the next query of each row
    assert mask.tolist() == [[False, False, True, True, True], [True] * 5, [False, True, True, True, True]]
    assert KVCache(cross(2, 0)).mask(1) is None  # no padding: no mask


def test_filter_keeps_rows_in_order_and_trims_the_padding_they_all_had():
    cache = KVCache(cross(3, 0), left_padding=[2, 0, 1])
    cache.update_and_fetch(columns(3, 4, 0), columns(3, 4, 0))
    before = held(cache)
    cache.filter([2, 0])
    assert cache.left_padding == [0, 1] and cache.offset == 3
    assert np.array_equal(held(cache), before[[2, 0], 1:])
    assert np.array_equal(np.array(cache.cross_kv[0]), np.array(cross(3, 0)[0])[[2, 0]])


def test_extend_left_pads_whichever_holds_fewer_columns():
    a = KVCache(cross(2, 0), left_padding=[0, 1])
    a.update_and_fetch(columns(2, 3, 0), columns(2, 3, 0))
    b = KVCache(cross(1, 1))
    b.update_and_fetch(columns(1, 5, 100), columns(1, 5, 100))
    old_a, old_b = held(a), held(b)
    a.extend(b)
    assert a.offset == 5 and a.left_padding == [2, 3, 0]
    got = held(a)
    assert np.array_equal(got[:2, 2:], old_a) and np.array_equal(got[2], old_b[0])
    assert a.cross_kv[0].shape[0] == 3
    fresh = KVCache(cross(1, 2))  # a cache that has seen no tokens yet joins too
    a.extend(fresh)
    assert a.left_padding[-1] == 5 and a.keys.shape[0] == 4


@pytest.mark.parametrize("host_views", [True, False])
@pytest.mark.parametrize("on_device", [False, True])
@pytest.mark.parametrize("dtype", [mx.float32, mx.bfloat16])
def test_permute_moves_written_columns_within_groups(host_views, on_device, dtype, monkeypatch):
    """Both ways of moving rows (in place through host views on the CPU, MLX ops elsewhere), the
    permutation given by the host or by the device, in a dtype numpy has and one it has not."""
    from mlxbatchwhisper import cache as cache_module

    monkeypatch.setattr(cache_module, "_on_cpu", lambda: host_views)
    cache = KVCache(cross(2, 0), group=3)  # two segments, three beams each: 6 rows, 2 audio rows
    cache.update_and_fetch(columns(6, 3, 0).astype(dtype), columns(6, 3, 0).astype(dtype))
    before = held(cache)
    order = [2, 0, 0, 4, 3, 5]
    cache.permute(mx.array(order) if on_device else order)
    assert np.array_equal(held(cache), before[order])
    assert cache.cross_kv[0].shape[0] == 2  # shared, not copied per beam


def test_groups_are_kept_and_dropped_whole():
    cache = KVCache(cross(2, 0), group=3)
    cache.update_and_fetch(columns(6, 2, 0), columns(6, 2, 0))
    with pytest.raises(ValueError, match="inside their groups"):
        cache.permute([3, 1, 2, 0, 4, 5])
    with pytest.raises(ValueError, match="whole groups"):
        cache.filter([0, 1, 3, 4, 5])
    with pytest.raises(ValueError, match="groups of 3 rows with groups of 1"):
        cache.extend(KVCache(cross(1, 1)))
    before = held(cache)
    cache.filter([3, 4, 5])
    assert np.array_equal(held(cache), before[3:])
    assert np.array_equal(np.array(cache.cross_kv[0]), np.array(cross(2, 0)[0])[1:])
    with pytest.raises(ValueError, match="left_padding has 2 rows, cross K/V 3"):
        KVCache(cross(1, 0), left_padding=[0, 0], group=3)
