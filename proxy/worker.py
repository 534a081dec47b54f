"""gunicorn's threaded worker, answering the errors gunicorn itself raises (malformed requests) as JSON.

Requests gunicorn cannot parse (a request line over 8190 bytes, oversized headers, garbage) never reach Flask;
gunicorn answers them with an HTML page. This worker lets gunicorn decide the status and log as usual, then
sends the same status with the API's ``{"error": ...}`` body instead.
"""

from __future__ import annotations

import html
import json
import re
import socket
from typing import Any

from gunicorn.workers.gthread import ThreadWorker

_STATUS_LINE = re.compile(rb"^HTTP/1\.1 (\d{3}) ([^\r\n]*)\r\n")
_MESSAGE = re.compile(rb"</h1>\s*(.*?)\s*</body>", re.DOTALL)


class _Capture:
    """Stands in for the client socket while gunicorn writes its HTML error, keeping the bytes."""

    def __init__(self, client: socket.socket) -> None:
        self._client = client
        self.data = b""

    def gettimeout(self) -> float | None:
        return self._client.gettimeout()

    def setblocking(self, flag: bool) -> None:
        self._client.setblocking(flag)

    def sendall(self, data: bytes) -> None:
        self.data += data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def json_error_response(gunicorn_response: bytes) -> bytes:
    """Turn gunicorn's HTML error response into the same status with a JSON ``{"error": ...}`` body."""
    status = _STATUS_LINE.match(gunicorn_response)
    if status is None:
        return gunicorn_response
    code, reason = status.group(1).decode(), status.group(2).decode("latin-1")
    found = _MESSAGE.search(gunicorn_response)
    detail = html.unescape(found.group(1).decode("latin-1")) if found else ""
    body = json.dumps({"error": f"{reason}: {detail}" if detail else reason}).encode()
    head = (
        f"HTTP/1.1 {code} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
        f"X-Content-Type-Options: nosniff\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


class JsonErrorThreadWorker(ThreadWorker):  # type: ignore[misc]  # gunicorn ships no type information
    """``gthread`` with JSON bodies on gunicorn's own error responses."""

    def handle_error(self, req: Any, client: socket.socket, addr: Any, exc: BaseException) -> None:
        capture = _Capture(client)
        super().handle_error(req, capture, addr, exc)
        try:
            client.sendall(json_error_response(capture.data))
        except OSError:
            self.log.debug("could not send the error response")
