"""openai-whisper's logit filters (blank and token suppression, timestamp rules) as masks built on the
device from four per-row counters, so that a decoding step has no Python loop over rows; on the CPU one
native pass a row (`_kernels.logit_rules`), from each row's bounds."""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from .audio import TIME_PRECISION
from .kernels import _kernels, native_available
from .options import DecodingOptions, suppress_token_ids
from .tokenizer import Tokenizer


class LogitRules:
    """openai-whisper's logit filters as vectorized masks: blank and token suppression, timestamp rules."""

    def __init__(self, tokenizer: Tokenizer, options: DecodingOptions, n_vocab: int):
        """Masks for `options`, which must be valid for this vocabulary (`DecodingOptions.validate`)."""
        self.eot = tokenizer.eot
        self.timestamps = not options.without_timestamps
        self.ts_begin = tokenizer.timestamp_begin
        vocab = np.arange(n_vocab)
        suppress = np.zeros(n_vocab, bool)
        suppress[list(suppress_token_ids(tokenizer, options.suppress_tokens))] = True
        if self.timestamps:
            suppress[tokenizer.no_timestamps] = True
        self.suppress = mx.array(suppress)
        blank = np.zeros(n_vocab, bool)
        if options.suppress_blank:
            blank[tokenizer.encode(" ") + [tokenizer.eot]] = True
        self.suppress_first = mx.array(suppress | blank)  # the first sampled token: blanks too
        self.vocab = mx.array(vocab.astype(np.int32))
        self.max_initial = None
        if self.timestamps and options.max_initial_timestamp is not None:
            self.max_initial = self.ts_begin + round(options.max_initial_timestamp / TIME_PRECISION)

    def __call__(
        self, logits: mx.array, n_sampled: mx.array, last: mx.array, penult: mx.array, last_ts: mx.array
    ) -> mx.array:
        """Mask (B, V) logits given each row's count of sampled tokens, its last two tokens and last timestamp.

        Every timestamp rule bans a range of the vocabulary, so each row's bans are three bounds — a prefix
        [0, P), a suffix [S, V) and timestamps [ts_begin, F) — compared with the columns in one pass.
        """
        col = lambda a: a[:, None]  # noqa: E731
        v = self.vocab[None, :]
        first = n_sampled == 0
        tb, n_vocab = self.ts_begin, self.vocab.shape[0]
        native = logits.dtype == mx.float32 and native_available()
        if not self.timestamps:
            if native:  # no prefix, suffix or timestamp rule: the masks only
                none, end = mx.zeros_like(last), mx.full(last.shape, n_vocab, mx.int32)
                return self._native(logits, [none, end, end, first], n_vocab)
            return mx.where(mx.where(col(first), self.suppress_first, self.suppress), -mx.inf, logits)
        last_was_ts = last >= tb
        penult_was_ts = (n_sampled < 2) | (penult >= tb)
        pair_closed = last_was_ts & penult_was_ts  # next: text or eot
        pair_open = last_was_ts & ~penult_was_ts  # next: a timestamp or eot
        prefix = mx.maximum(mx.where(pair_open, self.eot, 0), mx.where(first, tb, 0))  # the first token: a timestamp
        suffix = mx.where(pair_closed, tb, n_vocab)
        if self.max_initial is not None:
            suffix = mx.minimum(suffix, mx.where(first, self.max_initial + 1, n_vocab))
        floor = mx.where(pair_open, last_ts, last_ts + 1)  # never go back in time
        floor = mx.where(last_ts >= tb, floor, tb)
        if native:
            return self._native(logits, [prefix, suffix, floor, first], tb)
        mask = mx.where(col(first), self.suppress_first, self.suppress)
        mask = mask | (v < col(prefix)) | (v >= col(suffix)) | ((v >= tb) & (v < col(floor)))
        logits = mx.where(mask, -mx.inf, logits)
        # when timestamps outweigh every text token, sample a timestamp
        ts_mass = mx.logsumexp(logits[:, tb:], axis=-1)
        text_max = logits[:, :tb].max(axis=-1)
        return mx.where(v < col(mx.where(ts_mass > text_max, tb, 0)), -mx.inf, logits)

    def _native(self, logits: mx.array, bounds: list[mx.array], tb: int) -> mx.array:
        """The same filters in one native pass a row, from each row's prefix, suffix, floor and `first`. The
        timestamps' log-sum-exp is the kernel's own (its exp, its order of summing): against the best text
        logit it can decide a tie within rounding the other way from MLX's."""
        bounds = mx.stack([b.astype(mx.int32) for b in bounds], axis=1)
        return _kernels.logit_rules(logits, bounds, self.suppress, self.suppress_first, tb)
