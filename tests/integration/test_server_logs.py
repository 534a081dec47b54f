"""What the server writes and how it runs: its own log lines show at INFO, its logs never carry request images,
and Flask's debug mode stays off.

One serving-mode proxy of its own, logging at debug level with everything it prints captured, and started with
FLASK_DEBUG=1 in its environment: a leftover in someone's shell must not turn debug mode on in production.
"""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Iterator

import pytest
import requests
from PIL.PngImagePlugin import PngInfo

from demo_model import random_scene
from harness.processes import HttpServer, proxy_server
from harness.tfserving import RunningServer
from tests.support.zoo import Zoo

MARKER = b"ZQX-CLASSIFYOBJECTS-IMAGE-MARKER-8d1f2e"
MAX_BODY_BYTES = 300_000


def jpeg_with_comment(comment: bytes) -> bytes:
    """A valid JPEG carrying ``comment`` in a COM segment right after SOI."""
    buffer = io.BytesIO()
    random_scene(seed=3, size=(160, 120))[0].save(buffer, format="JPEG", quality=90)
    data = buffer.getvalue()
    segment = b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment
    return data[:2] + segment + data[2:]


def png_with_text(text: bytes) -> bytes:
    """A valid PNG carrying ``text`` in a tEXt chunk."""
    info = PngInfo()
    info.add_text("Comment", text.decode("ascii"))
    buffer = io.BytesIO()
    random_scene(seed=4, size=(160, 120))[0].save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def logged_proxy(zoo: Zoo, stand_in: RunningServer) -> Iterator[HttpServer]:
    """The proxy logging at debug level, unbuffered, with FLASK_DEBUG=1 in its environment."""
    env = {
        "SERVING_ADDRESS": stand_in.address,
        "MODELS": zoo.models_setting(),
        "LOG_LEVEL": "debug",
        "MAX_BODY_BYTES": str(MAX_BODY_BYTES),
        "FLASK_DEBUG": "1",
        "PYTHONUNBUFFERED": "1",  # every log line reaches the captured file as it is written
    }
    with proxy_server(env) as server:
        yield server


def wait_for_log_lines(server: HttpServer, needle: str, count: int, timeout_s: float = 10.0) -> str:
    """The server's log once ``needle`` occurs ``count`` times in it (polled, bounded)."""
    deadline = time.monotonic() + timeout_s
    text = server.log_text()
    while text.count(needle) < count and time.monotonic() < deadline:
        time.sleep(0.05)  # polling interval, not a wait for the server
        text = server.log_text()
    return text


def test_logs_never_contain_image_bytes(logged_proxy: HttpServer) -> None:
    """Images posted with a marker inside, answered or refused, leave no trace of the marker in any log."""
    url = f"{logged_proxy.url}/classify"
    jpeg = jpeg_with_comment(MARKER)
    png = png_with_text(MARKER)
    exchanges: list[tuple[str, dict[str, object], int]] = [
        (url, {"data": jpeg, "headers": {"Content-Type": "image/jpeg"}}, 200),
        (url + "?verbose=true", {"data": png}, 200),
        (url + "?format=png", {"data": jpeg}, 200),
        (url, {"files": {"image": ("photo.jpg", jpeg, "image/jpeg")}}, 200),
        (f"{logged_proxy.url}/v1/vision/detection", {"files": {"image": ("photo.png", png, "image/png")}}, 200),
        (url, {"json": {"images": [base64.b64encode(jpeg).decode(), base64.b64encode(MARKER).decode()]}}, 200),
        (url, {"data": jpeg[: len(jpeg) // 3], "headers": {"Content-Type": "image/jpeg"}}, 400),
        (url, {"data": MARKER * 8, "headers": {"Content-Type": "image/png"}}, 400),
        (url, {"data": MARKER * 8, "headers": {"Content-Type": "text/plain"}}, 415),
        (url + "?threshold=2", {"data": jpeg}, 400),
        (url, {"data": MARKER * (MAX_BODY_BYTES // len(MARKER) + 1)}, 413),
    ]
    for target, kwargs, status in exchanges:
        response = requests.post(target, timeout=30, **kwargs)  # type: ignore[arg-type]
        assert response.status_code == status, (target, response.text)
        assert MARKER.decode() not in response.text
    log = wait_for_log_lines(logged_proxy, '"path":"/classify"', len(exchanges) - 1)
    assert log.count('"path":"/classify"') >= len(exchanges) - 1, "the access log was not captured"
    for form in (MARKER.decode(), MARKER.hex(), MARKER[:16].decode()):
        assert form not in log


def test_debug_mode_stays_off(logged_proxy: HttpServer) -> None:
    """With FLASK_DEBUG=1 in the environment the app still runs without debug: compact JSON, no debugger."""
    health = requests.get(f"{logged_proxy.url}/healthz", timeout=10)
    assert health.status_code == 200
    # Flask pretty-prints JSON only in debug mode.
    assert health.content == json.dumps({"status": "ok"}, separators=(",", ":")).encode() + b"\n"
    missing = requests.get(f"{logged_proxy.url}/no/such/path", timeout=10)
    assert missing.status_code == 404
    assert b"\n " not in missing.content
    assert "Werkzeug Debugger" not in missing.text


def test_the_services_own_lines_show_at_info_as_json(logged_proxy: HttpServer) -> None:
    """What the service does (a model's signature learned, here) is logged at INFO, as JSON lines like the access
    log's, without a path in the messages a client can see."""
    requests.post(f"{logged_proxy.url}/classify", data=jpeg_with_comment(b"x"), timeout=30)
    lines = [json.loads(line) for line in logged_proxy.log_text().splitlines() if line.startswith('{"time"')]
    own = [line for line in lines if line.get("logger", "").startswith("proxy.")]
    assert any(line["level"] == "info" and "version 1" in line["message"] for line in own), own[:5]
    assert any("request_id" in line and line["path"] == "/classify" for line in lines)
