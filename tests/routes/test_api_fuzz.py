"""Generated requests against the in-process app: whatever a client sends, the answer is one the OpenAPI document
allows (a documented status, content type, body and headers), errors are JSON with ``error``, and nothing is a 5xx.

Two sources of requests: schemathesis, from proxy/openapi.json itself (its strategies driven directly, since its
pytest plugin does not run under pytest 9), and Hypothesis strategies for what a schema cannot express: raw bytes
under any Content-Type, hostile query strings, broken JSON and multipart bodies, odd headers. Answers are checked
with schemathesis' conformance checks. No sockets: schemathesis calls the WSGI app, the others go through
``app.test_client()``. Example counts are bounded and derandomized: every run sends the same requests.
"""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus, unquote_to_bytes

import numpy as np
import pytest
import schemathesis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from werkzeug.test import TestResponse

import proxy
from odapi.contract import InputType
from proxy.app import create_app
from proxy.labels import LabelMap
from proxy.services import Services
from proxy.settings import Settings
from tests.support.fake_backend import FakeBackend, detections

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
PROPERTY_SETTINGS = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,  # the same requests on every run: CI never meets a new example by chance
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)
SCHEMA_EXAMPLES = 12
API_KEY = "fuzz-key"
MODEL = "detector"
CLASSIFY = "/classify"
DETECTION = "/v1/vision/detection"
CUSTOM = f"/v1/vision/custom/{MODEL}"
IMAGE_ROUTES = [CLASSIFY, DETECTION, CUSTOM]
DOCUMENT: dict[str, Any] = json.loads(Path(proxy.__file__).with_name("openapi.json").read_text(encoding="utf-8"))
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
ANSWER = detections((1, 0.9, (0.1, 0.1, 0.5, 0.5)), (2, 0.8, (0.2, 0.3, 0.9, 0.7)), (1, 0.3, (0.0, 0.0, 1.0, 1.0)))
LABELS = LabelMap({1: "Dog", 2: "Person"})


def encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    """The picture as file bytes in ``fmt``."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


SCENE = Image.merge(
    "RGB",
    [
        Image.linear_gradient("L").resize((160, 120)),
        Image.radial_gradient("L").resize((160, 120)),
        Image.linear_gradient("L").rotate(90).resize((160, 120)),
    ],
)
SAMPLES = {"jpeg": encode(SCENE, "JPEG", quality=90), "png": encode(SCENE, "PNG")}
# Other formats Pillow reads, for the corrupted and truncated bodies: each has a decoder of its own to trip.
OTHER_FORMATS = {
    "gif": encode(SCENE.convert("P"), "GIF"),
    "webp": encode(SCENE, "WEBP", quality=80),
    "tiff": encode(SCENE, "TIFF", compression="tiff_lzw"),
    "bmp": encode(SCENE, "BMP"),
}


def build_app(backend: FakeBackend | None = None, **config: Any) -> Flask:
    """The real app over one fake model, ``detector``."""
    settings_ = Settings(**config)
    backend = backend or FakeBackend(ANSWER, LABELS)
    return create_app(settings_, services=Services.build(settings_, {MODEL: backend}))


@pytest.fixture(scope="module")
def app() -> Iterator[Flask]:
    """One app for the module's requests."""
    built = build_app()
    yield built
    Services.of(built).close()


@pytest.fixture(scope="module")
def keyed_app() -> Iterator[Flask]:
    """An app with API_KEY set."""
    built = build_app(api_key=API_KEY)
    yield built
    Services.of(built).close()


@pytest.fixture(scope="module")
def shared_client(app: Flask) -> FlaskClient:
    """A test client of the module's app."""
    return app.test_client()


@pytest.fixture(scope="module")
def described(app: Flask) -> Any:
    """The description as the app serves it; schemathesis' requests go to the app in-process."""
    return schemathesis.openapi.from_wsgi("/openapi.json", app)


def template(url: str) -> str:
    """The documented path of a concrete URL path."""
    if re.fullmatch(r"/v1/vision/custom/[^/]+", url) and url != "/v1/vision/custom/list":
        return "/v1/vision/custom/{name}"
    return "/static/{filename}" if re.fullmatch(r"/static/.+", url) else url


def assert_documented(described: Any, method: str, url: str, response: TestResponse) -> None:
    """The answer is one the document allows for ``method url``; never a 5xx; an error is JSON with ``error``."""
    assert response.status_code < 500, response.get_data()[:300]
    operation = described[template(url)][method.upper()]
    operation.Case().validate_response(response, checks=CHECKS)
    if response.status_code >= 400:
        body = response.get_json()
        assert isinstance(body, dict) and isinstance(body["error"], str) and body["error"], body
        if url.startswith("/v1/vision/"):
            assert body["success"] is False and body["code"] == response.status_code and body["predictions"] == []
    assert REQUEST_ID.match(response.headers["X-Request-ID"])


# ---------------------------------------------------------------------------------------------------------------
# Requests generated from the document
# ---------------------------------------------------------------------------------------------------------------

# Raw image bodies: real pictures or random bytes, instead of schemathesis' tiny samples, so that some answers
# hold detections and their schemas are really checked. The registration is process-wide.
for _media_type, _fmt in [("image/jpeg", "jpeg"), ("image/png", "png"), ("application/octet-stream", "png")]:
    schemathesis.openapi.media_type(_media_type, st.just(SAMPLES[_fmt]) | st.binary(max_size=256))
# Negative requests need something to violate: the operations without a body have nothing but a free-form header.
SCHEMA_CASES = [
    pytest.param(method.upper(), path, mode, id=f"{method.upper()} {path} {mode.value}")
    for path, item in DOCUMENT["paths"].items()
    for method, operation in item.items()
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode is GenerationMode.POSITIVE or "requestBody" in operation
]


@pytest.mark.parametrize(("method", "path", "mode"), SCHEMA_CASES)
def test_generated_requests_get_documented_answers(
    described: Any, method: str, path: str, mode: GenerationMode
) -> None:
    """Requests schemathesis builds from the document, valid ones and invalid ones, get answers it allows."""
    operation = described[path][method]

    @settings(PROPERTY_SETTINGS, max_examples=SCHEMA_EXAMPLES)
    @given(case=operation.as_strategy(generation_mode=mode))
    def conforms(case: Any) -> None:
        case.call_and_validate(checks=CHECKS)

    conforms()


# ---------------------------------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------------------------------

_sample = st.sampled_from(sorted(SAMPLES.values()))
_any_format = st.sampled_from(sorted([*SAMPLES.values(), *OTHER_FORMATS.values()]))


@st.composite
def _truncated(draw: st.DrawFn) -> bytes:
    data = draw(_any_format)
    return data[: draw(st.integers(0, len(data) - 1))]


@st.composite
def _spliced(draw: st.DrawFn) -> bytes:
    # Garbage written over the middle of a real file: headers intact, the compressed data corrupt.
    data = draw(_any_format)
    start = draw(st.integers(0, len(data) - 1))
    patch = draw(st.binary(min_size=1, max_size=32))
    return data[:start] + patch + data[start + len(patch) :]


BODIES = st.one_of(
    st.binary(max_size=2048),
    _truncated(),
    st.tuples(_sample, st.binary(min_size=1, max_size=512)).map(lambda pair: pair[0] + pair[1]),
    _spliced(),
    _any_format,
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
    "multipart/mixed; boundary=xyz",
    "text/plain",
    "text/plain; charset=utf-8",
    "application/json",
    "application/json; charset=utf-8",
    "text/json",
    "application/xml",
    "image",
    "/",
    ";",
    "*/*",
    "image/png;;;",
    'image/png; name="a;b"',
]
_header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80).map(str.strip)
CONTENT_TYPES = st.one_of(
    st.none(),
    st.just(""),
    st.sampled_from(MEDIA_TYPES),
    _header_text,
    st.builds(lambda media, params: media + params, st.sampled_from(MEDIA_TYPES), _header_text),
)

QUERY_KEYS = [
    "threshold",
    "verbose",
    "classes",
    "format",
    "model",
    "iou_threshold",
    "max_detections",
    "min_confidence",
    "api_key",
]
QUERY_VALUES = [
    "0", "1", "0.5", "0.75", " 0.3 ", "1.0000001", "-0", "-1", "1e-9", "nan", "-inf", "1e400", "0x1", "", "3",
    "true", "false", "YES", "no", "2", "json", "png", "jpeg", "JPG", "image", "gif",
    "dog", "Dog,Person", "dog,,person", ",", "Class 7", "class 0", "unicorn", "detector", "9" * 5000,
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
    st.integers().map(str),
    st.text(max_size=40),
    st.builds(lambda char, n: char * n, st.sampled_from(["a", "0", "%", "é", "💥", ","]), st.integers(0, 2000)),
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
    # Valid combinations, so that answers of every kind (counts, list, pictures, merged, capped) come back too.
    st.fixed_dictionaries(
        {},
        optional={
            "threshold": st.sampled_from(["0", "0.2", "0.5", "0.9", "1"]),
            "verbose": st.sampled_from(["true", "false", "1", "no"]),
            "format": st.sampled_from(["json", "png", "jpeg", "image"]),
            "classes": st.sampled_from(["dog", "Dog,person", "Class 7"]),
            "iou_threshold": st.sampled_from(["0", "0.3", "1"]),
            "max_detections": st.sampled_from(["1", "2", "100"]),
            "min_confidence": st.sampled_from(["", "0", "0.5", "0.95"]),
        },
    ).map(lambda params: "&".join(f"{key}={quote(value)}" for key, value in params.items())),
)


def _b64_variants(data: bytes) -> st.SearchStrategy[str]:
    """``data`` in base64 as clients write it: standard or URL-safe, padded or not, wrapped, behind a data: URL."""
    standard = base64.b64encode(data).decode()
    return st.sampled_from(
        [
            standard,
            standard.rstrip("="),
            base64.urlsafe_b64encode(data).decode(),
            base64.urlsafe_b64encode(data).decode().rstrip("="),
            "\n".join(standard[i : i + 76] for i in range(0, len(standard), 76)),
            f"data:image/png;base64,{standard}",
            f"  data:image/jpeg;charset=utf-8;base64,{standard}  ",
        ]
    )


_base64_image = st.one_of(
    _sample.flatmap(_b64_variants),
    BODIES.map(lambda data: base64.b64encode(data).decode()),
    st.text(max_size=60),
    st.text(alphabet="ABCDEFGHabcdefgh0123456789+/=-_", max_size=60),
    st.just(""),
)
_json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
JSON_DOCUMENTS = st.one_of(
    st.fixed_dictionaries({"image": _base64_image}),
    st.fixed_dictionaries({"images": st.lists(_base64_image, max_size=18)}),
    st.fixed_dictionaries({"images": st.lists(_base64_image | _json_value, min_size=1, max_size=4)}),
    st.fixed_dictionaries(
        {"image": _base64_image},
        optional={
            "images": st.lists(_base64_image, max_size=2),
            "url": st.just("http://169.254.169.254/latest/meta-data/"),
            "urls": st.lists(st.text(max_size=10), max_size=2),
            "other": _json_value,
        },
    ),
    _json_value,
)
JSON_BODIES = st.one_of(
    JSON_DOCUMENTS.map(lambda document: json.dumps(document).encode()),
    # Broken JSON: cut short, not UTF-8, or with garbage after it.
    st.tuples(JSON_DOCUMENTS.map(json.dumps), st.integers(0, 200)).map(lambda pair: pair[0][: pair[1]].encode()),
    JSON_DOCUMENTS.map(lambda document: json.dumps(document).encode("utf-16")),
    st.tuples(JSON_DOCUMENTS.map(json.dumps), st.binary(min_size=1, max_size=16)).map(
        lambda pair: pair[0].encode() + pair[1]
    ),
    # Nested deep enough to be odd, not deep enough to reach Python's recursion limit (test_deep_json_... does).
    st.integers(1, 200).map(lambda depth: b'{"image": ' + b"[" * depth + b"]" * depth + b"}"),
)

_BOUNDARY = "fuzz-7f3a"
_part_names = st.one_of(
    st.sampled_from(["image", "upload", "file", "min_confidence", "max_detections", "iou_threshold", "api_key", ""]),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters='"\\'), max_size=12),
)
_part_data = st.one_of(
    BODIES,
    st.sampled_from([b"0.5", b"abc", b"1.5", b"", b"2", b"0", b"-3", b"nan", API_KEY.encode(), b"\xff\xfe"]),
)


@st.composite
def multipart_bodies(draw: st.DrawFn) -> tuple[bytes, str]:
    """A multipart body and its Content-Type: random parts (files or fields, image or not), sometimes broken."""
    chunks = []
    for _ in range(draw(st.integers(0, 6))):
        name = draw(_part_names)
        filename = draw(st.none() | st.sampled_from(["a.png", "photo.jpg", "", "x"]))
        content_type = draw(st.none() | st.sampled_from(["image/png", "image/jpeg", "text/plain", "x/y"]))
        head = f'Content-Disposition: form-data; name="{name}"'
        head += f'; filename="{filename}"' if filename is not None else ""
        head += f"\r\nContent-Type: {content_type}" if content_type is not None else ""
        chunks.append(f"--{_BOUNDARY}\r\n{head}\r\n\r\n".encode() + draw(_part_data) + b"\r\n")
    body = b"".join(chunks) + f"--{_BOUNDARY}--\r\n".encode()
    breakage = draw(st.sampled_from(["none", "none", "none", "cut", "no end", "other boundary", "no boundary"]))
    header = f"multipart/form-data; boundary={_BOUNDARY}"
    if breakage == "cut":
        body = body[: draw(st.integers(0, len(body)))]
    elif breakage == "no end":
        body = body.removesuffix(f"--{_BOUNDARY}--\r\n".encode())
    elif breakage == "other boundary":
        header = 'multipart/form-data; boundary="not-the-one"'
    elif breakage == "no boundary":
        header = "multipart/form-data"
    return body, header


# ---------------------------------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", IMAGE_ROUTES)
def test_random_bodies_and_content_types_get_documented_answers(
    described: Any, shared_client: FlaskClient, url: str
) -> None:
    """Random, truncated, corrupted or padded image bytes under any Content-Type get a documented answer."""

    @PROPERTY_SETTINGS
    @given(body=BODIES, content_type=CONTENT_TYPES)
    def check(body: bytes, content_type: str | None) -> None:
        headers = {} if content_type is None else {"Content-Type": content_type}
        assert_documented(described, "post", url, shared_client.post(url, data=body, headers=headers))

    check()


@pytest.mark.parametrize("url", [CLASSIFY, DETECTION])
def test_random_query_strings_get_documented_answers(described: Any, shared_client: FlaskClient, url: str) -> None:
    """Random keys and values, repeats, unicode, broken percent-encoding and long values get a documented answer."""

    @PROPERTY_SETTINGS
    @given(query=QUERIES, body=_sample)
    def check(query: str, body: bytes) -> None:
        response = shared_client.post(f"{url}?{query}", data=body, headers={"Content-Type": "image/jpeg"})
        assert_documented(described, "post", url, response)

    check()


@pytest.mark.parametrize("url", [CLASSIFY, DETECTION])
def test_random_json_bodies_get_documented_answers(described: Any, shared_client: FlaskClient, url: str) -> None:
    """JSON bodies of every shape (images in every base64 dialect, batches, wrong types, broken JSON) get a
    documented answer; on /classify a well-formed batch gets one element per image."""

    @PROPERTY_SETTINGS
    @given(body=JSON_BODIES, query=st.sampled_from(["", "?verbose=true", "?format=png", "?threshold=0"]))
    def check(body: bytes, query: str) -> None:
        response = shared_client.post(url + query, data=body, headers={"Content-Type": "application/json"})
        assert_documented(described, "post", url, response)
        document = _loads(body)
        batch = isinstance(document, dict) and "image" not in document and isinstance(document.get("images"), list)
        if response.status_code == 200 and url == CLASSIFY and batch:
            assert len(response.get_json()) == len(document["images"])

    check()


def _loads(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


@pytest.mark.parametrize("url", IMAGE_ROUTES)
def test_random_multipart_bodies_get_documented_answers(described: Any, shared_client: FlaskClient, url: str) -> None:
    """Multipart bodies with any parts (files, fields, DeepStack's options, none), cut short or with a wrong
    boundary, get a documented answer."""

    @PROPERTY_SETTINGS
    @given(multipart=multipart_bodies(), query=st.sampled_from(["", "?verbose=1", "?min_confidence=0.1"]))
    def check(multipart: tuple[bytes, str], query: str) -> None:
        body, content_type = multipart
        response = shared_client.post(url + query, data=body, headers={"Content-Type": content_type})
        assert_documented(described, "post", url, response)

    check()


def test_random_accept_headers_get_json_or_the_picture(described: Any, shared_client: FlaskClient) -> None:
    """Any Accept header gets a 200: JSON, or the annotated picture when it prefers image/jpeg or image/png."""
    accept = st.one_of(
        st.sampled_from(["image/png", "image/jpeg", "image/*", "*/*", "application/json;q=0.1, image/png", "text/x"]),
        st.sampled_from(["image/png;q=abc", "image/png;q=2", "image/png;q=-1", "image/jpeg;level=1;q=0.9", ",,,"]),
        _header_text,
    )

    @PROPERTY_SETTINGS
    @given(accept=accept)
    def check(accept: str) -> None:
        response = shared_client.post(CLASSIFY, data=SAMPLES["png"], headers={"Accept": accept})
        assert response.status_code == 200, response.get_data()[:200]
        assert_documented(described, "post", CLASSIFY, response)

    check()


def test_random_api_keys_get_documented_answers(described: Any, keyed_app: Flask) -> None:
    """With API_KEY set, any key in either header or in DeepStack's form field gets 401 unless it is the key, and a
    documented answer either way."""
    keyed = keyed_app.test_client()
    key = st.one_of(st.just(API_KEY), st.just(API_KEY + " "), st.just(API_KEY.upper()), _header_text)

    @PROPERTY_SETTINGS
    @given(
        url=st.sampled_from([CLASSIFY, DETECTION, "/v1/vision/custom/list", "/v1/models", "/healthz"]),
        key=key,
        carrier=st.sampled_from(["bearer", "x-api-key", "form", "lowercase bearer", "none"]),
    )
    def check(url: str, key: str, carrier: str) -> None:
        headers = {
            "bearer": {"Authorization": f"Bearer {key}"},
            "lowercase bearer": {"Authorization": f"bearer {key}"},
            "x-api-key": {"X-API-Key": key},
        }.get(carrier, {})
        fields = f'--k\r\nContent-Disposition: form-data; name="api_key"\r\n\r\n{key}\r\n' if carrier == "form" else ""
        body = (
            f'{fields}--k\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n'.encode()
            + SAMPLES["png"]
            + b"\r\n--k--\r\n"
        )
        method = "get" if url in ("/v1/models", "/healthz") else "post"
        content_type = "multipart/form-data; boundary=k"
        response = keyed.open(url, method=method.upper(), data=body, headers={**headers, "Content-Type": content_type})
        assert_documented(described, method, url, response)
        # Only a Bearer value is trimmed; DeepStack's form field counts on the /v1/vision/ routes only.
        offered = key.strip() if carrier.endswith("bearer") else key
        key_counts = carrier != "none" and (carrier != "form" or url.startswith("/v1/vision/"))
        expected_ok = url == "/healthz" or (key_counts and offered == API_KEY)
        assert (response.status_code == 401) is not expected_ok, (carrier, key, response.status_code)
        if response.status_code == 401:
            assert response.headers["WWW-Authenticate"].startswith("Bearer ")

    check()


def test_random_request_ids_are_echoed_or_replaced(described: Any, shared_client: FlaskClient) -> None:
    """A sane X-Request-ID comes back as sent (and as ``requestId``), any other is replaced by a new sane one."""

    # Header values as they reach the app: latin-1 text without surrounding whitespace or control characters.
    latin1 = st.text(
        st.characters(min_codepoint=0x21, max_codepoint=0xFF, exclude_categories=["Cc", "Zs"]), max_size=200
    )

    @PROPERTY_SETTINGS
    @given(offered=st.one_of(st.from_regex(REQUEST_ID, fullmatch=True), _header_text, latin1))
    def check(offered: str) -> None:
        response = shared_client.post(DETECTION, data=SAMPLES["png"], headers={"X-Request-ID": offered})
        assert_documented(described, "post", DETECTION, response)
        answered = response.headers["X-Request-ID"]
        assert (answered == offered) is bool(REQUEST_ID.match(offered))
        assert response.get_json()["requestId"] == answered

    check()


HTTP_METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "PROPFIND"]


def test_random_paths_and_methods_get_json_answers(described: Any, shared_client: FlaskClient) -> None:
    """Any method on any path gets a documented answer where the document lists the operation, else a JSON 404 (no
    such path) or 405 (with Allow), never a 5xx."""
    documented = [path.replace("{name}", MODEL).replace("{filename}", "page.js") for path in DOCUMENT["paths"]]
    odd = ["/static/../openapi.json", "/static/%2e%2e/x", "//classify", "/v1/vision/", "/v1//models", "/classify/"]
    path = st.one_of(
        st.sampled_from(documented),
        st.sampled_from(odd),
        st.builds(
            lambda base, tail: base + quote(tail, safe="/?&=%"), st.sampled_from(documented), st.text(max_size=12)
        ),
        st.text(max_size=30).map(lambda text: "/" + quote(text, safe="/")),
    )

    @PROPERTY_SETTINGS
    @given(method=st.sampled_from(HTTP_METHODS), target=path)
    def check(method: str, target: str) -> None:
        # As the HTTP front hands it to the app: the path percent-decoded to latin-1, the query string as sent.
        raw_path, _, query = target.partition("?")
        route = unquote_to_bytes(raw_path).decode("latin-1")
        environ = {"PATH_INFO": route, "QUERY_STRING": query}
        response = shared_client.open("/", method=method, data=b"", environ_overrides=environ)
        assert response.status_code < 500, (method, target, response.get_data()[:200])
        # Leading slashes collapse (werkzeug's matching) and one trailing slash is ignored (strict_slashes off).
        matched = "/" + route.lstrip("/")
        documented_route = template(matched[:-1] if len(matched) > 1 and matched.endswith("/") else matched)
        item = DOCUMENT["paths"].get(documented_route)
        if item is not None and method.lower() in item:
            assert_documented(described, method, documented_route, response)
        elif method not in ("HEAD", "OPTIONS"):
            assert response.status_code == (405 if item is not None else 404), (method, target)
            assert isinstance(response.get_json()["error"], str)
            if response.status_code == 405:
                assert response.headers["Allow"]

    check()


def test_valid_images_with_trailing_garbage_are_classified(described: Any, shared_client: FlaskClient) -> None:
    """A whole JPEG or PNG followed by random bytes still decodes: 200 with counts."""

    @PROPERTY_SETTINGS
    @given(image=_sample, tail=st.binary(min_size=1, max_size=1024))
    def check(image: bytes, tail: bytes) -> None:
        response = shared_client.post(CLASSIFY, data=image + tail, headers={"Content-Type": "application/octet-stream"})
        assert response.status_code == 200, response.get_data()[:200]
        assert_documented(described, "post", CLASSIFY, response)

    check()


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
@pytest.mark.parametrize("url", [CLASSIFY, DETECTION])
def test_raw_image_under_a_neutral_or_image_content_type_is_classified(
    described: Any, shared_client: FlaskClient, url: str, content_type: str | None
) -> None:
    """A raw PNG body is classified (200) under a neutral or image Content-Type (on the DeepStack route, any but
    application/x-www-form-urlencoded, which is a form without an image there)."""
    headers = {} if content_type is None else {"Content-Type": content_type}
    response = shared_client.post(url, data=SAMPLES["png"], headers=headers)
    form = (content_type or "").startswith("application/x-www-form-urlencoded")
    assert response.status_code == (400 if url == DETECTION and form else 200), response.get_data()[:200]
    assert_documented(described, "post", url, response)


# ---------------------------------------------------------------------------------------------------------------
# Odd but valid images
# ---------------------------------------------------------------------------------------------------------------


def _sixteen_bit_gray() -> bytes:
    wide = Image.fromarray(np.asarray(SCENE.convert("L"), dtype=np.uint16) * 257)
    assert wide.mode.startswith("I;16")
    return encode(wide, "PNG")


def _rgba() -> bytes:
    rgba = SCENE.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(SCENE.size))
    return encode(rgba, "PNG")


def _animated_gif() -> bytes:
    frames = [SCENE.rotate(angle).convert("P") for angle in (0, 90, 180)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def _exif_rotated() -> bytes:
    # Stored on its side with orientation 6: shown upright, it is SCENE again (160x120).
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
    "palette-transparent-png": lambda: encode(
        SCENE.convert("P", palette=Image.Palette.ADAPTIVE), "PNG", transparency=0
    ),
    "rgba-png": _rgba,
    "gray-alpha-png": lambda: encode(SCENE.convert("LA"), "PNG"),
    "animated-gif": _animated_gif,
    "exif-rotated-jpeg": _exif_rotated,
    "webp": lambda: encode(SCENE, "WEBP", quality=90),
    "bmp": lambda: encode(SCENE, "BMP"),
    "tiff": lambda: encode(SCENE, "TIFF"),
    "float-tiff": lambda: encode(SCENE.convert("F"), "TIFF"),
    "wide": lambda: encode(SCENE.resize((1500, 31)), "PNG"),
    "large": lambda: encode(SCENE.resize((2400, 1800)), "JPEG", quality=80),
}


@pytest.mark.parametrize("input_type", [InputType.IMAGE_TENSOR, InputType.ENCODED_IMAGE_STRING_TENSOR])
@pytest.mark.parametrize("make", list(ODD_IMAGES.values()), ids=list(ODD_IMAGES))
def test_odd_but_valid_images_are_classified(
    described: Any, make_app: Callable[..., Flask], make: Callable[[], bytes], input_type: InputType
) -> None:
    """Unusual modes and formats, sent raw as application/octet-stream or as JSON base64, reach the model (as
    pixels or as bytes its decoder reads) and answer 200 with counts, the list and DeepStack's answer."""
    backend = FakeBackend(ANSWER, LABELS, input_type=input_type)
    client = make_app(detector=backend).test_client()
    body = make()
    requests = [
        (CLASSIFY, {"data": body, "content_type": "application/octet-stream"}),
        (f"{CLASSIFY}?verbose=true&threshold=0.1", {"json": {"image": base64.b64encode(body).decode()}}),
        (DETECTION, {"data": body}),
    ]
    for url, kwargs in requests:
        response = client.post(url, **kwargs)
        assert response.status_code == 200, (url, response.get_data()[:200])
        assert_documented(described, "post", url.partition("?")[0], response)
    assert len(backend.seen) == len(requests)


def test_exif_orientation_is_applied(described: Any, make_app: Callable[..., Flask]) -> None:
    """A JPEG stored on its side with EXIF orientation 6 reaches the model upright, and DeepStack's pixel boxes are
    those of the upright picture."""
    backend = FakeBackend(ANSWER, LABELS)
    response = make_app(detector=backend).test_client().post(DETECTION, data=_exif_rotated())
    assert_documented(described, "post", DETECTION, response)
    assert backend.seen[0].shape == (1, 120, 160, 3)
    first = response.get_json()["predictions"][0]
    box = {key: first[key] for key in ("x_min", "y_min", "x_max", "y_max")}
    assert box == {"x_min": 16, "y_min": 12, "x_max": 80, "y_max": 60}  # (0.1, 0.1, 0.5, 0.5) of 160x120


# ---------------------------------------------------------------------------------------------------------------
# What generated requests found (kept as plain requests)
# ---------------------------------------------------------------------------------------------------------------


def test_deeply_nested_json_is_a_400(described: Any, shared_client: FlaskClient) -> None:
    """JSON nested deeper than the parser's recursion limit is a malformed body: 400, not 500."""
    response = shared_client.post(CLASSIFY, data=b"[" * 100_000, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.get_data()[:200]
    assert_documented(described, "post", CLASSIFY, response)


@pytest.mark.parametrize("url", [CLASSIFY, DETECTION])
def test_multipart_boundary_outside_latin1_is_a_400(described: Any, shared_client: FlaskClient, url: str) -> None:
    """A multipart boundary that is not latin-1 (RFC 2231's ``boundary*=UTF-8''...``) is a malformed body: 400."""
    content_type = "multipart/form-data; boundary*=UTF-8''%E2%82%AC"
    response = shared_client.post(url, data=b"--\xe2\x82\xac--\r\n", headers={"Content-Type": content_type})
    assert response.status_code == 400, response.get_data()[:200]
    assert_documented(described, "post", url, response)


@pytest.mark.parametrize("url", [CLASSIFY, DETECTION])
def test_image_a_decoder_cannot_handle_is_a_400(described: Any, shared_client: FlaskClient, url: str) -> None:
    """Bytes a Pillow plugin claims but cannot decode (a DDS header with unknown pixel-format flags) are a 400."""
    buffer = io.BytesIO()
    Image.new("RGBA", (8, 8)).save(buffer, format="DDS")
    header = bytearray(buffer.getvalue()[:128])
    header[80:84] = bytes(4)  # the pixel format's flags
    response = shared_client.post(url, data=bytes(header))
    assert response.status_code == 400, response.get_data()[:200]
    assert_documented(described, "post", url, response)
