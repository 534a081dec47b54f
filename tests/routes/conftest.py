"""Route tests in process: the real app from ``create_app`` with a small fake backend, through Flask's test client.

No socket, no TensorFlow: what the routes do with a request does not depend on the model behind them. The same
behaviours are also checked end to end against real processes where users rely on them (tests/integration).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image

from proxy.app import create_app
from proxy.labels import LabelMap
from proxy.services import Services
from proxy.settings import Settings
from tests.support.fake_backend import FakeBackend, detections

LABELS = LabelMap({1: "Dog", 2: "Person", 3: "Traffic Light"})
# Best first: a dog, a person overlapping it heavily (IoU 0.81), a weaker dog, a faint person.
ROWS = detections(
    (1, 0.95, (0.10, 0.10, 0.50, 0.50)),
    (2, 0.90, (0.10, 0.10, 0.50, 0.55)),
    (1, 0.80, (0.60, 0.60, 0.90, 0.90)),
    (2, 0.30, (0.00, 0.00, 0.20, 0.20)),
)


def jpeg(size: tuple[int, int] = (64, 48), colour: str = "red", **save: Any) -> bytes:
    """A small JPEG."""
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="JPEG", **save)
    return buffer.getvalue()


def png(size: tuple[int, int] = (64, 48), mode: str = "RGB") -> bytes:
    """A small PNG."""
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def make_app() -> Iterator[Callable[..., Flask]]:
    """Build apps with fake backends (one per model name); every app built is closed after the test."""
    built: list[Flask] = []

    def make(settings: Settings | None = None, **backends: FakeBackend) -> Flask:
        # No frame cache unless a test asks for one: most tests count what the model was asked, request by request.
        settings = settings or Settings(frame_cache_s=0)
        backends = backends or {settings.model_name: FakeBackend(ROWS, LABELS)}
        app = create_app(settings, services=Services.build(settings, backends))
        built.append(app)
        return app

    yield make
    for app in built:
        Services.of(app).close()


@pytest.fixture
def backend() -> FakeBackend:
    """The default model's fake backend."""
    return FakeBackend(ROWS, LABELS)


@pytest.fixture
def client(make_app: Callable[..., Flask], backend: FakeBackend) -> FlaskClient:
    """A test client of an app whose one model is ``backend``."""
    return make_app(detector=backend).test_client()
