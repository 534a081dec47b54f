"""The API key rule: which requests need ``API_KEY``, where a client may offer it, and whether it offered it.

``refusal`` is the one function that decides. It is asked twice of a request: by the HTTP front from the headers
alone, before the body is read (a client that will be refused uploads nothing, and ``Expect: 100-continue`` gets the
401 instead of ``100 Continue``); and by the app once the body is there, because DeepStack clients send the key as
the multipart form field ``api_key``. Where that field would decide, the front lets the request through and the app
decides.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping

from werkzeug.http import parse_options_header

from proxy.errors import Unauthorized

# Probes, the page, the API description and CodeProject.AI's status probes stay open: orchestrators, people and
# Blue Iris (which sends no key) need them before they hold a key. They reveal no model, path or image.
OPEN_ENDPOINTS = frozenset(
    {"api.healthz", "api.readyz", "api.openapi", "api.page", "static", "vision.ping", "vision.update_available"}
)
# The blueprints whose routes also take the key as a multipart form field, as DeepStack's clients send it.
FORM_KEY_BLUEPRINTS = frozenset({"vision"})
FORM_FIELD = "api_key"

FormKey = Callable[[], str | None]


def refusal(
    api_key: str | None, endpoint: str | None, method: str, headers: Mapping[str, str], form_key: FormKey | None
) -> Unauthorized | None:
    """The 401 for a request to ``endpoint``, or None when it may go on.

    ``headers`` must answer lower-case names (a dict of them, or werkzeug's case-insensitive headers). ``form_key``
    reads the ``api_key`` form field from the body; None means the body has not arrived yet, and a request whose
    form field would decide goes on. No ``endpoint`` (an unknown path) goes on too: it is answered 404, not 401.
    """
    if not api_key or endpoint is None or endpoint in OPEN_ENDPOINTS or method == "OPTIONS":
        return None
    offered = header_key(headers.get("authorization", ""), headers.get("x-api-key", ""))
    if not offered and takes_form_key(endpoint, headers.get("content-type", "")):
        if form_key is None:
            return None
        offered = form_key() or ""
    # compare_digest: the time taken does not tell an attacker how much of the key was right.
    if hmac.compare_digest(offered.encode(), api_key.encode()):
        return None
    return Unauthorized(
        "missing or wrong API key: send Authorization: Bearer KEY or X-API-Key: KEY",
        headers={"WWW-Authenticate": 'Bearer realm="classifyobjects"'},
    )


def header_key(authorization: str, x_api_key: str) -> str:
    """The key offered in ``Authorization: Bearer KEY``, else in ``X-API-Key``."""
    offered = authorization[7:].strip() if authorization[:7].lower() == "bearer " else ""
    return offered or x_api_key


def takes_form_key(endpoint: str, content_type: str) -> bool:
    """True when the key may come as a form field: a DeepStack route, and a multipart body."""
    blueprint = endpoint.rpartition(".")[0]  # as Flask names a blueprint's endpoints: "vision.detection"
    return blueprint in FORM_KEY_BLUEPRINTS and parse_options_header(content_type)[0].lower() == "multipart/form-data"
