"""The API's own routes: /classify, the page, health, readiness, metrics and the OpenAPI description."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Blueprint, Response, jsonify, request, send_from_directory

from proxy.annotate import annotate, encode
from proxy.detections import count_by_class, verbose_list
from proxy.observability import metrics_payload
from proxy.params import parse_classes, parse_flag, parse_format, parse_threshold
from proxy.pipeline import detect, image_bytes, services

api = Blueprint("api", __name__)

STATIC = Path(__file__).with_name("static")
OPENAPI_PATH = Path(__file__).with_name("openapi.json")
_IMAGE_TYPES = {"image/jpeg": "JPEG", "image/png": "PNG"}


@api.post("/classify")
def classify() -> Response:
    """Counts, verbose detections or the annotated picture for the posted image."""
    found = services()
    threshold = parse_threshold(request.args.get("threshold"), found.settings.default_threshold)
    verbose = parse_flag("verbose", request.args.get("verbose"))
    classes = parse_classes(request.args.get("classes"), found.labels.lower_names)
    output = parse_format(request.args.get("format"), _accepted_image_format())
    image, detections = detect(image_bytes(), keep_original=output != "json")
    kept = detections.above(threshold)
    if classes is not None:
        kept = kept.of_classes(classes, found.labels)
    if output != "json":
        assert image.original is not None
        picture = annotate(image.original, kept, found.labels)
        return Response(encode(picture, output), mimetype=f"image/{output.lower()}")
    if verbose:
        return jsonify(verbose_list(kept, found.labels, threshold))
    return jsonify(count_by_class(kept, found.labels, threshold))


def _accepted_image_format() -> str | None:
    """JPEG or PNG when the Accept header prefers that image type to JSON."""
    accept = request.accept_mimetypes
    best = accept.best_match(["application/json", *_IMAGE_TYPES])
    if best in _IMAGE_TYPES and accept.quality(best) > accept.quality("application/json"):
        return _IMAGE_TYPES[best]
    return None


@api.get("/")
def page() -> Response:
    """The page to try the model in a browser."""
    return send_from_directory(STATIC, "index.html")


@api.get("/healthz")
def healthz() -> Response:
    """Liveness: the process answers."""
    return jsonify({"status": "ok"})


@api.get("/readyz")
def readyz() -> tuple[Response, int]:
    """Readiness: the model can answer now."""
    found = services()
    status = found.backend.status()
    body: dict[str, Any] = {"ready": status.ready, "model": found.settings.model_name, "version": status.version}
    if not status.ready:
        body["error"] = status.detail
    return jsonify(body), 200 if status.ready else 503


@api.get("/metrics")
def metrics() -> Response:
    """Prometheus metrics of every worker."""
    payload, content_type = metrics_payload()
    return Response(payload, content_type=content_type)


@api.get("/openapi.json")
def openapi() -> Response:
    """The OpenAPI 3.1 description of this API."""
    return Response(OPENAPI_PATH.read_bytes(), mimetype="application/json")
