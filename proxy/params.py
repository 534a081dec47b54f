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


def parse_confidence(raw: str | None, default: float) -> float:
    """DeepStack's ``min_confidence``: a finite number in [0, 1]; absent or empty gives ``default``."""
    if raw is None or not raw.strip():
        return default
    try:
        return parse_threshold(raw, default)
    except InvalidParameter:
        raise InvalidParameter(f"min_confidence must be a number between 0 and 1, got {_show(raw)}") from None


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


def parse_classes(raw: str | None, known: frozenset[str]) -> frozenset[str] | None:
    """``classes=dog,person``: lower-cased names to keep, each one the label map knows; ``None`` keeps all."""
    if raw is None:
        return None
    names = frozenset(part.strip().lower() for part in raw.split(",") if part.strip())
    if not names:
        raise InvalidParameter("classes must list class names separated by commas, e.g. classes=dog,person")
    unknown = sorted(names - known)
    if unknown:
        raise InvalidParameter(f"unknown class {_show(unknown[0])}; the label map has {len(known)} classes")
    return names


_FORMATS = {"json": "json", "image": "JPEG", "jpeg": "JPEG", "jpg": "JPEG", "png": "PNG"}


def parse_format(raw: str | None, accept_image: str | None) -> str:
    """``json``, ``JPEG`` or ``PNG``: the ``format`` parameter, else what the Accept header prefers."""
    if raw is None:
        return accept_image or "json"
    found = _FORMATS.get(raw.strip().lower())
    if found is None:
        raise InvalidParameter(f"format must be json, image, jpeg or png, got {_show(raw)}")
    return found


def _show(raw: str) -> str:
    # Echo enough of a bad value to recognise it, never a whole hostile query string.
    return repr(raw if len(raw) <= 40 else raw[:40] + "…")
