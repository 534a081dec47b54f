"""The service around the detection routes, in process: API key, probes, headers, request ids, errors, metrics."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient

from proxy.app import front_app
from proxy.backends import ModelStatus
from proxy.context import json_response
from proxy.observability import JsonLines, access_log
from proxy.settings import ModelConfig, Settings
from tests.routes.conftest import LABELS, ROWS, jpeg
from tests.support.fake_backend import FakeBackend

PICTURE = jpeg()


def test_front_errors_take_the_shape_of_the_path(make_app: Callable[..., Flask]) -> None:
    """Errors the front answers itself are the vision envelope on /v1/vision/*, {"error"} elsewhere."""
    hooks = front_app(make_app()).hooks
    content_type, body = hooks.error("/v1/vision/detection", 408, "too slow", "rid")
    vision = json.loads(body)
    assert content_type == "application/json"
    assert (vision["success"], vision["predictions"], vision["code"], vision["requestId"]) == (False, [], 408, "rid")
    assert json.loads(hooks.error("/classify", 408, "too slow", "rid")[1]) == {"error": "too slow"}


def test_readiness_names_the_model_and_version(client: FlaskClient) -> None:
    """/readyz is 200 with the default model and its version when every model is ready."""
    answer = client.get("/readyz")
    assert answer.status_code == 200
    assert answer.json == {"ready": True, "model": "detector", "version": 1}


def test_readiness_asks_every_model_at_once(make_app: Callable[..., Flask]) -> None:
    """/readyz asks its models' statuses together: each of three waits until all three are being asked (a barrier
    that sequential calls would break), so a hung TF Serving costs the probe one status bound (2 s), not one per
    model (6 s with three, past Kubernetes' 3 s probe timeout)."""
    barrier = threading.Barrier(3, timeout=5)

    class Together(FakeBackend):
        def status(self) -> ModelStatus:
            barrier.wait()
            return super().status()

    names = ("detector", "second", "third")
    settings = Settings(models=tuple(ModelConfig(name, Settings().model_base_path) for name in names), frame_cache_s=0)
    app = make_app(settings, **{name: Together(ROWS, LABELS) for name in names})
    answer = app.test_client().get("/readyz")
    assert answer.status_code == 200 and answer.json["ready"] is True


def test_not_ready_is_a_503_without_paths(make_app: Callable[..., Flask]) -> None:
    """A model still loading makes /readyz a 503 whose error names the model, not a filesystem path."""
    client = make_app(detector=FakeBackend(ROWS, LABELS, ready=False)).test_client()
    answer = client.get("/readyz")
    assert answer.status_code == 503
    assert answer.json["ready"] is False and "/" not in answer.json["error"]


def test_models_lists_versions_and_classes(client: FlaskClient) -> None:
    """/v1/models lists every model with its class count, versions and states."""
    assert client.get("/v1/models").json == {
        "models": [
            {
                "name": "detector",
                "default": True,
                "classes": 3,
                "versions": [{"version": 1, "state": "AVAILABLE"}],
            }
        ]
    }


def test_request_id_is_echoed_or_made(client: FlaskClient) -> None:
    """A sane X-Request-ID comes back; an absent or insane one is replaced by a new id."""
    assert client.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"] == "abc-123"
    made = client.get("/healthz", headers={"X-Request-ID": "bad id\x01"}).headers["X-Request-ID"]
    assert made != "bad id\x01" and len(made) == 32


def test_security_headers_and_page_policy(client: FlaskClient) -> None:
    """Every answer carries nosniff and X-Frame-Options DENY; the page and its files carry a CSP."""
    api = client.get("/healthz")
    assert api.headers["X-Content-Type-Options"] == "nosniff"
    assert api.headers["X-Frame-Options"] == "DENY"
    page = client.get("/")
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy and "script-src 'self'" in policy


@pytest.mark.parametrize(
    ("method", "path", "status", "words"),
    [
        ("GET", "/classify", 405, "not allowed"),
        ("DELETE", "/healthz", 405, "not allowed"),
        ("GET", "/no/such/thing", 404, "no such endpoint"),
    ],
)
def test_werkzeug_errors_are_json(client: FlaskClient, method: str, path: str, status: int, words: str) -> None:
    """Unknown paths and wrong methods answer JSON errors (405 with Allow)."""
    answer = client.open(path, method=method)
    assert answer.status_code == status
    assert words in answer.json["error"]
    if status == 405:
        assert "Allow" in answer.headers


def test_unknown_methods_share_one_metrics_label(client: FlaskClient) -> None:
    """Invented method names are counted as OTHER, so /metrics cannot grow without bound."""
    for name in ("ZZMETH1", "ZZMETH2"):
        client.open("/healthz", method=name)
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'method="OTHER"' in metrics
    assert "ZZMETH" not in metrics


def test_requests_are_counted_once_each_per_route_method_and_status(client: FlaskClient) -> None:
    """Each answer adds one to its (route, method, status) series, however often the series was seen before."""

    def count(status: int) -> float:
        series = f'classifyobjects_http_requests_total{{method="GET",route="/healthz",status="{status}"}}'
        for line in client.get("/metrics").get_data(as_text=True).splitlines():
            if line.startswith(series + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = count(200)
    for _ in range(3):
        assert client.get("/healthz").status_code == 200
    assert count(200) == before + 3


@pytest.mark.parametrize(
    "body",
    [{"Dog": 2, "Cat": 1}, [{"class": "Ünïcode ✓", "score": 0.8125, "x1": 0.1}], {"error": 'a "quoted" \\ value'}, []],
)
def test_json_answers_are_what_flasks_provider_writes(make_app: Callable[..., Flask], body: object) -> None:
    """json_response writes the bytes, type and length Flask's JSON provider gives the app (its key order kept)."""

    app = make_app()
    with app.app_context():
        expected = app.json.response(body)
    answer = json_response(body, 201)
    assert answer.get_data() == expected.get_data()
    assert (answer.status_code, answer.mimetype, answer.content_length) == (201, "application/json", len(expected.data))


def test_a_json_answer_holding_what_json_cannot_is_a_type_error() -> None:
    """A value JSON cannot hold is the program's error (a 500 through the app), named by its type."""
    with pytest.raises(TypeError, match="set"):
        json_response({"classes": {"Dog"}})


def test_each_answer_writes_one_access_entry(client: FlaskClient) -> None:
    """One INFO record on the access log per answer, its entry the request's fields, one JSON line as written."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    access_log.addHandler(handler)
    try:
        answer = client.post(
            "/classify?threshold=0.5", data=PICTURE, content_type="image/jpeg",
            headers={"X-Request-ID": "rid-1", "User-Agent": "camera/1.0"},
        )  # fmt: skip
    finally:
        access_log.removeHandler(handler)
    assert answer.status_code == 200
    [record] = records
    entry = record.entry  # type: ignore[attr-defined]
    assert (record.name, record.levelno) == ("classifyobjects.access", logging.INFO)
    assert record.getMessage() == "POST /classify 200"
    assert {key: entry[key] for key in ("request_id", "method", "path", "route", "status", "user_agent")} == {
        "request_id": "rid-1", "method": "POST", "path": "/classify", "route": "/classify", "status": 200,
        "user_agent": "camera/1.0",
    }  # fmt: skip
    assert entry["request_bytes"] == len(PICTURE) and entry["response_bytes"] == len(answer.data)
    assert "threshold" not in json.dumps(entry)  # never the query string
    stamp = time.strptime(entry["time"], "%Y-%m-%dT%H:%M:%S%z")  # the local time of the answer, to the second
    assert abs(time.mktime(stamp) - time.time()) < 5
    assert json.loads(JsonLines().format(record)) == entry
