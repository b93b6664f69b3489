"""openai-whisper's logit filters (blank and token suppression, timestamp rules) as masks built on the
device from four per-row counters, so that a decoding step has no Python loop over rows."""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from .audio import TIME_PRECISION
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
