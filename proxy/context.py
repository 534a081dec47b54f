"""What every route takes from the request it answers: the app's services, the request's deadline, JSON answers."""

from __future__ import annotations

import time
from typing import Any

from flask import Response, current_app

from proxy.services import Services


def current_services() -> Services:
    """The services of the app answering this request."""
    return Services.of(current_app)


def deadline() -> float:
    """When this request's calls to the model must be done (``time.monotonic()``): REQUEST_TIMEOUT_S from now."""
    return time.monotonic() + current_services().settings.request_timeout_s


def json_response(body: Any, status: int = 200) -> Response:
    """A JSON answer with its Content-Length (never chunked: some DeepStack clients cannot read chunked JSON)."""
    response = current_app.json.response(body)
    response.status_code = status
    return response  # type: ignore[return-value]  # flask's json provider returns the app's Response class
