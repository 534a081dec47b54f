"""Backends run the detector. Routes only see this interface, never which implementation they have."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from proxy.detections import Detections
from proxy.settings import Settings


@dataclass(frozen=True)
class ModelStatus:
    """What a backend says about its model: whether it can answer, which version, and why not."""

    ready: bool
    version: int | None = None
    detail: str = ""


class Backend(Protocol):
    """Runs one image through the detection model."""

    def predict(self, image: np.ndarray) -> Detections:
        """Detections for one ``(h, w, 3)`` uint8 RGB image, raising a ``ProxyError`` subclass on failure."""
        ...

    def status(self) -> ModelStatus:
        """Whether the model can answer now; bounded in time, never waits for a model to load."""
        ...

    def start(self) -> None:
        """Begin loading or connecting in the background, so the first request is not the slow one."""
        ...

    def close(self) -> None:
        """Release connections and memory."""
        ...


def make_backend(settings: Settings) -> Backend:
    """The gRPC backend when SERVING_ADDRESS is set, else the in-process TensorFlow one."""
    if settings.serving_address:
        from proxy.backends.serving import ServingBackend

        return ServingBackend(settings)
    from proxy.backends.embedded import EmbeddedBackend

    return EmbeddedBackend(settings)
