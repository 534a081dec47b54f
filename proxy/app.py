"""The Flask application factory and its routes."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as WerkzeugResponse

from proxy.backends import Backend, make_backend
from proxy.detections import count_by_class, verbose_list
from proxy.errors import InvalidImage, ProxyError, UnsupportedMediaType
from proxy.images import decode_image
from proxy.labels import LabelMap, load_label_map
from proxy.params import parse_flag, parse_threshold
from proxy.settings import Settings

log = logging.getLogger(__name__)

# Content types under which a client may well be sending an image without saying so precisely: curl's
# --data-binary default (form-urlencoded), generic binary, or none at all.
_NEUTRAL_TYPES = frozenset({"", "application/octet-stream", "application/x-www-form-urlencoded"})


def create_app(
    settings: Settings | None = None,
    *,
    backend: Backend | None = None,
    labels: LabelMap | None = None,
) -> Flask:
    """Build the app: settings from the environment unless given; the label map is read (and checked) now."""
    settings = settings or Settings.from_env()
    labels = labels or load_label_map(settings.label_map_path)
    backend = backend or make_backend(settings)

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]  # answers keep the model's score order
    app.extensions["classifyobjects"] = {"settings": settings, "backend": backend, "labels": labels}

    @app.post("/classify")
    def classify() -> Response:
        threshold = parse_threshold(request.args.get("threshold"), settings.default_threshold)
        verbose = parse_flag("verbose", request.args.get("verbose"))
        image = _decode_body(settings)
        detections = backend.predict(image)
        if verbose:
            return jsonify(verbose_list(detections, labels, threshold))
        return jsonify(count_by_class(detections, labels, threshold))

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify({"status": "ok"})

    @app.get("/readyz")
    def readyz() -> tuple[Response, int]:
        status = backend.status()
        body: dict[str, Any] = {
            "ready": status.ready,
            "model": settings.model_name,
            "version": status.version,
        }
        if not status.ready:
            body["error"] = status.detail
        return jsonify(body), 200 if status.ready else 503

    _register_error_handlers(app)

    @app.after_request
    def security_headers(response: Response) -> Response:
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    backend.start()
    return app


def _decode_body(settings: Settings) -> Any:
    """The request body decoded to an RGB array; the Content-Type only matters when the bytes do not decode."""
    data = request.get_data(cache=False)
    try:
        return decode_image(data, max_pixels=settings.max_image_pixels, max_side=settings.max_image_side)
    except InvalidImage as exc:
        declared = (request.mimetype or "").lower()
        if data and declared not in _NEUTRAL_TYPES and not declared.startswith("image/"):
            raise UnsupportedMediaType(
                f"Content-Type {declared} is not an image type and the body is not a decodable image; "
                "send image/jpeg or image/png bytes"
            ) from None
        raise exc from None


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ProxyError)
    def proxy_error(exc: ProxyError) -> tuple[Response, int, dict[str, str]]:
        if exc.status >= 500:
            log.warning("%s %s -> %d: %s", request.method, request.path, exc.status, exc.message)
        return jsonify({"error": exc.message}), exc.status, exc.headers

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> WerkzeugResponse:
        # werkzeug's own 404/405/413...: same status and headers (Allow on 405), JSON instead of HTML.
        response = exc.get_response()
        response.data = jsonify({"error": _http_message(exc)}).get_data()
        response.content_type = "application/json"
        return response

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> tuple[Response, int]:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return jsonify({"error": "internal error; the server log has the details"}), 500


def _http_message(exc: HTTPException) -> str:
    code = exc.code or 500
    if code == 404:
        return f"no such endpoint: {request.path}"
    if code == 405:
        return f"method {request.method} not allowed on {request.path}"
    if code == 413:
        limit = request.max_content_length
        return f"request body too large; the limit is {limit} bytes (MAX_BODY_BYTES)"
    return exc.description or exc.name
