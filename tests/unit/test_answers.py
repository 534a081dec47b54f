"""Answer builders: the seed's counts and verbose list, and DeepStack's and CodeProject.AI's fields."""

from __future__ import annotations

import time

import pytest

from proxy import answers
from proxy.errors import InvalidImage
from proxy.labels import LabelMap
from proxy.pipeline import Found
from tests.support.fake_backend import detections

LABELS = LabelMap({1: "Dog", 2: "Person", 3: "Car", 4: "Truck"})
CALL = answers.VisionCall("detect", "rid-1", time.perf_counter(), "CPU")


def found(*rows: tuple[int, float, tuple[float, float, float, float]], size: tuple[int, int] = (100, 50)) -> Found:
    """Answer material for the given detections."""
    return Found(detections(*rows), LABELS, size, None, 1, decode_s=0.004, inference_s=0.02)


def test_counts_in_order_of_best_score() -> None:
    """Counts name each class once, in the order of its best detection."""
    result = found((2, 0.7, (0, 0, 1, 1)), (1, 0.9, (0, 0, 1, 1)), (2, 0.8, (0, 0, 1, 1)))
    assert list(answers.counts(result).items()) == [("Dog", 1), ("Person", 2)]


def test_vision_message_names_three_then_dots() -> None:
    """The message lists up to three labels, then "..." as CodeProject.AI writes it; none is "No objects found"."""
    four = found(*((i, 0.9 - i / 100, (0, 0, 1, 1)) for i in (1, 2, 3, 4)))
    assert answers.vision(four, CALL)["message"] == "Found dog, person, car..."
    assert answers.vision(found(), CALL)["message"] == "No objects found"


def test_vision_timings_are_measured_milliseconds() -> None:
    """inferenceMs is the model's time, processMs adds decoding; both whole milliseconds."""
    body = answers.vision(found((1, 0.9, (0, 0, 1, 1))), CALL)
    assert (body["inferenceMs"], body["processMs"]) == (20, 24)
    assert body["duration"] == pytest.approx(0.024)


def test_vision_error_envelope() -> None:
    """An error carries every field a client may read, with empty predictions and its status as code."""
    body = answers.vision_error(413, "too big", CALL)
    assert (body["success"], body["error"], body["predictions"], body["count"], body["code"]) == (
        False,
        "too big",
        [],
        0,
        413,
    )
    assert set(answers.vision(found(), CALL)) == set(body) - {"error"}


def test_batch_answers_errors_in_place() -> None:
    """A batch's answer keeps the order, with {"error"} where an image failed."""
    result = answers.batch([found((1, 0.9, (0, 0, 1, 1))), InvalidImage("cannot decode image")], detailed=False)
    assert result == [{"Dog": 1}, {"error": "cannot decode image"}]
