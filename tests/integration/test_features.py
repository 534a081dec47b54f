"""Beyond the seed: uploads, class filters, annotated pictures, the DeepStack route, metrics, request ids, the page.

Each test runs against both modes: embedded TensorFlow and TF Serving over gRPC (``any_proxy``).
"""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest
import requests
from PIL import Image

from demo_model import Shape, draw_scene
from tests.conftest import API_KEY
from harness.processes import HttpServer

# Two red shapes, one green, one blue (the demo sample), in a 640x480 picture.
SHAPES = [
    Shape(1, (40, 30, 140, 100)),
    Shape(1, (360, 150, 460, 230), ellipse=True),
    Shape(2, (200, 280, 300, 350)),
    Shape(3, (500, 380, 600, 460)),
]


def picture(fmt: str = "JPEG", exif_orientation: int | None = None) -> bytes:
    """The four-shape picture as file bytes."""
    buffer = io.BytesIO()
    image = draw_scene((640, 480), SHAPES)
    options: dict[str, object] = {"quality": 95} if fmt == "JPEG" else {}
    if exif_orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        options["exif"] = exif
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def post(server: HttpServer, path: str, **kwargs: object) -> requests.Response:
    """POST to the server."""
    return requests.post(server.url + path, timeout=30, **kwargs)  # type: ignore[arg-type]


def test_multipart_upload_answers_as_raw_body(any_proxy: HttpServer) -> None:
    """A multipart upload with the file in field ``image`` gets the same answer as the raw body."""
    raw = post(any_proxy, "/classify?verbose=true&threshold=0.5", data=picture())
    form = post(any_proxy, "/classify?verbose=true&threshold=0.5", files={"image": ("a.jpg", picture())})
    assert raw.status_code == form.status_code == 200
    assert form.json() == raw.json()
    assert len(raw.json()) == 4


def test_multipart_without_image_field_is_400(any_proxy: HttpServer) -> None:
    """A multipart upload whose file is not in field ``image`` is a 400 saying so."""
    response = post(any_proxy, "/classify", files={"file": ("a.jpg", picture())})
    assert response.status_code == 400
    assert "field 'image'" in response.json()["error"]


@pytest.mark.parametrize(
    ("classes", "counts"),
    [("red", {"Red": 2}), ("RED,Blue", {"Blue": 1, "Red": 2}), (" green , yellow ", {"Green": 1})],
)
def test_class_filter(any_proxy: HttpServer, classes: str, counts: dict[str, int]) -> None:
    """``classes=`` keeps only the named classes, case-insensitively, in counts and verbose answers."""
    answer = post(any_proxy, "/classify", params={"classes": classes, "threshold": "0.5"}, data=picture())
    assert answer.json() == counts
    verbose = post(
        any_proxy, "/classify", params={"classes": classes, "threshold": "0.5", "verbose": "true"}, data=picture()
    ).json()
    assert sorted(d["class"] for d in verbose) == sorted(name for name, n in counts.items() for _ in range(n))


@pytest.mark.parametrize("classes", ["unicorn", "", ",,"])
def test_class_filter_rejects_unknown_or_empty_names(any_proxy: HttpServer, classes: str) -> None:
    """A class the label map does not have, or an empty list, is a 400."""
    response = post(any_proxy, "/classify", params={"classes": classes}, data=picture())
    assert response.status_code == 400
    assert "class" in response.json()["error"]


def test_annotated_jpeg_has_the_input_size_and_boxes_drawn(any_proxy: HttpServer) -> None:
    """``format=image`` answers a JPEG of the input's size with the detections' boxes drawn on it."""
    response = post(any_proxy, "/classify?format=image&threshold=0.5", data=picture())
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/jpeg"
    drawn = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"), dtype=np.int16)
    plain = np.asarray(Image.open(io.BytesIO(picture())).convert("RGB"), dtype=np.int16)
    assert drawn.shape == plain.shape == (480, 640, 3)
    # The blue square's box runs along its edge at x = 500 (0.78125 * 640): drawn pixels differ there.
    column_change = np.abs(drawn[385:455, 496:505] - plain[385:455, 496:505]).mean(axis=(0, 2))
    assert column_change.max() > 60
    # Far from every detection the picture is untouched (JPEG noise aside).
    assert np.abs(drawn[5:25, 300:340] - plain[5:25, 300:340]).mean() < 3


def test_accept_png_answers_an_exif_oriented_png(any_proxy: HttpServer) -> None:
    """``Accept: image/png`` answers PNG, and an EXIF-rotated input comes back upright at its oriented size."""
    response = post(any_proxy, "/classify", headers={"Accept": "image/png"}, data=picture(exif_orientation=6))
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/png"
    assert Image.open(io.BytesIO(response.content)).size == (480, 640)


def test_bad_format_is_400(any_proxy: HttpServer) -> None:
    """An unknown ``format`` is a 400 naming the choices."""
    response = post(any_proxy, "/classify?format=gif", data=picture())
    assert response.status_code == 400
    assert "format must be json, image, jpeg or png" in response.json()["error"]


def test_deepstack_detection_shape(any_proxy: HttpServer) -> None:
    """DeepStack clients post the file part with no content type and get success, lower-case labels, pixels."""
    files = {"image": ("image.jpg", picture(), None)}  # None: the part carries no Content-Type, as they send it
    response = post(any_proxy, "/v1/vision/detection", files=files, data={"min_confidence": "0.5"})
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    predictions = body["predictions"]
    assert sorted(p["label"] for p in predictions) == ["blue", "green", "red", "red"]
    for prediction in predictions:
        assert set(prediction) == {"label", "confidence", "x_min", "y_min", "x_max", "y_max"}
        assert all(isinstance(prediction[k], int) for k in ("x_min", "y_min", "x_max", "y_max"))
        assert 0.5 < prediction["confidence"] <= 1
    blue = next(p for p in predictions if p["label"] == "blue")
    assert (blue["x_min"], blue["y_min"], blue["x_max"], blue["y_max"]) == (500, 379, 600, 461)


def test_deepstack_default_min_confidence_is_045(any_proxy: HttpServer) -> None:
    """Without ``min_confidence`` the DeepStack route keeps detections scoring above 0.45."""
    verbose = post(any_proxy, "/classify?verbose=true&threshold=0.45", data=picture()).json()
    body = post(any_proxy, "/v1/vision/detection", files={"image": ("i.jpg", picture(), None)}).json()
    assert len(body["predictions"]) == len(verbose)


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"files": {"file": ("i.jpg", b"x", None)}}, 400),
        ({"files": {"image": ("i.jpg", b"not an image", None)}}, 400),
        ({"files": {"image": ("i.jpg", b"x", None)}, "data": {"min_confidence": "2"}}, 400),
    ],
)
def test_deepstack_errors_say_success_false(any_proxy: HttpServer, kwargs: dict[str, object], status: int) -> None:
    """DeepStack-route errors are ``{"success": false, "error": ...}`` with the right status."""
    response = post(any_proxy, "/v1/vision/detection", **kwargs)
    assert response.status_code == status
    body = response.json()
    assert body["success"] is False
    assert body["error"]


def test_deepstack_api_key_as_form_field(keyed_proxy: HttpServer) -> None:
    """With API_KEY set, DeepStack clients' form field ``api_key`` is accepted; a wrong one is 401."""
    files = {"image": ("i.jpg", picture(), None)}
    good = post(keyed_proxy, "/v1/vision/detection", files=files, data={"api_key": API_KEY})
    assert good.status_code == 200
    assert good.json()["success"] is True
    bad = post(keyed_proxy, "/v1/vision/detection", files=files, data={"api_key": "nope"})
    assert bad.status_code == 401
    assert bad.json()["success"] is False


def test_metrics_count_requests_and_time_stages(any_proxy: HttpServer) -> None:
    """``/metrics`` is Prometheus text with request counts by route and status and stage latency histograms."""
    post(any_proxy, "/classify", data=picture())
    post(any_proxy, "/classify?threshold=abc", data=picture())
    text = requests.get(f"{any_proxy.url}/metrics", timeout=10).text
    ok = re.search(r'classifyobjects_http_requests_total\{method="POST",route="/classify",status="200"\} (\d+)', text)
    bad = re.search(r'classifyobjects_http_requests_total\{method="POST",route="/classify",status="400"\} (\d+)', text)
    assert ok and float(ok.group(1)) >= 1
    assert bad and float(bad.group(1)) >= 1
    for histogram in [
        "classifyobjects_http_request_duration_seconds_bucket",
        "classifyobjects_decode_seconds_bucket",
        'classifyobjects_backend_seconds_bucket{le="0.005",model="detector"}',
        "classifyobjects_image_pixels_bucket",
    ]:
        assert histogram in text


def test_request_ids_are_honoured_or_made_and_logged_as_json(any_proxy: HttpServer) -> None:
    """``X-Request-ID`` is echoed (or generated) and the access log is one JSON object per request with it."""
    mine = post(any_proxy, "/classify", data=picture(), headers={"X-Request-ID": "req-abc.123"})
    assert mine.headers["X-Request-ID"] == "req-abc.123"
    made = post(any_proxy, "/classify", data=picture(), headers={"X-Request-ID": "bad id with spaces"})
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["X-Request-ID"])
    entries = [json.loads(line) for line in any_proxy.log_text().splitlines() if line.startswith("{")]
    entry = next(e for e in entries if e["request_id"] == "req-abc.123")
    assert entry["method"] == "POST" and entry["path"] == "/classify" and entry["status"] == 200
    assert entry["duration_ms"] > 0


def test_page_is_served(any_proxy: HttpServer) -> None:
    """``/`` serves the try-it page and its script, with no external resources."""
    page = requests.get(any_proxy.url + "/", timeout=10)
    assert page.status_code == 200
    assert "text/html" in page.headers["Content-Type"]
    assert '<label for="image-input">' in page.text
    assert "http://" not in page.text and "https://" not in page.text
    script = requests.get(any_proxy.url + "/static/page.js", timeout=10)
    assert script.status_code == 200
    assert "http" not in script.text.replace("HTTP ", "")
