"""proxy/openapi.json: a valid OpenAPI 3.1 document describing exactly the routes, answers and errors the app has.

Every documented response of every operation is provoked for real, in-process: through the Flask app with a fake
backend (``tests/support/fake_backend.py``), or through the HTTP front's connection handling with an in-memory
transport for the refusals the front answers itself (400, 408, 413, 414, 431, 503). Each answer's status, content
type, body and headers must be what the document says.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import re
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, request
from jsonschema import Draft202012Validator
from openapi_spec_validator import OpenAPIV31SpecValidator
from PIL import Image
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from werkzeug.datastructures import Headers

import proxy
from proxy import errors
from proxy.app import front_app
from proxy.detections import Detections
from proxy.front.server import FrontServer
from proxy.labels import LabelMap
from proxy.params import DEEPSTACK_MIN_CONFIDENCE, parse_format
from proxy.settings import FrontLimits, Settings
from tests.support.fake_backend import FakeBackend, detections
from tests.support.transport import MemoryTransport

REPO = Path(__file__).resolve().parents[2]
OPENAPI_PATH = Path(proxy.__file__).with_name("openapi.json")
SPEC: dict[str, Any] = json.loads(OPENAPI_PATH.read_text(encoding="utf-8"))
SPEC_URI = "urn:classifyobjects:openapi"
# Flask adds these to every rule (OPTIONS) and to every GET rule (HEAD) by itself; the description says so once.
AUTOMATIC_METHODS = frozenset({"HEAD", "OPTIONS"})
HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})
API_KEY = "route-test-key"
MODEL = "detector"
VISION_PREFIX = "/v1/vision/"
DETECTION_PATHS = frozenset({"/classify", "/v1/vision/detection", "/v1/vision/custom/{name}"})
ANSWER = detections((1, 0.9, (0.1, 0.1, 0.5, 0.5)), (2, 0.8, (0.2, 0.3, 0.9, 0.7)), (1, 0.3, (0.0, 0.0, 1.0, 1.0)))
LABELS = LabelMap({1: "Dog", 2: "Person"})


def picture(fmt: str = "PNG", size: tuple[int, int] = (64, 48)) -> bytes:
    """A small picture as ``fmt`` file bytes."""
    buffer = io.BytesIO()
    Image.new("RGB", size, (30, 160, 90)).save(buffer, format=fmt)
    return buffer.getvalue()


PNG = picture()
JPEG = picture("JPEG")
PNG_B64 = base64.b64encode(PNG).decode()


# -- the document ------------------------------------------------------------------------------------------------


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    """``node`` with its local ``$ref`` chain followed."""
    while "$ref" in node:
        target: Any = SPEC
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    """Every ``(path, method, operation)`` in the document."""
    for path, item in SPEC["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield path, method, operation


def documented_responses() -> Iterator[tuple[str, str, int]]:
    """Every ``(path, method, status)`` the document lists."""
    for path, method, operation in operations():
        for status in operation["responses"]:
            yield path, method, int(status)


def validator_for(schema: dict[str, Any]) -> Draft202012Validator:
    """A JSON Schema 2020-12 validator for ``schema``, with the document's ``#/components/...`` resolvable."""
    registry: Registry[Any] = Registry().with_resource(
        SPEC_URI, Resource.from_contents(SPEC, default_specification=DRAFT202012)
    )
    return Draft202012Validator(_rebase(schema), registry=registry)


def _rebase(schema: Any) -> Any:
    # Inline schemas refer to "#/components/..."; point those at the registered document.
    if isinstance(schema, dict):
        return {
            key: (f"{SPEC_URI}{value}" if key == "$ref" and value.startswith("#") else _rebase(value))
            for key, value in schema.items()
        }
    if isinstance(schema, list):
        return [_rebase(item) for item in schema]
    return schema


def schema_errors(schema: dict[str, Any], instance: Any) -> list[str]:
    """Why ``instance`` does not validate against ``schema`` (empty when it does)."""
    return [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator_for(schema).iter_errors(instance)
    ]


def flask_path(rule: str) -> str:
    """``/static/<path:filename>`` → ``/static/{filename}``."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def concrete(path: str) -> str:
    """A documented path with its parameters filled in with values that exist."""
    return path.replace("{name}", MODEL).replace("{filename}", "page.js")


def is_guarded(operation: dict[str, Any]) -> bool:
    """True when the operation needs the API key (when the server has one)."""
    return operation.get("security", SPEC["security"]) != []


# -- answers -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One answer, from the Flask test client or from the HTTP front's own bytes."""

    status: int
    headers: Headers
    body: bytes

    @property
    def mimetype(self) -> str:
        """The Content-Type without its parameters, lower case."""
        return self.headers.get("Content-Type", "").split(";")[0].strip().lower()

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)


def from_client(response: Any) -> Answer:
    """An ``Answer`` from a werkzeug test response."""
    return Answer(response.status_code, Headers(response.headers), response.get_data())


def media_matches(documented: str, mimetype: str) -> bool:
    """True when the answer's media type is the documented one, or falls under a documented wildcard."""
    if documented == "*/*":
        return True
    if documented.endswith("/*"):
        return mimetype.startswith(documented[:-1])
    return documented == mimetype


def conformance_errors(path: str, method: str, answer: Answer) -> list[str]:
    """Everything about ``answer`` that the document does not allow for ``method path``."""
    operation = SPEC["paths"][path][method]
    documented = operation["responses"].get(str(answer.status))
    if documented is None:
        return [f"status {answer.status} is not documented for {method.upper()} {path}"]
    response = resolve(documented)
    problems: list[str] = []
    for name, documented_header in response.get("headers", {}).items():
        header = resolve(documented_header)
        value = answer.headers.get(name)
        if value is None:
            if header.get("required"):
                problems.append(f"required header {name} is missing")
            continue
        header_schema = resolve(header["schema"])
        typed: Any = int(value) if header_schema.get("type") == "integer" and value.isdigit() else value
        problems += [f"header {name}: {error}" for error in schema_errors(header["schema"], typed)]
    content = response.get("content")
    if not content:
        if answer.body:
            problems.append(f"a body where none is documented: {answer.body[:80]!r}")
        return problems
    media = next((media for name, media in content.items() if media_matches(name, answer.mimetype)), None)
    if media is None:
        return [*problems, f"content type {answer.mimetype!r} is not one of {sorted(content)}"]
    if answer.mimetype == "application/json":
        problems += schema_errors(media["schema"], answer.json())
    elif answer.mimetype in ("image/jpeg", "image/png"):
        with Image.open(io.BytesIO(answer.body)) as opened:
            if opened.format != answer.mimetype.split("/")[1].upper():
                problems.append(f"{answer.mimetype} answer holds a {opened.format} picture")
    return problems


def assert_conforms(path: str, method: str, answer: Answer) -> None:
    """The answer's status, headers, content type and body are documented for the operation."""
    problems = conformance_errors(path, method, answer)
    assert problems == [], f"{method.upper()} {path} -> {answer.status} {answer.body[:300]!r}: {problems}"
    assert "X-Request-ID" in answer.headers
    assert answer.headers.get("X-Content-Type-Options") == "nosniff"


# -- the app, in-process -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Apps:
    """Builds apps over one fake model, ``detector``, with the route tests' ``make_app`` (which closes them)."""

    make_app: Callable[..., Flask]

    def build(
        self,
        *,
        answer: Detections | Callable[..., Any] = ANSWER,
        failure: errors.ProxyError | None = None,
        ready: bool = True,
        before: Callable[[], None] | None = None,
        **settings: Any,
    ) -> Flask:
        """The real app; ``before`` runs before every request."""
        backend = FakeBackend(answer, LABELS, failure=failure, ready=ready)
        app = self.make_app(Settings(**settings), **{MODEL: backend})
        if before is not None:
            app.before_request(before)
        return app


@pytest.fixture
def apps(make_app: Callable[..., Flask]) -> Apps:
    """A factory of in-process apps, closed after the test."""
    return Apps(make_app)


# -- the HTTP front, in-process ----------------------------------------------------------------------------------


def front_answer(
    app: Flask, data: bytes, *, limits: FrontLimits | None = None, wait_s: float = 0.0, full: bool = False
) -> Answer:
    """What the HTTP front answers to ``data`` on a new connection, ``wait_s`` seconds later (its timeouts), or at
    once when ``full`` (the process already holds MAX_CONNECTIONS connections)."""
    now = [0.0]
    served = front_app(app)
    if limits is not None:
        served = dataclasses.replace(served, limits=limits)
    limits = served.limits
    server = FrontServer(served, threads=1, clock=lambda: now[0])
    try:
        if full:
            server.connections.update(server.connection() for _ in range(limits.max_connections))
        transport = MemoryTransport()
        connection = server.connection()
        connection.connection_made(transport)
        if not full:
            connection.data_received(data)
        if wait_s:
            now[0] += wait_s
            server.sweep()
        head, _, body = bytes(transport.written).partition(b"\r\n\r\n")
    finally:
        server.pool.shutdown()
    assert head, "the front answered nothing (the request went through to the app?)"
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = Headers([tuple(line.split(": ", 1)) for line in lines])
    return Answer(int(status_line.split(" ")[1]), headers, body)


def request_head(method: str, url: str, *extra: str) -> bytes:
    """A request's head, ended."""
    return "\r\n".join([f"{method} {url} HTTP/1.1", "Host: localhost", *extra, "", ""]).encode("latin-1")


FRONT_REFUSALS: dict[str, Callable[[Flask, str, str], Answer]] = {
    "malformed": lambda app, method, url: front_answer(app, f"{method} {url} HTTP/1.1\r\nno colon\r\n\r\n".encode()),
    "framed two ways": lambda app, method, url: front_answer(
        app, request_head(method, url, "Content-Length: 5", "Transfer-Encoding: chunked")
    ),
    "head timeout": lambda app, method, url: front_answer(app, f"{method} {url} HTTP/1.1\r\n".encode(), wait_s=11),
    "body timeout": lambda app, method, url: front_answer(
        app, request_head(method, url, "Content-Length: 10") + b"12345", wait_s=61
    ),
    "body over MAX_BODY_BYTES": lambda app, method, url: front_answer(
        app, request_head(method, url, f"Content-Length: {21 * 2**20}")
    ),
    "request line": lambda app, method, url: front_answer(app, f"{method} {url}?q={'a' * 9000} HTTP/1.1\r\n".encode()),
    "header field": lambda app, method, url: front_answer(app, request_head(method, url, f"X-Big: {'a' * 9000}")),
    "header count": lambda app, method, url: front_answer(
        app, request_head(method, url, *(f"X-Field-{n}: 1" for n in range(101)))
    ),
    "MAX_BUFFERED_MB": lambda app, method, url: front_answer(
        app,
        request_head(method, url, "Content-Length: 200"),
        limits=Settings(max_buffered_bytes=100, max_body_bytes=1000).front,
    ),
    "MAX_CONNECTIONS": lambda app, method, url: front_answer(
        app, b"", limits=Settings(max_connections=2).front, full=True
    ),
}
FRONT_STATUSES = {
    "malformed": 400,
    "framed two ways": 400,
    "head timeout": 408,
    "body timeout": 408,
    "body over MAX_BODY_BYTES": 413,
    "request line": 414,
    "header field": 431,
    "header count": 431,
    "MAX_BUFFERED_MB": 503,
    "MAX_CONNECTIONS": 503,
}


# -- provoking each documented answer ----------------------------------------------------------------------------


def multipart(**parts: bytes | str | tuple[bytes, str]) -> dict[str, Any]:
    """Test-client arguments for a multipart body, parts in order: text, bytes without a filename, or a file's
    ``(bytes, filename)``."""
    boundary = "route-test-boundary"
    chunks = []
    for name, value in parts.items():
        disposition = f'form-data; name="{name}"'
        content = value
        if isinstance(value, tuple):
            content, filename = value
            disposition += f'; filename="{filename}"'
        data = content.encode() if isinstance(content, str) else content
        chunks.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n")
    body = b"".join(chunks) + f"--{boundary}--\r\n".encode()
    return {"data": body, "content_type": f"multipart/form-data; boundary={boundary}"}


SUCCESS: dict[tuple[str, str], Callable[[], dict[str, Any]]] = {
    ("/classify", "post"): lambda: {"data": PNG, "content_type": "image/png"},
    ("/v1/vision/detection", "post"): lambda: multipart(image=(PNG, "a.png")),
    ("/v1/vision/custom/{name}", "post"): lambda: multipart(image=(PNG, "a.png"), min_confidence="0.5"),
    ("/v1/vision/custom/list", "post"): lambda: {"data": b""},
    ("/", "get"): dict,
    ("/static/{filename}", "get"): dict,
    ("/healthz", "get"): dict,
    ("/readyz", "get"): dict,
    ("/v1/models", "get"): dict,
    ("/metrics", "get"): dict,
    ("/openapi.json", "get"): dict,
}
BACKEND_FAILURES: dict[int, errors.ProxyError] = {
    404: errors.NotFound("TF Serving has no version 7 of model detector"),
    429: errors.TooManyRequests("TF Serving is out of capacity"),
    501: errors.NotImplementedByBackend("the backend does not implement Predict"),
    502: errors.BackendError("model detector lacks outputs detection_boxes"),
    503: errors.ModelNotReady("model detector is still loading; try again shortly", retry_after_s=2),
    504: errors.BackendTimeout("no answer within REQUEST_TIMEOUT_S"),
}


def boom() -> None:
    """A before-request hook that fails as a bug would, when the request asks for it."""
    if "X-Test-Boom" in request.headers:
        raise RuntimeError("a bug")


Provoker = Callable[[Apps, str, str], Answer]  # (apps, path, method) -> the answer


def _post_image(query: str = "", **build: Any) -> Provoker:
    """A provoker posting the sample picture (multipart on the DeepStack routes) to an app built with ``build``."""

    def send(apps: Apps, path: str, method: str) -> Answer:
        vision = path.startswith(VISION_PREFIX)
        image = multipart(image=(PNG, "a.png")) if vision else {"data": PNG, "content_type": "image/png"}
        return from_client(apps.build(**build).test_client().post(concrete(path) + query, **image))

    return send


def _front(refusal: str) -> Provoker:
    """A provoker sending what makes the HTTP front answer ``refusal`` itself."""
    return lambda apps, path, method: FRONT_REFUSALS[refusal](apps.build(), method.upper(), concrete(path))


def _client(url: str, build: dict[str, Any] | None = None, **kwargs: Any) -> Provoker:
    """A provoker sending one fixed request to an app built with ``build``."""
    return lambda apps, path, method: from_client(
        apps.build(**(build or {})).test_client().open(url, method=method.upper(), **kwargs)
    )


def _success(apps: Apps, path: str, method: str) -> Answer:
    kwargs = SUCCESS.get((path, method), dict)()
    return from_client(apps.build().test_client().open(concrete(path), method=method.upper(), **kwargs))


def _conditional(status: int) -> Provoker:
    def send(apps: Apps, path: str, method: str) -> Answer:
        client = apps.build().test_client()
        etag = client.get(concrete(path)).headers["ETag"]
        headers = {206: {"Range": "bytes=0-9"}, 304: {"If-None-Match": etag}, 416: {"Range": "bytes=9999999-"}}
        return from_client(client.get(concrete(path), headers=headers[status]))

    return send


def _unauthorized(apps: Apps, path: str, method: str) -> Answer:
    client = apps.build(api_key=API_KEY).test_client()
    return from_client(client.open(concrete(path), method=method.upper(), data=b""))


def _failure(apps: Apps, path: str, method: str) -> Answer:
    client = apps.build(before=boom).test_client()
    return from_client(client.open(concrete(path), method=method.upper(), headers={"X-Test-Boom": "1"}))


def _too_much(apps: Apps, path: str, method: str) -> Answer:
    client = apps.build().test_client()
    if path.startswith(VISION_PREFIX):  # one part over MAX_FORM_PARTS
        fields = {f"f{n}": "x" for n in range(Settings().max_form_parts)}
        return from_client(client.post(concrete(path), **multipart(image=(PNG, "a.png"), **fields)))
    return from_client(client.post(concrete(path), json={"images": [PNG_B64] * (Settings().max_batch_images + 1)}))


# How each documented status is provoked: for the path itself, else on the routes taking an image, else anywhere.
FOR_PATH: dict[tuple[str, int], Provoker] = {
    ("/classify", 404): _post_image("?model=nope"),
    ("/v1/vision/custom/{name}", 404): _client("/v1/vision/custom/nope", data=PNG),
    ("/static/{filename}", 404): _client("/static/no-such-file.js"),
    ("/readyz", 503): _client("/readyz", {"ready": False}),
    ("/classify", 415): _client("/classify", data=b"hello", content_type="text/plain"),
}
FOR_IMAGE_ROUTES: dict[int, Provoker] = {
    400: lambda apps, path, method: _post_image("?min_confidence=abc" if "vision" in path else "?threshold=2")(
        apps, path, method
    ),
    413: _too_much,
    431: _front("header count"),
    **{status: _post_image(failure=failure) for status, failure in BACKEND_FAILURES.items()},
}
ANYWHERE: dict[int, Provoker] = {
    200: _success,
    206: _conditional(206),
    304: _conditional(304),
    416: _conditional(416),
    401: _unauthorized,
    500: _failure,
    400: _front("malformed"),
    408: _front("head timeout"),
    413: _front("body over MAX_BODY_BYTES"),
    414: _front("request line"),
    431: _front("header field"),
    503: _front("MAX_BUFFERED_MB"),
}


def provoke(apps: Apps, path: str, method: str, status: int) -> Answer:
    """A real answer with ``status`` to ``method path``, by the simplest request (or server state) that gets it."""
    provoker = FOR_PATH.get((path, status))
    if provoker is None and path in DETECTION_PATHS:
        provoker = FOR_IMAGE_ROUTES.get(status)
    provoker = provoker or ANYWHERE.get(status)
    assert provoker is not None, f"no way to provoke {status} on {method.upper()} {path}"
    return provoker(apps, path, method)


# -- the document itself -----------------------------------------------------------------------------------------


def test_document_is_valid_openapi_31() -> None:
    """openapi-spec-validator accepts the file as an OpenAPI 3.1 document."""
    assert SPEC["openapi"].startswith("3.1.")
    errors_found = [error.message for error in OpenAPIV31SpecValidator(SPEC).iter_errors()]
    assert errors_found == []


def test_version_is_the_package_version() -> None:
    """``info.version`` is the version in pyproject.toml."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert SPEC["info"]["version"] == project["version"]


def test_routes_and_documented_operations_are_the_same(apps: Apps) -> None:
    """Every Flask route of the app is documented with the same methods (but Flask's own HEAD and OPTIONS), and
    nothing else is."""
    app = apps.build()
    served = {
        (flask_path(rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        for method in (rule.methods or set()) - AUTOMATIC_METHODS
    }
    documented = {(path, method) for path, method, _ in operations()}
    assert served - documented == set(), "routes the description lacks"
    assert documented - served == set(), "documented operations the app does not serve"


def test_operation_ids_are_unique() -> None:
    """Each operation has its own operationId."""
    ids = [operation["operationId"] for _, _, operation in operations()]
    assert len(ids) == len(set(ids))


def test_every_operation_documents_what_the_front_and_a_failure_can_answer() -> None:
    """Every operation documents 400, 408, 413, 414, 431, 500 and 503, which any request can get."""
    for path, method, operation in operations():
        assert {"400", "408", "413", "414", "431", "500", "503"} <= set(operation["responses"]), f"{method} {path}"


@pytest.mark.parametrize(
    "error_class", [errors.ProxyError, *errors.ProxyError.__subclasses__()], ids=lambda c: c.__name__
)
def test_every_error_status_is_documented_on_the_detection_routes(error_class: type[errors.ProxyError]) -> None:
    """Each status of the error hierarchy (proxy/errors.py) is documented on every route that takes an image, but
    415, which only /classify answers (the DeepStack routes read any raw body as the image)."""
    for path in DETECTION_PATHS:
        if error_class.status == 415 and path != "/classify":
            assert "415" not in SPEC["paths"][path]["post"]["responses"]
            continue
        assert str(error_class.status) in SPEC["paths"][path]["post"]["responses"], f"{path} {error_class.status}"


def test_error_responses_have_the_path_families_error_shape() -> None:
    """Every documented 4xx and 5xx is JSON: an Error object, or on /v1/vision/ a VisionError (503 there may also
    be the front's plain Error, /readyz's 503 a NotReady)."""
    error, vision_error = "#/components/schemas/Error", "#/components/schemas/VisionError"
    for path, method, operation in operations():
        for status, response in operation["responses"].items():
            if int(status) < 400:
                continue
            content = resolve(response)["content"]
            assert list(content) == ["application/json"], f"{method.upper()} {path} {status}"
            schema = content["application/json"]["schema"]
            refs = [item["$ref"] for item in schema.get("anyOf", [schema])]
            if path.startswith(VISION_PREFIX):
                expected = [vision_error, error] if status == "503" else [vision_error]
            else:
                expected = ["#/components/schemas/NotReady", error] if (path, status) == ("/readyz", "503") else [error]
            assert refs == expected, f"{method.upper()} {path} {status}"


def test_every_response_documents_x_request_id() -> None:
    """Every documented response, the components' too, has a required X-Request-ID header."""
    responses = [response for _, _, op in operations() for response in op["responses"].values()]
    responses += list(SPEC["components"]["responses"].values())
    for response in map(resolve, responses):
        assert resolve(response["headers"]["X-Request-ID"])["required"] is True, response["description"]


def test_status_headers_are_documented() -> None:
    """503 answers document a required Retry-After, 401 answers a required WWW-Authenticate, and the 405 answers a
    required Allow."""
    expected = {"503": "Retry-After", "401": "WWW-Authenticate"}
    for path, method, operation in operations():
        for status, header in expected.items():
            if status in operation["responses"]:
                headers = resolve(operation["responses"][status])["headers"]
                assert resolve(headers[header])["required"] is True, f"{method.upper()} {path} {status}"
    for name in ("MethodNotAllowed", "VisionMethodNotAllowed"):
        assert resolve(SPEC["components"]["responses"][name]["headers"]["Allow"])["required"] is True


def test_security_schemes_name_the_open_endpoints_and_the_form_field() -> None:
    """The schemes are the Bearer and X-API-Key headers, and their description names the DeepStack ``api_key`` form
    field and every open endpoint."""
    schemes = SPEC["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == schemes["bearerAuth"] | {"type": "http", "scheme": "bearer"}
    assert schemes["apiKeyHeader"] == schemes["apiKeyHeader"] | {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    text = schemes["bearerAuth"]["description"]
    assert "`api_key`" in text
    open_paths = [path for path, _, operation in operations() if not is_guarded(operation)]
    for path in open_paths:
        assert path.replace("{filename}", "*") in text, path


def test_security_matches_what_the_app_guards(apps: Apps) -> None:
    """With API_KEY set, exactly the operations not marked ``security: []`` answer 401 without the key, and no
    operation does with it in either header (or, on the DeepStack routes, in the ``api_key`` form field)."""
    client = apps.build(api_key=API_KEY).test_client()
    for path, method, operation in operations():
        url = concrete(path)
        without = client.open(url, method=method.upper(), data=b"")
        assert (without.status_code == 401) is is_guarded(operation), f"{method.upper()} {path}: {without.status_code}"
        for headers in ({"X-API-Key": API_KEY}, {"Authorization": f"Bearer {API_KEY}"}):
            with_key = client.open(url, method=method.upper(), data=b"", headers=headers)
            assert with_key.status_code != 401, f"{method.upper()} {path} {headers}"
        if path.startswith(VISION_PREFIX):
            form = client.open(url, method=method.upper(), **multipart(image=(PNG, "a.png"), api_key=API_KEY))
            assert form.status_code == 200, f"{method.upper()} {path}: {form.status_code}"
    assert SPEC["security"][0] == {}, "optional: without API_KEY no key is needed at all"


def test_parameter_defaults_match_the_code() -> None:
    """The documented defaults and bounds are the ones the code applies."""
    parameters = SPEC["components"]["parameters"]
    assert parameters["Threshold"]["schema"]["default"] == Settings().default_threshold
    assert parameters["Verbose"]["schema"]["default"] is False
    assert parameters["MinConfidence"]["schema"]["default"] == DEEPSTACK_MIN_CONFIDENCE
    upload = SPEC["components"]["schemas"]["VisionUpload"]["properties"]
    assert upload["min_confidence"]["default"] == DEEPSTACK_MIN_CONFIDENCE
    assert SPEC["components"]["schemas"]["BatchJson"]["properties"]["images"]["maxItems"] == Settings().max_batch_images


def test_format_enum_is_what_the_parser_accepts() -> None:
    """Every documented ``format`` value parses, in any case, to JSON, JPEG or PNG."""
    enum = SPEC["components"]["parameters"]["Format"]["schema"]["enum"]
    for value in enum:
        assert parse_format(value) == parse_format(value.upper())
    assert {parse_format(value) for value in enum} == {"json", "JPEG", "PNG"}


ENVELOPE = {
    "command": "detect",
    "moduleId": "ClassifyObjects",
    "moduleName": "ClassifyObjects (TensorFlow Object Detection)",
    "requestId": "abc",
    "inferenceDevice": "CPU",
    "executionProvider": "CPU",
    "canUseGPU": False,
    "processedBy": "host",
    "analysisRoundTripMs": 3,
    "timestampUTC": "Tue, 01 Jul 2025 10:00:00 GMT",
}
VISION_OK = {
    "success": True,
    "predictions": [{"confidence": 0.9, "label": "dog", "y_min": 2, "x_min": 1, "y_max": 40, "x_max": 30}],
    "count": 1,
    "message": "Found dog",
    "duration": 0.01,
    "inferenceMs": 8,
    "processMs": 10,
    "code": 200,
    **ENVELOPE,
}
VISION_FAILED = {
    "success": False,
    "error": "No valid image file found",
    "predictions": [],
    "count": 0,
    "message": "No valid image file found",
    "duration": 0,
    "inferenceMs": 0,
    "processMs": 0,
    "code": 400,
    **ENVELOPE,
}


@pytest.mark.parametrize(
    ("schema_name", "instance", "valid"),
    [
        ("Counts", {"Dog": 2, "Person": 1}, True),
        ("Counts", {}, True),
        ("Counts", {"Dog": 0}, False),
        ("Detections", [{"class": "Dog", "score": 0.9, "x1": 0.1, "y1": 0.2, "x2": 0.3, "y2": 0.4}], True),
        ("Detections", [{"class": "Dog", "score": 0.9}], False),
        ("BatchAnswer", [{"Dog": 1}, [], {"error": "images[2] is not valid base64"}], True),
        ("BatchAnswer", [{"error": "x", "Dog": 1}], False),
        ("ClassifyJson", {"image": PNG_B64}, True),
        ("ClassifyJson", {"images": [PNG_B64]}, True),
        ("ClassifyJson", {"image": PNG_B64, "images": [PNG_B64]}, False),
        ("ClassifyJson", {"images": []}, False),
        ("ClassifyJson", {"image": PNG_B64, "url": "http://example.com/a.jpg"}, False),
        ("Error", {"error": "cannot decode image"}, True),
        ("Error", {"message": "cannot decode image"}, False),
        ("Ready", {"ready": True, "model": "detector", "version": 1}, True),
        ("NotReady", {"ready": False, "model": "detector", "version": None, "error": "detector: loading"}, True),
        ("Health", {"status": "ok"}, True),
        (
            "Models",
            {
                "models": [
                    {"name": "a", "default": True, "classes": 4, "versions": [{"version": 1, "state": "AVAILABLE"}]},
                    {"name": "b", "default": False, "classes": None, "versions": [], "error": "unreachable"},
                ]
            },
            True,
        ),
        ("Models", {"models": [{"name": "detector"}]}, False),
        ("VisionAnswer", VISION_OK, True),
        ("VisionAnswer", VISION_OK | {"extra": 1}, False),
        ("VisionAnswer", {k: v for k, v in VISION_OK.items() if k != "requestId"}, False),
        ("VisionError", VISION_FAILED, True),
        ("VisionError", VISION_FAILED | {"predictions": [VISION_OK["predictions"][0]]}, False),
        ("VisionError", {"success": False, "error": "cannot decode image"}, False),
        ("VisionModelList", {"success": True, "models": ["detector"], "message": "", "code": 200, **ENVELOPE}, True),
    ],
)
def test_component_schemas_accept_the_answers_and_refuse_others(schema_name: str, instance: Any, valid: bool) -> None:
    """The schemas accept the JSON the app reads and answers, and refuse other shapes."""
    validator = validator_for({"$ref": f"#/components/schemas/{schema_name}"})
    assert validator.is_valid(instance) is valid


def test_examples_match_their_schemas() -> None:
    """Every example in the document, of a request body or of an answer, validates against its schema."""
    checked = 0
    for path, method, operation in operations():
        media_types = list(operation.get("requestBody", {}).get("content", {}).values())
        media_types += [m for r in operation["responses"].values() for m in resolve(r).get("content", {}).values()]
        for media in media_types:
            for example in media.get("examples", {}).values():
                assert schema_errors(media["schema"], example["value"]) == [], f"{method.upper()} {path}"
                checked += 1
    assert checked >= 6


def test_request_body_examples_are_answered(apps: Apps) -> None:
    """Every JSON request example of /classify gets a 200 the document allows."""
    client = apps.build().test_client()
    examples = SPEC["paths"]["/classify"]["post"]["requestBody"]["content"]["application/json"]["examples"]
    for example in examples.values():
        answer = from_client(client.post("/classify", json=example["value"]))
        assert answer.status == 200, answer
        assert_conforms("/classify", "post", answer)


# -- real answers against the document ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "method", "status"),
    list(documented_responses()),
    ids=[f"{method.upper()} {path} {status}" for path, method, status in documented_responses()],
)
def test_every_documented_answer_is_real_and_conforms(apps: Apps, path: str, method: str, status: int) -> None:
    """Each documented status of each operation is answered to a request that asks for it, with the documented
    content type, body schema and headers."""
    answer = provoke(apps, path, method, status)
    assert answer.status == status, answer
    assert_conforms(path, method, answer)


@pytest.mark.parametrize("refusal", list(FRONT_REFUSALS))
def test_front_refusals_conform_on_every_operation(apps: Apps, refusal: str) -> None:
    """What the HTTP front answers itself (malformed, slow, over-long or over-large requests, its bounds) is a
    documented answer of every operation, in the path's error shape."""
    app = apps.build()
    for path, method, _ in operations():
        answer = FRONT_REFUSALS[refusal](app, method.upper(), concrete(path))
        assert answer.status == FRONT_STATUSES[refusal], answer
        assert_conforms(path, method, answer)
        vision_shape = "success" in answer.json()
        assert vision_shape is (path.startswith(VISION_PREFIX) and refusal != "MAX_CONNECTIONS"), answer


def test_front_refuses_a_missing_key_as_documented(apps: Apps) -> None:
    """With API_KEY set, the front answers the documented 401 itself to a guarded request without a key, before
    reading its body (a DeepStack multipart body, which may carry the key, goes on to the app)."""
    app = apps.build(api_key=API_KEY)
    for path, method, operation in operations():
        if not is_guarded(operation):
            continue
        answer = front_answer(app, request_head(method.upper(), concrete(path), "Content-Length: 5") + b"12345")
        assert answer.status == 401, answer
        assert_conforms(path, method, answer)


CLASSIFY_ANSWERS: dict[str, tuple[str, dict[str, Any], str]] = {
    "counts": ("", {"data": PNG}, "application/json"),
    "counts under no content type": ("", {"data": JPEG, "content_type": ""}, "application/json"),
    "verbose": ("?verbose=true", {"data": PNG, "content_type": "image/png"}, "application/json"),
    "jpeg": ("?format=jpg", {"data": PNG}, "image/jpeg"),
    "png": ("?format=PNG", {"data": JPEG}, "image/png"),
    "accept png": ("", {"data": PNG, "headers": {"Accept": "image/png"}}, "image/png"),
    "multipart": ("", multipart(image=(PNG, "a.png")), "application/json"),
    "multipart, another name": ("", multipart(note="hi", photo=(PNG, "a.png")), "application/json"),
    "json": ("?threshold=0.1&classes=dog", {"json": {"image": PNG_B64}}, "application/json"),
    "json url-safe unpadded": (
        "",
        {"json": {"image": base64.urlsafe_b64encode(JPEG).decode().rstrip("=")}},
        "application/json",
    ),
    "json data url": ("?format=png", {"json": {"image": f"data:image/png;base64,{PNG_B64}"}}, "image/png"),
    "batch": ("", {"json": {"images": [PNG_B64, "!!", base64.b64encode(b"text").decode()]}}, "application/json"),
    "batch verbose": ("?verbose=1&max_detections=1", {"json": {"images": [PNG_B64] * 2}}, "application/json"),
    "merged": ("?iou_threshold=0.1&threshold=0", {"data": PNG}, "application/json"),
}


@pytest.mark.parametrize(("query", "kwargs", "mimetype"), CLASSIFY_ANSWERS.values(), ids=list(CLASSIFY_ANSWERS))
def test_classify_answers_of_every_kind_conform(apps: Apps, query: str, kwargs: dict[str, Any], mimetype: str) -> None:
    """Each way of sending an image and of asking for an answer gets a 200 of the expected type that the document
    allows."""
    answer = from_client(apps.build().test_client().post(f"/classify{query}", **kwargs))
    assert (answer.status, answer.mimetype) == (200, mimetype), answer
    assert_conforms("/classify", "post", answer)


DOG_BOX = {"y_min": 5, "x_min": 6, "y_max": 24, "x_max": 32}  # (0.1, 0.1, 0.5, 0.5) of a 64x48 picture
PERSON_BOX = {"y_min": 10, "x_min": 19, "y_max": 43, "x_max": 45}  # (0.2, 0.3, 0.9, 0.7)
VISION_ANSWERS: dict[str, tuple[str, str, dict[str, Any], list[dict[str, Any]]]] = {
    "multipart": ("/v1/vision/detection", "", multipart(image=(PNG, "a.png")), [DOG_BOX, PERSON_BOX]),
    "image part without a filename": ("/v1/vision/detection", "", multipart(image=PNG), [DOG_BOX, PERSON_BOX]),
    "first file part": ("/v1/vision/detection", "", multipart(note="x", upload=(JPEG, "a.jpg")), [DOG_BOX, PERSON_BOX]),
    "raw body": ("/v1/vision/detection", "", {"data": PNG, "content_type": "image/png"}, [DOG_BOX, PERSON_BOX]),
    "raw body, no content type": ("/v1/vision/detection", "", {"data": JPEG}, [DOG_BOX, PERSON_BOX]),
    "form fields": (
        "/v1/vision/custom/detector",
        "?min_confidence=0",
        multipart(image=(PNG, "a.png"), min_confidence="0.85", max_detections="1"),
        [DOG_BOX],
    ),
    "query parameters": ("/v1/vision/detection", "?min_confidence=0.2&classes=person", {"data": PNG}, [PERSON_BOX]),
    "empty min_confidence": (
        "/v1/vision/detection",
        "",
        multipart(image=PNG, min_confidence=""),
        [DOG_BOX, PERSON_BOX],
    ),
}


@pytest.mark.parametrize(("url", "query", "kwargs", "boxes"), VISION_ANSWERS.values(), ids=list(VISION_ANSWERS))
def test_vision_answers_conform(
    apps: Apps, url: str, query: str, kwargs: dict[str, Any], boxes: list[dict[str, Any]]
) -> None:
    """Each way DeepStack clients send a picture and its options gets a 200 VisionAnswer with pixel boxes."""
    path = "/v1/vision/custom/{name}" if url.startswith("/v1/vision/custom/") else url
    answer = from_client(apps.build().test_client().post(url + query, **kwargs))
    assert answer.status == 200, answer
    assert_conforms(path, "post", answer)
    body = answer.json()
    assert body["count"] == len(body["predictions"])
    assert [{key: p[key] for key in DOG_BOX} for p in body["predictions"]] == boxes


ERRORS: dict[str, tuple[str, str, dict[str, Any], int, str]] = {
    "threshold": ("/classify", "?threshold=nan", {"data": PNG}, 400, "threshold must be a number between 0 and 1"),
    "verbose and a picture": ("/classify", "?verbose=true&format=image", {"data": PNG}, 400, "verbose=true asks"),
    "batch and a picture": ("/classify", "?format=png", {"json": {"images": [PNG_B64]}}, 400, "a batch answers"),
    "url": ("/classify", "", {"json": {"url": "http://169.254.169.254/"}}, 400, "never fetches images from URLs"),
    "image and images": ("/classify", "", {"json": {"image": PNG_B64, "images": []}}, 400, "exactly one of"),
    "bad base64": ("/classify", "", {"json": {"image": "@@@"}}, 400, "image is not valid base64"),
    "unknown class": ("/classify", "?classes=unicorn", {"data": PNG}, 400, "unknown class 'unicorn'"),
    "max_detections": ("/classify", "?max_detections=0", {"data": PNG}, 400, "max_detections must be a whole number"),
    "iou_threshold": ("/classify", "?iou_threshold=1.5", {"data": PNG}, 400, "iou_threshold must be a number"),
    "empty body": ("/classify", "", {"data": b""}, 400, "empty image"),
    "not an image": ("/classify", "", {"data": b"GIF89a..."}, 400, "cannot decode image"),
    "declared non-image": ("/classify", "", {"data": b"<a/>", "content_type": "application/xml"}, 415, "not an image"),
    "batch too large": ("/classify", "", {"json": {"images": ["AA"] * 17}}, 413, "MAX_BATCH_IMAGES"),
    "model": ("/classify", "?model=other", {"data": PNG}, 404, "unknown model 'other'"),
    "min_confidence abc": (
        "/v1/vision/detection",
        "",
        multipart(image=PNG, min_confidence="abc"),
        400,
        "Invalid value for min_confidence",
    ),
    "min_confidence over 1": (
        "/v1/vision/detection",
        "?min_confidence=1.5",
        multipart(image=PNG),
        400,
        "min_confidence cannot be greater than 1",
    ),
    "no image part": ("/v1/vision/detection", "", multipart(min_confidence="0.5"), 400, "No valid image"),
    "json on vision": ("/v1/vision/detection", "", {"json": {"image": PNG_B64}}, 400, "No valid image file found"),
    "unknown custom model": ("/v1/vision/custom/other", "", {"data": PNG}, 404, "unknown model 'other'"),
}


@pytest.mark.parametrize(("url", "query", "kwargs", "status", "message"), ERRORS.values(), ids=list(ERRORS))
def test_documented_errors_conform(
    apps: Apps, url: str, query: str, kwargs: dict[str, Any], status: int, message: str
) -> None:
    """Each error the document describes is answered with its status, its message and the path's error shape."""
    path = "/v1/vision/custom/{name}" if url.startswith("/v1/vision/custom/") else url
    answer = from_client(apps.build().test_client().post(url + query, **kwargs))
    assert answer.status == status, answer
    assert_conforms(path, "post", answer)
    assert message in answer.json()["error"]
    if path.startswith(VISION_PREFIX):
        assert answer.json()["code"] == status


def test_json_image_that_is_not_a_picture_is_a_400(apps: Apps) -> None:
    """A JSON body whose base64 decodes to bytes that are no picture answers 400, as the same raw bytes do."""
    answer = from_client(apps.build().test_client().post("/classify", json={"image": base64.b64encode(b"no").decode()}))
    assert answer.status == 400, answer
    assert_conforms("/classify", "post", answer)


@pytest.mark.parametrize("path", sorted(SPEC["paths"]))
def test_every_path_answers_other_methods_with_405_and_allow(apps: Apps, path: str) -> None:
    """A method a path does not serve answers the documented 405, its Allow naming the documented methods (with
    Flask's HEAD and OPTIONS), in the path's error shape."""
    documented = {method.upper() for method in SPEC["paths"][path] if method in HTTP_METHODS}
    allowed = documented | {"OPTIONS"} | ({"HEAD"} if "GET" in documented else set())
    refused = sorted({"GET", "POST", "PUT", "DELETE", "PATCH"} - documented)
    client = apps.build().test_client()
    for method in refused:
        answer = from_client(client.open(concrete(path), method=method))
        assert answer.status == 405, f"{method} {path}: {answer}"
        assert set(answer.headers["Allow"].replace(" ", "").split(",")) == allowed
        name = "VisionMethodNotAllowed" if path.startswith(VISION_PREFIX) else "MethodNotAllowed"
        component = SPEC["components"]["responses"][name]
        assert schema_errors(component["content"]["application/json"]["schema"], answer.json()) == []


@pytest.mark.parametrize(
    ("url", "component"), [("/no/such/path", "NoSuchPath"), ("/v1/vision/face", "VisionNoSuchPath")]
)
def test_unknown_paths_answer_the_documented_404(apps: Apps, url: str, component: str) -> None:
    """An unknown path answers 404 in the documented shape of its family."""
    answer = from_client(apps.build().test_client().post(url, data=PNG))
    assert answer.status == 404
    schema = SPEC["components"]["responses"][component]["content"]["application/json"]["schema"]
    assert schema_errors(schema, answer.json()) == []


def test_not_ready_model_listing_conforms(apps: Apps) -> None:
    """A model that is not loaded yet is listed with ``classes: null``, as documented."""
    answer = from_client(apps.build(ready=False).test_client().get("/v1/models"))
    assert answer.json()["models"][0]["classes"] is None
    assert_conforms("/v1/models", "get", answer)


def test_app_serves_this_file_as_json(apps: Apps) -> None:
    """GET /openapi.json answers the file's bytes as application/json."""
    response = apps.build().test_client().get("/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.data == OPENAPI_PATH.read_bytes()


def test_app_is_not_in_debug_mode(apps: Apps) -> None:
    """The app built from settings runs with debug off."""
    assert apps.build().debug is False
