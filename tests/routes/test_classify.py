"""``POST /classify`` in process: bodies, parameters, answers and errors, with a fake model behind it."""

from __future__ import annotations

import base64
import io
import logging
import struct
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image

from proxy.errors import BackendError, BackendTimeout, ModelNotReady, NotFound, TooManyRequests
from proxy.settings import ModelConfig, Settings
from tests.routes.conftest import LABELS, ROWS, jpeg, png
from tests.support.fake_backend import FakeBackend, detections

PICTURE = jpeg()


def post(client: FlaskClient, body: bytes = PICTURE, query: str = "", **kwargs: Any) -> Any:
    """POST ``body`` to /classify with ``query``."""
    return client.post(f"/classify{query}", data=body, **kwargs)


def test_counts_detections_above_the_default_threshold(client: FlaskClient) -> None:
    """Without a threshold, detections scoring above 0.75 are counted per class, best class first."""
    answer = post(client)
    assert answer.status_code == 200
    assert answer.json == {"Dog": 2, "Person": 1}
    assert answer.headers["Content-Type"] == "application/json"


def test_threshold_is_strict(client: FlaskClient) -> None:
    """A detection scoring exactly the threshold does not count."""
    assert post(client, query="?threshold=0.8").json == {"Dog": 1, "Person": 1}
    assert post(client, query="?threshold=0.3").json == {"Dog": 2, "Person": 1}
    assert post(client, query="?threshold=0").json == {"Dog": 2, "Person": 2}


def test_verbose_lists_each_detection_with_normalized_corners(client: FlaskClient) -> None:
    """verbose=true gives class, score and x1, y1, x2, y2 from the model's ymin, xmin, ymax, xmax, best first."""
    answer = post(client, query="?verbose=true&threshold=0.85").json
    assert [list(row) for row in answer] == [["class", "score", "x1", "y1", "x2", "y2"]] * 2
    assert [row["class"] for row in answer] == ["Dog", "Person"]
    assert answer[1]["x2"] == pytest.approx(0.55) and answer[1]["y2"] == pytest.approx(0.50)
    assert answer[0]["score"] == pytest.approx(0.95)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("?classes=dog", {"Dog": 2}),
        ("?classes=PERSON,dog", {"Dog": 2, "Person": 1}),
        ("?classes=person&threshold=0", {"Person": 2}),
    ],
)
def test_classes_keep_the_named_classes_in_any_case(client: FlaskClient, query: str, expected: dict[str, int]) -> None:
    """classes= keeps only the classes named, whatever their case."""
    assert post(client, query=query).json == expected


def test_classes_can_name_a_class_the_label_map_lacks(make_app: Callable[..., Flask]) -> None:
    """A class id missing from the label map is answered as "Class N", and classes= can name it so."""
    rows = detections((1, 0.9, (0, 0, 1, 1)), (17, 0.9, (0, 0, 1, 1)))
    client = make_app(detector=FakeBackend(rows, LABELS)).test_client()
    assert post(client).json == {"Dog": 1, "Class 17": 1}
    assert post(client, query="?classes=class%2017").json == {"Class 17": 1}


def test_unknown_class_is_a_400_before_the_model_runs(client: FlaskClient, backend: FakeBackend) -> None:
    """A class that is neither in the label map nor of the form "Class N" is a 400 naming it, with no model call."""
    answer = post(client, query="?classes=dog,unicorn")
    assert answer.status_code == 400
    assert "unicorn" in answer.json["error"]
    assert backend.seen == []


def test_iou_threshold_merges_boxes_across_classes(client: FlaskClient) -> None:
    """iou_threshold merges the person box that overlaps the better dog box (IoU 0.81), whatever its class."""
    assert post(client, query="?iou_threshold=0.5").json == {"Dog": 2}
    assert post(client, query="?iou_threshold=0.9").json == {"Dog": 2, "Person": 1}


def test_max_detections_keeps_the_best(client: FlaskClient) -> None:
    """max_detections=N keeps the N best detections."""
    assert post(client, query="?max_detections=1&verbose=true").json[0]["class"] == "Dog"
    assert post(client, query="?max_detections=2").json == {"Dog": 1, "Person": 1}


def test_steps_run_threshold_merge_classes_then_best(client: FlaskClient) -> None:
    """The order is fixed: merging before the class filter drops the person under the dog, so classes=person then
    keeps only the faint one, and max_detections counts what is left after the filter."""
    answer = post(client, query="?threshold=0&iou_threshold=0.5&classes=person&max_detections=5&verbose=true")
    assert [(row["class"], round(row["score"], 2)) for row in answer.json] == [("Person", 0.3)]


@pytest.mark.parametrize(
    ("query", "accept", "mimetype"),
    [
        ("?format=image", None, "image/jpeg"),
        ("?format=png", None, "image/png"),
        ("", "image/png", "image/png"),
        ("", "image/jpeg;q=1, application/json;q=0.5", "image/jpeg"),
    ],
)
def test_annotated_picture_in_the_asked_format(
    client: FlaskClient, query: str, accept: str | None, mimetype: str
) -> None:
    """format= or an Accept header preferring an image type answer the picture, full size, with boxes drawn."""
    headers = {"Accept": accept} if accept else {}
    answer = post(client, body=jpeg((200, 100), "white"), query=query, headers=headers)
    assert answer.status_code == 200
    assert answer.mimetype == mimetype
    picture = Image.open(io.BytesIO(answer.data))
    assert picture.size == (200, 100)
    assert np.asarray(picture.convert("RGB")).std() > 0  # something was drawn on a white picture


def test_verbose_with_a_picture_format_is_a_400(client: FlaskClient) -> None:
    """verbose=true and format=image ask for two answers: a 400 naming the conflict."""
    answer = post(client, query="?verbose=true&format=jpeg")
    assert answer.status_code == 400
    assert "verbose" in answer.json["error"] and "format" in answer.json["error"]


def test_verbose_wins_over_an_accept_header_for_pictures(client: FlaskClient) -> None:
    """Accept: image/* with verbose=true answers the verbose JSON."""
    answer = post(client, query="?verbose=true", headers={"Accept": "image/png"})
    assert answer.mimetype == "application/json"
    assert isinstance(answer.json, list)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"image": (io.BytesIO(PICTURE), "a.jpg")}, 200),
        ({"other": "x", "photo": (io.BytesIO(PICTURE), "b.jpg")}, 200),  # the first file part, whatever its name
        ({"note": "no file here"}, 400),
    ],
)
def test_multipart_upload_takes_the_image_field_else_the_first_file(
    client: FlaskClient, fields: dict[str, Any], expected: int
) -> None:
    """A multipart upload answers like the raw body; without any file part it is a 400."""
    answer = client.post("/classify", data=fields, content_type="multipart/form-data")
    assert answer.status_code == expected
    if expected == 200:
        assert answer.json == post(client).json


def test_multipart_part_without_filename_or_type_keeps_its_bytes(client: FlaskClient) -> None:
    """A part named image with neither filename nor Content-Type is read as bytes, not decoded as text."""
    boundary = "XyZ"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"\r\n\r\n'.encode()
        + PICTURE
        + f"\r\n--{boundary}--\r\n".encode()
    )
    answer = client.post("/classify", data=body, content_type=f"multipart/form-data; boundary={boundary}")
    assert answer.status_code == 200, answer.json
    assert answer.json == {"Dog": 2, "Person": 1}


def test_too_many_multipart_parts_name_their_limit(make_app: Callable[..., Flask]) -> None:
    """A multipart body with more parts than MAX_FORM_PARTS is a 413 that names MAX_FORM_PARTS, not the body."""
    client = make_app(Settings(max_form_parts=5)).test_client()
    fields = {f"f{i}": "x" for i in range(6)}
    answer = client.post("/classify", data=fields, content_type="multipart/form-data")
    assert answer.status_code == 413
    assert "MAX_FORM_PARTS" in answer.json["error"]


@pytest.mark.parametrize(
    ("content_type", "status"),
    [("text/plain", 415), ("application/xml", 415), ("application/octet-stream", 400), (None, 400)],
)
def test_undecodable_bytes_under_a_non_image_type_are_a_415(
    client: FlaskClient, content_type: str | None, status: int
) -> None:
    """Bytes that are not an image are a 415 when declared as another type, a 400 when the type is neutral. No bytes
    at all are the empty body's 400 whatever the type says."""
    answer = client.post("/classify", data=b"not an image", content_type=content_type)
    assert answer.status_code == status
    assert "error" in answer.json
    empty = client.post("/classify", data=b"", content_type=content_type)
    assert empty.status_code == 400 and "empty image" in empty.json["error"]


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (b"", 400, "empty"),
        (b"GIF89a\x01\x00", 400, "cannot decode"),
        (PICTURE[: len(PICTURE) // 2], 400, "cannot decode"),
    ],
)
def test_bad_bodies_are_400s(client: FlaskClient, body: bytes, status: int, words: str) -> None:
    """An empty body, junk and a truncated JPEG are 400s saying why."""
    answer = post(client, body=body)
    assert answer.status_code == status
    assert words in answer.json["error"]


def test_decompression_bomb_is_refused_from_its_header(make_app: Callable[..., Flask]) -> None:
    """An image whose header declares more than MAX_IMAGE_PIXELS is a 413, without decoding a pixel."""
    client = make_app(Settings(max_image_pixels=1000)).test_client()
    answer = post(client, body=png((100, 100)))
    assert answer.status_code == 413
    assert "MAX_IMAGE_PIXELS" in answer.json["error"]


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_an_image_past_pillows_own_bomb_limit_names_max_image_pixels(client: FlaskClient, fmt: str) -> None:
    """A header declaring 65535x65535 (past the twice 89 million pixels at which Pillow refuses to open it) is a 413
    that names the service's limit, not Pillow's number alone."""
    image = Image.new("L", (1, 1))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    data = buffer.getvalue()
    if fmt == "PNG":  # the IHDR's width and height, and its CRC
        head = b"IHDR" + struct.pack(">II", 65535, 65535) + data[24:29]
        data = data[:12] + head + struct.pack(">I", zlib.crc32(head)) + data[33:]
    else:  # the logical screen's and the image descriptor's sizes
        data = data[:6] + struct.pack("<HH", 65535, 65535) + data[10:]
        start = data.index(b"\x2c")
        data = data[: start + 5] + struct.pack("<HH", 65535, 65535) + data[start + 9 :]
    answer = post(client, body=data)
    assert answer.status_code == 413, answer.json
    assert "MAX_IMAGE_PIXELS" in answer.json["error"] and "50000000" in answer.json["error"]


def test_thin_image_is_refused_for_its_aspect(client: FlaskClient) -> None:
    """A 1x5000 image is a 413 naming MAX_IMAGE_ASPECT."""
    answer = post(client, body=png((1, 5000), mode="1"))
    assert answer.status_code == 413
    assert "MAX_IMAGE_ASPECT" in answer.json["error"]


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("?threshold=abc", "threshold"),
        ("?threshold=1.5", "threshold"),
        ("?threshold=nan", "threshold"),
        ("?verbose=maybe", "verbose"),
        ("?format=gif", "format"),
        ("?iou_threshold=2", "iou_threshold"),
        ("?max_detections=0", "max_detections"),
        ("?max_detections=two", "max_detections"),
        ("?classes=,,", "classes"),
    ],
)
def test_bad_parameters_are_400s_naming_them(client: FlaskClient, query: str, words: str) -> None:
    """Each malformed parameter is a 400 whose message names it."""
    answer = post(client, query=query)
    assert answer.status_code == 400
    assert words in answer.json["error"]


def test_unknown_model_is_a_404_listing_the_models(client: FlaskClient) -> None:
    """?model= naming no served model is a 404 that lists the ones there are."""
    answer = post(client, query="?model=nope")
    assert answer.status_code == 404
    assert "detector" in answer.json["error"]


def test_model_parameter_picks_the_model(make_app: Callable[..., Flask]) -> None:
    """With several models, ?model= picks one; without it the first answers."""
    settings = Settings(
        models=(ModelConfig("first", Settings().model_base_path), ModelConfig("second", Settings().model_base_path))
    )
    app = make_app(
        settings,
        first=FakeBackend(detections((1, 0.9, (0, 0, 1, 1))), LABELS),
        second=FakeBackend(detections((2, 0.9, (0, 0, 1, 1))), LABELS),
    )
    client = app.test_client()
    assert post(client).json == {"Dog": 1}
    assert post(client, query="?model=second").json == {"Person": 1}


@pytest.mark.parametrize(
    ("failure", "status"),
    [
        (ModelNotReady("loading", retry_after_s=2), 503),
        (BackendTimeout("slow"), 504),
        (BackendError("broken"), 502),
        (TooManyRequests("busy"), 429),
        (NotFound("no such version"), 404),
    ],
)
def test_backend_failures_keep_their_status(make_app: Callable[..., Flask], failure: Exception, status: int) -> None:
    """A backend's error is answered with its status and message; a model not ready carries Retry-After."""
    backend = FakeBackend(ROWS, LABELS, failure=failure)  # type: ignore[arg-type]
    answer = post(make_app(detector=backend).test_client())
    assert answer.status_code == status
    assert answer.json == {"error": str(failure)}
    if status == 503:
        assert answer.headers["Retry-After"] == "2"


# -- JSON bodies -------------------------------------------------------------------------------------------------


def b64(data: bytes, *, urlsafe: bool = False, padding: bool = True, prefix: str = "") -> str:
    """``data`` as base64 text in the given style."""
    text = (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(data).decode()
    return prefix + (text if padding else text.rstrip("="))


@pytest.mark.parametrize(
    "encoded",
    [
        b64(PICTURE),
        b64(PICTURE, urlsafe=True, padding=False),
        b64(PICTURE, prefix="data:image/jpeg;base64,"),
        "\n".join(b64(PICTURE)[i : i + 76] for i in range(0, len(b64(PICTURE)), 76)),
    ],
    ids=["standard", "urlsafe-unpadded", "data-url", "mime-lines"],
)
def test_json_image_answers_what_the_raw_body_answers(client: FlaskClient, encoded: str) -> None:
    """{"image": base64} in any common spelling answers exactly what the same bytes answer as a raw body."""
    for query in ("", "?verbose=true&threshold=0.1"):
        answer = client.post(f"/classify{query}", json={"image": encoded})
        assert answer.status_code == 200, answer.json
        assert answer.json == post(client, query=query).json


def test_batch_answers_each_image_in_order(make_app: Callable[..., Flask]) -> None:
    """{"images": [...]} answers a list in the same order; an image that fails has its error, the others answer."""
    client = make_app(Settings(max_image_pixels=10_000)).test_client()
    images = [b64(PICTURE), "%%%not base64%%%", b64(b"not an image"), b64(png((200, 200))), b64(PICTURE)]
    answer = client.post("/classify?threshold=0.5", json={"images": images})
    assert answer.status_code == 200
    first, bad_b64, not_image, too_big, last = answer.json
    assert first == last == {"Dog": 2, "Person": 1}
    assert "images[1] is not valid base64" in bad_b64["error"]
    assert "cannot decode" in not_image["error"]
    assert "MAX_IMAGE_PIXELS" in too_big["error"]


def test_batch_verbose_answers_lists(client: FlaskClient) -> None:
    """With verbose=true, each element of a batch is the verbose list."""
    answer = client.post("/classify?verbose=true", json={"images": [b64(PICTURE), b64(PICTURE)]})
    assert len(answer.json) == 2
    assert answer.json[0] == answer.json[1] == post(client, query="?verbose=true").json


def test_batch_over_the_limit_is_a_413(make_app: Callable[..., Flask]) -> None:
    """More images than MAX_BATCH_IMAGES is a 413 naming the limit."""
    client = make_app(Settings(max_batch_images=2)).test_client()
    answer = client.post("/classify", json={"images": [b64(PICTURE)] * 3})
    assert answer.status_code == 413
    assert "MAX_BATCH_IMAGES" in answer.json["error"]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"{not json", "malformed JSON"),
        (b"[1, 2]", "must be an object"),
        (b"{}", "exactly one of"),
        (b'{"image": "x", "images": ["x"]}', "exactly one of"),
        (b'{"image": 42}', "base64 string"),
        (b'{"images": []}', "non-empty list"),
        (b'{"images": "abc"}', "non-empty list"),
        (b'{"images": ["abc", 3]}', "images[1] is neither"),
        (b'{"image": "***"}', "not valid base64"),
        (b'{"url": "http://example.com/cat.jpg"}', "never fetches"),
    ],
)
def test_malformed_json_bodies_are_400s_naming_the_problem(client: FlaskClient, body: bytes, words: str) -> None:
    """Each wrong JSON body is a 400 whose message says what is wrong; a url is refused, never fetched."""
    answer = client.post("/classify", data=body, content_type="application/json")
    assert answer.status_code == 400
    assert words in answer.json["error"]


def test_batch_with_a_picture_format_is_a_400(client: FlaskClient) -> None:
    """A batch answers JSON only: format=image with images is a 400."""
    answer = client.post("/classify?format=image", json={"images": [b64(PICTURE)]})
    assert answer.status_code == 400
    assert "batch" in answer.json["error"]


class _Records(logging.Handler):
    """Keeps the records the proxy's loggers emit (they do not propagate to pytest's caplog)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.mark.parametrize("step", ["to_rgb", "_fit"])
def test_a_bug_in_our_own_conversion_is_a_500_not_a_400(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    """An error in the project's own conversion of a decoded picture (not Pillow refusing the client's bytes) is a
    500 whose traceback is in the log, never a 400 "cannot decode image"."""

    def broken(*_: object) -> None:
        raise ValueError("a bug of ours")

    monkeypatch.setattr(f"proxy.images.{step}", broken)
    records = _Records()
    logging.getLogger("proxy").addHandler(records)
    try:
        answer = client.post("/classify", data=jpeg())
    finally:
        logging.getLogger("proxy").removeHandler(records)
    assert answer.status_code == 500
    assert answer.json == {"error": "internal error; the server log has the details"}
    [logged] = [record for record in records.records if record.exc_info]
    assert logged.exc_info is not None and str(logged.exc_info[1]) == "a bug of ours"


def test_pillow_refusing_the_bytes_is_still_a_400(client: FlaskClient) -> None:
    """A truncated JPEG, which Pillow refuses while decoding its pixels, is the client's 400."""
    whole = jpeg((640, 480))
    answer = client.post("/classify", data=whole[: len(whole) // 2])
    assert answer.status_code == 400 and answer.json is not None
    assert answer.json["error"].startswith("cannot decode image: ")
