"""Connections spread over the worker processes: each worker accepts only its share.

gunicorn's workers share one listening socket, and whichever worker the kernel wakes accepts what is queued: with
keep-alive clients (Blue Iris, Frigate, a load balancer's pool) the connections pile onto one worker while the
others idle (measured: 8 keep-alive clients on 2 workers, all 8 on one). One ``SO_REUSEPORT`` socket per worker
would spread them, but the kernel drops what is queued on a dying worker's own socket. Instead the workers keep
sharing the one socket and each publishes how many connections it holds (counting those it has just accepted). Every
worker watches the socket; one woken for a connection while a live sibling holds fewer leaves it queued for that
sibling (which is woken too, and may take it) and looks again ``RECHECK_S`` later. One of the least loaded always
takes it, so a new connection waits at most about that long; with no connection arriving nothing polls. Nothing is
queued anywhere but the shared socket, so a worker that stops or dies loses no connection.

The counts live in a small shared-memory table the master makes before it forks the workers (``Peers.install``);
each worker claims a row for its pid and beats in it; rows of workers that are gone, or whose beat is older than
``STALE_S`` (a worker stuck or ending), do not count, so a worker never waits on one that cannot accept.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import time
from typing import Any

ROWS = 64  # workers of one server, far more than any runs (WEB_CONCURRENCY is at most 64)
STALE_S = 2.0  # a worker that has not beaten this long is not waited for
RECHECK_S = 0.005  # how soon a worker that left a connection to a sibling looks again


class _Row(ctypes.Structure):
    _fields_ = (
        ("pid", ctypes.c_int64),
        ("connections", ctypes.c_int64),
        ("beat", ctypes.c_double),
    )


class Peers:
    """The shared table of the workers' connection counts; one per server, made in the master."""

    _installed: Peers | None = None

    def __init__(self) -> None:
        context = multiprocessing.get_context("fork")
        self._table: Any = context.Array(_Row, ROWS, lock=True)

    @classmethod
    def install(cls) -> Peers:
        """Make the table for this server's workers (in the master, before it forks them)."""
        cls._installed = cls()
        return cls._installed

    @classmethod
    def installed(cls) -> Peers | None:
        """The table the master made, in a worker; None where none was (a plain gunicorn run)."""
        return cls._installed

    def join(self, pid: int) -> Share:
        """A worker's row: claimed for ``pid`` (a free row, or one of a process that is gone)."""
        with self._table.get_lock():
            rows = self._table.get_obj()
            for index, row in enumerate(rows):
                if row.pid in (0, pid) or not _alive(row.pid):
                    row.pid, row.connections, row.beat = pid, 0, time.monotonic()
                    return Share(self, index, pid)
        return Share(None, -1, pid)  # no row left: this worker accepts as if alone

    def forget(self, pid: int) -> None:
        """Free the row of a worker that exited (the master calls it)."""
        with self._table.get_lock():
            for row in self._table.get_obj():
                if row.pid == pid:
                    row.pid, row.connections = 0, 0

    def publish(self, index: int, connections: int) -> None:
        """Write a worker's count and its beat into its row."""
        row = self._table.get_obj()[index]
        row.connections, row.beat = connections, time.monotonic()

    def others(self, pid: int, now: float) -> list[int]:
        """The connection counts of the other live workers that beat recently."""
        return [
            int(row.connections)
            for row in self._table.get_obj()
            if row.pid not in (0, pid) and now - row.beat <= STALE_S
        ]


class Share:
    """One worker's row: it publishes its count and beat, and decides whether it may accept now."""

    def __init__(self, peers: Peers | None, index: int, pid: int) -> None:
        self._peers = peers
        self._index = index
        self._pid = pid

    def publish(self, connections: int) -> None:
        """Say how many connections this worker holds, and that it lives."""
        if self._peers is not None:
            self._peers.publish(self._index, connections)

    def may_accept(self, connections: int) -> bool:
        """True unless a live sibling holds fewer connections."""
        if self._peers is None:
            return True
        return fair_to_accept(connections, self._peers.others(self._pid, time.monotonic()))

    def leave(self) -> None:
        """Free the row (a worker stopping): the others stop counting on it."""
        if self._peers is not None:
            self._peers.forget(self._pid)
            self._peers = None


def fair_to_accept(mine: int, others: list[int]) -> bool:
    """A worker accepts while no live sibling holds fewer connections than it does: the least loaded take what
    comes, so the counts even out (one of the least loaded always accepts)."""
    return not others or mine <= min(others)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
