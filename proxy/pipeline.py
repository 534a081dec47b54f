"""What every detection route does: take the image from the request, decode it, run the backend."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from flask import current_app, request

from proxy.backends import Backend
from proxy.detections import Detections
from proxy.errors import InvalidImage, InvalidParameter, NotFound, UnsupportedMediaType
from proxy.images import DecodedImage, decode
from proxy.labels import LabelMap
from proxy.observability import BACKEND_SECONDS, DECODE_SECONDS, IMAGE_BYTES, IMAGE_PIXELS
from proxy.settings import Settings

IMAGE_FIELD = "image"  # the multipart field, as DeepStack and HTML forms name it

# Content types under which a client may well be sending an image without saying so precisely: curl's
# --data-binary default (form-urlencoded), generic binary, or none at all.
_NEUTRAL_TYPES = frozenset({"", "application/octet-stream", "application/x-www-form-urlencoded"})


@dataclass(frozen=True)
class Model:
    """One served model: its name, the backend that runs it and its label map."""

    name: str
    backend: Backend
    labels: LabelMap


@dataclass(frozen=True)
class Services:
    """What the routes work with, built once by the app factory."""

    settings: Settings
    models: Mapping[str, Model]  # in configuration order: the first is the default

    @property
    def default(self) -> Model:
        """The model answering requests that name none."""
        return next(iter(self.models.values()))

    def model(self, name: str | None) -> Model:
        """The model called ``name`` (None: the default), or ``NotFound`` naming the ones there are."""
        if name is None:
            return self.default
        found = self.models.get(name)
        if found is None:
            raise NotFound(f"unknown model {name[:64]!r}; this server has: {', '.join(self.models)}")
        return found


def services() -> Services:
    """The current app's services."""
    found: Services = current_app.extensions["classifyobjects"]
    return found


def image_bytes() -> bytes:
    """The image from the request: the multipart field ``image``, or else the raw body."""
    if request.mimetype == "multipart/form-data":
        upload = request.files.get(IMAGE_FIELD)
        if upload is None:
            raise InvalidParameter(f"multipart upload without a file in the field {IMAGE_FIELD!r}")
        data: bytes = upload.read()
        return data
    return request.get_data(cache=False)


def detect(data: bytes, model: Model, *, keep_original: bool = False) -> tuple[DecodedImage, Detections]:
    """Decode the image and run it through the model's backend, timing both."""
    settings = services().settings
    started = time.perf_counter()
    try:
        image = decode(
            data,
            max_pixels=settings.max_image_pixels,
            max_side=settings.max_image_side,
            keep_original=keep_original,
        )
    except InvalidImage:
        declared = (request.mimetype or "").lower()
        if data and declared not in _NEUTRAL_TYPES and not declared.startswith(("image/", "multipart/")):
            raise UnsupportedMediaType(
                f"Content-Type {declared} is not an image type and the body is not a decodable image; "
                "send image/jpeg or image/png bytes"
            ) from None
        raise
    decoded_at = time.perf_counter()
    DECODE_SECONDS.observe(decoded_at - started)
    IMAGE_BYTES.observe(len(data))
    IMAGE_PIXELS.observe(image.size[0] * image.size[1])
    detections = model.backend.predict(image.pixels)
    BACKEND_SECONDS.labels(model=model.name).observe(time.perf_counter() - decoded_at)
    return image, detections
