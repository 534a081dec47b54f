"""The front's per-process server: the listening sockets, the connections, the timeout sweeper, the app's threads.

``FrontServer`` needs only an asyncio loop and a ``FrontApp``; the gunicorn worker (``worker``) gives it listening
sockets, and tests can drive its connections with a transport of their own. A connection sees the server through
``ServerState`` only (``state``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from proxy.front.connection import Connection
from proxy.front.state import Budget, FrontApp, ServerState

log = logging.getLogger(__name__)

SWEEP_S = 0.25  # how often timeouts are checked: they fire within this much of their bound


class FrontServer:
    """Connections, bounds and the thread pool of one process."""

    def __init__(
        self,
        app: FrontApp,
        *,
        threads: int,
        server_name: str = "localhost",
        server_port: int = 80,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.clock = clock
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="app")
        self.state = ServerState(
            app=app,
            clock=clock,
            budget=Budget(app.limits.max_buffered_bytes),
            pool=self.pool,
            server_name=server_name,
            server_port=server_port,
        )
        self._sweeper: asyncio.Task[None] | None = None
        self._servers: list[asyncio.base_events.Server] = []

    @property
    def budget(self) -> Budget:
        """The process's request-body budget."""
        return self.state.budget

    @property
    def connections(self) -> set[Any]:
        """The open connections."""
        return self.state.connections

    def connection(self) -> Connection:
        """A new connection's protocol (the ``protocol_factory`` of ``loop.create_server``)."""
        return Connection(self.state)

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

    def oldest_dispatch(self) -> float | None:
        """When the longest-running request of the app started (``clock()``), or None when none runs."""
        started = [c.dispatched_at for c in self.connections if c.dispatched_at is not None]
        return min(started) if started else None

    def busy(self) -> bool:
        """True while some connection has a request arriving, running or answering."""
        return any(connection.busy for connection in self.connections)

    async def shutdown(self, timeout_s: float) -> None:
        """Stop accepting, close idle connections, let requests under way finish (up to ``timeout_s``)."""
        self.state.draining = True
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
