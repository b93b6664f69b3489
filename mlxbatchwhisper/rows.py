"""The state of every row of the running batch, in one place: named device arrays, one entry per row.

A row is one decoder sequence (a greedy row, one sample, or one beam). Consecutive rows of one
segment form groups of `group` rows; beam search keeps its finished candidates per group. Nothing
here is mirrored on the host: the engine reads a snapshot (`Snapshot`) once per step.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import mlx.core as mx
import numpy as np


@dataclass(frozen=True)
class Rows:
    """Per-row arrays (first axis: rows) and per-group beam candidates (first axis: groups)."""

    tokens: mx.array  # (R, W) int32: the tokens sampled so far
    n_sampled: mx.array  # (R,) int32
    last: mx.array  # (R,) int32: the last token (the next step's input)
    penult: mx.array  # (R,) int32: the one before
    last_ts: mx.array  # (R,) int32: the last timestamp token, -1 for none
    sum_logprob: mx.array  # (R,) float32
    done: mx.array  # (R,) bool
    budget: mx.array  # (R,) int32: most tokens the row may sample
    temperature: mx.array  # (R,) float32: 0 is greedy
    seed: mx.array  # (R,) uint32: the row's sampling seed
    beam: mx.array  # (R,) bool: the row is a beam of a beam search
    no_speech: mx.array  # (R,) float32: its segment's no-speech probability (from the prefill)
    finished_tokens: mx.array  # (G, C, W) int32: a group's finished beams, without <|endoftext|>
    finished_len: mx.array  # (G, C) int32
    finished_score: mx.array  # (G, C) float32
    finished_count: mx.array  # (G,) int32

    PER_GROUP = ("finished_tokens", "finished_len", "finished_score", "finished_count")

    @classmethod
    def new(
        cls,
        budget: list[int],
        temperature: list[float],
        seed: list[int],
        beam: list[bool],
        done: list[bool],
        no_speech: mx.array,
        width: int,
        group: int,
        candidates: int,
    ) -> Rows:
        """Rows that have sampled nothing yet; `done` rows (unused samples) never change."""
        n = len(budget)
        groups = n // group
        return cls(
            tokens=mx.zeros((n, width), mx.int32),
            n_sampled=mx.zeros(n, mx.int32),
            last=mx.zeros(n, mx.int32),
            penult=mx.zeros(n, mx.int32),
            last_ts=mx.full(n, -1, mx.int32),
            sum_logprob=mx.zeros(n, mx.float32),
            done=mx.array(done, mx.bool_),
            budget=mx.array(budget, mx.int32),
            temperature=mx.array(temperature, mx.float32),
            seed=mx.array(np.array(seed, np.uint32)),
            beam=mx.array(beam, mx.bool_),
            no_speech=no_speech.astype(mx.float32),
            finished_tokens=mx.zeros((groups, candidates, width), mx.int32),
            finished_len=mx.zeros((groups, candidates), mx.int32),
            finished_score=mx.zeros((groups, candidates), mx.float32),
            finished_count=mx.zeros(groups, mx.int32),
        )

    def arrays(self) -> tuple[mx.array, ...]:
        return tuple(getattr(self, f.name) for f in fields(self))

    @classmethod
    def of(cls, arrays: tuple[mx.array, ...]) -> Rows:
        return cls(*arrays)

    def take(self, keep: np.ndarray, group: int) -> Rows:
        """The rows at `keep` (whole groups, in order)."""
        rows = mx.array(keep.astype(np.int32))
        groups = mx.array((keep[::group] // group).astype(np.int32))
        return replace(
            self, **{f.name: getattr(self, f.name)[groups if f.name in self.PER_GROUP else rows] for f in fields(self)}
        )

    def concat(self, other: Rows) -> Rows:
        return Rows(*(mx.concatenate([a, b]) for a, b in zip(self.arrays(), other.arrays())))


@dataclass(frozen=True)
class Snapshot:
    """What the host reads of the rows once per step: enough to see who finished and build their results."""

    tokens: np.ndarray
    n_sampled: np.ndarray
    sum_logprob: np.ndarray
    done: np.ndarray
    no_speech: np.ndarray
    finished_tokens: np.ndarray
    finished_len: np.ndarray
    finished_score: np.ndarray
    finished_count: np.ndarray

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def sequence(self, row: int) -> tuple[int, ...]:
        return tuple(self.tokens[row, : self.n_sampled[row]].tolist())
