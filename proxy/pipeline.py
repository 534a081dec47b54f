"""The core: (frames, model, options) → one answer's material per frame. No HTTP here.

    bytes ──ImageInput──► header checked ──plan──► the views the model sees ──backend.predict──► Predictions
             (413/400 early)               (the frame or its region,         (pixels or bytes,
                                            and its tiles at full size)       as the model wants)
          ──in_frame──► Raw (each view's detections in the frame's coordinates) ──refine──► Found

A frame's ``Raw`` is what the model answered for it; the frame cache (``proxy.framecache``) keeps it a few seconds,
so the same bytes for the same model and shape (``tile``, ``roi``) are one model call, whichever worker gets them.
``refine`` applies the steps in their one order: thresholds (a class's own where one is named), the merge of a tiled
frame's views, class-agnostic merging, the class filter, the N best.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from proxy.backends import Model, Prediction
from proxy.detections import Detections
from proxy.errors import PayloadTooLarge, ProxyError
from proxy.framecache import FrameCache
from proxy.images import Box, ImageInput, ImageLimits, ModelImage
from proxy.labels import LabelMap
from proxy.metrics import DECODE_SECONDS, FRAME_CACHE, IMAGE_BYTES, IMAGE_PIXELS, time_backend
from proxy.tiles import tile_boxes

Roi = tuple[float, float, float, float]  # x1, y1, x2, y2, normalized to the upright picture


@dataclass(frozen=True)
class Frame:
    """One request image and what shapes the model's input for it: tiles of ``tile`` pixels, a region."""

    data: bytes | ProxyError  # the image's bytes, or why they could not be read (a batch element)
    tile: int | None = None
    roi: Roi | None = None

    @property
    def shape(self) -> str:
        """The input-shaping options as the frame cache's key holds them."""
        return f"tile={self.tile or 0}&roi={','.join(f'{v:g}' for v in self.roi) if self.roi else ''}"


@dataclass(frozen=True)
class Options:
    """What a request asks of the detections, parsed and checked by the HTTP layer."""

    threshold: float
    class_thresholds: tuple[tuple[str, float], ...] | None = None  # names as answers show them (any case)
    iou_threshold: float | None = None  # None: the model's own output stands
    classes: tuple[str, ...] | None = None  # names as answers show them (any case), or "Class N"
    max_detections: int | None = None
    picture: bool = False  # keep the full-size upright picture, to draw the detections on


@dataclass(frozen=True)
class Context:
    """What a request's detection runs within: the image limits, its deadline, the tile cap, the frame cache."""

    limits: ImageLimits
    deadline: float
    max_tiles: int = 64
    calls_per_request: int = 1  # the tiles of a frame in flight at once (CallLimit.per_request)
    cache: FrameCache | None = None


@dataclass(frozen=True)
class Raw:
    """What the model answered for one frame: each view's detections in the frame's coordinates (the whole frame or
    its region first, then the tiles), with the label map and version of the model that answered."""

    views: tuple[Detections, ...]
    labels: LabelMap
    version: int | None
    inference_s: float

    @property
    def tiled(self) -> bool:
        """True when the frame was seen as tiles too."""
        return len(self.views) > 1


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
    region: Roi | None = None  # the region of interest, to draw on the picture


@dataclass
class _Plan:
    """One frame's views: the boxes (upright pixels) the model sees, the first the whole frame or its region."""

    image: ImageInput
    frame: Frame
    boxes: list[Box] = field(default_factory=list)

    @property
    def views(self) -> list[ModelImage]:
        return [self.image.view(box) for box in self.boxes]


def detect(frames: Sequence[Frame], model: Model, options: Options, context: Context) -> list[Found | ProxyError]:
    """One result per frame, in order: what it holds, or the error it met (other frames are unaffected).

    Errors of the request as a whole are raised: an unknown class, a model that is not ready, too many tiles.
    """
    known = model.backend.labels()
    if known is not None:
        _class_ids(known, options)  # an unknown class is a 400 before any model call
    opened = [_open(frame, context.limits, options) for frame in frames]
    plans = [item for item in opened if isinstance(item, _Plan)]
    tiles = sum(len(plan.boxes) - 1 for plan in plans)
    if tiles > context.max_tiles:
        raise PayloadTooLarge(f"the request asks for {tiles} tiles; the limit is {context.max_tiles} (MAX_TILES)")
    raws = iter(_predict(plans, model, context))
    results: list[Found | ProxyError] = []
    for item in opened:
        if not isinstance(item, _Plan):
            results.append(item)
            continue
        raw = next(raws)
        if isinstance(raw, ProxyError):
            results.append(raw)
            continue
        DECODE_SECONDS.observe(item.image.decode_s)
        per_class, wanted = _class_ids(raw.labels, options)
        results.append(_found(item, raw, refine(raw, options, per_class, wanted)))
    return results


def refine(
    raw: Raw, options: Options, per_class: Mapping[int, float] | None, class_ids: frozenset[int] | None
) -> Detections:
    """Thresholds, then the tiles' merge, then class-agnostic merging, then the class filter, then the N best: the
    one order, on every route."""
    views = [view.above(options.threshold, per_class) for view in raw.views]
    kept = Detections.joined(views).tiles_merged() if raw.tiled else views[0]
    if options.iou_threshold is not None:
        kept = kept.merged(options.iou_threshold)
    if class_ids is not None:
        kept = kept.of_classes(class_ids)
    if options.max_detections is not None:
        kept = kept.best(options.max_detections)
    return kept


def _class_ids(labels: LabelMap, options: Options) -> tuple[dict[int, float] | None, frozenset[int] | None]:
    """The class thresholds by id and the kept classes' ids, for one label map (versions may differ in a batch)."""
    per_class = None
    if options.class_thresholds:
        per_class = {}
        for name, threshold in options.class_thresholds:
            (class_id,) = labels.ids_of([name])
            per_class[class_id] = threshold
    wanted = labels.ids_of(options.classes) if options.classes is not None else None
    return per_class, wanted


def _open(frame: Frame, limits: ImageLimits, options: Options) -> _Plan | ProxyError:
    """The frame's header checked and its views planned, or the error it met."""
    if isinstance(frame.data, ProxyError):
        return frame.data
    try:
        image = ImageInput(frame.data, limits)
        IMAGE_BYTES.observe(len(frame.data))
        IMAGE_PIXELS.observe(image.size[0] * image.size[1])
        if options.picture:
            image.picture()  # first: the model's pixels are then scaled from it, not decoded again
    except ProxyError as exc:
        return exc
    region = _region_box(image.size, frame.roi)
    plan = _Plan(image, frame, [region])
    if frame.tile is not None:
        x0, y0 = region[0], region[1]
        plan.boxes += [
            (x0 + left, y0 + top, x0 + right, y0 + bottom)
            for left, top, right, bottom in tile_boxes(region[2] - x0, region[3] - y0, frame.tile)
        ]
    return plan


def _region_box(size: tuple[int, int], roi: Roi | None) -> Box:
    """The region of interest in the upright picture's pixels (at least one pixel each way), or the whole."""
    width, height = size
    if roi is None:
        return (0, 0, width, height)
    x0, y0 = min(width - 1, int(roi[0] * width)), min(height - 1, int(roi[1] * height))
    return (x0, y0, max(x0 + 1, round(roi[2] * width)), max(y0 + 1, round(roi[3] * height)))


def _predict(plans: list[_Plan], model: Model, context: Context) -> list[Raw | ProxyError]:
    """Each plan's Raw: from the frame cache for a single frame (one model call for the same bytes at once, across
    workers), else from the model, every view of every frame in flight together."""
    if context.cache is None or len(plans) != 1:
        return _run(plans, model, context)
    plan = plans[0]
    key = context.cache.key(plan.image.data, model.name, plan.frame.shape)
    try:
        raw, hit = context.cache.get_or_compute(
            key, lambda: _cacheable(_run(plans, model, context)[0]), context.deadline, encode=_encode, decode=_decode
        )
    except _Failed as failed:
        return [failed.error]
    FRAME_CACHE.labels(result="hit" if hit else "miss").inc()
    return [_as_hit(raw) if hit else raw]


class _Failed(Exception):
    """A model error, carried out of the cache's compute so that nothing is cached for it."""

    def __init__(self, error: ProxyError) -> None:
        super().__init__(error.message)
        self.error = error


def _cacheable(raw: Raw | ProxyError) -> Raw:
    if isinstance(raw, ProxyError):
        raise _Failed(raw)
    return raw


def _as_hit(raw: Raw) -> Raw:
    """A cached answer reports no inference time of its own: no model ran for this request."""
    return Raw(raw.views, raw.labels, raw.version, 0.0)


def _run(plans: list[_Plan], model: Model, context: Context) -> list[Raw | ProxyError]:
    """Every view of every plan through the model at once; tiled frames hold their full picture and their tiles'
    tensors in the decode budget meanwhile."""
    with ExitStack() as held:
        for plan in plans:
            if len(plan.boxes) > 1:
                decoded = plan.image.has_picture
                held.enter_context(_hold(plan, context, decoding=not decoded))
                plan.image.picture(counted=decoded)  # the tiles are cut from the full-size picture
        views = [view for plan in plans for view in plan.views]
        predictions = iter(model.backend.predict(views, context.deadline) if views else [])
        raws: list[Raw | ProxyError] = []
        for plan in plans:
            answers = [next(predictions) for _ in plan.boxes]
            raws.append(_raw(plan, answers, model))
    return raws


def _hold(plan: _Plan, context: Context, *, decoding: bool) -> AbstractContextManager[None]:
    """What a tiled frame holds of the decode budget while its tiles are in flight: its full-size picture (the
    decoding's peak, when it is still to be decoded) and the pixels and tensor of each tile in flight at once."""
    budget, limits = context.limits.budget, context.limits
    if budget is None:
        return nullcontext()
    width, height = plan.image.size
    tile = plan.frame.tile or 1
    side = min(tile, limits.max_side) if limits.max_side > 0 else tile
    in_flight = min(len(plan.boxes) - 1, context.calls_per_request)
    picture = plan.image.decoding_bytes(plan.image.size) if decoding else width * height * 4  # Pillow's RGB: 4 a pixel
    return budget.reserve(picture + in_flight * side * side * 3 * 2, f"a {width}x{height} image in tiles")


def _raw(plan: _Plan, answers: list[Prediction | ProxyError], model: Model) -> Raw | ProxyError:
    """The frame's views in its coordinates. A view of another model version than the first (a switch during the
    request) is left out: its class ids may mean other classes."""
    first = answers[0]
    if isinstance(first, ProxyError):
        return first
    width, height = plan.image.size
    views, seconds = [], 0.0
    for box, answer in zip(plan.boxes, answers, strict=True):
        if isinstance(answer, ProxyError):
            return answer
        if answer.version != first.version:
            continue
        time_backend(model.name, answer.inference_s)
        views.append(answer.detections.in_frame(box, width, height))
        seconds += answer.inference_s
    return Raw(tuple(views), first.labels, first.version, seconds)


def _found(plan: _Plan, raw: Raw, detections: Detections) -> Found:
    image = plan.image
    return Found(
        detections=detections,
        labels=raw.labels,
        size=image.size,
        picture=image.picture() if image.has_picture else None,
        version=raw.version,
        decode_s=image.decode_s,
        inference_s=raw.inference_s,
        region=plan.frame.roi,
    )


# -- the frame cache's entries ------------------------------------------------------------------------------------


def _encode(raw: Raw) -> bytes:
    """A Raw as bytes: a JSON head (version, timing, label map, each view's length), then the views' arrays."""
    head = json.dumps(
        {
            "version": raw.version,
            "inference_s": raw.inference_s,
            "labels": {str(class_id): name for class_id, name in raw.labels.names.items()},
            "views": [len(view) for view in raw.views],
        }
    ).encode()
    arrays = b"".join(
        np.ascontiguousarray(view.boxes, "<f4").tobytes()
        + np.ascontiguousarray(view.scores, "<f4").tobytes()
        + np.ascontiguousarray(view.classes, "<i8").tobytes()
        for view in raw.views
    )
    return struct.pack("<I", len(head)) + head + arrays


def _decode(data: bytes) -> Raw:
    """The Raw ``_encode`` wrote; ``ValueError`` for bytes it did not write."""
    try:
        (length,) = struct.unpack_from("<I", data)
        head = json.loads(data[4 : 4 + length])
        offset, views = 4 + length, []
        for count in head["views"]:
            boxes = np.frombuffer(data, "<f4", count * 4, offset).reshape(count, 4).astype(np.float32)
            offset += count * 16
            scores = np.frombuffer(data, "<f4", count, offset).astype(np.float32)
            offset += count * 4
            classes = np.frombuffer(data, "<i8", count, offset).astype(np.int64)
            offset += count * 8
            views.append(Detections(boxes, scores, classes))
        labels = LabelMap({int(class_id): str(name) for class_id, name in head["labels"].items()})
    except (struct.error, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a frame cache entry: {exc}") from None
    if offset != len(data):
        raise ValueError("not a frame cache entry: trailing bytes")
    return Raw(tuple(views), labels, head["version"], float(head["inference_s"]))
