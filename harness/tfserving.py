"""Starting the TF Serving stand-in (``tests/support/fake_tfserving.py``) as a process, without TensorFlow here.

The stand-in imports TensorFlow; fixtures and the benchmark's load generator only start it and read its READY line.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

READY_PREFIX = "READY port="
LOG_PREFIX = "fake_tfserving:"

_REPO_ROOT = Path(__file__).resolve().parents[1]
_REQUEST_LINE = re.compile(rf"^{LOG_PREFIX} method=(\S+) model=(\S+) version=(\S+) status=(\S+)$", re.MULTILINE)


class ServerStartError(RuntimeError):
    """The fake server exited or did not print its READY line in time."""


@dataclass
class RunningServer:
    """A fake TF Serving subprocess started by `start_server`."""

    process: subprocess.Popen[bytes]
    port: int
    host: str
    log_path: Path
    _owns_log: bool = True

    def __post_init__(self) -> None:
        # Servers only killed, never closed, still leave no log behind.
        if self._owns_log:
            weakref.finalize(self, self.log_path.unlink, missing_ok=True)

    @property
    def address(self) -> str:
        """`host:port`, ready for grpc.insecure_channel."""
        return f"{self.host}:{self.port}"

    def alive(self) -> bool:
        """True while the process runs."""
        return self.process.poll() is None

    def log_text(self) -> str:
        """Everything the server wrote to stderr so far."""
        return self.log_path.read_text(errors="replace")

    def request_count(self, method: str = "Predict", model: str | None = None, status: str | None = None) -> int:
        """How many logged requests match method (and model and status name, when given)."""
        return sum(
            1
            for found_method, found_model, _version, found_status in _REQUEST_LINE.findall(self.log_text())
            if found_method == method
            and (model is None or found_model == model)
            and (status is None or found_status == status)
        )

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait for a graceful exit (SIGKILL after timeout); returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()

    def kill(self) -> int:
        """SIGKILL, as a crashed replica; returns the exit code."""
        if self.process.poll() is None:
            self.process.kill()
        return self.process.wait()

    def close(self) -> None:
        """Stop the server and delete its log."""
        self.stop()
        if self._owns_log:
            self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def start_server(
    args: Sequence[str],
    timeout: float = 60.0,
    log_path: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> RunningServer:
    """Start `python -m tests.support.fake_tfserving ARGS` and wait for its READY line.

    Paths in ARGS should be absolute: the process runs from the repository root. On timeout or early exit the
    process is killed and ServerStartError carries the end of its stderr.
    """
    owns_log = log_path is None
    if log_path is None:
        handle, name = tempfile.mkstemp(prefix="fake_tfserving_", suffix=".log")
        os.close(handle)
        log_path = Path(name)
    child_env = {**os.environ, **(env or {})}
    # TF's C++ INFO/WARNING chatter would drown the request lines.
    child_env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.fake_tfserving", *args],
            cwd=_REPO_ROOT,
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log_file,
        )
    found: list[int] = []
    ready = threading.Event()
    threading.Thread(target=_read_stdout, args=(process, found, ready), daemon=True).start()
    if not ready.wait(timeout) or not found:
        # Without a port, `ready` means stdout closed: the process is exiting.
        exited = ready.is_set() and not found
        process.kill()
        code = process.wait()
        tail = log_path.read_text(errors="replace")[-4000:]
        if owns_log:
            log_path.unlink(missing_ok=True)
        what = f"exited with code {code}" if exited else f"was not ready within {timeout:g}s"
        raise ServerStartError(f"fake TF Serving {what}; stderr ends with:\n{tail}")
    host = _flag_value(args, "--host") or "127.0.0.1"
    # A wildcard bind is reached through loopback.
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "[::]": "::1"}.get(host, host)  # noqa: S104  (a lookup, no bind)
    return RunningServer(process, found[0], host, log_path, owns_log)


def _flag_value(args: Sequence[str], flag: str) -> str | None:
    for index, arg in enumerate(args):
        if arg == flag and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def _read_stdout(process: subprocess.Popen[bytes], found: list[int], ready: threading.Event) -> None:
    # Keep draining after READY so a chatty child can never block on a full pipe.
    assert process.stdout is not None
    for raw in process.stdout:
        line = raw.decode(errors="replace").strip()
        if not found and line.startswith(READY_PREFIX):
            found.append(int(line[len(READY_PREFIX) :]))
            ready.set()
    ready.set()
