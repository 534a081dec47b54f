"""A bounded load test on loopback: thousands of mixed good and bad requests from 16 concurrent clients.

The proxy runs in gRPC mode against the TF Serving stand-in, each in its own process: the proxy then holds no
TensorFlow, so the resident memory of its gunicorn workers is the proxy's own (Flask, decoding, gRPC), which is
what a leak would grow, without TensorFlow's allocator pools blurring it. Every request's status must be the one
its kind expects, and the workers' memory at the end may be at most 10% above what it was at the 1,000th request.
"""

from __future__ import annotations

import base64
import io
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
import requests
from PIL import Image

from demo_model import random_scene
from harness.processes import HttpServer, children, proxy_server, rss_kib
from harness.tfserving import RunningServer
from tests.support.zoo import Zoo

TOTAL_REQUESTS = 4000
CLIENTS = 16
FIRST_SAMPLE_AT = 1000
MAX_RSS_GROWTH = 0.10
MAX_BODY_BYTES = 1_000_000
TIME_BUDGET_S = 150  # a safety net; the run takes a fraction of it on 2 cores


def encode(image: Image.Image, fmt: str) -> bytes:
    """The picture as file bytes in ``fmt``."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


SCENE, _ = random_scene(seed=9, size=(160, 120))
JPEG = encode(SCENE, "JPEG")
PNG = encode(SCENE, "PNG")
B64 = base64.b64encode(JPEG).decode()


@dataclass(frozen=True)
class Kind:
    """A kind of request, how often it comes, and the status it must get."""

    name: str
    weight: int
    status: int
    send: Callable[[requests.Session, str, int], int]


def _post(path: str, **kwargs: object) -> Callable[[requests.Session, str, int], int]:
    def send(session: requests.Session, url: str, port: int) -> int:
        return session.post(url + path, timeout=30, **kwargs).status_code  # type: ignore[arg-type]

    return send


def _chunked(path: str, data: bytes) -> Callable[[requests.Session, str, int], int]:
    # A generator body makes requests send Transfer-Encoding: chunked; a fresh one per request.
    def send(session: requests.Session, url: str, port: int) -> int:
        return session.post(url + path, data=iter([data[:500], data[500:]]), timeout=30).status_code

    return send


def _call(method: str, path: str) -> Callable[[requests.Session, str, int], int]:
    def send(session: requests.Session, url: str, port: int) -> int:
        return session.request(method, url + path, timeout=30).status_code

    return send


def _fresh_post(path: str, data: bytes) -> Callable[[requests.Session, str, int], int]:
    # Bodies the server refuses unread get a connection of their own: the server closes it after answering.
    def send(session: requests.Session, url: str, port: int) -> int:
        return requests.post(url + path, data=data, timeout=30).status_code

    return send


def _raw(request: bytes) -> Callable[[requests.Session, str, int], int]:
    # Requests the front refuses before the app (a huge request line or header): sent on a socket of their own.
    def send(session: requests.Session, url: str, port: int) -> int:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(request)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        return int(answer.split(b" ", 2)[1])

    return send


KINDS = [
    Kind("jpeg-counts", 20, 200, _post("/classify", data=JPEG, headers={"Content-Type": "image/jpeg"})),
    Kind("png-verbose", 10, 200, _post("/classify?verbose=true&threshold=0.5", data=PNG)),
    Kind("multipart", 5, 200, _post("/classify", files={"image": ("scene.jpg", JPEG, "image/jpeg")})),
    Kind("annotated", 2, 200, _post("/classify?format=png", data=JPEG)),
    Kind("deepstack", 3, 200, _post("/v1/vision/detection", files={"image": ("scene.png", PNG, "image/png")})),
    Kind("json-batch", 3, 200, _post("/classify", json={"images": [B64, B64, "!!"]})),
    Kind("chunked", 2, 200, _chunked("/classify", JPEG)),
    Kind("batch-too-big", 1, 413, _post("/classify", json={"images": [B64] * 17})),
    Kind("garbage", 8, 400, _post("/classify", data=b"\x00garbage" * 50, headers={"Content-Type": "image/jpeg"})),
    Kind("truncated", 5, 400, _post("/classify", data=JPEG[: len(JPEG) // 2])),
    Kind("text", 4, 415, _post("/classify", data=b"hello", headers={"Content-Type": "text/plain"})),
    Kind("empty", 3, 400, _post("/classify", data=b"")),
    Kind("bad-threshold", 5, 400, _post("/classify?threshold=abc", data=JPEG)),
    Kind("bad-verbose", 3, 400, _post("/classify?verbose=maybe", data=JPEG)),
    Kind("unknown-class", 2, 400, _post("/classify?classes=unicorn", data=JPEG)),
    Kind("get-classify", 4, 405, _call("GET", "/classify")),
    Kind("delete-healthz", 2, 405, _call("DELETE", "/healthz")),
    Kind("unknown-path", 4, 404, _call("GET", "/no/such/path")),
    Kind("healthz", 6, 200, _call("GET", "/healthz")),
    Kind("readyz", 4, 200, _call("GET", "/readyz")),
    Kind("metrics", 2, 200, _call("GET", "/metrics")),
    Kind("too-large", 1, 413, _fresh_post("/classify", b"\x00" * (MAX_BODY_BYTES + 1))),
    Kind("long-line", 1, 414, _raw(b"GET /classify?x=" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")),
    Kind("long-header", 1, 431, _raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n")),
]


def worker_rss_kib(master_pid: int) -> dict[int, int]:
    """VmRSS (KiB) of each child process of ``master_pid``: gunicorn's workers."""
    return {pid: rss_kib(pid) for pid in children(master_pid)}


@pytest.fixture(scope="module")
def load_proxy(stand_in: RunningServer, zoo: Zoo) -> Iterator[HttpServer]:
    """A proxy process of this test's own, in gRPC mode, with two workers, serving the demo detector."""
    demo = zoo.models["tf1-frozen-image_tensor"]
    env = {
        "SERVING_ADDRESS": stand_in.address,
        "MODELS": f"{demo.name}::{demo.base_path}",
        "WEB_CONCURRENCY": "2",
        "MAX_BODY_BYTES": str(MAX_BODY_BYTES),
        "LOG_LEVEL": "warning",
    }
    with proxy_server(env) as server:
        yield server


def test_mixed_load_gets_expected_statuses_and_memory_stays_flat(load_proxy: HttpServer) -> None:
    """4,000 mixed requests from 16 clients all get their kind's status; worker RSS grows under 10% after 1,000."""
    assert load_proxy.process is not None
    master = load_proxy.process.pid
    rng = random.Random(20240611)  # noqa: S311  (a fixed request mix, not cryptography)
    plan = rng.choices(KINDS, weights=[kind.weight for kind in KINDS], k=TOTAL_REQUESTS)
    assert {kind.name for kind in plan} == {kind.name for kind in KINDS}

    sessions = threading.local()
    lock = threading.Lock()
    done = 0
    rss_at_first_sample: dict[int, int] = {}
    unexpected: list[tuple[str, int | str]] = []
    started = time.monotonic()

    def run(kind: Kind) -> None:
        nonlocal done
        if time.monotonic() - started > TIME_BUDGET_S:
            return  # counted as missing below; the loop must stop by itself
        if not hasattr(sessions, "session"):
            sessions.session = requests.Session()
        try:
            status: int | str = kind.send(sessions.session, load_proxy.url, load_proxy.port)
        except (requests.RequestException, OSError) as exc:
            status = f"{type(exc).__name__}: {exc}"
        with lock:
            if status != kind.status:
                unexpected.append((kind.name, status))
            done += 1
            if done == FIRST_SAMPLE_AT:
                rss_at_first_sample.update(worker_rss_kib(master))

    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        list(pool.map(run, plan))
    elapsed = time.monotonic() - started
    rss_at_end = worker_rss_kib(master)

    assert done == TOTAL_REQUESTS, f"only {done} requests in {elapsed:.0f}s"
    assert unexpected == [], f"{len(unexpected)} unexpected statuses: {Counter(unexpected).most_common(10)}"
    assert len(rss_at_first_sample) == 2
    # Same worker processes at both samples: none crashed or was recycled (which would hide a leak).
    assert set(rss_at_end) == set(rss_at_first_sample)
    before, after = sum(rss_at_first_sample.values()), sum(rss_at_end.values())
    assert after <= before * (1 + MAX_RSS_GROWTH), (
        f"worker RSS grew from {before} KiB to {after} KiB ({after / before - 1:.1%}) "
        f"per worker {rss_at_first_sample} -> {rss_at_end}"
    )
    print(f"{done} requests in {elapsed:.1f}s; worker RSS {rss_at_first_sample} -> {rss_at_end} KiB")
    assert load_proxy.alive()
