"""Schemathesis against the live server: requests generated from its /openapi.json get answers the description allows.

Each documented operation gets positive requests (valid by the description) and negative ones (violating it). The
tests drive schemathesis' Hypothesis strategies directly: its fixture-based pytest loader sets ``Function._nodeid``,
which pytest 9 no longer has, and its collector gives every operation the same test id.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

import proxy
from demo_model import random_scene
from harness.processes import HttpServer

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
MAX_EXAMPLES = 25


def _pictures(fmt: str) -> list[bytes]:
    """Demo scenes as ``fmt`` files: answers to them hold detections, so their schemas are really checked."""
    files = []
    for seed in range(4):
        buffer = io.BytesIO()
        random_scene(seed=seed, size=(160, 120))[0].save(buffer, format=fmt)
        files.append(buffer.getvalue())
    return files


# Raw image bodies: real pictures or random bytes, instead of schemathesis' 1x1 samples (which find nothing).
# The registration is process-wide; no other test module uses schemathesis.
for _media_type, _fmt in [("image/jpeg", "JPEG"), ("image/png", "PNG"), ("application/octet-stream", "PNG")]:
    schemathesis.openapi.media_type(_media_type, st.sampled_from(_pictures(_fmt)) | st.binary(max_size=256))
# The operations, read from the file the server serves, so that each one is its own test with its own id.
_DOCUMENT = json.loads(Path(proxy.__file__).with_name("openapi.json").read_text(encoding="utf-8"))
OPERATIONS = [(method.upper(), path, op) for path, item in _DOCUMENT["paths"].items() for method, op in item.items()]
# Negative requests need something to violate: the GET routes take no parameters but a free-form header.
CASES = [
    pytest.param(method, path, mode, id=f"{method} {path} {mode.value}")
    for method, path, op in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode is GenerationMode.POSITIVE or "requestBody" in op
]


@pytest.fixture(scope="module")
def live_schema(embedded_proxy: HttpServer) -> Any:
    """The description as the running server publishes it; requests go to that server."""
    return schemathesis.openapi.from_url(f"{embedded_proxy.url}/openapi.json", timeout=10)


@pytest.mark.parametrize(("method", "path", "mode"), CASES)
def test_answers_conform_to_the_description(
    live_schema: Any, embedded_proxy: HttpServer, method: str, path: str, mode: GenerationMode
) -> None:
    """No generated request gets a 5xx, or a status, content type, header or body the description does not allow."""
    operation = live_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,  # the same requests on every run: CI never meets a new example by chance
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    )
    def conforms(case: Any) -> None:
        case.call_and_validate(checks=CHECKS, timeout=30)

    conforms()
    assert embedded_proxy.alive()
