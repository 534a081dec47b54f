"""Fixtures for the deployment-file tests: the parsed compose files, the rendered Kubernetes manifests, stub servers.

Nothing here starts Docker or a cluster (neither exists on these machines): files are read and checked with the
real validators of their formats, and the shell and Python snippets they carry run for real against local stubs.
"""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.deployfiles import (
    COMPOSE_FILE,
    COMPOSE_GPU_FILE,
    K8S,
    K8S_GPU,
    REPO,
    Manifests,
    StubServer,
    load_yaml,
)


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    """docker-compose.yml, parsed."""
    return load_yaml(COMPOSE_FILE)


@pytest.fixture(scope="session")
def compose_gpu() -> dict[str, Any]:
    """docker-compose.gpu.yml (the GPU override), parsed."""
    return load_yaml(COMPOSE_GPU_FILE)


@pytest.fixture(scope="session")
def k8s() -> Manifests:
    """deploy/k8s rendered by kustomize, once for the session."""
    return Manifests.render(K8S)


@pytest.fixture(scope="session")
def k8s_gpu() -> Manifests:
    """deploy/k8s-gpu (the GPU overlay) rendered by kustomize, once for the session."""
    return Manifests.render(K8S_GPU)


@pytest.fixture(scope="session")
def stand_in_default_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model directory standing in for the converter image's default detector: the offline demo detector
    (``python -m demo_model``), a frozen graph with its label map, in the layout the default one has."""
    directory = tmp_path_factory.mktemp("default-model")
    result = subprocess.run(
        [sys.executable, "-m", "demo_model", str(directory)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (directory / "frozen_inference_graph.pb").is_file() and (directory / "label_map.pbtxt").is_file()
    return directory


class _StubHandler(http.server.BaseHTTPRequestHandler):
    """Answers every GET with the status and body set on the server, and records the path."""

    def do_GET(self) -> None:
        status, body = self.server.reply  # type: ignore[attr-defined]
        payload = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        self.server.paths.append(self.path)  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def stub_http() -> Iterator[StubServer]:
    """Local HTTP servers answering a fixed status and body: ``serve(status, body) -> (port, paths)``."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def serve(status: int, body: str) -> tuple[int, list[str]]:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StubHandler)
        server.reply = (status, body)  # type: ignore[attr-defined]
        server.paths = []  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return server.server_address[1], server.paths  # type: ignore[attr-defined]

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def unused_port() -> int:
    """A loopback port nothing listens on (bound once, then released)."""
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StubHandler) as server:
        port: int = server.server_address[1]
    return port
