"""The processes under test: the demo model, the TF Serving stand-in, the proxy, the old way; and /proc readings.

Everything runs as a child process on 127.0.0.1 and is stopped by its owner's ``stop()``. The load generator itself
never imports TensorFlow: the model is written and converted by the project's own CLIs in subprocesses, and the
stand-in is started through ``tests.support.tfserving_process``, which does not import it either.
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import REPO, HttpServer, children, free_port, quiet_tf_env, rss_kib
from tests.support.tfserving_process import RunningServer, ServerStartError, start_server

MODEL_NAME = "detector"
STAND_IN_THREADS = 32  # as many gRPC threads as the most concurrent clients: queueing happens in TF, not there


class StackError(RuntimeError):
    """A process under test could not be prepared or started; the message says which and why."""


@dataclass(frozen=True)
class ModelFiles:
    """The demo model as a user has it (``model_dir``) and converted for TF Serving (``base_path``)."""

    model_dir: Path
    base_path: Path


def _run_cli(args: list[str], what: str) -> None:
    done = subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        env={**os.environ, **quiet_tf_env()},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise StackError(f"{what} failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")


def prepare_model(work: Path) -> ModelFiles:
    """Write the demo detector into ``work/static`` and convert it to ``work/models/detector/1``."""
    model_dir = work / "static"
    base_path = work / "models" / MODEL_NAME
    if not (model_dir / "frozen_inference_graph.pb").exists():
        _run_cli(["-m", "demo_model", str(model_dir)], "python -m demo_model")
    if not base_path.exists():
        graph = str(model_dir / "frozen_inference_graph.pb")
        _run_cli(["-m", "converter", "--warmup", graph, str(base_path)], "python -m converter")
    return ModelFiles(model_dir, base_path)


class StandIn:
    """The TF Serving stand-in serving the converted model; ``address`` once it is READY."""

    def __init__(self, base_path: Path) -> None:
        self._args = [
            "--port",
            "0",
            "--model_name",
            MODEL_NAME,
            "--model_base_path",
            str(base_path),
            "--grpc_max_threads",
            str(STAND_IN_THREADS),
        ]
        self._server: RunningServer | None = None
        self.address = ""

    def start(self, timeout_s: float = 120.0) -> StandIn:
        """Start it and wait for its READY line; raise ``StackError`` with its log if it does not come."""
        try:
            self._server = start_server(self._args, timeout=timeout_s, env=quiet_tf_env())
        except ServerStartError as exc:
            raise StackError(f"the TF Serving stand-in did not start: {exc}") from None
        self.address = self._server.address
        return self

    def stop(self) -> None:
        """SIGTERM (it stops gracefully), SIGKILL if it lingers; the log is deleted."""
        if self._server is not None:
            self._server.close()


def proxy_env(model_dir: Path, serving_address: str) -> dict[str, str]:
    """The proxy in serving mode, otherwise configured as a user runs it (default workers and threads)."""
    # An API_KEY in the caller's environment would turn every benchmark request into a 401.
    return {"SERVING_ADDRESS": serving_address, "MODEL_DIR": str(model_dir), "MODEL_NAME": MODEL_NAME, "API_KEY": ""}


class Server(HttpServer):
    """An ``HttpServer`` whose log file can be deleted once it has stopped: the proxy logs every request."""

    def discard_log(self) -> None:
        """Delete the log file (after ``stop()``)."""
        self._log.close()
        Path(self._log.name).unlink(missing_ok=True)


def proxy(model_dir: Path, serving_address: str) -> Server:
    """``python -m proxy`` against the stand-in; ``start()`` returns once ``/readyz`` answers 200."""
    port = free_port()
    env = {"PORT": str(port), "HOST": "127.0.0.1", **proxy_env(model_dir, serving_address)}
    return Server([sys.executable, "-m", "proxy"], port=port, env=env, ready_path="/readyz")


def seed_service(model_dir: Path, threads: int = 8) -> Server:
    """The old way under gunicorn (one worker, ``threads`` threads, long timeouts); ``start()`` polls /healthz."""
    port = free_port()
    args = [
        sys.executable,
        "-m",
        "gunicorn",
        "--worker-class",
        "gthread",
        "--workers",
        "1",
        "--threads",
        str(threads),
        "--bind",
        f"127.0.0.1:{port}",
        "--timeout",
        "900",
        "--keep-alive",
        "75",
        "bench.seed_service:create_app()",
    ]
    return Server(args, port=port, env={"MODEL_DIR": str(model_dir)}, timeout_s=120)


def cold_start_s(model_dir: Path, serving_address: str, timeout_s: float = 60.0) -> float:
    """Seconds from spawning ``python -m proxy`` to its first 200 on ``/healthz`` (polled every 5 ms)."""
    port = free_port()
    env = {**os.environ, **proxy_env(model_dir, serving_address), "PORT": str(port), "HOST": "127.0.0.1"}
    begin = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "proxy"],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        while time.perf_counter() - begin < timeout_s:
            if process.poll() is not None:
                raise StackError(f"python -m proxy exited with {process.returncode} during the cold-start run")
            if _healthz_ok(port):
                return time.perf_counter() - begin
            time.sleep(0.005)  # polling interval
        raise StackError(f"python -m proxy did not answer /healthz within {timeout_s:g}s")
    finally:
        _stop_group(process)


def _healthz_ok(port: int) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", "/healthz")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


# -- /proc readings --------------------------------------------------------------------------------------------


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` in MB."""
    try:
        return rss_kib(pid) / 1024
    except (OSError, ProcessLookupError) as exc:
        raise StackError(f"cannot read the memory of process {pid}: {exc}") from None


def loads_tensorflow(pid: int) -> bool:
    """Whether TensorFlow's shared libraries are mapped into ``pid``."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return "libtensorflow" in maps or "_pywrap_tensorflow" in maps


@dataclass(frozen=True)
class ProcessMemory:
    """Resident memory of a gunicorn master and each of its workers."""

    master_mb: float
    workers_mb: Mapping[int, float]
    workers_load_tensorflow: Mapping[int, bool]

    @property
    def largest_worker_mb(self) -> float:
        """The largest worker's RSS."""
        return max(self.workers_mb.values(), default=float("nan"))

    @property
    def total_workers_mb(self) -> float:
        """All workers' RSS summed (shared pages counted in each)."""
        return sum(self.workers_mb.values())


def gunicorn_memory(master_pid: int) -> ProcessMemory:
    """Read the master's and every worker's RSS, and whether each worker has TensorFlow loaded."""
    workers = children(master_pid)
    if not workers:
        raise StackError(f"gunicorn master {master_pid} has no workers")
    return ProcessMemory(
        master_mb=rss_mb(master_pid),
        workers_mb={pid: rss_mb(pid) for pid in workers},
        workers_load_tensorflow={pid: loads_tensorflow(pid) for pid in workers},
    )
