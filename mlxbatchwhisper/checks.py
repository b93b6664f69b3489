"""Checks for option values where they enter: each error names the option and what it accepts."""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np


def number(
    name: str,
    value: object,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    optional: bool = False,
) -> float | None:
    """A finite real number in [low, high] (or (low, high] with `low_open`); None if `optional`."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number{' or None' if optional else ''}, not {value!r}")
    if (low is not None and (value <= low if low_open else value < low)) or (high is not None and value > high):
        lo = "" if low is None else f"{'>' if low_open else '≥'} {low:g}"
        hi = "" if high is None else f"≤ {high:g}"
        raise ValueError(f"{name} must be {' and '.join(x for x in (lo, hi) if x)}, not {value!r}")
    return float(value)


def integer(name: str, value: object, low: int | None = None, optional: bool = False) -> int | None:
    """An integer ≥ `low`; None if `optional`."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ValueError(f"{name} must be an integer{' or None' if optional else ''}, not {value!r}")
    if low is not None and value < low:
        raise ValueError(f"{name} must be at least {low}, not {value!r}")
    return int(value)


def flag(name: str, value: object) -> bool:
    """True or False (numpy's bools too), nothing else."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, not {value!r}")
    return bool(value)


def choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    """One of `choices`."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}, not {value!r}")
    return value
