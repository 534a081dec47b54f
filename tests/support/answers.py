"""Comparing /classify answers: counts exactly, verbose detections in order with float tolerance."""

from __future__ import annotations

from typing import Any

import pytest

VERBOSE_KEYS = ["class", "score", "x1", "y1", "x2", "y2"]


def assert_same_answer(actual: Any, expected: Any, *, tolerance: float = 1e-4) -> None:
    """Counts must be equal; verbose lists must name the same classes in the same order, floats within tolerance."""
    if isinstance(expected, dict):
        assert actual == expected
        return
    assert [d["class"] for d in actual] == [d["class"] for d in expected]
    for got, want in zip(actual, expected, strict=True):
        assert list(got) == VERBOSE_KEYS
        for key in VERBOSE_KEYS[1:]:
            assert got[key] == pytest.approx(want[key], abs=tolerance), key
