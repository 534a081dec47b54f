"""The gRPC path: ``python -m proxy`` with SERVING_ADDRESS against TF Serving stand-ins over real gRPC."""

from __future__ import annotations

import io
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from converter import convert
from demo_model import export_tf2_saved_model, random_scene
from tests.support.answers import assert_same_answer
from tests.support.fake_tfserving import RunningServer, start_server
from harness.processes import HttpServer, free_port, proxy_server

# TF Serving (and its stand-in) runs the graph in a TF1 session, the embedded mode as a tf.function: the kernels
# chosen differ (oneDNN or not), so scores may differ in the fourth decimal, as they would against the real server.
TOLERANCE = 1e-3


def png(seed: int, size: tuple[int, int] = (640, 480)) -> bytes:
    """A generated scene as PNG bytes."""
    buffer = io.BytesIO()
    random_scene(seed=seed, size=size)[0].save(buffer, format="PNG")
    return buffer.getvalue()


def serve(base: Path, *extra: str, port: int = 0) -> RunningServer:
    """A TF Serving stand-in serving ``base`` as model ``detector``."""
    return start_server(["--port", str(port), "--model_name", "detector", "--model_base_path", str(base), *extra])


def classify(server: HttpServer, body: bytes, **params: str) -> requests.Response:
    """POST the body to /classify."""
    return requests.post(f"{server.url}/classify", params=params, data=body, timeout=30)


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_serving_mode_answers_as_embedded_mode(grpc_proxy: HttpServer, embedded_proxy: HttpServer, seed: int) -> None:
    """For the same pictures and thresholds, the gRPC path answers exactly what the embedded path answers."""
    body = png(seed, size=(480 + seed * 40, 360))
    for threshold in ["0.3", "0.75", "0.9"]:
        for verbose in ["false", "true"]:
            via_grpc = classify(grpc_proxy, body, threshold=threshold, verbose=verbose)
            embedded = classify(embedded_proxy, body, threshold=threshold, verbose=verbose)
            assert via_grpc.status_code == embedded.status_code == 200
            assert_same_answer(via_grpc.json(), embedded.json(), tolerance=TOLERANCE)


def test_readiness_reports_the_served_version(grpc_proxy: HttpServer) -> None:
    """``/readyz`` asks TF Serving's ModelService and reports the AVAILABLE version."""
    ready = requests.get(f"{grpc_proxy.url}/readyz", timeout=5)
    assert ready.status_code == 200
    assert ready.json() == {"ready": True, "model": "detector", "version": 1}


def test_large_image_passes_the_4mb_grpc_default(grpc_proxy: HttpServer, embedded_proxy: HttpServer) -> None:
    """A 2000x1500 picture (9 MB as a tensor, over gRPC's 4 MB default) is answered like the embedded mode."""
    body = png(9, size=(2000, 1500))
    via_grpc = classify(grpc_proxy, body, verbose="true")
    assert via_grpc.status_code == 200, via_grpc.text
    assert_same_answer(via_grpc.json(), classify(embedded_proxy, body, verbose="true").json(), tolerance=TOLERANCE)


def test_tf2_export_is_served_through_the_same_path(
    tmp_path_factory: pytest.TempPathFactory, embedded_proxy: HttpServer, demo_model_dir: Path
) -> None:
    """A TF2-style export (``input_tensor``, batch fixed at 1) needs no configuration and answers the same JSON."""
    root = tmp_path_factory.mktemp("tf2")
    export = export_tf2_saved_model(root / "export" / "saved_model")
    base = root / "models" / "detector"
    convert(export.parent, base)
    with (
        serve(base) as server,
        proxy_server({"SERVING_ADDRESS": server.address, "MODEL_DIR": str(demo_model_dir)}) as proxy,
    ):
        for seed in [5, 6]:
            body = png(seed)
            answer = classify(proxy, body, verbose="true", threshold="0.5")
            assert answer.status_code == 200, answer.text
            embedded = classify(embedded_proxy, body, verbose="true", threshold="0.5")
            assert_same_answer(answer.json(), embedded.json(), tolerance=TOLERANCE)


def test_replicas_share_load_survive_a_crash_and_recover(model_base: Path, demo_model_dir: Path) -> None:
    """Three replicas: calls spread over all; one killed under load fails no request; all down is a fast 503;
    a replica back on its port is used again without restarting the proxy."""
    servers = [serve(model_base) for _ in range(3)]
    try:
        target = "ipv4:" + ",".join(server.address for server in servers)
        env = {"SERVING_ADDRESS": target, "MODEL_DIR": str(demo_model_dir), "REQUEST_TIMEOUT_S": "3"}
        with proxy_server(env) as proxy:
            body = png(7, size=(320, 240))
            for _ in range(30):
                assert classify(proxy, body).status_code == 200
            spread = [server.request_count("Predict", status="OK") for server in servers]
            assert all(count > 0 for count in spread), spread

            def one(index: int) -> int:
                if index == 100:
                    servers[1].kill()
                return classify(proxy, body).status_code

            with ThreadPoolExecutor(max_workers=8) as pool:
                statuses = list(pool.map(one, range(400)))
            assert not servers[1].alive()
            assert statuses.count(200) == len(statuses), {s: statuses.count(s) for s in set(statuses)}

            for server in servers:
                server.kill()
            started = time.monotonic()
            down = classify(proxy, body)
            elapsed = time.monotonic() - started
            assert down.status_code == 503
            assert "unavailable" in down.json()["error"]
            assert down.headers["Retry-After"].isdigit()
            assert elapsed < 3 + 1

            port = servers[0].port
            servers[0] = serve(model_base, port=port)
            deadline = time.monotonic() + 20
            while classify(proxy, body).status_code != 200:
                assert time.monotonic() < deadline, "the proxy did not recover after a replica came back"
                time.sleep(0.2)  # polling interval
            assert proxy.alive()
    finally:
        for server in servers:
            server.close()


def test_slow_backend_is_a_504_at_the_deadline(model_base: Path, demo_model_dir: Path) -> None:
    """A backend slower than REQUEST_TIMEOUT_S gets 504 at the deadline, and the worker is free again."""
    with serve(model_base, "--delay_ms", "3000") as slow:
        env = {"SERVING_ADDRESS": slow.address, "MODEL_DIR": str(demo_model_dir), "REQUEST_TIMEOUT_S": "1"}
        with proxy_server(env, ready_path="/healthz") as proxy:
            started = time.monotonic()
            response = classify(proxy, png(1))
            elapsed = time.monotonic() - started
            assert response.status_code == 504
            assert "REQUEST_TIMEOUT_S" in response.json()["error"]
            assert elapsed < 2.5
            assert requests.get(f"{proxy.url}/healthz", timeout=5).status_code == 200


@pytest.mark.parametrize(
    ("code", "status"), [("RESOURCE_EXHAUSTED", 429), ("INVALID_ARGUMENT", 400), ("INTERNAL", 502)]
)
def test_grpc_status_maps_to_http(model_base: Path, demo_model_dir: Path, code: str, status: int) -> None:
    """TF Serving's failures map to HTTP as its own REST server maps them, with a JSON message."""
    with serve(model_base, "--fail_with", code) as failing:
        env = {"SERVING_ADDRESS": failing.address, "MODEL_DIR": str(demo_model_dir)}
        with proxy_server(env) as proxy:
            response = classify(proxy, png(1))
            assert response.status_code == status
            assert code in response.json()["error"]


@pytest.mark.parametrize(
    ("env", "status", "message"),
    [
        ({"MODEL_NAME": "nosuch"}, 404, "Servable not found for request: Latest(nosuch)"),
        ({"SIGNATURE_NAME": "nope"}, 502, 'model detector has no signature "nope" (it has: serving_default)'),
        ({"MODEL_VERSION": "7"}, 404, "Specific(detector, 7)"),
    ],
)
def test_wrong_model_or_signature_is_named(
    serving: RunningServer, demo_model_dir: Path, env: dict[str, str], status: int, message: str
) -> None:
    """A model, version or signature TF Serving lacks is a clear error naming it, not a crash."""
    with proxy_server(
        {"SERVING_ADDRESS": serving.address, "MODEL_DIR": str(demo_model_dir), **env}, ready_path="/healthz"
    ) as proxy:
        response = classify(proxy, png(2))
        assert response.status_code == status
        assert message in response.json()["error"]


def test_proxy_starts_while_serving_is_down_and_recovers(model_base: Path, demo_model_dir: Path) -> None:
    """With nothing listening the proxy starts, answers 503 fast, and serves once TF Serving comes up."""
    port = free_port()
    env = {"SERVING_ADDRESS": f"127.0.0.1:{port}", "MODEL_DIR": str(demo_model_dir), "REQUEST_TIMEOUT_S": "2"}
    with proxy_server(env, ready_path="/healthz") as proxy:
        assert requests.get(f"{proxy.url}/readyz", timeout=5).status_code == 503
        assert classify(proxy, png(3)).status_code == 503
        with serve(model_base, port=port):
            # Each gunicorn worker has its own channel, reconnecting with a backoff of at most 1 s: poll the route.
            deadline = time.monotonic() + 20
            while classify(proxy, png(3)).status_code != 200:
                assert time.monotonic() < deadline
                time.sleep(0.2)  # polling interval
            while requests.get(f"{proxy.url}/readyz", timeout=5).status_code != 200:
                assert time.monotonic() < deadline
                time.sleep(0.2)  # polling interval


def test_serving_mode_never_imports_tensorflow(serving: RunningServer, demo_model_dir: Path) -> None:
    """After answering a gRPC-backed request, the proxy process has not imported TensorFlow."""
    script = textwrap.dedent(
        f"""
        import io, sys
        from PIL import Image
        from proxy import create_app
        from proxy.settings import Settings
        env = {{"SERVING_ADDRESS": {serving.address!r}, "MODEL_DIR": {str(demo_model_dir)!r}}}
        app = create_app(Settings.from_env(env))
        body = io.BytesIO(); Image.new("RGB", (64, 48), (220, 40, 40)).save(body, format="PNG")
        response = app.test_client().post("/classify?threshold=0.1", data=body.getvalue())
        assert response.status_code == 200, response.get_data(as_text=True)
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tensorflow_serving"))
        print(response.get_json(), loaded)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "{'Red': 16} []"  # a red picture fills all 16 grid cells


def test_sigterm_finishes_in_flight_requests(model_base: Path, demo_model_dir: Path) -> None:
    """SIGTERM lets a request already in flight finish with its answer, then the server exits cleanly."""
    with serve(model_base, "--delay_ms", "2000") as slow:
        env = {"SERVING_ADDRESS": slow.address, "MODEL_DIR": str(demo_model_dir), "REQUEST_TIMEOUT_S": "8"}
        proxy = proxy_server(env, ready_path="/healthz").start()
        try:
            with ThreadPoolExecutor(max_workers=1) as pool:
                in_flight = pool.submit(classify, proxy, png(4))
                time.sleep(0.5)  # well inside the backend's 2 s delay: the request is in flight
                proxy.signal(signal.SIGTERM)
                response = in_flight.result(timeout=15)
            assert response.status_code == 200
            assert proxy.process is not None
            assert proxy.process.wait(timeout=15) == 0
        finally:
            proxy.close()


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory, model_base: Path) -> dict[str, Path]:
    """Base paths of two models (the converted TF1 demo, a TF2 export) and a French label map for the second."""
    root = tmp_path_factory.mktemp("two")
    export = export_tf2_saved_model(root / "export" / "saved_model")
    convert(export.parent, root / "formes")
    french = root / "formes.pbtxt"
    french.write_text(
        "".join(
            f'item {{ id: {i} display_name: "{n}" }}\n' for i, n in enumerate(["rouge", "vert", "bleu", "jaune"], 1)
        )
    )
    return {"detector": model_base, "formes": root / "formes", "formes_labels": french}


def test_several_models_each_with_its_label_map(two_models: dict[str, Path], demo_model_dir: Path) -> None:
    """With MODELS set, ``?model=`` picks the model (default the first), each answering with its own label map;
    /v1/models lists them with TF Serving's version states; DeepStack's custom route reaches the second."""
    args = ["--model_name", "formes", "--model_base_path", str(two_models["formes"])]
    with serve(two_models["detector"], *args) as server:
        models = f"detector:{demo_model_dir / 'label_map.pbtxt'},formes:{two_models['formes_labels']}"
        with proxy_server({"SERVING_ADDRESS": server.address, "MODELS": models}) as proxy:
            body = png(8)
            default = classify(proxy, body, threshold="0.5").json()
            french = classify(proxy, body, threshold="0.5", model="formes").json()
            names = {"Red": "Rouge", "Green": "Vert", "Blue": "Bleu", "Yellow": "Jaune"}
            assert default
            assert french == {names[name]: count for name, count in default.items()}
            assert classify(proxy, body, model="detector").json() == classify(proxy, body).json()

            unknown = classify(proxy, body, model="nope")
            assert unknown.status_code == 404
            assert "unknown model 'nope'; this server has: detector, formes" in unknown.json()["error"]

            listing = requests.get(f"{proxy.url}/v1/models", timeout=10).json()
            assert listing == {
                "models": [
                    {
                        "name": "detector",
                        "default": True,
                        "classes": 4,
                        "versions": [{"version": 1, "state": "AVAILABLE"}],
                    },
                    {
                        "name": "formes",
                        "default": False,
                        "classes": 4,
                        "versions": [{"version": 1, "state": "AVAILABLE"}],
                    },
                ]
            }
            custom = requests.post(
                f"{proxy.url}/v1/vision/custom/formes", files={"image": ("i.png", body, None)}, timeout=30
            ).json()
            assert custom["success"] is True
            assert {p["label"] for p in custom["predictions"]} <= {"rouge", "vert", "bleu", "jaune"}
            assert requests.get(f"{proxy.url}/readyz", timeout=10).json()["ready"] is True
