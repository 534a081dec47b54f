"""Metrics (Prometheus), request ids and structured JSON access logs."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
import uuid
from typing import Any

from flask import Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest, multiprocess

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# Module-level: prometheus_client registers each metric once per process, however many apps tests build.
REQUESTS = Counter(
    "classifyobjects_http_requests_total",
    "HTTP requests answered, by route, method and status.",
    ["route", "method", "status"],
)
REQUEST_SECONDS = Histogram(
    "classifyobjects_http_request_duration_seconds",
    "Time to answer a request, by route.",
    ["route"],
    buckets=_LATENCY_BUCKETS,
)
DECODE_SECONDS = Histogram(
    "classifyobjects_decode_seconds", "Time to decode (and scale) the request image.", buckets=_LATENCY_BUCKETS
)
BACKEND_SECONDS = Histogram(
    "classifyobjects_backend_seconds",
    "Time the backend (TF Serving or embedded TF) took to predict.",
    ["model"],
    buckets=_LATENCY_BUCKETS,
)
IMAGE_PIXELS = Histogram(
    "classifyobjects_image_pixels",
    "Size of request images (width x height, as sent).",
    buckets=(1e4, 1e5, 3e5, 1e6, 3e6, 1e7, 3e7, 5e7),
)
IMAGE_BYTES = Histogram(
    "classifyobjects_image_bytes",
    "Size of request image bodies.",
    buckets=(1e3, 1e4, 1e5, 5e5, 1e6, 5e6, 1e7, 2e7),
)

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
access_log = logging.getLogger("classifyobjects.access")


def metrics_payload() -> tuple[bytes, str]:
    """The Prometheus exposition of every worker (multiprocess mode under gunicorn) or of this process."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


def configure_access_log() -> None:
    """One JSON object per line on stdout; the message is already JSON."""
    if access_log.handlers:
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access_log.addHandler(handler)
    access_log.setLevel(logging.INFO)
    access_log.propagate = False


def start_request() -> None:
    """Remember when the request started and its id (the client's X-Request-ID when sane, else a new one)."""
    g.started = time.perf_counter()
    offered = request.headers.get("X-Request-ID", "")
    g.request_id = offered if _REQUEST_ID.match(offered) else uuid.uuid4().hex


def finish_request(response: Response) -> Response:
    """Count, time and log the request; echo its id."""
    elapsed = time.perf_counter() - g.get("started", time.perf_counter())
    route = request.url_rule.rule if request.url_rule is not None else "unmatched"
    REQUESTS.labels(route=route, method=request.method, status=str(response.status_code)).inc()
    REQUEST_SECONDS.labels(route=route).observe(elapsed)
    request_id = g.get("request_id", "")
    response.headers["X-Request-ID"] = request_id
    entry: dict[str, Any] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "request_id": request_id,
        "remote_addr": request.remote_addr,
        "method": request.method,
        "path": request.path,
        "route": route,
        "status": response.status_code,
        "duration_ms": round(elapsed * 1000, 2),
        "request_bytes": request.content_length or 0,
        "response_bytes": response.calculate_content_length() or 0,
        "user_agent": request.user_agent.string[:200],
    }
    if response.status_code >= 400 and response.is_json:
        entry["error"] = (response.get_json(silent=True) or {}).get("error")
    access_log.info(json.dumps(entry, separators=(",", ":")))
    return response
