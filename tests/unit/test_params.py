"""Query parameters: ``threshold`` and boolean flags."""

from __future__ import annotations

import pytest

from proxy.errors import InvalidParameter
from proxy.params import parse_flag, parse_threshold


@pytest.mark.parametrize(("raw", "value"), [(None, 0.75), ("0", 0.0), ("1", 1.0), ("0.8", 0.8), (" 0.5 ", 0.5)])
def test_valid_thresholds(raw: str | None, value: float) -> None:
    """Finite numbers in [0, 1] are accepted; absent means the default."""
    assert parse_threshold(raw, 0.75) == value


@pytest.mark.parametrize("raw", ["", "abc", "-0.1", "1.01", "nan", "inf", "-inf", "1e400", "0x1"])
def test_invalid_thresholds(raw: str) -> None:
    """Anything else is a 400 naming the parameter."""
    with pytest.raises(InvalidParameter, match="threshold must be a number between 0 and 1"):
        parse_threshold(raw, 0.75)


def test_long_bad_values_are_not_echoed_whole() -> None:
    """A hostile value is echoed only in part."""
    with pytest.raises(InvalidParameter) as raised:
        parse_threshold("x" * 5000, 0.75)
    assert len(str(raised.value)) < 120


@pytest.mark.parametrize(
    ("raw", "value"), [(None, False), ("true", True), ("TRUE", True), ("1", True), ("false", False)]
)
def test_flags(raw: str | None, value: bool) -> None:
    """``true``/``false`` in any case (and 1/0) are flags; absent means false."""
    assert parse_flag("verbose", raw) is value


@pytest.mark.parametrize("raw", ["", "maybe", "2", "truee"])
def test_invalid_flags(raw: str) -> None:
    """Other values are a 400 naming the parameter."""
    with pytest.raises(InvalidParameter, match="verbose must be true or false"):
        parse_flag("verbose", raw)
