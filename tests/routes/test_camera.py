"""What camera users ask for, in process with a fake model: tiles, a region of interest, per-class thresholds,
presets, one model call per frame. The fake model answers per view what it is given, so the tests see which views
the model was asked about and where their detections land in the frame.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image

from proxy.detections import Detections
from proxy.images import Crop, ImageInput, ModelImage
from proxy.labels import LabelMap
from proxy.settings import Preset, Settings
from proxy.tiles import tile_boxes
from tests.routes.conftest import jpeg
from tests.support.fake_backend import FakeBackend, detections

LABELS = LabelMap({1: "Person", 3: "Car", 18: "Dog"})
BIG = (1600, 1200)


class Seer:
    """A fake model's answer: one person in the middle of every view it is asked about, and the views' boxes."""

    def __init__(self, rows: Detections | None = None) -> None:
        self.rows = rows if rows is not None else detections((1, 0.9, (0.4, 0.4, 0.6, 0.6)))
        self.boxes: list[tuple[int, int, int, int]] = []

    def __call__(self, image: ModelImage) -> Detections:
        self.boxes.append(image.box if isinstance(image, Crop) else (0, 0, *image.size))  # type: ignore[attr-defined]
        return self.rows


def app_with(make_app: Callable[..., Flask], answer: Seer, settings: Settings | None = None) -> FlaskClient:
    """A client of an app whose one model answers ``answer``, with the frame cache off unless settings say."""
    settings = settings or Settings(frame_cache_s=0)
    return make_app(settings, detector=FakeBackend(answer, LABELS)).test_client()


def verbose(client: FlaskClient, body: bytes, query: str = "") -> list[dict[str, float | str]]:
    """The verbose answer, asserting a 200."""
    answer = client.post(f"/classify?verbose=true&threshold=0.1{query}", data=body)
    assert answer.status_code == 200, answer.json
    found: list[dict[str, float | str]] = answer.json  # type: ignore[assignment]
    return found


def test_tiles_are_the_whole_frame_and_sahis_slices(make_app: Callable[..., Flask]) -> None:
    """tile=640 asks the model about the whole frame, then each of SAHI's overlapping 640-pixel tiles cut at full
    resolution; a tile's detection comes back in the frame's coordinates."""
    asked: list[tuple[int, int, int, int]] = []

    def answer(image: ModelImage) -> Detections:
        box = image.box if isinstance(image, Crop) else (0, 0, *BIG)
        asked.append(box)
        if box == (0, 0, *BIG):
            return detections((1, 0.9, (0.4, 0.4, 0.6, 0.6)))
        if box == (960, 512, 1600, 1152):
            return detections((3, 0.8, (0.5, 0.5, 0.75, 0.75)))
        return detections()

    client = make_app(Settings(frame_cache_s=0), detector=FakeBackend(answer, LABELS)).test_client()
    person, car = verbose(client, jpeg(BIG), "&tile=640")
    assert asked == [(0, 0, *BIG), *tile_boxes(*BIG, 640)] and len(asked) == 10
    assert (person["class"], person["x1"], person["y1"]) == ("Person", pytest.approx(0.4), pytest.approx(0.4))
    # The tile's (0.5, 0.5)-(0.75, 0.75) is pixels 1280-1440 x 832-992 of the 1600x1200 frame.
    assert car["class"] == "Car"
    assert [car[k] for k in ("x1", "y1", "x2", "y2")] == pytest.approx([0.8, 832 / 1200, 0.9, 992 / 1200])


def test_an_object_cut_by_tile_edges_is_one_detection(make_app: Callable[..., Flask]) -> None:
    """A car seen whole by the frame and in parts by two tiles comes back once, its box covering the parts."""

    def answer(image: ModelImage) -> Detections:
        if not isinstance(image, Crop):  # the whole frame: the car, x 0.3-0.5 of 1600
            return detections((3, 0.8, (0.5, 0.3, 0.6, 0.5)))
        x0, y0, x1, y1 = image.box
        left, right = max(480, x0), min(800, x1)
        if left >= right or not (y0 <= 600 < y1):
            return detections()
        width, height = x1 - x0, y1 - y0
        return detections(
            (3, 0.7, ((600 - y0) / height, (left - x0) / width, (720 - y0) / height, (right - x0) / width))
        )

    client = make_app(Settings(frame_cache_s=0), detector=FakeBackend(answer, LABELS)).test_client()
    [car] = verbose(client, jpeg(BIG), "&tile=640")
    assert car["class"] == "Car" and car["score"] == pytest.approx(0.8)
    assert (car["x1"], car["x2"]) == (pytest.approx(0.3), pytest.approx(0.5))


def test_a_frame_no_larger_than_the_tile_is_not_tiled(make_app: Callable[..., Flask]) -> None:
    """A 640x480 frame with tile=640 is seen whole, once."""
    seer = Seer()
    verbose(app_with(make_app, seer), jpeg((640, 480)), "&tile=640")
    assert seer.boxes == [(0, 0, 640, 480)]


def test_too_many_tiles_are_a_413_naming_the_cap(make_app: Callable[..., Flask]) -> None:
    """More tiles than MAX_TILES (a batch counts all its images') is a 413 before any model call."""
    seer = Seer()
    client = app_with(make_app, seer, Settings(frame_cache_s=0, max_tiles=10))
    answer = client.post("/classify?tile=256", data=jpeg(BIG))
    assert answer.status_code == 413 and "MAX_TILES" in answer.json["error"] and seer.boxes == []


@pytest.mark.parametrize(("raw", "words"), [("64", "128 to 2048"), ("big", "whole number"), ("4096", "128 to 2048")])
def test_bad_tile_is_a_400(client: FlaskClient, raw: str, words: str) -> None:
    """A tile size outside the range, or not a number, is a 400 saying the range."""
    answer = client.post(f"/classify?tile={raw}", data=jpeg())
    assert answer.status_code == 400 and words in answer.json["error"]


def test_a_region_is_what_the_model_sees_and_boxes_come_back_in_the_frame(make_app: Callable[..., Flask]) -> None:
    """roi crops the upright picture to the region before detection; a box in the middle of the region comes back
    in the whole picture's normalized coordinates on /classify and in its pixels on the DeepStack routes."""
    seer = Seer()
    client = app_with(make_app, seer)
    [person] = verbose(client, jpeg(BIG), "&roi=0.5,0.5,1,1")
    assert seer.boxes == [(800, 600, 1600, 1200)]
    assert (person["x1"], person["y1"], person["x2"], person["y2"]) == (
        pytest.approx(0.7),
        pytest.approx(0.7),
        pytest.approx(0.8),
        pytest.approx(0.8),
    )
    vision = client.post("/v1/vision/detection", data={"image": (io.BytesIO(jpeg(BIG)), "a.jpg"), "roi": "0.5,0.5,1,1"})
    [prediction] = vision.json["predictions"]
    assert (prediction["x_min"], prediction["y_min"], prediction["x_max"], prediction["y_max"]) == (
        1120,
        840,
        1280,
        960,
    )


def test_a_region_of_a_big_jpeg_keeps_its_resolution(make_app: Callable[..., Flask]) -> None:
    """The model sees a region of a 4000x3000 JPEG at up to MAX_IMAGE_SIDE pixels, not cut from the reduced picture
    a whole frame is decoded at: the region gains the resolution it needs."""
    sizes: list[tuple[int, ...]] = []

    def answer(image: ModelImage) -> Detections:
        sizes.append(image.pixels().shape)
        return detections()

    client = make_app(Settings(frame_cache_s=0), detector=FakeBackend(answer, LABELS)).test_client()
    assert client.post("/classify?roi=0.5,0.5,1,1", data=jpeg((4000, 3000))).status_code == 200
    assert client.post("/classify", data=jpeg((4000, 3000))).status_code == 200
    region, whole = sizes[0], sizes[1]
    assert max(region[:2]) >= 0.9 * 1024 and region[1] / region[0] == pytest.approx(4 / 3, rel=0.01)
    assert max(whole[:2]) <= 1024


@pytest.mark.parametrize(
    ("raw", "words"), [("0.5,0.5,1", "four numbers"), ("0.6,0.5,0.4,1", "x1 < x2"), ("a,b,c,d", "four")]
)
def test_bad_roi_is_a_400(client: FlaskClient, raw: str, words: str) -> None:
    """A region that is not four numbers in [0, 1] with x1 < x2 and y1 < y2 is a 400."""
    answer = client.post(f"/classify?roi={raw}", data=jpeg())
    assert answer.status_code == 400 and words in answer.json["error"]


def test_the_annotated_picture_draws_the_region(make_app: Callable[..., Flask]) -> None:
    """format=image outlines the region of interest on the picture as sent."""
    client = app_with(make_app, Seer(detections()))
    plain = client.post("/classify?format=png", data=jpeg((200, 100), "grey")).data
    framed = client.post("/classify?format=png&roi=0.25,0.2,0.75,0.8", data=jpeg((200, 100), "grey")).data
    before, after = (np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int) for data in (plain, framed))
    changed = np.argwhere(np.abs(after - before).sum(axis=2) > 60)
    assert changed.size and changed[:, 1].min() >= 48 and changed[:, 1].max() <= 152


THREE = detections((1, 0.65, (0.1, 0.1, 0.2, 0.2)), (3, 0.7, (0.3, 0.3, 0.4, 0.4)), (18, 0.9, (0.5, 0.5, 0.6, 0.6)))


def test_thresholds_per_class_replace_the_threshold_for_those_classes(make_app: Callable[..., Flask]) -> None:
    """thresholds=person:0.6,car:0.8 keeps the person at 0.65, drops the car at 0.7, and the dog keeps threshold."""
    client = app_with(make_app, Seer(THREE))
    answer = client.post("/classify?threshold=0.75&thresholds=person:0.6,CAR:0.8", data=jpeg())
    assert answer.json == {"Dog": 1, "Person": 1}
    vision = client.post(
        "/v1/vision/detection",
        data={"image": (io.BytesIO(jpeg()), "a.jpg"), "min_confidence": "0.75", "thresholds": "person:0.6"},
    )
    assert [p["label"] for p in vision.json["predictions"]] == ["dog", "person"]


def test_an_unknown_class_in_thresholds_is_a_400(make_app: Callable[..., Flask]) -> None:
    """A class name the label map lacks in thresholds is a 400, as in classes."""
    client = app_with(make_app, Seer(THREE))
    answer = client.post("/classify?thresholds=unicorn:0.5", data=jpeg())
    assert answer.status_code == 400 and "unknown class 'unicorn'" in answer.json["error"]


def test_steps_run_thresholds_tiles_merging_classes_then_best(make_app: Callable[..., Flask]) -> None:
    """The steps' one order: the per-class threshold first (the weak dog goes before it could absorb the car in
    merging), then merging, then classes, then max_detections."""
    rows = detections((18, 0.5, (0.1, 0.1, 0.5, 0.5)), (3, 0.45, (0.1, 0.1, 0.5, 0.52)), (1, 0.9, (0.6, 0.6, 0.9, 0.9)))
    client = app_with(make_app, Seer(rows))
    query = "/classify?threshold=0.4&thresholds=dog:0.6&iou_threshold=0.5&classes=car,person&max_detections=1"
    assert client.post(query, data=jpeg()).json == {"Person": 1}
    query = "/classify?threshold=0.4&thresholds=dog:0.6&iou_threshold=0.5&classes=car,person"
    assert client.post(query, data=jpeg()).json == {"Person": 1, "Car": 1}


def test_json_batch_images_give_their_own_tile_and_region(make_app: Callable[..., Flask]) -> None:
    """In a JSON batch an element may be an object with its own tile and roi; strings take the request's."""
    import base64

    seer = Seer()
    client = app_with(make_app, seer)
    picture = base64.b64encode(jpeg(BIG)).decode()
    body = {"images": [picture, {"image": picture, "tile": 1000, "roi": [0, 0, 0.5, 0.5]}]}
    answer = client.post("/classify?roi=0.5,0,1,1", json=body)
    assert answer.status_code == 200
    assert seer.boxes == [(800, 0, 1600, 1200), (0, 0, 800, 600)]  # 800x600 is no larger than 1000: not tiled
    bad = client.post("/classify", json={"images": [{"image": picture, "tile": 5}]})
    assert bad.status_code == 400 and bad.json["error"].startswith("images[0]: tile must be")


PRESETS = (
    Preset("driveway", "detector", (("roi", "0.5,0.5,1,1"), ("thresholds", "car:0.8"))),
    Preset("tiled", "detector", (("tile", "640"),)),
    Preset("strict", "detector", (("threshold", "0.95"),)),
    Preset("typo", "detector", (("classes", "carr"),)),
)


@pytest.fixture
def presets(make_app: Callable[..., Flask]) -> tuple[FlaskClient, Seer]:
    """An app serving the fake model with four presets of it."""
    seer = Seer()
    return app_with(make_app, seer, Settings(frame_cache_s=0, presets=PRESETS)), seer


def test_a_preset_answers_with_its_options(presets: tuple[FlaskClient, Seer]) -> None:
    """A preset is a model /classify and the custom route know; it answers with its own options."""
    client, seer = presets
    verbose(client, jpeg(BIG), "&model=driveway")
    client.post("/v1/vision/custom/tiled", data={"image": (io.BytesIO(jpeg(BIG)), "a.jpg")})
    assert seer.boxes == [(800, 600, 1600, 1200), (0, 0, *BIG), *tile_boxes(*BIG, 640)]


def test_a_presets_options_win_over_the_requests(presets: tuple[FlaskClient, Seer]) -> None:
    """The options a preset names are the operator's (Blue Iris always sends min_confidence); the others come from
    the request."""
    client, seer = presets
    sent = {"image": (io.BytesIO(jpeg()), "a.jpg"), "min_confidence": "0.1", "roi": "0,0,0.5,0.5"}
    answer = client.post("/v1/vision/custom/strict", data=sent)
    assert answer.json["predictions"] == []  # 0.95, not the request's 0.1; the person scores 0.9
    assert seer.boxes == [(0, 0, 32, 24)]  # the request's roi: the preset names none


def test_presets_are_listed_as_presets_of_their_model(presets: tuple[FlaskClient, Seer]) -> None:
    """/v1/models lists each preset after the models, as a preset of its model with its options;
    /v1/vision/custom/list names them too."""
    client, _ = presets
    listing = {entry["name"]: entry for entry in client.get("/v1/models").json["models"]}
    assert listing["driveway"]["preset_of"] == "detector"
    assert listing["driveway"]["options"] == "roi=0.5,0.5,1,1&thresholds=car:0.8"
    assert listing["driveway"]["classes"] == 3 and "error" not in listing["driveway"]
    assert "carr" in listing["typo"]["error"]
    assert client.post("/v1/vision/custom/list").json["models"] == ["detector", "driveway", "tiled", "strict", "typo"]


def test_a_preset_naming_an_unknown_class_answers_an_error_naming_it(presets: tuple[FlaskClient, Seer]) -> None:
    """A preset whose class names its model lacks answers a server error that names the preset; the client's own
    unknown class stays a 400."""
    client, seer = presets
    answer = client.post("/classify?model=typo", data=jpeg())
    assert answer.status_code == 500 and answer.json["error"].startswith("preset typo (PRESETS): unknown class 'carr'")
    assert seer.boxes == []
    assert client.post("/classify?model=tiled&classes=carr", data=jpeg()).status_code == 400


def test_the_same_frame_is_one_model_call(make_app: Callable[..., Flask]) -> None:
    """The same bytes for the same model and shape within FRAME_CACHE_S are answered from the first one's output,
    reporting no inference time of their own; other shapes or bytes are new calls, and per-request steps still apply."""
    seer = Seer(THREE)
    client = app_with(make_app, seer, Settings(frame_cache_s=30))
    body = {"image": (io.BytesIO(jpeg(BIG)), "a.jpg"), "min_confidence": "0.5"}
    first = client.post("/v1/vision/detection", data=dict(body, image=(io.BytesIO(jpeg(BIG)), "a.jpg"))).json
    again = client.post("/v1/vision/custom/detector", data=dict(body, image=(io.BytesIO(jpeg(BIG)), "a.jpg"))).json
    assert len(seer.boxes) == 1
    assert [p["label"] for p in again["predictions"]] == [p["label"] for p in first["predictions"]]
    assert again["inferenceMs"] == 0
    assert client.post("/classify?threshold=0.8", data=jpeg(BIG)).json == {"Dog": 1}  # the steps are per request
    assert len(seer.boxes) == 1
    client.post("/classify?roi=0,0,0.5,0.5", data=jpeg(BIG))
    client.post("/classify", data=jpeg(BIG, "blue"))
    assert len(seer.boxes) == 3


def test_decoded_regions_match_pillows_own_crop() -> None:
    """A region decoded at a draft scale is the region Pillow's full decode gives, within the draft's 10% of
    MAX_IMAGE_SIDE (the pixels a model sees of a roi do not depend on how cheaply they were decoded)."""
    from proxy.images import ImageLimits

    pattern = np.random.default_rng(7).integers(0, 255, (15, 20, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pattern).resize((2000, 1500), Image.Resampling.BICUBIC).save(buffer, format="JPEG", quality=92)
    data = buffer.getvalue()
    limits = ImageLimits.from_settings(Settings(max_image_side=512))
    cheap = ImageInput(data, limits).region((1000, 750, 2000, 1500))
    full = ImageInput(data, limits)
    full.picture()
    exact = full.region((1000, 750, 2000, 1500))
    assert exact.shape == (384, 512, 3) and cheap.shape == (375, 500, 3)  # the JPEG's 1/2 scale: 500 >= 0.9 * 512
    same = np.asarray(Image.fromarray(exact).resize((500, 375), Image.Resampling.BILINEAR))
    assert np.abs(cheap.astype(int) - same.astype(int)).mean() < 4
