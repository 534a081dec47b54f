"""The Pythons users have: `make run` works on the newest supported one (the suite itself runs on the oldest),
and `make` names the Pythons it needs, in one line, when given another."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import requests

from harness.processes import REPO, HttpServer, free_port

NEWEST = os.environ.get("PYTHON_NEWEST", "")


def test_make_names_the_pythons_it_needs(tmp_path: Path) -> None:
    """With a Python older than 3.11, make stops with one line naming 3.11 to 3.13 and how to pick another."""
    old = tmp_path / "python3"
    old.write_text('#!/bin/sh\n[ "$1" = "--version" ] && { echo "Python 3.10.13"; exit 0; }\nexit 1\n')
    old.chmod(0o755)
    done = subprocess.run(
        ["make", "--no-print-directory", "python", f"PYTHON={old}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode != 0
    assert done.stderr.splitlines()[0] == (
        f"ClassifyObjects needs Python 3.11, 3.12 or 3.13, and {old} is Python 3.10.13: pick one with PYTHON=..., "
        "e.g. make run PYTHON=python3.12"
    )


@pytest.mark.skipif(not NEWEST, reason="no Python 3.13 here: set PYTHON_NEWEST to run `make run` on it")
def test_make_run_on_the_newest_python(tmp_path: Path, photos: dict[str, bytes]) -> None:
    """`make run` with the newest Python installs its own venv, puts the default detector in place, converts and
    serves it: the side-by-side picture answers its cat and its person."""
    port = free_port()
    venv = REPO / ".venv-newest"
    command = ["make", "--no-print-directory", "run", f"PYTHON={NEWEST}", f"VENV={venv}", f"PORT={port}"]
    env = {"MODEL_DIR": str(tmp_path / "static"), "MODEL_BASE_PATH": str(tmp_path / "models" / "detector")}
    with HttpServer(command, port=port, env=env, ready_path="/readyz", timeout_s=600) as server:
        answer = requests.post(f"{server.url}/classify?threshold=0.5", data=photos["both"], timeout=60)
        assert answer.status_code == 200 and answer.json() == {"Cat": 1, "Person": 1}
    version = subprocess.run([str(venv / "bin" / "python"), "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("Python 3.13")
