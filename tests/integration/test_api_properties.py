"""Property tests over real HTTP: whatever bytes, Content-Type and query string a client sends, the live server
answers with a well-formed JSON answer or error (or an image it was asked for), never a 5xx, and keeps serving.

Requests go out through ``http.client`` so the query string reaches the server byte for byte (requests would
re-quote it). Example counts are bounded and derandomized: CI sends the same requests every run.
"""

from __future__ import annotations

import http.client
import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, quote_plus

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps

from demo_model import random_scene
from harness.processes import HttpServer

DETECTION_KEYS = {"class", "score", "x1", "y1", "x2", "y2"}
PREDICTION_KEYS = {"label", "confidence", "x_min", "y_min", "x_max", "y_max"}
DEEPSTACK = "/v1/vision/detection"
PROPERTY_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)


def encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    """The picture as file bytes in ``fmt``."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


SCENE, _ = random_scene(seed=5, size=(160, 120))
SAMPLES = {"jpeg": encode(SCENE, "JPEG", quality=90), "png": encode(SCENE, "PNG")}


@dataclass(frozen=True)
class Answer:
    """One HTTP exchange's outcome."""

    status: int
    content_type: str
    body: bytes


def send(
    server: HttpServer, method: str, target: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> Answer:
    """Send one request on a fresh connection, exactly as given, and read the whole answer."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        connection.request(method, target, body=body, headers=headers or {})
        response = connection.getresponse()
        return Answer(response.status, response.getheader("Content-Type", ""), response.read())
    finally:
        connection.close()


def assert_well_formed(answer: Answer, path: str = "/classify") -> None:
    """No 5xx; errors are exactly ``{"error": str}``; a 200 is counts, detections, or the image asked for.

    On the DeepStack route errors also carry ``"success": false`` (unless gunicorn answered them) and a 200 is
    ``{"success": true, "predictions": [...]}``.
    """
    assert answer.status < 500, answer
    if path == DEEPSTACK:
        assert_deepstack_answer(answer)
        return
    if answer.status == 200 and answer.content_type in ("image/jpeg", "image/png"):
        with Image.open(io.BytesIO(answer.body)) as picture:
            assert picture.format == answer.content_type.split("/")[1].upper()
            picture.load()
        return
    assert answer.content_type == "application/json", answer
    body = json.loads(answer.body)
    if answer.status != 200:
        assert isinstance(body, dict), answer
        assert list(body) == ["error"], answer
        assert isinstance(body["error"], str), answer
        assert body["error"], answer
        return
    assert_detection_answer(body)


def assert_deepstack_answer(answer: Answer) -> None:
    """DeepStack's shapes: predictions with integer pixel boxes, or an error with ``"success": false``."""
    assert answer.content_type == "application/json", answer
    body = json.loads(answer.body)
    assert isinstance(body, dict), answer
    if answer.status != 200:
        assert set(body) in ({"error"}, {"success", "error"}), answer
        assert body.get("success", False) is False
        assert isinstance(body["error"], str) and body["error"], answer
        return
    assert set(body) == {"success", "predictions"} and body["success"] is True
    for prediction in body["predictions"]:
        assert set(prediction) == PREDICTION_KEYS
        assert isinstance(prediction["label"], str)
        assert isinstance(prediction["confidence"], float) and math.isfinite(prediction["confidence"])
        assert all(type(prediction[key]) is int for key in PREDICTION_KEYS - {"label", "confidence"})


def assert_detection_answer(body: Any) -> None:
    """Counts ``{name: n >= 1}`` or a list of ``{class, score, x1, y1, x2, y2}`` with finite numbers."""
    if isinstance(body, dict):
        for name, count in body.items():
            assert isinstance(name, str)
            assert isinstance(count, int) and not isinstance(count, bool) and count >= 1
        return
    assert isinstance(body, list)
    for detection in body:
        assert set(detection) == DETECTION_KEYS
        assert isinstance(detection["class"], str)
        for key in DETECTION_KEYS - {"class"}:
            value = detection[key]
            assert isinstance(value, int | float) and not isinstance(value, bool)
            assert math.isfinite(value)


def still_serving(server: HttpServer) -> None:
    """The process lives and answers its liveness probe."""
    assert server.alive()
    assert send(server, "GET", "/healthz").status == 200


# ---------------------------------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------------------------------

_sample = st.sampled_from(sorted(SAMPLES.values()))


@st.composite
def _truncated(draw: st.DrawFn) -> bytes:
    data = draw(_sample)
    return data[: draw(st.integers(0, len(data) - 1))]


@st.composite
def _spliced(draw: st.DrawFn) -> bytes:
    # Garbage written over the middle of a real file: headers intact, the compressed data corrupt.
    data = draw(_sample)
    start = draw(st.integers(0, len(data) - 1))
    patch = draw(st.binary(min_size=1, max_size=32))
    return data[:start] + patch + data[start + len(patch) :]


BODIES = st.one_of(
    st.binary(max_size=2048),
    _truncated(),
    st.tuples(_sample, st.binary(min_size=1, max_size=512)).map(lambda pair: pair[0] + pair[1]),
    _spliced(),
    _sample,
)

MEDIA_TYPES = [
    "image/jpeg",
    "image/png",
    "image/*",
    "IMAGE/PNG",
    "image/jpeg; charset=binary",
    "image/webp",
    "application/octet-stream",
    "application/x-www-form-urlencoded",
    "application/x-www-form-urlencoded; charset=utf-8",
    "multipart/form-data",
    "multipart/form-data; boundary=xyz",
    "multipart/form-data; boundary=",
    "text/plain",
    "text/plain; charset=utf-8",
    "application/json",
    "application/xml",
    "image",
    "/",
    ";",
    "*/*",
    "image/png;;;",
    'image/png; name="a;b"',
]
_header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=80).map(str.strip)
CONTENT_TYPES = st.one_of(
    st.none(),
    st.just(""),
    st.sampled_from(MEDIA_TYPES),
    _header_text,
    st.builds(lambda media, params: media + params, st.sampled_from(MEDIA_TYPES), _header_text),
)

QUERY_KEYS = ["threshold", "verbose", "classes", "format", "model"]
QUERY_VALUES = [
    "0", "1", "0.5", "0.75", " 0.3 ", "1.0000001", "-0", "1e-9", "nan", "-inf", "1e400", "0x1", "",
    "true", "false", "YES", "no", "2", "json", "png", "jpeg", "JPG", "image", "gif",
    "red", "Red,Blue", "red,,blue", ",", "unicorn", "detector",
]  # fmt: skip
_ascii_raw = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="#&"), max_size=30)


def _encodings() -> st.SearchStrategy[Callable[[str], str]]:
    """Ways a client may put text in a query string, badly included: raw %, %zz, lone bytes, invalid UTF-8."""
    return st.sampled_from(
        [
            lambda text: quote(text, safe=""),
            quote_plus,
            lambda text: quote(text, safe="") + "%",
            lambda text: quote(text, safe="") + "%zz",
            lambda text: quote(text, safe="") + "%ff%fe",
            lambda text: "%00" + quote(text, safe=""),
            lambda text: quote(text.encode("utf-16-le"), safe=""),
        ]
    )


_value = st.one_of(
    st.sampled_from(QUERY_VALUES),
    st.floats().map(repr),
    st.text(max_size=40),
    # Long values, up to about 6 KB once encoded: past gunicorn's 8190-byte request line they answer 414.
    st.builds(lambda char, n: char * n, st.sampled_from(["a", "0", "%", "é", "💥"]), st.integers(0, 6000)),
)
_pair = st.one_of(
    st.builds(
        lambda key, value, encode_key, encode_value: f"{encode_key(key)}={encode_value(value)}",
        st.one_of(st.sampled_from(QUERY_KEYS), st.text(max_size=20)),
        _value,
        _encodings(),
        _encodings(),
    ),
    _ascii_raw,  # a key without "=", or punctuation sent raw
    st.sampled_from(QUERY_KEYS),
)
QUERIES = st.one_of(
    st.just(""),
    st.lists(_pair, max_size=8).map("&".join),
    # The same key more than once: the first value is the one that counts.
    st.builds(
        lambda key, values: "&".join(f"{key}={quote(value, safe='')}" for value in values),
        st.sampled_from(QUERY_KEYS),
        st.lists(st.sampled_from(QUERY_VALUES), min_size=2, max_size=4),
    ),
    # Long percent-encoded values, from well under to well over gunicorn's request-line limit.
    st.builds(
        lambda key, escaped, n: f"{key}={escaped * n}",
        st.sampled_from([*QUERY_KEYS, "x"]),
        st.sampled_from(["a", "%41", "%C3%A9", "%F0%9F%92%A5", "%"]),
        st.integers(500, 2500),
    ),
    # Valid combinations, so that answers of every kind (counts, list, pictures) come back too.
    st.fixed_dictionaries(
        {},
        optional={
            "threshold": st.sampled_from(["0", "0.2", "0.5", "0.9", "1"]),
            "verbose": st.sampled_from(["true", "false", "1", "no"]),
            "format": st.sampled_from(["json", "png", "jpeg", "image"]),
            "classes": st.sampled_from(["red", "Red,blue", "green,yellow"]),
        },
    ).map(lambda params: "&".join(f"{key}={value}" for key, value in params.items())),
)


# ---------------------------------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/classify", DEEPSTACK])
def test_random_bodies_and_content_types_get_well_formed_answers(embedded_proxy: HttpServer, path: str) -> None:
    """Random, truncated, corrupted or padded image bytes under any Content-Type: a JSON answer or error, no 5xx."""

    @PROPERTY_SETTINGS
    @given(body=BODIES, content_type=CONTENT_TYPES)
    def check(body: bytes, content_type: str | None) -> None:
        headers = {} if content_type is None else {"Content-Type": content_type}
        answer = send(embedded_proxy, "POST", path, body, headers)
        assert_well_formed(answer, path)
        assert embedded_proxy.alive()

    check()
    still_serving(embedded_proxy)


def test_random_query_strings_get_well_formed_answers(embedded_proxy: HttpServer) -> None:
    """Random keys and values, repeats, unicode, broken percent-encoding and over-long values: no 5xx, JSON shape."""

    @PROPERTY_SETTINGS
    @given(query=QUERIES, body=_sample)
    def check(query: str, body: bytes) -> None:
        answer = send(embedded_proxy, "POST", f"/classify?{query}", body, {"Content-Type": "image/jpeg"})
        assert_well_formed(answer)
        assert embedded_proxy.alive()

    check()
    still_serving(embedded_proxy)


def test_valid_images_with_trailing_garbage_are_classified(embedded_proxy: HttpServer) -> None:
    """A whole JPEG or PNG followed by random bytes still decodes: 200 with counts."""

    @PROPERTY_SETTINGS
    @given(image=_sample, tail=st.binary(min_size=1, max_size=1024))
    def check(image: bytes, tail: bytes) -> None:
        answer = send(embedded_proxy, "POST", "/classify", image + tail, {"Content-Type": "application/octet-stream"})
        assert answer.status == 200, answer
        assert_well_formed(answer)

    check()
    still_serving(embedded_proxy)


NEUTRAL_CONTENT_TYPES = [
    None,
    "",
    "application/octet-stream",
    "application/x-www-form-urlencoded",  # curl --data-binary's default
    "image/jpeg",
    "image/png",
    "image/png; charset=binary",
]


@pytest.mark.parametrize("content_type", NEUTRAL_CONTENT_TYPES, ids=lambda c: "none" if c is None else c or "empty")
@pytest.mark.parametrize("path", ["/classify", DEEPSTACK])
def test_raw_image_under_a_neutral_or_image_content_type_is_classified(
    embedded_proxy: HttpServer, path: str, content_type: str | None
) -> None:
    """A raw PNG body is classified (200) whatever neutral or image Content-Type comes with it, on both routes."""
    headers = {} if content_type is None else {"Content-Type": content_type}
    answer = send(embedded_proxy, "POST", path, SAMPLES["png"], headers)
    assert answer.status == 200, answer
    assert_well_formed(answer, path)


def test_random_accept_headers_get_json_or_the_image(embedded_proxy: HttpServer) -> None:
    """Any Accept header gets a well-formed answer: JSON, or the annotated picture when an image type is preferred."""

    accept = st.one_of(
        st.sampled_from(["image/png", "image/jpeg", "image/*", "*/*", "application/json;q=0.1, image/png", "text/x"]),
        # Printable ASCII: bytes gunicorn refuses in a header (DEL, controls) are the other tests' business.
        st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80).map(str.strip),
    )

    @PROPERTY_SETTINGS
    @given(accept=accept)
    def check(accept: str) -> None:
        answer = send(embedded_proxy, "POST", "/classify", SAMPLES["png"], {"Accept": accept})
        assert answer.status == 200, answer
        assert_well_formed(answer)

    check()
    still_serving(embedded_proxy)


# ---------------------------------------------------------------------------------------------------------------
# Odd but valid images
# ---------------------------------------------------------------------------------------------------------------


def _sixteen_bit_gray() -> bytes:
    wide = (np.asarray(SCENE.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    image = Image.fromarray(wide)
    assert image.mode.startswith("I;16")
    return encode(image, "PNG")


def _rgba() -> bytes:
    rgba = SCENE.convert("RGBA")
    alpha = Image.linear_gradient("L").resize(SCENE.size)
    rgba.putalpha(alpha)
    return encode(rgba, "PNG")


def _palette_with_transparency() -> bytes:
    palette = SCENE.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return encode(palette, "PNG", transparency=0)


def _animated_gif() -> bytes:
    frames = [random_scene(seed=seed, size=(160, 120))[0].convert("P") for seed in (5, 6, 7)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def _exif_rotated() -> bytes:
    # Stored on its side with orientation 6: shown upright, it is SCENE again.
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(SCENE.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=95, exif=exif)


ODD_IMAGES: dict[str, Callable[[], bytes]] = {
    "1x1": lambda: encode(Image.new("RGB", (1, 1), (200, 30, 30)), "PNG"),
    "1x1-jpeg": lambda: encode(Image.new("RGB", (1, 1), (200, 30, 30)), "JPEG"),
    "16-bit-gray-png": _sixteen_bit_gray,
    "cmyk-jpeg": lambda: encode(SCENE.convert("CMYK"), "JPEG", quality=90),
    "gray-jpeg": lambda: encode(SCENE.convert("L"), "JPEG", quality=90),
    "1-bit-png": lambda: encode(SCENE.convert("1"), "PNG"),
    "palette-png": lambda: encode(SCENE.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"),
    "palette-transparent-png": _palette_with_transparency,
    "rgba-png": _rgba,
    "gray-alpha-png": lambda: encode(SCENE.convert("LA"), "PNG"),
    "animated-gif": _animated_gif,
    "exif-rotated-jpeg": _exif_rotated,
    "webp": lambda: encode(SCENE, "WEBP", quality=90),
    "bmp": lambda: encode(SCENE, "BMP"),
    "tiff": lambda: encode(SCENE, "TIFF"),
    "float-tiff": lambda: encode(SCENE.convert("F"), "TIFF"),
    "very-wide": lambda: encode(SCENE.resize((2000, 3)), "PNG"),
}


@pytest.mark.parametrize("make", list(ODD_IMAGES.values()), ids=list(ODD_IMAGES))
def test_odd_but_valid_images_are_classified(embedded_proxy: HttpServer, make: Callable[[], bytes]) -> None:
    """Unusual modes and formats, posted as application/octet-stream, answer 200 with well-formed counts and list."""
    body = make()
    for query in ("", "?verbose=true&threshold=0.1"):
        answer = send(embedded_proxy, "POST", f"/classify{query}", body, {"Content-Type": "application/octet-stream"})
        assert answer.status == 200, answer
        assert_well_formed(answer)


def test_exif_orientation_is_applied(embedded_proxy: HttpServer) -> None:
    """A JPEG stored on its side with EXIF orientation 6 answers as the upright picture does."""
    assert ImageOps.exif_transpose(Image.open(io.BytesIO(_exif_rotated()))).size == SCENE.size
    upright = encode(SCENE, "JPEG", quality=95)
    answers = [
        json.loads(send(embedded_proxy, "POST", "/classify?threshold=0.5", body).body)
        for body in (upright, _exif_rotated())
    ]
    assert answers[0]
    assert answers[0] == answers[1]
