"""Reading request bodies: base64 in every common spelling, JSON bodies, multipart parts and the key field."""

from __future__ import annotations

import base64

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
    assert batch and images[0] == DATA and isinstance(images[1], InvalidImage)


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
