"""Token selection without a model: the device beam step against openai-whisper's `BeamSearchDecoder`,
the per-row sampling noise, the ranker."""

import mlx.core as mx
import numpy as np
import pytest

from mlxbatchwhisper.options import DecodingOptions
from mlxbatchwhisper.rows import Rows, Snapshot
from mlxbatchwhisper.selection import BeamSearch, Ranker, Sampling, gumbel_noise

torch = pytest.importorskip("torch")
whisper = pytest.importorskip("whisper")
from whisper.decoding import BeamSearchDecoder  # noqa: E402

V, EOT, WIDTH = 40, 39, 24  # a small vocabulary; no timestamps (ts_begin = V)


class Sources:
    """openai-whisper's Inference, as far as beam search uses it: records the rows' sources."""

    def __init__(self):
        self.last = None

    def rearrange_kv_cache(self, source_indices):
        self.last = list(source_indices)


def snapshot(rows: Rows) -> Snapshot:
    return Snapshot(*(np.array(getattr(rows, n)) for n in Snapshot.names()))


@pytest.mark.parametrize("beam, patience, seed", [(3, 1.0, 0), (3, 2.0, 1), (5, 1.0, 2), (2, 1.5, 3)])
def test_beam_step_matches_openai_whisper(beam, patience, seed):
    groups = 3
    rng = np.random.default_rng(seed)
    candidates = round(beam * patience)
    ours = BeamSearch(beam, candidates, ts_begin=V, eot=EOT)
    sources = Sources()
    theirs = BeamSearchDecoder(beam, EOT, sources, patience)
    n = groups * beam
    rows = Rows.new([WIDTH - 1] * n, [0.0] * n, [0] * n, [True] * n, [False] * n, mx.zeros(n), WIDTH, beam, candidates)
    tokens = torch.zeros((n, 1), dtype=torch.long)  # a one-token prompt
    sum_logprobs = torch.zeros(n)
    for step in range(20):
        logits = rng.standard_normal((n, V)).astype(np.float32) * 2
        logits[:, EOT] += rng.uniform(0, 6, n).astype(np.float32) * (step > 2)  # finish some, later on
        if step == 0:  # the beams of a segment start identical
            logits = np.repeat(logits[::beam], beam, axis=0)
        rows, perm = ours.update(rows, mx.array(logits) - mx.logsumexp(mx.array(logits), axis=-1, keepdims=True))
        tokens, _ = theirs.update(tokens, torch.from_numpy(logits), sum_logprobs)
        snap, perm = snapshot(rows), np.array(perm)
        for g in range(groups):
            finished = {tuple(k[1:-1]): v for k, v in theirs.finished_sequences[g].items()}
            got = ours.finalize(snap, g, range(0, 0))  # finished ones only (no live rows offered)
            assert dict(got) == pytest.approx(finished), (step, g)
            if snap.done[g * beam]:
                assert len(finished) >= candidates  # done exactly when openai-whisper's list is full
                continue
            for r in range(g * beam, (g + 1) * beam):
                assert snap.sequence(r) == tuple(tokens[r, 1:].tolist()), (step, r)
                assert snap.sum_logprob[r] == pytest.approx(float(sum_logprobs[r]), abs=1e-5)
                if step:  # at the first step the beams are identical: openai-whisper names the last as source
                    assert perm[r] == sources.last[r]
    assert snap.done.any()  # the test reached full candidate lists


def test_beam_finalize_adds_live_beams_best_first_when_too_few_finished():
    beam = 3
    search = BeamSearch(beam, beam, ts_begin=V, eot=EOT)
    rows = Rows.new(
        [WIDTH - 1] * beam, [0.0] * beam, [0] * beam, [True] * beam, [False] * beam, mx.zeros(beam), WIDTH, beam, beam
    )
    logits = np.full((beam, V), -10.0, np.float32)
    logits[:, [1, 2, 3, EOT]] = [0.0, -1.0, -2.0, -0.5]  # eot is second best: one finished candidate
    rows, _ = search.update(rows, mx.array(logits) - mx.logsumexp(mx.array(logits), axis=-1, keepdims=True))
    got = search.finalize(snapshot(rows), 0, range(beam))
    assert [seq for seq, _ in got] == [(), (1,), (2,)]  # the finished empty sequence, then the best live beams
    assert got[1][1] > got[2][1]


def test_sampling_noise_is_a_function_of_seed_step_and_token_only():
    seeds, steps = mx.array(np.array([7, 7, 8], np.uint32)), mx.array([0, 0, 0])
    a = np.array(gumbel_noise(seeds, steps, 1000))
    assert np.array_equal(a[0], a[1]) and not np.array_equal(a[0], a[2])
    alone = np.array(gumbel_noise(seeds[2:], steps[2:], 1000))
    assert np.array_equal(alone[0], a[2])  # the batch around a row changes nothing
    later = np.array(gumbel_noise(seeds[:1], mx.array([1]), 1000))
    assert not np.array_equal(later[0], a[0])
    big = np.array(gumbel_noise(mx.array(np.arange(64, dtype=np.uint32)), mx.zeros(64, mx.int32), 5000)).ravel()
    assert abs(big.mean() - 0.5772) < 0.01 and abs(big.std() - np.pi / np.sqrt(6)) < 0.01  # standard Gumbel


def test_row_seeds_depend_on_the_item_pass_and_row_only():
    passes = DecodingOptions(temperature=(0.0, 0.2, 0.4)).passes()
    seeds = {(p.index, item, row): p.row_seed(0, item, row) for p in passes for item in range(4) for row in range(5)}
    assert len(set(seeds.values())) == len(seeds)
    assert passes[1].row_seed(0, 3, 2) == passes[1].row_seed(0, 3, 2) != passes[1].row_seed(1, 3, 2)


def test_greedy_rows_take_the_best_token_and_stop_at_eot_or_budget():
    sampling = Sampling(ts_begin=V, eot=EOT)
    rows = Rows.new([5, 2], [0.0, 0.0], [0, 0], [False, False], [False, False], mx.zeros(2), WIDTH, 1, 1)
    logits = np.full((2, V), -5.0, np.float32)
    logits[0, EOT], logits[1, 4] = 1.0, 1.0
    logprobs = mx.array(logits) - mx.logsumexp(mx.array(logits), axis=-1, keepdims=True)
    for _ in range(3):
        rows = sampling.update(rows, mx.array(logits), logprobs, noisy=False)
    snap = snapshot(rows)
    assert snap.sequence(0) == (EOT,) and snap.sequence(1) == (4, 4) and snap.done.all()
    assert Sampling.finalize(snap, range(2), EOT) == [
        ((), pytest.approx(float(logprobs[0, EOT]))),
        ((4, 4), pytest.approx(2 * float(logprobs[1, 4]))),
    ]


def test_ranker_is_openai_whispers():
    assert Ranker(None).best([((1, 2, 3), -3.0), ((1,), -1.5)]) == ((1, 2, 3), -3.0)  # -1.0 per token beats -1.5
    penalized = Ranker(1.0)
    assert penalized.score((1, 2), -2.0) == pytest.approx(-2.0 / (7 / 6))
    assert Ranker(None).best([((), -1.0), ((5,), -1.0)]) == ((), -1.0)  # no tokens: no division
