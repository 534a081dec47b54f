"""The core: (images, model, options) → one answer's material per image. No HTTP here.

    bytes ──ImageInput──► header checked ──backend.predict──► Prediction ──refine──► Found
                          (413/400 early)   (pixels or bytes,   (detections and the label
                                             as the model wants) map of the version that answered)

``refine`` applies the steps in their one order: threshold, class-agnostic merging, the class filter, the N best.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from proxy.backends import Model, Prediction
from proxy.detections import Detections
from proxy.errors import ProxyError
from proxy.images import ImageInput, ImageLimits
from proxy.labels import LabelMap
from proxy.metrics import BACKEND_SECONDS, DECODE_SECONDS, IMAGE_BYTES, IMAGE_PIXELS


@dataclass(frozen=True)
class Options:
    """What a request asks of the detections, parsed and checked by the HTTP layer."""

    threshold: float
    iou_threshold: float | None = None  # None: the model's own output stands
    classes: tuple[str, ...] | None = None  # names as answers show them (any case), or "Class N"
    max_detections: int | None = None
    picture: bool = False  # keep the full-size upright picture, to draw the detections on


@dataclass(frozen=True)
class Found:
    """One image's answer material: its refined detections and what answers report about it."""

    detections: Detections
    labels: LabelMap
    size: tuple[int, int]  # (width, height) of the upright picture as sent
    picture: Image.Image | None
    version: int | None
    decode_s: float
    inference_s: float


def detect(
    images: Sequence[bytes | ProxyError], model: Model, options: Options, limits: ImageLimits, deadline: float
) -> list[Found | ProxyError]:
    """One result per image, in order: what it holds, or the error it met (other images are unaffected).

    Errors of the request as a whole are raised: an unknown class, a model that is not ready.
    """
    if options.classes is not None:
        known = model.backend.labels()
        if known is not None:
            known.ids_of(options.classes)  # an unknown class is a 400 before any model call
    opened = [_open(image, limits, options) for image in images]
    ready = [image for image in opened if isinstance(image, ImageInput)]
    predictions = iter(model.backend.predict(ready, deadline) if ready else [])
    class_ids: dict[int, frozenset[int]] = {}
    results: list[Found | ProxyError] = []
    for image in opened:
        if not isinstance(image, ImageInput):
            results.append(image)
            continue
        prediction = next(predictions)
        if isinstance(prediction, ProxyError):
            results.append(prediction)
            continue
        BACKEND_SECONDS.labels(model=model.name).observe(prediction.inference_s)
        DECODE_SECONDS.observe(image.decode_s)
        wanted = None
        if options.classes is not None:
            # Names become ids once per label map (versions may differ in a batch during a switch).
            key = id(prediction.labels)
            if key not in class_ids:
                class_ids[key] = prediction.labels.ids_of(options.classes)
            wanted = class_ids[key]
        results.append(_found(image, prediction, refine(prediction.detections, options, wanted)))
    return results


def refine(detections: Detections, options: Options, class_ids: frozenset[int] | None) -> Detections:
    """Threshold, then merging, then the class filter, then the N best: the one order, on every route."""
    kept = detections.above(options.threshold)
    if options.iou_threshold is not None:
        kept = kept.merged(options.iou_threshold)
    if class_ids is not None:
        kept = kept.of_classes(class_ids)
    if options.max_detections is not None:
        kept = kept.best(options.max_detections)
    return kept


def _open(image: bytes | ProxyError, limits: ImageLimits, options: Options) -> ImageInput | ProxyError:
    if isinstance(image, ProxyError):
        return image
    try:
        opened = ImageInput(image, limits)
        IMAGE_BYTES.observe(len(image))
        IMAGE_PIXELS.observe(opened.size[0] * opened.size[1])
        if options.picture:
            opened.picture()  # first: the model's pixels are then scaled from it, not decoded again
    except ProxyError as exc:
        return exc
    return opened


def _found(image: ImageInput, prediction: Prediction, detections: Detections) -> Found:
    return Found(
        detections=detections,
        labels=prediction.labels,
        size=image.size,
        picture=image.picture() if image.has_picture else None,
        version=prediction.version,
        decode_s=image.decode_s,
        inference_s=prediction.inference_s,
    )
