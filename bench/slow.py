"""Slow clients: connections held open against a server while ordinary clients are measured.

Four kinds, in equal shares (``SlowClients(port, count)``):

- ``headers``: sends ``POST /classify HTTP/1.1`` and part of its headers, never the blank line that ends them;
- ``trickle``: sends whole headers with ``Content-Length: 1000000``, then its body one byte per second;
- ``silent``: connects and sends nothing;
- ``non-reader``: shrinks its receive buffer to 4 KiB and its segments to 1 KiB (``TCP_MAXSEG``: on loopback's
  64 KiB segments the server's kernel would take 700 KB of answers into its send buffer, as no real network lets
  it), sends eight pipelined ``GET /openapi.json`` (88 KB each) and never reads: the first answer cannot drain, so
  the server holds it, the connection and the seven requests behind it.

One thread sends the trickles. ``open_count()`` reads each socket's TCP state (``TCP_INFO``): a connection the
server closed is in CLOSE_WAIT, one it still holds is ESTABLISHED.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass, field

KINDS = ("headers", "trickle", "silent", "non-reader")
TRICKLE_LENGTH = 1_000_000
PIPELINED = 8
_TCP_ESTABLISHED = 1
_CONNECT_BATCH = 50  # connections opened before a short pause, so the accept backlog never overflows


@dataclass
class SlowClients:
    """``count`` slow connections to ``127.0.0.1:port``, ``KINDS`` in turn; ``open()``, then ``close()``."""

    port: int
    count: int
    sockets: dict[str, list[socket.socket]] = field(default_factory=lambda: {kind: [] for kind in KINDS})
    trickled_bytes: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def open(self) -> None:
        """Open every connection and send its first bytes; start the trickle."""
        for index in range(self.count):
            kind = KINDS[index % len(KINDS)]
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            if kind == "non-reader":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 1024)
            sock.settimeout(10)
            sock.connect(("127.0.0.1", self.port))
            self.sockets[kind].append(sock)
            if kind == "headers":
                sock.sendall(b"POST /classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n")
            elif kind == "trickle":
                sock.sendall(
                    b"POST /classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
                    + f"Content-Length: {TRICKLE_LENGTH}\r\n\r\n".encode()
                )
            elif kind == "non-reader":
                sock.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * PIPELINED)
            if index % _CONNECT_BATCH == _CONNECT_BATCH - 1:
                time.sleep(0.05)
        self._thread = threading.Thread(target=self._trickle, name="slow-trickle", daemon=True)
        self._thread.start()

    def _trickle(self) -> None:
        while not self._stop.wait(1.0):
            for sock in self.sockets["trickle"]:
                with contextlib.suppress(OSError):
                    sock.send(b"\xff")
                    self.trickled_bytes += 1

    def open_count(self) -> dict[str, int]:
        """Per kind, how many connections the server still holds (ESTABLISHED, not closed by the server)."""
        return {kind: sum(1 for sock in socks if _established(sock)) for kind, socks in self.sockets.items()}

    def close(self) -> None:
        """Stop the trickle and close every connection."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        for socks in self.sockets.values():
            for sock in socks:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                sock.close()  # with SO_LINGER 0: a reset, so no socket lingers in TIME_WAIT
            socks.clear()


def _established(sock: socket.socket) -> bool:
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
    except OSError:
        return False
    return info[0] == _TCP_ESTABLISHED
