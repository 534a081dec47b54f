"""The routes DeepStack and CodeProject.AI clients call (Blue Iris, Agent DVR, Home Assistant, Frigate, Node-RED).

    POST /v1/vision/detection            the default model            command "detect"
    POST /v1/vision/custom/NAME          the model called NAME        command "custom"
    GET|POST /v1/vision/custom/list      the served model names       command "list-custom"
    GET /v1/server/status/ping, /v1/status/ping                        CodeProject.AI's liveness probe
    GET /v1/server/status/updateavailable, /v1/status/updateavailable  Blue Iris's "is the AI there" probe

Answers carry DeepStack's and CodeProject.AI's fields together (``proxy.answers``); errors keep that shape, with
DeepStack's HTTP statuses. A model called ``list`` cannot be reached as a custom model: the list route wins.
"""

from __future__ import annotations

from flask import Blueprint, Response, g, request

from proxy import answers
from proxy.context import current_services, detection_for, json_response
from proxy.errors import ProxyError
from proxy.pipeline import detect
from proxy.request import vision_request

VISION_PREFIX = "/v1/vision/"
BLUEPRINT = "vision"

vision = Blueprint(BLUEPRINT, __name__)


@vision.post("/v1/vision/detection")
def detection() -> Response:
    """Detections from the default model."""
    return _detect(None)


@vision.post("/v1/vision/custom/<name>")
def custom(name: str) -> Response:
    """Detections from the model called ``name``, as DeepStack's and CodeProject.AI's custom models."""
    return _detect(name)


@vision.route("/v1/vision/custom/list", methods=["GET", "POST"])
def custom_list() -> Response:
    """The names of the models this server serves, the default first."""
    services = current_services()
    names = [*services.models, *(preset.name for preset in services.settings.presets)]
    return json_response(answers.model_list(names, vision_call(command_for(request.path))))


@vision.get("/v1/server/status/ping", endpoint="ping")
@vision.get("/v1/status/ping", endpoint="ping")
def ping() -> Response:
    """CodeProject.AI's ping: this server's version."""
    return json_response(answers.server_version(update_check=False))


@vision.get("/v1/server/status/updateavailable", endpoint="update_available")
@vision.get("/v1/status/updateavailable", endpoint="update_available")
def update_available() -> Response:
    """CodeProject.AI's update check, which Blue Iris uses as a liveness probe: never an update."""
    return json_response(answers.server_version(update_check=True))


def command_for(path: str) -> str:
    """The CodeProject.AI command a ``/v1/vision/`` path answers as: the one map of paths to commands, for the
    routes and for the errors the front and the app answer on these paths."""
    if path.rstrip("/") == f"{VISION_PREFIX}custom/list":
        return "list-custom"
    return "custom" if path.startswith(f"{VISION_PREFIX}custom/") else "detect"


def _detect(model_name: str | None) -> Response:
    asked = vision_request(request, current_services().settings, model_name)
    model, context = detection_for(asked)
    result = detect(asked.images, model, asked.options, context)[0]
    if isinstance(result, ProxyError):
        raise result
    return json_response(answers.vision(result, vision_call(command_for(request.path))))


def vision_call(command: str) -> answers.VisionCall:
    """What this request's answer reports about the call: command, request id, timing, device."""
    return answers.VisionCall(
        command=command,
        request_id=g.get("request_id", ""),
        received=g.get("received", g.get("started", 0.0)),
        inference_device=current_services().default.backend.device(),
    )
