"""The gunicorn worker that runs the front: one asyncio loop per process, the WSGI app in a thread pool.

gunicorn keeps what it is good at: the master process, forking workers and restarting dead ones, the graceful
SIGTERM, the listening sockets. This worker replaces only how a worker reads requests and writes answers.

A heartbeat tells the master the worker lives. It stops while a request has run in the app for longer than
``REQUEST_TIMEOUT_S`` + 30 s (a model call that cannot be interrupted, in embedded mode), so that the master
restarts the stuck worker, as gunicorn's own workers are restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from typing import Any

from gunicorn.workers.base import Worker

from proxy.front.server import FrontServer, PlainHooks
from proxy.settings import FrontLimits

HEARTBEAT_S = 1.0


class FrontWorker(Worker):  # type: ignore[misc]  # gunicorn ships no type information
    """A gunicorn worker serving the app through ``FrontServer``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.front: FrontServer | None = None
        self._quick = False
        self._stopping: asyncio.Event | None = None

    def init_process(self) -> None:
        """Make this process's loop before gunicorn installs the signal handlers on it."""
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        super().init_process()

    def init_signals(self) -> None:
        """SIGTERM drains gracefully; SIGINT and SIGQUIT stop at once; SIGUSR1 reopens the log files."""
        for number in self.SIGNALS:
            signal.signal(number, signal.SIG_DFL)
        loop = self.loop
        if loop is None:
            return
        loop.add_signal_handler(signal.SIGTERM, self._stop, False)
        loop.add_signal_handler(signal.SIGINT, self._stop, True)
        loop.add_signal_handler(signal.SIGQUIT, self._stop, True)
        loop.add_signal_handler(signal.SIGUSR1, self.log.reopen_files)
        loop.add_signal_handler(signal.SIGWINCH, lambda: None)

    def _stop(self, quick: bool) -> None:
        self._quick = self._quick or quick
        self.alive = False
        if self._stopping is not None:
            self._stopping.set()  # wakes the heartbeat loop at once: a stop takes no heartbeat's wait

    def run(self) -> None:
        """Serve until the master or a signal says stop, then drain and close the app's resources."""
        if self.loop is None:
            return
        try:
            self.loop.run_until_complete(self._serve())
        finally:
            close = getattr(getattr(self.wsgi, "front_hooks", None), "close", None)
            if close is not None:
                close()
            self.loop.close()

    async def _serve(self) -> None:
        hooks = getattr(self.wsgi, "front_hooks", None) or PlainHooks()
        limits = getattr(hooks, "limits", None) or FrontLimits()
        address = self.sockets[0].getsockname() if self.sockets else ("localhost", 80)
        self.front = FrontServer(
            self.wsgi,
            limits,
            threads=max(1, self.cfg.threads),
            hooks=hooks,
            server_name=str(address[0]) if isinstance(address, tuple) else "localhost",
            server_port=int(address[1]) if isinstance(address, tuple) and len(address) > 1 else 80,
        )
        self._stopping = asyncio.Event()
        await self.front.listen(listener.sock for listener in self.sockets)
        announce = getattr(hooks, "announce_when_ready", None)
        announcing = None
        if announce is not None and self.age == 1:  # the first worker says it, once
            announcing = asyncio.get_running_loop().create_task(announce(asyncio.get_running_loop(), self.front.pool))
        stuck_after = float(getattr(hooks, "stuck_after_s", 60.0))
        while self.alive:
            oldest = self.front.oldest_dispatch()
            if oldest is None or self.front.clock() - oldest < stuck_after:
                self.notify()
            if self.ppid != os.getppid():
                self.log.info("the master is gone; worker %s stops", self.pid)
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=HEARTBEAT_S)
        if announcing is not None:
            announcing.cancel()
        await self.front.shutdown(0.0 if self._quick else float(self.cfg.graceful_timeout))
