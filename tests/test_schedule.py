"""Properties of the scheduler: windows cover speech exactly once, fit, and map back inside their input."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mlxbatchwhisper.schedule import (
    FRAME,
    GAP,
    MAX_WINDOW,
    Window,
    WindowStream,
    merge_regions,
    plan_windows,
    remainder,
    split_long,
    stitch,
    stitched,
    to_file_time,
)


@st.composite
def speech_regions(draw, max_seconds=400.0):
    """Sorted, disjoint (start, end) regions in seconds, some longer than 30 s."""
    cuts = sorted(draw(st.lists(st.floats(0, max_seconds, allow_nan=False), min_size=0, max_size=24, unique=True)))
    regions = [(a, b) for a, b in zip(cuts[::2], cuts[1::2]) if b - a > 0.01]
    return [(round(a, 3), round(b, 3)) for a, b in regions]


def scores_for(regions, seed):
    length = int((regions[-1][1] if regions else 1) / FRAME) + 2
    return np.random.default_rng(seed).random(length).astype(np.float32)


def covered(intervals):
    """Merge touching intervals: the set of seconds they cover."""
    out = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1] + 1e-9:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


@settings(max_examples=200, deadline=None)
@given(
    st.lists(speech_regions(), min_size=1, max_size=4),
    st.sampled_from([5.0, 15.0, 30.0]),
    st.integers(0, 2**31 - 1),
    st.booleans(),
)
def test_every_speech_second_lands_in_exactly_one_window(files, chunk, seed, with_scores):
    scores = [scores_for(r, seed) for r in files] if with_scores else None
    windows = plan_windows(files, chunk, scores)
    for source, regions in enumerate(files):
        mine = sorted((w for w in windows if w.source == source), key=lambda w: w.start)
        assert all(w.duration <= chunk + 1e-9 for w in mine)
        for a, b in zip(mine, mine[1:]):  # windows of one input never overlap
            assert a.end <= b.start + 1e-9
        pieces = [p for w in mine for p in w.regions]
        assert all(w.start <= p[0] <= p[1] <= w.end for w in mine for p in w.regions)
        assert covered(pieces) == covered(regions)  # all the speech, and only it
    assert [w.duration for w in windows] == sorted((w.duration for w in windows), reverse=True)


@settings(max_examples=200, deadline=None)
@given(st.floats(31, 300), st.sampled_from([10.0, 30.0]), st.integers(0, 2**31 - 1))
def test_long_regions_are_cut_at_their_quietest_frame(length, chunk, seed):
    scores = np.random.default_rng(seed).random(int(length / FRAME) + 1)
    pieces = split_long([(0.0, length)], chunk, scores)
    assert pieces[0][0] == 0.0 and pieces[-1][1] == length
    assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:]))
    for start, cut in pieces[:-1]:
        assert chunk / 2 - FRAME <= cut - start <= chunk
        lo, hi = int(np.ceil((start + chunk / 2) / FRAME)), int((start + chunk) / FRAME)
        assert scores[round(cut / FRAME)] == scores[lo:hi].min()


def test_merging_follows_whisperx():
    regions = [(0.0, 10.0), (12.0, 25.0), (26.0, 31.0), (40.0, 41.0)]
    assert merge_regions(regions, 30.0) == [[(0.0, 10.0), (12.0, 25.0)], [(26.0, 31.0), (40.0, 41.0)]]
    assert split_long([(0.0, 70.0)], 30.0, None) == [(0.0, 30.0), (30.0, 60.0), (60.0, 70.0)]


@settings(max_examples=200, deadline=None)
@given(st.floats(0, 1000), st.floats(0.5, 30), st.lists(st.floats(-1, 40), min_size=2, max_size=20))
def test_timestamps_map_inside_the_window_and_keep_their_order(start, duration, times):
    window = Window(0, start, start + duration, ((start, start + duration),))
    times = sorted(times)
    mapped = [to_file_time(window, a, b) for a, b in zip(times, times[1:])]
    for a, b in mapped:
        assert round(window.start, 3) <= a <= b <= round(window.end, 3)
    starts = [a for a, _ in mapped]
    assert starts == sorted(starts)


@settings(max_examples=300, deadline=None)
@given(speech_regions(), st.sampled_from([5.0, 15.0, 30.0]), st.integers(0, 2**31 - 1), st.booleans(), st.data())
def test_windows_planned_as_regions_arrive_equal_the_whole_plan(regions, chunk, seed, with_scores, data):
    """Regions given a few at a time (with how far the input has been read) plan the same windows,
    each given out once, in time order, and only once no region to come could join it."""
    scores = scores_for(regions, seed) if with_scores else None
    expected = sorted(plan_windows([regions], chunk, [scores]), key=lambda w: w.start)
    stream, got, k = WindowStream(chunk), [], 0
    while k < len(regions):
        n = data.draw(st.integers(1, 3))
        got += stream.add(regions[k : k + n], scores)
        k += n
        earliest = regions[k][0] if k < len(regions) else regions[-1][1] + data.draw(st.floats(0, 40))
        got += stream.advance(earliest)
        if stream.open_start is not None:
            assert all(w.end <= stream.open_start for w in got)
    got += stream.finish()
    assert got == expected


def test_remainder_starts_at_the_next_speech_and_does_not_count_padding():
    w = Window(0, 10.0, 30.0, ((10.0, 14.0), (20.0, 20.9), (25.0, 26.0)))
    rest = remainder(w, 5.0)
    assert rest == Window(0, 20.0, 30.0, ((20.0, 20.9), (25.0, 26.0)))
    assert remainder(w, 0.5) is None  # no progress
    # after 15.5 s, 0.5 s of speech is left: 0.3 s without the 0.2 s of VAD padding at its end
    late = remainder(w, 15.5)
    assert late == Window(0, 25.5, 30.0, ((25.5, 26.0),)) and remainder(w, 15.5, pad=0.2) is None
    assert remainder(w, 5.0, pad=0.2) == rest  # 0.5 + 0.6 s of speech without padding


def test_a_stitched_window_maps_its_times_to_each_stretch():
    w = stitched(3, [(10.0, 12.0), (40.0, 43.5), (70.0, 71.0)], [(10.2, 12.0), (40.0, 43.0), (70.0, 70.8)])
    assert w.start == 10.0 and w.end == 71.0 and w.duration == 6.5 + 2 * GAP
    assert [w.to_input(t) for t in (-1.0, 0.0, 1.5, 2.0 + GAP / 2, 2.0 + GAP, 3.0 + GAP)] == [10, 10, 11.5, 12, 40, 41]
    assert w.to_input(5.5 + 2 * GAP + 0.25) == 70.25 and w.to_input(99.0) == 71.0
    assert to_file_time(w, 1.5, 2.0 + GAP + 0.5) == (11.5, 12.0)  # both in the stretch of their middle
    assert to_file_time(w, 1.5, 3.0 + GAP) == (40.0, 41.0)
    # what is left after 1 s into the second stretch: from there on, still stitched
    rest = remainder(w, 3.0 + GAP)
    assert rest == stitched(3, [(41.0, 43.5), (70.0, 71.0)], [(41.0, 43.0), (70.0, 70.8)])
    assert remainder(w, 5.0 + 2 * GAP) == Window(3, 70.0, 71.0, ((70.0, 70.8),))  # one stretch: a plain window
    assert stitched(3, [(1.0, 2.0)], [(1.0, 2.0)]) == Window(3, 1.0, 2.0, ((1.0, 2.0),))
    # a first stretch shorter than a second, all covered: what follows is still decoded
    short = stitched(3, [(10.0, 10.8), (40.0, 43.0)], [(10.0, 10.8), (40.0, 43.0)])
    assert remainder(short, 0.8) == Window(3, 40.0, 43.0, ((40.0, 43.0),))
    assert remainder(short, 0.5) is None  # neither a second in nor past the first stretch


@given(st.lists(st.floats(0.5, 29.5), min_size=1, max_size=30), st.booleans())
def test_stitching_keeps_every_stretch_once_in_order_and_fits(durations, keep_last):
    rests, t = [], 0.0
    for d in durations:
        rests.append(Window(0, t, t + d, ((t, t + d),)))
        t += d + 7.0
    joined, kept = stitch(rests[::-1], keep_last)
    assert all(w.duration <= MAX_WINDOW and w.stretches == tuple(p for m in g for p in m.stretches) for w, g in joined)
    stretches = [p for w, _ in joined for p in w.stretches] + [p for w in kept for p in w.stretches]
    assert stretches == [w.stretches[0] for w in rests]
    assert (len(kept) > 0) == keep_last
    if keep_last:  # what is given back would not have filled the last window
        assert sum(w.duration for w in kept) + GAP * (len(kept) - 1) <= MAX_WINDOW
