"""The README's curl commands, run verbatim against the server ``make run`` starts."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.processes import REPO, HttpServer

README = REPO / "README.md"
BLOCK = re.compile(r"<!-- readme-curl-start -->\n```console\n(.*?)```\n<!-- readme-curl-end -->", re.DOTALL)


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
    """``make run`` on port 8000 (the README's), with an empty model directory of its own; yields that directory's
    parent, where the README's relative paths resolve."""
    workdir = tmp_path_factory.mktemp("readme")
    env = {"MODEL_DIR": str(workdir / "static"), "MODEL_BASE_PATH": str(workdir / "models" / "detector")}
    server = HttpServer(
        ["make", "--no-print-directory", "run"], port=8000, env=env, ready_path="/readyz", timeout_s=300
    )
    with server:
        yield workdir


@pytest.mark.parametrize(("command", "expected"), readme_examples(), ids=lambda value: value[:60])
def test_readme_command(make_run: Path, command: str, expected: str) -> None:
    """The command, run as written in the README, prints the JSON the README shows."""
    result = subprocess.run(
        ["bash", "-c", command], cwd=make_run, capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(result.stdout) == json.loads(expected)


def test_make_run_wrote_the_demo_model(make_run: Path) -> None:
    """With an empty MODEL_DIR, ``make run`` wrote the demo model there and converted it as version 1."""
    assert sorted(p.name for p in (make_run / "static").iterdir()) == [
        "demo.jpg",
        "frozen_inference_graph.pb",
        "label_map.pbtxt",
    ]
    assert (make_run / "models" / "detector" / "1" / "saved_model.pb").is_file()
