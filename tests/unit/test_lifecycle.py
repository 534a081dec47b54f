"""What the app opens has an owner that closes it; embedded models load once; runtime code has no asserts."""

from __future__ import annotations

import ast
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from odapi.contract import InputType
from proxy.backends import CallLimit, LabelMaps
from proxy.backends.embedded import EmbeddedBackend, LoadRetries, _Loaded
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
    """What the front calls when the worker exits (front_app(app).close) closes the app's backends."""
    from proxy.app import create_app, front_app

    backend = FakeBackend(ROWS, LABELS)
    app = create_app(Settings(), services=Services.build(Settings(), {"detector": backend}))
    front_app(app).close()
    assert backend.closed


Loads = tuple[list[int], Path]


@pytest.fixture
def counted_loads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Loads:
    """Loading a version takes 0.3 s and is counted; a version directory holding a file ``raise`` fails to load
    with the exception named in it (and its first line removed, so a file of several lines fails several times)."""
    loads: list[int] = []

    def load(name: str, version: int, path: Path, **_: Any) -> _Loaded:
        loads.append(version)
        time.sleep(0.3)
        failing = path / "raise"
        if failing.exists() and failing.read_text():
            first, *rest = failing.read_text().splitlines()
            failing.write_text("\n".join(rest))
            raise FAILURES[first]
        return _Loaded(version, None, "inputs", InputType.IMAGE_TENSOR, 4, LabelMap({}), owner=None)

    monkeypatch.setattr("proxy.backends.embedded._load_version", load)
    add_version(tmp_path, 1)
    return loads, tmp_path


FAILURES: dict[str, Exception] = {
    "proxy": BackendError("not a SavedModel"),
    "unicode": UnicodeDecodeError("utf-8", b"\xe9t\xe9", 0, 1, "invalid continuation byte"),
    "tensorflow": RuntimeError("an error TensorFlow raised"),
}


def add_version(base: Path, version: int, *failures: str) -> None:
    """A version directory under ``base`` whose loads fail with ``failures``, in turn, before one succeeds."""
    (base / str(version)).mkdir(parents=True)
    (base / str(version) / "saved_model.pb").write_bytes(b"")
    if failures:
        (base / str(version) / "raise").write_text("\n".join(failures))


def backend_for(base: Path, retries: int = 0, first_wait_s: float = 0.2) -> EmbeddedBackend:
    """An embedded backend over ``base``, retrying a failed version ``retries`` times."""
    return EmbeddedBackend(
        "m",
        base,
        signature_name="serving_default",
        calls=CallLimit(4),
        labels=LabelMaps(None),
        retries=LoadRetries(retries, first_wait_s),
    )


def wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Poll ``condition`` until it holds, failing the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.02)  # polling interval


def test_a_version_loads_once_and_requests_wait_for_that_load(counted_loads: Loads) -> None:
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


def test_a_request_during_a_long_load_gets_503_at_its_deadline(counted_loads: Loads) -> None:
    """A request whose deadline comes before the load ends gets 503 with Retry-After, not a load of its own."""
    loads, base = counted_loads
    backend = backend_for(base)
    backend.start()
    with pytest.raises(ModelNotReady) as raised:
        backend._model(time.monotonic() + 0.05)
    assert raised.value.headers["Retry-After"] == "2"
    assert loads == [1]
    backend.close()


def test_a_failed_version_is_not_retried_per_request(tmp_path: Path, counted_loads: Loads) -> None:
    """A version that failed to load, with no retries left, is the model's 502 to every request without loading
    again, and not ready."""
    loads, _ = counted_loads
    base = tmp_path / "other"
    add_version(base, 1, "proxy")
    backend = backend_for(base)
    backend.start()
    for _ in range(5):
        with pytest.raises(BackendError) as raised:
            backend._model(time.monotonic() + 2)
        assert raised.value.message == "model m version 1 failed to load: not a SavedModel"
    assert loads == [1]
    assert not backend.status().ready
    backend.close()


@pytest.mark.parametrize("failure", sorted(FAILURES))
def test_any_failure_marks_the_version_and_a_newer_one_still_loads(
    tmp_path: Path, counted_loads: Loads, failure: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever a load raises (the proxy's own error, a label map that is not UTF-8, anything TensorFlow raises),
    the version is marked failed with its reason, the served version keeps answering, and a newer version copied
    in later is loaded and served: the loader never wedges."""
    monkeypatch.setattr("proxy.backends.embedded.POLL_S", 0.0)
    loads, base = counted_loads
    backend = backend_for(base)
    backend.start()
    assert backend._model(time.monotonic() + 5).version == 1
    add_version(base, 2, failure)
    wait_for(lambda: backend.status().detail != "" and 2 in loads)
    status = backend.status()
    assert status.ready and status.version == 1
    reason = str(FAILURES[failure]) if failure != "proxy" else "not a SavedModel"
    assert status.detail.startswith("model m version 2 failed to load: ") and reason in status.detail
    assert str(base) not in status.detail
    assert [(v.version, v.state) for v in backend.versions()] == [(1, "AVAILABLE"), (2, "END")]
    assert backend._model(time.monotonic() + 1).version == 1
    add_version(base, 3)
    wait_for(lambda: backend.status().version == 3)
    assert loads == [1, 2, 3] and backend.status().detail == ""
    backend.close()


def test_a_failed_version_is_tried_again_with_a_back_off(tmp_path: Path, counted_loads: Loads) -> None:
    """A version that fails its first tries (still being copied in) is tried again after waits that double, and
    served once a try succeeds; meanwhile requests get a 503 that says when the next try is due."""
    loads, _ = counted_loads
    base = tmp_path / "copied"
    add_version(base, 1, "proxy", "proxy")
    backend = backend_for(base, retries=3, first_wait_s=0.4)
    started = time.monotonic()
    backend.start()
    wait_for(lambda: loads == [1])
    with pytest.raises(ModelNotReady) as raised:
        backend._model(time.monotonic() + 1)
    assert "(try 1; trying again in" in raised.value.message and raised.value.headers["Retry-After"] == "1"

    def served() -> bool:
        backend.status()  # what a probe or a request does: a due retry starts
        return backend.status().ready

    wait_for(served)
    # Three loads of 0.3 s, and waits of 0.4 then 0.8 s between them.
    assert loads == [1, 1, 1] and time.monotonic() - started >= 0.9 + 1.2
    assert backend._model(time.monotonic() + 1).version == 1
    backend.close()


def test_a_version_is_given_up_once_its_retries_are_spent(tmp_path: Path, counted_loads: Loads) -> None:
    """After its last retry fails, a version is given up: the model's 502 saying how many tries it took, and no
    further loads."""
    loads, _ = counted_loads
    base = tmp_path / "broken"
    add_version(base, 1, "tensorflow", "tensorflow", "tensorflow", "tensorflow")
    backend = backend_for(base, retries=2, first_wait_s=0.1)
    backend.start()

    def given_up() -> bool:
        backend.status()
        return "gave up" in backend.status().detail

    wait_for(given_up)
    with pytest.raises(BackendError) as raised:
        backend._model(time.monotonic() + 1)
    assert raised.value.message == (
        "model m version 1 failed to load: RuntimeError: an error TensorFlow raised (gave up after 3 tries)"
    )
    time.sleep(0.5)
    backend.status()
    assert loads == [1, 1, 1]
    backend.close()


def test_load_retries_double_their_wait() -> None:
    """The wait before each retry doubles from the first; once the retries are spent there is none."""
    retries = LoadRetries(3, 2.0)
    assert [retries.wait_s(attempts) for attempts in (1, 2, 3, 4)] == [2.0, 4.0, 8.0, None]
    assert LoadRetries(0, 2.0).wait_s(1) is None


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
