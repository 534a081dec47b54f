"""Embedded mode's model life: nothing to serve yet, a version that fails to load (tried once), a good version
picked up while running; and start-up refusing a malformed label map in one line."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import requests

from converter import convert
from harness.processes import proxy_server
from tests.support.zoo import Zoo

SMALL = "tf1-frozen-image_tensor"


def test_model_life_from_nothing_through_a_broken_version_to_serving(
    zoo: Zoo, photos: dict[str, bytes], tmp_path: Path
) -> None:
    """With no version the proxy answers 503 with Retry-After (no paths shown); a broken version is tried once and
    its failure answered as the model's (502), not retried per request; a good version written later is loaded and
    served; the first run's console shows no TensorFlow CUDA noise and says where the service is once ready."""
    base = tmp_path / "detector"
    with proxy_server({"MODEL_BASE_PATH": str(base)}, ready_path="/healthz") as proxy:
        empty = requests.post(f"{proxy.url}/classify", data=photos["cat"], timeout=30)
        assert empty.status_code == 503 and empty.headers["Retry-After"].isdigit()
        ready = requests.get(f"{proxy.url}/readyz", timeout=10).json()
        assert ready["ready"] is False and str(tmp_path) not in ready["error"]

        broken = base / "1"
        broken.mkdir(parents=True)
        (broken / "saved_model.pb").write_bytes(b"\x00 not a SavedModel")
        deadline = time.monotonic() + 30
        while "failed to load" not in requests.post(f"{proxy.url}/classify", data=photos["cat"], timeout=30).text:
            assert time.monotonic() < deadline, "the broken version was never reported"
            time.sleep(0.3)  # polling interval
        for _ in range(5):
            again = requests.post(f"{proxy.url}/classify", data=photos["cat"], timeout=30)
            assert again.status_code == 502 and "version 1 failed to load" in again.json()["error"]
        assert len(re.findall(r"version 1 at \S+ failed to load", proxy.log_text())) == 1

        convert(zoo.models[SMALL].export, base)  # version 2
        while requests.post(f"{proxy.url}/classify", data=photos["cat"], timeout=30).status_code != 200:
            assert time.monotonic() < deadline + 30, "the good version was never served"
            time.sleep(0.3)  # polling interval
        assert requests.get(f"{proxy.url}/readyz", timeout=10).json() == {
            "ready": True,
            "model": "detector",
            "version": 2,
        }
        log = proxy.log_text()
        assert "model detector: serving version 2" in log
        assert "cuInit" not in log and "cuda" not in log.lower()
        deadline = time.monotonic() + 10
        while f"ready: open http://127.0.0.1:{proxy.port}/" not in proxy.log_text():
            assert time.monotonic() < deadline, "no line says where the service is"
            time.sleep(0.2)  # polling interval


def test_malformed_label_map_stops_start_up_in_one_line(tmp_path: Path) -> None:
    """A LABEL_MAP that does not parse stops `python -m proxy` at once: one line naming file and line, exit 2."""
    label_map = tmp_path / "labels.pbtxt"
    label_map.write_text("item {\n  id: one\n}\n")
    done = subprocess.run(
        [sys.executable, "-m", "proxy"],
        env={"LABEL_MAP": str(label_map), "PATH": "/usr/bin:/bin", "PORT": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith(f"proxy: configuration error: {label_map}: line 2, column 7: ")
    assert "Couldn't parse integer: one" in done.stderr
