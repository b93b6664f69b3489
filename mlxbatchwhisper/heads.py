"""Alignment heads: the decoder cross-attention heads whose weights follow the audio in time.

Word timing reads the attention of these (layer, head) pairs. The table holds openai-whisper's
published heads per model (the same facts as its base85 table, written out as pairs); checkpoints
that carry their own list (Hugging Face `generation_config.json`, CTranslate2 `config.json`,
mlx-whisper weights, our converter's `config.json`) take precedence, and any other model gets
openai-whisper's default: every head of the second half of the decoder layers.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

Heads = tuple[tuple[int, int], ...]

_LARGE_V3 = ((7, 0), (10, 17), (12, 18), (13, 12), (16, 1), (17, 14), (19, 11), (21, 4), (24, 1), (25, 6))
_TURBO = ((2, 4), (2, 11), (3, 3), (3, 6), (3, 11), (3, 14))

OPENAI_HEADS: dict[str, Heads] = {
    "tiny.en": ((1, 0), (2, 0), (2, 5), (3, 0), (3, 1), (3, 2), (3, 3), (3, 4)),
    "tiny": ((2, 2), (3, 0), (3, 2), (3, 3), (3, 4), (3, 5)),
    "base.en": ((3, 3), (4, 7), (5, 1), (5, 5), (5, 7)),
    "base": ((3, 1), (4, 2), (4, 3), (4, 7), (5, 1), (5, 2), (5, 4), (5, 6)),
    "small.en": (
        (6, 6),
        (7, 0),
        (7, 3),
        (7, 8),
        (8, 2),
        (8, 5),
        (8, 7),
        (9, 0),
        (9, 4),
        (9, 8),
        (9, 10),
        (10, 0),
        (10, 1),
        (10, 2),
        (10, 3),
        (10, 6),
        (10, 11),
        (11, 2),
        (11, 4),
    ),
    "small": ((5, 3), (5, 9), (8, 0), (8, 4), (8, 7), (8, 8), (9, 0), (9, 7), (9, 9), (10, 5)),
    "medium.en": (
        (11, 4),
        (14, 1),
        (14, 12),
        (14, 14),
        (15, 4),
        (16, 0),
        (16, 4),
        (16, 9),
        (17, 12),
        (17, 14),
        (18, 7),
        (18, 10),
        (18, 15),
        (20, 0),
        (20, 3),
        (20, 9),
        (20, 14),
        (21, 12),
    ),
    "medium": ((13, 15), (15, 4), (15, 15), (16, 1), (20, 0), (23, 4)),
    "large-v1": ((9, 19), (11, 2), (11, 4), (11, 17), (22, 7), (22, 11), (22, 17), (23, 2), (23, 15)),
    "large-v2": (
        (10, 12),
        (13, 17),
        (16, 11),
        (16, 12),
        (16, 13),
        (17, 15),
        (17, 16),
        (18, 4),
        (18, 11),
        (18, 19),
        (19, 11),
        (21, 2),
        (21, 3),
        (22, 3),
        (22, 9),
        (22, 12),
        (23, 5),
        (23, 7),
        (23, 13),
        (25, 5),
        (26, 1),
        (26, 12),
        (27, 15),
    ),
    "large-v3": _LARGE_V3,
    "large": _LARGE_V3,
    "large-v3-turbo": _TURBO,
    "turbo": _TURBO,
}


def heads_for_name(name: str) -> Heads | None:
    """openai-whisper's heads for a model named like 'base.en', 'openai/whisper-small',
    'mlx-community/whisper-large-v3-turbo' or 'large-v2.pt'; None when the name says nothing."""
    stem = re.sub(r"\.(pt|bin)$", "", name.rstrip("/").rsplit("/", 1)[-1].lower())
    stem = re.sub(r"^(distil-)?whisper[-_]", "", stem)
    stem = re.sub(r"[-_](mlx|ct2|fp16|fp32|float16|float32|bf16|\d+bit|q\d|int\d+)$", "", stem)
    return OPENAI_HEADS.get(stem)


def default_heads(n_text_layer: int, n_text_head: int) -> Heads:
    """openai-whisper's default: all heads of the second half of the decoder layers."""
    return tuple((layer, head) for layer in range(n_text_layer // 2, n_text_layer) for head in range(n_text_head))


def check_heads(heads: Sequence[Sequence[int]], n_text_layer: int, n_text_head: int, source: str) -> Heads:
    """(layer, head) pairs, each inside the decoder, or a ValueError naming `source`."""
    try:
        pairs = tuple(sorted({(int(layer), int(head)) for layer, head in heads}))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{source}: alignment_heads must be [layer, head] pairs, not {heads!r}") from e
    bad = [p for p in pairs if not (0 <= p[0] < n_text_layer and 0 <= p[1] < n_text_head)]
    if bad or not pairs:
        raise ValueError(
            f"{source}: alignment_heads {bad or 'is empty'} outside the decoder's "
            f"{n_text_layer} layers x {n_text_head} heads"
        )
    return pairs
