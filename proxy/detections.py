"""Raw Object Detection API outputs → the seed's JSON answers. Pure functions, no I/O."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from proxy.errors import BackendError
from proxy.labels import LabelMap

REQUIRED_OUTPUTS = ("detection_boxes", "detection_scores", "detection_classes")
OPTIONAL_COUNT = "num_detections"


@dataclass(frozen=True)
class Detections:
    """One image's detections in the model's score order: boxes are ``[ymin, xmin, ymax, xmax]``, normalized."""

    boxes: np.ndarray  # (n, 4) float32
    scores: np.ndarray  # (n,) float32
    classes: np.ndarray  # (n,) int64

    @classmethod
    def from_outputs(cls, outputs: Mapping[str, np.ndarray]) -> Detections:
        """Take the first image of a batch of OD API outputs, keeping only the first ``num_detections`` rows."""
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
        if OPTIONAL_COUNT in outputs:
            count = np.asarray(outputs[OPTIONAL_COUNT]).reshape(-1)
            if count.size and np.isfinite(count[0]):
                rows = max(0, min(rows, int(count[0])))
        return cls(
            boxes=boxes[0, :rows],
            scores=scores[0, :rows],
            classes=np.rint(classes[0, :rows]).astype(np.int64),
        )

    def above(self, threshold: float) -> Detections:
        """The detections whose score is strictly above ``threshold`` (the seed's rule), order kept."""
        keep = self.scores > threshold
        return Detections(self.boxes[keep], self.scores[keep], self.classes[keep])

    def of_classes(self, names: frozenset[str], labels: LabelMap) -> Detections:
        """The detections whose class name (case-insensitive) is in ``names``, order kept."""
        keep = np.array([labels.name(int(c)).lower() in names for c in self.classes.tolist()], dtype=bool)
        return Detections(self.boxes[keep], self.scores[keep], self.classes[keep])

    def __len__(self) -> int:
        return int(self.scores.shape[0])


def count_by_class(detections: Detections, labels: LabelMap) -> dict[str, int]:
    """``{"Dog": 2}``: how many detections of each class, in the order classes first appear (score order)."""
    return dict(Counter(labels.name(int(class_id)) for class_id in detections.classes.tolist()))


def verbose_list(detections: Detections, labels: LabelMap) -> list[dict[str, Any]]:
    """The seed's verbose answer: one ``{"class","score","x1","y1","x2","y2"}`` per detection, in score order."""
    # tolist() turns the float32 arrays into Python floats in one C call, instead of one float() per element.
    boxes = detections.boxes.tolist()
    scores = detections.scores.tolist()
    return [
        {
            "class": labels.name(int(class_id)),
            "score": score,
            "x1": box[1],
            "y1": box[0],
            "x2": box[3],
            "y2": box[2],
        }
        for class_id, score, box in zip(detections.classes.tolist(), scores, boxes, strict=True)
    ]
