"""The processes under test: the models, the TF Serving stand-in, the proxies; and /proc readings.

Everything runs as a child process on 127.0.0.1 and is stopped by its owner's ``stop()``. The load generator itself
never imports TensorFlow: the models are exported and converted by ``python -m bench.models`` in a subprocess, the
stand-in is started through ``harness.tfserving`` (a subprocess too), and the embedded floor is ``python -m
bench.tf_floor``.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.processes import REPO, HttpServer, children, free_port, quiet_tf_env, rss_kib
from harness.tfserving import RunningServer, ServerStartError, start_server

DEFAULT_MODEL = "detector"
ENCODED_MODEL = "detector-encoded"
DEMO_MODEL = "demo"  # the demo detector: the model costs almost nothing, the proxy's own work shows
DEMO_ENCODED_MODEL = "demo-encoded"
SERVED = (DEFAULT_MODEL, ENCODED_MODEL)  # what a serving-mode proxy serves, the default first
DEMOS = (DEMO_MODEL, DEMO_ENCODED_MODEL)
STAND_IN_THREADS = 32  # more gRPC threads than clients: queueing happens in TF, not there
# The slow-client proxies keep every slow connection open for the whole measurement.
LONG_TIMEOUTS = {
    "REQUEST_HEADER_TIMEOUT_S": "900",
    "REQUEST_READ_TIMEOUT_S": "900",
    "REQUEST_MIN_RATE_BYTES": "0",
    "SEND_TIMEOUT_S": "900",
    "KEEPALIVE_TIMEOUT_S": "900",
}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class StackError(RuntimeError):
    """A process under test could not be prepared or started; the message says which and why."""


@dataclass(frozen=True)
class Models:
    """The two converted models (name → base path) and the TF Serving config listing them."""

    base_paths: dict[str, Path]
    input_types: dict[str, str]
    config: Path
    export_s: float
    convert_s: float
    cached: bool

    def version_dir(self, name: str) -> Path:
        """The one converted version of ``name``."""
        return self.base_paths[name] / "1"

    def setting(self, names: tuple[str, ...] = SERVED) -> str:
        """``MODELS`` for a proxy serving ``names`` (each version carries its own label map)."""
        return ",".join(f"{name}::{self.base_paths[name]}" for name in names)


def _run(args: list[str], what: str, timeout_s: float = 300) -> str:
    try:
        done = subprocess.run(
            [sys.executable, *args],
            cwd=REPO,
            env={**os.environ, **quiet_tf_env()},
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise StackError(f"{what} did not finish within {timeout_s:g} s") from None
    if done.returncode != 0:
        raise StackError(f"{what} failed: {(done.stderr or done.stdout).strip().splitlines()[-3:]}")
    return done.stdout.strip().splitlines()[-1]


def prepare_models(work: Path) -> Models:
    """Export the real detector both ways and convert both (``python -m bench.models``)."""
    found = json.loads(_run(["-m", "bench.models", str(work)], "python -m bench.models"))
    return Models(
        base_paths={name: Path(path) for name, path in found["models"].items()},
        input_types=dict(found["input_types"]),
        config=Path(found["config"]),
        export_s=float(found["export_s"]),
        convert_s=float(found["convert_s"]),
        cached=bool(found.get("cached")),
    )


class FloorProcess:
    """A floor measured in a process of its own (``python -m MODULE ARGS``): ``start()`` waits for its READY line,
    ``ask(line)`` sends one command line and returns its one-line JSON answer."""

    def __init__(self, module: str, args: list[str]) -> None:
        self._module = module
        self._args = args
        self._process: subprocess.Popen[str] | None = None

    @property
    def pid(self) -> int:
        """The floor's process id."""
        if self._process is None:
            raise StackError(f"python -m {self._module} is not running")
        return int(self._process.pid)

    def start(self, timeout_s: float = 120.0) -> None:
        """Start it and wait for its READY line."""
        self._process = subprocess.Popen(
            [sys.executable, "-m", self._module, *self._args],
            cwd=REPO,
            env={**os.environ, **quiet_tf_env()},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        line = self._read_line(timeout_s)
        if line != "READY":
            raise StackError(f"python -m {self._module} did not get ready (it said {line!r})")

    def ask(self, line: str, timeout_s: float = 300.0) -> dict[str, Any]:
        """Send one command line; its JSON answer."""
        if self._process is None or self._process.stdin is None:
            raise StackError(f"python -m {self._module} is not running")
        self._process.stdin.write(f"{line}\n")
        self._process.stdin.flush()
        found: dict[str, Any] = json.loads(self._read_line(timeout_s))
        return found

    def _read_line(self, timeout_s: float) -> str:
        assert self._process is not None and self._process.stdout is not None
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.append(self._process.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(timeout_s)
        if not lines or not lines[0]:
            raise StackError(
                f"python -m {self._module} said nothing within {timeout_s:g} s (exit status {self._process.poll()})"
            )
        return lines[0].strip()

    def stop(self) -> None:
        """Kill it if it still runs."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()


class TfFloor(FloorProcess):
    """The embedded floor (``python -m bench.tf_floor``): ``start()`` loads and warms it up, ``run(n)`` measures n
    requests."""

    def __init__(self, version_dir: Path, photo: Path, warmup: int) -> None:
        super().__init__("bench.tf_floor", [str(version_dir), str(photo), str(warmup)])

    def run(self, requests: int, timeout_s: float = 300.0) -> list[float]:
        """Let it measure ``requests`` requests; their latencies in seconds."""
        return [float(value) for value in self.ask(str(requests), timeout_s)["latencies_s"]]


@dataclass(frozen=True)
class FloorRound:
    """One round of the bare gRPC client: each request's latency, and the CPU its whole process used for them."""

    latencies_s: list[float]
    cpu_s: float


class GrpcFloor(FloorProcess):
    """The bare gRPC client (``python -m bench.grpc_floor``) in a process of its own, so that its CPU time is its
    own work only: ``run(model, n)`` measures n Predict calls of ``model``."""

    def __init__(self, address: str, photo: Path, models: Mapping[str, str], warmup: int) -> None:
        pairs = [f"{name}={input_type}" for name, input_type in models.items()]
        super().__init__("bench.grpc_floor", [address, str(photo), str(warmup), *pairs])

    def run(self, model: str, requests: int, timeout_s: float = 300.0) -> FloorRound:
        """Let it measure ``requests`` calls of ``model``."""
        found = self.ask(f"{model} {requests}", timeout_s)
        return FloorRound([float(value) for value in found["latencies_s"]], float(found["cpu_s"]))


class StandIn:
    """The TF Serving stand-in serving every model of ``config`` on ``address`` (a port chosen now, so that the
    proxies can start alongside it)."""

    def __init__(self, config: Path) -> None:
        self.address = f"127.0.0.1:{free_port()}"
        self._args = [
            "--port",
            self.address.rsplit(":", 1)[1],
            "--model_config_file",
            str(config),
            "--grpc_max_threads",
            str(STAND_IN_THREADS),
            "--file_system_poll_wait_seconds",
            "0",  # the models do not change during the run: scan once
        ]
        self._server: RunningServer | None = None

    @property
    def pid(self) -> int:
        """The stand-in's process id."""
        if self._server is None:
            raise StackError("the stand-in is not running")
        return int(self._server.process.pid)

    def start(self, timeout_s: float = 120.0) -> StandIn:
        """Start it and wait for its READY line; raise ``StackError`` with its log if it does not come."""
        try:
            self._server = start_server(self._args, timeout=timeout_s, env=quiet_tf_env())
        except ServerStartError as exc:
            raise StackError(f"the TF Serving stand-in did not start: {exc}") from None
        return self

    def stop(self) -> None:
        """SIGTERM (it stops gracefully), SIGKILL if it lingers; the log is deleted."""
        if self._server is not None:
            self._server.close()


class Server(HttpServer):
    """An ``HttpServer`` whose log file can be deleted once it has stopped: the proxy logs every request."""

    def discard_log(self) -> None:
        """Delete the log file (after ``stop()``)."""
        self._log.close()
        Path(self._log.name).unlink(missing_ok=True)

    @property
    def workers(self) -> list[int]:
        """The gunicorn master's worker processes."""
        if self.process is None:
            raise StackError("the server is not running")
        return children(self.process.pid)


def proxy_env(
    models: Models, serving_address: str | None, names: tuple[str, ...], *, frame_cache: bool = False
) -> dict[str, str]:
    """A proxy configured as a user runs it (default workers and threads), serving ``names``; the frame cache off
    unless ``frame_cache`` (then at its default lifetime)."""
    # An API_KEY in the caller's environment would turn every benchmark request into a 401; LOG_FORMAT=json is what
    # a service without a terminal logs anyway. The benchmark sends the same pictures again and again to measure the
    # model's path: the frame cache, which would answer them from the first, is off (its own phase measures it).
    env = {"MODELS": models.setting(names), "API_KEY": "", "LOG_FORMAT": "json", "FRAME_CACHE_S": "0"}
    if frame_cache:
        # Named rather than left out: a FRAME_CACHE_S in the caller's environment would otherwise reach the proxy.
        env["FRAME_CACHE_S"] = f"{_default_frame_cache_s():g}"
    if serving_address:
        env["SERVING_ADDRESS"] = serving_address
    return env


def _default_frame_cache_s() -> float:
    from proxy.settings import Settings

    return float(Settings().frame_cache_s)


def proxy(
    models: Models,
    serving_address: str | None,
    *,
    extra: Mapping[str, str] | None = None,
    names: tuple[str, ...] | None = None,
    frame_cache: bool = False,
) -> Server:
    """``python -m proxy`` (gunicorn, the front); serving mode with an address (``names``, else both detectors),
    else embedded (the detector only)."""
    if names is None:
        names = SERVED if serving_address else (DEFAULT_MODEL,)
    port = free_port()
    env = {
        "PORT": str(port),
        "HOST": "127.0.0.1",
        **proxy_env(models, serving_address, names, frame_cache=frame_cache),
        **(extra or {}),
    }
    return Server([sys.executable, "-m", "proxy"], port=port, env=env, ready_path="/readyz", timeout_s=180)


BARE_FLASK_PATH = "/classify"


def bare_flask() -> Server:
    """The HTTP side's floor: ``bench.bare_flask`` (a Flask app with one POST route) under the proxy's own server,
    ``python -m gunicorn -k proxy.front.worker.FrontWorker``, 2 workers x 8 threads as ``python -m proxy`` runs."""
    port = free_port()
    args = [
        sys.executable, "-m", "gunicorn", "-k", "proxy.front.worker.FrontWorker", "--workers", "2", "--threads", "8",
        "--bind", f"127.0.0.1:{port}", "bench.bare_flask:app",
    ]  # fmt: skip
    # Its one route takes POST only: a GET answering 405 says the app is loaded and serving.
    return Server(args, port=port, ready_path=BARE_FLASK_PATH, ready_status=405, timeout_s=60)


def gthread_proxy(models: Models, serving_address: str, metrics_dir: Path) -> Server:
    """The same app under gunicorn's threaded worker: ``gunicorn -k gthread --threads 8 --workers 2
    'proxy.app:create_app()'``, configured by the same environment as ``python -m proxy`` (which also sets
    PROMETHEUS_MULTIPROC_DIR, given here)."""
    port = free_port()
    args = [
        sys.executable, "-m", "gunicorn", "-k", "gthread", "--threads", "8", "--workers", "2",
        "--bind", f"127.0.0.1:{port}", "proxy.app:create_app()",
    ]  # fmt: skip
    env = {
        **proxy_env(models, serving_address, SERVED),
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    return Server(args, port=port, env=env, ready_path="/readyz", timeout_s=180)


def cold_start_s(models: Models, serving_address: str, timeout_s: float = 60.0) -> float:
    """Seconds from spawning ``python -m proxy`` (serving mode) to its first 200 on ``/healthz`` (polled every 5 ms)."""
    port = free_port()
    env = {
        **os.environ,
        **proxy_env(models, serving_address, SERVED),
        "PORT": str(port),
        "HOST": "127.0.0.1",
    }
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


def metrics_dir() -> Path:
    """A fresh directory for a gunicorn run's Prometheus files (the caller removes it)."""
    return Path(tempfile.mkdtemp(prefix="bench-metrics-"))


# -- /proc readings --------------------------------------------------------------------------------------------


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` in MB."""
    try:
        return rss_kib(pid) / 1024
    except (OSError, ProcessLookupError) as exc:
        raise StackError(f"cannot read the memory of process {pid}: {exc}") from None


def cpu_s(pids: list[int]) -> float:
    """User plus system CPU seconds the processes ``pids`` have used, all their threads (``/proc/<pid>/stat``
    fields 14 and 15, in clock ticks)."""
    total = 0
    for pid in pids:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()  # the fields after the command name; utime is the 12th of them
        total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def frame_cache_counts(port: int) -> dict[str, float]:
    """The frame cache's answers by result (hit, miss, ...), summed over every worker: the proxy's ``/metrics``,
    read with prometheus_client's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/metrics")
        text = connection.getresponse().read().decode()
    finally:
        connection.close()
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "classifyobjects_frame_cache_total":
                result = sample.labels["result"]
                counts[result] = counts.get(result, 0.0) + sample.value
    return counts


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
