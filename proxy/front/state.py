"""What the front's pieces declare to each other: the application it serves, and a connection's view of its server.

    FrontApp      everything the front uses of the application: the WSGI callable, the bounds, the hooks, when a
                  request counts as stuck, what to close at exit, the ready announcement. Built once at start-up,
                  so a missing piece fails there, not in production.
    ServerState   what one connection may see and touch of the process's state (as uvicorn's protocols see a
                  ``ServerState``): the app, the clock, the body budget, the thread pool, the open connections.

``connection`` and ``server`` both import this module and nothing of each other's but what ``server`` builds.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Coroutine, Iterable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

from proxy.errors import ProxyError
from proxy.metrics import CONNECTIONS_REFUSED
from proxy.settings import FrontLimits, Settings

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
Announce = Callable[[asyncio.AbstractEventLoop, Executor], Coroutine[Any, Any, None]]


class Hooks(Protocol):
    """What the front asks of the app without running a request through it (``proxy.app.AppHooks``)."""

    def admit(self, method: str, path: str, headers: dict[str, str]) -> ProxyError | None:
        """The error for a request its headers alone condemn (headers with lower-case names), or None."""
        ...

    def error(self, path: str, status: int, message: str, request_id: str) -> tuple[str, bytes]:
        """Content type and body for an error the front answers itself, in the shape of the path's routes."""
        ...


class PlainHooks:
    """Hooks for an app that offers none: admit everything, answer errors as ``{"error": message}``."""

    def admit(self, method: str, path: str, headers: dict[str, str]) -> ProxyError | None:
        """Admit every request."""
        return None

    def error(self, path: str, status: int, message: str, request_id: str) -> tuple[str, bytes]:
        """``{"error": message}``."""
        return "application/json", json.dumps({"error": message}).encode()


@dataclass(frozen=True)
class FrontApp:
    """Everything the front uses of the application it serves."""

    wsgi: WSGIApp
    limits: FrontLimits
    hooks: Hooks
    stuck_after_s: float  # a request running longer stops the worker's heartbeat, so gunicorn restarts it
    close: Callable[[], None]  # called once when the worker exits
    announce_when_ready: Announce | None = None  # the first worker awaits it once, to say where the service is
    # Headers every answer the front gives itself carries (the app's own answers carry what the app sets).
    headers: tuple[tuple[str, str], ...] = (("X-Content-Type-Options", "nosniff"),)

    @classmethod
    def plain(cls, wsgi: WSGIApp) -> FrontApp:
        """A WSGI app that declares nothing of its own: the settings' default bounds, plain hooks, nothing to close."""
        defaults = Settings()
        return cls(wsgi, defaults.front, PlainHooks(), defaults.request_timeout_s + 30, close=lambda: None)


class Budget:
    """Request-body bytes buffered by the whole process at once (memory or spool files).

    Taken on the event loop as bodies arrive; given back by whoever holds a body when it is done with it, which for
    a running request is the app's thread: hence the lock.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._used = 0
        self._lock = threading.Lock()

    def take(self, nbytes: int) -> bool:
        """Reserve ``nbytes`` if they fit."""
        with self._lock:
            if self._used + nbytes > self.limit:
                return False
            self._used += nbytes
            return True

    def give(self, nbytes: int) -> None:
        """Return bytes reserved before."""
        with self._lock:
            self._used = max(0, self._used - nbytes)

    @property
    def used(self) -> int:
        """Bytes reserved now."""
        return self._used


class RequestBody:
    """A request's buffered body and its share of the budget, released once, by whoever holds it last: the
    connection while the body arrives, then the request that reads it as ``wsgi.input``."""

    def __init__(self, file: IO[bytes], budget: Budget) -> None:
        self.file = file
        self.reserved = 0
        self._budget = budget
        self._released = False

    def release(self) -> None:
        """Close the file and give its share back (idempotent)."""
        if self._released:
            return
        self._released = True
        self._budget.give(self.reserved)
        self.reserved = 0
        self.file.close()


class Tracked(Protocol):
    """What the server does with a connection it tracks."""

    @property
    def busy(self) -> bool:
        """True while a request is arriving, running or being answered."""
        ...

    @property
    def dispatched_at(self) -> float | None:
        """When the request running in the app started (the server's clock), or None."""
        ...

    def check_time(self, now: float) -> None:
        """Apply the connection's time bounds."""
        ...

    def closable_when_draining(self, now: float, grace_s: float) -> bool:
        """Whether a stopping server may close it now."""
        ...

    def close(self) -> None:
        """Close once what was written has been sent."""
        ...

    def abort(self) -> None:
        """Close now."""
        ...


@dataclass
class ServerState:
    """A connection's one view of its server."""

    app: FrontApp
    clock: Callable[[], float]
    budget: Budget
    pool: Executor
    server_name: str = "localhost"
    server_port: int = 80
    connections: set[Tracked] = field(default_factory=set)
    draining: bool = False
    changed: Callable[[], None] = lambda: None  # called when a connection opens or closes (the server rebalances)

    def opened(self, connection: Tracked) -> None:
        """Track a new connection."""
        self.connections.add(connection)
        self.changed()

    def closed(self, connection: Tracked) -> None:
        """Stop tracking a connection that is gone."""
        if connection in self.connections:
            self.connections.discard(connection)
            self.changed()

    @property
    def limits(self) -> FrontLimits:
        """The front's bounds."""
        return self.app.limits

    def refused(self) -> None:
        """Count a connection refused for MAX_CONNECTIONS."""
        CONNECTIONS_REFUSED.inc()
