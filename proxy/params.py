"""Query-parameter parsing for the API. Pure functions: text in, typed value or ``InvalidParameter`` out."""

from __future__ import annotations

import math

from proxy.errors import InvalidParameter

_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


def parse_threshold(raw: str | None, default: float) -> float:
    """A finite number in [0, 1]; ``None`` (parameter absent) gives ``default``."""
    if raw is None:
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise InvalidParameter(f"threshold must be a number between 0 and 1, got {_show(raw)}") from None
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise InvalidParameter(f"threshold must be a number between 0 and 1, got {_show(raw)}")
    return value


def parse_flag(name: str, raw: str | None, *, default: bool = False) -> bool:
    """``true``/``false`` (also ``1``/``0``, ``yes``/``no``, any case); ``None`` gives ``default``."""
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise InvalidParameter(f"{name} must be true or false, got {_show(raw)}")


def _show(raw: str) -> str:
    # Echo enough of a bad value to recognise it, never a whole hostile query string.
    return repr(raw if len(raw) <= 40 else raw[:40] + "…")
