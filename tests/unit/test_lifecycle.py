"""What the app opens has an owner that closes it; embedded models load once; runtime code has no asserts."""

from __future__ import annotations

import ast
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from odapi.contract import InputType
from proxy.backends import CallLimit, LabelMaps
from proxy.backends.embedded import EmbeddedBackend, _Loaded
from proxy.errors import BackendError, ModelNotReady
from proxy.labels import LabelMap
from proxy.services import Services
from proxy.settings import Settings
from tests.routes.conftest import LABELS, ROWS
from tests.support.fake_backend import FakeBackend

REPO = Path(__file__).resolve().parents[2]


def test_services_close_every_backend_and_the_channel() -> None:
    """Services.close closes each backend, then the gRPC connection they share; a second close does nothing."""
    settings = Settings(serving_address="127.0.0.1:1")  # a channel connects lazily: no socket is opened here
    services = Services.build(settings)
    connection = services.models["detector"].backend._connection  # type: ignore[attr-defined]
    services.close()
    with pytest.raises(ValueError, match="closed"):  # grpc refuses calls on a closed channel
        connection.channel.unary_unary("/x")(b"", timeout=0.1)
    services.close()


def test_the_app_closes_its_services() -> None:
    """front_hooks.close (called by the worker on exit) closes the app's backends."""
    from proxy.app import create_app

    backend = FakeBackend(ROWS, LABELS)
    app = create_app(Settings(), services=Services.build(Settings(), {"detector": backend}))
    app.front_hooks.close()  # type: ignore[attr-defined]
    assert backend.closed


@pytest.fixture
def counted_loads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[list[int], Path]:
    """Loading a version takes 0.3 s and is counted; the base path holds version 1."""
    loads: list[int] = []

    def load(name: str, version: int, path: Path, **_: Any) -> _Loaded:
        loads.append(version)
        time.sleep(0.3)
        if (path / "broken").exists():
            raise BackendError("not a SavedModel")
        return _Loaded(version, None, "inputs", InputType.IMAGE_TENSOR, 4, LabelMap({}), owner=None)

    monkeypatch.setattr("proxy.backends.embedded._load_version", load)
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "saved_model.pb").write_bytes(b"")
    return loads, tmp_path


def backend_for(base: Path) -> EmbeddedBackend:
    """An embedded backend over ``base``."""
    return EmbeddedBackend("m", base, signature_name="serving_default", calls=CallLimit(4), labels=LabelMaps(None))


def test_a_version_loads_once_and_requests_wait_for_that_load(counted_loads: tuple[list[int], Path]) -> None:
    """The background load and eight requests arriving during it share one load; the requests wait for it."""
    loads, base = counted_loads
    backend = backend_for(base)
    backend.start()
    served: list[int] = []
    threads = [
        threading.Thread(target=lambda: served.append(backend._model(time.monotonic() + 5).version)) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert loads == [1] and served == [1] * 8
    backend.close()


def test_a_request_during_a_long_load_gets_503_at_its_deadline(counted_loads: tuple[list[int], Path]) -> None:
    """A request whose deadline comes before the load ends gets 503 with Retry-After, not a load of its own."""
    loads, base = counted_loads
    backend = backend_for(base)
    backend.start()
    with pytest.raises(ModelNotReady) as raised:
        backend._model(time.monotonic() + 0.05)
    assert raised.value.headers["Retry-After"] == "2"
    assert loads == [1]
    backend.close()


def test_a_failed_version_is_not_retried_per_request(counted_loads: tuple[list[int], Path]) -> None:
    """A version that failed to load is reported (502, the model's fault) to every request without loading again."""
    loads, base = counted_loads
    (base / "1" / "broken").touch()
    backend = backend_for(base)
    backend.start()
    for _ in range(5):
        with pytest.raises((BackendError, ModelNotReady)) as raised:
            backend._model(time.monotonic() + 2)
        assert "not a SavedModel" in raised.value.message
    assert loads == [1]
    assert not backend.status().ready
    backend.close()


def test_runtime_code_has_no_asserts() -> None:
    """No assert guards the product's code: python -O would remove it."""
    found = []
    for package in ("proxy", "converter", "odapi"):
        for path in (REPO / package).rglob("*.py"):
            if "_proto" in path.parts:
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"))
            found += [
                f"{path.relative_to(REPO)}:{node.lineno}" for node in ast.walk(tree) if isinstance(node, ast.Assert)
            ]
    assert found == []
