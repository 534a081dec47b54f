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

from proxy.front.balance import Peers
from proxy.front.server import FrontServer
from proxy.front.state import FrontApp

HEARTBEAT_S = 1.0


class FrontWorker(Worker):  # type: ignore[misc]  # gunicorn ships no type information
    """A gunicorn worker serving the app through ``FrontServer``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.served: FrontApp | None = None
        self.front: FrontServer | None = None
        self._quick = False
        self._stopping: asyncio.Event | None = None

    def init_process(self) -> None:
        """Make this process's loop before gunicorn installs the signal handlers on it."""
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        super().init_process()

    def load_wsgi(self) -> None:
        """Take what the application declares for the front: a ``FrontApp`` (``python -m proxy`` gives one), or a
        bare WSGI callable served with the default bounds. Anything else stops the worker at start-up."""
        loaded = self.app.wsgi()
        if isinstance(loaded, FrontApp):
            self.served = loaded
        elif callable(loaded):
            self.served = FrontApp.plain(loaded)
        else:
            raise TypeError(f"the front serves a FrontApp or a WSGI callable, not {type(loaded).__name__}")
        self.wsgi = self.served.wsgi

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
        served = self.served
        if self.loop is None or served is None:
            return
        try:
            self.loop.run_until_complete(self._serve(served))
        finally:
            served.close()
            self.loop.close()

    async def _serve(self, served: FrontApp) -> None:
        address = self.sockets[0].getsockname() if self.sockets else ("localhost", 80)
        peers = Peers.installed()
        self.front = FrontServer(
            served,
            threads=max(1, self.cfg.threads),
            share=peers.join(os.getpid()) if peers is not None else None,
            server_name=str(address[0]) if isinstance(address, tuple) else "localhost",
            server_port=int(address[1]) if isinstance(address, tuple) and len(address) > 1 else 80,
        )
        self._stopping = asyncio.Event()
        await self.front.listen(listener.sock for listener in self.sockets)
        announcing: asyncio.Task[None] | None = None
        if served.announce_when_ready is not None and self.age == 1:  # the first worker says it, once
            loop = asyncio.get_running_loop()
            announcing = loop.create_task(served.announce_when_ready(loop, self.front.pool))
        while self.alive:
            oldest = self.front.oldest_dispatch()
            if oldest is None or self.front.clock() - oldest < served.stuck_after_s:
                self.notify()
            if self.ppid != os.getppid():
                self.log.info("the master is gone; worker %s stops", self.pid)
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=HEARTBEAT_S)
        if announcing is not None:
            announcing.cancel()
        await self.front.shutdown(0.0 if self._quick else float(self.cfg.graceful_timeout))
