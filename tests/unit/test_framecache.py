"""The frame cache (``proxy.framecache``): entries by key for a few seconds, one computation for requests that come at
once from threads or processes, and never a request's failure."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.framecache import FrameCache, create_directory, key, remove_directory


def codec() -> dict[str, object]:
    """Values are bytes here, stored as they are."""
    return {"encode": lambda value: value, "decode": bytes}


class Clock:
    """A wall clock the test moves."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def directory() -> Iterator[Path]:
    """A cache directory, removed afterwards."""
    made = create_directory()
    yield made
    remove_directory(made)


def test_the_directory_is_private_and_in_memory_where_it_can_be(directory: Path) -> None:
    """The directory is the server's alone (0700), under /dev/shm when this machine has one."""
    assert directory.stat().st_mode & 0o777 == 0o700
    if Path("/dev/shm").is_dir() and os.access("/dev/shm", os.W_OK):
        assert directory.parent == Path("/dev/shm")


def test_keys_tell_bytes_and_parts_apart() -> None:
    """A key changes with the bytes, the model and the shape, and parts cannot run into each other."""
    assert key(b"frame", "detector", "tile=0") == key(b"frame", "detector", "tile=0")
    assert (
        len({key(b"frame", "a", "b"), key(b"frame", "ab", ""), key(b"framea", "", "b"), key(b"frame", "a", "c")}) == 4
    )


def test_a_value_answers_again_until_it_expires(directory: Path) -> None:
    """Within ttl_s the same key is a hit without computing; after it, computed again."""
    clock = Clock()
    cache = FrameCache(directory, ttl_s=5, max_entries=8, clock=clock)
    calls: list[int] = []

    def compute() -> bytes:
        calls.append(1)
        return b"answer %d" % len(calls)

    deadline = time.monotonic() + 5
    assert cache.get_or_compute("k", compute, deadline, **codec()) == (b"answer 1", False)
    clock.now += 4.9
    assert cache.get_or_compute("k", compute, deadline, **codec()) == (b"answer 1", True)
    clock.now += 0.2
    assert cache.get_or_compute("k", compute, deadline, **codec()) == (b"answer 2", False)


def test_a_zero_lifetime_is_no_cache(tmp_path: Path) -> None:
    """ttl_s 0 computes every time and writes nothing."""
    cache = FrameCache(tmp_path, ttl_s=0, max_entries=8)
    for _ in range(2):
        assert cache.get_or_compute("k", lambda: b"v", time.monotonic() + 1, **codec()) == (b"v", False)
    assert list(tmp_path.iterdir()) == []


def test_threads_asking_at_once_compute_once(directory: Path) -> None:
    """Two threads asking for one key at once: one computes, the other waits for it and gets its value as a hit."""
    cache = FrameCache(directory, ttl_s=5, max_entries=8)
    calls: list[int] = []
    results: list[tuple[bytes, bool]] = []

    def compute() -> bytes:
        calls.append(1)
        time.sleep(0.2)
        return b"once"

    def ask() -> None:
        results.append(cache.get_or_compute("k", compute, time.monotonic() + 5, **codec()))

    threads = [threading.Thread(target=ask) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == [1] and sorted(results) == [(b"once", False), (b"once", True)]


def test_a_failed_computation_is_not_cached_and_the_waiter_computes(directory: Path) -> None:
    """A compute that raises propagates to its caller and stores nothing; one waiting for it computes itself."""
    cache = FrameCache(directory, ttl_s=5, max_entries=8)
    started = threading.Event()
    outcomes: list[object] = []

    def failing() -> bytes:
        started.set()
        time.sleep(0.2)
        raise RuntimeError("the model failed")

    def first() -> None:
        try:
            cache.get_or_compute("k", failing, time.monotonic() + 5, **codec())
        except RuntimeError as exc:
            outcomes.append(str(exc))

    thread = threading.Thread(target=first)
    thread.start()
    started.wait(5)
    outcomes.append(cache.get_or_compute("k", lambda: b"second", time.monotonic() + 5, **codec()))
    thread.join()
    assert sorted(map(str, outcomes)) == sorted(["the model failed", str((b"second", False))])


def test_a_waiter_never_waits_past_its_deadline(directory: Path) -> None:
    """A request waiting for another's computation computes its own answer once its deadline comes."""
    cache = FrameCache(directory, ttl_s=5, max_entries=8)
    busy = threading.Event()
    release = threading.Event()

    def slow() -> bytes:
        busy.set()
        release.wait(5)
        return b"slow"

    thread = threading.Thread(target=lambda: cache.get_or_compute("k", slow, time.monotonic() + 10, **codec()))
    thread.start()
    busy.wait(5)
    started = time.monotonic()
    assert cache.get_or_compute("k", lambda: b"own", time.monotonic() + 0.1, **codec()) == (b"own", False)
    assert 0.1 <= time.monotonic() - started < 0.5
    release.set()
    thread.join()


def test_a_corrupt_entry_is_missing_and_a_broken_directory_computes(directory: Path) -> None:
    """An entry that does not decode is treated as missing; a cache whose directory is gone computes, never fails."""
    cache = FrameCache(directory, ttl_s=5, max_entries=8)

    def strict(data: bytes) -> bytes:
        if not data.startswith(b"ok"):
            raise ValueError("not ours")
        return data

    cache.get_or_compute("k", lambda: b"garbage", time.monotonic() + 1, encode=lambda v: v, decode=strict)
    again = cache.get_or_compute("k", lambda: b"ok now", time.monotonic() + 1, encode=lambda v: v, decode=strict)
    assert again == (b"ok now", False)
    remove_directory(directory)
    gone = cache.get_or_compute("k", lambda: b"still", time.monotonic() + 1, **codec())
    assert gone == (b"still", False)


def test_at_most_max_entries_are_kept(directory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past max_entries the oldest entries go."""
    monkeypatch.setattr("proxy.framecache.EVICT_EVERY_S", 0.0)  # look at every write
    cache = FrameCache(directory, ttl_s=60, max_entries=3)
    for index in range(6):
        cache.get_or_compute(f"k{index}", lambda: b"v", time.monotonic() + 1, **codec())
        time.sleep(0.01)  # distinct modification times
    assert sorted(path.name for path in directory.glob("*.entry")) == ["k3.entry", "k4.entry", "k5.entry"]
