"""The HTTP front of the real server, over loopback: each finding of the review with the request that showed it.

Slow, silent and non-reading clients leave ordinary ones alone; bodies are exact (chunked or not, whatever the
client's HTTP library); odd requests get clear answers. tests/unit/test_front.py drives the same connection logic
byte by byte with a fake clock; here the bounds are shortened by settings so each test stays within seconds.
"""

from __future__ import annotations

import io
import json
import re
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from PIL import Image

from harness.processes import HttpServer, children, proxy_server, rss_kib
from harness.tfserving import RunningServer
from tests.conftest import API_KEY
from tests.support.zoo import Zoo

MB = 1024 * 1024


@pytest.fixture(scope="module")
def front(zoo: Zoo, stand_in: RunningServer) -> Iterator[HttpServer]:
    """A serving-mode proxy, one worker, with the front's bounds shortened and a small body limit."""
    env = {
        "SERVING_ADDRESS": stand_in.address,
        "MODELS": zoo.models_setting(),
        "WEB_CONCURRENCY": "1",
        "GUNICORN_THREADS": "4",
        "REQUEST_HEADER_TIMEOUT_S": "2",
        "REQUEST_READ_TIMEOUT_S": "30",
        "REQUEST_MIN_RATE_BYTES": "1000",
        "KEEPALIVE_TIMEOUT_S": "2",
        "SEND_TIMEOUT_S": "3",
        "MAX_BODY_BYTES": str(2 * MB),
        "MAX_FORM_PARTS": "50",
    }
    with proxy_server(env) as server:
        yield server


def connect(server: HttpServer, timeout: float = 10.0) -> socket.socket:
    """A raw TCP connection to the server."""
    return socket.create_connection(("127.0.0.1", server.port), timeout=timeout)


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (or the socket times out)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data


def status_of(data: bytes) -> int:
    """The status code of the first answer in ``data``."""
    return int(data.split(b"\r\n", 1)[0].split()[1])


def body_of(data: bytes) -> Any:
    """The JSON body of the first answer in ``data``."""
    head, _, rest = data.partition(b"\r\n\r\n")
    length = int(
        next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    )
    return json.loads(rest[:length])


def timed_get(server: HttpServer, path: str = "/healthz") -> float:
    """Seconds an ordinary client waits for a 200 on ``path``."""
    started = time.monotonic()
    assert requests.get(f"{server.url}{path}", timeout=10).status_code == 200
    return time.monotonic() - started


def test_slow_silent_and_non_reading_clients_leave_ordinary_ones_alone(
    front: HttpServer, photos: dict[str, bytes]
) -> None:
    """Eight unfinished heads, ten trickling bodies, 300 silent sockets and ten clients that never read their answers
    do not delay an ordinary client's /healthz or /classify."""
    held: list[socket.socket] = []
    try:
        for _ in range(8):
            sock = connect(front)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            held.append(sock)
        for _ in range(10):
            sock = connect(front)
            sock.sendall(b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nab")
            held.append(sock)
        held += [connect(front) for _ in range(300)]
        for _ in range(10):  # a Connection: close request whose 70 KB answer is never read
            sock = connect(front)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            held.append(sock)
        assert timed_get(front) < 1.0
        started = time.monotonic()
        answer = requests.post(f"{front.url}/classify", data=photos["person"], timeout=10)
        assert answer.status_code == 200 and time.monotonic() - started < 3.0
    finally:
        for sock in held:
            sock.close()


def test_unfinished_headers_and_trickling_bodies_get_a_json_408(front: HttpServer) -> None:
    """Headers not done within REQUEST_HEADER_TIMEOUT_S, or a body slower than REQUEST_MIN_RATE_BYTES, get a 408
    in JSON (on /v1/vision/* in that routes' shape), and the connection closes."""
    heads = connect(front)
    heads.sendall(b"GET /v1/vision/detection HTTP/1.1\r\nHost: x\r\n")
    trickle = connect(front)
    trickle.sendall(b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
    for _ in range(6):  # one byte a second: after the 5 s grace, far below 1000 bytes/s
        trickle.sendall(b"x")
        time.sleep(1)  # the trickle's pace, not a wait for the server
    head_answer, trickle_answer = read_all(heads), read_all(trickle)
    assert status_of(head_answer) == 408 and body_of(head_answer)["success"] is False
    assert status_of(trickle_answer) == 408 and "bytes/s" in body_of(trickle_answer)["error"]


def test_chunked_body_over_the_limit_is_a_413_not_cut(front: HttpServer, photos: dict[str, bytes]) -> None:
    """A picture followed by 3 MiB of zeros, chunked, is a 413 (limit 2 MiB), as with a Content-Length."""

    def body() -> Iterator[bytes]:
        yield photos["person"]
        for _ in range(48):
            yield bytes(64 * 1024)

    chunked = requests.post(f"{front.url}/classify", data=body(), timeout=30)
    assert chunked.status_code == 413 and "MAX_BODY_BYTES" in chunked.json()["error"]
    whole = requests.post(f"{front.url}/classify", data=b"".join(body()), timeout=30)
    assert whole.status_code == 413


@pytest.mark.parametrize("client", ["urllib", "requests"])
def test_every_client_reads_the_413_of_a_body_it_was_still_sending(front: HttpServer, client: str) -> None:
    """A client that writes its whole 6 MiB body before reading (urllib does, as .NET does) still reads the 413:
    the server drains the upload before closing."""
    data = bytes(6 * MB)
    if client == "urllib":
        request = urllib.request.Request(f"{front.url}/classify", data=data, method="POST")
        with pytest.raises(urllib.error.HTTPError) as raised:
            urllib.request.urlopen(request, timeout=30)
        assert raised.value.code == 413
        assert "MAX_BODY_BYTES" in json.loads(raised.value.read())["error"]
    else:
        answer = requests.post(f"{front.url}/classify", data=data, timeout=30)
        assert answer.status_code == 413


def test_expect_continue_over_the_limit_gets_413_not_100(front: HttpServer) -> None:
    """A client asking whether it may send 6 MiB gets the 413 at once, never 100 Continue."""
    sock = connect(front, timeout=5)
    sock.sendall(b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Length: 6291456\r\nExpect: 100-continue\r\n\r\n")
    answer = read_all(sock)
    assert b"100 Continue" not in answer and status_of(answer) == 413


def test_malformed_chunk_is_one_400_and_nothing_out_of_step(front: HttpServer) -> None:
    """A malformed chunk with a GET pipelined behind it: one 400, the connection closed, no second answer."""
    sock = connect(front, timeout=5)
    sock.sendall(
        b"POST /classify HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    answer = read_all(sock)
    assert answer.count(b"HTTP/1.1 ") == 1 and status_of(answer) == 400
    assert "malformed" in body_of(answer)["error"]


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET /healthz HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 without Host
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n", 431),
    ],
)
def test_the_servers_own_errors_are_json_with_a_request_id_and_logged(
    front: HttpServer, raw: bytes, status: int
) -> None:
    """Requests the server refuses itself get JSON with X-Request-ID, and reach the access log."""
    sock = connect(front, timeout=5)
    sock.sendall(raw)
    answer = read_all(sock)
    assert status_of(answer) == status and "error" in body_of(answer)
    request_id = next(line.split(b":")[1].strip() for line in answer.split(b"\r\n") if line.startswith(b"X-Request-ID"))
    deadline = time.monotonic() + 5
    while request_id.decode() not in front.log_text():
        assert time.monotonic() < deadline, "the refused request is not in the access log"
        time.sleep(0.05)  # polling interval


def test_empty_lines_between_keep_alive_requests_are_skipped(front: HttpServer) -> None:
    """A CRLF after a request and before the next one (RFC 9112 2.2), as the probe sent it: both answered 200 on
    one connection, no stray 400 and no request dropped."""
    sock = connect(front, timeout=5)
    sock.sendall(
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n\r\nGET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", read_all(sock)) == [b"200", b"200"]


def test_double_slash_with_a_foreign_host_is_no_redirect(front: HttpServer) -> None:
    """`//detection` with Host: evil.example is a JSON 404, never a redirect to that host."""
    sock = connect(front, timeout=5)
    sock.sendall(b"GET //detection HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n")
    answer = read_all(sock)
    assert status_of(answer) == 404 and b"evil.example" not in answer and b"Location" not in answer


def test_chunked_requests_log_their_real_size(front: HttpServer, photos: dict[str, bytes]) -> None:
    """A chunked upload's access-log line has its real body size."""
    answer = requests.post(
        f"{front.url}/classify", data=iter([photos["cat"]]), headers={"X-Request-ID": "chunked-size-1"}, timeout=30
    )
    assert answer.status_code == 200
    deadline = time.monotonic() + 5
    while '"request_id":"chunked-size-1"' not in front.log_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)  # polling interval
    line = next(line for line in front.log_text().splitlines() if '"request_id":"chunked-size-1"' in line)
    assert json.loads(line)["request_bytes"] == len(photos["cat"])


def test_multipart_part_limit_names_itself(front: HttpServer) -> None:
    """A multipart body of 1001 parts is a 413 naming MAX_FORM_PARTS, not the body size."""
    files = {f"f{i}": (None, "x") for i in range(1001)}
    answer = requests.post(f"{front.url}/classify", files=files, timeout=30)
    assert answer.status_code == 413 and "MAX_FORM_PARTS" in answer.json()["error"]


def test_thin_image_is_a_fast_413(front: HttpServer) -> None:
    """A 1 x 50,000,000 one-bit PNG (a few KB) is a 413 for its aspect, at once."""
    buffer = io.BytesIO()
    Image.new("1", (1, 50_000_000)).save(buffer, format="PNG")
    started = time.monotonic()
    answer = requests.post(f"{front.url}/classify", data=buffer.getvalue(), timeout=30)
    assert answer.status_code == 413 and "MAX_IMAGE_ASPECT" in answer.json()["error"]
    assert time.monotonic() - started < 1.0


def test_open_endpoints_show_no_paths_and_the_page_has_a_policy(front: HttpServer) -> None:
    """/readyz names no filesystem path; the page carries a Content-Security-Policy and X-Frame-Options DENY."""
    assert "/tmp" not in requests.get(f"{front.url}/readyz", timeout=10).text
    page = requests.get(f"{front.url}/", timeout=10)
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Frame-Options"] == "DENY"


def test_unauthenticated_deepstack_bodies_get_a_401_in_their_shape(
    keyed_proxy: HttpServer, photos: dict[str, bytes]
) -> None:
    """Without the key, /classify is refused from the headers alone (no 100 Continue); a DeepStack upload without
    its api_key field is a 401 in the vision envelope."""
    sock = connect(keyed_proxy, timeout=5)
    sock.sendall(b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\nExpect: 100-continue\r\n\r\n")
    answer = read_all(sock)
    assert b"100 Continue" not in answer and status_of(answer) == 401
    upload = requests.post(f"{keyed_proxy.url}/v1/vision/detection", files={"image": photos["cat"]}, timeout=10)
    assert upload.status_code == 401 and upload.json()["predictions"] == []
    keyed = requests.post(
        f"{keyed_proxy.url}/v1/vision/detection", files={"image": photos["cat"]}, data={"api_key": API_KEY}, timeout=10
    )
    assert keyed.status_code == 200


def test_memory_stays_bounded_under_hostile_images(zoo: Zoo, stand_in: RunningServer) -> None:
    """Four 12-megapixel PNGs at once, and a batch of them, keep the worker's peak memory within its decode budget
    (DECODE_MEMORY_MB=128) plus a margin; every image still gets an answer."""
    env = {"SERVING_ADDRESS": stand_in.address, "MODELS": zoo.models_setting(), "WEB_CONCURRENCY": "1",
           "DECODE_MEMORY_MB": "128"}  # fmt: skip
    gradient = Image.linear_gradient("L").resize((4000, 3000)).convert("RGB")
    buffer = io.BytesIO()
    gradient.save(buffer, format="PNG", compress_level=9)
    picture = buffer.getvalue()
    assert len(picture) < 2 * MB
    with proxy_server(env) as proxy:
        [worker] = children(proxy.process.pid)  # type: ignore[union-attr]
        requests.post(f"{proxy.url}/classify", data=picture, timeout=60)  # warm: the first decode's own arenas
        before = _peak_kib(worker)
        with ThreadPoolExecutor(max_workers=4) as pool:
            statuses = list(
                pool.map(
                    lambda _: requests.post(f"{proxy.url}/classify", data=picture, timeout=60).status_code, range(4)
                )
            )
        import base64

        batch = requests.post(
            f"{proxy.url}/classify", json={"images": [base64.b64encode(picture).decode()] * 4}, timeout=120
        )
        peak = _peak_kib(worker)
        assert statuses == [200] * 4, statuses
        assert batch.status_code == 200 and all("error" not in element for element in batch.json())
        assert (peak - before) * 1024 < 128 * MB + 64 * MB, (before, peak, rss_kib(worker))


def _peak_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
