"""The API's own routes: /classify, the page, health, readiness, models, metrics and the OpenAPI description."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, request, send_from_directory

from proxy import answers, metrics
from proxy.context import check_preset, current_services, detection_for, json_response
from proxy.errors import InvalidImage, Misconfigured, ProxyError, UnsupportedMediaType
from proxy.pipeline import detect
from proxy.request import Output, classify_request

log = logging.getLogger(__name__)

api = Blueprint("api", __name__)

STATIC = Path(__file__).with_name("static")
OPENAPI_PATH = Path(__file__).with_name("openapi.json")


@api.post("/classify")
def classify() -> Response:
    """Counts, verbose detections or the annotated picture for the posted image; a list for a JSON batch."""
    asked = classify_request(request, current_services().settings)
    model, context = detection_for(asked)
    results = detect(asked.images, model, asked.options, context)
    if asked.batch:
        return json_response(answers.batch(results, detailed=asked.output is Output.VERBOSE))
    result = results[0]
    if isinstance(result, InvalidImage) and asked.declared_non_image and asked.images[0].data:  # bytes, not none
        raise UnsupportedMediaType(
            f"Content-Type {request.mimetype} is not an image type and the body is not a decodable image; "
            "send image/jpeg or image/png bytes, or JSON with the image base64 in 'image'"
        )
    if isinstance(result, ProxyError):
        raise result
    picture_format = asked.output.picture_format
    if picture_format is not None:
        return Response(answers.picture(result, picture_format), mimetype=f"image/{picture_format.lower()}")
    return json_response(answers.verbose(result) if asked.output is Output.VERBOSE else answers.counts(result))


@api.get("/")
def page() -> Response:
    """The page to try the model in a browser."""
    return send_from_directory(STATIC, "index.html")


@api.get("/healthz")
def healthz() -> Response:
    """Liveness: the process answers."""
    return json_response({"status": "ok"})


@api.get("/readyz")
def readyz() -> Response:
    """Readiness: every model can answer now. The body names the default model and its version."""
    services = current_services()
    statuses = services.statuses()
    default = statuses[services.default.name]
    ready = all(status.ready for status in statuses.values())
    body: dict[str, Any] = {"ready": ready, "model": services.default.name, "version": default.version}
    # A ready model may still report a newer version that failed to load: it is said, not hidden.
    warnings = [f"{name}: {s.detail}" for name, s in statuses.items() if s.ready and s.detail]
    if warnings:
        body["warning"] = "; ".join(warnings)
    if ready:
        return json_response(body)
    body["error"] = "; ".join(f"{name}: {s.detail}" for name, s in statuses.items() if not s.ready)
    response = json_response(body, 503)
    response.headers["Retry-After"] = "5"
    return response


@api.get("/v1/models")
def models() -> Response:
    """Every model served, the default first, with its classes, versions and their states."""
    services = current_services()
    listing = []
    for name, model in services.models.items():
        labels = model.backend.labels()
        entry: dict[str, Any] = {"name": name, "default": name == services.default.name}
        entry["classes"] = len(labels) if labels is not None else None
        try:
            entry["versions"] = [
                {"version": v.version, "state": v.state, **({"error": v.error} if v.error else {})}
                for v in model.backend.versions()
            ]
        except ProxyError as exc:
            entry["versions"] = []
            entry["error"] = exc.message
        listing.append(entry)
    for preset in services.settings.presets:
        base = next(entry for entry in listing if entry["name"] == preset.model)
        entry = {"name": preset.name, "default": False, "preset_of": preset.model, "options": preset.query}
        entry.update({key: base[key] for key in ("classes", "versions", "error") if key in base})
        try:
            check_preset(preset, services.model(preset.model).backend.labels())
        except Misconfigured as exc:
            entry["error"] = exc.message
        listing.append(entry)
    return json_response({"models": listing})


@api.get("/metrics", endpoint="metrics")
def metrics_route() -> Response:
    """Prometheus metrics of every worker."""
    payload, content_type = metrics.payload()
    return Response(payload, content_type=content_type)


@api.get("/openapi.json")
def openapi() -> Response:
    """The OpenAPI 3.1 description of this API."""
    return Response(OPENAPI_PATH.read_bytes(), mimetype="application/json")
