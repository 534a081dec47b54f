"""Camera users' features end to end, in both modes, on the COCO default and real photographs pasted small into a
4000x3000 frame: tiles, a region of interest, per-class thresholds, presets as Blue Iris calls them, and one model
call for the pair of requests Blue Iris sends at once."""

from __future__ import annotations

import io
import re
import threading
from typing import Any

import pytest
import requests
from PIL import Image

from harness.frames import CAT_BOX, FRAME, PERSON_BOX, small_objects_frame
from harness.processes import HttpServer

WIDTH, HEIGHT = FRAME


@pytest.fixture(scope="module")
def frame(photos: dict[str, bytes]) -> bytes:
    """The cat and the cameraman, a few hundred pixels wide, in a 4000x3000 JPEG."""
    return small_objects_frame(photos["cat"], photos["cameraman"])


def iou(box: tuple[float, float, float, float], other: tuple[int, int, int, int]) -> float:
    """Intersection over union of two (x1, y1, x2, y2) pixel boxes."""
    width = max(0.0, min(box[2], other[2]) - max(box[0], other[0]))
    height = max(0.0, min(box[3], other[3]) - max(box[1], other[1]))
    inter = width * height
    area = (box[2] - box[0]) * (box[3] - box[1]) + (other[2] - other[0]) * (other[3] - other[1])
    return inter / (area - inter)


def pixels(detection: dict[str, Any]) -> tuple[float, float, float, float]:
    """A verbose detection's box in the frame's pixels."""
    return (detection["x1"] * WIDTH, detection["y1"] * HEIGHT, detection["x2"] * WIDTH, detection["y2"] * HEIGHT)


def classify(proxy: HttpServer, body: bytes, query: str) -> Any:
    """The JSON answer of /classify, asserting a 200."""
    answer = requests.post(f"{proxy.url}/classify?{query}", data=body, timeout=60)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_tiles_find_small_objects_the_whole_frame_misses(any_proxy: HttpServer, frame: bytes) -> None:
    """The whole 4000x3000 frame shrunk for the model finds neither the cat nor the person; tile=640 finds each once,
    its box on the photograph pasted there (the cat's cut by a tile edge and merged)."""
    assert classify(any_proxy, frame, "threshold=0.5") == {}
    found = classify(any_proxy, frame, "threshold=0.5&tile=640&verbose=true")
    assert sorted(d["class"] for d in found) == ["Cat", "Person"]
    by_class = {d["class"]: d for d in found}
    assert iou(pixels(by_class["Cat"]), CAT_BOX) > 0.6
    assert iou(pixels(by_class["Person"]), PERSON_BOX) > 0.5


def test_both_modes_answer_a_tiled_frame_alike(
    embedded_proxy: HttpServer, grpc_proxy: HttpServer, frame: bytes
) -> None:
    """The same tiled request answers the same detections in embedded and serving mode (scores and boxes to 1e-4)."""
    query = "threshold=0.3&tile=640&verbose=true"
    embedded, serving = classify(embedded_proxy, frame, query), classify(grpc_proxy, frame, query)
    assert [d["class"] for d in embedded] == [d["class"] for d in serving]
    for ours, theirs in zip(embedded, serving, strict=True):
        assert [ours[k] for k in ("score", "x1", "y1", "x2", "y2")] == pytest.approx(
            [theirs[k] for k in ("score", "x1", "y1", "x2", "y2")], abs=1e-4
        )


def test_a_region_makes_its_objects_larger_for_the_model(any_proxy: HttpServer, frame: bytes) -> None:
    """roi around the cat finds it without tiles, its box in the whole frame's coordinates; the DeepStack route
    answers it in the frame's pixels."""
    [cat] = classify(any_proxy, frame, "threshold=0.5&roi=0.2,0.15,0.4,0.35&verbose=true")
    assert cat["class"] == "Cat" and iou(pixels(cat), CAT_BOX) > 0.6
    answer = requests.post(
        f"{any_proxy.url}/v1/vision/detection",
        files={"image": frame},
        data={"roi": "0.2,0.15,0.4,0.35", "min_confidence": "0.5"},
        timeout=60,
    ).json()
    [prediction] = answer["predictions"]
    box = (prediction["x_min"], prediction["y_min"], prediction["x_max"], prediction["y_max"])
    assert prediction["label"] == "cat" and iou(box, CAT_BOX) > 0.6


def test_thresholds_per_class_with_tiles(any_proxy: HttpServer, frame: bytes) -> None:
    """thresholds keeps the person at a low bar and raises the cat's beyond its score."""
    assert classify(any_proxy, frame, "threshold=0.5&tile=640&thresholds=cat:0.99,person:0.3") == {"Person": 1}


def test_the_annotated_picture_draws_the_region(any_proxy: HttpServer, photos: dict[str, bytes]) -> None:
    """format=image with roi answers the picture as sent with the region outlined."""
    answer = requests.post(
        f"{any_proxy.url}/classify?format=png&roi=0.1,0.1,0.5,0.5&threshold=0.99", data=photos["cat"], timeout=60
    )
    drawn = Image.open(io.BytesIO(answer.content)).convert("RGB")
    original = Image.open(io.BytesIO(photos["cat"])).convert("RGB")
    assert drawn.size == original.size
    left_edge = [drawn.getpixel((45, y)) != original.getpixel((45, y)) for y in range(40, 140)]
    assert sum(left_edge) > 80  # the region's left edge, x = 0.1 * 451


def test_blue_iris_reaches_tiles_and_thresholds_through_a_preset(any_proxy: HttpServer, frame: bytes) -> None:
    """Blue Iris's request to a preset's custom route (multipart image, min_confidence always sent) answers with the
    preset's tiles and thresholds; its model list names the presets."""
    listing = requests.post(f"{any_proxy.url}/v1/vision/custom/list", timeout=30).json()
    assert {"camera", "driveway"} <= set(listing["models"])
    answer = requests.post(
        f"{any_proxy.url}/v1/vision/custom/camera", files={"image": frame}, data={"min_confidence": "0.9"}, timeout=60
    ).json()
    assert sorted(p["label"] for p in answer["predictions"]) == ["cat", "person"]
    assert answer["command"] == "custom"
    [cat] = requests.post(
        f"{any_proxy.url}/v1/vision/custom/driveway", files={"image": frame}, data={"min_confidence": "0.5"}, timeout=60
    ).json()["predictions"]
    assert cat["label"] == "cat"


def _cache_counts(proxy: HttpServer) -> dict[str, float]:
    metrics = requests.get(f"{proxy.url}/metrics", timeout=10).text
    return {
        result: float(match.group(1))
        if (match := re.search(rf'frame_cache_total{{result="{result}"}} (\S+)', metrics))
        else 0.0
        for result in ("hit", "miss")
    }


def blue_iris_pair(proxy: HttpServer, body: bytes) -> dict[str, Any]:
    """Send ``body`` at once to the default detection route and to the default model's custom route, each on a
    connection of its own, as Blue Iris does; the two answers by path."""
    answers: dict[str, Any] = {}
    start = threading.Barrier(2)

    def send(path: str) -> None:
        with requests.Session() as session:
            start.wait(5)
            answers[path] = session.post(
                f"{proxy.url}{path}", files={"image": body}, data={"min_confidence": "0.5"}, timeout=60
            ).json()

    threads = [threading.Thread(target=send, args=(path,)) for path in ("/v1/vision/detection", VISION_CUSTOM)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


VISION_CUSTOM = "/v1/vision/custom/detector"


def test_blue_iris_pair_of_requests_is_one_model_call(any_proxy: HttpServer, photos: dict[str, bytes]) -> None:
    """The same frame sent at once to the default route and to the default model's custom route (two connections,
    whichever workers take them) is one model call: one miss, one hit, the same predictions, and the hit reports no
    inference time of its own."""
    picture = Image.open(io.BytesIO(photos["both"]))
    for attempt in range(3):
        buffer = io.BytesIO()
        picture.rotate(attempt + 1).save(buffer, format="JPEG", quality=90)  # bytes no earlier test sent
        before = _cache_counts(any_proxy)
        answers = blue_iris_pair(any_proxy, buffer.getvalue())
        after = _cache_counts(any_proxy)
        assert (after["miss"] - before["miss"], after["hit"] - before["hit"]) == (1, 1)
        default, custom = answers["/v1/vision/detection"], answers[VISION_CUSTOM]
        assert default["predictions"] == custom["predictions"] and default["predictions"]
        assert 0 in (default["inferenceMs"], custom["inferenceMs"])
