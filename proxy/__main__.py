"""``python -m proxy``: serve the app with gunicorn and the HTTP front, configured from the environment alone."""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import logging
import os
import resource
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from gunicorn.app.base import BaseApplication

from odapi.tfenv import quiet_tensorflow
from proxy.errors import ConfigError
from proxy.front.balance import Peers
from proxy.settings import Settings


class _Server(BaseApplication):  # type: ignore[misc]  # gunicorn ships no type information
    """gunicorn configured from ``Settings``; each worker builds its own app after the fork."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        super().__init__()

    def load_config(self) -> None:
        for key, value in gunicorn_options(self._settings).items():
            self.cfg.set(key, value)
        # In the master, before the workers fork: the table through which they share the connections.
        Peers.install()

    def load(self) -> Any:
        """What the front serves: the app, and everything the front uses of it (``proxy.front.state.FrontApp``)."""
        from proxy.app import create_app, front_app

        return front_app(create_app(self._settings))


def gunicorn_options(settings: Settings) -> dict[str, Any]:
    """The gunicorn settings for these proxy settings."""
    return {
        "bind": [f"{settings.host}:{settings.port}"],
        # The front (proxy.front) reads whole requests on an event loop, then runs the app in a thread: a request
        # spends its time waiting on the model (in TF's own thread pool or over gRPC), which releases the GIL, and
        # threads share one loaded model and one gRPC channel per worker.
        "worker_class": "proxy.front.worker.FrontWorker",
        "workers": settings.workers,
        "threads": settings.threads,
        # The worker's loop beats every second; a worker silent this long is restarted. A request stuck in the model
        # stops the beat once it has run REQUEST_TIMEOUT_S + 30 s (proxy.front.worker).
        "timeout": 30,
        "graceful_timeout": int(settings.request_timeout_s) + 5,
        "backlog": 2048,
        "loglevel": settings.log_level,
        # The app and the front write one line per request themselves (proxy.observability), with its request id.
        "accesslog": None,
        "errorlog": "-",
        "proc_name": "classifyobjects-proxy",
        # No control socket: nothing here uses gunicornc, and it would write under $HOME (read-only in containers).
        "control_socket_disable": True,
        "child_exit": _worker_exited,
        "post_fork": _tune_malloc,
    }


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_MMAP_THRESHOLD = 4 * 1024 * 1024
_TRIM_THRESHOLD = 32 * 1024 * 1024
_ARENA_MAX = 2


def _tune_malloc(_server: Any, _worker: Any) -> None:
    """Keep a worker's image-sized buffers (about 1 MB per 640x480 picture) in the heap between requests.

    By default glibc maps each such buffer fresh and unmaps it when freed, so every request pays page faults
    again; measured with `make bench`, that is about 1 ms of a 640x480 request. The trim threshold covers what one
    request of a 4000x3000 JPEG holds at once (its 1000x750 decode, the pixels, the tensor, the message: about
    11 MB): at 8 MB, each such request faulted 2,800 pages back in, 3.5 ms of its 31. The price is memory: each of
    the worker's two arenas may keep up to 32 MB free for the next request. Not on glibc: nothing to do.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
        libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
        # Few arenas: each of the worker's threads would otherwise keep its own, each holding freed buffers.
        libc.mallopt(_M_ARENA_MAX, _ARENA_MAX)
    except (OSError, AttributeError):
        pass


# Descriptors a worker needs beyond one per connection: its listening socket, the gRPC channel, TensorFlow's files,
# the frame cache and metrics files, and request bodies spooled to disk.
_SPARE_DESCRIPTORS = 256
# What the soft limit is raised to when the hard one is unlimited (Linux's default nr_open; more is refused).
_MOST_DESCRIPTORS = 1 << 20


def raise_open_files_limit(max_connections: int) -> int:
    """Raise the soft limit on open files to the hard one, for this process and the workers it forks, and return
    it; warn when it is still short of ``max_connections`` plus spare.

    Many systems start a process with a soft limit of 1,024, under the 1,000 connections a worker holds by default
    (MAX_CONNECTIONS): past it, accepting fails and new connections wait in the kernel's queue instead of getting the
    front's 503. The hard limit is the administrator's bound; the soft one is the program's to raise (as Go's
    runtime does for every program).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = _MOST_DESCRIPTORS if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass
    needed = max_connections + _SPARE_DESCRIPTORS
    if soft != resource.RLIM_INFINITY and soft < needed:
        logging.getLogger("proxy").warning(
            "the open-files limit is %d (ulimit -n), under MAX_CONNECTIONS=%d plus %d spare: past it, new connections "
            "wait unanswered; raise the limit or lower MAX_CONNECTIONS",
            soft,
            max_connections,
            _SPARE_DESCRIPTORS,
        )
    return soft


def _worker_exited(_server: Any, worker: Any) -> None:
    """Free a dead worker's row of the connection table, and let Prometheus' multiprocess collector drop its live
    series."""
    from prometheus_client import multiprocess

    peers = Peers.installed()
    if peers is not None:
        peers.forget(worker.pid)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


@contextmanager
def _frame_cache_directory(settings: Settings) -> Iterator[Settings]:
    """One private directory for the frame cache every worker shares (removed at exit), in the settings."""
    if settings.frame_cache_s <= 0 or settings.frame_cache_dir is not None:
        yield settings
        return
    from proxy.framecache import create_directory, remove_directory

    directory, owner = create_directory(), os.getpid()
    try:
        yield dataclasses.replace(settings, frame_cache_dir=directory)
    finally:
        if os.getpid() == owner:  # a worker unwinds through here too when it exits (see _metrics_directory)
            remove_directory(directory)


@contextmanager
def _metrics_directory() -> Iterator[None]:
    """A fresh directory for Prometheus' per-worker files, so /metrics sums every worker (removed at exit)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        yield
        return
    directory, owner = tempfile.mkdtemp(prefix="classifyobjects-metrics-"), os.getpid()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    try:
        yield
    finally:
        # gunicorn forks the workers from inside this block, and a worker that exits raises SystemExit up through
        # it: only the master, which made the directory, removes it (else one worker's restart takes every
        # worker's metrics files, and the frame cache, from under the others).
        if os.getpid() == owner:
            shutil.rmtree(directory, ignore_errors=True)


def main() -> int:
    """Start the server; a configuration error is one line on stderr and exit status 2."""
    with _metrics_directory():
        try:
            settings = Settings.from_env()
            # Check label maps before forking workers, so a malformed one stops the server with one clear line.
            from proxy.labels import LabelMap

            for model in settings.model_configs:
                if model.label_map is not None:
                    LabelMap.load(model.label_map)
        except ConfigError as exc:
            print(f"proxy: configuration error: {exc}", file=sys.stderr)
            return 2
        if settings.embedded:
            quiet_tensorflow(verbose=settings.log_level == "debug")
        from proxy.observability import configure_logging

        configure_logging(settings.log_format, settings.log_level)
        raise_open_files_limit(settings.front.max_connections)
        with _frame_cache_directory(settings) as shared:
            _Server(shared).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
