"""Serving mode against TF Serving stand-ins: replicas and failover, deadlines, TF Serving's errors, start-up while
it is down, graceful shutdown, and a proxy that never imports TensorFlow."""

from __future__ import annotations

import io
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from demo_model import random_scene
from harness.processes import HttpServer, free_port, proxy_server
from harness.tfserving import RunningServer, start_server
from tests.support.zoo import Zoo

SMALL = "tf1-frozen-image_tensor"  # the demo detector: the cheapest model to serve


def png(seed: int, size: tuple[int, int] = (320, 240)) -> bytes:
    """A generated scene as PNG bytes."""
    image, _ = random_scene(seed=seed, size=size)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def serve(zoo: Zoo, *extra: str, port: int = 0) -> RunningServer:
    """A stand-in serving the demo detector as ``detector``."""
    base = zoo.models[SMALL].base_path
    return start_server(["--port", str(port), "--model_name", "detector", "--model_base_path", str(base), *extra])


def classify(server: HttpServer, body: bytes, **params: str) -> requests.Response:
    """POST an image to /classify."""
    return requests.post(f"{server.url}/classify", params=params, data=body, timeout=30)


def test_replicas_share_load_survive_a_crash_and_recover(zoo: Zoo) -> None:
    """Three replicas: calls spread over all; one killed under load fails no request (each request's tensor is
    900 KB, over gRPC's default per-call retry buffer of 256 KiB, past which a call is not retried); all down is a
    fast 503; a replica back on its port is used again without restarting the proxy."""
    with ThreadPoolExecutor(max_workers=3) as starting:
        servers = list(starting.map(lambda _: serve(zoo), range(3)))
    try:
        target = "ipv4:" + ",".join(server.address for server in servers)
        # The same picture every time: no frame cache, so that every request reaches a replica.
        with proxy_server({"SERVING_ADDRESS": target, "REQUEST_TIMEOUT_S": "3", "FRAME_CACHE_S": "0"}) as proxy:
            body = png(7, (640, 480))
            for _ in range(30):
                assert classify(proxy, body).status_code == 200
            spread = [server.request_count("Predict", status="OK") for server in servers]
            assert all(count > 0 for count in spread), spread

            def one(index: int) -> int:
                if index == 60:
                    servers[1].kill()
                return classify(proxy, body).status_code

            # 8 clients, a replica killed after 60 requests: 180 more still find the two left.
            with ThreadPoolExecutor(max_workers=8) as pool:
                statuses = list(pool.map(one, range(240)))
            assert not servers[1].alive()
            assert statuses.count(200) == len(statuses), {s: statuses.count(s) for s in set(statuses)}

            for server in servers:
                server.kill()
            started = time.monotonic()
            down = classify(proxy, body)
            assert down.status_code == 503 and "unavailable" in down.json()["error"]
            assert down.headers["Retry-After"].isdigit()
            assert time.monotonic() - started < 3 + 1

            servers[0] = serve(zoo, port=servers[0].port)
            deadline = time.monotonic() + 20
            while classify(proxy, body).status_code != 200:
                assert time.monotonic() < deadline, "the proxy did not recover after a replica came back"
                time.sleep(0.2)  # polling interval
    finally:
        for server in servers:
            server.close()


@pytest.fixture(scope="module")
def slow(zoo: Zoo) -> Iterator[RunningServer]:
    """A stand-in that takes two seconds over every Predict."""
    with serve(zoo, "--delay_ms", "2000") as server:
        yield server


def test_slow_backend_is_a_504_at_the_deadline(slow: RunningServer) -> None:
    """A backend slower than REQUEST_TIMEOUT_S gets 504 at the deadline, and the worker is free again."""
    with proxy_server({"SERVING_ADDRESS": slow.address, "REQUEST_TIMEOUT_S": "1"}, ready_path="/healthz") as proxy:
        started = time.monotonic()
        response = classify(proxy, png(1))
        assert response.status_code == 504 and "REQUEST_TIMEOUT_S" in response.json()["error"]
        assert time.monotonic() - started < 2.5
        assert requests.get(f"{proxy.url}/healthz", timeout=5).status_code == 200


def healthz_over_a_new_connection(port: int) -> str:
    """GET /healthz on a fresh connection: its status, ``refused`` when the connection is refused, ``reset`` when it
    is accepted by the kernel and then dropped without an answer (what a client cannot safely retry)."""
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    except ConnectionRefusedError:
        return "refused"
    with sock:
        try:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = sock.recv(65536)
        except ConnectionResetError:
            return "reset"
    return answer.split(b" ", 2)[1].decode() if answer else "reset"


def test_sigterm_refuses_new_connections_while_requests_finish(slow: RunningServer) -> None:
    """After SIGTERM, while a request in flight finishes, a new connection is refused (a client retries that
    elsewhere), never accepted into a queue nobody serves and reset when the workers exit."""
    proxy = proxy_server({"SERVING_ADDRESS": slow.address, "REQUEST_TIMEOUT_S": "8"}, ready_path="/healthz").start()
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            in_flight = pool.submit(classify, proxy, png(4))
            time.sleep(0.5)  # inside the backend's 2 s delay
            proxy.signal(signal.SIGTERM)
            time.sleep(0.3)  # the workers have (almost surely) taken what was queued and closed their sockets
            # Refused; or, on a machine so loaded that a worker had not yet closed its socket, taken and answered.
            assert healthz_over_a_new_connection(proxy.port) in ("refused", "200")
            assert in_flight.result(timeout=15).status_code == 200
        assert proxy.process is not None and proxy.process.wait(timeout=15) == 0
    finally:
        proxy.close()


def test_sigterm_finishes_in_flight_requests(slow: RunningServer) -> None:
    """SIGTERM lets a request already in flight finish with its answer, then the server exits cleanly."""
    proxy = proxy_server({"SERVING_ADDRESS": slow.address, "REQUEST_TIMEOUT_S": "8"}, ready_path="/healthz").start()
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            in_flight = pool.submit(classify, proxy, png(4))
            time.sleep(0.5)  # well inside the backend's 2 s delay: the request is in flight
            proxy.signal(signal.SIGTERM)
            response = in_flight.result(timeout=15)
        assert response.status_code == 200
        assert proxy.process is not None and proxy.process.wait(timeout=15) == 0
    finally:
        proxy.close()


def test_tf_serving_errors_map_as_its_rest_server_maps_them(zoo: Zoo) -> None:
    """A failure TF Serving answers (RESOURCE_EXHAUSTED here) is the status its own REST server gives (429), with
    its message; the whole table is unit-tested in tests/unit/test_status_codes.py."""
    with (
        serve(zoo, "--fail_with", "RESOURCE_EXHAUSTED") as failing,
        proxy_server({"SERVING_ADDRESS": failing.address}) as proxy,
    ):
        response = classify(proxy, png(1))
        assert response.status_code == 429 and "RESOURCE_EXHAUSTED" in response.json()["error"]


@pytest.mark.parametrize(
    ("env", "status", "message"),
    [
        ({"MODEL_NAME": "nosuch"}, 404, "Servable not found for request: Latest(nosuch)"),
        ({"MODEL_NAME": SMALL, "SIGNATURE_NAME": "nope"}, 502, f'model {SMALL} has no signature "nope"'),
        ({"MODEL_NAME": SMALL, "MODEL_VERSION": "7"}, 404, f"Specific({SMALL}, 7)"),
    ],
)
def test_wrong_model_version_or_signature_is_named(
    stand_in: RunningServer, env: dict[str, str], status: int, message: str
) -> None:
    """A model, version or signature TF Serving lacks is a clear error naming it, not a crash."""
    with proxy_server({"SERVING_ADDRESS": stand_in.address, **env}, ready_path="/healthz") as proxy:
        response = classify(proxy, png(2))
        assert response.status_code == status and message in response.json()["error"]


def test_proxy_starts_while_serving_is_down(tmp_path: Path) -> None:
    """With nothing listening the proxy starts, is not ready, and answers 503 fast (recovery: the replicas test)."""
    env = {"SERVING_ADDRESS": f"127.0.0.1:{free_port()}", "REQUEST_TIMEOUT_S": "2"}
    with proxy_server(env, ready_path="/healthz") as proxy:
        assert requests.get(f"{proxy.url}/readyz", timeout=5).status_code == 503
        started = time.monotonic()
        assert classify(proxy, png(3)).status_code == 503
        assert time.monotonic() - started < 3


def test_serving_mode_never_imports_tensorflow(stand_in: RunningServer, zoo: Zoo) -> None:
    """After answering gRPC-backed requests (pixels and encoded bytes), the proxy process has no TensorFlow."""
    script = textwrap.dedent(
        f"""
        import io, sys
        from PIL import Image
        from proxy import create_app
        from proxy.services import Services
        from proxy.settings import Settings
        env = {{"SERVING_ADDRESS": {stand_in.address!r}, "MODELS": {zoo.models_setting()!r}}}
        app = create_app(Settings.from_env(env))
        body = io.BytesIO(); Image.new("RGB", (64, 48), (220, 40, 40)).save(body, format="PNG")
        for model in ("tf1-frozen-image_tensor", "tf2-tf_example"):
            response = app.test_client().post(f"/classify?threshold=0.1&model={{model}}", data=body.getvalue())
            assert response.status_code == 200, response.get_data(as_text=True)
            print("ANSWER", response.get_json())
        Services.of(app).close()
        print("LOADED", sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tensorflow_serving")))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith(("ANSWER", "LOADED"))]
    assert lines == ["ANSWER {'Red': 16}", "ANSWER {'Red': 16}", "LOADED []"]


def test_a_batchs_images_are_in_flight_together(slow: RunningServer) -> None:
    """The four images of a JSON batch are sent to TF Serving at once: against a backend taking 2 s per call, the
    batch answers in about one call's time, not four."""
    import base64

    picture = base64.b64encode(png(5)).decode()
    with proxy_server({"SERVING_ADDRESS": slow.address, "REQUEST_TIMEOUT_S": "9"}, ready_path="/healthz") as proxy:
        started = time.monotonic()
        answer = requests.post(f"{proxy.url}/classify", json={"images": [picture] * 4}, timeout=30)
        elapsed = time.monotonic() - started
    assert answer.status_code == 200 and len(answer.json()) == 4
    assert all(isinstance(element, dict) and "error" not in element for element in answer.json())
    assert elapsed < 2 * 2.0 + 1, f"{elapsed:.1f} s: the calls did not overlap"
