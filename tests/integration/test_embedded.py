"""Embedded mode's model life: nothing to serve yet, versions that fail to load (retried, then given up), good
versions picked up while running; and start-up refusing a malformed label map in one line."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import requests

from converter import convert
from harness.processes import proxy_server
from odapi.layout import LABEL_MAP
from tests.support.zoo import Zoo

SMALL = "tf1-frozen-image_tensor"


def post_until(url: str, photo: bytes, done: Callable[[requests.Response], bool], what: str) -> requests.Response:
    """POST ``photo`` to ``url`` until an answer satisfies ``done`` (within 30 s)."""
    deadline = time.monotonic() + 30
    while not done(answer := requests.post(url, data=photo, timeout=30)):
        assert time.monotonic() < deadline, what
        time.sleep(0.3)  # polling interval
    return answer


def test_model_life_from_nothing_through_broken_versions_to_serving(
    zoo: Zoo, photos: dict[str, bytes], tmp_path: Path
) -> None:
    """With no version the proxy answers 503 with Retry-After (no paths shown); a broken version is retried with a
    back-off (503 meanwhile), then given up (the model's 502, not retried per request); a good version written
    later is served; a newer version whose label map is not UTF-8 fails without wedging the loader, the served one
    answering meanwhile and /readyz saying so; a version copied in by hand (written elsewhere, then renamed) is
    served next. The first run's console shows no TensorFlow CUDA noise and says where the service is once ready."""
    base = tmp_path / "detector"
    env = {"MODEL_BASE_PATH": str(base), "MODEL_LOAD_RETRIES": "1", "MODEL_LOAD_RETRY_S": "1"}
    with proxy_server(env, ready_path="/healthz") as proxy:
        classify = f"{proxy.url}/classify"
        empty = requests.post(classify, data=photos["cat"], timeout=30)
        assert empty.status_code == 503 and empty.headers["Retry-After"].isdigit()
        ready = requests.get(f"{proxy.url}/readyz", timeout=10).json()
        assert ready["ready"] is False and str(tmp_path) not in ready["error"]

        broken = base / "1"
        broken.mkdir(parents=True)
        (broken / "saved_model.pb").write_bytes(b"\x00 not a SavedModel")
        retrying = post_until(classify, photos["cat"], lambda r: "try 1" in r.text, "the broken version's try")
        assert retrying.status_code == 503 and "trying again in" in retrying.json()["error"]
        post_until(classify, photos["cat"], lambda r: r.status_code == 502, "the broken version was never given up")
        for _ in range(5):
            again = requests.post(classify, data=photos["cat"], timeout=30)
            assert again.status_code == 502 and "version 1 failed to load" in again.json()["error"]
            assert "gave up after 2 tries" in again.json()["error"] and str(tmp_path) not in again.text
        assert len(re.findall(r"version 1 at \S+ failed to load", proxy.log_text())) == 2

        convert(zoo.models[SMALL].export, base)  # version 2
        post_until(classify, photos["cat"], lambda r: r.status_code == 200, "the good version was never served")
        assert requests.get(f"{proxy.url}/readyz", timeout=10).json() == {
            "ready": True,
            "model": "detector",
            "version": 2,
        }

        latin = tmp_path / "staging-3"
        shutil.copytree(base / "2", latin)
        (latin / LABEL_MAP).write_bytes('item { id: 1 name: "caf\u00e9" }\n'.encode("latin-1"))
        latin.rename(base / "3")
        deadline = time.monotonic() + 30
        while "warning" not in (ready := requests.get(f"{proxy.url}/readyz", timeout=10).json()):
            assert time.monotonic() < deadline, "the failed version 3 was never reported"
            time.sleep(0.3)  # polling interval
        assert ready["ready"] is True and ready["version"] == 2
        assert "version 3 failed to load: its label map is not UTF-8 text" in ready["warning"]
        assert requests.post(classify, data=photos["cat"], timeout=30).status_code == 200  # version 2 answers

        staging = tmp_path / "staging-4"  # a version copied by hand: written elsewhere, then renamed into place
        shutil.copytree(base / "2", staging)
        staging.rename(base / "4")
        deadline = time.monotonic() + 30
        while requests.get(f"{proxy.url}/readyz", timeout=10).json()["version"] != 4:
            assert time.monotonic() < deadline, "version 4 was never served"
            time.sleep(0.3)  # polling interval
        log = proxy.log_text()
        assert "model detector: serving version 2" in log and "switched from version 2 to 4" in log
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
