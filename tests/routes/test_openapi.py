"""proxy/openapi.json: a valid OpenAPI 3.1 document that describes the routes and errors the app really has."""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from jsonschema import Draft202012Validator
from openapi_spec_validator import OpenAPIV31SpecValidator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

import proxy
import proxy.errors
from proxy import create_app
from proxy.labels import parse_label_map
from proxy.params import parse_format
from proxy.settings import Settings

REPO = Path(__file__).resolve().parents[2]
OPENAPI_PATH = Path(proxy.__file__).with_name("openapi.json")
SPEC: dict[str, Any] = json.loads(OPENAPI_PATH.read_text(encoding="utf-8"))
SPEC_URI = "urn:classifyobjects:openapi"
# Flask adds these to every rule (OPTIONS) and to every GET rule (HEAD) by itself; the description says so once.
AUTOMATIC_METHODS = frozenset({"HEAD", "OPTIONS"})
HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})
API_KEY = "unit-test-key"


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


def build_app(tmp_path: Path, *, api_key: str | None = None) -> Flask:
    """The real app with the embedded backend over an empty model directory (it never loads TensorFlow)."""
    settings = Settings(model_base_path=tmp_path / "no-model", api_key=api_key)
    labels = parse_label_map('item { id: 1 name: "dog" }\nitem { id: 2 name: "person" }\n')
    return create_app(settings, labels={settings.model_name: labels})


def flask_path(rule: str) -> str:
    """``/static/<path:filename>`` → ``/static/{filename}``."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def proxy_error_classes() -> list[type[proxy.errors.ProxyError]]:
    """``ProxyError`` and every class below it."""
    found: list[type[proxy.errors.ProxyError]] = []
    pending: list[type[proxy.errors.ProxyError]] = [proxy.errors.ProxyError]
    while pending:
        current = pending.pop()
        found.append(current)
        pending.extend(current.__subclasses__())
    return found


def test_document_is_valid_openapi_31() -> None:
    """openapi-spec-validator accepts the file as an OpenAPI 3.1 document."""
    assert SPEC["openapi"].startswith("3.1.")
    errors = [error.message for error in OpenAPIV31SpecValidator(SPEC).iter_errors()]
    assert errors == []


def test_version_is_the_package_version() -> None:
    """``info.version`` is the version in pyproject.toml."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert SPEC["info"]["version"] == project["version"]


def test_routes_and_documented_operations_are_the_same(tmp_path: Path) -> None:
    """Every Flask route of ``create_app`` is documented with the same methods, and nothing else is."""
    app = build_app(tmp_path)
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


@pytest.mark.parametrize("error_class", proxy_error_classes(), ids=lambda c: c.__name__)
def test_every_error_status_is_documented_on_the_detection_routes(error_class: type[proxy.errors.ProxyError]) -> None:
    """Each status of the error hierarchy (proxy/errors.py) is a documented response of every route taking an image."""
    detection_operations = [(path, op) for path, _, op in operations() if "requestBody" in op]
    assert {path for path, _ in detection_operations} >= {
        "/classify",
        "/v1/vision/detection",
        "/v1/vision/custom/{name}",
    }
    for path, operation in detection_operations:
        assert str(error_class.status) in operation["responses"], f"{path} lacks {error_class.status}"


def test_gunicorn_refusals_are_documented_everywhere() -> None:
    """Every operation documents gunicorn's own 400, 414 and 431, which any path can get."""
    for path, method, operation in operations():
        assert {"400", "414", "431"} <= set(operation["responses"]), f"{method.upper()} {path}"


def test_error_responses_are_json_error_objects() -> None:
    """Every documented 4xx and 5xx response is application/json with a schema requiring a string ``error``."""
    for path, method, operation in operations():
        for status, response in operation["responses"].items():
            if int(status) < 400:
                continue
            content = resolve(response)["content"]
            assert list(content) == ["application/json"], f"{method.upper()} {path} {status}"
            schema = resolve(content["application/json"]["schema"])
            assert "error" in schema["required"]
            assert schema["properties"]["error"]["type"] == "string"


def test_status_headers_are_documented() -> None:
    """503 answers document Retry-After, 401 answers WWW-Authenticate, and the 405 answer Allow; all required."""
    expected = {"503": "Retry-After", "401": "WWW-Authenticate"}
    for path, method, operation in operations():
        for status, header in expected.items():
            if status in operation["responses"] and path != "/readyz":  # /readyz's 503 is a body, not a retry hint
                headers = resolve(operation["responses"][status])["headers"]
                assert resolve(headers[header])["required"] is True, f"{method.upper()} {path} {status}"
    allow = resolve(SPEC["components"]["responses"]["MethodNotAllowed"])["headers"]["Allow"]
    assert resolve(allow)["required"] is True


def test_security_matches_what_the_app_guards(tmp_path: Path) -> None:
    """With API_KEY set, exactly the operations listing ``security`` answer 401 without the key, and not with it."""
    client = build_app(tmp_path, api_key=API_KEY).test_client()
    for path, method, operation in operations():
        url = path.replace("{filename}", "index.html").replace("{name}", Settings().model_name)
        without = client.open(url, method=method.upper(), data=b"")
        with_key = client.open(url, method=method.upper(), data=b"", headers={"X-API-Key": API_KEY})
        guarded = "security" in operation
        assert (without.status_code == 401) is guarded, f"{method.upper()} {path}: {without.status_code}"
        assert with_key.status_code != 401, f"{method.upper()} {path}"
        if guarded:
            # Optional: an empty requirement comes first, since without API_KEY no key is needed at all.
            assert operation["security"][0] == {}
            schemes = {name for requirement in operation["security"] for name in requirement}
            assert schemes == {"bearerAuth", "apiKeyHeader"}


def test_parameter_defaults_match_the_code() -> None:
    """The documented defaults are the ones the code applies."""
    from proxy.deepstack import DEFAULT_MIN_CONFIDENCE

    classify = {p["name"]: p for p in map(resolve, SPEC["paths"]["/classify"]["post"]["parameters"])}
    assert classify["threshold"]["schema"]["default"] == Settings().default_threshold
    assert classify["verbose"]["schema"]["default"] is False
    upload = SPEC["components"]["schemas"]["DeepStackUpload"]["properties"]
    assert upload["min_confidence"]["default"] == DEFAULT_MIN_CONFIDENCE


def test_format_enum_is_what_the_parser_accepts() -> None:
    """Every documented ``format`` value parses, in any case."""
    values = SPEC["paths"]["/classify"]["post"]["parameters"]
    enum = next(p for p in values if p.get("name") == "format")["schema"]["enum"]
    for value in enum:
        assert parse_format(value, None) == parse_format(value.upper(), None)
    assert {parse_format(value, None) for value in enum} == {"json", "JPEG", "PNG"}


@pytest.mark.parametrize(
    ("schema_name", "instance", "valid"),
    [
        ("Counts", {"Red": 2, "Blue": 1}, True),
        ("Counts", {}, True),
        ("Counts", {"Red": 0}, False),
        ("Detections", [{"class": "Red", "score": 0.9, "x1": 0.1, "y1": 0.2, "x2": 0.3, "y2": 0.4}], True),
        ("Detections", [{"class": "Red", "score": 0.9}], False),
        ("Error", {"error": "cannot decode image"}, True),
        ("Error", {"message": "cannot decode image"}, False),
        ("Ready", {"ready": True, "model": "detector", "version": 1}, True),
        ("NotReady", {"ready": False, "model": "detector", "version": None, "error": "loading"}, True),
        ("NotReady", {"ready": False, "model": "detector", "version": 2, "error": "other: loading"}, True),
        ("Health", {"status": "ok"}, True),
        (
            "Models",
            {
                "models": [
                    {
                        "name": "detector",
                        "default": True,
                        "classes": 4,
                        "versions": [{"version": 1, "state": "AVAILABLE"}],
                    },
                    {"name": "other", "default": False, "classes": 90, "versions": [], "error": "unreachable"},
                ]
            },
            True,
        ),
        ("Models", {"models": [{"name": "detector"}]}, False),
        (
            "DeepStackAnswer",
            {
                "success": True,
                "predictions": [{"label": "red", "confidence": 0.9, "x_min": 1, "y_min": 2, "x_max": 30, "y_max": 40}],
            },
            True,
        ),
        ("DeepStackError", {"success": False, "error": "cannot decode image"}, True),
    ],
)
def test_component_schemas_accept_the_answers_and_refuse_others(schema_name: str, instance: Any, valid: bool) -> None:
    """The response schemas accept the JSON the app answers with and refuse other shapes."""
    validator = validator_for({"$ref": f"#/components/schemas/{schema_name}"})
    assert validator.is_valid(instance) is valid


def test_examples_match_their_schemas() -> None:
    """Every example in the document validates against its media type's schema."""
    checked = 0
    for path, method, operation in operations():
        for response in operation["responses"].values():
            for media in resolve(response).get("content", {}).values():
                for example in media.get("examples", {}).values():
                    errors = list(validator_for(media["schema"]).iter_errors(example["value"]))
                    assert errors == [], f"{method.upper()} {path}: {errors[0].message}"
                    checked += 1
    assert checked >= 2


def test_app_serves_this_file_as_json(tmp_path: Path) -> None:
    """GET /openapi.json answers the file's bytes as application/json."""
    response = build_app(tmp_path).test_client().get("/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.data == OPENAPI_PATH.read_bytes()


def test_app_is_not_in_debug_mode(tmp_path: Path) -> None:
    """The app built from settings runs with debug off."""
    app = build_app(tmp_path)
    assert app.debug is False
