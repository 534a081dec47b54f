"""The service around the detection routes, in process: API key, probes, headers, request ids, errors, metrics."""

from __future__ import annotations

import io
import json
from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient

from proxy.settings import Settings
from tests.routes.conftest import LABELS, ROWS, jpeg
from tests.support.fake_backend import FakeBackend

KEY = "unit-key"
PICTURE = jpeg()


@pytest.fixture
def keyed(make_app: Callable[..., Flask]) -> FlaskClient:
    """An app with API_KEY set."""
    return make_app(Settings(api_key=KEY)).test_client()


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer wrong"}, 401),
        ({"Authorization": f"Bearer {KEY}"}, 200),
        ({"authorization": f"bearer {KEY}"}, 200),
        ({"X-API-Key": KEY}, 200),
        ({"X-API-Key": KEY[:-1]}, 401),
    ],
)
def test_api_key_guards_classify(keyed: FlaskClient, headers: dict[str, str], status: int) -> None:
    """With API_KEY set, /classify needs the key as a Bearer token or X-API-Key; a 401 says how to send it."""
    answer = keyed.post("/classify", data=PICTURE, headers=headers)
    assert answer.status_code == status
    if status == 401:
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
        assert "API key" in answer.json["error"]


@pytest.mark.parametrize(
    ("path", "method", "status"),
    [
        ("/healthz", "GET", 200),
        ("/readyz", "GET", 200),
        ("/openapi.json", "GET", 200),
        ("/", "GET", 200),
        ("/v1/status/updateavailable", "GET", 200),
        ("/v1/server/status/ping", "GET", 200),
        ("/v1/vision/custom/list", "POST", 401),
        ("/v1/models", "GET", 401),
        ("/metrics", "GET", 401),
        ("/nowhere", "GET", 404),
    ],
)
def test_open_and_guarded_endpoints(keyed: FlaskClient, path: str, method: str, status: int) -> None:
    """Probes, the page, the description and CodeProject.AI's status probes stay open; the rest need the key; an
    unknown path is still a 404."""
    assert keyed.open(path, method=method).status_code == status


def test_deepstack_form_field_carries_the_key(keyed: FlaskClient) -> None:
    """DeepStack clients' api_key form field is accepted on /v1/vision/* routes; a wrong one is a 401 envelope."""
    good = {"api_key": KEY, "image": (io.BytesIO(PICTURE), "image.jpg")}
    assert keyed.post("/v1/vision/detection", data=good, content_type="multipart/form-data").status_code == 200
    bad = {"api_key": "nope", "image": (io.BytesIO(PICTURE), "image.jpg")}
    answer = keyed.post("/v1/vision/detection", data=bad, content_type="multipart/form-data")
    assert answer.status_code == 401
    assert answer.json["success"] is False and answer.json["predictions"] == []


def test_form_key_is_not_looked_for_on_classify(keyed: FlaskClient) -> None:
    """/classify takes the key from the headers only."""
    data = {"api_key": KEY, "image": (io.BytesIO(PICTURE), "image.jpg")}
    assert keyed.post("/classify", data=data, content_type="multipart/form-data").status_code == 401


def test_front_admission_decides_from_headers_where_it_can(make_app: Callable[..., Flask]) -> None:
    """The HTTP front can refuse a keyless request from its headers, except where a DeepStack form may carry it."""
    hooks = make_app(Settings(api_key=KEY)).front_hooks  # type: ignore[attr-defined]
    assert hooks.admit("POST", "/classify", {}).status == 401
    assert hooks.admit("POST", "/classify", {"x-api-key": KEY}) is None
    multipart = {"content-type": "multipart/form-data; boundary=x"}
    assert hooks.admit("POST", "/v1/vision/detection", multipart) is None
    assert hooks.admit("POST", "/v1/vision/detection", {}).status == 401
    assert hooks.admit("GET", "/healthz", {}) is None
    assert hooks.admit("GET", "/no/such/path", {}) is None


def test_front_errors_take_the_shape_of_the_path(make_app: Callable[..., Flask]) -> None:
    """Errors the front answers itself are the vision envelope on /v1/vision/*, {"error"} elsewhere."""
    hooks = make_app().front_hooks  # type: ignore[attr-defined]
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
