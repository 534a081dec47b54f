"""The frame cache across processes, as the workers of one server use it: one computation for frames asked at once,
and no claim left behind by a worker that dies while computing."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.framecache import FrameCache, create_directory, remove_directory


def codec() -> dict[str, object]:
    """Values are bytes here, stored as they are."""
    return {"encode": lambda value: value, "decode": bytes}


@pytest.fixture
def directory() -> Iterator[Path]:
    """A cache directory, removed afterwards."""
    made = create_directory()
    yield made
    remove_directory(made)


def _ask_in_process(directory: str, counter: str, delay: float) -> None:
    """A worker process asking for key k; each computation appends a line to ``counter``."""

    def compute() -> bytes:
        with open(counter, "a") as handle:
            handle.write("computed\n")
        time.sleep(delay)
        return b"from a process"

    cache = FrameCache(Path(directory), ttl_s=5, max_entries=8)
    value, _ = cache.get_or_compute("k", compute, time.monotonic() + 10, **codec())
    assert value == b"from a process"


def test_processes_asking_at_once_compute_once(directory: Path, tmp_path: Path) -> None:
    """Two processes (two workers of one server) asking at once: the model's work is done once."""
    counter = tmp_path / "count"
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_ask_in_process, args=(str(directory), str(counter), 0.3)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(10)
    assert [worker.exitcode for worker in workers] == [0, 0]
    assert counter.read_text() == "computed\n"


def test_a_holder_that_dies_does_not_block_the_others(directory: Path, tmp_path: Path) -> None:
    """A process killed while computing leaves no claim behind (its lock dies with it): the next one computes."""
    counter = tmp_path / "count"
    holder = multiprocessing.get_context("fork").Process(
        target=_ask_in_process, args=(str(directory), str(counter), 30.0)
    )
    holder.start()
    deadline = time.monotonic() + 10
    while not counter.exists():
        assert time.monotonic() < deadline
        time.sleep(0.01)  # polling interval
    holder.kill()
    holder.join(5)
    cache = FrameCache(directory, ttl_s=5, max_entries=8)
    started = time.monotonic()
    assert cache.get_or_compute("k", lambda: b"mine", time.monotonic() + 5, **codec()) == (b"mine", False)
    assert time.monotonic() - started < 1
