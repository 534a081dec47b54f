"""Parameters: thresholds, DeepStack's min_confidence, counts, flags, classes and formats."""

from __future__ import annotations

import pytest

from proxy.errors import InvalidParameter
from proxy.params import parse_classes, parse_count, parse_flag, parse_format, parse_min_confidence, parse_threshold


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


@pytest.mark.parametrize(
    ("raw", "value"), [(None, 0.40), ("", 0.40), ("0", 0.0), ("0.6", 0.6), ("1", 1.0), ("-1", -1.0)]
)
def test_min_confidence_follows_deepstack(raw: str | None, value: float) -> None:
    """min_confidence absent or empty is DeepStack's 0.40; numbers up to 1 are taken (no lower bound, as DeepStack)."""
    assert parse_min_confidence(raw) == pytest.approx(value)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("abc", "Invalid value for min_confidence"),
        ("nan", "Invalid value for min_confidence"),
        ("1.2", "min_confidence cannot be greater than 1"),
    ],
)
def test_min_confidence_errors_are_deepstacks(raw: str, message: str) -> None:
    """The values DeepStack refuses are refused with its messages."""
    with pytest.raises(InvalidParameter, match=message):
        parse_min_confidence(raw)


@pytest.mark.parametrize(("raw", "value"), [(None, None), ("1", 1), (" 20 ", 20)])
def test_counts(raw: str | None, value: int | None) -> None:
    """max_detections is a whole number of at least 1; absent means no cap."""
    assert parse_count("max_detections", raw) == value


@pytest.mark.parametrize("raw", ["0", "-3", "1.5", "x", ""])
def test_invalid_counts(raw: str) -> None:
    """Anything else is a 400 naming the parameter."""
    with pytest.raises(InvalidParameter, match="max_detections must be a whole number"):
        parse_count("max_detections", raw)


def test_classes_are_split_trimmed_and_deduplicated() -> None:
    """classes= is a comma list; blanks go, order and first spelling stay."""
    assert parse_classes(" dog, Person ,,dog") == ("dog", "Person")
    assert parse_classes(None) is None
    with pytest.raises(InvalidParameter):
        parse_classes(" , ")


@pytest.mark.parametrize(
    ("raw", "value"), [(None, None), ("json", "json"), ("IMAGE", "JPEG"), ("jpg", "JPEG"), ("png", "PNG")]
)
def test_formats(raw: str | None, value: str | None) -> None:
    """format= names JSON or a picture format, any case."""
    assert parse_format(raw) == value
