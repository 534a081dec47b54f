"""The Flask application factory: services, blueprints, the API key, request ids, the access log and errors.

One request's path, in one direction:

    HTTP front (proxy.front): the whole request arrives, within bounds ─► Flask
    ─► request id, API key ─► route ─► proxy.request: typed request ─► proxy.pipeline: results
    ─► proxy.answers: the body ─► access log, metrics ─► the front writes the answer
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as WerkzeugResponse

from proxy import answers
from proxy.auth import FORM_FIELD, refusal
from proxy.context import json_text
from proxy.errors import PayloadTooLarge, ProxyError
from proxy.front import ENVIRON_RECEIVED, ENVIRON_REQUEST_BYTES
from proxy.front.state import FrontApp
from proxy.metrics import count_request
from proxy.observability import access_entry, configure_logging, log_access, request_id
from proxy.request import form_field
from proxy.routes import STATIC, api
from proxy.services import Services
from proxy.settings import Settings
from proxy.vision import VISION_PREFIX, command_for, vision, vision_call

log = logging.getLogger(__name__)

SAMPLE_PHOTO = "docs/person-and-cat.jpg"  # the README's picture, there when the service runs from a checkout
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
# The page loads its own script, style and the pictures it is given; nothing else, from nowhere else.
_PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
    "form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
)


@dataclass(frozen=True)
class AppHooks:
    """What the HTTP front asks of the app without running a request through it (``proxy.front.state.Hooks``)."""

    app: Flask
    api_key: str | None

    def admit(self, method: str, path: str, headers: dict[str, str]) -> ProxyError | None:
        """The 401 for a request its headers alone condemn (``proxy.auth``), answered without reading the body
        or sending ``100 Continue``; None for the rest."""
        if not self.api_key:
            return None
        try:
            endpoint, _ = self.app.url_map.bind("localhost").match(path, method=method)
        except HTTPException:
            return None  # the app answers 404/405 itself
        return refusal(self.api_key, endpoint, method, headers, form_key=None)

    def error(self, path: str, status: int, message: str, request_id: str) -> tuple[str, bytes]:
        """The content type and body of an error the front answers itself, in the shape of the path's routes."""
        if path.startswith(VISION_PREFIX):
            # No device: this runs on the event loop, and an embedded backend learns its device from TensorFlow.
            call = answers.VisionCall(command_for(path), request_id, time.perf_counter(), "")
            body: Any = answers.vision_error(status, message, call)
        else:
            body = answers.error(message)
        return "application/json", json_text(body).encode()


def front_app(app: Flask) -> FrontApp:
    """Everything the HTTP front uses of ``app`` (an app ``create_app`` built), declared in one object."""
    services = Services.of(app)
    settings = services.settings

    async def announce_when_ready(loop: asyncio.AbstractEventLoop, pool: Executor) -> None:
        """Once every model answers, say in one log line where the service is and what to try."""
        while not all(status.ready for status in (await loop.run_in_executor(pool, services.statuses)).values()):
            await asyncio.sleep(0.5)
        host = "localhost" if settings.host in ("0.0.0.0", "::", "") else settings.host  # noqa: S104
        base = f"http://{host}:{settings.port}"
        photo = SAMPLE_PHOTO if Path(SAMPLE_PHOTO).is_file() else "photo.jpg"
        log.info("ready: open %s/ in a browser, or try: curl -s --data-binary @%s %s/classify", base, photo, base)

    return FrontApp(
        wsgi=app,
        limits=settings.front,
        hooks=AppHooks(app, settings.api_key),
        # How long a request may run in the app before its worker counts as stuck and is restarted.
        stuck_after_s=settings.request_timeout_s + 30,
        close=services.close,
        headers=tuple(_SECURITY_HEADERS.items()),
        announce_when_ready=announce_when_ready,
    )


def create_app(settings: Settings | None = None, *, services: Services | None = None) -> Flask:
    """Build the app: settings from the environment unless given, services from the settings unless given.

    Building starts the models loading in the background; ``Services.of(app).close()`` releases them (the
    worker calls it on exit, as ``front_app(app).close``).
    """
    settings = settings or (services.settings if services is not None else Settings.from_env())
    services = services or Services.build(settings)
    configure_logging(settings.log_format, settings.log_level)

    app = Flask(__name__, static_folder=str(STATIC), static_url_path="/static")
    # Flask turns debug mode on from FLASK_DEBUG in the environment; a production server never runs in it.
    app.debug = False
    # The front bounds the body; werkzeug's form parser is not used (proxy.request parses multipart itself).
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]  # answers keep the model's score order
    # Never a redirect to the Host a client claims: doubled slashes are not merged into a redirect (leading ones
    # collapse into the path, so `//detection` is the 404 of /detection, `//classify` is /classify).
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = False
    services.install(app)
    app.register_blueprint(api)
    app.register_blueprint(vision)

    app.before_request(_start_request)
    if settings.api_key:
        _require_api_key(app, settings.api_key, settings.max_form_parts)
    app.after_request(_finish_request)
    _register_error_handlers(app)
    services.start()
    return app


def _start_request() -> None:
    g.started = time.perf_counter()
    g.received = request.environ.get(ENVIRON_RECEIVED, g.started)
    g.request_id = request_id(request.environ.get("HTTP_X_REQUEST_ID"))  # the header, without EnvironHeaders' misses


def _require_api_key(app: Flask, api_key: str, max_form_parts: int) -> None:
    @app.before_request
    def check_api_key() -> None:
        def form_key() -> str | None:
            # How DeepStack clients send it: a form field. Only that field is looked for; nothing else is parsed.
            # A body that is no form (or one past MAX_FORM_PARTS before the field) offers no key: a client without
            # the key learns nothing of what is wrong with its body, only that it needs the key.
            body = request.get_data(cache=True)
            try:
                return form_field(body, request.content_type or "", FORM_FIELD, max_form_parts)
            except ProxyError:
                return None

        headers = {name: request.headers.get(name, "") for name in ("authorization", "x-api-key", "content-type")}
        refused = refusal(api_key, request.endpoint, request.method, headers, form_key)
        if refused is not None:
            raise refused


def _error_body(status: int, message: str) -> Any:
    if request.path.startswith(VISION_PREFIX):
        return answers.vision_error(status, message, vision_call(command_for(request.path)))
    return answers.error(message)


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ProxyError)
    def proxy_error(exc: ProxyError) -> tuple[Response, int, dict[str, str]]:
        if exc.status >= 500:
            log.warning("%s %s -> %d: %s", request.method, request.path, exc.status, exc.message)
        return jsonify(_error_body(exc.status, exc.message)), exc.status, exc.headers

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> WerkzeugResponse:
        # werkzeug's own 404/405/413...: same status and headers (Allow on 405), JSON instead of HTML.
        code = exc.code or 500
        if code == 413:
            return proxy_error(PayloadTooLarge(_too_large()))  # type: ignore[return-value]
        response = exc.get_response()
        response.data = jsonify(_error_body(code, _http_message(exc))).get_data()
        response.content_type = "application/json"
        response.headers.pop("Location", None)  # never an absolute redirect built from the client's Host
        return response

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> tuple[Response, int]:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return jsonify(_error_body(500, "internal error; the server log has the details")), 500


def _too_large() -> str:
    return f"request body too large; the limit is {request.max_content_length} bytes (MAX_BODY_BYTES)"


def _http_message(exc: HTTPException) -> str:
    code = exc.code or 500
    if code == 404:
        return f"no such endpoint: {request.path[:200]}"
    if code == 405:
        return f"method {request.method[:16]} not allowed on {request.path[:200]}"
    return exc.description or exc.name


def _finish_request(response: Response) -> Response:
    """Security headers, the request id, metrics and the access log for every answer the app gives.

    The request and ``g`` are taken from their proxies once: this runs for every answer, after the model's wait.
    """
    req = request._get_current_object()  # type: ignore[attr-defined]  # werkzeug's LocalProxy
    state = g._get_current_object()
    headers = response.headers
    # Not Headers.setdefault: it raises and catches an exception for each header the answer lacks (all, mostly).
    present = {name.lower() for name in headers.keys()}  # noqa: SIM118  # Headers iterates as (name, value) pairs
    for name, value in _SECURITY_HEADERS.items():
        if name.lower() not in present:
            headers.add(name, value)
    endpoint = req.endpoint
    if endpoint in ("api.page", "static"):
        headers["Content-Security-Policy"] = _PAGE_POLICY
    request_id_value = getattr(state, "request_id", None) or request_id(None)
    headers["X-Request-ID"] = request_id_value
    elapsed = time.perf_counter() - getattr(state, "started", time.perf_counter())
    rule = req.url_rule
    route = rule.rule if rule is not None else "unmatched"
    status = response.status_code
    method = req.method
    count_request(route, method, status, elapsed)
    error = None
    if status >= 400 and response.is_json:
        body = response.get_json(silent=True)
        error = body.get("error") if isinstance(body, dict) else None
    environ = req.environ
    log_access(
        access_entry(
            request_id=request_id_value,
            remote_addr=req.remote_addr,
            method=method,
            path=req.path,
            route=route,
            status=status,
            seconds=elapsed,
            request_bytes=int(environ.get(ENVIRON_REQUEST_BYTES) or req.content_length or 0),
            response_bytes=response.content_length or response.calculate_content_length() or 0,
            user_agent=environ.get("HTTP_USER_AGENT", ""),
            error=error,
        )
    )
    return response
