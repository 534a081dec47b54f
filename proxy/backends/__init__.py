"""Backends run a detection model. Routes only see this interface, never which implementation they have."""

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


@dataclass(frozen=True)
class VersionState:
    """One version of a model and its state, in TF Serving's words (LOADING, AVAILABLE, END...)."""

    version: int
    state: str
    error: str = ""


class Backend(Protocol):
    """Runs one image through one detection model."""

    def predict(self, image: np.ndarray) -> Detections:
        """Detections for one ``(h, w, 3)`` uint8 RGB image, raising a ``ProxyError`` subclass on failure."""
        ...

    def status(self) -> ModelStatus:
        """Whether the model can answer now; bounded in time, never waits for a model to load."""
        ...

    def versions(self) -> list[VersionState]:
        """The model's versions and their states; bounded in time."""
        ...

    def start(self) -> None:
        """Begin loading or connecting in the background, so the first request is not the slow one."""
        ...

    def close(self) -> None:
        """Release connections and memory."""
        ...


def make_backends(settings: Settings) -> dict[str, Backend]:
    """A backend per configured model: TF Serving over one shared gRPC channel when SERVING_ADDRESS is set,
    else in-process TensorFlow."""
    if settings.serving_address:
        from proxy.backends.serving import ServingBackend, open_channel

        channel = open_channel(settings)
        return {model.name: ServingBackend(settings, model.name, channel) for model in settings.model_configs}
    from proxy.backends.embedded import EmbeddedBackend

    return {model.name: EmbeddedBackend(model.base_path, settings.signature_name) for model in settings.model_configs}
