"""Real server processes for the tests and the benchmark: start, poll until ready (no sleeps), stop at teardown."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Collection, Mapping
from pathlib import Path
from types import TracebackType

import requests

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (gunicorn's workers, for its master), from ``/proc/*/stat``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # the process ended while we looked
        # The command name may contain spaces and parentheses; the fields after its last ")" do not.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


def rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` in KiB (``VmRSS`` of ``/proc/<pid>/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise ProcessLookupError(f"process {pid} reports no VmRSS")


def quiet_tf_env() -> dict[str, str]:
    """Environment additions that keep TensorFlow's C++ start-up chatter and GPU probing out of a tool's output
    (the converter, the stand-in); servers started by ``HttpServer`` choose their own."""
    return {"TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}


class HttpServer:
    """A subprocess serving HTTP on ``port``; ``start()`` returns once ``ready_path`` answers with ``ready_status``."""

    def __init__(
        self,
        args: list[str],
        *,
        port: int,
        env: Mapping[str, str] | None = None,
        cwd: Path = REPO,
        ready_path: str = "/healthz",
        ready_status: int = 200,
        timeout_s: float = 90.0,
    ) -> None:
        self.args = args
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        # The servers decide TensorFlow's log level themselves (odapi.tfenv), as they do for a user: what the
        # test process set for its own TensorFlow is not passed on, unless a test gives it in ``env``.
        inherited = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
        self._env = {**inherited, **(env or {})}
        self._cwd = cwd
        self._ready_path = ready_path
        self._ready_status = ready_status
        self._timeout_s = timeout_s
        self._log = tempfile.NamedTemporaryFile(prefix="server-", suffix=".log", delete=False)  # noqa: SIM115
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> HttpServer:
        """Start the process and poll until it is ready; raise with its log if it dies or times out."""
        self.process = subprocess.Popen(
            self.args,
            cwd=self._cwd,
            env=self._env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + self._timeout_s
        delay = 0.05
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = self.log_text()
                self.close()
                raise RuntimeError(f"{self.args} exited with {self.process.returncode}:\n{log}")
            try:
                # Connection: close, or requests leaves the connection open until the response is collected: a
                # worker would hold it as a client's.
                response = requests.get(self.url + self._ready_path, timeout=2, headers={"Connection": "close"})
                if response.status_code == self._ready_status:
                    return self
            except (requests.ConnectionError, requests.Timeout):
                pass
            time.sleep(delay)  # polling interval, not a wait for readiness
            delay = min(delay * 1.5, 0.5)
        log = self.log_text()
        self.close()
        raise TimeoutError(f"{self.args} not ready within {self._timeout_s}s:\n{log}")

    def alive(self) -> bool:
        """True while the process runs."""
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the whole process group (gunicorn's master and workers)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signum)

    def stop(self, timeout_s: float = 20.0) -> int | None:
        """SIGTERM, wait, then SIGKILL; returns the exit status."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.process.wait(timeout=10)
        return self.process.returncode

    def close(self) -> None:
        """Stop the process and delete its log file."""
        self.stop()
        self._log.close()
        Path(self._log.name).unlink(missing_ok=True)

    def log_text(self) -> str:
        """Everything the process printed so far."""
        self._log.flush()
        return Path(self._log.name).read_text(encoding="utf-8", errors="replace")

    def __enter__(self) -> HttpServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def proxy_server(env: Mapping[str, str], *, ready_path: str = "/readyz", timeout_s: float = 90.0) -> HttpServer:
    """``python -m proxy`` (gunicorn) on a free port with ``env``; ready once ``ready_path`` answers 200."""
    port = free_port()
    return HttpServer(
        [sys.executable, "-m", "proxy"],
        port=port,
        env={"PORT": str(port), "HOST": "127.0.0.1", **env},
        ready_path=ready_path,
        timeout_s=timeout_s,
    )


ESTABLISHED = "01"  # the TCP states of /proc/net/tcp
CLOSE_WAIT = "08"  # the client has closed, the server has not yet


def established(pid: int, port: int, states: Collection[str] = (ESTABLISHED,)) -> set[int]:
    """The remote ports of the TCP connections in ``states`` (established, by default) that process ``pid`` holds
    on its local ``port`` (from ``/proc/<pid>/fd`` and ``/proc/net/tcp``, ``tcp6``): which clients a worker
    serves."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
            if state in states and inode in inodes and int(local.rsplit(":", 1)[1], 16) == port:
                found.add(int(remote.rsplit(":", 1)[1], 16))
    return found
