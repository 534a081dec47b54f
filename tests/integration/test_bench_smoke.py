"""``python -m bench --quick``: the benchmark runs end to end on this machine and writes its results."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness.processes import REPO, quiet_tf_env

TARGETS = [
    "640x480 p50, 1 client: proxy / floor",
    "640x480 throughput, 8 clients: proxy / floor",
    "proxy p50, 1 client: 4000x3000 / 640x480",
    "4000x3000 p50, 1 client: old way / proxy",
    "proxy worker RSS after the load (largest)",
    "python -m proxy to first 200 on /healthz (median of 3)",
    "proxy workers with TensorFlow loaded",
]
MEASUREMENTS = [
    (variant, size, clients)
    for size in ("640x480", "4000x3000")
    for variant, concurrency in (("floor", (1, 8, 32)), ("proxy", (1, 8, 32)), ("old way", (1, 8)))
    for clients in concurrency
]


def processes_mentioning(text: str) -> list[int]:
    """Pids whose command line or environment contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if any(text.encode() in (entry / name).read_bytes() for name in ("cmdline", "environ")):
                found.append(int(entry.name))
        except OSError:
            continue  # ended while we looked, or not ours to read
    return found


@pytest.mark.slow
def test_quick_run_writes_every_target_row_the_table_and_the_chart(tmp_path: Path) -> None:
    """A quick run exits 0, prints and writes every target and measurement row, draws the chart, leaves no process."""
    out = tmp_path / "results"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out)],
        cwd=REPO,
        env={**os.environ, **quiet_tf_env()},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]

    markdown = (out / "results.md").read_text(encoding="utf-8")
    for target in TARGETS:
        row = re.search(rf"^\| {re.escape(target)} \| [^|]+ \| [≤≥] [^|]+ \| (PASS|MISS) \|$", markdown, re.MULTILINE)
        assert row, f"no target row {target!r} in results.md"
        assert row.group(0) in done.stdout
    for variant, size, clients in MEASUREMENTS:
        row = re.search(rf"^\| {variant} \| {size} \| {clients} \| (\d+) \| 0 \|", markdown, re.MULTILINE)
        assert row, f"no error-free row for {variant} {size} x{clients} in results.md"
        assert int(row.group(1)) >= 1
    assert "Quick run" in markdown
    assert "| 640x480 | `" in markdown  # the answers section ran

    assert (out / "results.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    for size in ("640x480", "4000x3000"):
        assert (out / f"image-{size}.jpg").read_bytes().startswith(b"\xff\xd8")

    work = re.search(r"work directory (\S+)", done.stderr)
    assert work, done.stderr[-2000:]
    assert processes_mentioning(work.group(1)) == []
