"""What users rely on, end to end in both modes on the real detector: uploads, JSON and batches, the annotated
picture, filters, DeepStack/CodeProject.AI answers, metrics, request ids, and JSON bodies with a Content-Length.

Each behaviour's details are tested in process (tests/routes); here they cross the real server and backends.
"""

from __future__ import annotations

import base64
import io

import pytest
import requests
from PIL import Image

from harness.processes import HttpServer


def test_multipart_and_json_answer_as_the_raw_body(any_proxy: HttpServer, photos: dict[str, bytes]) -> None:
    """A multipart upload, a JSON base64 image and a JSON batch answer what the raw body answers."""
    raw = requests.post(f"{any_proxy.url}/classify?verbose=true", data=photos["both"], timeout=30).json()
    upload = requests.post(f"{any_proxy.url}/classify?verbose=true", files={"image": photos["both"]}, timeout=30)
    encoded = base64.b64encode(photos["both"]).decode()
    single = requests.post(f"{any_proxy.url}/classify?verbose=true", json={"image": encoded}, timeout=30)
    batch = requests.post(
        f"{any_proxy.url}/classify?verbose=true", json={"images": [encoded, "!!", encoded]}, timeout=30
    ).json()
    assert upload.json() == single.json() == raw == batch[0] == batch[2]
    assert raw and raw[0]["class"] == "Cat"
    assert "not valid base64" in batch[1]["error"]


def test_annotated_picture_has_the_photos_size(any_proxy: HttpServer, photos: dict[str, bytes]) -> None:
    """format=image answers a JPEG of the photograph's size with the cat's box drawn."""
    answer = requests.post(f"{any_proxy.url}/classify?format=image", data=photos["cat"], timeout=30)
    assert answer.headers["Content-Type"] == "image/jpeg"
    drawn = Image.open(io.BytesIO(answer.content))
    original = Image.open(io.BytesIO(photos["cat"]))
    assert drawn.size == original.size
    assert drawn.convert("RGB").tobytes() != original.convert("RGB").tobytes()


def test_filters_apply_in_order(any_proxy: HttpServer, photos: dict[str, bytes]) -> None:
    """classes, iou_threshold and max_detections cross the server: of the person and the cat, the person stays, at
    most one row."""
    answer = requests.post(
        f"{any_proxy.url}/classify?threshold=0.01&iou_threshold=0.3&classes=person&max_detections=1&verbose=true",
        data=photos["cameraman"],
        timeout=30,
    ).json()
    assert len(answer) == 1 and answer[0]["class"] == "Person" and answer[0]["score"] > 0.75


def test_deepstack_answer_on_a_photograph(any_proxy: HttpServer, photos: dict[str, bytes]) -> None:
    """/v1/vision/detection finds the cat and the person with DeepStack's lower-case COCO labels and pixel boxes
    centred in their halves of the 963x512 picture, with CodeProject.AI's fields."""
    fresh = io.BytesIO()  # bytes no other request sent: the model runs for this one (no frame cache hit)
    Image.open(io.BytesIO(photos["both"])).save(fresh, format="JPEG", quality=93)
    body = requests.post(f"{any_proxy.url}/v1/vision/detection", files={"image": fresh.getvalue()}, timeout=30).json()
    cat, person = (p for p in body["predictions"] if p["confidence"] > 0.6)
    assert (cat["label"], person["label"]) == ("cat", "person")
    assert 0 <= cat["x_min"] < cat["x_max"] <= 963 and 0 <= cat["y_min"] < cat["y_max"] <= 512
    assert 0 <= person["x_min"] < person["x_max"] <= 963 and 0 <= person["y_min"] < person["y_max"] <= 512
    assert (cat["x_min"] + cat["x_max"]) / 2 > 512 > (person["x_min"] + person["x_max"]) / 2  # the cat is on the right
    assert (cat["y_min"] + cat["y_max"]) / 2 < 300  # the cat's photo is 300 high
    assert body["success"] is True and body["inferenceMs"] >= 1 and body["message"].startswith("Found cat, person")
    assert body["inferenceDevice"] in ("CPU", "TF Serving")


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("post", "/classify", {"data": b"x"}),
        ("post", "/classify?threshold=2", {"data": b"x"}),
        ("post", "/v1/vision/detection", {"data": {"min_confidence": "abc"}}),
        ("get", "/v1/vision/custom/list", {}),
        ("get", "/v1/status/updateavailable", {}),
        ("get", "/nope", {}),
        ("get", "/readyz", {}),
    ],
)
def test_every_json_answer_has_a_content_length(
    any_proxy: HttpServer, method: str, path: str, kwargs: dict[str, object]
) -> None:
    """Answers and errors alike come with a Content-Length, never chunked (Blue Iris cannot read chunked JSON)."""
    answer = getattr(requests, method)(f"{any_proxy.url}{path}", timeout=30, **kwargs)
    assert answer.headers["Content-Type"].startswith("application/json")
    assert "chunked" not in answer.headers.get("Transfer-Encoding", "")
    assert int(answer.headers["Content-Length"]) == len(answer.content)


def test_metrics_and_request_ids(any_proxy: HttpServer, photos: dict[str, bytes]) -> None:
    """Requests are counted and timed in /metrics, summed over workers; every answer carries its X-Request-ID."""
    answer = requests.post(
        f"{any_proxy.url}/classify", data=photos["cat"], headers={"X-Request-ID": "feature-1"}, timeout=30
    )
    assert answer.headers["X-Request-ID"] == "feature-1"
    metrics = requests.get(f"{any_proxy.url}/metrics", timeout=10).text
    assert 'classifyobjects_http_requests_total{method="POST",route="/classify",status="200"}' in metrics
    assert "classifyobjects_backend_seconds_count" in metrics and "classifyobjects_decode_seconds_count" in metrics
