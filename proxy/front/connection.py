"""One client connection: HTTP/1.1 parsed by h11, the request buffered whole, the app run in a thread.

IDLE ──bytes──► HEADERS ──head──► BODY ──end──► DISPATCHED ──answer──► WRITING ──drained──► IDLE (keep-alive)
  │               │ 408, 414, 431   │ 408, 413, 400, 401, 503                                  │
  └─ closed after KEEPALIVE_TIMEOUT_S (or REQUEST_HEADER_TIMEOUT_S for a new connection)       └─► closed
Answers the front gives itself close the connection after a lingering read (LINGERING), so a client still
sending its body reads the answer instead of a reset.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future
from http import HTTPStatus
from typing import IO, Any
from urllib.parse import unquote_to_bytes

import h11

from proxy.errors import (
    BadRequest,
    HeadersTooLarge,
    Overloaded,
    PayloadTooLarge,
    ProxyError,
    RequestLineTooLong,
    RequestTimeout,
)
from proxy.front import ENVIRON_RECEIVED, ENVIRON_REQUEST_BYTES
from proxy.front.state import RequestBody, ServerState, WSGIApp
from proxy.metrics import count_request
from proxy.observability import access_entry, log_access, request_id

log = logging.getLogger(__name__)

LINE_LIMIT = 8190  # the request line; longer is a 414 (gunicorn's limit, kept)
FIELD_LIMIT = 8190  # one header field; longer is a 431
FIELDS_LIMIT = 100  # header fields; more is a 431
HEAD_LIMIT = 64 * 1024  # the whole head; longer is a 431
_EMPTY_LINES = b"\r\n"  # the bytes of empty lines a client may send before a request line (RFC 9112 2.2)
SPOOL_BYTES = 1024 * 1024  # a body above this is held in a temporary file instead of memory
BODY_GRACE_S = 5.0  # the body's rate is judged after this long
LINGER_S = 10.0  # after an early answer, read (and drop) what the client still sends, at most this long...
LINGER_IDLE_S = 2.0  # ...and at most this long between two reads


class State(enum.Enum):
    """Where a connection is in its request's life."""

    IDLE = "idle"
    HEADERS = "headers"
    BODY = "body"
    DISPATCHED = "dispatched"
    WRITING = "writing"
    LINGERING = "lingering"
    CLOSED = "closed"


class Connection(asyncio.Protocol):
    """One client connection; it sees its server through ``ServerState`` alone."""

    def __init__(self, state: ServerState) -> None:
        self.server = state
        self.limits = state.limits
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=HEAD_LIMIT)
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] = ("", 0)
        self.state = State.IDLE
        self.deadline = state.clock() + self.limits.header_timeout_s
        self.opened_at = state.clock()
        self.requests = 0  # requests begun on this connection
        self.dispatched_at: float | None = None
        self._reset_request()

    def _reset_request(self) -> None:
        self.method = ""
        self.path = ""
        self.query = ""
        self.headers: dict[str, str] = {}
        self.request_id = ""
        self.http_version = "1.1"
        self.body: RequestBody | None = None  # until the request is dispatched: then the request holds it
        self.body_bytes = 0
        self.body_started = 0.0
        self.started = 0.0  # time.perf_counter() at the request's first byte
        self._line = b""
        self._line_done = False
        self._lingered = 0
        self._linger_end = 0.0

    def closable_when_draining(self, now: float, grace_s: float) -> bool:
        """Whether a stopping server may close it now: not while a request is under way, nor while a new connection
        may still send its first request (within ``grace_s`` of opening: its client sent it expecting an answer, and
        clients retry a request only on a connection that has answered before)."""
        if self.busy:
            return False
        return self.requests > 0 or now - self.opened_at >= grace_s

    @property
    def busy(self) -> bool:
        """True while a request is arriving, running or being answered."""
        return self.state in (State.HEADERS, State.BODY, State.DISPATCHED, State.WRITING)

    # -- asyncio.Protocol --------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not isinstance(transport, asyncio.Transport):
            raise TypeError("the front serves stream transports only")
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) and len(peer) >= 2 else ("", 0)
        # Every byte left unsent pauses writing, so resume_writing() tells exactly when an answer has drained.
        transport.set_write_buffer_limits(high=0)
        full = len(self.server.connections) >= self.limits.max_connections
        self.server.opened(self)  # a refused one too, while it lingers: the sweeper closes it
        if full:
            self.server.refused()
            self.state = State.HEADERS  # so the answer is logged as a request's
            self._fail(Overloaded("this server holds as many connections as it may (MAX_CONNECTIONS); try again"))

    def data_received(self, data: bytes) -> None:
        now = self.server.clock()
        if self.state is State.LINGERING:
            self._lingered += len(data)
            self.deadline = min(now + LINGER_IDLE_S, self._linger_end)
            if self._lingered > 10 * self.limits.max_body_bytes:
                self.close()
            return
        if self.state in (State.DISPATCHED, State.WRITING, State.CLOSED):
            self.h11.receive_data(data)  # a pipelined request: parsed once this one is answered
            return
        if self.state is State.IDLE:
            data = data.lstrip(_EMPTY_LINES)  # RFC 9112 2.2: empty lines before a request line are ignored
            if not data:
                return
            self._begin(now)
        if not self._line_done and not self._check_request_line(data):
            return
        try:
            self.h11.receive_data(data)
        except RuntimeError:  # h11 refuses data after the client's EOF or an error
            self.close()
            return
        self._process()

    def eof_received(self) -> bool:
        if self.state in (State.HEADERS, State.BODY):
            self.h11.receive_data(b"")
            self._process()
        if self.state in (State.DISPATCHED, State.WRITING):
            return True  # a client may half-close after sending its request: it still reads the answer
        self.close()
        return False

    def pause_writing(self) -> None:
        pass  # the send timeout bounds how long an unread answer may wait

    def resume_writing(self) -> None:
        if self.state is State.WRITING:
            self._check_drained()

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = State.CLOSED
        self._release_body()
        self.server.closed(self)

    # -- parsing -----------------------------------------------------------------------------------------------

    def _begin(self, now: float) -> None:
        self.state = State.HEADERS
        self.requests += 1
        self.deadline = now + self.limits.header_timeout_s
        self.started = time.perf_counter()

    def _check_request_line(self, data: bytes) -> bool:
        """Refuse a request line over ``LINE_LIMIT`` before it is buffered whole (414)."""
        self._line += data[: LINE_LIMIT + 2 - len(self._line)]
        end = self._line.find(b"\n")
        if end == -1 and len(self._line) <= LINE_LIMIT:
            return True
        self._line_done = True
        if end == -1 or end > LINE_LIMIT + 1:
            self._fail(RequestLineTooLong(f"the request line is over {LINE_LIMIT} bytes"))
            return False
        self._line = self._line[:end]
        return True

    def _process(self) -> None:
        while self.state in (State.HEADERS, State.BODY):
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                too_large = exc.error_status_hint == 431
                self._fail((HeadersTooLarge if too_large else BadRequest)(f"malformed request: {exc}"))
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                self._on_request(event)
            elif isinstance(event, h11.Data):
                self._on_data(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self._dispatch()
            elif isinstance(event, h11.ConnectionClosed):
                self.close()

    def _on_request(self, event: h11.Request) -> None:
        self.method = event.method.decode("ascii", errors="replace")
        self.http_version = event.http_version.decode("ascii", errors="replace")
        target, _, query = _origin_form(event.target).partition(b"?")
        self.path = unquote_to_bytes(target).decode("latin-1")
        self.query = query.decode("latin-1")
        for name, value in event.headers:
            if len(name) + len(value) + 2 > FIELD_LIMIT:
                self._fail(HeadersTooLarge(f"header {name[:64].decode('latin-1')} is over {FIELD_LIMIT} bytes"))
                return
            key, text = name.decode("latin-1").lower(), value.decode("latin-1")
            self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text
        self.request_id = request_id(self.headers.get("x-request-id"))
        if len(event.headers) > FIELDS_LIMIT:
            self._fail(HeadersTooLarge(f"the request has more than {FIELDS_LIMIT} header fields"))
            return
        if "content-length" in self.headers and "transfer-encoding" in self.headers:
            # Framed two ways: a proxy before us may have read it the other way (request smuggling).
            self._fail(BadRequest("malformed request: both Content-Length and Transfer-Encoding"))
            return
        length = int(self.headers["content-length"]) if "content-length" in self.headers else None
        if length is not None and length > self.limits.max_body_bytes:
            self._fail(_too_large(self.limits.max_body_bytes))
            return
        refused = self.server.app.hooks.admit(self.method, self.path, self.headers)
        if refused is not None:
            self._fail(refused)
            return
        if not self.server.budget.take(length or 0):
            self._fail(Overloaded("this server holds as many request bodies as it may (MAX_BUFFERED_MB); try again"))
            return
        # Closed by RequestBody.release: the connection's, or the request's once it is dispatched.
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115
        self.body = RequestBody(spool, self.server.budget)
        self.body.reserved = length or 0
        self.state = State.BODY
        self.body_started = self.server.clock()
        self.deadline = self.body_started + self.limits.read_timeout_s
        if self.h11.they_are_waiting_for_100_continue:
            self._write(self.h11.send(h11.InformationalResponse(status_code=100, headers=[])))

    def _on_data(self, data: bytes) -> None:
        self.body_bytes += len(data)
        if self.body_bytes > self.limits.max_body_bytes:
            self._fail(_too_large(self.limits.max_body_bytes))  # a chunked body: refused, never cut
            return
        if self.body is None:
            return
        if self.body_bytes > self.body.reserved:
            if not self.server.budget.take(self.body_bytes - self.body.reserved):
                self._fail(Overloaded("this server holds as many request bodies as it may (MAX_BUFFERED_MB)"))
                return
            self.body.reserved = self.body_bytes
        self.body.file.write(data)

    # -- running the app ---------------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        if self.transport is None or self.body is None:
            return
        self.state = State.DISPATCHED
        self.dispatched_at = self.server.clock()
        self.transport.pause_reading()
        # From here the request owns its body: it is released when the app is done reading it, whatever happens
        # to the connection meanwhile (a quick stop may abort it while the app still reads).
        body, self.body = self.body, None
        body.file.seek(0)
        environ = self._environ(body.file)
        loop = asyncio.get_running_loop()
        future = self.server.pool.submit(run_wsgi, self.server.app.wsgi, environ, body)
        future.add_done_callback(functools.partial(_on_loop, loop, functools.partial(self._on_answer, body)))

    def _environ(self, body: IO[bytes]) -> dict[str, Any]:
        environ: dict[str, Any] = {
            "REQUEST_METHOD": self.method,
            "SCRIPT_NAME": "",
            "PATH_INFO": self.path,
            "QUERY_STRING": self.query,
            "SERVER_NAME": self.server.server_name,
            "SERVER_PORT": str(self.server.server_port),
            "SERVER_PROTOCOL": f"HTTP/{self.http_version}",
            "REMOTE_ADDR": self.peer[0],
            "REMOTE_PORT": str(self.peer[1]),
            "CONTENT_LENGTH": str(self.body_bytes),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": body,
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
            "wsgi.input_terminated": True,
            ENVIRON_RECEIVED: time.perf_counter(),
            ENVIRON_REQUEST_BYTES: self.body_bytes,
        }
        for name, value in self.headers.items():
            if name == "content-type":
                environ["CONTENT_TYPE"] = value
            elif name not in ("content-length", "transfer-encoding"):  # the body is whole: its length is known
                environ["HTTP_" + name.upper().replace("-", "_")] = value
        environ["HTTP_X_REQUEST_ID"] = self.request_id  # one id for the request, whoever answers it
        return environ

    def _on_answer(self, body: RequestBody, future: Future[tuple[int, str, list[tuple[str, str]], bytes]]) -> None:
        self.dispatched_at = None
        if future.cancelled():
            body.release()  # never run (the pool shut down first): nobody else will
            self.abort()
            return
        if self.state is not State.DISPATCHED:
            return  # the client went away meanwhile
        try:
            status, reason, headers, content = future.result()
        except Exception:
            log.exception("the app failed on %s %s", self.method, self.path)
            self._fail(ProxyError("internal error; the server log has the details"))
            return
        self._respond(status, reason, headers, content)

    def _respond(self, status: int, reason: str, headers: list[tuple[str, str]], body: bytes) -> None:
        head_only = self.method == "HEAD"
        kept = [
            (name, value)
            for name, value in headers
            if name.lower() not in ("transfer-encoding", "connection")
            and not (name.lower() == "content-length" and not head_only)
        ]
        if not head_only:
            kept.append(("Content-Length", str(len(body))))
        if self.server.draining:
            kept.append(("Connection", "close"))
        try:
            data = self.h11.send(h11.Response(status_code=status, headers=kept, reason=reason.encode("latin-1")))
            if not head_only and body:
                data = (data or b"") + (self.h11.send(h11.Data(data=body)) or b"")
            data = (data or b"") + (self.h11.send(h11.EndOfMessage()) or b"")
        except h11.LocalProtocolError as exc:
            log.error("cannot send the app's %d answer to %s %s: %s", status, self.method, self.path, exc)
            self.abort()
            return
        self.state = State.WRITING
        self.deadline = self.server.clock() + self.limits.send_timeout_s
        self._write(data)
        self._check_drained()

    def _check_drained(self) -> None:
        if self.transport is None or self.transport.get_write_buffer_size() > 0:
            return
        if self.server.draining or h11.MUST_CLOSE in (self.h11.our_state, self.h11.their_state):
            self.close()
            return
        try:
            self.h11.start_next_cycle()
        except h11.LocalProtocolError:
            self.close()
            return
        self._reset_request()
        self.state = State.IDLE
        self.deadline = self.server.clock() + self.limits.keepalive_timeout_s
        self.transport.resume_reading()
        pending, closed = self.h11.trailing_data
        if pending.startswith((b"\r", b"\n")):
            # Empty lines before the pipelined request's line, which h11 refuses ("no request line"): a parser of
            # its own (as start_next_cycle leaves it: both sides idle) is given what follows them.
            pending = pending.lstrip(_EMPTY_LINES)
            self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=HEAD_LIMIT)
            if pending:
                self.h11.receive_data(pending)
            if closed:
                self.h11.receive_data(b"")  # the client's EOF, after what it sent
        if pending:
            self._begin(self.server.clock())
            self._line_done = True
            self._process()
        elif closed:
            self.close()  # the client sent its last request (and empty lines) and closed its side

    # -- the front's own answers -------------------------------------------------------------------------------

    def _fail(self, error: ProxyError) -> None:
        """Answer ``error`` without the app, in the shape of the path's routes, and close after a lingering read."""
        if self.transport is None or self.state in (State.LINGERING, State.CLOSED):
            return
        self._release_body()
        self.request_id = self.request_id or request_id(None)
        path = self.path or self._path_from_line()
        content_type, body = self.server.app.hooks.error(path, error.status, error.message, self.request_id)
        reason = _reason(error.status)
        lines = [
            f"HTTP/1.1 {error.status} {reason}",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}",
            "Connection: close",
            f"X-Request-ID: {self.request_id}",
            *(f"{name}: {value}" for name, value in self.server.app.headers),
            *(f"{name}: {value}" for name, value in error.headers.items()),
        ]
        self._write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        seconds = time.perf_counter() - self.started if self.started else 0.0
        count_request("(front)", self.method or "NONE", error.status, seconds)
        log_access(
            access_entry(
                request_id=self.request_id,
                remote_addr=self.peer[0],
                method=self.method or "-",
                path=path or "-",
                route="(front)",
                status=error.status,
                seconds=seconds,
                request_bytes=self.body_bytes,
                response_bytes=len(body),
                user_agent=self.headers.get("user-agent", ""),
                error=error.message,
            )
        )
        self._linger()

    def _path_from_line(self) -> str:
        parts = self._line.split(b" ")
        return unquote_to_bytes(_origin_form(parts[1]).partition(b"?")[0]).decode("latin-1") if len(parts) >= 2 else ""

    def _linger(self) -> None:
        """Stop writing, then read and drop what the client still sends for a while, as nginx's lingering close
        does: a client that writes its whole body before reading (urllib, .NET) then reads the answer."""
        self.state = State.LINGERING
        if self.transport is None:
            return
        now = self.server.clock()
        self._linger_end = now + LINGER_S
        self.deadline = now + LINGER_IDLE_S
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.transport.resume_reading()

    # -- time --------------------------------------------------------------------------------------------------

    def check_time(self, now: float) -> None:
        """Apply this connection's time bounds (called by the server's sweeper)."""
        if now <= self.deadline and not (self.state is State.BODY and self._too_slow(now)):
            return
        if self.state is State.IDLE or self.state is State.LINGERING:
            self.close()  # an idle keep-alive connection, or a linger that is over: nothing to say
        elif self.state is State.HEADERS:
            timeout = self.limits.header_timeout_s
            self._fail(RequestTimeout(f"the request's headers did not arrive within {timeout:g} s"))
        elif self.state is State.BODY:
            if now > self.deadline:
                self._fail(RequestTimeout(f"the request body did not arrive within {self.limits.read_timeout_s:g} s"))
            else:
                rate = self.body_bytes / max(now - self.body_started, 1e-9)
                self._fail(
                    RequestTimeout(
                        f"the request body arrives at {rate:.0f} bytes/s, slower than the "
                        f"{self.limits.min_rate_bytes} bytes/s this server waits for"
                    )
                )
        elif self.state is State.WRITING:
            self.abort()  # the client does not read its answer

    def _too_slow(self, now: float) -> bool:
        elapsed = now - self.body_started
        return (
            self.limits.min_rate_bytes > 0
            and elapsed > BODY_GRACE_S
            and self.body_bytes < self.limits.min_rate_bytes * elapsed
        )

    # -- plumbing ----------------------------------------------------------------------------------------------

    def _write(self, data: bytes | None) -> None:
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _release_body(self) -> None:
        """Release a body still arriving (a dispatched one belongs to its request)."""
        if self.body is not None:
            self.body.release()
            self.body = None

    def close(self) -> None:
        """Close once what was written has been sent."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
        self.state = State.CLOSED

    def abort(self) -> None:
        """Close now, dropping what was not sent."""
        if self.transport is not None:
            self.transport.abort()
        self.state = State.CLOSED


def _on_loop(loop: asyncio.AbstractEventLoop, callback: Callable[[Future[Any]], None], future: Future[Any]) -> None:
    """Hand a finished (or cancelled) request back to the loop: ``callback(future)`` runs there, one handle.

    Not ``loop.run_in_executor``: it chains an asyncio future to the pool's, which costs the loop a second pass
    (and a second ``select``) after the app's answer before the answer is sent, on every request, at the moment the
    loop wakes from the model's wait.
    """
    with contextlib.suppress(RuntimeError):  # the loop is closed: the process is stopping, nobody waits for it
        loop.call_soon_threadsafe(callback, future)


def run_wsgi(app: WSGIApp, environ: dict[str, Any], body: RequestBody) -> tuple[int, str, list[tuple[str, str]], bytes]:
    """Call the WSGI app in a thread of the pool and collect its whole answer: status, reason, headers, body.
    The request's body is released when the app is done, answer or error."""
    try:
        return _call(app, environ)
    finally:
        body.release()


def _call(app: WSGIApp, environ: dict[str, Any]) -> tuple[int, str, list[tuple[str, str]], bytes]:
    captured: list[Any] = []
    chunks: list[bytes] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
        if exc_info is not None and captured:
            raise exc_info[1].with_traceback(exc_info[2])
        captured[:] = [status, headers]
        return chunks.append

    result = app(environ, start_response)
    try:
        chunks.extend(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    status, headers = captured
    code, _, reason = status.partition(" ")
    return int(code), reason, list(headers), b"".join(chunks)


def _origin_form(target: bytes) -> bytes:
    """The path and query of a request target: an absolute-form one (``http://host/path?q``, which RFC 9112 3.2.2
    says a server must accept) without its scheme and authority (the Host header names the host)."""
    scheme, separator, rest = target.partition(b"://")
    if not separator or scheme.lower() not in (b"http", b"https"):
        return target
    start = min((index for index in (rest.find(b"/"), rest.find(b"?")) if index >= 0), default=len(rest))
    path = rest[start:]
    return path if path.startswith(b"/") else b"/" + path


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"request body too large; the limit is {limit} bytes (MAX_BODY_BYTES)")
