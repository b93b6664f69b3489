"""The decoding engine: one running batch, kept full, fed by a stream of items.

Each step: the scheduler says which finished rows leave and which items join (prefilled, their
first token selected); the decoder runs one token for every row; the selector picks the next
tokens on the device (beams permute the caches in the same graph); the step is queued, and only
then does the host read the previous step's rows (one sync per step, overlapped with the device).
Items whose rows are all done get their result; a result that needs the next temperature goes
back to the scheduler at once (`Scheduler.add`) and joins the running batch like any new item, as
do items the caller adds while the engine runs (`Engine.add`: a window's remainder).

Sampling is seeded per item: a row's noise is a function of the options' seed, the item's seed,
the pass and the row (`Pass.row_seed`), never of the batch, so results do not depend on the batch
size or on what else is decoded. An item's passes run in the options' temperature order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice

import mlx.core as mx
import numpy as np

from .cache import KVCache, take_rows
from .model import Whisper
from .options import DecodingOptions, Pass, check_finite
from .prefill import AudioEncoder, Encoder, Item, Prefill
from .results import DecodingResult
from .rows import Rows, Snapshot
from .rules import LogitRules
from .scheduler import Scheduler
from .selection import BeamSearch, Ranker, Sampling, Selector
from .tokenizer import Tokenizer
from .transcripts import build_result


@dataclass(eq=False)
class _Job:
    """An item in one of its passes."""

    item: Item
    pass_: Pass
    finished: bool = False


@dataclass
class _Batch:
    """The running batch: each layer's cache, the rows' state, and the jobs that own the rows, in row order."""

    cache: list[KVCache]
    rows: Rows
    jobs: list[_Job] = field(default_factory=list)

    def first_rows(self) -> list[int]:
        return np.cumsum([0] + [j.pass_.rows for j in self.jobs])[:-1].tolist()

    def compact(self, group: int) -> None:
        """Drop the rows of finished jobs."""
        keep = [
            r
            for j, first in zip(self.jobs, self.first_rows())
            if not j.finished
            for r in range(first, first + j.pass_.rows)
        ]
        idx = np.array(keep, np.int64)
        memo: dict = {}
        for c in self.cache:
            c.filter(keep, memo)
        self.rows = self.rows.take(idx, group)
        self.jobs = [j for j in self.jobs if not j.finished]

    def extend(self, other: _Batch) -> None:
        memo: dict = {}
        for c, n in zip(self.cache, other.cache):
            c.extend(n, memo)
        self.rows = self.rows.concat(other.rows)
        self.jobs += other.jobs


class Engine:
    """Decodes items with fixed options, up to `batch_size` segments' rows at once (beams count
    `beam_size` rows per segment, so a batch holds as many rows as `batch_size` segments at
    temperature 0 do). Options must be valid for the model (checked here)."""

    AHEAD_PER_STEP = 8  # encoder pieces (one layer of one encoder call) queued per step, on a GPU

    def __init__(
        self,
        model: Whisper,
        tokenizer: Tokenizer,
        options: DecodingOptions,
        batch_size: int,
        encode: Encoder | None = None,
        keep_cross_kv: bool = False,
        encode_ahead: int | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        options.validate(tokenizer, model.dims.n_vocab)
        self.model, self.tokenizer, self.options, self.batch_size = model, tokenizer, options, batch_size
        self.keep_cross_kv = keep_cross_kv  # hand each finished item its audio K/V (word timing reuses them)
        self.passes = options.passes()
        self.group = options.group
        self.max_rows = batch_size * self.group
        self.width = (options.sample_len or model.dims.n_text_ctx // 2) + 1
        tb, eot = tokenizer.timestamp_begin, tokenizer.eot
        self.candidates = round(options.beam_size * (options.patience or 1.0)) if options.beam_size else 1
        self.beams = BeamSearch(options.beam_size, self.candidates, tb, eot) if options.beam_size else None
        self.selector = Selector(LogitRules(tokenizer, options, model.dims.n_vocab), Sampling(tb, eot), self.beams)
        self.prefill = Prefill(model, tokenizer, options, encode or AudioEncoder(model))
        # encoder pieces queued per decoding step for the items next in line: a GPU runs them between the
        # step's kernels, which leave it idle while the host launches them; a CPU has no idle units (0)
        ahead = (self.AHEAD_PER_STEP if mx.default_device() == mx.gpu else 0) if encode_ahead is None else encode_ahead
        self.encode_ahead = ahead if isinstance(self.prefill.encode, AudioEncoder) else 0
        self._ahead: tuple[list[Item], Iterator[mx.array | None]] | None = None
        self.ranker = Ranker(options.length_penalty)
        self._scheduler: Scheduler[_Job] | None = None

    def add(self, item: Item) -> None:
        """Decode `item` too: it joins the running batch as soon as there is room (call while `run` runs)."""
        if self._scheduler is None:
            raise RuntimeError("add() is for items that come up while run() runs")
        self._scheduler.add(_Job(item, self.passes[0]))

    def run(self, items: Iterable[Item]) -> Iterator[tuple[Item, DecodingResult]]:
        """Decode every item (and every item `add`ed meanwhile); yield (item, result) as each one is final."""
        scheduler = Scheduler(self.max_rows, lambda job: job.pass_.rows, (_Job(it, self.passes[0]) for it in items))
        self._scheduler, self._ahead = scheduler, None
        batch: _Batch | None = None
        try:
            while True:
                plan = scheduler.plan()
                if plan.compact and batch is not None:
                    batch.compact(self.group)
                    batch = batch if batch.jobs else None
                if plan.admit:  # no other name holds a batch: a finished one is freed before the next prefill
                    batch = self._joined(batch, self._admit(plan.admit))
                if batch is None or scheduler.live == 0:
                    if scheduler.idle:
                        return
                    continue
                before = batch.rows
                self._launch(batch)
                if self.encode_ahead:
                    self._encode_ahead(scheduler)
                yield from self._harvest(batch, self._read(before), scheduler)
        finally:
            self._scheduler = self._ahead = None  # an abandoned run's encoder work is let go

    @staticmethod
    def _joined(batch: _Batch | None, new: _Batch) -> _Batch:
        if batch is None:
            return new
        batch.extend(new)
        return batch

    def _encode_ahead(self, scheduler: Scheduler[_Job]) -> None:
        """Queue a few more pieces of the encoder's work for the items next in line (none waited for)."""
        if self._ahead is None:
            upcoming = scheduler.upcoming(self.max_rows)
            items = [j.item for j in upcoming if j.item.features is None and j.item.audio is not None]
            if not items:
                return
            self._ahead = items, self.prefill.encode.stages([it.audio for it in items])
        self._advance_ahead(self.encode_ahead)

    def _advance_ahead(self, pieces: int | None) -> None:
        """Queue `pieces` more pieces (None: all that are left); the last one gives the items their features."""
        items, stages = self._ahead
        for features in islice(stages, pieces):
            if features is not None:
                for i, it in enumerate(items):
                    it.features = features[i : i + 1]
                self._ahead = None

    def _admit(self, jobs: list[_Job]) -> _Batch:
        """Prefill new jobs and select their first tokens."""
        if self._ahead is not None and {id(j.item) for j in jobs} & {id(it) for it in self._ahead[0]}:
            self._advance_ahead(None)  # joining now: the rest of their encoder's work is queued first
        new = self.prefill([(j.item, j.pass_) for j in jobs])
        budget, temperature, seed, beam, done = [], [], [], [], []
        for job, b in zip(jobs, new.budgets):
            p = job.pass_
            for r in range(p.rows):
                budget.append(b)
                temperature.append(p.temperature)
                seed.append(p.row_seed(self.options.seed, job.item.seed, r))
                beam.append(p.beam_size is not None)
                done.append(p.beam_size is None and r >= p.samples)  # rows that fill a group, unused
        no_speech = new.no_speech[mx.array(np.repeat(np.arange(len(jobs)), [j.pass_.rows for j in jobs]))]
        rows = Rows.new(budget, temperature, seed, beam, done, no_speech, self.width, self.group, self.candidates)
        rows, perm = self.selector(new.logits, rows, *self._kinds(jobs))
        if perm is not None:  # the beams are still identical: a formality, kept for clarity of the invariant
            for c in new.cache:
                c.permute(perm)
        return _Batch(new.cache, rows, list(jobs))

    def _launch(self, batch: _Batch) -> None:
        """Queue one step for every row (the host does not wait)."""
        hidden = self.model.decoder(batch.rows.last[:, None], cache=batch.cache)
        logits = self.model.decoder.project(hidden[:, -1])
        batch.rows, perm = self.selector(logits, batch.rows, *self._kinds(batch.jobs))
        if perm is not None:
            for c in batch.cache:
                c.permute(perm)
        mx.async_eval(*batch.rows.arrays())

    @staticmethod
    def _kinds(jobs: list[_Job]) -> tuple[bool, bool, bool]:
        """Whether the jobs hold beam rows, other rows, rows that sample above temperature 0."""
        beams = any(j.pass_.beam_size for j in jobs)
        others = any(not j.pass_.beam_size for j in jobs)
        return beams, others, any(j.pass_.temperature > 0 for j in jobs)

    def _read(self, rows: Rows) -> Snapshot:
        """The step's one host sync: what the host needs of the rows, copied out."""
        arrays = [getattr(rows, n) for n in Snapshot.names()]
        mx.eval(*arrays)
        return Snapshot(*(np.array(a) for a in arrays))

    def _harvest(
        self, batch: _Batch, snap: Snapshot, scheduler: Scheduler[_Job]
    ) -> Iterator[tuple[Item, DecodingResult]]:
        """Results of the jobs all of whose rows are done; those that need the next temperature go again."""
        for job, first in zip(list(batch.jobs), batch.first_rows()):
            n = job.pass_.rows
            if job.finished or not snap.done[first : first + n].all():
                continue
            job.finished = True
            scheduler.finish(job)
            result = self._result(job, snap, first)
            check_finite(result, getattr(self.model, "source", "the model"))
            if job.pass_.index + 1 < len(self.passes) and self.options.needs_fallback(result):
                scheduler.add(_Job(job.item, self.passes[job.pass_.index + 1]))
                continue
            item = job.item
            if self.keep_cross_kv:  # a copy of the segment's audio row: the batch's arrays change as rows leave
                item.cross_kv = take_rows([c.cross_kv for c in batch.cache], mx.array([first // self.group]))
                mx.async_eval(item.cross_kv)
            yield item, result
            item.features = item.cross_kv = None  # once the consumer has taken what it needs

    def _result(self, job: _Job, snap: Snapshot, first: int) -> DecodingResult:
        p = job.pass_
        if p.beam_size:
            candidates = self.beams.finalize(snap, first // self.group, range(first, first + p.rows))
        else:
            candidates = Sampling.finalize(snap, range(first, first + p.samples), self.tokenizer.eot)
        tokens, sum_logprob = self.ranker.best(candidates)
        item = job.item
        return build_result(
            tokens,
            sum_logprob,
            self.tokenizer,
            item.duration,
            item.language,
            item.language_probs,
            float(snap.no_speech[first]),
            p.temperature,
        )
