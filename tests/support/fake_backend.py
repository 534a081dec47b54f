"""A small backend for in-process route tests: it answers fixed detections and records what it was asked.

It asks each image for the form its input type wants (pixels or encoded bytes), as the real backends do, so the
image path runs for real; only the model is replaced. The end-to-end tests run the real backends.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from odapi.contract import InputType
from proxy.backends import ModelStatus, Prediction, VersionState, model_input
from proxy.detections import Detections
from proxy.errors import ProxyError
from proxy.images import ImageInput
from proxy.labels import LabelMap


def detections(*rows: tuple[int, float, tuple[float, float, float, float]]) -> Detections:
    """Detections from ``(class_id, score, (ymin, xmin, ymax, xmax))`` rows, best first as a model gives them."""
    ordered = sorted(rows, key=lambda row: -row[1])
    return Detections(
        boxes=np.array([row[2] for row in ordered], dtype=np.float32).reshape(-1, 4),
        scores=np.array([row[1] for row in ordered], dtype=np.float32),
        classes=np.array([row[0] for row in ordered], dtype=np.int64),
    )


@dataclass
class FakeBackend:
    """Answers ``answer`` (or ``answer(image)``) for every image, with ``labels``, as version ``version``."""

    answer: Detections | Callable[[ImageInput], Detections | ProxyError]
    labels_map: LabelMap
    version: int = 1
    input_type: InputType = InputType.IMAGE_TENSOR
    ready: bool = True
    failure: ProxyError | None = None  # raised for the whole request (a model that is not ready, say)
    seen: list[np.ndarray] = field(default_factory=list)
    closed: bool = False

    def predict(self, images: Sequence[ImageInput], deadline: float) -> list[Prediction | ProxyError]:
        if self.failure is not None:
            raise self.failure
        results: list[Prediction | ProxyError] = []
        for image in images:
            try:
                self.seen.append(model_input(image, self.input_type, 4))
                found = self.answer(image) if callable(self.answer) else self.answer
            except ProxyError as exc:
                results.append(exc)
                continue
            results.append(
                found if isinstance(found, ProxyError) else Prediction(found, self.labels_map, self.version, 0.001)
            )
        return results

    def labels(self) -> LabelMap | None:
        return self.labels_map if self.ready else None

    def status(self) -> ModelStatus:
        return ModelStatus(
            ready=self.ready, version=self.version if self.ready else None, detail="" if self.ready else "loading"
        )

    def versions(self) -> list[VersionState]:
        return [VersionState(self.version, "AVAILABLE" if self.ready else "LOADING")]

    def device(self) -> str:
        return "CPU"

    def start(self) -> None:
        """Nothing to load."""

    def close(self) -> None:
        self.closed = True
