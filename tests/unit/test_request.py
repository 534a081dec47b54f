"""Reading request bodies: base64 in every common spelling, JSON bodies, multipart parts and the key field."""

from __future__ import annotations

import base64
import json
import re

import pytest

from proxy.errors import InvalidImage, InvalidParameter, PayloadTooLarge
from proxy.request import decode_base64, form_field, iter_parts, read_json_images

DATA = bytes(range(256)) * 3


@pytest.mark.parametrize(
    "text",
    [
        base64.b64encode(DATA).decode(),
        base64.urlsafe_b64encode(DATA).decode().rstrip("="),
        "data:image/png;base64," + base64.b64encode(DATA).decode(),
        "  " + base64.encodebytes(DATA).decode(),  # MIME line breaks
    ],
)
def test_base64_spellings_decode_alike(text: str) -> None:
    """Standard and URL-safe alphabets, with or without padding, a data: prefix or line breaks, decode alike."""
    assert decode_base64(text, "image") == DATA


def test_bad_base64_names_where() -> None:
    """Text that is not base64 is an InvalidImage naming the field."""
    with pytest.raises(InvalidImage, match=r"images\[2\] is not valid base64"):
        decode_base64("@@@", "images[2]")


def test_json_batch_keeps_per_image_errors() -> None:
    """A batch element that is not base64 becomes that element's error; the others decode."""
    body = b'{"images": ["' + base64.b64encode(DATA) + b'", "%%"]}'
    images, batch = read_json_images(body, max_images=4)
    assert batch and images[0].data == DATA and isinstance(images[1].data, InvalidImage)
    assert [image.where for image in images] == ["images[0]", "images[1]"]


@pytest.mark.parametrize(
    ("element", "tile", "roi"),
    [
        ({"tile": 640}, "640", None),
        ({"tile": "640", "roi": "0,0,0.5,0.5"}, "640", "0,0,0.5,0.5"),
        ({"roi": [0, 0.25, 1, 0.75]}, None, "0,0.25,1,0.75"),
    ],
)
def test_json_images_carry_their_own_tile_and_region(
    element: dict[str, object], tile: str | None, roi: str | None
) -> None:
    """A batch element may be an object with the image in "image" and its own tile and roi, as text for the
    parameters' own parsers."""
    document = {"images": [{"image": base64.b64encode(DATA).decode(), **element}]}
    [image], _ = read_json_images(json.dumps(document).encode(), max_images=4)
    assert (image.data, image.tile, image.roi) == (DATA, tile, roi)


@pytest.mark.parametrize(
    ("element", "words"),
    [
        (7, "images[0] is neither"),
        ({"image": "x", "colour": "red"}, "an image takes tile and roi"),
        ({"image": "x", "tile": True}, "images[0].tile must be a number or a string"),
        ({"image": "x", "roi": {"x": 1}}, "images[0].roi must be a list of four numbers or a string"),
    ],
)
def test_malformed_json_images_are_a_400_naming_them(element: object, words: str) -> None:
    """An element that is neither a string nor an image object, or gives an unknown or mistyped option, is a 400."""
    with pytest.raises(InvalidParameter, match=re.escape(words)):
        read_json_images(json.dumps({"images": [element]}).encode(), max_images=4)


def test_json_batch_over_the_limit() -> None:
    """More images than the limit is a 413."""
    with pytest.raises(PayloadTooLarge):
        read_json_images(b'{"images": ["", "", ""]}', max_images=2)


def multipart(*parts: tuple[str, str | None, bytes], boundary: str = "B0undary") -> tuple[bytes, str]:
    """A multipart body of (name, filename, data) parts, and its Content-Type."""
    chunks = []
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        chunks.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n")
    return b"".join(chunks) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def test_parts_keep_their_bytes_and_filenames() -> None:
    """Every part comes back in order with its bytes as sent (binary included) and its filename or None."""
    body, content_type = multipart(("min_confidence", None, b"0.5"), ("image", None, DATA), ("f", "a.jpg", b"x"))
    parts = list(iter_parts(body, content_type, 10))
    assert [(p.name, p.filename, p.data) for p in parts] == [
        ("min_confidence", None, b"0.5"),
        ("image", None, DATA),
        ("f", "a.jpg", b"x"),
    ]


def test_key_field_is_found_without_keeping_the_picture() -> None:
    """Looking for api_key reads no further than that field and keeps no other part's bytes."""
    body, content_type = multipart(("image", "a.jpg", DATA), ("api_key", None, b"s3cret"), ("later", None, b"x"))
    assert form_field(body, content_type, "api_key", 10) == "s3cret"
    kept = list(iter_parts(body, content_type, 10, keep=lambda name: name == "api_key"))
    assert kept[0].data == b"" and kept[1].data == b"s3cret"


def test_part_count_and_malformed_bodies() -> None:
    """More parts than allowed is a 413 naming MAX_FORM_PARTS; a body without its end or boundary is a 400."""
    body, content_type = multipart(*((f"f{i}", None, b"x") for i in range(4)))
    with pytest.raises(PayloadTooLarge, match="MAX_FORM_PARTS"):
        list(iter_parts(body, content_type, 3))
    with pytest.raises(InvalidParameter, match="malformed multipart"):
        list(iter_parts(body[:40], content_type, 10))
    with pytest.raises(InvalidParameter, match="boundary"):
        list(iter_parts(body, "multipart/form-data", 10))
