"""The front's per-process state: the connections, their bounds, the buffered-bytes budget and the app's threads.

``FrontServer`` needs only an asyncio loop, a WSGI app and ``FrontLimits``; the gunicorn worker (``worker``) gives
it listening sockets, and tests can drive its connections with a transport of their own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from proxy.metrics import CONNECTIONS_REFUSED
from proxy.settings import FrontLimits

if TYPE_CHECKING:
    from proxy.front.connection import Connection

log = logging.getLogger(__name__)

SWEEP_S = 0.25  # how often timeouts are checked: they fire within this much of their bound
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class Hooks(Protocol):
    """What the front asks of the app without running a request through it (``proxy.app.FrontHooks``)."""

    def admit(self, method: str, path: str, headers: dict[str, str]) -> Any:
        """An error (with ``status``, ``message``, ``headers``) for a request its headers alone condemn, or None."""
        ...

    def error(self, path: str, status: int, message: str, request_id: str) -> tuple[str, bytes]:
        """Content type and body for an error the front answers itself, in the shape of the path's routes."""
        ...


class PlainHooks:
    """Hooks for an app that offers none: admit everything, answer errors as ``{"error": message}``."""

    def admit(self, method: str, path: str, headers: dict[str, str]) -> Any:
        return None

    def error(self, path: str, status: int, message: str, request_id: str) -> tuple[str, bytes]:
        import json

        return "application/json", json.dumps({"error": message}).encode()


@dataclass
class Budget:
    """Request-body bytes buffered by the whole process at once (memory or spool files)."""

    limit: int
    used: int = 0

    def take(self, nbytes: int) -> bool:
        """Reserve ``nbytes`` if they fit."""
        if self.used + nbytes > self.limit:
            return False
        self.used += nbytes
        return True

    def give(self, nbytes: int) -> None:
        """Return bytes reserved before."""
        self.used = max(0, self.used - nbytes)


class FrontServer:
    """Connections, bounds and the thread pool of one process."""

    def __init__(
        self,
        app: WSGIApp,
        limits: FrontLimits,
        *,
        threads: int,
        hooks: Hooks | None = None,
        server_name: str = "localhost",
        server_port: int = 80,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.limits = limits
        self.hooks: Hooks = hooks or PlainHooks()
        self.server_name = server_name
        self.server_port = server_port
        self.clock = clock
        self.budget = Budget(limits.max_buffered_bytes)
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="app")
        self.connections: set[Connection] = set()
        self.draining = False
        self._sweeper: asyncio.Task[None] | None = None
        self._servers: list[asyncio.base_events.Server] = []

    def connection(self) -> Connection:
        """A new connection's protocol (the ``protocol_factory`` of ``loop.create_server``)."""
        from proxy.front.connection import Connection

        return Connection(self)

    async def listen(self, sockets: Iterable[Any]) -> None:
        """Serve on already-bound listening sockets, and start checking timeouts."""
        loop = asyncio.get_running_loop()
        for sock in sockets:
            self._servers.append(await loop.create_server(self.connection, sock=sock, start_serving=True))
        self.start_sweeping()

    def start_sweeping(self) -> None:
        """Check every connection's bounds every ``SWEEP_S`` (idempotent)."""
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_S)
            self.sweep()

    def sweep(self) -> None:
        """Apply the time bounds once (the sweeper calls it; tests may call it with their own clock)."""
        now = self.clock()
        for connection in list(self.connections):
            connection.check_time(now)

    def refused(self) -> None:
        """Count a connection refused for MAX_CONNECTIONS."""
        CONNECTIONS_REFUSED.inc()

    def oldest_dispatch(self) -> float | None:
        """When the longest-running request of the app started (``clock()``), or None when none runs."""
        started = [c.dispatched_at for c in self.connections if c.dispatched_at is not None]
        return min(started) if started else None

    def busy(self) -> bool:
        """True while some connection has a request arriving, running or answering."""
        return any(connection.busy for connection in self.connections)

    async def shutdown(self, timeout_s: float) -> None:
        """Stop accepting, close idle connections, let requests under way finish (up to ``timeout_s``)."""
        self.draining = True
        for server in self._servers:
            server.close()
        deadline = self.clock() + timeout_s
        while True:
            for connection in list(self.connections):
                if not connection.busy:
                    connection.close()
            if not self.connections or self.clock() >= deadline:
                break
            await asyncio.sleep(0.05)
        for connection in list(self.connections):
            connection.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
        self.pool.shutdown(wait=False, cancel_futures=True)
