"""The DeepStack / CodeProject.AI routes in process: both families' answers, their errors and status probes."""

from __future__ import annotations

import io
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from proxy.errors import BackendTimeout, ModelNotReady
from proxy.settings import ModelConfig, Settings
from tests.routes.conftest import LABELS, ROWS, jpeg
from tests.support.fake_backend import FakeBackend, detections

PICTURE = jpeg((200, 100))
ENVELOPE = {
    "success", "predictions", "count", "message", "duration", "inferenceMs", "processMs", "analysisRoundTripMs",
    "code", "command", "moduleId", "moduleName", "requestId", "processedBy", "timestampUTC", "inferenceDevice",
}  # fmt: skip


def detect(
    client: FlaskClient, path: str = "/v1/vision/detection", headers: dict[str, str] | None = None, **fields: Any
) -> Any:
    """A DeepStack client's multipart POST: the picture in ``image``, plus form fields."""
    data = {"image": (io.BytesIO(PICTURE), "image.jpg"), **fields}
    return client.post(path, data=data, content_type="multipart/form-data", headers=headers or {})


def test_a_field_sent_twice_takes_its_first_value_as_a_query_parameter_does(client: FlaskClient) -> None:
    """min_confidence=0.85 then 0 in one form is 0.85 (werkzeug's MultiDict.get, as DeepStack's Flask server read
    it), the rule of a repeated query parameter: not the last value."""
    assert detect(client, min_confidence=["0.85", "0"]).json["count"] == 2
    assert detect(client, min_confidence=["0", "0.85"]).json["count"] == 4


def test_answer_carries_both_families_fields(client: FlaskClient) -> None:
    """A detection answers DeepStack's success and predictions and CodeProject.AI's fields together."""
    answer = detect(client, headers={"X-Request-ID": "req-42"})
    body = answer.json
    assert answer.status_code == 200
    assert set(body) >= ENVELOPE
    assert body["success"] is True and body["code"] == 200 and body["command"] == "detect"
    assert body["requestId"] == "req-42"
    assert body["count"] == len(body["predictions"]) == 3
    assert body["message"] == "Found dog, person, dog"
    assert parsedate_to_datetime(body["timestampUTC"]).tzinfo is not None  # RFC 1123, as CodeProject.AI writes it
    assert isinstance(body["inferenceMs"], int) and isinstance(body["processMs"], int)
    assert body["processMs"] >= body["inferenceMs"] >= 0


def test_predictions_are_pixel_boxes_best_first(client: FlaskClient) -> None:
    """Predictions have lower-case labels, confidences best first, and integer pixel boxes of the picture sent."""
    predictions = detect(client).json["predictions"]
    assert [p["label"] for p in predictions] == ["dog", "person", "dog"]
    assert [p["confidence"] for p in predictions] == sorted((p["confidence"] for p in predictions), reverse=True)
    assert predictions[1] == {
        "confidence": pytest.approx(0.90),
        "label": "person",
        "y_min": 10,
        "x_min": 20,
        "y_max": 50,
        "x_max": 110,
    }


def test_min_confidence_defaults_to_040(client: FlaskClient) -> None:
    """Without min_confidence the threshold is DeepStack's 0.40; with one, detections above it remain."""
    assert detect(client).json["count"] == 3
    assert detect(client, min_confidence="0.85").json["count"] == 2
    assert detect(client, min_confidence="0").json["count"] == 4
    assert detect(client, min_confidence="").json["count"] == 3


@pytest.mark.parametrize(
    ("value", "message"),
    [("abc", "Invalid value for min_confidence"), ("1.5", "min_confidence cannot be greater than 1")],
)
def test_bad_min_confidence_is_deepstacks_400(client: FlaskClient, value: str, message: str) -> None:
    """A min_confidence DeepStack refuses gets its status and message, in the error envelope."""
    answer = detect(client, min_confidence=value)
    assert answer.status_code == 400
    assert answer.json["error"] == message


def test_errors_keep_the_envelope_with_empty_predictions(client: FlaskClient) -> None:
    """An error answer has success false, the error, predictions [] and count 0, and its status as code."""
    answer = client.post("/v1/vision/detection", data={"min_confidence": "0.5"}, content_type="multipart/form-data")
    body = answer.json
    assert answer.status_code == 400
    assert set(body) >= ENVELOPE
    assert (body["success"], body["predictions"], body["count"], body["code"]) == (False, [], 0, 400)
    assert body["error"] == "No valid image file found"


@pytest.mark.parametrize(
    ("failure", "status"),
    [(ModelNotReady("model loading", retry_after_s=3), 503), (BackendTimeout("too slow"), 504)],
)
def test_backend_errors_use_deepstack_statuses(make_app: Callable[..., Flask], failure: Exception, status: int) -> None:
    """A model not ready is a 503 (with Retry-After) and a timeout a 504, both in the envelope."""
    client = make_app(detector=FakeBackend(ROWS, LABELS, failure=failure)).test_client()  # type: ignore[arg-type]
    answer = detect(client)
    assert answer.status_code == status
    assert answer.json["code"] == status and answer.json["predictions"] == []


def test_invalid_image_is_a_400_in_the_envelope(client: FlaskClient) -> None:
    """Bytes that are not an image are a 400 in the envelope."""
    data = {"image": (io.BytesIO(b"not a picture"), "image.jpg")}
    answer = client.post("/v1/vision/detection", data=data, content_type="multipart/form-data")
    assert answer.status_code == 400
    assert answer.json["success"] is False and "cannot decode" in answer.json["error"]


def test_first_file_part_is_the_picture_whatever_its_name(client: FlaskClient) -> None:
    """With no field named image, the first file part is the picture, as CodeProject.AI reads it."""
    data = {"min_confidence": "0.5", "upload": (io.BytesIO(PICTURE), "frame.jpg")}
    answer = client.post("/v1/vision/detection", data=data, content_type="multipart/form-data")
    assert answer.status_code == 200 and answer.json["count"] == 3


def test_max_detections_as_form_field_and_query(client: FlaskClient) -> None:
    """max_detections caps the predictions, as a form field or as a query parameter."""
    assert detect(client, max_detections="1").json["count"] == 1
    assert detect(client, path="/v1/vision/detection?max_detections=2").json["count"] == 2


def test_server_default_cap_applies_to_vision_routes_only(make_app: Callable[..., Flask]) -> None:
    """VISION_MAX_DETECTIONS caps /v1/vision/* answers (a request's own cap wins) and leaves /classify alone."""
    many = detections(*[(1, 0.9 - i * 0.01, (0, 0, 1, 1)) for i in range(30)])
    client = make_app(Settings(vision_max_detections=20), detector=FakeBackend(many, LABELS)).test_client()
    assert detect(client).json["count"] == 20
    assert detect(client, max_detections="25").json["count"] == 25
    assert client.post("/classify?threshold=0", data=PICTURE).json == {"Dog": 30}


def test_iou_threshold_merges_across_classes(client: FlaskClient) -> None:
    """iou_threshold as a form field merges the person box overlapping the better dog box."""
    assert [p["label"] for p in detect(client, iou_threshold="0.5").json["predictions"]] == ["dog", "dog"]


def test_custom_route_asks_the_named_model(make_app: Callable[..., Flask]) -> None:
    """/v1/vision/custom/NAME answers from the model called NAME, with command "custom"."""
    base = Settings().model_base_path
    settings = Settings(models=(ModelConfig("general", base), ModelConfig("faces", base)))
    app = make_app(
        settings,
        general=FakeBackend(ROWS, LABELS),
        faces=FakeBackend(detections((2, 0.99, (0, 0, 1, 1))), LABELS),
    )
    answer = detect(app.test_client(), path="/v1/vision/custom/faces")
    assert answer.json["command"] == "custom"
    assert [p["label"] for p in answer.json["predictions"]] == ["person"]
    missing = detect(app.test_client(), path="/v1/vision/custom/nope")
    assert missing.status_code == 404 and missing.json["success"] is False and missing.json["command"] == "custom"


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_custom_list_names_the_served_models(make_app: Callable[..., Flask], method: str) -> None:
    """GET and POST /v1/vision/custom/list answer the served model names, the default first."""
    base = Settings().model_base_path
    settings = Settings(models=(ModelConfig("general", base), ModelConfig("faces", base)))
    app = make_app(settings, general=FakeBackend(ROWS, LABELS), faces=FakeBackend(ROWS, LABELS))
    answer = app.test_client().open("/v1/vision/custom/list", method=method)
    assert answer.status_code == 200
    assert answer.json["success"] is True and answer.json["models"] == ["general", "faces"]
    assert answer.json["command"] == "list-custom"


@pytest.mark.parametrize("path", ["/v1/server/status/updateavailable", "/v1/status/updateavailable"])
def test_update_probe_answers_no_update(client: FlaskClient, path: str) -> None:
    """Both update-check paths answer CodeProject.AI's shape: no update, current and latest this version."""
    body = client.get(path).json
    assert body["success"] is True and body["updateAvailable"] is False
    assert body["current"] == body["latest"] == body["version"]
    assert {"major", "minor", "patch", "preRelease", "securityUpdate", "build", "file", "releaseNotes"} <= set(
        body["current"]
    )


@pytest.mark.parametrize("path", ["/v1/server/status/ping", "/v1/status/ping"])
def test_ping_answers_success(client: FlaskClient, path: str) -> None:
    """Both ping paths answer success with the version."""
    body = client.get(path).json
    assert body["success"] is True and body["code"] == 200 and "major" in body["version"]


def test_raw_image_body_is_accepted_too(client: FlaskClient) -> None:
    """A raw image body (not multipart) is read as the picture."""
    answer = client.post("/v1/vision/detection", data=PICTURE, content_type="image/jpeg")
    assert answer.status_code == 200 and answer.json["count"] == 3
