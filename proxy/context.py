"""What every route takes from the request it answers: the app's services, the request's deadline and detection
context, JSON answers."""

from __future__ import annotations

import json
import time
from typing import Any

from flask import Response, current_app

from proxy.backends import Model
from proxy.errors import InvalidParameter, Misconfigured
from proxy.labels import LabelMap
from proxy.params import parse_class_thresholds, parse_classes
from proxy.pipeline import Context
from proxy.request import DetectRequest
from proxy.services import Services
from proxy.settings import Preset


def current_services() -> Services:
    """The services of the app answering this request."""
    return Services.of(current_app)


def deadline() -> float:
    """When this request's calls to the model must be done (``time.monotonic()``): REQUEST_TIMEOUT_S from now."""
    return time.monotonic() + current_services().settings.request_timeout_s


def detection_for(asked: DetectRequest) -> tuple[Model, Context]:
    """The model a detection request goes to and what it runs within; a preset whose class names its model's label
    map lacks is the server's error (500, naming the preset), not the client's."""
    services = current_services()
    model = services.model(asked.model)
    if asked.preset is not None:
        check_preset(asked.preset, model.backend.labels())
    settings = services.settings
    context = Context(
        limits=services.image_limits,
        deadline=deadline(),
        max_tiles=settings.max_tiles,
        calls_per_request=settings.calls_per_request,
        cache=services.frame_cache,
    )
    return model, context


def check_preset(preset: Preset, labels: LabelMap | None) -> None:
    """Raise ``Misconfigured`` naming the preset when it names a class ``labels`` lacks (once they are known)."""
    if labels is None:
        return
    options = dict(preset.options)
    names = list(parse_classes(options.get("classes")) or ())
    names += [name for name, _ in parse_class_thresholds(options.get("thresholds")) or ()]
    try:
        labels.ids_of(names)
    except InvalidParameter as exc:
        raise Misconfigured(f"preset {preset.name} (PRESETS): {exc.message}") from None


def json_response(body: Any, status: int = 200) -> Response:
    """A JSON answer with its Content-Length (never chunked: some DeepStack clients cannot read chunked JSON).

    The text is what Flask's JSON provider writes for the app (compact, ASCII, keys in the answer's order, one
    newline), from an encoder made once: the provider's ``response`` builds a new one for every answer.
    """
    return Response(json_text(body), status=status, mimetype="application/json")


def json_text(body: Any) -> str:
    """``body`` as every JSON answer of the service writes it: compact, ASCII, keys in order, one newline."""
    return _encode(body) + "\n"


def _unencodable(value: Any) -> Any:
    raise TypeError(f"an answer holds a {type(value).__name__}, which JSON cannot hold")


_encode = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), sort_keys=False, default=_unencodable).encode
