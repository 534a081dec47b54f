"""The workers' share of the connections (``proxy.front.balance``): the rule, the shared table, and a FrontServer
that accepts from a real listening socket only while its share allows. tests/integration/test_workers.py shows the
effect on a real two-worker server."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from proxy.front import server as server_module
from proxy.front.balance import RECHECK_S, STALE_S, Peers, fair_to_accept
from proxy.front.server import FrontServer
from proxy.front.state import FrontApp, PlainHooks
from proxy.settings import Settings
from tests.unit.test_front import echo_app


@pytest.mark.parametrize(
    ("mine", "others", "fair"),
    [
        (0, [], True),  # alone: always
        (5, [], True),
        (0, [0], True),  # level: both take what comes
        (1, [1, 1], True),
        (1, [0], False),  # a sibling holds fewer: it takes the next one
        (3, [2, 7], False),
        (2, [2, 7], True),  # one of the least loaded
        (0, [3, 1], True),
    ],
)
def test_a_worker_accepts_while_no_sibling_holds_fewer(mine: int, others: list[int], fair: bool) -> None:
    assert fair_to_accept(mine, others) is fair


def exited_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True)
    return int(child.stdout)


def test_the_table_counts_live_recent_siblings_and_frees_rows() -> None:
    peers = Peers()
    me, sibling = os.getpid(), os.getppid()
    mine = peers.join(me)
    theirs = peers.join(sibling)
    mine.publish(3)
    theirs.publish(1)
    now = time.monotonic()
    assert peers.others(me, now) == [1]
    assert peers.others(sibling, now) == [3]
    assert not mine.may_accept(3) and mine.may_accept(1)
    # A sibling that has not beaten for STALE_S is not waited for.
    assert peers.others(me, now + STALE_S + 1) == []
    peers.forget(sibling)
    assert peers.others(me, now) == [] and mine.may_accept(99)


def test_a_row_of_a_process_that_is_gone_is_taken_again() -> None:
    peers = Peers()
    gone = exited_pid()
    peers.join(gone).publish(7)
    # The dead worker's row comes first: the next worker takes it over, and its count is gone with it.
    peers.join(os.getpid()).publish(0)
    assert peers.others(os.getpid(), time.monotonic()) == []
    rows = [row.pid for row in peers._table.get_obj() if row.pid]
    assert rows.count(os.getpid()) == 1 and gone not in rows  # the dead row was reused, not a free one


def test_leaving_stops_a_worker_being_counted() -> None:
    peers = Peers()
    leaving = peers.join(os.getppid())
    leaving.publish(0)
    mine = peers.join(os.getpid())
    assert not mine.may_accept(1)
    leaving.leave()
    assert mine.may_accept(1)
    leaving.publish(0)  # after leaving: nothing, the row stays free
    assert mine.may_accept(1)


@contextlib.asynccontextmanager
async def listening(
    server: FrontServer, listener: socket.socket | None = None
) -> AsyncIterator[tuple[socket.socket, list[socket.socket]]]:
    """A listening socket on 127.0.0.1 (``listener``, or a new one) and a list for the test's client sockets; on the
    way out the clients are closed, the server shut down and the listener closed."""
    listener = listener or socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    clients: list[socket.socket] = []
    try:
        yield listener, clients
    finally:
        for client in clients:
            client.close()
        await server.shutdown(0.5)
        listener.close()


def test_a_front_server_accepts_only_its_share_and_takes_more_once_a_sibling_catches_up() -> None:
    """A FrontServer on a real listening socket, with one sibling in its table that holds no connection: it takes
    the first connection (level), leaves the second queued while the sibling holds fewer, and accepts it within
    RECHECK_S once the sibling holds more; a sibling that leaves is not waited for."""

    async def body() -> None:
        peers = Peers()
        sibling = peers.join(os.getppid())
        sibling.publish(0)
        served = FrontApp(echo_app, Settings().front, PlainHooks(), 60.0, close=lambda: None)
        server = FrontServer(served, threads=1, share=peers.join(os.getpid()))
        loop = asyncio.get_running_loop()
        async with listening(server) as (listener, clients):
            port = listener.getsockname()[1]
            await server.listen([listener])

            async def connect() -> None:
                client = socket.socket()
                client.setblocking(False)
                await loop.sock_connect(client, ("127.0.0.1", port))
                clients.append(client)

            async def held(count: int, within_s: float) -> bool:
                deadline = loop.time() + within_s
                while loop.time() < deadline:
                    if len(server.connections) == count:
                        return True
                    await asyncio.sleep(0.002)
                return len(server.connections) == count

            await connect()
            assert await held(1, 2.0)
            await connect()  # queued in the kernel: the sibling holds fewer
            await asyncio.sleep(RECHECK_S * 20)
            assert len(server.connections) == 1
            sibling.publish(2)
            assert await held(2, RECHECK_S * 40)
            await connect()  # 2 against 2: level, so it is taken
            assert await held(3, 2.0)
            sibling.publish(0)
            await connect()
            await asyncio.sleep(RECHECK_S * 20)
            assert len(server.connections) == 3
            sibling.leave()  # a sibling that stops is not waited for
            assert await held(4, RECHECK_S * 40)

    asyncio.run(body())


@pytest.mark.parametrize(
    ("protocol_made", "error"),
    [(False, OSError), (True, OSError), (False, RuntimeError)],
    ids=["before-the-protocol", "after-the-protocol", "another-error"],
)
def test_a_connection_that_fails_to_set_up_stops_counting_once(protocol_made: bool, error: type[Exception]) -> None:
    """Accepted sockets count in what the worker holds while they are set up; one whose setting up fails (before or
    after its protocol was made, with an OSError or with any other error) stops counting, once: the other, still being
    set up, counts on."""

    async def body() -> None:
        served = FrontApp(echo_app, Settings().front, PlainHooks(), 60.0, close=lambda: None)
        server = FrontServer(served, threads=1)
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, _context: None)  # the other error ends its task: not this test's
        calls: list[int] = []
        release = asyncio.Event()

        async def setting_up(factory: Any, sock: socket.socket) -> None:
            calls.append(server.held)
            if len(calls) == 1:
                if protocol_made:
                    factory()
                raise error("the socket went away")
            await release.wait()
            raise OSError("this one too")

        loop.connect_accepted_socket = setting_up  # type: ignore[method-assign,assignment]
        async with listening(server) as (listener, clients):
            clients += [socket.socket(), socket.socket()]
            for client in clients:
                client.connect(listener.getsockname())  # both queued: accepted in one batch
            await server.listen([listener])
            deadline = loop.time() + 2.0
            while len(calls) < 2 and loop.time() < deadline:
                await asyncio.sleep(0.002)
            await asyncio.sleep(0.01)
            assert len(calls) == 2
            assert server.held == 1  # the first failed, the second is still being set up
            release.set()
            await asyncio.sleep(0.01)
            assert server.held == 0 and not server.connections

    asyncio.run(body())


class _Listener(socket.socket):
    """A listening socket whose ``accept`` fails as a process out of file descriptors does, while ``starved``."""

    starved = True
    attempts = 0

    def accept(self) -> tuple[socket.socket, Any]:
        self.attempts += 1
        if self.starved:
            raise OSError(errno.EMFILE, "Too many open files")
        return super().accept()


def test_out_of_file_descriptors_the_server_backs_off_warns_once_and_accepts_again(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """accept() failing with EMFILE leaves the connection queued: the server stops watching the socket (which
    stays readable) for ACCEPT_RETRY_S instead of spinning on it and logging each try, warns once for the spell,
    and takes the queued connection once descriptors are free again."""
    monkeypatch.setattr(server_module, "ACCEPT_RETRY_S", 0.05)

    async def body() -> None:
        served = FrontApp(echo_app, Settings().front, PlainHooks(), 60.0, close=lambda: None)
        server = FrontServer(served, threads=1)
        listener = _Listener()
        async with listening(server, listener) as (_, clients):
            await server.listen([listener])
            clients.append(socket.create_connection(listener.getsockname()))
            await asyncio.sleep(0.3)  # six retry periods
            assert 1 <= listener.attempts <= 10  # spinning on a readable socket tried thousands of times
            assert not server.connections
            listener.starved = False
            deadline = asyncio.get_running_loop().time() + 2.0
            while not server.connections and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.005)
            assert len(server.connections) == 1

    with caplog.at_level(logging.INFO, logger="proxy.front.server"):
        asyncio.run(body())
    messages = [record.getMessage() for record in caplog.records if record.name == "proxy.front.server"]
    assert sum("cannot accept connections" in message for message in messages) == 1
    assert "accepting connections again" in messages[-1]
