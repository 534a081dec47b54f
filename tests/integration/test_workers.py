"""Connections spread over the worker processes, and none lost when a worker restarts (``proxy.front.balance``)."""

from __future__ import annotations

import http.client
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from harness.processes import CLOSE_WAIT, ESTABLISHED, HttpServer, children, established, proxy_server
from harness.tfserving import RunningServer
from tests.support.zoo import Zoo

MODEL = "tf1-frozen-image_tensor"


@pytest.fixture(scope="module")
def two_workers(zoo: Zoo, stand_in: RunningServer) -> Iterator[HttpServer]:
    """A serving-mode proxy with two workers, of its own (a test restarts one)."""
    model = zoo.models[MODEL]
    env = {"SERVING_ADDRESS": stand_in.address, "MODELS": f"{model.name}::{model.base_path}", "WEB_CONCURRENCY": "2"}
    with proxy_server(env) as server:
        yield server


def ask(connection: http.client.HTTPConnection) -> int:
    """One request on a kept-alive connection; its status."""
    connection.request("GET", "/healthz")
    response = connection.getresponse()
    response.read()
    return response.status


def serving_workers(server: HttpServer, count: int) -> list[int]:
    """The worker pids, once ``count`` of them have answered 200 (a worker still booting cannot take connections)."""
    assert server.process is not None
    seen: set[int] = set()
    deadline = time.monotonic() + 30
    while len(seen) < count:
        assert time.monotonic() < deadline, f"only workers {seen} answer"
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        try:
            assert ask(connection) == 200
            port = connection.sock.getsockname()[1]
            seen |= {pid for pid in children(server.process.pid) if port in established(pid, server.port)}
        finally:
            connection.close()
    return sorted(seen)


def idle(server: HttpServer, workers: list[int]) -> None:
    """Wait until the workers hold no connection at all, closing ones included (the probes' are gone), so that each
    starts from none."""
    deadline = time.monotonic() + 10
    while any(established(pid, server.port, (ESTABLISHED, CLOSE_WAIT)) for pid in workers):
        assert time.monotonic() < deadline, "the workers still hold connections"
        time.sleep(0.01)  # polling interval


def assert_spread(server: HttpServer, workers: list[int]) -> None:
    """From no connection at all, eight keep-alive clients connect one after the other: each worker then holds at
    most one more than the other, and every connection keeps being served."""
    idle(server, workers)
    clients = [http.client.HTTPConnection("127.0.0.1", server.port, timeout=10) for _ in range(8)]
    try:
        for client in clients:
            assert ask(client) == 200
        ours = {client.sock.getsockname()[1] for client in clients}
        held = [len(established(pid, server.port) & ours) for pid in workers]
        assert sum(held) == 8 and max(held) - min(held) <= 1, held
        for client in clients:  # each connection keeps being served by its worker
            assert ask(client) == 200
    finally:
        for client in clients:
            client.close()


def test_keep_alive_connections_land_on_every_worker(two_workers: HttpServer) -> None:
    """Eight keep-alive clients connecting one after the other are spread evenly over the two workers: no worker
    holds more than the other's count plus one."""
    assert_spread(two_workers, serving_workers(two_workers, 2))


def fresh(server: HttpServer) -> int:
    """One request on a new connection; its status."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
    try:
        return ask(connection)
    finally:
        connection.close()


def test_a_worker_restarting_loses_no_connection(two_workers: HttpServer) -> None:
    """While one worker stops (SIGTERM) and the master starts another, every new connection is answered: nothing
    waits on a socket of the stopping worker's own; then both workers answer, the new one included."""
    assert two_workers.process is not None
    victim = children(two_workers.process.pid)[0]

    with ThreadPoolExecutor(8) as pool:
        os.kill(victim, signal.SIGTERM)
        statuses = list(pool.map(lambda _: fresh(two_workers), range(60)))
    assert statuses == [200] * 60, two_workers.log_text()[-3000:]
    deadline = time.monotonic() + 20
    while len(children(two_workers.process.pid)) < 2 or victim in children(two_workers.process.pid):
        assert time.monotonic() < deadline, "the master did not replace the worker"
        time.sleep(0.1)  # polling interval
    # The new worker answers too: it opens its own metrics files in the directory the master made, which the
    # stopping worker must not have taken with it.
    assert victim not in serving_workers(two_workers, 2)


def test_a_reload_loses_no_connection_and_the_new_workers_share_them(two_workers: HttpServer) -> None:
    """SIGHUP, gunicorn's reload (the master makes the connection table anew, starts new workers and stops the old
    ones gracefully), while clients keep connecting: every request is answered, and the new workers then hold
    keep-alive connections evenly, as the old ones did."""
    assert two_workers.process is not None
    master = two_workers.process.pid
    old = serving_workers(two_workers, 2)
    reloaded = threading.Event()

    def keep_asking() -> list[int]:
        statuses = []
        while not reloaded.is_set():
            statuses.append(fresh(two_workers))
        return statuses

    with ThreadPoolExecutor(4) as pool:
        askers = [pool.submit(keep_asking) for _ in range(4)]
        os.kill(master, signal.SIGHUP)
        deadline = time.monotonic() + 30
        while set(children(master)) & set(old) or len(children(master)) < 2:
            assert time.monotonic() < deadline, "the old workers did not give way to new ones"
            time.sleep(0.05)  # polling interval
        new = serving_workers(two_workers, 2)
        reloaded.set()
        statuses = [status for asker in askers for status in asker.result()]
    assert not set(new) & set(old)
    assert len(statuses) > 20 and set(statuses) == {200}, two_workers.log_text()[-3000:]
    assert_spread(two_workers, new)
