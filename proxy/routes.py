"""The API's own routes: /classify, the page, health, readiness, metrics and the OpenAPI description."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Blueprint, Response, jsonify, request, send_from_directory

from proxy.annotate import annotate, encode
from proxy.detections import count_by_class, verbose_list
from proxy.errors import ProxyError
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
    model = found.model(request.args.get("model"))
    labels = model.labels
    threshold = parse_threshold(request.args.get("threshold"), found.settings.default_threshold)
    verbose = parse_flag("verbose", request.args.get("verbose"))
    classes = parse_classes(request.args.get("classes"), labels.lower_names)
    output = parse_format(request.args.get("format"), _accepted_image_format())
    image, detections = detect(image_bytes(), model, keep_original=output != "json")
    kept = detections.above(threshold)
    if classes is not None:
        kept = kept.of_classes(classes, labels)
    if output != "json":
        assert image.original is not None
        picture = annotate(image.original, kept, labels)
        return Response(encode(picture, output), mimetype=f"image/{output.lower()}")
    if verbose:
        return jsonify(verbose_list(kept, labels))
    return jsonify(count_by_class(kept, labels))


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
    """Readiness: every model can answer now. The body names the default model and its version."""
    found = services()
    statuses = {name: model.backend.status() for name, model in found.models.items()}
    default = statuses[found.default.name]
    ready = all(status.ready for status in statuses.values())
    body: dict[str, Any] = {"ready": ready, "model": found.default.name, "version": default.version}
    if not ready:
        body["error"] = "; ".join(f"{name}: {s.detail}" for name, s in statuses.items() if not s.ready)
    return jsonify(body), 200 if ready else 503


@api.get("/v1/models")
def models() -> Response:
    """Every model served, the default first, with its versions and their states."""
    listing = []
    for name, model in services().models.items():
        entry: dict[str, Any] = {"name": name, "default": name == services().default.name, "classes": len(model.labels)}
        try:
            entry["versions"] = [
                {"version": v.version, "state": v.state, **({"error": v.error} if v.error else {})}
                for v in model.backend.versions()
            ]
        except ProxyError as exc:
            entry["versions"] = []
            entry["error"] = exc.message
        listing.append(entry)
    return jsonify({"models": listing})


@api.get("/metrics")
def metrics() -> Response:
    """Prometheus metrics of every worker."""
    payload, content_type = metrics_payload()
    return Response(payload, content_type=content_type)


@api.get("/openapi.json")
def openapi() -> Response:
    """The OpenAPI 3.1 description of this API."""
    return Response(OPENAPI_PATH.read_bytes(), mimetype="application/json")
