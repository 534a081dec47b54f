"""The README's curl commands, run verbatim (but for the port) against the server ``make run`` starts."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.processes import REPO, HttpServer, free_port

README = REPO / "README.md"
BLOCK = re.compile(r"<!-- readme-curl-start -->\n```console\n(.*?)```\n<!-- readme-curl-end -->", re.DOTALL)
PORT = free_port()


def readme_examples() -> list[tuple[str, str]]:
    """(command, expected output) pairs from the README's console block."""
    match = BLOCK.search(README.read_text(encoding="utf-8"))
    assert match, "the README lost its curl block"
    examples: list[tuple[str, str]] = []
    for line in match.group(1).splitlines():
        if line.startswith("$ "):
            examples.append((line[2:], ""))
        else:
            command, output = examples[-1]
            examples[-1] = (command, output + line + "\n")
    return examples


@pytest.fixture(scope="module")
def make_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``make run`` on a free port with an empty model directory of its own (so a running `make run` on the
    README's port 8000 is left alone); yields that directory."""
    workdir = tmp_path_factory.mktemp("readme")
    env = {"MODEL_DIR": str(workdir / "static"), "MODEL_BASE_PATH": str(workdir / "models" / "detector")}
    server = HttpServer(
        ["make", "--no-print-directory", "run", f"PORT={PORT}"], port=PORT, env=env, ready_path="/readyz", timeout_s=300
    )
    with server:
        yield workdir


@pytest.mark.parametrize(("command", "expected"), readme_examples(), ids=lambda value: value[:60])
def test_readme_command(make_run: Path, command: str, expected: str) -> None:
    """The command, run as written in the README from the repository root, prints the JSON the README shows."""
    result = subprocess.run(
        ["bash", "-c", command.replace("localhost:8000", f"localhost:{PORT}")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert _comparable(json.loads(result.stdout)) == _comparable(json.loads(expected))


def _comparable(answer: object) -> object:
    """The answer with what changes from call to call (timings, ids, timestamps) left out."""
    if isinstance(answer, dict):
        volatile = {
            "inferenceMs",
            "processMs",
            "analysisRoundTripMs",
            "duration",
            "requestId",
            "timestampUTC",
            "processedBy",
        }
        return {key: _comparable(value) for key, value in answer.items() if key not in volatile}
    if isinstance(answer, list):
        return [_comparable(item) for item in answer]
    if isinstance(answer, float):
        return round(answer, 3)
    return answer


def test_make_run_put_the_default_detector_in_place(make_run: Path) -> None:
    """With an empty MODEL_DIR, ``make run`` wrote the default detector there (marked as its own) and converted it."""
    assert sorted(p.name for p in (make_run / "static").iterdir()) == [
        ".classifyobjects-default.json",
        "frozen_inference_graph.pb",
        "label_map.pbtxt",
    ]
    assert (make_run / "models" / "detector" / "1" / "saved_model.pb").is_file()


def test_converter_help_in_the_readme_is_current() -> None:
    """The README's `python -m converter --help` block is what the command prints (at 110 columns)."""
    text = README.read_text(encoding="utf-8")
    block = text.split("$ python -m converter --help\n", 1)[1].split("```", 1)[0]
    done = subprocess.run(
        [sys.executable, "-m", "converter", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "COLUMNS": "110"},
    )
    assert done.stdout == block
