"""Prefill: segments joining the batch, from encoded audio to the rows' caches and first logits.

Encoded features in → each decoder layer's cross-attention K/V → language detection (for items
without a language) → the prompt ([<|startofprev|> previous text] <|startoftranscript|> ...),
left-padded across segments → the logits of each row's first token and the no-speech probability.
Log-mel and the encoder are not part of it: `AudioEncoder` (or any callable like it) encodes.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from .audio import CHUNK_LENGTH, log_mel_spectrogram
from .cache import KVCache, take_rows
from .kernels import CrossKV
from .model import Whisper
from .options import DecodingOptions, Pass
from .tokenizer import Tokenizer, language_code

Encoder = Callable[[list[np.ndarray]], mx.array]  # waveforms (each ≤ 30 s) → (n, n_audio_ctx, n_audio_state)


@dataclass
class Item:
    """One segment to decode: its audio (or features), prompt and language; `key` is the caller's.

    `seed` identifies the item to the sampler (with the options' seed, the pass and the row): give
    each item of a call its own, so that its samples do not depend on what it is batched with.
    """

    key: object
    audio: np.ndarray | None = None
    features: mx.array | None = None  # (1, n_audio_ctx, n_audio_state), once encoded
    prompt: tuple[int, ...] = ()  # previous-text tokens, without <|startofprev|>
    language: str | None = None
    language_probs: dict[str, float] | None = None
    duration: float = float(CHUNK_LENGTH)
    cross_kv: list[CrossKV] | None = None  # the decoder's audio K/V, if kept for word timing
    seed: int = 0


def item_seed(*parts: object) -> int:
    """A 32-bit seed from what identifies an item (its input, its place in it), the same in every process."""
    return zlib.crc32(repr(parts).encode())


class AudioEncoder:
    """Log-mel and the encoder, `batch` waveforms per call (bounds activation memory).

    By default one window at a time on the CPU, where larger calls are no faster (tiny.en: 345 ms a window
    alone, 391 in calls of 8) and each window adds its layer's attention scores to the peak (~100 MB for
    tiny.en), and `GPU_BATCH` elsewhere, where larger calls keep the device busy."""

    GPU_BATCH = 8

    def __init__(self, model: Whisper, batch: int | None = None):
        self.model = model
        self.batch = batch or (1 if mx.default_device() == mx.cpu else self.GPU_BATCH)

    def __call__(self, audios: list[np.ndarray]) -> mx.array:
        parts = []
        for mel in self._mels(audios):
            parts.append(self.model.embed_audio(mel))
            mx.async_eval(parts[-1])  # queued while the call before finishes: the device never waits for the host
            if len(parts) > 1:
                mx.eval(parts[-2])  # and no more than two calls' activations are alive
        mx.eval(parts[-1])
        return mx.concatenate(parts)

    def stages(self, audios: list[np.ndarray]) -> Iterator[mx.array | None]:
        """The same features a piece at a time (one encoder layer of one call): each `next` queues one more
        piece, not waited for, and yields None; the last yields the features. The engine runs them a few
        per decoding step, to keep a GPU busy between the steps' kernels."""
        parts = []
        for mel in self._mels(audios):
            for x in self.model.embed_audio_stages(mel):
                mx.async_eval(x)
                yield None
            parts.append(x)
        yield mx.concatenate(parts)

    def _mels(self, audios: list[np.ndarray]) -> Iterator[mx.array]:
        """The log-mel of each call: `batch` waveforms at a time."""
        for start in range(0, len(audios), self.batch):
            yield log_mel_spectrogram(audios[start : start + self.batch], self.model.dims.n_mels)[0]


def detect_languages(model: Whisper, tokenizer: Tokenizer, cross: list[CrossKV]) -> list[tuple[str, dict[str, float]]]:
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


@dataclass
class Prefilled:
    """New rows (each entry's `Pass.rows`, in order): their caches, first logits and budgets."""

    cache: list[KVCache]
    logits: mx.array  # (rows, n_vocab): each row's first token
    no_speech: mx.array  # (entries,) probability of <|nospeech|> after <|startoftranscript|>
    budgets: list[int]  # most tokens each entry may sample


class Prefill:
    """Features → cross-attention K/V → languages → prompts → first logits, for a group of entries."""

    def __init__(self, model: Whisper, tokenizer: Tokenizer, options: DecodingOptions, encode: Encoder):
        self.model, self.tokenizer, self.options, self.encode = model, tokenizer, options, encode
        self.n_ctx = model.dims.n_text_ctx
        self.sample_len = options.sample_len or self.n_ctx // 2

    def __call__(self, entries: list[tuple[Item, Pass]]) -> Prefilled:
        model, tok = self.model, self.tokenizer
        items = [it for it, _ in entries]
        missing = [it for it in items if it.features is None]
        if missing:
            features = self.encode([it.audio for it in missing])
            for i, it in enumerate(missing):
                it.features = features[i : i + 1]
        cross = model.decoder.cross_kv(mx.concatenate([it.features for it in items]))
        self._languages(items, cross)
        initial = [self.initial_tokens(it) for it in items]
        group = entries[0][1].group
        copies = [p.rows // group for _, p in entries]  # audio rows per entry: one per group of its rows
        audio_row = mx.array(np.repeat(np.arange(len(entries)), copies).astype(np.int32))
        width = max(map(len, initial))
        per_row = [(init, p.rows) for init, (_, p) in zip(initial, entries)]
        pads = [width - len(init) for init, n in per_row for _ in range(n)]
        if any(c != 1 for c in copies):  # rows of their own (samples of best_of): one copy of the K/V each
            cross = take_rows(cross, audio_row)
        cache = [KVCache(kv, pads, group=group, reserve=width + self.sample_len) for kv in cross]
        prompts = mx.array([[0] * (width - len(init)) + list(init) for init, n in per_row for _ in range(n)])
        hidden = model.decoder(prompts, cache=cache)
        first = np.cumsum([0] + [n for _, n in per_row])[:-1]
        sot = mx.array([pads[r] + init.index(tok.sot) for r, (init, _) in zip(first, per_row)])
        sot_logits = model.decoder.project(hidden[mx.array(first.astype(np.int32)), sot]).astype(mx.float32)
        return Prefilled(
            cache,
            model.decoder.project(hidden[:, -1]),
            mx.softmax(sot_logits, axis=-1)[:, tok.no_speech],
            [min(self.sample_len, self.n_ctx - len(init) + 1) for init in initial],
        )

    def _languages(self, items: list[Item], cross: list[CrossKV]) -> None:
        """Per-item language detection from the logits after <|startoftranscript|> alone."""
        tok = self.tokenizer
        if not tok.multilingual:
            for it in items:
                it.language = "en"
            return
        for it in items:
            if it.language is not None:
                it.language = language_code(it.language)
        todo = [i for i, it in enumerate(items) if it.language is None]
        if todo:
            found = detect_languages(self.model, tok, take_rows(cross, mx.array(todo)))
            for i, (code, probs) in zip(todo, found):
                items[i].language, items[i].language_probs = code, probs

    def initial_tokens(self, item: Item) -> tuple[int, ...]:
        """openai-whisper's initial tokens: [<|startofprev|> prompt] <|startoftranscript|> language task [...]."""
        tok = self.tokenizer
        tokens = list(tok.sot_sequence(item.language if tok.multilingual else None, self.options.task))
        if self.options.without_timestamps:
            tokens.append(tok.no_timestamps)
        if item.prompt:
            tokens = [tok.sot_prev] + list(item.prompt)[-(self.n_ctx // 2 - 1) :] + tokens
        return tuple(tokens)
