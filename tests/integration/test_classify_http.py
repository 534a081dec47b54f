"""End to end over real HTTP: ``python -m proxy`` under gunicorn, embedded TensorFlow, the converted demo model."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from PIL import Image

from demo_model import CLASSES, random_scene
from tests.support.answers import assert_same_answer
from harness.processes import HttpServer, proxy_server

NAMES = {class_id: name.title() for class_id, name, _ in CLASSES}
SIZES = [(640, 480), (320, 240), (300, 500), (1024, 768)]
THRESHOLDS = [0.0, 0.5, 0.75, 0.9]


def encode(image: Image.Image, fmt: str) -> bytes:
    """The picture as file bytes in ``fmt``."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def seed_answer(outputs: dict[str, np.ndarray], threshold: float, *, verbose: bool) -> Any:
    """The seed service's rules, applied to raw graph outputs: score > threshold, first num_detections rows."""
    count = int(outputs["num_detections"][0])
    rows = zip(
        outputs["detection_classes"][0][:count],
        outputs["detection_scores"][0][:count],
        outputs["detection_boxes"][0][:count],
        strict=True,
    )
    kept = [(NAMES[int(c)], float(s), [float(v) for v in b]) for c, s, b in rows if s > threshold]
    if not verbose:
        return dict(Counter(name for name, _, _ in kept))
    return [{"class": n, "score": s, "x1": b[1], "y1": b[0], "x2": b[3], "y2": b[2]} for n, s, b in kept]


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_answers_match_the_frozen_graph_run_directly(
    embedded_proxy: HttpServer,
    run_frozen_graph: Callable[[np.ndarray], dict[str, np.ndarray]],
    size: tuple[int, int],
    fmt: str,
) -> None:
    """For generated pictures and several thresholds, counts and verbose answers equal the seed's rules on TF."""
    image, shapes = random_scene(seed=size[0] * 7 + size[1], size=size)
    body = encode(image, fmt)
    reference = run_frozen_graph(np.asarray(Image.open(io.BytesIO(body)).convert("RGB")))
    assert int(reference["num_detections"][0]) >= len(shapes) // 2  # the scene is not trivially empty
    mime = "image/jpeg" if fmt == "JPEG" else "image/png"
    for threshold in THRESHOLDS:
        counts = requests.post(
            f"{embedded_proxy.url}/classify",
            params={"threshold": threshold},
            data=body,
            headers={"Content-Type": mime},
            timeout=30,
        )
        assert counts.status_code == 200, counts.text
        assert counts.headers["Content-Type"] == "application/json"
        assert counts.json() == seed_answer(reference, threshold, verbose=False)
        verbose = requests.post(
            f"{embedded_proxy.url}/classify",
            params={"threshold": threshold, "verbose": "true"},
            data=body,
            headers={"Content-Type": mime},
            timeout=30,
        )
        assert verbose.status_code == 200, verbose.text
        assert_same_answer(verbose.json(), seed_answer(reference, threshold, verbose=True))


def test_default_threshold_is_075_and_strict(
    embedded_proxy: HttpServer, run_frozen_graph: Callable[[np.ndarray], dict[str, np.ndarray]]
) -> None:
    """Without ``threshold`` the answer is the one for 0.75, and a score equal to the threshold does not count."""
    image, _ = random_scene(seed=11)
    body = encode(image, "PNG")
    default = requests.post(f"{embedded_proxy.url}/classify?verbose=true", data=body, timeout=30).json()
    explicit = requests.post(f"{embedded_proxy.url}/classify?verbose=true&threshold=0.75", data=body, timeout=30)
    assert default == explicit.json()
    assert all(d["score"] > 0.75 for d in default)
    top = max(d["score"] for d in default)
    at_top = requests.post(f"{embedded_proxy.url}/classify", params={"threshold": repr(top)}, data=body, timeout=30)
    assert sum(at_top.json().values()) == sum(1 for d in default if d["score"] > top)


def test_demo_sample_answers_two_red_shapes(embedded_proxy: HttpServer, demo_model_dir: Path) -> None:
    """The sample picture written with the demo model holds two red shapes, one green and one blue."""
    body = (demo_model_dir / "demo.jpg").read_bytes()
    answer = requests.post(f"{embedded_proxy.url}/classify?threshold=0.8", data=body, timeout=30)
    assert answer.json() == {"Blue": 1, "Red": 2, "Green": 1}


def test_health_and_readiness(embedded_proxy: HttpServer) -> None:
    """``/healthz`` answers while the process lives; ``/readyz`` names the loaded model and version."""
    assert requests.get(f"{embedded_proxy.url}/healthz", timeout=5).json() == {"status": "ok"}
    ready = requests.get(f"{embedded_proxy.url}/readyz", timeout=5)
    assert ready.status_code == 200
    assert ready.json() == {"ready": True, "model": "detector", "version": 1}


@pytest.fixture(scope="module")
def bomb_png() -> bytes:
    """A PNG of 10000x10000 black pixels: 100 MP when decoded, a few hundred KB on disk."""
    buffer = io.BytesIO()
    Image.new("1", (10_000, 10_000)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


ERROR_CASES: list[tuple[str, str, dict[str, Any], int, str]] = [
    ("get", "/classify", {}, 405, "method GET not allowed"),
    ("put", "/classify", {"data": b"x"}, 405, "method PUT not allowed"),
    ("get", "/no/such/path", {}, 404, "no such endpoint"),
    ("post", "/classify", {"data": b""}, 400, "empty body"),
    (
        "post",
        "/classify",
        {"data": b"\x00garbage" * 20, "headers": {"Content-Type": "image/jpeg"}},
        400,
        "cannot decode",
    ),
    (
        "post",
        "/classify",
        {"data": b"hello", "headers": {"Content-Type": "text/plain"}},
        415,
        "not an image type",
    ),
    (
        "post",
        "/classify",
        {"data": b'{"a": 1}', "headers": {"Content-Type": "application/json"}},
        415,
        "not an image",
    ),
    ("post", "/classify?threshold=abc", {"data": b"x"}, 400, "threshold must be a number between 0 and 1"),
    ("post", "/classify?threshold=1.5", {"data": b"x"}, 400, "threshold"),
    ("post", "/classify?threshold=-1", {"data": b"x"}, 400, "threshold"),
    ("post", "/classify?threshold=nan", {"data": b"x"}, 400, "threshold"),
    ("post", "/classify?threshold=inf", {"data": b"x"}, 400, "threshold"),
    ("post", "/classify?threshold=", {"data": b"x"}, 400, "threshold"),
    ("post", "/classify?verbose=maybe", {"data": b"x"}, 400, "verbose must be true or false"),
    ("post", "/classify", {"data": b"\x00" * (20 * 1024 * 1024 + 1)}, 413, "MAX_BODY_BYTES"),
]


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "message"), ERROR_CASES)
def test_errors_are_json_with_the_right_status(
    embedded_proxy: HttpServer, method: str, path: str, kwargs: dict[str, Any], status: int, message: str
) -> None:
    """Every client mistake is a JSON ``{"error": ...}`` with its 4xx status, and the service keeps answering."""
    response = requests.request(method, embedded_proxy.url + path, timeout=30, **kwargs)
    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    body = response.json()
    assert list(body) == ["error"]
    assert message in body["error"]
    if status == 405:
        assert "POST" in response.headers["Allow"]
    sample, _ = random_scene(seed=1)
    assert requests.post(f"{embedded_proxy.url}/classify", data=encode(sample, "PNG"), timeout=30).status_code == 200


def test_decompression_bomb_is_refused_before_decoding(embedded_proxy: HttpServer, bomb_png: bytes) -> None:
    """A small PNG that declares 100 megapixels gets 413 naming MAX_IMAGE_PIXELS."""
    assert len(bomb_png) < 2 * 1024 * 1024
    response = requests.post(f"{embedded_proxy.url}/classify", data=bomb_png, timeout=30)
    assert response.status_code == 413
    assert "MAX_IMAGE_PIXELS" in response.json()["error"]


def test_no_model_yet_is_503_with_retry_after(demo_model_dir: Path, tmp_path: Path) -> None:
    """With nothing converted under MODEL_BASE_PATH the proxy still starts; /classify and /readyz answer 503."""
    env = {"MODEL_DIR": str(demo_model_dir), "MODEL_BASE_PATH": str(tmp_path / "empty")}
    with proxy_server(env, ready_path="/healthz") as server:
        ready = requests.get(f"{server.url}/readyz", timeout=10)
        assert ready.status_code == 503
        assert ready.json()["ready"] is False
        response = requests.post(f"{server.url}/classify", data=(demo_model_dir / "demo.jpg").read_bytes(), timeout=30)
        assert response.status_code == 503
        assert response.headers["Retry-After"].isdigit()
        assert "no model under" in response.json()["error"]


def test_class_missing_from_label_map_gets_the_fallback_name(
    demo_model_dir: Path, model_base: Path, tmp_path: Path
) -> None:
    """A class id the label map lacks is answered as ``Class <id>`` instead of failing the request."""
    partial = tmp_path / "partial.pbtxt"
    partial.write_text('item { id: 1 name: "red" }\n', encoding="utf-8")
    env = {"MODEL_DIR": str(demo_model_dir), "MODEL_BASE_PATH": str(model_base), "LABEL_MAP": str(partial)}
    with proxy_server(env) as server:
        response = requests.post(
            f"{server.url}/classify?threshold=0.8",
            data=(demo_model_dir / "demo.jpg").read_bytes(),
            timeout=30,
        )
    assert response.json() == {"Class 3": 1, "Red": 2, "Class 2": 1}


def test_malformed_label_map_stops_startup_with_one_line(demo_model_dir: Path, tmp_path: Path) -> None:
    """``python -m proxy`` with a malformed label map exits 2 with one line naming the file and line."""
    broken = tmp_path / "broken.pbtxt"
    broken.write_text('item {\n  id: 1\n  name: "dog"\n  colour: "brown"\n}\n', encoding="utf-8")
    env = {"MODEL_DIR": str(demo_model_dir), "LABEL_MAP": str(broken), "PORT": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "proxy"],
        env={**__import__("os").environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert f"{broken}: line 4" in lines[0]
    assert 'no field named "colour"' in lines[0]


def test_large_jpeg_answers_as_at_full_size(
    embedded_proxy: HttpServer, run_frozen_graph: Callable[[np.ndarray], dict[str, np.ndarray]]
) -> None:
    """A 4000x3000 JPEG, decoded at reduced scale (MAX_IMAGE_SIDE), answers as the full-size image run directly."""
    image, _ = random_scene(seed=21, size=(4000, 3000))
    body = encode(image, "JPEG")
    reference = run_frozen_graph(np.asarray(Image.open(io.BytesIO(body)).convert("RGB")))
    for threshold in [0.5, 0.75]:
        counts = requests.post(f"{embedded_proxy.url}/classify", params={"threshold": threshold}, data=body, timeout=60)
        assert counts.json() == seed_answer(reference, threshold, verbose=False)
    verbose = requests.post(f"{embedded_proxy.url}/classify?verbose=true&threshold=0.5", data=body, timeout=60).json()
    expected = seed_answer(reference, 0.5, verbose=True)
    assert sorted(d["class"] for d in verbose) == sorted(d["class"] for d in expected)
    by_box = sorted(expected, key=lambda d: (d["class"], d["y1"], d["x1"]))
    for got, want in zip(sorted(verbose, key=lambda d: (d["class"], d["y1"], d["x1"])), by_box, strict=True):
        for key in ("x1", "y1", "x2", "y2"):
            assert got[key] == pytest.approx(want[key], abs=0.02)  # the demo's grid resolution is 1/128
        assert got["score"] == pytest.approx(want["score"], abs=0.05)


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer wrong"}, 401),
        ({"X-API-Key": "s3cret-ke"}, 401),
        ({"Authorization": "Basic czNjcmV0LWtleQ=="}, 401),
        ({"Authorization": "Bearer s3cret-key"}, 200),
        ({"authorization": "bearer s3cret-key"}, 200),
        ({"X-API-Key": "s3cret-key"}, 200),
    ],
)
def test_api_key_guards_classify(
    keyed_proxy: HttpServer, demo_model_dir: Path, headers: dict[str, str], status: int
) -> None:
    """With API_KEY set, /classify needs the key as a Bearer token or X-API-Key; 401 JSON otherwise."""
    body = (demo_model_dir / "demo.jpg").read_bytes()
    response = requests.post(f"{keyed_proxy.url}/classify", data=body, headers=headers, timeout=30)
    assert response.status_code == status
    if status == 401:
        assert "API key" in response.json()["error"]
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_api_key_leaves_probes_open(keyed_proxy: HttpServer) -> None:
    """Health and readiness probes need no key."""
    assert requests.get(f"{keyed_proxy.url}/healthz", timeout=5).status_code == 200
    assert requests.get(f"{keyed_proxy.url}/readyz", timeout=5).status_code == 200


@pytest.mark.parametrize(
    ("raw", "status", "message"),
    [
        (b"GET /classify?x=" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "Request Line is too large"),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431, "Request Header Fields"),
        (b"GARBAGE\r\n\r\n", 400, "Bad Request"),
    ],
    ids=["long-query", "long-header", "garbage"],
)
def test_requests_gunicorn_refuses_get_json_too(
    embedded_proxy: HttpServer, raw: bytes, status: int, message: str
) -> None:
    """Requests gunicorn itself refuses (over-long query string, header, garbage) get JSON errors too."""
    with socket.create_connection(("127.0.0.1", embedded_proxy.port), timeout=10) as sock:
        sock.sendall(raw)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode())
    assert b"Content-Type: application/json" in head
    assert message in json.loads(body)["error"]


def test_embedded_mode_serves_several_models(demo_model_dir: Path, model_base: Path, tmp_path: Path) -> None:
    """Embedded mode with MODELS: each model from its own base path and label map; /v1/models lists them."""
    other_labels = tmp_path / "other.pbtxt"
    other_labels.write_text('item { id: 1 name: "crimson" }\nitem { id: 2 name: "lime" }\n')
    models = f"detector:{demo_model_dir / 'label_map.pbtxt'}:{model_base},other:{other_labels}:{model_base}"
    with proxy_server({"MODELS": models}) as server:
        body = (demo_model_dir / "demo.jpg").read_bytes()
        other = requests.post(f"{server.url}/classify?threshold=0.8&model=other", data=body, timeout=30)
        assert other.json() == {"Class 3": 1, "Crimson": 2, "Lime": 1}
        listing = requests.get(f"{server.url}/v1/models", timeout=10).json()["models"]
        assert [(m["name"], m["default"], m["versions"]) for m in listing] == [
            ("detector", True, [{"version": 1, "state": "AVAILABLE"}]),
            ("other", False, [{"version": 1, "state": "AVAILABLE"}]),
        ]


def test_embedded_mode_switches_to_a_newer_version(demo_model_dir: Path, tmp_path: Path) -> None:
    """A version converted while the embedded server runs is loaded in the background and then served."""
    from converter import convert

    base = tmp_path / "detector"
    convert(demo_model_dir / "frozen_inference_graph.pb", base)
    with proxy_server({"MODEL_DIR": str(demo_model_dir), "MODEL_BASE_PATH": str(base)}) as server:
        assert requests.get(f"{server.url}/readyz", timeout=10).json()["version"] == 1
        assert convert(demo_model_dir / "frozen_inference_graph.pb", base).version == 2
        deadline = time.monotonic() + 60
        while requests.get(f"{server.url}/readyz", timeout=10).json()["version"] != 2:
            assert time.monotonic() < deadline, "version 2 was never served"
            time.sleep(0.5)  # polling interval
        body = (demo_model_dir / "demo.jpg").read_bytes()
        assert requests.post(f"{server.url}/classify?threshold=0.8", data=body, timeout=30).json() == {
            "Blue": 1,
            "Red": 2,
            "Green": 1,
        }
