"""Batched decoding: greedy, sampling (best-of-n) and beam search over rows of different lengths.

openai-whisper's `decode` semantics, row by row, but one tensor program per step: every row of the
active batch samples in the same column (rows are left-padded), the logit rules are masks built
on the device from per-row counters, and the host reads the chosen tokens once per step (a step
behind the device, for greedy and sampling). Rows that finish leave the batch (`KVCache.filter`)
and queued segments take their place (`KVCache.extend`), so the batch stays full.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace

import mlx.core as mx
import numpy as np

from . import checks
from .audio import CHUNK_LENGTH, TIME_PRECISION, log_mel_spectrogram
from .cache import KVCache
from .kernels import logsumexp, top_logprobs
from .model import Whisper
from .results import DecodingResult, Segment, compression_ratio
from .tokenizer import Tokenizer, language_code


class ModelOutputError(RuntimeError):
    """The model computed numbers that are not numbers (NaN, infinity): corrupt weights, not bad input."""


@dataclass(frozen=True)
class DecodingOptions:
    """openai-whisper's decoding options (same names and meaning); the language is per `Item`."""

    task: str = "transcribe"
    temperature: float = 0.0
    sample_len: int | None = None  # most tokens to sample; default n_text_ctx // 2
    best_of: int | None = None  # independent samples per row when temperature > 0
    beam_size: int | None = None  # beams per row when temperature == 0
    patience: float | None = None
    length_penalty: float | None = None
    suppress_tokens: str | Sequence[int] | None = "-1"
    suppress_blank: bool = True
    without_timestamps: bool = False
    max_initial_timestamp: float | None = 1.0

    def __post_init__(self) -> None:
        checks.choice("task", self.task, ("transcribe", "translate"))
        checks.number("temperature", self.temperature, low=0)
        for name in ("beam_size", "best_of", "sample_len"):
            checks.integer(name, getattr(self, name), low=1, optional=True)
        checks.number("patience", self.patience, low=0, low_open=True, optional=True)
        checks.number("length_penalty", self.length_penalty, low=0, high=1, optional=True)
        checks.number("max_initial_timestamp", self.max_initial_timestamp, low=0, optional=True)
        checks.flag("suppress_blank", self.suppress_blank)
        checks.flag("without_timestamps", self.without_timestamps)
        if self.beam_size is not None and self.best_of is not None:
            raise ValueError("beam_size and best_of can't be given together")
        if self.temperature == 0 and self.best_of is not None:
            raise ValueError("best_of with greedy sampling (temperature 0) is not compatible")
        if self.temperature > 0 and self.beam_size is not None:
            raise ValueError("beam_size with sampling (temperature > 0) is not compatible")
        if self.patience is not None and self.beam_size is None:
            raise ValueError("patience requires beam_size")

    @property
    def n_group(self) -> int:
        """Rows per segment: beams, samples, or one."""
        return self.beam_size or self.best_of or 1


@dataclass
class Item:
    """One segment to decode: its audio (or features), prompt and language; `key` is the caller's."""

    key: object
    audio: np.ndarray | None = None
    features: mx.array | None = None  # (1, n_audio_ctx, n_audio_state), once encoded
    prompt: tuple[int, ...] = ()  # previous-text tokens, without <|startofprev|>
    language: str | None = None
    language_probs: dict[str, float] | None = None
    duration: float = float(CHUNK_LENGTH)
    cross_kv: list[tuple[mx.array, mx.array]] | None = None  # the decoder's audio K/V, if kept for word timing


class LogitRules:
    """openai-whisper's logit filters as vectorized masks: blank and token suppression, timestamp rules."""

    def __init__(self, tokenizer: Tokenizer, options: DecodingOptions, n_vocab: int):
        self.eot = tokenizer.eot
        self.timestamps = not options.without_timestamps
        self.ts_begin = tokenizer.timestamp_begin
        vocab = np.arange(n_vocab)
        suppress = np.zeros(n_vocab, bool)
        ids = suppress_token_ids(tokenizer, options.suppress_tokens)
        if ids[-1] >= n_vocab:
            raise ValueError(
                f"suppress_tokens has ids beyond the vocabulary ({n_vocab} tokens): {[t for t in ids if t >= n_vocab]}"
            )
        suppress[list(ids)] = True
        if self.timestamps:
            suppress[tokenizer.no_timestamps] = True
        self.suppress = mx.array(suppress)
        blank = np.zeros(n_vocab, bool)
        if options.suppress_blank:
            blank[tokenizer.encode(" ") + [tokenizer.eot]] = True
        self.blank = mx.array(blank)
        self.vocab = mx.array(vocab.astype(np.int32))
        self.max_initial = None
        if self.timestamps and options.max_initial_timestamp is not None:
            self.max_initial = self.ts_begin + round(options.max_initial_timestamp / TIME_PRECISION)

    def __call__(
        self, logits: mx.array, n_sampled: mx.array, last: mx.array, penult: mx.array, last_ts: mx.array
    ) -> mx.array:
        """Mask (B, V) logits given each row's count of sampled tokens, its last two tokens and last timestamp."""
        col = lambda a: a[:, None]  # noqa: E731
        v = self.vocab[None, :]
        first = n_sampled == 0
        mask = self.suppress[None, :] | (col(first) & self.blank[None, :])
        if self.timestamps:
            tb = self.ts_begin
            last_was_ts = last >= tb
            penult_was_ts = (n_sampled < 2) | (penult >= tb)
            pair_closed = last_was_ts & penult_was_ts
            pair_open = last_was_ts & ~penult_was_ts
            mask |= col(pair_closed) & (v >= tb)  # after a closed pair: text or eot
            mask |= col(pair_open) & (v < self.eot)  # inside an open pair: a timestamp or eot
            floor = mx.where(pair_open, last_ts, last_ts + 1)  # never go back in time
            mask |= col(last_ts >= tb) & (v >= tb) & (v < col(floor))
            begin = v < tb
            if self.max_initial is not None:
                begin |= v > self.max_initial
            mask |= col(first) & begin
        logits = mx.where(mask, -mx.inf, logits)
        if self.timestamps:  # when timestamps outweigh every text token, sample a timestamp
            ts_mass = mx.logsumexp(logits[:, self.ts_begin :], axis=-1)
            text_max = logits[:, : self.ts_begin].max(axis=-1)
            logits = mx.where(col(ts_mass > text_max) & (v < self.ts_begin), -mx.inf, logits)
        return logits


def detect_languages(
    model: Whisper, tokenizer: Tokenizer, cross: list[tuple[mx.array, mx.array]]
) -> list[tuple[str, dict[str, float]]]:
    """Each audio row's most likely language and the probabilities of all, from its cross-attention
    K/V (one pair per decoder layer), as openai-whisper's `detect_language` does."""
    cache = [KVCache(kv) for kv in cross]
    rows = cross[0][0].shape[0]
    hidden = model.decoder(mx.full((rows, 1), tokenizer.sot), cache=cache)
    logits = model.decoder.project(hidden[:, 0]).astype(mx.float32)[:, mx.array(tokenizer.language_tokens)]
    probs = np.array(mx.softmax(logits, axis=-1))
    best = np.array(mx.argmax(logits, axis=-1))
    return [
        (tokenizer.language_codes[int(b)], dict(zip(tokenizer.language_codes, p.tolist()))) for b, p in zip(best, probs)
    ]


def suppress_token_ids(tokenizer: Tokenizer, suppress_tokens: str | Sequence[int] | None) -> tuple[int, ...]:
    """openai-whisper's suppression list: '-1' means the non-speech tokens; special tokens always."""
    accepted = "comma-separated token ids in a string ('-1', '-1,50256'), a list of ints, or None"
    try:
        if isinstance(suppress_tokens, str):
            ids = [int(t) for t in suppress_tokens.split(",") if t.strip()]
        else:
            ids = [checks.integer("suppress_tokens", t) for t in suppress_tokens or []]
    except (ValueError, TypeError) as e:
        raise ValueError(f"suppress_tokens must be {accepted}, not {suppress_tokens!r}") from e
    if any(t < -1 for t in ids):
        raise ValueError(f"suppress_tokens must be token ids or -1, not {[t for t in ids if t < -1]}")
    if -1 in ids:
        ids = [t for t in ids if t >= 0] + list(tokenizer.non_speech_tokens)
    ids += [
        tokenizer.transcribe,
        tokenizer.translate,
        tokenizer.sot,
        tokenizer.sot_prev,
        tokenizer.sot_lm,
        tokenizer.no_speech,
    ]
    return tuple(sorted(set(ids)))


@dataclass
class _Job:
    """A segment in flight: its rows (beams or samples) and what the prefill measured."""

    item: Item
    initial: tuple[int, ...]
    budget: int
    no_speech_prob: float = float("nan")
    finished: dict[tuple[int, ...], float] = field(default_factory=dict)  # beam candidates


class _Rows:
    """Host-side per-row state of the active batch, in numpy so that updates are vectorized."""

    FIELDS = ("job", "n_sampled", "last", "penult", "last_ts", "budget", "done", "sum_logprob", "tokens")

    def __init__(self, **arrays: np.ndarray):
        self.__dict__.update(arrays)

    @classmethod
    def new(cls, jobs: list[int], budgets: list[int], width: int) -> _Rows:
        n = len(jobs)
        return cls(
            job=np.array(jobs, np.int64),
            n_sampled=np.zeros(n, np.int32),
            last=np.full(n, -1, np.int32),
            penult=np.full(n, -1, np.int32),
            last_ts=np.full(n, -1, np.int32),
            budget=np.array(budgets, np.int32),
            done=np.zeros(n, bool),
            sum_logprob=np.zeros(n, np.float64),
            tokens=np.zeros((n, width), np.int32),
        )

    def __len__(self) -> int:
        return len(self.job)

    def take(self, idx: np.ndarray) -> _Rows:
        return _Rows(**{k: getattr(self, k)[idx] for k in self.FIELDS})

    def concat(self, other: _Rows) -> _Rows:
        return _Rows(**{k: np.concatenate([getattr(self, k), getattr(other, k)]) for k in self.FIELDS})

    def push(self, tokens: np.ndarray, logprobs: np.ndarray, ts_begin: int, eot: int) -> None:
        """Append each live row's next token; rows that already finished are left as they are."""
        live = ~self.done
        rows = np.nonzero(live)[0]
        tok = tokens[rows]
        self.tokens[rows, self.n_sampled[rows]] = tok
        self.sum_logprob[rows] += logprobs[rows]
        self.penult[rows] = self.last[rows]
        self.last[rows] = tok
        self.last_ts[rows] = np.where(tok >= ts_begin, tok, self.last_ts[rows])
        self.n_sampled[rows] += 1
        self.done[rows] = (tok == eot) | (self.n_sampled[rows] >= self.budget[rows])

    def counters(self) -> np.ndarray:
        """(4, B) int32: tokens sampled, last token, the one before, last timestamp (-1: none)."""
        return np.stack([self.n_sampled, self.last, self.penult, self.last_ts]).astype(np.int32)


@dataclass
class _Batch:
    """The rows in flight: their KV caches, host-side history, and the rule counters as the device sees them."""

    cache: list[KVCache]
    rows: _Rows
    state: mx.array  # (4, B) int32: tokens sampled, last token, the one before, last timestamp

    def take(self, keep: np.ndarray) -> None:
        for c in self.cache:
            c.filter(keep.tolist())
        self.rows = self.rows.take(keep)
        self.state = self.state[:, mx.array(keep.astype(np.int32))]

    def extend(self, other: _Batch) -> None:
        for c, n in zip(self.cache, other.cache):
            c.extend(n)
        self.rows = self.rows.concat(other.rows)
        self.state = mx.concatenate([self.state, other.state], axis=1)


class BatchDecoder:
    """Decodes a stream of segments with fixed options, keeping up to `batch_size` segments in flight.

    Greedy and sampling steps are pipelined: step k+1 is queued on the device before the host
    reads step k's tokens, so the device never waits for the host; the host catches up before
    the batch changes shape. Beam search needs the host's choice of beams at every step.
    """

    ENCODE_BATCH = 8  # windows per encoder call: bounds activation memory, already saturates BLAS/GPU

    def __init__(
        self, model: Whisper, tokenizer: Tokenizer, options: DecodingOptions, seed: int = 0, keep_cross_kv: bool = False
    ):
        self.model, self.tokenizer, self.options = model, tokenizer, options
        self.keep_cross_kv = keep_cross_kv  # hand each finished item its audio K/V (word timing reuses them)
        self.rules = LogitRules(tokenizer, options, model.dims.n_vocab)
        self.n_ctx = model.dims.n_text_ctx
        self.sample_len = options.sample_len or self.n_ctx // 2
        self.max_candidates = round((options.beam_size or 1) * (options.patience or 1.0))
        self.key = mx.random.key(seed)
        self._select = mx.compile(self._select_tokens)
        self._mask = mx.compile(self._masked_logits)

    # ------------------------------------------------------------ device functions

    def _select_tokens(self, logits, state, noise):
        """Next tokens, their (masked) logits, all masked logits, and the rule counters after them."""
        n_sampled, last, penult, last_ts = state[0], state[1], state[2], state[3]
        logits = self.rules(logits.astype(mx.float32), n_sampled, last, penult, last_ts)
        if self.options.temperature > 0:
            tokens = mx.argmax(logits / self.options.temperature + noise, axis=-1)
        else:
            tokens = mx.argmax(logits, axis=-1)
        tokens = tokens.astype(mx.int32)
        chosen = mx.take_along_axis(logits, tokens[:, None], axis=-1)[:, 0]
        stamp = mx.where(tokens >= self.tokenizer.timestamp_begin, tokens, last_ts)
        return tokens, chosen, logits, mx.stack([n_sampled + 1, tokens, last, stamp])

    def _masked_logits(self, logits, state):
        return self.rules(logits.astype(mx.float32), state[0], state[1], state[2], state[3])

    # ------------------------------------------------------------ the loop

    def run(self, items: Iterable[Item], batch_size: int) -> Iterator[tuple[Item, DecodingResult]]:
        """Decode every item; yield (item, result) as each one finishes (not in input order)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        source = iter(items)
        queue: deque[Item] = deque()
        jobs: dict[int, _Job] = {}
        batch: _Batch | None = None
        launched = None  # a queued step whose tokens the host has not read yet
        next_id, exhausted = 0, False
        while True:
            free = batch_size - len(jobs)
            while not exhausted and len(queue) < free:
                item = next(source, None)
                if item is None:
                    exhausted = True
                else:
                    queue.append(item)
            admit = queue and (not jobs or free >= max(1, batch_size // 4) or (exhausted and len(queue) <= free))
            dead = 0 if batch is None else int((~np.isin(batch.rows.job, list(jobs))).sum())
            compact = batch is not None and (not jobs or dead >= max(1, len(batch.rows) // 4))
            if launched is not None and (admit or compact):
                self._absorb(launched, batch.rows)  # catch up before the batch changes shape
                launched = None
                yield from self._harvest(jobs, batch)
                continue
            if compact:
                keep = np.nonzero(np.isin(batch.rows.job, list(jobs)))[0]
                if len(keep):
                    batch.take(keep)
                else:
                    batch = None
            if admit:
                group = [queue.popleft() for _ in range(min(free, len(queue)))]
                ids = list(range(next_id, next_id + len(group)))
                next_id += len(group)
                new = self._admit(group, ids, jobs)
                if batch is None:
                    batch = new
                else:
                    batch.extend(new)
                yield from self._harvest(jobs, batch)
            if not jobs:
                if exhausted and not queue:
                    return
                continue
            step = self._launch(batch, jobs)
            if launched is not None:
                self._absorb(launched, batch.rows)
            launched = step
            yield from self._harvest(jobs, batch)

    def _admit(self, group: list[Item], ids: list[int], jobs: dict[int, _Job]) -> _Batch:
        """Encode the new segments, detect languages, prefill their prompts and sample a first token."""
        model, tok = self.model, self.tokenizer
        missing = [it for it in group if it.features is None]
        for start in range(0, len(missing), self.ENCODE_BATCH):
            chunk = missing[start : start + self.ENCODE_BATCH]
            mel, _ = log_mel_spectrogram([it.audio for it in chunk], model.dims.n_mels)
            features = model.embed_audio(mel)
            mx.eval(features)
            for i, it in enumerate(chunk):
                it.features = features[i : i + 1]
        features = mx.concatenate([it.features for it in group])
        cross = model.decoder.cross_kv(features)
        self._detect_languages(group, cross)
        n = self.options.n_group
        initial = [self._initial_tokens(it) for it in group]
        width = max(map(len, initial))
        pads = [width - len(t) for t in initial for _ in range(n)]
        cache = [KVCache(kv, pads, group=n, reserve=width + self.sample_len) for kv in cross]
        tokens = mx.array([[0] * (width - len(t)) + list(t) for t in initial for _ in range(n)])
        hidden = model.decoder(tokens, cache=cache)
        sot_col = mx.array([p + initial[r // n].index(tok.sot) for r, p in enumerate(pads)])
        sot_logits = model.decoder.project(hidden[mx.arange(len(pads)), sot_col]).astype(mx.float32)
        no_speech = mx.softmax(sot_logits, axis=-1)[:, tok.no_speech]
        for job_id, it, init in zip(ids, group, initial):
            jobs[job_id] = _Job(it, init, min(self.sample_len, self.n_ctx - len(init) + 1))
        rows = _Rows.new(
            [j for j in ids for _ in range(n)], [jobs[j].budget for j in ids for _ in range(n)], self.sample_len + 1
        )
        batch = _Batch(cache, rows, mx.array(rows.counters()))
        self._absorb(self._sample(hidden[:, -1], batch, jobs), rows)
        for job_id, p in zip(ids, np.array(no_speech)[::n].tolist()):
            jobs[job_id].no_speech_prob = p
        return batch

    def _launch(self, batch: _Batch, jobs: dict[int, _Job]):
        """Queue one decoding step for every row; returns what `_absorb` reads (None for beams: done)."""
        hidden = self.model.decoder(batch.state[1][:, None], cache=batch.cache)
        return self._sample(hidden[:, -1], batch, jobs)

    def _sample(self, hidden: mx.array, batch: _Batch, jobs: dict[int, _Job]):
        logits = self.model.decoder.project(hidden)
        if self.options.beam_size:
            idx, vals = top_logprobs(self._mask(logits, batch.state), self.options.beam_size + 1)
            perm = self._beam_update(batch.rows, jobs, idx, vals)
            for c in batch.cache:
                c.permute(perm.tolist())
            batch.state = mx.array(batch.rows.counters())
            return None
        noise = None
        if self.options.temperature > 0:
            self.key, sub = mx.random.split(self.key)
            noise = mx.random.gumbel(logits.shape, key=sub)
        tokens, chosen, masked, batch.state = self._select(logits, batch.state, noise)
        logprobs = chosen - logsumexp(masked)
        mx.async_eval(tokens, logprobs, batch.state)
        return tokens, logprobs

    def _absorb(self, launched, rows: _Rows) -> None:
        """Read a queued step's tokens into the host's history (waits for the device)."""
        if launched is not None:
            tokens, logprobs = launched
            rows.push(
                np.array(tokens),
                np.array(logprobs).astype(np.float64),
                self.tokenizer.timestamp_begin,
                self.tokenizer.eot,
            )

    def _detect_languages(self, group: list[Item], cross: list[tuple[mx.array, mx.array]]) -> None:
        """Per-row language detection from the logits after <|startoftranscript|> alone."""
        tok = self.tokenizer
        if not tok.multilingual:
            for it in group:
                it.language = "en"
            return
        for it in group:
            if it.language is not None:
                it.language = language_code(it.language)
        todo = [i for i, it in enumerate(group) if it.language is None]
        if not todo:
            return
        idx = mx.array(todo)
        found = detect_languages(self.model, tok, [tuple(a[idx] for a in kv) for kv in cross])
        for i, (code, probs) in zip(todo, found):
            group[i].language, group[i].language_probs = code, probs

    def _initial_tokens(self, item: Item) -> tuple[int, ...]:
        tok = self.tokenizer
        tokens = list(tok.sot_sequence(item.language if tok.multilingual else None, self.options.task))
        if self.options.without_timestamps:
            tokens.append(tok.no_timestamps)
        if item.prompt:
            tokens = [tok.sot_prev] + list(item.prompt)[-(self.n_ctx // 2 - 1) :] + tokens
        return tuple(tokens)

    def _beam_update(self, rows: _Rows, jobs: dict[int, _Job], idx: np.ndarray, vals: np.ndarray) -> np.ndarray:
        """openai-whisper's beam step for every segment at once; returns the row permutation."""
        beam, k, eot = self.options.beam_size, idx.shape[1], self.tokenizer.eot
        n_jobs = len(rows) // beam
        scores = (rows.sum_logprob[:, None] + vals).reshape(n_jobs, beam * k)
        first = rows.n_sampled.reshape(n_jobs, beam)[:, 0] == 0
        scores[first, k:] = -np.inf  # the beams start identical: count their candidates once
        cand = idx.reshape(n_jobs, beam * k)
        order = np.argsort(-scores, axis=1, kind="stable")
        scores = np.take_along_axis(scores, order, 1)
        cand = np.take_along_axis(cand, order, 1)
        source = order // k
        live = ~rows.done.reshape(n_jobs, beam)[:, 0]
        is_eot = cand == eot
        before = np.cumsum(~is_eot, axis=1) - ~is_eot  # continuing candidates ranked above
        keep = ~is_eot & (before < beam)
        full = set()
        for j, c in zip(*np.nonzero(is_eot & (before < beam) & live[:, None])):
            job = jobs[int(rows.job[j * beam])]
            if len(job.finished) < self.max_candidates:
                r = j * beam + source[j, c]
                seq = tuple(rows.tokens[r, : rows.n_sampled[r]].tolist())
                job.finished.setdefault(seq, float(scores[j, c]))
            if len(job.finished) >= self.max_candidates:
                full.add(j)
        chosen = np.nonzero(keep)[1].reshape(n_jobs, beam)
        perm = (np.arange(n_jobs)[:, None] * beam + np.take_along_axis(source, chosen, 1)).reshape(-1)
        perm = np.where(np.repeat(live, beam), perm, np.arange(len(rows)))
        new_tokens = np.take_along_axis(cand, chosen, 1).reshape(-1)
        new_scores = np.take_along_axis(scores, chosen, 1).reshape(-1)
        for name in ("n_sampled", "last", "penult", "last_ts", "tokens"):
            setattr(rows, name, getattr(rows, name)[perm])
        rows.sum_logprob = np.where(np.repeat(live, beam), new_scores, rows.sum_logprob)
        rows.push(new_tokens.astype(np.int32), np.zeros(len(rows)), self.tokenizer.timestamp_begin, eot)
        for j in full:  # enough finished candidates: the segment is done
            rows.done[j * beam : (j + 1) * beam] = True
        return perm

    def _harvest(self, jobs: dict[int, _Job], batch: _Batch) -> Iterator[tuple[Item, DecodingResult]]:
        """Yield the segments all of whose rows are done."""
        rows = batch.rows
        done_jobs = set(rows.job[rows.done].tolist()) - set(rows.job[~rows.done].tolist())
        for job_id in sorted(done_jobs & set(jobs)):
            job = jobs.pop(job_id)
            r = np.nonzero(rows.job == job_id)[0]
            if self.keep_cross_kv:  # a copy of the segment's row: the batch's arrays change as rows leave
                row = mx.array([int(r[0]) // self.options.n_group])
                job.item.cross_kv = [tuple(mx.take(a, row, 0) for a in c.cross_kv) for c in batch.cache]
                mx.eval(job.item.cross_kv)
            yield job.item, self._result(job, rows, r)

    def _result(self, job: _Job, rows: _Rows, r: np.ndarray) -> DecodingResult:
        tok, eot = self.tokenizer, self.tokenizer.eot
        if self.options.beam_size:
            candidates = dict(job.finished)
            if len(candidates) < self.options.beam_size:  # not enough finished: add the live beams
                for i in r[np.argsort(-rows.sum_logprob[r], kind="stable")]:
                    seq = tuple(rows.tokens[i, : rows.n_sampled[i]].tolist()) + (eot,)
                    candidates.setdefault(seq, float(rows.sum_logprob[i]))
                    if len(candidates) >= self.options.beam_size:
                        break
            seqs = [(tuple(s[: s.index(eot)] if eot in s else s), lp) for s, lp in candidates.items()]
        else:
            seqs = []
            for i in r:
                t = rows.tokens[i, : rows.n_sampled[i]].tolist()
                seqs.append((tuple(t[: t.index(eot)] if eot in t else t), float(rows.sum_logprob[i])))
        tokens, sum_logprob = max(seqs, key=lambda s: self._rank_score(*s))
        text = tok.decode(list(tokens)).strip()
        item = job.item
        probs = item.language_probs
        return DecodingResult(
            text=text,
            tokens=tokens,
            segments=split_segments(list(tokens), tok, item.duration),
            language=item.language,
            language_probability=probs[item.language] if probs else None,
            avg_logprob=sum_logprob / (len(tokens) + 1),
            no_speech_prob=job.no_speech_prob,
            compression_ratio=compression_ratio(text),
            temperature=self.options.temperature,
            language_probs=probs,
        )

    def _rank_score(self, tokens: tuple[int, ...], logprob: float) -> float:
        length = len(tokens)
        penalty = length if self.options.length_penalty is None else ((5 + length) / 6) ** self.options.length_penalty
        return logprob / penalty if penalty else logprob


def split_segments(tokens: list[int], tokenizer: Tokenizer, duration: float) -> tuple[Segment, ...]:
    """Segments from timestamp tokens, as openai-whisper's transcribe cuts one window.

    Text after the last closed pair (no closing timestamp) is kept as a final segment that ends
    at `duration` rather than dropped: each window is decoded once, so nothing may be lost.
    """
    tb = tokenizer.timestamp_begin
    is_ts = [t >= tb for t in tokens]
    text_of = lambda ts: tokenizer.decode([t for t in ts if t < tokenizer.eot])  # noqa: E731
    time_of = lambda t: round((t - tb) * TIME_PRECISION, 2)  # noqa: E731
    consecutive = [i for i in range(1, len(tokens)) if is_ts[i - 1] and is_ts[i]]
    if not consecutive:
        timestamps = [t for t in tokens if t >= tb]
        end = time_of(timestamps[-1]) if timestamps and timestamps[-1] != tb else duration
        text = text_of(tokens)
        return (Segment(0.0, end, text, tuple(tokens)),) if text.strip() else ()
    single_ending = is_ts[-2:] == [False, True]
    cuts = consecutive + ([len(tokens)] if single_ending else [])
    segments, last = [], 0
    for cut in cuts:
        part = tokens[last:cut]
        segments.append(Segment(time_of(part[0]), time_of(part[-1]), text_of(part), tuple(part)))
        last = cut
    tail = tokens[last:]
    if tail and text_of(tail).strip():
        start = time_of(tail[0]) if tail[0] >= tb else segments[-1].end
        segments.append(Segment(start, max(start, duration), text_of(tail), tuple(tail)))
    return tuple(s for s in segments if s.text.strip())


@dataclass(frozen=True)
class FallbackOptions:
    """openai-whisper's temperature fallback: retry rows whose output looks wrong, hotter."""

    temperatures: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    compression_ratio_threshold: float | None = 2.4
    logprob_threshold: float | None = -1.0
    no_speech_threshold: float | None = 0.6

    def __post_init__(self) -> None:
        temperatures = self.temperatures
        if not isinstance(temperatures, tuple) or not temperatures:
            raise ValueError(
                f"temperature must be one number ≥ 0 or a non-empty sequence of them, not {temperatures!r}"
            )
        for t in temperatures:
            checks.number("temperature", t, low=0)
        checks.number("compression_ratio_threshold", self.compression_ratio_threshold, low=0, optional=True)
        checks.number("logprob_threshold", self.logprob_threshold, optional=True)
        checks.number("no_speech_threshold", self.no_speech_threshold, low=0, high=1, optional=True)

    def needs_fallback(self, r: DecodingResult) -> bool:
        """Too repetitive or too improbable, and not silence."""
        too_low = self.logprob_threshold is not None and r.avg_logprob < self.logprob_threshold
        if self.no_speech_threshold is not None and too_low and r.no_speech_prob > self.no_speech_threshold:
            return False  # silence
        repetitive = (
            self.compression_ratio_threshold is not None and r.compression_ratio > self.compression_ratio_threshold
        )
        return repetitive or too_low


def decode_with_fallback(
    model: Whisper,
    tokenizer: Tokenizer,
    items: Iterable[Item],
    options: DecodingOptions,
    fallback: FallbackOptions,
    batch_size: int,
    best_of: int = 5,
    seed: int = 0,
    keep_cross_kv: bool = False,
) -> Iterator[tuple[Item, DecodingResult]]:
    """Decode at the first temperature; rows that need it go again at the next, in batched passes.

    At temperature 0 the options' beam_size (if any) applies; above 0, best_of samples per row,
    in batches of fewer segments, so that a batch holds no more decoder rows than `batch_size`
    segments at temperature 0. With `keep_cross_kv`, each item holds its audio K/V while the
    consumer looks at it (word timing reuses them instead of computing them again).
    Yields (item, result) as results become final.
    """
    stream: Iterable[Item] = items
    temperatures = fallback.temperatures
    rows = batch_size * options.n_group
    for n, t in enumerate(temperatures):
        opts = replace(
            options,
            temperature=t,
            beam_size=options.beam_size if t == 0 else None,
            patience=options.patience if t == 0 else None,
            best_of=best_of if t > 0 else None,
        )
        retry: list[tuple[Item, DecodingResult]] = []
        size = max(1, rows // opts.n_group)
        for item, result in BatchDecoder(model, tokenizer, opts, seed + n, keep_cross_kv).run(stream, size):
            if math.isnan(result.avg_logprob) or result.avg_logprob == math.inf:
                raise ModelOutputError(
                    f"{getattr(model, 'source', 'the model')}: the model computed NaN/infinite "
                    "log-probabilities; its weights may be corrupt"
                )
            if n + 1 < len(temperatures) and fallback.needs_fallback(result):
                retry.append((item, result))
            else:
                yield item, result
                item.features = item.cross_kv = None  # once the consumer has taken what it needs
        if not retry:
            return
        stream = [item for item, _ in retry]
