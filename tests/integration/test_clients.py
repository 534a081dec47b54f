"""The clients people already point at DeepStack / CodeProject.AI servers, run against the proxy in both modes:
the PyPI libraries Home Assistant uses (deepstack-python, codeproject-ai-api), Frigate's plugin's exact request and
parsing, and the Node-RED node's own request code.

``make clients`` installs the Python libraries into .venv/clients, off the project's import path (both wheels
carry a top-level ``tests`` package), and the Node-RED node into tests/clients/node_modules.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import requests
from PIL import Image

from demo_model import Shape, draw_scene
from harness.processes import HttpServer, proxy_server
from harness.tfserving import RunningServer
from tests.conftest import API_KEY
from tests.support.zoo import CROWD, PERSON_ENCODED, Zoo

REPO = Path(__file__).resolve().parents[2]
PYTHON_CLIENTS = REPO / ".venv" / "clients"
NODE_CLIENT = REPO / "tests" / "clients"


@pytest.fixture(scope="module")
def libraries() -> Iterator[dict[str, ModuleType]]:
    """deepstack.core and codeprojectai.core, imported from their own directory, appended to the path (the suite's
    own ``tests`` package, already imported, keeps precedence over theirs)."""
    if not (PYTHON_CLIENTS / "deepstack").is_dir():
        pytest.fail("the client libraries are missing: `make test` (make clients) installs them into .venv/clients")
    sys.path.append(str(PYTHON_CLIENTS))
    try:
        import codeprojectai.core
        import deepstack.core

        assert sys.modules["tests"].__file__ == str(REPO / "tests" / "__init__.py")
        yield {"deepstack": deepstack.core, "codeprojectai": codeprojectai.core}
    finally:
        sys.path.remove(str(PYTHON_CLIENTS))


def test_home_assistants_deepstack_library(
    any_proxy: HttpServer, libraries: dict[str, ModuleType], photos: dict[str, bytes]
) -> None:
    """deepstack-python finds the cat and the person with the default COCO model, and the person with the custom
    person model, as Home Assistant calls it."""
    ds = libraries["deepstack"]
    default = ds.DeepstackObject(ip="127.0.0.1", port=any_proxy.port, api_key="", timeout=30, min_confidence=0.6)
    assert ds.get_objects(default.detect(photos["both"])) == ["cat", "person"]
    custom = ds.DeepstackObject(ip="127.0.0.1", port=any_proxy.port, timeout=30, custom_model=PERSON_ENCODED)
    assert ds.get_objects_summary(custom.detect(photos["person"])) == {"person": 1}
    assert custom.detect(photos["cat"]) == []


def test_deepstack_library_with_a_key(
    keyed_proxy: HttpServer, libraries: dict[str, ModuleType], photos: dict[str, bytes]
) -> None:
    """The library's api_key form field opens a keyed server; a wrong key is the library's own 401 error."""
    ds = libraries["deepstack"]
    good = ds.DeepstackObject(ip="127.0.0.1", port=keyed_proxy.port, api_key=API_KEY, timeout=30)
    assert ds.get_objects(good.detect(photos["person"])) == ["person"]
    bad = ds.DeepstackObject(ip="127.0.0.1", port=keyed_proxy.port, api_key="wrong", timeout=30)
    with pytest.raises(ds.DeepstackException, match="status code: 401"):
        bad.detect(photos["person"])


def test_codeproject_ai_library(
    any_proxy: HttpServer, libraries: dict[str, ModuleType], photos: dict[str, bytes]
) -> None:
    """codeproject-ai-api finds the person with the default and the custom model."""
    cpai = libraries["codeprojectai"]
    for custom in ("", PERSON_ENCODED):
        client = cpai.CodeProjectAIObject(ip="127.0.0.1", port=any_proxy.port, timeout=30, custom_model=custom)
        assert [p["label"] for p in client.detect(photos["cameraman"]) if p["confidence"] > 0.75] == ["person"]


def frigate_frame(photo: bytes, side: int = 320) -> bytes:
    """A frame as Frigate sends it: the model-input-sized picture, JPEG (Image.fromarray(...).save(format="JPEG"))."""
    frame = np.asarray(Image.open(io.BytesIO(photo)).convert("RGB").resize((side, side)))
    output = io.BytesIO()
    Image.fromarray(frame.astype(np.uint8)).save(output, format="JPEG")
    return output.getvalue()


def frigate_detect(session: requests.Session, url: str, frame: bytes, labels: list[str], side: int = 320) -> np.ndarray:
    """Frigate's DeepStack plugin (frigate/detectors/plugins/deepstack.py): its request and its parsing, as written
    there, including the 20-row array a 21st qualifying prediction would overflow."""
    response = session.post(url, data={"api_key": ""}, files={"image": frame}, timeout=5)  # Frigate: 0.1 s
    response_json = response.json()
    detections = np.zeros((20, 6), np.float32)
    if response_json.get("predictions") is None:
        return detections
    for i, detection in enumerate(response_json.get("predictions")):
        if detection["confidence"] < 0.4:
            break
        label = labels.index(detection["label"]) if detection["label"] in labels else -1
        if label < 0:
            break
        detections[i] = [
            label,
            float(detection["confidence"]),
            detection["y_min"] / side,
            detection["x_min"] / side,
            detection["y_max"] / side,
            detection["x_max"] / side,
        ]
    return detections


def frigate_labels() -> list[str]:
    """The labels Frigate's default COCO labelmap knows, by COCO id (an id it lacks is a blank)."""
    from converter.default_model import COCO_LABEL_MAP
    from odapi.labels import read_label_map

    names = read_label_map(COCO_LABEL_MAP)[1]
    return [names.get(class_id, "").lower() for class_id in range(max(names) + 1)]


def test_frigates_exact_request(any_proxy: HttpServer, photos: dict[str, bytes]) -> None:
    """Frigate's keep-alive session, multipart image without a type and empty api_key get the cat and the person of
    a 320x320 frame as labels Frigate knows, best first, boxes normalized by the frame's own size; a frame of the
    cat alone gets the cat alone."""
    labels = frigate_labels()
    with requests.Session() as session:
        url = f"{any_proxy.url}/v1/vision/detection"
        rows = frigate_detect(session, url, frigate_frame(photos["both"]), labels)
        again = frigate_detect(session, url, frigate_frame(photos["cat"]), labels)
    found = rows[rows[:, 1] > 0]
    assert {labels[int(label)] for label in found[:, 0]} >= {"cat", "person"}
    assert (np.diff(found[:, 1]) <= 0).all() and ((found[:, 2:] >= 0) & (found[:, 2:] <= 1)).all()
    assert [labels[int(label)] for label in again[again[:, 1] > 0][:, 0]] == ["cat"]


@pytest.fixture(scope="module")
def capped(zoo: Zoo, stand_in: RunningServer) -> Iterator[HttpServer]:
    """A serving-mode proxy whose default model is the demo detector answering up to 64 detections, with the default
    VISION_MAX_DETECTIONS (20, Frigate's rows)."""
    demo = zoo.models[CROWD]
    env = {"SERVING_ADDRESS": stand_in.address, "MODELS": f"{demo.name}::{demo.base_path}"}
    with proxy_server(env) as server:
        yield server


def test_frigate_survives_a_crowded_frame_with_the_cap(capped: HttpServer) -> None:
    """A frame with 30 qualifying detections would overflow Frigate's 20 rows; with the default cap it reads the 20
    best."""
    shapes = [Shape(1 + i % 4, (20 * (i % 8), 40 * (i // 8), 20 * (i % 8) + 18, 40 * (i // 8) + 38)) for i in range(32)]
    picture = io.BytesIO()
    draw_scene((160, 160), shapes).save(picture, format="JPEG", quality=95)
    uncapped = requests.post(
        f"{capped.url}/v1/vision/detection?max_detections=100", files={"image": picture.getvalue()}, timeout=30
    )
    assert sum(p["confidence"] >= 0.4 for p in uncapped.json()["predictions"]) > 20
    with requests.Session() as session:
        rows = frigate_detect(
            session,
            f"{capped.url}/v1/vision/detection",
            picture.getvalue(),
            ["red", "green", "blue", "yellow"],
            side=160,
        )
    assert (rows[:, 1] > 0).sum() == 20


def node_red(port: int, image: Path, custom: str | None = None) -> dict[str, Any]:
    """Run the Node-RED node's own request code against the server."""
    if not (NODE_CLIENT / "node_modules" / "node-red-contrib-deepstack").is_dir():
        pytest.fail("the Node-RED node is missing: `make test` (make clients) installs it into tests/clients")
    args = ["node", str(NODE_CLIENT / "node_red_detect.js"), str(port), str(image), *([custom] if custom else [])]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False, cwd=NODE_CLIENT)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_node_red_nodes_request(any_proxy: HttpServer, tmp_path: Path, photos: dict[str, bytes]) -> None:
    """The Node-RED node's request (image.jpg, min_confidence 0.4) gets predictions it filters for the person;
    a refused image still carries predictions [] in its answer."""
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(photos["person"])
    assert node_red(any_proxy.port, photo) == {
        "ok": True,
        "success": True,
        "people": 1,
        "duration": pytest.approx(0.05, abs=1),
    }
    assert node_red(any_proxy.port, photo, PERSON_ENCODED)["people"] == 1
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not a picture at all")
    assert node_red(any_proxy.port, junk) == {"ok": False, "status": 400, "predictions": []}
