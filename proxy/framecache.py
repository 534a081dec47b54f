"""One model call per frame: a small cache of models' raw outputs, shared by every worker process of one server.

Blue Iris sends the same camera frame to the default detection route and to each custom model route at the same
moment, on separate connections; when those routes are the same model, the work would be done twice. With several
gunicorn workers the two requests land on different processes about half the time, so a cache per process would
miss them: entries are files in one private directory the server makes before it forks its workers (under
``/dev/shm``, memory, where there is one).

- **Keys** are a SHA-256 digest of the image's bytes, the model's name and the options that shape the model's input
  (``tile``, ``roi``), each part length-prefixed. The options applied after the model (thresholds, merging,
  ``classes``, ``max_detections``) are not in the key: they run per request on the cached output.
- **Lifetime**: an entry answers for ``ttl_s`` seconds after it was written (``FRAME_CACHE_S``), then it is ignored
  and removed; so a new model version is never answered from an older one's entries for longer than that. At most
  ``max_entries`` entries are kept, the oldest removed first (each process looks every ``EVICT_EVERY_S``).
- **In flight**: the first request for a key claims it with an exclusive ``flock`` on the key's lock file and
  computes; one that arrives meanwhile (another thread or another process) polls the lock every 2 ms (a fraction of
  any model call, and no busy CPU) and then reads the entry. A lock dies with its process, so a worker that crashed
  while computing never leaves a key claimed; a waiter whose holder finished without an entry (its model call
  failed: errors are not cached) computes itself, and a waiter never waits past its own deadline (it then computes
  itself too).
- **Never a request's failure**: a cache that cannot be read or written (a full disk, a removed directory, a
  truncated entry) logs once and computes as if there were no cache.

Why files and ``flock`` rather than a shared-memory dict or a broker: no new dependency or process, the kernel frees
the locks of dead workers, and ``os.replace`` makes every entry appear whole or not at all. Counting hits and misses
is the caller's: ``get_or_compute`` says which it was.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import shutil
import struct
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

log = logging.getLogger(__name__)

V = TypeVar("V")
POLL_S = 0.002  # how often a waiter looks whether the computation it waits for is done
_ENTRY = ".entry"
_LOCK = ".lock"
EVICT_EVERY_S = 1.0
_LOCK_LIFE_S = 300.0  # a key's lock file outlives every computation under it by far
_STAMP = struct.Struct("<d")  # the entry's own write time, first in the file (mtimes may be coarse)


def create_directory() -> Path:
    """A private (0700) directory for one server's cache: in /dev/shm when it is there and writable, else in the
    temporary directory."""
    shm = Path("/dev/shm")  # noqa: S108  (mkdtemp makes a private 0700 directory of unpredictable name there)
    base = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="classifyobjects-frames-", dir=base))


def remove_directory(directory: Path) -> None:
    """Remove a cache directory and its entries."""
    shutil.rmtree(directory, ignore_errors=True)


def key(data: bytes, *parts: str) -> str:
    """The cache key of an image's bytes and what shapes the model's input: model name, tile, region."""
    # SHA-256: the fastest of hashlib's digests here (the CPU's SHA instructions), 34 us for a 65 KB frame against
    # BLAKE2b's 51 us; and a cryptographic one, so no client can make its frame answer for another's.
    digest = hashlib.sha256()
    for part in (data, *(part.encode() for part in parts)):
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return digest.hexdigest()


@dataclass
class _Claim:
    """A key's lock among this process's threads, and how many of them hold or want it."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    users: int = 0


class FrameCache:
    """Models' raw outputs by key, shared by the processes that use one ``directory``; see the module."""

    def __init__(
        self, directory: Path, *, ttl_s: float, max_entries: int, clock: Callable[[], float] = time.time
    ) -> None:
        self.directory = directory
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._clock = clock
        self._warned = False
        self._evicted_at = float("-inf")
        # flock excludes between open file descriptions, processes and threads alike, but this process's threads
        # also queue on a lock of their own per key, so that they wait for each other without a descriptor each.
        self._threads = threading.Lock()
        self._claims: dict[str, _Claim] = {}

    key = staticmethod(key)

    def get_or_compute(
        self,
        entry_key: str,
        compute: Callable[[], V],
        deadline: float,
        *,
        encode: Callable[[V], bytes],
        decode: Callable[[bytes], V],
    ) -> tuple[V, bool]:
        """The value for ``entry_key`` and True when it came from the cache (fresh, or computed by another request
        this one waited for); else ``compute()``'s value, stored, and False. ``compute``'s errors propagate."""
        if self.ttl_s <= 0:
            return compute(), False
        found = self._read(entry_key, decode)
        if found is not None:
            return found, True
        try:
            claim = self._claim(entry_key, deadline)
        except OSError as exc:
            self._broken(exc)
            return compute(), False
        waited, release = claim
        try:
            if waited:  # another finished meanwhile, or died: its entry, if it wrote one
                found = self._read(entry_key, decode)
                if found is not None:
                    return found, True
            value = compute()
            self._write(entry_key, encode(value))
            return value, False
        finally:
            release()

    # -- claims ---------------------------------------------------------------------------------------------------

    def _claim(self, entry_key: str, deadline: float) -> tuple[bool, Callable[[], None]]:
        """Hold the key's claim (this process's thread lock, then the file lock), waiting for another holder until
        ``deadline`` at most; returns whether it waited, and how to release. Past the deadline the caller computes
        without the claim (its own answer is due), and nothing is released."""
        local = self._local(entry_key)
        waited = False
        while not local.acquire(blocking=False):
            waited = True
            if time.monotonic() >= deadline:
                self._unref(entry_key)
                return True, lambda: None
            time.sleep(POLL_S)

        def release_local() -> None:
            local.release()
            self._unref(entry_key)

        try:
            handle = os.open(self.directory / (entry_key + _LOCK), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            release_local()
            raise
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = True
                if time.monotonic() >= deadline:
                    os.close(handle)
                    release_local()
                    return True, lambda: None
                time.sleep(POLL_S)

        def release() -> None:
            os.close(handle)  # closing the descriptor releases the flock
            release_local()

        return waited, release

    def _local(self, entry_key: str) -> threading.Lock:
        """This process's lock of the key, counted so that it is forgotten once no thread holds or wants it."""
        with self._threads:
            claim = self._claims.setdefault(entry_key, _Claim())
            claim.users += 1
            return claim.lock

    def _unref(self, entry_key: str) -> None:
        with self._threads:
            claim = self._claims[entry_key]
            claim.users -= 1
            if claim.users == 0:
                del self._claims[entry_key]

    # -- entries --------------------------------------------------------------------------------------------------

    def _read(self, entry_key: str, decode: Callable[[bytes], V]) -> V | None:
        path = self.directory / (entry_key + _ENTRY)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            self._broken(exc)
            return None
        if len(data) < _STAMP.size or self._clock() - _STAMP.unpack_from(data)[0] > self.ttl_s:
            path.unlink(missing_ok=True)
            return None
        try:
            return decode(data[_STAMP.size :])
        except ValueError as exc:
            log.warning("frame cache: entry %s is unreadable (%s); computing instead", entry_key[:12], exc)
            path.unlink(missing_ok=True)
            return None

    def _write(self, entry_key: str, data: bytes) -> None:
        try:
            handle, temporary = tempfile.mkstemp(dir=self.directory, prefix=".partial-")
            with os.fdopen(handle, "wb") as partial:
                partial.write(_STAMP.pack(self._clock()) + data)
            os.replace(temporary, self.directory / (entry_key + _ENTRY))
            # Listing the directory costs more than the entry's write: each process does it at most every
            # EVICT_EVERY_S (the bound on entries is kept within that).
            now = time.monotonic()
            if now - self._evicted_at >= EVICT_EVERY_S:
                self._evicted_at = now
                self._evict()
        except OSError as exc:
            self._broken(exc)

    def _evict(self) -> None:
        """Remove expired entries and old lock files, and the oldest entries past ``max_entries``."""
        entries = []
        now = time.time()
        for path in self.directory.iterdir():
            try:
                age = now - path.stat().st_mtime
            except FileNotFoundError:
                continue
            if path.name.endswith(_ENTRY):
                if age > self.ttl_s + 1:
                    path.unlink(missing_ok=True)
                else:
                    entries.append((-age, path))
            elif path.name.endswith(_LOCK) and age > _LOCK_LIFE_S:
                # Long past any computation: a claim under way holds its lock for a model call at most. (Were one
                # still waiting on it, the worst is that a frame is computed twice.)
                path.unlink(missing_ok=True)
        for _, path in sorted(entries)[: max(0, len(entries) - self.max_entries)]:
            path.unlink(missing_ok=True)

    def _broken(self, exc: OSError) -> None:
        if not self._warned:
            self._warned = True
            reason = errno.errorcode.get(exc.errno or 0, "") or type(exc).__name__
            log.warning("frame cache in %s unusable (%s: %s); computing every frame", self.directory, reason, exc)
