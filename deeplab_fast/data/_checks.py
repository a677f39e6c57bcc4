"""Argument checks shared by the data and inference modules; every message names the argument and what was
expected."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


def check_bool(value: object, name: str) -> bool:
    """`value` if it is a bool; TypeError naming `name` otherwise (a string such as "no" is truthy, so it must not
    pass as True)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False; got {value!r} ({type(value).__name__})")
    return value


def positive_int(value: object, name: str) -> int:
    """`value` if it is a positive int (not a bool); ValueError naming `name` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int; got {value!r}")
    return value


def positive_pair(value: object, name: str) -> tuple[int, int]:
    """`value` as (H, W): a positive int (a square) or a pair of them; ValueError naming `name` otherwise."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    ok = isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2
    ok = ok and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)  # type: ignore[union-attr]
    if not ok:
        raise ValueError(f"{name} must be a positive int or a pair (H, W) of them; got {value!r}")
    return int(value[0]), int(value[1])  # type: ignore[index]


def float_tuple(value: object, name: str, expected: str) -> tuple[float, ...]:
    """`value`, an iterable of real numbers, as a tuple of floats; ValueError naming `name` and `expected` for
    anything else (strings and bools included)."""
    error = ValueError(f"{name} must be {expected}; got {value!r}")
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise error
    out = []
    for v in value:
        if isinstance(v, (str, bytes, bool)):
            raise error
        try:
            out.append(float(v))
        except (TypeError, ValueError):
            raise error from None
    return tuple(out)


def check_mean_std(mean: object, std: object) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Validate per-channel normalisation values (3 finite floats each, std > 0); returns them as tuples."""
    out = []
    for name, value in (("mean", mean), ("std", std)):
        vals = float_tuple(value, name, "3 numbers (one per RGB channel)")
        if len(vals) != 3 or not all(math.isfinite(v) for v in vals):
            raise ValueError(f"{name} must be 3 finite numbers (one per RGB channel); got {value!r}")
        out.append(vals)
    if min(out[1]) <= 0:
        raise ValueError(f"std must be positive; got {std!r}")
    return out[0], out[1]
