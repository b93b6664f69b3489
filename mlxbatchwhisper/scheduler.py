"""The host-only scheduler of the running batch: which requests join it and when finished rows leave.

It knows requests only by how many rows each takes; no model, no arrays. Requests come from a
source (pulled lazily, so a stream upstream is not read ahead of need) and from `add` (requests
known only while decoding runs: temperature fallbacks, window remainders), which go first. Each
step the engine asks `plan()` what to do, then reports finished requests with `finish`.

Policy: rows that finish stay in the batch (computed, unread) until a quarter of it is finished
(or all of it), then leave together (`compact`); new requests join once a quarter of the batch is
free, or when nothing else is running, or when the source is exhausted (so the tail is not held
back). The batch holds at most `max_rows` live rows, except that one request always fits into an
empty batch.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class Plan(Generic[T]):
    """One step's changes to the batch: drop the finished rows first (`compact`), then add `admit`."""

    compact: bool
    admit: list[T]


class Scheduler(Generic[T]):
    """Admits, evicts and refills rows of one running batch (in the spirit of mlx-lm's BatchGenerator)."""

    def __init__(self, max_rows: int, rows_of: Callable[[T], int], source: Iterable[T] = ()):
        if max_rows < 1:
            raise ValueError(f"max_rows must be at least 1, not {max_rows}")
        self.max_rows, self.rows_of = max_rows, rows_of
        self._source = iter(source)
        self._exhausted = False
        self._waiting: deque[T] = deque()  # re-entering requests: they go first
        self._queued: deque[T] = deque()  # pulled from the source
        self.live = 0  # rows of requests in flight
        self.dead = 0  # rows of finished requests still in the batch

    def add(self, request: T) -> None:
        """A request that joins as soon as there is room (before any from the source)."""
        self._waiting.append(request)

    def finish(self, request: T) -> None:
        """A request in the batch is done: its rows are dead until the next compaction."""
        rows = self.rows_of(request)
        self.live -= rows
        self.dead += rows

    @property
    def idle(self) -> bool:
        """Nothing is running and nothing is left to run."""
        return self.live == 0 and not self._pending()

    def plan(self) -> Plan[T]:
        """What to change before the next step."""
        free = self.max_rows - self.live
        count = taken = 0
        while (request := self._at(count)) is not None:
            rows = self.rows_of(request)
            if taken + rows > free and (count or self.live):
                break
            count, taken = count + 1, taken + rows
        worth = self.live == 0 or taken >= max(1, self.max_rows // 4) or self._at(count) is None
        admit = [self._pop() for _ in range(count)] if count and worth else []
        compact = self.dead > 0 and (self.live == 0 or self.dead >= max(1, (self.live + self.dead) // 4) or bool(admit))
        if compact:
            self.dead = 0
        if admit:
            self.live += taken
        return Plan(compact, admit)

    def upcoming(self, rows: int) -> list[T]:
        """The requests next in line, in the order they will join, up to `rows` rows of them (pulled from
        the source as needed: the engine encodes them ahead while the batch decodes)."""
        ahead: list[T] = []
        taken = 0
        while (request := self._at(len(ahead))) is not None and taken + self.rows_of(request) <= rows:
            ahead.append(request)
            taken += self.rows_of(request)
        return ahead

    def _pending(self) -> bool:
        return self._at(0) is not None

    def _at(self, i: int) -> T | None:
        """The i-th request in line (re-entering ones first), pulling from the source only as far as needed."""
        if i < len(self._waiting):
            return self._waiting[i]
        i -= len(self._waiting)
        while len(self._queued) <= i and not self._exhausted:
            try:
                self._queued.append(next(self._source))
            except StopIteration:
                self._exhausted = True
        return self._queued[i] if i < len(self._queued) else None

    def _pop(self) -> T:
        return self._waiting.popleft() if self._waiting else self._queued.popleft()
