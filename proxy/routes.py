"""The API's own routes: /classify, the page, health, readiness, models, metrics and the OpenAPI description."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, request, send_from_directory

from proxy import answers, metrics
from proxy.errors import InvalidImage, ProxyError, UnsupportedMediaType
from proxy.pipeline import detect
from proxy.request import classify_request
from proxy.services import Services

log = logging.getLogger(__name__)

api = Blueprint("api", __name__)

STATIC = Path(__file__).with_name("static")
OPENAPI_PATH = Path(__file__).with_name("openapi.json")


def services() -> Services:
    """The current app's services."""
    found: Services = current_app.extensions["classifyobjects"]
    return found


def deadline() -> float:
    """When this request's calls to the model must be done (``time.monotonic()``): REQUEST_TIMEOUT_S from now."""
    return time.monotonic() + services().settings.request_timeout_s


def json_response(body: Any, status: int = 200) -> Response:
    """A JSON answer with its Content-Length (never chunked: some DeepStack clients cannot read chunked JSON)."""
    response = current_app.json.response(body)
    response.status_code = status
    return response  # type: ignore[return-value]  # flask's json provider returns the app's Response class


@api.post("/classify")
def classify() -> Response:
    """Counts, verbose detections or the annotated picture for the posted image; a list for a JSON batch."""
    found = services()
    asked = classify_request(request, found.settings)
    model = found.model(asked.model)
    results = detect(asked.images, model, asked.options, found.image_limits, deadline())
    if asked.batch:
        return json_response(answers.batch(results, detailed=asked.output == "verbose"))
    result = results[0]
    if isinstance(result, InvalidImage) and asked.declared_non_image:
        raise UnsupportedMediaType(
            f"Content-Type {request.mimetype} is not an image type and the body is not a decodable image; "
            "send image/jpeg or image/png bytes, or JSON with the image base64 in 'image'"
        )
    if isinstance(result, ProxyError):
        raise result
    if asked.picture_format is not None:
        return Response(answers.picture(result, asked.picture_format), mimetype=f"image/{asked.picture_format.lower()}")
    return json_response(answers.verbose(result) if asked.output == "verbose" else answers.counts(result))


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
    found = services()
    statuses = {name: model.backend.status() for name, model in found.models.items()}
    default = statuses[found.default.name]
    ready = all(status.ready for status in statuses.values())
    body: dict[str, Any] = {"ready": ready, "model": found.default.name, "version": default.version}
    if ready:
        return json_response(body)
    body["error"] = "; ".join(f"{name}: {s.detail}" for name, s in statuses.items() if not s.ready)
    response = json_response(body, 503)
    response.headers["Retry-After"] = "5"
    return response


@api.get("/v1/models")
def models() -> Response:
    """Every model served, the default first, with its classes, versions and their states."""
    found = services()
    listing = []
    for name, model in found.models.items():
        labels = model.backend.labels()
        entry: dict[str, Any] = {"name": name, "default": name == found.default.name}
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
