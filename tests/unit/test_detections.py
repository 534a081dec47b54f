"""Raw detection tensors → the seed's JSON."""

from __future__ import annotations

import numpy as np
import pytest

from proxy.detections import Detections, count_by_class, verbose_list
from proxy.errors import BackendError
from proxy.labels import LabelMap

LABELS = LabelMap({1: "Dog", 2: "Cat"})


def outputs(scores: list[float], classes: list[float], num: float | None = None) -> dict[str, np.ndarray]:
    """OD API outputs for one image with a box per row: row i is ``[i/10, i/20, i/10+0.1, i/20+0.2]``."""
    rows = len(scores)
    boxes = np.array([[i / 10, i / 20, i / 10 + 0.1, i / 20 + 0.2] for i in range(rows)], dtype=np.float32)
    result = {
        "detection_boxes": boxes[np.newaxis],
        "detection_scores": np.array([scores], dtype=np.float32),
        "detection_classes": np.array([classes], dtype=np.float32),
    }
    if num is not None:
        result["num_detections"] = np.array([num], dtype=np.float32)
    return result


def test_counts_keep_first_seen_order() -> None:
    """Counts are per class name, in the order classes first appear in the model's score order."""
    detections = Detections.from_outputs(outputs([0.9, 0.85, 0.8, 0.3], [2, 1, 2, 1], num=4))
    assert list(count_by_class(detections.above(0.75), LABELS).items()) == [("Cat", 2), ("Dog", 1)]


def test_threshold_is_strict() -> None:
    """A score equal to the threshold does not count (the seed's ``score > threshold``)."""
    detections = Detections.from_outputs(outputs([0.75, 0.5], [1, 1], num=2))
    assert count_by_class(detections.above(0.75), LABELS) == {}
    assert count_by_class(detections.above(0.74), LABELS) == {"Dog": 1}


def test_only_the_first_num_detections_rows_are_read() -> None:
    """Rows past ``num_detections`` are padding and never answered, whatever their score."""
    detections = Detections.from_outputs(outputs([0.9, 0.9, 0.9], [1, 2, 2], num=1))
    assert count_by_class(detections.above(0.5), LABELS) == {"Dog": 1}


def test_without_num_detections_every_row_is_read() -> None:
    """A model that has no ``num_detections`` output has all its rows read."""
    detections = Detections.from_outputs(outputs([0.9, 0.8], [1, 2]))
    assert len(detections) == 2


def test_verbose_maps_ymin_xmin_ymax_xmax_to_x1_y1_x2_y2() -> None:
    """Verbose entries take x from xmin/xmax and y from ymin/ymax, in score order, with float scores."""
    detections = Detections.from_outputs(outputs([0.9, 0.8], [1, 2], num=2))
    answer = verbose_list(detections.above(0.5), LABELS)
    assert answer[0] == {
        "class": "Dog",
        "score": pytest.approx(0.9),
        "x1": 0.0,
        "y1": 0.0,
        "x2": pytest.approx(0.2),
        "y2": pytest.approx(0.1),
    }
    assert answer[1]["class"] == "Cat"
    assert answer[1]["x1"] == pytest.approx(0.05)
    assert answer[1]["y2"] == pytest.approx(0.2)
    assert all(type(value) is float for entry in answer for key, value in entry.items() if key != "class")


def test_unknown_class_ids_get_the_fallback_name() -> None:
    """A class id outside the label map is named ``Class <id>``."""
    detections = Detections.from_outputs(outputs([0.9], [7], num=1))
    assert count_by_class(detections.above(0.5), LABELS) == {"Class 7": 1}


def test_missing_outputs_are_a_backend_error() -> None:
    """A model without the OD API outputs is the backend's fault (502), naming what is missing."""
    with pytest.raises(BackendError, match="detection_boxes"):
        Detections.from_outputs({"detection_scores": np.zeros((1, 3)), "detection_classes": np.zeros((1, 3))})


def test_wrong_shapes_are_a_backend_error() -> None:
    """Outputs of the wrong rank are reported with their shapes."""
    bad = outputs([0.9], [1], num=1)
    bad["detection_boxes"] = np.zeros((1, 4), dtype=np.float32)
    with pytest.raises(BackendError, match="unexpected shapes"):
        Detections.from_outputs(bad)
