"""The HTTP front's connection, driven byte by byte through a transport of the test's own: no socket, a fake clock.

Every finding of the front's review has its request here; tests/integration/test_front.py sends the same ones to
the real server over loopback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from proxy.errors import ProxyError, Unauthorized
from proxy.front.connection import BODY_GRACE_S, LINGER_S, Connection, State
from proxy.front.server import FrontServer
from proxy.front.state import FrontApp, PlainHooks
from proxy.settings import FrontLimits, Settings


class Transport(asyncio.Transport):
    """Records what the connection writes and does, as a socket transport would take it."""

    def __init__(self, protocol: Connection) -> None:
        super().__init__()
        self.protocol = protocol
        self.written = bytearray()
        self.closing = False
        self.eof_written = False
        self.reading = True
        self.unsent = 0  # bytes the client has not read yet (the kernel's buffer is full)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self.closing:
            self.written += data

    def get_write_buffer_size(self) -> int:
        return self.unsent

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof_written = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 50000) if name == "peername" else default

    def answers(self) -> list[tuple[int, dict[str, str], bytes]]:
        """Every complete answer written so far: status, headers (lower-case names), body."""
        found = []
        data = bytes(self.written)
        while b"\r\n\r\n" in data:
            head, rest = data.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
            length = int(headers.get("content-length", "0"))
            found.append((status, headers, rest[:length]))
            data = rest[length:]
        return found


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def echo_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Answers what it received: method, path, body length and a few environ values."""
    body = environ["wsgi.input"].read()
    if environ["PATH_INFO"] == "/boom":
        raise RuntimeError("the app broke")
    seen = {
        "method": environ["REQUEST_METHOD"],
        "path": environ["PATH_INFO"],
        "query": environ["QUERY_STRING"],
        "length": len(body),
        "content_length": environ.get("CONTENT_LENGTH"),
        "chunked": "HTTP_TRANSFER_ENCODING" in environ,
        "request_bytes": environ.get("classifyobjects.request_bytes"),
        "request_id": environ.get("HTTP_X_REQUEST_ID"),
    }
    payload = json.dumps(seen).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
    return [payload]


class Front:
    """A FrontServer with connections of the test's own; every call runs on one event loop."""

    def __init__(self, limits: FrontLimits | None = None, hooks: Any = None, app: Any = echo_app) -> None:
        self.clock = Clock()
        served = FrontApp(app, limits or Settings().front, hooks or PlainHooks(), 60.0, close=lambda: None)
        self.server = FrontServer(served, threads=2, clock=self.clock)

    def connect(self) -> tuple[Connection, Transport]:
        connection = self.server.connection()
        transport = Transport(connection)
        connection.connection_made(transport)
        return connection, transport

    def advance(self, seconds: float) -> None:
        self.clock.now += seconds
        self.server.sweep()


async def settle(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Let the loop and the app's threads run until ``condition`` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("the front did not get there in time")
        await asyncio.sleep(0.005)


def run(test: Callable[[], Any]) -> Any:
    """Run an async test body on a fresh loop."""
    return asyncio.run(test())


GET = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


def post(body: bytes, *, path: str = "/classify", extra: str = "") -> bytes:
    """A POST with a Content-Length."""
    return f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


def chunked(*chunks: bytes, path: str = "/classify") -> bytes:
    """A chunked POST."""
    body = b"".join(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" for chunk in chunks) + b"0\r\n\r\n"
    return f"POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode() + body


def test_request_reaches_the_app_whole_and_keeps_the_connection() -> None:
    """A body is read whole before the app runs; the answer has a Content-Length; the connection stays open."""

    async def body() -> None:
        front = Front()
        connection, transport = front.connect()
        connection.data_received(post(b"x" * 5000)[:60])
        await asyncio.sleep(0.02)
        assert transport.answers() == []  # nothing runs on a partial request
        connection.data_received(post(b"x" * 5000)[60:])
        await settle(lambda: len(transport.answers()) == 1)
        status, headers, payload = transport.answers()[0]
        assert status == 200 and headers["content-length"] == str(len(payload))
        assert json.loads(payload)["length"] == 5000
        assert connection.state is State.IDLE and not transport.closing

    run(body)


def test_pipelined_requests_are_answered_in_order() -> None:
    """Two requests sent at once get two answers, in order."""

    async def body() -> None:
        connection, transport = Front().connect()
        connection.data_received(post(b"abc", path="/one") + post(b"de", path="/two"))
        await settle(lambda: len(transport.answers()) == 2)
        assert [json.loads(answer[2])["path"] for answer in transport.answers()] == ["/one", "/two"]

    run(body)


@pytest.mark.parametrize("split", [False, True], ids=["at-once", "after-the-answer"])
def test_empty_lines_before_a_request_line_are_ignored(split: bool) -> None:
    """RFC 9112 2.2: CRLFs a client sends after a body or between keep-alive requests (pipelined with the next one,
    or on their own once the answer is back) are skipped, not a 400 that drops the request behind them."""

    async def body() -> None:
        connection, transport = Front().connect()
        first, second = post(b"abc", path="/one") + b"\r\n", b"\r\n\n" + post(b"de", path="/two")
        if split:
            connection.data_received(first)
            await settle(lambda: len(transport.answers()) == 1)
            connection.data_received(b"\r\n")  # on its own: the connection stays idle
            assert connection.state is State.IDLE
            connection.data_received(second)
        else:
            connection.data_received(first + second)
        await settle(lambda: len(transport.answers()) == 2)
        assert [answer[0] for answer in transport.answers()] == [200, 200]
        assert [json.loads(answer[2])["path"] for answer in transport.answers()] == ["/one", "/two"]
        assert connection.state is State.IDLE and not transport.closing

    run(body)


@pytest.mark.parametrize(
    ("target", "path", "query"),
    [
        (b"http://localhost:8000/classify?threshold=0.5", "/classify", "threshold=0.5"),
        (b"HTTPS://camera.example/v1/vision/detection", "/v1/vision/detection", ""),
        (b"http://localhost?x=1", "/", "x=1"),
        (b"/classify?next=http://elsewhere/x", "/classify", "next=http://elsewhere/x"),
    ],
)
def test_an_absolute_form_target_is_served_as_its_path(target: bytes, path: str, query: str) -> None:
    """RFC 9112 3.2.2: a server must accept ``GET http://host/path`` as ``/path`` (a 404 before); a URL inside a
    query stays the query's."""

    async def body() -> None:
        connection, transport = Front().connect()
        connection.data_received(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        await settle(lambda: len(transport.answers()) == 1)
        echoed = json.loads(transport.answers()[0][2])
        assert (echoed["path"], echoed["query"]) == (path, query)

    run(body)


def test_chunked_body_reaches_the_app_with_its_length() -> None:
    """A chunked body arrives whole, with CONTENT_LENGTH set and no Transfer-Encoding left for the app."""

    async def body() -> None:
        connection, transport = Front().connect()
        connection.data_received(chunked(b"a" * 100, b"b" * 50))
        await settle(lambda: len(transport.answers()) == 1)
        seen = json.loads(transport.answers()[0][2])
        assert (seen["length"], seen["content_length"], seen["chunked"], seen["request_bytes"]) == (
            150,
            "150",
            False,
            150,
        )

    run(body)


def test_chunked_body_over_the_limit_is_a_413_never_cut() -> None:
    """A chunked body over MAX_BODY_BYTES is a 413 and the app never sees it; the connection lingers, then closes."""

    async def body() -> None:
        front = Front(Settings(max_body_bytes=1000).front)
        connection, transport = front.connect()
        connection.data_received(chunked(b"a" * 600, b"b" * 600))
        await asyncio.sleep(0.02)
        [(status, headers, payload)] = transport.answers()
        assert status == 413 and headers["connection"] == "close"
        assert "MAX_BODY_BYTES" in json.loads(payload)["error"]
        assert transport.eof_written and connection.state is State.LINGERING
        connection.data_received(b"more of the upload" * 100)  # read and dropped
        assert len(transport.answers()) == 1
        front.advance(LINGER_S + 1)
        await settle(lambda: transport.closing)

    run(body)


@pytest.mark.parametrize("expect", [False, True])
def test_declared_length_over_the_limit_is_a_413_before_the_body(expect: bool) -> None:
    """A Content-Length over the limit is answered 413 at once, never with 100 Continue first."""

    async def body() -> None:
        connection, transport = Front(Settings(max_body_bytes=1000).front).connect()
        extra = "Expect: 100-continue\r\n" if expect else ""
        connection.data_received(f"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n{extra}\r\n".encode())
        await asyncio.sleep(0.01)
        assert b"100 Continue" not in transport.written
        assert [answer[0] for answer in transport.answers()] == [413]

    run(body)


def test_expect_continue_within_the_limit_gets_100_then_the_answer() -> None:
    """A client that waits for 100 Continue gets it once the headers pass, then the answer to its body."""

    async def body() -> None:
        connection, transport = Front().connect()
        connection.data_received(
            b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"
        )
        assert bytes(transport.written).startswith(b"HTTP/1.1 100 ")
        connection.data_received(b"abc")
        await settle(lambda: b"200 OK" in transport.written)

    run(body)


class KeyedHooks(PlainHooks):
    """Refuses every request without an X-API-Key header, and records the paths of errors it renders."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def admit(self, method: str, path: str, headers: dict[str, str]) -> ProxyError | None:
        return None if headers.get("x-api-key") == "k" else Unauthorized("key", headers={"WWW-Authenticate": "Bearer"})

    def error(self, path: str, status: int, message: str, request_id: str) -> tuple[str, bytes]:
        self.paths.append(path)
        return super().error(path, status, message, request_id)


def test_headers_that_condemn_a_request_answer_before_its_body() -> None:
    """A request its headers alone refuse (no key) gets its 401 at once, without 100 Continue or the app."""

    async def body() -> None:
        connection, transport = Front(hooks=KeyedHooks()).connect()
        connection.data_received(
            b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\nExpect: 100-continue\r\n\r\n"
        )
        await asyncio.sleep(0.01)
        [(status, headers, _)] = transport.answers()
        assert status == 401 and headers["www-authenticate"] == "Bearer"
        assert b"100 Continue" not in transport.written

    run(body)


def test_malformed_chunk_is_one_400_and_nothing_out_of_step() -> None:
    """A malformed chunk is one 400, the connection closes, and a request pipelined behind it gets no answer."""

    async def body() -> None:
        connection, transport = Front().connect()
        bad = b"POST /classify HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"
        connection.data_received(bad + GET)
        await asyncio.sleep(0.05)
        assert [answer[0] for answer in transport.answers()] == [400]
        assert connection.state is State.LINGERING and transport.eof_written

    run(body)


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(120)) + b"\r\n", 431),
        (b"GET /healthz HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 without Host
        (b"NOT HTTP AT ALL\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    ],
    ids=["long-line", "long-header", "many-headers", "no-host", "garbage", "length-and-chunked"],
)
def test_malformed_requests_get_their_status_as_json(request_bytes: bytes, status: int) -> None:
    """Requests the front cannot take get a JSON error with their status and a request id, then the end."""

    async def body() -> None:
        connection, transport = Front().connect()
        connection.data_received(request_bytes)
        await asyncio.sleep(0.01)
        [(got, headers, payload)] = transport.answers()
        assert got == status and "error" in json.loads(payload)
        assert headers["x-request-id"] and headers["connection"] == "close"

    run(body)


def test_incomplete_headers_are_a_408_after_the_header_timeout() -> None:
    """Headers that never finish get a JSON 408 once REQUEST_HEADER_TIMEOUT_S has passed, in the path's shape."""

    async def body() -> None:
        hooks = KeyedHooks()
        front = Front(Settings(header_timeout_s=10).front, hooks=hooks)
        connection, transport = front.connect()
        connection.data_received(b"GET /v1/vision/detection HTTP/1.1\r\nHost: x\r\n")
        front.advance(9)
        assert transport.answers() == []
        front.advance(2)
        [(status, _, payload)] = transport.answers()
        assert status == 408 and "10 s" in json.loads(payload)["error"]
        assert hooks.paths == ["/v1/vision/detection"]

    run(body)


def test_a_trickling_body_is_a_408_once_it_is_too_slow() -> None:
    """A body arriving below REQUEST_MIN_RATE_BYTES after the grace period gets a 408 saying its rate."""

    async def body() -> None:
        front = Front(Settings(min_rate_bytes=1000).front)
        connection, transport = front.connect()
        connection.data_received(b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nab")
        front.advance(BODY_GRACE_S - 1)
        assert transport.answers() == []
        front.advance(2)
        [(status, _, payload)] = transport.answers()
        assert status == 408 and "bytes/s" in json.loads(payload)["error"]

    run(body)


def test_a_body_later_than_the_read_timeout_is_a_408() -> None:
    """A body still incomplete REQUEST_READ_TIMEOUT_S after its headers gets a 408, whatever its rate."""

    async def body() -> None:
        front = Front(Settings(read_timeout_s=30, min_rate_bytes=0).front)
        connection, transport = front.connect()
        connection.data_received(b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab")
        front.advance(31)
        assert [answer[0] for answer in transport.answers()] == [408]

    run(body)


def test_idle_and_silent_connections_close_without_a_word() -> None:
    """A connection that sends nothing closes after the header timeout; an idle keep-alive one after its own."""

    async def body() -> None:
        front = Front(Settings(header_timeout_s=10, keepalive_timeout_s=5).front)
        _, silent = front.connect()
        connection, kept = front.connect()
        connection.data_received(GET)
        await settle(lambda: len(kept.answers()) == 1)
        front.advance(6)
        await settle(lambda: kept.closing)
        assert not silent.closing
        front.advance(5)
        await settle(lambda: silent.closing)
        assert silent.written == b""

    run(body)


def test_past_the_connection_limit_a_new_connection_gets_a_fast_503() -> None:
    """Once MAX_CONNECTIONS are open, the next one is answered 503 with Retry-After at once."""

    async def body() -> None:
        front = Front(Settings(max_connections=3).front)
        for _ in range(3):
            front.connect()
        _, refused = front.connect()
        [(status, headers, _)] = refused.answers()
        assert status == 503 and headers["retry-after"] == "1"

    run(body)


def test_buffered_bodies_are_bounded_per_process() -> None:
    """Bodies arriving at once may hold MAX_BUFFERED_MB in all; past it a request gets a 503, not memory."""

    async def body() -> None:
        front = Front(Settings(max_buffered_bytes=10_000, max_body_bytes=8_000).front)
        first, first_transport = front.connect()
        first.data_received(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 6000\r\n\r\n")
        second, second_transport = front.connect()
        second.data_received(b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 6000\r\n\r\n")
        assert [answer[0] for answer in second_transport.answers()] == [503]
        first.data_received(b"x" * 6000)
        await settle(lambda: len(first_transport.answers()) == 1)
        assert front.server.budget.used == 0

    run(body)


def test_a_client_that_does_not_read_is_dropped_after_the_send_timeout() -> None:
    """An answer the client does not read holds no thread; after SEND_TIMEOUT_S the connection is dropped."""

    async def body() -> None:
        front = Front(Settings(send_timeout_s=30).front)
        connection, transport = front.connect()
        transport.unsent = 10_000
        connection.data_received(GET)
        await settle(lambda: connection.state is State.WRITING)
        front.advance(29)
        assert not transport.closing
        front.advance(2)
        await settle(lambda: transport.closing)

    run(body)


def test_head_gets_headers_without_a_body() -> None:
    """HEAD answers the GET's headers and Content-Length, with no body."""

    async def body() -> None:
        connection, transport = Front().connect()
        connection.data_received(b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n" + GET)
        await settle(lambda: bytes(transport.written).count(b"HTTP/1.1 200") == 2)
        head, _, rest = bytes(transport.written).partition(b"\r\n\r\n")
        assert b"Content-Length" in head and rest.startswith(b"HTTP/1.1 200")

    run(body)


def test_an_app_that_fails_answers_500_json() -> None:
    """An exception escaping the app is a JSON 500, never a traceback on the wire."""

    async def body() -> None:
        connection, transport = Front().connect()
        connection.data_received(b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n")
        await settle(lambda: len(transport.answers()) == 1)
        status, _, payload = transport.answers()[0]
        assert status == 500 and json.loads(payload)["error"].startswith("internal error")

    run(body)


def test_the_request_id_is_one_for_front_and_app() -> None:
    """The app sees the request id the front would have logged; a client's sane id is kept."""

    async def body() -> None:
        connection, transport = Front().connect()
        connection.data_received(b"GET /x HTTP/1.1\r\nHost: x\r\nX-Request-ID: abc-1\r\n\r\n")
        await settle(lambda: len(transport.answers()) == 1)
        assert json.loads(transport.answers()[0][2])["request_id"] == "abc-1"

    run(body)


def test_a_stop_while_the_app_reads_a_spooled_body_leaves_it_to_the_app(caplog: pytest.LogCaptureFixture) -> None:
    """A quick stop aborts a connection whose request is still reading its spooled body: the app reads it whole
    (nothing closed under it, no traceback), and the body's share of the buffer budget comes back once it is done."""
    size = 3 * 2**20  # above the 1 MiB that is held in memory: the body is a temporary file
    reading = threading.Event()
    go_on = threading.Event()
    read: list[int] = []

    def slow_reader(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        stream = environ["wsgi.input"]
        first = stream.read(1024)
        reading.set()
        go_on.wait(5)
        read.append(len(first) + len(stream.read()))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"done"]

    async def body() -> None:
        front = Front(app=slow_reader)
        connection, transport = front.connect()
        connection.data_received(post(b"x" * size))
        await settle(reading.is_set)
        assert front.server.budget.used == size
        await front.server.shutdown(0.0)  # SIGINT: the connection is aborted while its request runs
        assert transport.closing and connection.state is State.CLOSED
        go_on.set()
        await settle(lambda: bool(read) and front.server.budget.used == 0)
        assert read == [size]

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an unclosed spool file would be a ResourceWarning
        run(body)
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR] == []


def test_a_request_still_queued_when_the_pool_stops_gives_its_body_back() -> None:
    """A quick stop cancels what waits for one of the app's threads: its connection is aborted and its body's share
    of the budget comes back (the cancelled request is handed back to the loop like an answered one); the requests
    the threads were running still finish."""
    started = threading.Barrier(3)  # both threads of the pool, and the test
    go_on = threading.Event()
    answered: list[bytes] = []

    def busy(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        body = environ["wsgi.input"].read()
        if body == b"busy":
            started.wait(5)
            go_on.wait(5)
        answered.append(body)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    async def body() -> None:
        front = Front(app=busy)
        running = [front.connect() for _ in range(2)]
        for connection, _ in running:
            connection.data_received(post(b"busy"))
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)
        queued, transport = front.connect()
        queued.data_received(post(b"queued" * 100))
        assert queued.state is State.DISPATCHED and front.server.budget.used == 2 * 4 + 600
        await front.server.shutdown(0.0)
        await settle(lambda: transport.closing and front.server.budget.used == 2 * 4)
        assert queued.state is State.CLOSED
        go_on.set()
        await settle(lambda: len(answered) == 2 and front.server.budget.used == 0)
        assert answered == [b"busy", b"busy"]

    run(body)


def test_a_stopping_server_leaves_a_new_connection_its_first_request() -> None:
    """On a graceful stop an idle keep-alive connection is closed at once, but one just accepted that has sent
    nothing yet gets FIRST_REQUEST_GRACE_S to send its first request, which is answered with Connection: close;
    one that sends nothing is closed once the grace is over."""
    from proxy.front.server import FIRST_REQUEST_GRACE_S

    async def body() -> None:
        front = Front()
        used, used_transport = front.connect()
        used.data_received(GET)
        await settle(lambda: len(used_transport.answers()) == 1)
        fresh, fresh_transport = front.connect()
        _, silent_transport = front.connect()
        stopping = asyncio.ensure_future(front.server.shutdown(30.0))
        await asyncio.sleep(0.1)
        assert used_transport.closing  # it had been answered: its client retries on a new connection
        assert not fresh_transport.closing and not silent_transport.closing
        fresh.data_received(GET)
        await settle(lambda: fresh_transport.closing)
        [(status, headers, _)] = fresh_transport.answers()
        assert status == 200 and headers["connection"] == "close"
        assert not silent_transport.closing
        front.clock.now += FIRST_REQUEST_GRACE_S
        await settle(lambda: silent_transport.closing and stopping.done())
        assert silent_transport.answers() == []

    run(body)
