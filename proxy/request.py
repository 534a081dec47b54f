"""The HTTP layer's reading: a request's body (raw, multipart or JSON) and parameters → one typed request object.

Nothing here knows of TF Serving or TensorFlow; the core (``proxy.pipeline``) takes these objects from the routes.
Multipart bodies are parsed here rather than by werkzeug's form parser: a part without a filename keeps its bytes
(werkzeug would decode it as text), the part count has its own limit and message, and looking for an ``api_key``
stops at that field.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from flask import Request
from werkzeug.http import parse_options_header
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData

from proxy.errors import InvalidImage, InvalidParameter, PayloadTooLarge, ProxyError
from proxy.params import (
    parse_class_thresholds,
    parse_classes,
    parse_count,
    parse_flag,
    parse_format,
    parse_fraction,
    parse_min_confidence,
    parse_roi,
    parse_threshold,
    parse_tile,
)
from proxy.pipeline import Frame, Options, Roi
from proxy.settings import Preset, Settings

IMAGE_FIELD = "image"  # the multipart field, as DeepStack clients and HTML forms name it
JSON_TYPES = frozenset({"application/json"})
_IMAGE_ACCEPT = {"image/jpeg": "JPEG", "image/png": "PNG"}
_DATA_URL = re.compile(r"^data:[\w.+/-]*(;[\w=.+-]+)*;base64,", re.IGNORECASE)
# Content types under which a client may well be sending an image without saying so precisely: curl's
# --data-binary default (form-urlencoded), generic binary, or none at all.
_NEUTRAL_TYPES = frozenset({"", "application/octet-stream", "application/x-www-form-urlencoded"})


@dataclass(frozen=True)
class Part:
    """One part of a multipart body."""

    name: str
    filename: str | None
    content_type: str | None
    data: bytes


class Output(enum.Enum):
    """What a detection request is answered with."""

    COUNTS = "counts"  # {"Dog": 2}
    VERBOSE = "verbose"  # the list of detections
    JPEG = "JPEG"  # the annotated picture
    PNG = "PNG"
    VISION = "vision"  # DeepStack's and CodeProject.AI's answer

    @property
    def picture_format(self) -> str | None:
        """JPEG or PNG when the answer is the annotated picture."""
        return self.value if self in (Output.JPEG, Output.PNG) else None

    @classmethod
    def json(cls, *, verbose: bool) -> Output:
        """The JSON answer of /classify."""
        return cls.VERBOSE if verbose else cls.COUNTS


@dataclass(frozen=True)
class DetectRequest:
    """A detection request as the routes hand it to the core."""

    images: tuple[Frame, ...]  # per image: its bytes (or why they could not be read) and its tiles and region
    batch: bool  # a JSON ``images`` list: the answer is a list too
    model: str | None  # the served model (a preset's own model when a preset was named)
    options: Options
    output: Output
    declared_non_image: bool  # a raw body declared as a non-image type: not decoding is then a 415
    preset: Preset | None = None


Lookup = Callable[[str], "str | None"]


def _lookup(preset: Preset | None, *sources: Callable[[str], str | None]) -> Lookup:
    """A parameter's raw value: the preset's when it names it (the operator's options win), else the first source's
    that has it."""
    overrides = dict(preset.options) if preset is not None else {}

    def value(name: str) -> str | None:
        if name in overrides:
            return overrides[name]
        for source in sources:
            found = source(name)
            if found is not None:
                return found
        return None

    return value


def _resolve(settings: Settings, name: str | None) -> tuple[str | None, Preset | None]:
    """The served model a name means, and the preset it names, if it is one."""
    preset = settings.preset(name)
    return (preset.model, preset) if preset is not None else (name, None)


def _detection_options(value: Lookup, threshold: float, max_detections: int | None, picture: bool) -> Options:
    """The options every detection route reads alike (the threshold is the route's own)."""
    return Options(
        threshold=threshold,
        class_thresholds=parse_class_thresholds(value("thresholds")),
        iou_threshold=parse_fraction("iou_threshold", value("iou_threshold"), None),
        classes=parse_classes(value("classes")),
        max_detections=max_detections,
        picture=picture,
    )


def classify_request(request: Request, settings: Settings) -> DetectRequest:
    """``POST /classify``: query parameters, and the image(s) from the raw body, a multipart upload or JSON."""
    # A plain dict of each parameter's first value, as MultiDict.get gives it: MultiDict.get raises and catches an
    # exception for every parameter a request does not name, most of them on every request.
    args = request.args.to_dict()
    model, preset = _resolve(settings, args.get("model"))
    value = _lookup(preset, args.get)
    verbose = parse_flag("verbose", args.get("verbose"))
    picture = parse_format(args.get("format"))
    if picture in ("JPEG", "PNG") and verbose:
        raise InvalidParameter(f"verbose=true asks for JSON but format={args.get('format')} asks for a picture")
    if picture is None and not verbose:
        picture = _accepted_picture(request)
    output = Output(picture) if picture in ("JPEG", "PNG") else Output.json(verbose=verbose)
    tile, roi = parse_tile(value("tile")), parse_roi(value("roi"))
    mimetype = (request.mimetype or "").lower()
    if mimetype in JSON_TYPES:
        elements, batch = read_json_images(request.get_data(cache=False), settings.max_batch_images)
        images = tuple(_json_frame(element, preset, tile, roi) for element in elements)
        if batch and picture in ("JPEG", "PNG") and args.get("format") is not None:
            raise InvalidParameter("a batch answers JSON only: drop format=image for a batch")
        if batch:
            output = Output.json(verbose=verbose)  # an Accept header's picture preference yields to JSON
    elif mimetype == "multipart/form-data":
        images, batch = (Frame(multipart_image(request, settings), tile, roi),), False
    else:
        images, batch = (Frame(request.get_data(cache=False), tile, roi),), False
    threshold = parse_threshold(value("threshold"), settings.default_threshold)
    max_detections = parse_count("max_detections", value("max_detections"))
    options = _detection_options(value, threshold, max_detections, output.picture_format is not None)
    declared_non_image = (
        mimetype not in _NEUTRAL_TYPES
        and mimetype not in JSON_TYPES
        and not mimetype.startswith(("image/", "multipart/"))
    )
    return DetectRequest(images, batch, model, options, output, declared_non_image, preset)


def _json_frame(element: JsonImage, preset: Preset | None, tile: int | None, roi: Roi | None) -> Frame:
    """A JSON image's frame: its own tile and region, where it gives them, over the request's; a preset's over all."""
    own = _lookup(preset, {"tile": element.tile, "roi": element.roi}.get)
    try:
        own_tile = parse_tile(own("tile")) if own("tile") is not None else tile
        own_roi = parse_roi(own("roi")) if own("roi") is not None else roi
    except InvalidParameter as exc:
        raise InvalidParameter(f"{element.where}: {exc.message}") from None
    return Frame(element.data, own_tile, own_roi)


def vision_request(request: Request, settings: Settings, model: str | None) -> DetectRequest:
    """``POST /v1/vision/detection`` and ``/v1/vision/custom/NAME``: DeepStack's and CodeProject.AI's form fields
    (query parameters too, as CodeProject.AI reads both), the image from the multipart body."""
    model, preset = _resolve(settings, model)
    mimetype = (request.mimetype or "").lower()
    if mimetype == "multipart/form-data":
        parts = multipart_parts(request, settings)
        image = _image_part(parts)
        fields: dict[str, str] = {}
        for part in parts:
            if part.filename is None and part.name != IMAGE_FIELD:
                fields.setdefault(part.name, _text(part))  # a field sent twice: its first value, as a query's
    else:
        # A raw image body is read as the picture; a urlencoded or JSON body cannot carry one.
        body = request.get_data(cache=False)
        image = body if body and mimetype not in ("application/x-www-form-urlencoded", *JSON_TYPES) else None
        fields = {}
    if image is None:
        raise InvalidImage("No valid image file found")
    value = _lookup(preset, fields.get, request.args.to_dict().get)
    # A preset's threshold is the operator's, over DeepStack's min_confidence (which Blue Iris always sends).
    if preset is not None and dict(preset.options).get("threshold") is not None:
        threshold = parse_threshold(value("threshold"), 0.0)
    else:
        threshold = parse_min_confidence(value("min_confidence"))
    max_detections = parse_count("max_detections", value("max_detections"))
    if max_detections is None:
        max_detections = settings.vision_max_detections
    options = _detection_options(value, threshold, max_detections, picture=False)
    frame = Frame(image, parse_tile(value("tile")), parse_roi(value("roi")))
    return DetectRequest((frame,), False, model, options, Output.VISION, False, preset)


def _accepted_picture(request: Request) -> str | None:
    """JPEG or PNG when the Accept header prefers that image type to JSON."""
    if request.environ.get("HTTP_ACCEPT", "*/*") in ("*/*", "application/json", ""):
        return None  # what most clients send (curl's, requests' and the DeepStack clients' */*), without parsing
    accept = request.accept_mimetypes
    best = accept.best_match(["application/json", *_IMAGE_ACCEPT])
    if best in _IMAGE_ACCEPT and accept.quality(best) > accept.quality("application/json"):
        return _IMAGE_ACCEPT[best]
    return None


# -- JSON ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JsonImage:
    """One image of a JSON body: its bytes (or why they could not be read), and the options it gives itself."""

    data: bytes | ProxyError
    where: str  # "image", or "images[3]"
    tile: str | None = None
    roi: str | None = None


def read_json_images(body: bytes, max_images: int) -> tuple[tuple[JsonImage, ...], bool]:
    """``{"image": "<base64>"}`` or ``{"images": [...]}`` → the images, and whether it is a batch. A batch element is
    a base64 string, or an object ``{"image": "<base64>", "tile": 640, "roi": "x1,y1,x2,y2"}`` (so is the single
    body); ``roi`` may also be a list of four numbers.

    In a batch, an element that is not valid base64 becomes that element's error; everything else wrong with the
    body is a 400 (or a 413 for too many images) for the request as a whole.
    """
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidParameter(f"malformed JSON body: {exc}"[:200]) from None
    if not isinstance(document, dict):
        raise InvalidParameter('the JSON body must be an object: {"image": "<base64>"} or {"images": [...]}')
    if "url" in document or "urls" in document:
        raise InvalidParameter(
            "this server never fetches images from URLs on a client's behalf; send the image itself, base64, "
            'in "image"'
        )
    has_one, has_many = "image" in document, "images" in document
    if has_one == has_many:
        raise InvalidParameter('the JSON body needs exactly one of "image" (one base64 string) or "images" (a list)')
    if has_one:
        if not isinstance(document["image"], str):
            raise InvalidParameter('"image" must be a base64 string')
        single = _json_image(document, "image")
        if isinstance(single.data, ProxyError):
            raise single.data
        return (single,), False
    images = document["images"]
    if not isinstance(images, list) or not images:
        raise InvalidParameter('"images" must be a non-empty list of base64 strings')
    if len(images) > max_images:
        raise PayloadTooLarge(f"the batch holds {len(images)} images; the limit is {max_images} (MAX_BATCH_IMAGES)")
    return tuple(_json_image(image, f"images[{index}]") for index, image in enumerate(images)), True


def _json_image(element: object, where: str) -> JsonImage:
    """One JSON image: a base64 string, or an object holding one in ``image`` and its options."""
    if isinstance(element, str):
        return JsonImage(_decoded_or_error(element, where), where)
    if not isinstance(element, dict) or not isinstance(element.get("image"), str):
        raise InvalidParameter(
            f'"images" must hold base64 strings or objects with the base64 string in "image"; {where} is neither'
        )
    unknown = sorted(set(element) - {"image", "tile", "roi"})
    if unknown:
        raise InvalidParameter(f"{where} has {', '.join(map(repr, unknown))[:100]}; an image takes tile and roi")
    return JsonImage(
        _decoded_or_error(element["image"], where),
        where,
        tile=_json_option(element.get("tile"), where, "tile"),
        roi=_json_option(element.get("roi"), where, "roi"),
    )


def _json_option(value: object, where: str, name: str) -> str | None:
    """A JSON option as the text its parser reads: a number, a string, or (roi) a list of numbers."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        raise InvalidParameter(f"{where}.{name} must be a number or a string")
    if isinstance(value, (int, float)):
        return str(value)
    if name == "roi" and isinstance(value, list) and all(isinstance(v, (int, float)) for v in value):
        return ",".join(str(v) for v in value)
    raise InvalidParameter(f"{where}.{name} must be {'a list of four numbers or ' if name == 'roi' else ''}a string")


def decode_base64(text: str, where: str) -> bytes:
    """Base64 in the standard or URL-safe alphabet, padding optional, with or without a ``data:`` URL prefix."""
    payload = _DATA_URL.sub("", text.strip(), count=1)
    payload = "".join(payload.split())  # MIME-style line breaks
    if "-" in payload or "_" in payload:
        payload = payload.replace("-", "+").replace("_", "/")
    payload += "=" * (-len(payload) % 4)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidImage(f"{where} is not valid base64: {exc}") from None


def _decoded_or_error(text: str, where: str) -> bytes | ProxyError:
    try:
        return decode_base64(text, where)
    except ProxyError as exc:
        return exc


# -- multipart ----------------------------------------------------------------------------------------------------


def multipart_image(request: Request, settings: Settings) -> bytes:
    """The image of a multipart upload: the field ``image``, else the first file part whatever its name."""
    image = _image_part(multipart_parts(request, settings))
    if image is None:
        raise InvalidImage(f"multipart upload without an image: send it in the field {IMAGE_FIELD!r}")
    return image


def multipart_parts(request: Request, settings: Settings) -> list[Part]:
    """Every part of the request's multipart body."""
    return list(iter_parts(request.get_data(cache=False), request.content_type or "", settings.max_form_parts))


def iter_parts(
    body: bytes, content_type: str, max_parts: int, *, keep: Callable[[str], bool] | None = None
) -> Iterator[Part]:
    """The parts of a multipart body in order. ``keep(name)`` may say a part's bytes are not wanted (they are then
    skipped, not copied). More than ``max_parts`` parts is a 413 naming MAX_FORM_PARTS."""
    _, options = parse_options_header(content_type)
    boundary = options.get("boundary")
    if not boundary:
        raise InvalidParameter("multipart/form-data without a boundary parameter in its Content-Type")
    try:
        decoder = MultipartDecoder(boundary.encode("latin-1"), max_form_memory_size=None)
    except UnicodeEncodeError:
        raise InvalidParameter("multipart/form-data with a boundary that is not latin-1 text") from None
    decoder.receive_data(body)
    decoder.receive_data(None)
    count = 0
    current: tuple[str, str | None, str | None] | None = None
    chunks: list[bytes] = []
    wanted = True
    try:
        while True:
            event = decoder.next_event()
            if isinstance(event, (Epilogue, NeedData)):
                if current is not None or isinstance(event, NeedData):
                    raise InvalidParameter("malformed multipart body: it ends inside a part")
                return
            if isinstance(event, (Field, File)):
                count += 1
                if count > max_parts:
                    raise PayloadTooLarge(f"the multipart body has more than {max_parts} parts (MAX_FORM_PARTS)")
                filename = event.filename if isinstance(event, File) else None
                current = (event.name, filename, event.headers.get("content-type"))
                wanted = keep is None or keep(event.name)
                chunks = []
            elif isinstance(event, Data) and current is not None:
                if wanted:
                    chunks.append(event.data)
                if not event.more_data:
                    yield Part(*current, data=b"".join(chunks))
                    current = None
    except ValueError as exc:
        raise InvalidParameter(f"malformed multipart body: {exc}") from None


def form_field(body: bytes, content_type: str, name: str, max_parts: int) -> str | None:
    """One form field of a multipart body (the ``api_key`` DeepStack clients send), reading no further than it."""
    for part in iter_parts(body, content_type, max_parts, keep=lambda field: field == name):
        if part.name == name and part.filename is None:
            return _text(part)
    return None


def _image_part(parts: list[Part]) -> bytes | None:
    named = next((part for part in parts if part.name == IMAGE_FIELD), None)
    if named is None:
        named = next((part for part in parts if part.filename is not None), None)
    return named.data if named is not None else None


def _text(part: Part) -> str:
    return part.data.decode("utf-8", errors="replace")
