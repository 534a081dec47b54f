"""One image's detections and the steps every answer applies to them. Pure numpy, no I/O.

The steps run in one order everywhere (``pipeline.refine``): score above the threshold (a class's own, where
``thresholds=`` names one), then the merge of a tiled frame's detections, then class-agnostic merging of overlapping
boxes (``iou_threshold``), then the class filter (``classes=``), then the N best (``max_detections``). Answers then
walk the result row by row (``Detections.rows``), each row carrying its name.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from odapi.contract import COUNT_OUTPUT, REQUIRED_OUTPUTS
from proxy.errors import BackendError
from proxy.labels import LabelMap
from proxy.tiles import merge, to_frame


class Row(NamedTuple):
    """One detection: its class (id and name), score, and box as normalized ``ymin, xmin, ymax, xmax``."""

    class_id: int
    name: str
    score: float
    ymin: float
    xmin: float
    ymax: float
    xmax: float


@dataclass(frozen=True)
class Detections:
    """One image's detections, highest score first: boxes ``[ymin, xmin, ymax, xmax]`` normalized."""

    boxes: np.ndarray  # (n, 4) float32
    scores: np.ndarray  # (n,) float32
    classes: np.ndarray  # (n,) int64

    @classmethod
    def from_outputs(cls, outputs: Mapping[str, np.ndarray]) -> Detections:
        """The first image of a batch of OD API outputs: its first ``num_detections`` rows, best score first."""
        missing = [name for name in REQUIRED_OUTPUTS if name not in outputs]
        if missing:
            raise BackendError(f"model output lacks {', '.join(missing)}; is this an Object Detection API model?")
        boxes = np.asarray(outputs["detection_boxes"], dtype=np.float32)
        scores = np.asarray(outputs["detection_scores"], dtype=np.float32)
        classes = np.asarray(outputs["detection_classes"])
        if boxes.ndim != 3 or boxes.shape[-1] != 4 or scores.ndim != 2 or classes.ndim != 2:
            raise BackendError(
                "model output has unexpected shapes: "
                f"detection_boxes {list(boxes.shape)}, detection_scores {list(scores.shape)}, "
                f"detection_classes {list(classes.shape)}"
            )
        rows = min(boxes.shape[1], scores.shape[1], classes.shape[1])
        if COUNT_OUTPUT in outputs:
            count = np.asarray(outputs[COUNT_OUTPUT]).reshape(-1)
            if count.size and np.isfinite(count[0]):
                rows = max(0, min(rows, int(count[0])))
        scores, boxes, classes = scores[0, :rows], boxes[0, :rows], classes[0, :rows]
        # The OD API sorts by score already; a stable sort keeps that order and guards models that do not.
        if rows > 1 and not (scores[:-1] >= scores[1:]).all():
            order = np.argsort(-scores, kind="stable")
            scores, boxes, classes = scores[order], boxes[order], classes[order]
        return cls(boxes=boxes, scores=scores, classes=np.rint(classes).astype(np.int64))

    def _take(self, keep: np.ndarray) -> Detections:
        return Detections(self.boxes[keep], self.scores[keep], self.classes[keep])

    def above(self, threshold: float, per_class: Mapping[int, float] | None = None) -> Detections:
        """The detections scoring strictly above ``threshold`` (the seed's rule), or above their class's own threshold
        where ``per_class`` names one."""
        if not per_class:
            return self._take(self.scores > threshold)
        limits = np.full(self.scores.shape, threshold, dtype=np.float64)
        for class_id, own in per_class.items():
            limits[self.classes == class_id] = own
        return self._take(self.scores > limits)

    def in_frame(self, box: tuple[int, int, int, int], width: int, height: int) -> Detections:
        """These detections of the region ``box`` (pixels) of a ``width`` x ``height`` frame, in the frame's
        normalized coordinates."""
        if box == (0, 0, width, height):
            return self
        return Detections(to_frame(self.boxes, box, width, height).astype(np.float32), self.scores, self.classes)

    @classmethod
    def joined(cls, parts: Sequence[Detections]) -> Detections:
        """All of ``parts`` together, best first."""
        boxes = np.concatenate([part.boxes for part in parts]).reshape(-1, 4)
        scores = np.concatenate([part.scores for part in parts])
        classes = np.concatenate([part.classes for part in parts])
        order = np.argsort(-scores, kind="stable")
        return cls(boxes[order], scores[order], classes[order])

    def tiles_merged(self) -> Detections:
        """SAHI's merge of the detections of overlapping tiles and the whole frame (``proxy.tiles.merge``): per
        class, a box mostly inside a better one (IoS at least 0.5) is merged into it, so an object cut by a tile's
        edge is one detection."""
        boxes, scores, classes = merge(self.boxes, self.scores, self.classes)
        return Detections(boxes.astype(np.float32), scores.astype(np.float32), classes.astype(np.int64))

    def merged(self, iou_threshold: float) -> Detections:
        """Class-agnostic merging: greedy by score, a box whose IoU with a kept box is above the threshold goes.

        Kept boxes are unchanged (a car also seen as a truck stays the better-scored of the two).
        """
        return self._take(np.asarray(greedy_merge(self.boxes, iou_threshold), dtype=np.int64))

    def of_classes(self, class_ids: frozenset[int]) -> Detections:
        """The detections whose class id is one of ``class_ids``."""
        return self._take(np.isin(self.classes, np.fromiter(class_ids, dtype=np.int64, count=len(class_ids))))

    def best(self, count: int) -> Detections:
        """The ``count`` best detections."""
        return Detections(self.boxes[:count], self.scores[:count], self.classes[:count])

    def rows(self, labels: LabelMap) -> Iterator[Row]:
        """Every detection with its name, best first: the one way answers walk detections."""
        # tolist() turns the float32 arrays into Python floats in one C call, instead of one float() per element.
        for class_id, score, (ymin, xmin, ymax, xmax) in zip(
            self.classes.tolist(), self.scores.tolist(), self.boxes.tolist(), strict=True
        ):
            yield Row(class_id, labels.name(class_id), score, ymin, xmin, ymax, xmax)

    def __len__(self) -> int:
        return int(self.scores.shape[0])


def iou_matrix(boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of every pair of ``[ymin, xmin, ymax, xmax]`` boxes; empty boxes overlap nothing."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    ymin, xmin, ymax, xmax = (boxes[:, i] for i in range(4))
    area = np.clip(ymax - ymin, 0, None) * np.clip(xmax - xmin, 0, None)
    height = np.clip(np.minimum(ymax[:, None], ymax[None, :]) - np.maximum(ymin[:, None], ymin[None, :]), 0, None)
    width = np.clip(np.minimum(xmax[:, None], xmax[None, :]) - np.maximum(xmin[:, None], xmin[None, :]), 0, None)
    intersection = height * width
    union = area[:, None] + area[None, :] - intersection
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, intersection / union, 0.0)


def greedy_merge(boxes: np.ndarray, iou_threshold: float) -> list[int]:
    """Indices kept by greedy non-maximum suppression over boxes already sorted best first: each box is kept
    unless its IoU with a box kept before it is strictly above ``iou_threshold``."""
    overlaps = iou_matrix(boxes)
    kept: list[int] = []
    for index in range(overlaps.shape[0]):
        if not kept or not np.any(overlaps[index, kept] > iou_threshold):
            kept.append(index)
    return kept
