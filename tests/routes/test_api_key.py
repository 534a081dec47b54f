"""The one API key rule (``proxy.auth``), driven through both places that ask it: the HTTP front, from the headers
before the body arrives, and the app once the body is there.

Every row is a route family and a way of offering the key (or not), with the status it must get. Each row runs
through Flask's test client (the app's check alone) and through the front in process (the front's check, then the
app's), with and without ``Expect: 100-continue``; a refusal the headers alone decide must come from the front before
``100 Continue``, and one only the DeepStack form field can decide must wait for the body.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask
from werkzeug.datastructures import FileStorage

from proxy.app import front_app
from proxy.front.connection import Connection
from proxy.front.server import FrontServer
from proxy.settings import Settings
from tests.routes.conftest import jpeg
from tests.support.transport import MemoryTransport

KEY = "the-key"
PICTURE = jpeg()
BOUNDARY = "----key-test"


@dataclass(frozen=True)
class Route:
    """A route family: a method, a path and how its body is sent."""

    method: str
    path: str
    body: str  # "none", "raw" (the picture as the body) or "form" (multipart with the picture)


ROUTES = {
    "classify raw": Route("POST", "/classify", "raw"),
    "classify form": Route("POST", "/classify", "form"),
    "vision detection": Route("POST", "/v1/vision/detection", "form"),
    "vision detection raw": Route("POST", "/v1/vision/detection", "raw"),
    "vision custom": Route("POST", "/v1/vision/custom/detector", "form"),
    "vision list": Route("POST", "/v1/vision/custom/list", "form"),
    "models": Route("GET", "/v1/models", "none"),
    "metrics": Route("GET", "/metrics", "none"),
    "healthz": Route("GET", "/healthz", "none"),
    "readyz": Route("GET", "/readyz", "none"),
    "page": Route("GET", "/", "none"),
    "openapi": Route("GET", "/openapi.json", "none"),
    "ping": Route("GET", "/v1/server/status/ping", "none"),
    "updateavailable": Route("GET", "/v1/status/updateavailable", "none"),
    "unknown path": Route("GET", "/nowhere", "none"),
    "options": Route("OPTIONS", "/classify", "none"),
}

# How the key is offered: headers, and the DeepStack form field (sent only where the body is a form).
OFFERS: dict[str, tuple[dict[str, str], str | None]] = {
    "nothing": ({}, None),
    "bearer": ({"Authorization": f"Bearer {KEY}"}, None),
    "bearer, any case": ({"Authorization": f"bEaReR {KEY}"}, None),
    "bearer, wrong": ({"Authorization": "Bearer nope"}, None),
    "x-api-key": ({"X-API-Key": KEY}, None),
    "x-api-key, wrong": ({"X-API-Key": KEY[:-1]}, None),
    "form field": ({}, KEY),
    "form field, wrong": ({}, "nope"),
    "form field, empty": ({}, ""),
    "wrong header, right form field": ({"X-API-Key": "nope"}, KEY),
}

OPEN = dict.fromkeys(OFFERS, 200)
GUARDED = {**dict.fromkeys(OFFERS, 401), "bearer": 200, "bearer, any case": 200, "x-api-key": 200}
FORM_TOO = {**GUARDED, "form field": 200}  # DeepStack's routes also read the form field, when the body is a form
EXPECTED: dict[str, dict[str, int]] = {
    "classify raw": GUARDED,
    "classify form": GUARDED,  # /classify takes the key from the headers only
    "vision detection": FORM_TOO,
    "vision detection raw": GUARDED,  # no form, no form field
    "vision custom": FORM_TOO,
    "vision list": FORM_TOO,
    "models": GUARDED,
    "metrics": GUARDED,
    "healthz": OPEN,
    "readyz": OPEN,
    "page": OPEN,
    "openapi": OPEN,
    "ping": OPEN,
    "updateavailable": OPEN,
    "unknown path": dict.fromkeys(OFFERS, 404),  # an unknown path is a 404, key or not
    "options": OPEN,
}
CASES = [(route, offer) for route in ROUTES for offer in OFFERS]


def request_parts(route: Route, offer: str) -> tuple[dict[str, str], bytes]:
    """The headers and body a client sends for ``route`` offering the key as ``offer`` says."""
    headers, field = OFFERS[offer]
    headers = dict(headers)
    if route.body == "raw":
        return {**headers, "Content-Type": "image/jpeg"}, PICTURE
    if route.body == "form":
        parts = [] if field is None else [f'Content-Disposition: form-data; name="api_key"\r\n\r\n{field}'.encode()]
        parts.append(b'Content-Disposition: form-data; name="image"; filename="a.jpg"\r\n\r\n' + PICTURE)
        body = (
            b"".join(f"--{BOUNDARY}\r\n".encode() + part + b"\r\n" for part in parts) + f"--{BOUNDARY}--\r\n".encode()
        )
        return {**headers, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}, body
    return headers, b""


@pytest.fixture(scope="module")
def keyed_app() -> Any:
    """An app with API_KEY set and the fake backend (built once for the module's many requests)."""
    from proxy.app import create_app
    from proxy.services import Services
    from tests.routes.conftest import LABELS, ROWS
    from tests.support.fake_backend import FakeBackend

    settings = Settings(api_key=KEY)
    app = create_app(settings, services=Services.build(settings, {"detector": FakeBackend(ROWS, LABELS)}))
    yield app
    Services.of(app).close()


@pytest.mark.parametrize(("route_name", "offer"), CASES)
def test_the_app_applies_the_key_rule(keyed_app: Flask, route_name: str, offer: str) -> None:
    """The app alone (as a plain WSGI server runs it) answers each route and offer with the rule's status."""
    route = ROUTES[route_name]
    headers, body = request_parts(route, offer)
    answer = keyed_app.test_client().open(route.path, method=route.method, headers=headers, data=body)
    assert answer.status_code == EXPECTED[route_name][offer]
    if answer.status_code == 401:
        assert answer.headers["WWW-Authenticate"] == 'Bearer realm="classifyobjects"'
        assert answer.json is not None and "API key" in answer.json["error"]
        if route.path.startswith("/v1/vision/"):  # DeepStack's envelope, which its clients read unchecked
            assert (answer.json["success"], answer.json["predictions"]) == (False, [])


class Wire(MemoryTransport):
    """What the front writes to one client connection, read as this test reads it."""

    def continued(self) -> bool:
        """True once ``100 Continue`` was written."""
        return any(line.startswith(b"HTTP/1.1 100") for line in bytes(self.written).split(b"\r\n"))

    def status(self) -> int | None:
        """The status of the final answer written so far (not 100 Continue), or None."""
        for line in bytes(self.written).split(b"\r\n"):
            if line.startswith(b"HTTP/1.1 ") and not line.startswith(b"HTTP/1.1 100"):
                return int(line.split()[1])
        return None


async def until(condition: Callable[[], bool]) -> None:
    """Let the loop and the app's threads run until ``condition`` holds (at most 5 s)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while not condition():
        assert loop.time() < deadline, "the front never got there"
        await asyncio.sleep(0.002)


async def through_front(app: Flask, route: Route, offer: str, *, expect: bool) -> tuple[int | None, bool, bool]:
    """Send the request through the front in process: the final status, whether ``100 Continue`` was sent, and
    whether the answer came before the body was sent."""
    headers, body = request_parts(route, offer)
    server = FrontServer(front_app(app), threads=2)
    wire = Wire()
    connection: Connection = server.connection()
    connection.connection_made(wire)
    lines = [f"{route.method} {route.path} HTTP/1.1", "Host: localhost", *(f"{k}: {v}" for k, v in headers.items())]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    if expect and body:
        lines.append("Expect: 100-continue")
    try:
        connection.data_received("\r\n".join([*lines, "", ""]).encode("latin-1"))
        early = False
        if expect and body:
            await until(lambda: wire.status() is not None or wire.continued())
            early = wire.status() is not None
        if not early and body:
            connection.data_received(body)
        await until(lambda: wire.status() is not None)
    finally:
        server.pool.shutdown(wait=True)
    return wire.status(), wire.continued(), early


@pytest.mark.parametrize("expect", [False, True], ids=["plain", "expect-100"])
@pytest.mark.parametrize(("route_name", "offer"), CASES)
def test_the_front_and_the_app_together_apply_the_key_rule(
    keyed_app: Flask, route_name: str, offer: str, expect: bool
) -> None:
    """Through the front, each route and offer gets the rule's status; with Expect, a refusal its headers decide is
    answered before 100 Continue and the body, and one the form field decides waits for the body."""
    route = ROUTES[route_name]
    status, continued, early = asyncio.run(through_front(keyed_app, route, offer, expect=expect))
    assert status == EXPECTED[route_name][offer]
    headers, _ = OFFERS[offer]
    form_decides = route_name in ("vision detection", "vision custom", "vision list") and not headers
    if expect and route.body != "none":
        decided_by_headers = status == 401 and not form_decides
        assert early is decided_by_headers and continued is not decided_by_headers


def test_the_rule_reads_only_the_api_key_field(keyed_app: Flask) -> None:
    """The form field is the one named api_key: a file part of that name carries no key."""
    data = {"api_key": FileStorage(io.BytesIO(KEY.encode()), filename="key.txt"), "image": (io.BytesIO(PICTURE), "a")}
    answer = keyed_app.test_client().post("/v1/vision/detection", data=data, content_type="multipart/form-data")
    assert answer.status_code == 401


@pytest.mark.parametrize(
    "body",
    [
        b"--" + BOUNDARY.encode() + b"\r\nno headers end here",  # malformed
        b"".join(
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="f{index}"\r\n\r\nx\r\n'.encode()
            for index in range(Settings().max_form_parts + 5)
        )
        + f"--{BOUNDARY}--\r\n".encode(),  # past MAX_FORM_PARTS
    ],
    ids=["malformed", "too-many-parts"],
)
def test_a_keyless_form_that_does_not_parse_is_a_401_not_its_parse_error(keyed_app: Flask, body: bytes) -> None:
    """Without the key, a DeepStack form the app cannot read (malformed, or past MAX_FORM_PARTS before any api_key
    field) is the 401: a client without the key learns nothing of its body's faults."""
    answer = keyed_app.test_client().post(
        "/v1/vision/detection", data=body, content_type=f"multipart/form-data; boundary={BOUNDARY}"
    )
    assert answer.status_code == 401, answer.json
    assert "WWW-Authenticate" in answer.headers


@pytest.mark.parametrize(
    ("path", "extra", "status"),
    [
        ("/classify", "", 401),  # the headers alone refuse it: the front answers
        ("/v1/vision/detection", f"Content-Length: {Settings().max_body_bytes + 1}\r\n", 413),
    ],
    ids=["classify-401", "vision-413"],
)
def test_the_fronts_own_answers_carry_the_apps_headers_and_json(
    keyed_app: Flask, path: str, extra: str, status: int
) -> None:
    """An error the front answers itself (before the app runs) carries the security headers every app answer carries,
    and its JSON is written as the app writes its own (compact, one newline), in the route family's shape."""

    async def body() -> bytes:
        server = FrontServer(front_app(keyed_app), threads=1)
        wire = Wire()
        connection: Connection = server.connection()
        connection.connection_made(wire)
        try:
            connection.data_received(f"POST {path} HTTP/1.1\r\nHost: localhost\r\n{extra}\r\n".encode())
            await until(lambda: wire.status() is not None)
        finally:
            server.pool.shutdown(wait=True)
        return bytes(wire.written)

    written = asyncio.run(body())
    head, _, payload = written.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode())
    headers = dict(line.split(": ", 1) for line in head.decode("latin-1").split("\r\n")[1:])
    assert headers["X-Frame-Options"] == "DENY" and headers["Referrer-Policy"] == "no-referrer"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert payload.endswith(b"}\n") and b'", "' not in payload and b'": ' not in payload
    if path.startswith("/v1/vision"):  # the keys of the app's own errors on that route, in their order
        own = keyed_app.test_client().post(path, data=b"", headers={"X-API-Key": KEY})
        assert own.status_code == 400 and list(json.loads(payload)) == list(own.json)
