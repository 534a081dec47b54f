"""Detections: reading OD API outputs, the steps answers apply (threshold, merging, classes, best), and rows."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.detections import Detections, greedy_merge, iou_matrix
from proxy.errors import BackendError
from proxy.labels import LabelMap
from tests.support.fake_backend import detections


def outputs(scores: list[float], classes: list[float], count: float | None = None) -> dict[str, np.ndarray]:
    """A batch of one OD API output, boxes numbered by row."""
    n = len(scores)
    found = {
        "detection_boxes": np.array([[[i / 10, i / 10, i / 10 + 0.05, i / 10 + 0.05] for i in range(n)]], np.float32),
        "detection_scores": np.array([scores], np.float32),
        "detection_classes": np.array([classes], np.float32),
    }
    if count is not None:
        found["num_detections"] = np.array([count], np.float32)
    return found


def test_from_outputs_keeps_num_detections_rows() -> None:
    """Only the first num_detections rows are read; classes come as rounded integers."""
    found = Detections.from_outputs(outputs([0.9, 0.8, 0.0], [1.0, 2.0000001, 1.0], count=2))
    assert found.classes.tolist() == [1, 2]
    assert found.scores.tolist() == pytest.approx([0.9, 0.8])


def test_from_outputs_without_a_count_reads_every_row() -> None:
    """Without num_detections (it is optional in a signature), every row is read."""
    assert len(Detections.from_outputs(outputs([0.9, 0.8, 0.7], [1, 1, 1]))) == 3


@given(st.lists(st.sampled_from([0.0, 0.25, 0.5, 0.5, 0.75, 1.0, float("nan")]), min_size=1, max_size=12))
def test_from_outputs_is_a_stable_sort_by_score(scores: list[float]) -> None:
    """Sorted or not, ties and NaN included, the rows are those of a stable sort by descending score."""
    found = Detections.from_outputs(outputs(scores, [float(i) for i in range(len(scores))]))
    order = np.argsort(-np.array(scores, np.float32), kind="stable")
    assert found.classes.tolist() == order.tolist()
    np.testing.assert_array_equal(found.scores, np.array(scores, np.float32)[order])


def test_from_outputs_orders_best_first() -> None:
    """Rows are ordered by score, best first, equal scores in the model's order."""
    found = Detections.from_outputs(outputs([0.5, 0.9, 0.5, 0.7], [1, 2, 3, 4]))
    assert found.classes.tolist() == [2, 4, 1, 3]


@pytest.mark.parametrize(
    "broken",
    [
        {"detection_scores": np.zeros((1, 2)), "detection_classes": np.zeros((1, 2))},
        {
            "detection_boxes": np.zeros((1, 2, 3)),
            "detection_scores": np.zeros((1, 2)),
            "detection_classes": np.zeros((1, 2)),
        },
    ],
    ids=["missing-boxes", "bad-shape"],
)
def test_unusable_outputs_are_backend_errors(broken: dict[str, np.ndarray]) -> None:
    """Missing required outputs or wrong shapes are a BackendError (502), naming what is wrong."""
    with pytest.raises(BackendError):
        Detections.from_outputs(broken)


def test_above_is_strict() -> None:
    """above(t) keeps scores strictly greater than t."""
    found = detections((1, 0.9, (0, 0, 1, 1)), (1, 0.5, (0, 0, 1, 1)))
    assert len(found.above(0.5)) == 1 and len(found.above(0.49)) == 2


@pytest.mark.parametrize(
    ("a", "b", "iou"),
    [
        ((0, 0, 1, 1), (0, 0, 1, 1), 1.0),
        ((0, 0, 1, 1), (0, 0.5, 1, 1.5), 1 / 3),  # half overlaps: 0.5 / 1.5
        ((0, 0, 1, 1), (0.5, 0.5, 1.5, 1.5), 0.25 / 1.75),
        ((0, 0, 1, 1), (2, 2, 3, 3), 0.0),
        ((0, 0, 0, 0), (0, 0, 0, 0), 0.0),  # empty boxes overlap nothing
    ],
)
def test_iou_of_hand_worked_pairs(a: tuple[float, ...], b: tuple[float, ...], iou: float) -> None:
    """IoU is intersection over union of [ymin, xmin, ymax, xmax] boxes, symmetric."""
    matrix = iou_matrix(np.array([a, b]))
    assert matrix[0, 1] == pytest.approx(iou) and matrix[1, 0] == pytest.approx(iou)


def test_greedy_merge_keeps_the_best_of_each_overlapping_group() -> None:
    """Greedy by score: B overlaps A by 1/3 (> 0.3): dropped; C overlaps B, not A: kept, since B was dropped."""
    boxes = np.array([(0, 0, 1, 1), (0, 0.5, 1, 1.5), (0, 1.0, 1, 2.0)])
    assert greedy_merge(boxes, 0.3) == [0, 2]
    assert greedy_merge(boxes, 1 / 3) == [0, 1, 2]  # strictly above: exactly 1/3 stays
    assert greedy_merge(np.zeros((0, 4)), 0.5) == []


def test_merged_is_class_agnostic_and_leaves_kept_boxes_unchanged() -> None:
    """A car also seen as a truck keeps the car (better score), its box unchanged."""
    found = detections((3, 0.9, (0.1, 0.1, 0.5, 0.5)), (8, 0.8, (0.1, 0.12, 0.5, 0.52)), (1, 0.7, (0.6, 0.6, 0.9, 0.9)))
    merged = found.merged(0.5)
    assert merged.classes.tolist() == [3, 1]
    np.testing.assert_array_equal(merged.boxes[0], found.boxes[0])


def test_of_classes_and_best() -> None:
    """of_classes keeps the ids given; best(n) the n first."""
    found = detections((1, 0.9, (0, 0, 1, 1)), (2, 0.8, (0, 0, 1, 1)), (1, 0.7, (0, 0, 1, 1)))
    assert found.of_classes(frozenset({1})).scores.tolist() == pytest.approx([0.9, 0.7])
    assert found.of_classes(frozenset()).scores.tolist() == []
    assert found.best(2).classes.tolist() == [1, 2] and len(found.best(10)) == 3


def test_rows_name_each_detection() -> None:
    """rows() walks the detections best first with names from the label map (fallback for unknown ids)."""
    found = detections((1, 0.9, (0.1, 0.2, 0.3, 0.4)), (9, 0.5, (0, 0, 1, 1)))
    rows = list(found.rows(LabelMap({1: "Dog"})))
    assert [(row.class_id, row.name) for row in rows] == [(1, "Dog"), (9, "Class 9")]
    assert (rows[0].ymin, rows[0].xmin, rows[0].ymax, rows[0].xmax) == pytest.approx((0.1, 0.2, 0.3, 0.4))
