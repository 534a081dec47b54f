"""Label maps: parsed with protobuf's text-format parser (odapi.labels), then names and ids (proxy.labels)."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.errors import ConfigError, InvalidParameter
from proxy.labels import LabelMap, fallback_name

COCO = Path(__file__).resolve().parents[2] / "converter" / "data" / "mscoco_label_map.pbtxt"


def parse_label_map(text: str, source: str = "label map") -> LabelMap:
    """Parse label-map text the way the proxy does."""
    return LabelMap.from_text(text, source=source)


def load_label_map(path: Path) -> LabelMap:
    """Read a label-map file the way the proxy does."""
    return LabelMap.load(path)


def test_coco_label_map() -> None:
    """The real COCO map gives 80 classes, display names title-cased as the seed did."""
    labels = load_label_map(COCO)
    assert len(labels) == 80
    assert labels.name(1) == "Person"
    assert labels.name(18) == "Dog"
    assert labels.name(10) == "Traffic Light"
    assert labels.name(90) == "Toothbrush"


def test_name_is_used_when_there_is_no_display_name() -> None:
    """An item with only ``id`` and ``name`` is named by ``name``."""
    assert parse_label_map('item { id: 1 name: "dog" }').names == {1: "Dog"}


def test_display_name_wins_over_name() -> None:
    """``display_name`` is preferred to ``name``."""
    assert parse_label_map('item { name: "/m/0bt9lr" id: 18 display_name: "dog" }').names == {18: "Dog"}


@pytest.mark.parametrize(
    "text",
    [
        'item {\n  display_name: "hot dog"\n  id: 7\n  name: "x"\n}\n',  # fields reordered
        "item {\n  id: 7\n  display_name: 'hot dog'\n}\n",  # single quotes
        '# a comment\nitem { # trailing comment\n  id: 7  # the id\n  display_name: "hot dog"\n}\n',
        'item {\r\n  id: 7\r\n  display_name: "hot dog"\r\n}\r\n',  # CRLF
        'item: {\n  id: 7,\n  display_name: "hot dog";\n}',  # the colon and separators text format allows
        'item <\n  id: 7\n  display_name: "hot dog"\n>\n',  # angle-bracket message delimiters
    ],
    ids=["reordered", "single-quotes", "comments", "crlf", "separators", "angle-brackets"],
)
def test_text_format_variants(text: str) -> None:
    """Every spelling protobuf's text format accepts gives the same map."""
    assert parse_label_map(text).names == {7: "Hot Dog"}


def test_keypoints_and_newer_fields_are_accepted() -> None:
    """Items carrying keypoints, ancestor ids or frequency (newer OD API fields) still parse."""
    text = 'item { id: 1 name: "person" keypoints { id: 0 label: "nose" } ancestor_ids: 2 frequency: FREQUENT }'
    assert parse_label_map(text).names == {1: "Person"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('item {\n  id: 1\n  name: "dog"\n', "line 3"),  # unclosed brace: reported at the end
        ('item {\n  id: one\n  name: "dog"\n}', "line 2"),
        ('item {\n  id: 1\n  nmae: "dog"\n}', 'line 3, column 3: Message type "object_detection.protos.Str'),
        ("itm {\n  id: 1\n}", "line 1"),
        ('item { name: "dog" }', "item 1 has no id"),
        ('item { id: 1 name: "dog" }\nitem { id: 1 name: "cat" }', "item 2 repeats id 1"),
        ('item { id: 0 name: "dog" }', "id 0 is reserved for the background"),
        ('item { id: -2 name: "dog" }', "negative id"),
        ("item { id: 3 }", "neither display_name nor name"),
        ("# nothing here\n", "has no items"),
    ],
)
def test_malformed_label_maps_are_config_errors(text: str, message: str) -> None:
    """A malformed map is a ``ConfigError`` naming the source and where the problem is."""
    with pytest.raises(ConfigError) as raised:
        parse_label_map(text, source="label_map.pbtxt")
    assert str(raised.value).startswith("label_map.pbtxt")
    assert message in str(raised.value)


def test_background_id_zero_is_allowed() -> None:
    """Id 0 is accepted when it is the background class."""
    assert parse_label_map('item { id: 0 name: "background" } item { id: 1 name: "cat" }').name(1) == "Cat"


def test_unknown_id_falls_back() -> None:
    """An id the map lacks gets the documented fallback name instead of an error."""
    labels = LabelMap({1: "Dog"})
    assert labels.name(5) == fallback_name(5) == "Class 5"


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """A label map path that does not exist is a ``ConfigError`` naming it."""
    with pytest.raises(ConfigError, match="label map not found"):
        load_label_map(tmp_path / "nope.pbtxt")


def test_ids_of_names_in_any_case_and_fallbacks() -> None:
    """Names as answers show them, in any case, and "Class N" for ids the map lacks, become class ids."""
    labels = LabelMap({1: "Dog", 10: "Traffic Light"})
    assert labels.ids_of(["dog", "TRAFFIC LIGHT", "Class 17", " class 3 "]) == frozenset({1, 10, 17, 3})


def test_ids_of_an_unknown_name_is_a_400() -> None:
    """A name that is neither in the map nor "Class N" is an InvalidParameter naming it."""
    with pytest.raises(InvalidParameter, match="unicorn"):
        LabelMap({1: "Dog"}).ids_of(["unicorn"])


def test_odapi_parser_raises_a_value_error() -> None:
    """The TensorFlow-free parser the converter uses raises LabelMapError, a ValueError, for a bad map."""
    from odapi.labels import LabelMapError
    from odapi.labels import parse_label_map as parse_text

    assert parse_text('item { id: 2 name: "cat" }') == {2: "Cat"}
    with pytest.raises(LabelMapError):
        parse_text("item { id: 2 }")
    assert issubclass(LabelMapError, ValueError)
