"""Prometheus metrics, summed over every worker process (multiprocess mode under gunicorn). No HTTP here."""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest, multiprocess

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Methods a client may send that get their own label value; any other name shares "OTHER", so a client inventing
# method names cannot grow /metrics without bound.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT"})

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
    "classifyobjects_decode_seconds",
    "Time to decode (and scale, or re-encode) a request image.",
    buckets=_LATENCY_BUCKETS,
)
BACKEND_SECONDS = Histogram(
    "classifyobjects_backend_seconds",
    "Time the backend (TF Serving or embedded TF) took to predict one image.",
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
    "Size of request images' encoded bytes.",
    buckets=(1e3, 1e4, 1e5, 5e5, 1e6, 5e6, 1e7, 2e7),
)
FRAME_CACHE = Counter(
    "classifyobjects_frame_cache_total",
    "Frames answered from the frame cache (hit: the model's output for the same bytes, or waited for) or not (miss).",
    ["result"],
)
CONNECTIONS_REFUSED = Counter(
    "classifyobjects_connections_refused_total",
    "Connections answered 503 at once because the process held MAX_CONNECTIONS.",
)


def method_label(method: str) -> str:
    """The metrics label for an HTTP method: itself when it is a standard one, else ``OTHER``."""
    return method if method in KNOWN_METHODS else "OTHER"


# Each labelled series, looked up once: ``labels()`` takes a lock and builds its key on every call. Bounded as the
# label values are: the app's routes, KNOWN_METHODS and OTHER, HTTP statuses, the configured models.
_SERIES: dict[tuple[int, tuple[str, ...]], Any] = {}


def _series(metric: Counter | Histogram, *values: str) -> Any:
    """``metric.labels(*values)``, remembered."""
    key = (id(metric), values)
    found = _SERIES.get(key)
    if found is None:
        found = _SERIES[key] = metric.labels(*values)
    return found


def count_request(route: str, method: str, status: int, seconds: float) -> None:
    """Count and time one answered request."""
    _series(REQUESTS, route, method_label(method), str(status)).inc()
    _series(REQUEST_SECONDS, route).observe(seconds)


def time_backend(model: str, seconds: float) -> None:
    """Time one model call."""
    _series(BACKEND_SECONDS, model).observe(seconds)


def payload() -> tuple[bytes, str]:
    """The Prometheus exposition of every worker (multiprocess mode under gunicorn) or of this process."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # prometheus_client's own switch, set by `python -m proxy`
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
