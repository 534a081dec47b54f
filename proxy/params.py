"""Parameter parsing for the API. Pure functions: text in, typed value or ``InvalidParameter`` out."""

from __future__ import annotations

import math

from proxy.errors import InvalidParameter

_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})
DEEPSTACK_MIN_CONFIDENCE = 0.40  # what DeepStack's server uses when a request sends no min_confidence


def show(raw: str) -> str:
    """Enough of a bad value to recognise it in an error message, never a whole hostile query string."""
    return repr(raw if len(raw) <= 40 else raw[:40] + "…")


def parse_fraction(name: str, raw: str | None, default: float | None) -> float | None:
    """A finite number in [0, 1]; ``None`` (parameter absent) gives ``default``."""
    if raw is None:
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise InvalidParameter(f"{name} must be a number between 0 and 1, got {show(raw)}") from None
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise InvalidParameter(f"{name} must be a number between 0 and 1, got {show(raw)}")
    return value


def parse_threshold(raw: str | None, default: float) -> float:
    """``threshold``: a finite number in [0, 1]; absent gives ``default``."""
    value = parse_fraction("threshold", raw, default)
    return default if value is None else value


def parse_min_confidence(raw: str | None) -> float:
    """DeepStack's ``min_confidence``, with its server's rules and messages: absent or empty → 0.40; not a number
    → "Invalid value for min_confidence"; above 1 → "min_confidence cannot be greater than 1"."""
    if raw is None or not raw.strip():
        return DEEPSTACK_MIN_CONFIDENCE
    try:
        value = float(raw.strip())
    except ValueError:
        raise InvalidParameter("Invalid value for min_confidence") from None
    if not math.isfinite(value):
        raise InvalidParameter("Invalid value for min_confidence")
    if value > 1.0:
        raise InvalidParameter("min_confidence cannot be greater than 1")
    return max(value, -1.0)  # no lower bound, as DeepStack; below -1 changes nothing but would overflow float32


def parse_count(name: str, raw: str | None) -> int | None:
    """A whole number of at least 1 (``max_detections``); absent gives None (no cap)."""
    if raw is None:
        return None
    try:
        value = int(raw.strip())
    except ValueError:
        raise InvalidParameter(f"{name} must be a whole number of at least 1, got {show(raw)}") from None
    if value < 1:
        raise InvalidParameter(f"{name} must be a whole number of at least 1, got {show(raw)}")
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
    raise InvalidParameter(f"{name} must be true or false, got {show(raw)}")


def parse_classes(raw: str | None) -> tuple[str, ...] | None:
    """``classes=dog,person``: the names to keep (checked against the model's label map later); None keeps all."""
    if raw is None:
        return None
    names = tuple(dict.fromkeys(part.strip() for part in raw.split(",") if part.strip()))
    if not names:
        raise InvalidParameter("classes must list class names separated by commas, e.g. classes=dog,person")
    return names


_FORMATS = {"json": "json", "image": "JPEG", "jpeg": "JPEG", "jpg": "JPEG", "png": "PNG"}


def parse_format(raw: str | None) -> str | None:
    """``json``, ``JPEG`` or ``PNG`` for the ``format`` parameter; None when it is absent."""
    if raw is None:
        return None
    found = _FORMATS.get(raw.strip().lower())
    if found is None:
        raise InvalidParameter(f"format must be json, image, jpeg or png, got {show(raw)}")
    return found


# The tile sizes a request may ask for: below 128 pixels a tile holds too little for a detector (SSD models see
# 300x300), above 2048 it stops being small next to the frames cameras send.
TILE_MIN, TILE_MAX = 128, 2048


def parse_tile(raw: str | None) -> int | None:
    """``tile=N``: square tiles of N pixels (``TILE_MIN`` to ``TILE_MAX``); absent or ``0`` gives None (no tiles)."""
    if raw is None or raw.strip() in ("", "0"):
        return None
    try:
        value = int(raw.strip())
    except ValueError:
        raise InvalidParameter(
            f"tile must be a whole number of pixels, {TILE_MIN} to {TILE_MAX}, got {show(raw)}"
        ) from None
    if not TILE_MIN <= value <= TILE_MAX:
        raise InvalidParameter(f"tile must be a whole number of pixels, {TILE_MIN} to {TILE_MAX}, got {show(raw)}")
    return value


def parse_roi(raw: str | None) -> tuple[float, float, float, float] | None:
    """``roi=x1,y1,x2,y2``: a region normalized to the upright picture, ``0 <= x1 < x2 <= 1`` (and for y)."""
    if raw is None:
        return None
    parts = raw.split(",")
    try:
        values = tuple(float(part.strip()) for part in parts)
    except ValueError:
        values = ()
    if len(values) != 4 or not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in values):
        raise InvalidParameter(f"roi must be x1,y1,x2,y2, four numbers between 0 and 1, got {show(raw)}")
    x1, y1, x2, y2 = values
    if not (x1 < x2 and y1 < y2):
        raise InvalidParameter(f"roi must have x1 < x2 and y1 < y2 (a region of the picture), got {show(raw)}")
    return x1, y1, x2, y2


def parse_class_thresholds(raw: str | None) -> tuple[tuple[str, float], ...] | None:
    """``thresholds=person:0.6,car:0.8``: a threshold per class name (as answers show them, any case)."""
    if raw is None:
        return None
    found: dict[str, tuple[str, float]] = {}
    for entry in (part.strip() for part in raw.split(",")):
        if not entry:
            continue
        name, colon, value = entry.rpartition(":")  # names may hold spaces ("traffic light"), never a colon
        if not colon or not name.strip():
            raise InvalidParameter(f"thresholds must be name:threshold pairs, e.g. person:0.6,car:0.8, got {show(raw)}")
        threshold = parse_fraction(f"the threshold of {name.strip()[:40]!r}", value, None)
        found[name.strip().lower()] = (name.strip(), threshold if threshold is not None else 0.0)
    if not found:
        raise InvalidParameter("thresholds must list name:threshold pairs, e.g. thresholds=person:0.6,car:0.8")
    return tuple(found.values())
