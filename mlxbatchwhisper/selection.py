"""Token selection: each step's logits → the rows' next tokens, on the device; and the ranker.

As openai-whisper's `TokenDecoder`s, each strategy has `update` (one step, all rows at once, no
host sync) and `finalize` (a segment's candidate sequences, from a host snapshot):
- `Sampling`: greedy at temperature 0, else the Gumbel-max trick with each row's own counter-based
  noise (a hash of the row's seed, its step and the token), so a sample never depends on the batch;
- `BeamSearch`: openai-whisper's beam step for every group of beams at once (rank the beams'
  candidates, keep the best `beam_size` that continue, collect finished ones), returning the row
  permutation that the caches apply lazily in the same graph.
`Selector` applies the logit rules and runs whichever strategies the batch holds, in one graph.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import mlx.core as mx

from .kernels import argmax, logsumexp
from .rows import Rows, Snapshot
from .rules import LogitRules


def _fmix(x: mx.array) -> mx.array:
    """murmur3's 32-bit finalizer (uint32 in, uint32 out)."""
    x = x ^ (x >> 16)
    x = x * mx.array(0x85EBCA6B, mx.uint32)
    x = x ^ (x >> 13)
    x = x * mx.array(0xC2B2AE35, mx.uint32)
    return x ^ (x >> 16)


def _first(flags: mx.array) -> mx.array:
    """Index of the first True along axis 1 (0 where none)."""
    return mx.argmax(flags.astype(mx.int32), axis=1)


def gumbel_noise(seed: mx.array, step: mx.array, n_vocab: int) -> mx.array:
    """(R, V) standard Gumbel noise, a pure function of each row's seed and step and the token id."""
    row = _fmix(seed ^ (step.astype(mx.uint32) * mx.array(0x9E3779B9, mx.uint32)))
    token = mx.arange(n_vocab, dtype=mx.uint32) * mx.array(0x27D4EB2F, mx.uint32)
    bits = _fmix(row[:, None] ^ token[None, :]) >> 8
    uniform = (bits.astype(mx.float32) + 0.5) * (1.0 / (1 << 24))
    return -mx.log(-mx.log(uniform))


def push(rows: Rows, tokens: mx.array, sum_logprob: mx.array, ts_begin: int, eot: int) -> Rows:
    """Append each live row's next token (its new total log-probability given); finished rows stay."""
    live = ~rows.done
    col = mx.arange(rows.tokens.shape[1])[None, :] == rows.n_sampled[:, None]
    n_sampled = mx.where(live, rows.n_sampled + 1, rows.n_sampled)
    return replace(
        rows,
        tokens=mx.where(live[:, None] & col, tokens[:, None], rows.tokens),
        n_sampled=n_sampled,
        last=mx.where(live, tokens, rows.last),
        penult=mx.where(live, rows.last, rows.penult),
        last_ts=mx.where(live & (tokens >= ts_begin), tokens, rows.last_ts),
        sum_logprob=mx.where(live, sum_logprob, rows.sum_logprob),
        done=rows.done | (live & ((tokens == eot) | (n_sampled >= rows.budget))),
    )


CHANGING = ("tokens", "n_sampled", "last", "penult", "last_ts", "sum_logprob", "done")  # what a step writes


class Sampling:
    """Greedy (temperature 0) and sampled rows: one token per row."""

    def __init__(self, ts_begin: int, eot: int):
        self.ts_begin, self.eot = ts_begin, eot

    def update(self, rows: Rows, logits: mx.array, logprobs: mx.array, noisy: bool) -> Rows:
        scores = logits
        if noisy:
            t = rows.temperature[:, None]
            noise = gumbel_noise(rows.seed, rows.n_sampled, logits.shape[-1])
            scores = mx.where(t > 0, logits / mx.maximum(t, 1e-6) + noise, logits)
        tokens = argmax(scores)
        chosen = mx.take_along_axis(logprobs, tokens[:, None], axis=-1)[:, 0]
        return push(rows, tokens, rows.sum_logprob + chosen, self.ts_begin, self.eot)

    @staticmethod
    def finalize(snap: Snapshot, rows: range, eot: int) -> list[tuple[tuple[int, ...], float]]:
        """Each sample's tokens (up to <|endoftext|>) and log-probability."""
        out = []
        for r in rows:
            seq = snap.sequence(r)
            out.append((seq[: seq.index(eot)] if eot in seq else seq, float(snap.sum_logprob[r])))
        return out


class BeamSearch:
    """openai-whisper's beam search over groups of `beam_size` consecutive rows, on the device."""

    def __init__(self, beam_size: int, candidates: int, ts_begin: int, eot: int):
        self.beam_size, self.candidates, self.ts_begin, self.eot = beam_size, candidates, ts_begin, eot

    def update(self, rows: Rows, logprobs: mx.array) -> tuple[Rows, mx.array]:
        """One step for every group; returns the new rows and the permutation of the old ones."""
        beam, k = self.beam_size, self.beam_size + 1
        n_rows = logprobs.shape[0]
        groups, n = n_rows // beam, beam * k
        idx = mx.argpartition(-logprobs, kth=k - 1, axis=-1)[:, :k]
        vals = mx.take_along_axis(logprobs, idx, axis=-1)
        scores = (rows.sum_logprob[:, None] + vals).reshape(groups, n)
        source = mx.arange(n) // k  # the beam each candidate extends
        first = rows.n_sampled.reshape(groups, beam)[:, 0] == 0
        scores = mx.where(first[:, None] & (source[None, :] > 0), -mx.inf, scores)  # identical beams: once
        # a stable descending sort: ties keep the candidates' order (beam, then rank within the beam)
        pos = mx.arange(n)
        ahead = (scores[:, None, :] > scores[:, :, None]) | (
            (scores[:, None, :] == scores[:, :, None]) & (pos[None, None, :] < pos[None, :, None])
        )
        order = mx.argsort(ahead.sum(axis=-1), axis=-1)
        scores = mx.take_along_axis(scores, order, axis=-1)
        tokens = mx.take_along_axis(idx.reshape(groups, n), order, axis=-1)
        source = source[order]
        live = ~rows.done.reshape(groups, beam)[:, 0] & rows.beam.reshape(groups, beam)[:, 0]
        is_eot = tokens == self.eot
        going = (~is_eot).astype(mx.int32)
        before = mx.cumsum(going, axis=-1) - going  # continuing candidates ranked above
        seen = before < beam  # openai-whisper stops reading candidates once `beam` continue
        keep = ~is_eot & seen
        rows = self._collect(rows, scores, source, is_eot & seen & live[:, None])
        pick = _first(keep[:, :, None] & (before[:, :, None] == mx.arange(beam)))  # (groups, beam)
        first_row = mx.arange(groups)[:, None] * beam
        perm = (first_row + mx.take_along_axis(source, pick, axis=-1)).reshape(-1)
        live_rows = mx.repeat(live, beam)
        perm = mx.where(live_rows, perm, mx.arange(n_rows))
        moved = replace(
            rows,
            tokens=rows.tokens[perm],
            n_sampled=rows.n_sampled[perm],
            last=rows.last[perm],
            penult=rows.penult[perm],
            last_ts=rows.last_ts[perm],
        )
        new_tokens = mx.take_along_axis(tokens, pick, axis=-1).reshape(-1)
        new_scores = mx.take_along_axis(scores, pick, axis=-1).reshape(-1)
        out = push(moved, new_tokens, new_scores, self.ts_begin, self.eot)
        full = mx.repeat(live & (out.finished_count >= self.candidates), beam)
        return replace(out, done=out.done | full), perm

    def _collect(self, rows: Rows, scores: mx.array, source: mx.array, finished: mx.array) -> Rows:
        """Add the newly finished sequences of each group, best first, while it has room."""
        beam, cap = self.beam_size, self.candidates
        f = finished.astype(mx.int32)
        slot = rows.finished_count[:, None] + mx.cumsum(f, axis=-1) - f
        accept = finished & (slot < cap)
        hit = accept[:, :, None] & (slot[:, :, None] == mx.arange(cap))  # (groups, candidates, slots)
        filled = hit.any(axis=1)
        which = _first(hit)  # the candidate that fills each slot
        src = mx.arange(scores.shape[0])[:, None] * beam + mx.take_along_axis(source, which, axis=-1)
        return replace(
            rows,
            finished_tokens=mx.where(filled[:, :, None], rows.tokens[src], rows.finished_tokens),
            finished_len=mx.where(filled, rows.n_sampled[src], rows.finished_len),
            finished_score=mx.where(filled, mx.take_along_axis(scores, which, axis=-1), rows.finished_score),
            finished_count=rows.finished_count + accept.astype(mx.int32).sum(axis=-1),
        )

    def finalize(self, snap: Snapshot, group: int, rows: range) -> list[tuple[tuple[int, ...], float]]:
        """The group's finished sequences; if fewer than `beam_size`, its live beams, best first."""
        out = {}
        for c in range(int(snap.finished_count[group])):
            n = int(snap.finished_len[group, c])
            out.setdefault(tuple(snap.finished_tokens[group, c, :n].tolist()), float(snap.finished_score[group, c]))
        if len(out) < self.beam_size:
            for r in sorted(rows, key=lambda r: -snap.sum_logprob[r]):
                out.setdefault(snap.sequence(r), float(snap.sum_logprob[r]))
                if len(out) >= self.beam_size:
                    break
        return list(out.items())


class Ranker:
    """openai-whisper's MaximumLikelihoodRanker: the log-probability over a length penalty."""

    def __init__(self, length_penalty: float | None):
        self.length_penalty = length_penalty

    def score(self, tokens: tuple[int, ...], logprob: float) -> float:
        length = len(tokens)
        penalty = length if self.length_penalty is None else ((5 + length) / 6) ** self.length_penalty
        return logprob / penalty if penalty else logprob

    def best(self, candidates: list[tuple[tuple[int, ...], float]]) -> tuple[tuple[int, ...], float]:
        return max(candidates, key=lambda c: self.score(*c))


class Selector:
    """A step's logits → the rows after it (and the beams' permutation), as one compiled graph per kind of batch."""

    def __init__(self, rules: LogitRules, sampling: Sampling, beams: BeamSearch | None):
        self.rules, self.sampling, self.beams = rules, sampling, beams
        self._compiled: dict[tuple[bool, bool, bool], Callable] = {}

    def __call__(
        self, logits: mx.array, rows: Rows, beams: bool, samples: bool, noisy: bool
    ) -> tuple[Rows, mx.array | None]:
        """`beams`/`samples`: the batch holds beam rows / other rows; `noisy`: some rows sample above 0."""
        key = (beams, samples, noisy)
        if key not in self._compiled:
            self._compiled[key] = mx.compile(lambda lg, *a: self._step(lg, Rows.of(a), *key))
        out = self._compiled[key](logits, *rows.arrays())
        return Rows.of(tuple(out[:-1])), (out[-1] if beams else None)

    def _step(self, logits: mx.array, rows: Rows, beams: bool, samples: bool, noisy: bool) -> list[mx.array]:
        masked = self.rules(logits.astype(mx.float32), rows.n_sampled, rows.last, rows.penult, rows.last_ts)
        logprobs = masked - logsumexp(masked)[:, None]  # native on the CPU: MLX's exp is slow there
        perm = mx.arange(logits.shape[0])
        if samples:
            sampled = self.sampling.update(rows, masked, logprobs, noisy)
        if beams:
            searched, perm = self.beams.update(rows, logprobs)
            if samples:  # per row: its beam's update or its sample's
                pick = lambda a, b: mx.where(rows.beam.reshape(-1, *[1] * (a.ndim - 1)), a, b)  # noqa: E731
                searched = replace(searched, **{n: pick(getattr(searched, n), getattr(sampled, n)) for n in CHANGING})
            sampled = searched
        return [*sampled.arrays(), perm]
