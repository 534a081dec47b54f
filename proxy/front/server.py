"""The front's per-process server: the listening sockets, the connections, the timeout sweeper, the app's threads.

``FrontServer`` needs only an asyncio loop and a ``FrontApp``; the gunicorn worker (``worker``) gives it listening
sockets, and tests can drive its connections with a transport of their own. A connection sees the server through
``ServerState`` only (``state``). The server accepts connections itself, only while it holds no more than the least
loaded of its sibling workers (``balance``), so keep-alive connections spread over the workers: it always watches
the shared socket, and a connection it may not take now is left to the sibling that may (it looks again
``RECHECK_S`` later).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from proxy.front.balance import RECHECK_S, Share
from proxy.front.connection import Connection
from proxy.front.state import Budget, FrontApp, ServerState

log = logging.getLogger(__name__)

SWEEP_S = 0.25  # how often timeouts are checked: they fire within this much of their bound
ACCEPT_BATCH = 16  # connections taken off the socket per wake-up, at most (then the loop serves the others)
# Out of file descriptors (or buffers): the worker stops accepting this long, then tries again. The socket stays
# readable meanwhile, so watching it would only spin the loop.
ACCEPT_RETRY_S = 0.5
# A stopping worker leaves a connection it accepted but that has sent nothing yet this long for its first request
# (answered with Connection: close): the client is sending it, and would not retry it on a fresh connection.
FIRST_REQUEST_GRACE_S = 1.0


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
        share: Share | None = None,
    ) -> None:
        self.app = app
        self.clock = clock
        self.share = share
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="app")
        self.state = ServerState(
            app=app,
            clock=clock,
            budget=Budget(app.limits.max_buffered_bytes),
            pool=self.pool,
            server_name=server_name,
            server_port=server_port,
        )
        self.state.changed = self._rebalance
        self._sweeper: asyncio.Task[None] | None = None
        self._sockets: list[socket.socket] = []
        self._watching = False
        self._backing_off = False  # declined a connection a moment ago: looks again RECHECK_S later
        self._starved = False  # accepting failed (out of descriptors): warned once, until an accept succeeds
        self._starting: set[asyncio.Task[None]] = set()
        self._pending = 0  # accepted, not yet a connection of ``state``

    @property
    def budget(self) -> Budget:
        """The process's request-body budget."""
        return self.state.budget

    @property
    def connections(self) -> set[Any]:
        """The open connections."""
        return self.state.connections

    def connection(self) -> Connection:
        """A new connection's protocol."""
        return Connection(self.state)

    async def listen(self, sockets: Iterable[socket.socket]) -> None:
        """Serve on already-bound listening sockets (shared with the sibling workers), and start checking timeouts."""
        for sock in sockets:
            sock.setblocking(False)
            self._sockets.append(sock)
        self._rebalance()
        self.start_sweeping()

    @property
    def held(self) -> int:
        """The connections this worker holds, those it has accepted and is still setting up included."""
        return len(self.state.connections) + self._pending

    def _rebalance(self) -> None:
        """Publish this worker's count (and beat), and watch the sockets unless stopping or backing off."""
        if self.share is not None:
            self.share.publish(self.held)
        self._watch(not self.state.draining and not self._backing_off)

    def _watch(self, on: bool) -> None:
        if on == self._watching or not self._sockets:
            return
        loop = asyncio.get_running_loop()
        for sock in self._sockets:
            if on:
                loop.add_reader(sock.fileno(), self._accept, sock)
            else:
                loop.remove_reader(sock.fileno())
        self._watching = on

    def _back_off(self, seconds: float) -> None:
        """Stop watching the sockets and look again ``seconds`` later (only then: with no connection arriving,
        nothing polls). What is queued meanwhile stays on the shared socket, for a sibling or for later."""
        self._watch(False)
        if not self._backing_off:
            self._backing_off = True
            asyncio.get_running_loop().call_later(seconds, self._resume)

    def _resume(self) -> None:
        self._backing_off = False
        self._rebalance()

    def _take_queued(self) -> None:
        """Stopping: take every connection the kernel has queued (each gets ``FIRST_REQUEST_GRACE_S`` for its first
        request, answered with ``Connection: close``), then close this process's listening sockets.

        gunicorn's master closes its own copy before it signals the workers; once every worker has closed its copy
        too, the kernel refuses new connections (which a client may retry elsewhere) instead of queueing them on a
        socket nobody accepts from, which resets them when the last worker exits (clients see a reset for a request
        they sent, which they cannot safely retry). A sibling still running takes what is queued after this one
        has closed; the last to close takes the rest.
        """
        loop = asyncio.get_running_loop()
        for sock in self._sockets:
            with contextlib.suppress(OSError):  # out of descriptors: what is left is reset at exit, as before
                while (conn := _next_queued(sock)) is not None:
                    self._start(loop, conn)
            sock.close()
        self._sockets = []

    def _start(self, loop: asyncio.AbstractEventLoop, conn: socket.socket) -> None:
        """Make an accepted socket a connection, counted as held while it is set up."""
        conn.setblocking(False)
        self._pending += 1
        task = loop.create_task(self._serve(conn))
        self._starting.add(task)  # the loop holds tasks weakly: a connection being set up must not vanish
        task.add_done_callback(self._starting.discard)

    def _accept(self, sock: socket.socket) -> None:
        """Take queued connections off the shared socket, while this worker's share allows."""
        loop = asyncio.get_running_loop()
        for _ in range(ACCEPT_BATCH):
            if self.share is not None and not self.share.may_accept(self.held):
                self._back_off(RECHECK_S)  # a sibling that holds fewer takes what comes; this one looks again soon
                return
            try:
                conn = _next_queued(sock)
            except OSError as exc:  # out of file descriptors or buffers: leave it queued for a sibling, or later
                if not self._starved:
                    self._starved = True
                    log.warning("cannot accept connections: %s; trying again every %g s", exc, ACCEPT_RETRY_S)
                self._back_off(ACCEPT_RETRY_S)
                return
            if conn is None:
                return  # a sibling took it, or nothing is left
            if self._starved:
                self._starved = False
                log.info("accepting connections again")
            self._start(loop, conn)
            if self.share is not None:
                self.share.publish(self.held)  # at once: siblings decide on it

    async def _serve(self, conn: socket.socket) -> None:
        """Make an accepted socket a connection. It counts in ``_pending`` until its protocol exists (made just
        before the connection is, which from then on counts itself), or until setting it up ends without one, however
        it ends: exactly once."""
        counted = True

        def protocol() -> Connection:
            nonlocal counted
            counted = False
            self._pending -= 1
            return self.connection()

        try:
            await asyncio.get_running_loop().connect_accepted_socket(protocol, conn)
        except OSError:
            conn.close()
        finally:
            if counted:
                self._pending -= 1

    def start_sweeping(self) -> None:
        """Check every connection's bounds every ``SWEEP_S`` (idempotent)."""
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_S)
            self.sweep()

    def sweep(self) -> None:
        """Apply the time bounds once (the sweeper calls it; tests may call it with their own clock), and beat:
        siblings see this worker live, and it looks whether it may accept again."""
        now = self.clock()
        for connection in list(self.connections):
            connection.check_time(now)
        self._rebalance()

    def oldest_dispatch(self) -> float | None:
        """When the longest-running request of the app started (``clock()``), or None when none runs."""
        started = [c.dispatched_at for c in self.connections if c.dispatched_at is not None]
        return min(started) if started else None

    def busy(self) -> bool:
        """True while some connection has a request arriving, running or answering."""
        return any(connection.busy for connection in self.connections)

    async def shutdown(self, timeout_s: float) -> None:
        """Stop accepting (taking what the kernel has queued, then closing the listening sockets: ``_take_queued``),
        close idle connections (a new one once it has had ``FIRST_REQUEST_GRACE_S`` to send its first request), let
        requests under way finish (up to ``timeout_s``). A quick stop (``timeout_s`` 0) takes nothing more."""
        self.state.draining = True
        self._watch(False)
        if self.share is not None:
            self.share.leave()
        if timeout_s > 0:
            self._take_queued()
        deadline = self.clock() + timeout_s
        while True:
            now = self.clock()
            for connection in list(self.connections):
                if connection.closable_when_draining(now, FIRST_REQUEST_GRACE_S):
                    connection.close()
            if (not self.connections and not self._pending) or self.clock() >= deadline:
                break
            await asyncio.sleep(0.05)
        for connection in list(self.connections):
            connection.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
        self.pool.shutdown(wait=False, cancel_futures=True)


def _next_queued(sock: socket.socket) -> socket.socket | None:
    """The next connection queued on the listening ``sock``, or None when none is; one the client aborted while
    queued is skipped. ``OSError`` when accepting fails otherwise (out of file descriptors or buffers)."""
    while True:
        try:
            return sock.accept()[0]
        except (BlockingIOError, InterruptedError):
            return None
        except ConnectionAbortedError:
            continue
