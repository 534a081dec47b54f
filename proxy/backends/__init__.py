"""Backends run detection models. The core sees this interface only, never which implementation it has.

A backend takes what the model is to see (``ModelImage``: a request image, a region or a tile of one) and asks each
for the form its model wants: pixels or encoded bytes. It answers per image, in order, a ``Prediction`` or the
``ProxyError`` that image met, so one bad image of a batch does not fail the others. One ``predict`` call is one
request's: its calls are in flight together, at most the request's share of the process's (``CallLimit``).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from odapi.contract import InputType, encode_example
from proxy.detections import Detections
from proxy.errors import BackendError, ConfigError, Overloaded, ProxyError
from proxy.images import ModelImage
from proxy.labels import LabelMap


@dataclass(frozen=True)
class Prediction:
    """What a model answered for one image, with the label map of the very version that answered."""

    detections: Detections
    labels: LabelMap
    version: int | None
    inference_s: float


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
    """Runs request images through one detection model."""

    def predict(self, images: Sequence[ModelImage], deadline: float) -> list[Prediction | ProxyError]:
        """One answer per image, in order; every image's call ends by ``deadline`` (``time.monotonic()``)."""
        ...

    def labels(self) -> LabelMap | None:
        """The label map of the version serving now, when known without waiting."""
        ...

    def status(self) -> ModelStatus:
        """Whether the model can answer now; bounded in time, never waits for a model to load."""
        ...

    def versions(self) -> list[VersionState]:
        """The model's versions and their states; bounded in time."""
        ...

    def device(self) -> str:
        """Where the model runs, as CodeProject.AI clients show it: ``CPU``, ``GPU``, or ``TF Serving``."""
        ...

    def start(self) -> None:
        """Begin loading or connecting in the background, so the first request is not the slow one."""
        ...

    def close(self) -> None:
        """Release what the backend holds (threads, models); the owner calls it once."""
        ...


@dataclass(frozen=True)
class Model:
    """One served model: its name and the backend that runs it."""

    name: str
    backend: Backend


def model_input(image: ModelImage, input_type: InputType, rank: int | None) -> np.ndarray:
    """The tensor value ``image`` becomes for a model of ``input_type``: a batch of one, or a scalar string for the
    older TF1 ``tf_example`` exports whose input has rank 0."""
    if input_type is InputType.IMAGE_TENSOR:
        return image.pixels()[np.newaxis]
    if input_type is InputType.FLOAT_IMAGE_TENSOR:
        return image.pixels()[np.newaxis].astype(np.float32)
    encoded, image_format = image.encoded()
    if input_type is InputType.TF_EXAMPLE:
        encoded = encode_example(encoded, image_format)
    value = np.empty(1, dtype=object)
    value[0] = encoded
    return value.reshape(()) if rank == 0 else value


class CallLimit:
    """The calls to models a process has in flight at once; past it, a call waits (until its deadline) or is
    refused with 503, so that batches and tiles times request threads cannot flood TF Serving. One request has at most
    ``per_request`` of them in flight (``request()``): a tiled frame's calls go out together, but never all of the
    process's, so the other clients' requests always find theirs."""

    def __init__(self, limit: int, per_request: int | None = None) -> None:
        self.limit = limit
        self.per_request = max(1, min(per_request or limit, limit))
        self._slots = threading.BoundedSemaphore(limit)

    def acquire(self, deadline: float) -> None:
        """Take a slot, or raise ``Overloaded`` when none frees up before ``deadline``."""
        if not self._slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise Overloaded(f"this server has {self.limit} model calls in flight (MAX_BACKEND_CALLS); try again")

    def release(self) -> None:
        """Give a slot back."""
        self._slots.release()

    def request(self, calls: int | None = None) -> RequestCalls:
        """The slots of one request's calls. ``calls``: how many it makes at most at once; when they all fit its
        share (one image, most requests), its own slots could never make one wait, and only the process's are
        taken."""
        return RequestCalls(self, own=calls is None or calls > self.per_request)


class RequestCalls:
    """One request's model calls: each takes one of the request's own ``per_request`` slots, then the process's."""

    def __init__(self, limit: CallLimit, *, own: bool = True) -> None:
        self._limit = limit
        self._own = threading.BoundedSemaphore(limit.per_request) if own else None

    def acquire(self, deadline: float) -> None:
        """Take a slot of the request's and one of the process's, or raise ``Overloaded`` at ``deadline``."""
        own = self._own
        if own is not None and not own.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise Overloaded("this request's model calls did not finish in time for its next one; try again")
        try:
            self._limit.acquire(deadline)
        except Overloaded:
            if own is not None:
                own.release()
            raise

    def release(self) -> None:
        """Give both slots back."""
        self._limit.release()
        if self._own is not None:
            self._own.release()


class LabelMaps:
    """Label-map texts as answers carry them → parsed label maps, remembered (a few per model at most)."""

    def __init__(self, fallback: LabelMap | None, size: int = 8) -> None:
        self.fallback = fallback or LabelMap({})
        self._parsed: OrderedDict[str, LabelMap] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def parse(self, text: str | None, source: str) -> LabelMap:
        """The label map for ``text``; the fallback (LABEL_MAP, else none at all) when the model carries none."""
        if not text:
            return self.fallback
        with self._lock:
            found = self._parsed.get(text)
            if found is not None:
                self._parsed.move_to_end(text)
                return found
        try:
            parsed = LabelMap.from_text(text, source=source)
        except ConfigError as exc:
            raise BackendError(f"the model's own label map is malformed: {exc}") from None
        with self._lock:
            self._parsed[text] = parsed
            while len(self._parsed) > self._size:
                self._parsed.popitem(last=False)
        return parsed
