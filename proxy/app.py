"""The Flask application factory: services, blueprints, API key, request ids, metrics and JSON errors."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Mapping

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as WerkzeugResponse

from proxy.backends import Backend, make_backends
from proxy.deepstack import deepstack
from proxy.errors import ProxyError, Unauthorized
from proxy.labels import LabelMap, load_label_map
from proxy.observability import configure_access_log, finish_request, start_request
from proxy.pipeline import Model, Services
from proxy.routes import STATIC, api
from proxy.settings import Settings

log = logging.getLogger(__name__)

# Probes, the page and the API description stay open: orchestrators and people need them before they hold a key.
_OPEN_ENDPOINTS = frozenset({"api.healthz", "api.readyz", "api.openapi", "api.page", "static"})


def create_app(
    settings: Settings | None = None,
    *,
    backends: Mapping[str, Backend] | None = None,
    labels: Mapping[str, LabelMap] | None = None,
) -> Flask:
    """Build the app: settings from the environment unless given; label maps are read (and checked) now.

    ``backends`` and ``labels``, by model name, replace what the settings would build (for tests).
    """
    settings = settings or Settings.from_env()
    backends = backends or make_backends(settings)
    models = {
        config.name: Model(
            name=config.name,
            backend=backends[config.name],
            labels=labels[config.name] if labels else load_label_map(config.label_map),
        )
        for config in settings.model_configs
    }

    app = Flask(__name__, static_folder=str(STATIC), static_url_path="/static")
    # Flask turns debug mode on from FLASK_DEBUG in the environment; a production server never runs in it.
    app.debug = False
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]  # answers keep the model's score order
    app.extensions["classifyobjects"] = Services(settings=settings, models=models)
    app.register_blueprint(api)
    app.register_blueprint(deepstack)

    configure_access_log()
    app.before_request(start_request)
    if settings.api_key:
        _require_api_key(app, settings.api_key)
    app.after_request(_security_headers)
    app.after_request(finish_request)
    _register_error_handlers(app)

    for model in models.values():
        model.backend.start()
    return app


def _security_headers(response: Response) -> Response:
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def _require_api_key(app: Flask, api_key: str) -> None:
    expected = api_key.encode()

    @app.before_request
    def check_api_key() -> None:
        if request.endpoint in _OPEN_ENDPOINTS or request.endpoint is None or request.method == "OPTIONS":
            return  # unknown paths still answer 404, not 401; OPTIONS only lists the methods
        authorization = request.headers.get("Authorization", "")
        offered = authorization[7:].strip() if authorization[:7].lower() == "bearer " else ""
        offered = offered or request.headers.get("X-API-Key", "")
        if not offered and request.blueprint == "deepstack" and request.mimetype == "multipart/form-data":
            # How DeepStack clients send it. Only a multipart body is parsed as a form: a raw image body
            # must stay unread for the route.
            offered = request.form.get("api_key", "")
        # compare_digest: the time taken does not tell an attacker how much of the key was right.
        if not hmac.compare_digest(offered.encode(), expected):
            raise Unauthorized(
                "missing or wrong API key: send Authorization: Bearer KEY or X-API-Key: KEY",
                headers={"WWW-Authenticate": 'Bearer realm="classifyobjects"'},
            )


def _error_body(message: str) -> dict[str, object]:
    # DeepStack clients look for "success"; everyone else gets the API's {"error": ...}.
    if request.blueprint == "deepstack":
        return {"success": False, "error": message}
    return {"error": message}


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ProxyError)
    def proxy_error(exc: ProxyError) -> tuple[Response, int, dict[str, str]]:
        if exc.status >= 500:
            log.warning("%s %s -> %d: %s", request.method, request.path, exc.status, exc.message)
        return jsonify(_error_body(exc.message)), exc.status, exc.headers

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> WerkzeugResponse:
        # werkzeug's own 404/405/413...: same status and headers (Allow on 405), JSON instead of HTML.
        response = exc.get_response()
        response.data = jsonify(_error_body(_http_message(exc))).get_data()
        response.content_type = "application/json"
        return response

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> tuple[Response, int]:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return jsonify(_error_body("internal error; the server log has the details")), 500


def _http_message(exc: HTTPException) -> str:
    code = exc.code or 500
    if code == 404:
        return f"no such endpoint: {request.path}"
    if code == 405:
        return f"method {request.method} not allowed on {request.path}"
    if code == 413:
        return f"request body too large; the limit is {request.max_content_length} bytes (MAX_BODY_BYTES)"
    return exc.description or exc.name
