"""``python -m bench --quick``: the benchmark runs end to end on this machine and writes every section's results."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.processes import REPO, quiet_tf_env

# A quick run takes about 50 s on 2 idle cores (a minute when it exports and converts the models, the first time);
# the bound leaves room for a busy machine, not for a hang.
TIME_LIMIT_S = 150

TARGETS = [
    "1. serving, 640x480, 1 client: p50 proxy / direct Predict",
    "1. serving, 640x480, 8 clients: throughput proxy / direct Predict",
    "1. serving, 8 clients: connections on the busiest proxy worker - the idlest",
    "1. embedded, 640x480, 1 client: p50 proxy / in-process TensorFlow",
    "2. proxy CPU per request: encoded_image_string_tensor / image_tensor",
    "2. PredictRequest bytes: encoded_image_string_tensor / image_tensor",
    "3. wall time: one batch of 8 / 8 single requests in a row",
    "4. Frigate, 320x320, 1 client: p99",
    "5. 8 clients: throughput front / gthread",
    "5. 8 clients: p50 front / gthread",
    *[
        f"6. {mode}: {what}"
        for mode in ("serving", "embedded")
        for what in (
            "ordinary p50 with / without slow connections",
            "ordinary p99 with / without slow connections",
            "failed ordinary requests with slow connections",
            "slow connections still held at the end",
        )
    ],
    "7. proxy's own CPU per request beyond both floors, image_tensor (demo)",
    "7. proxy's own CPU per request beyond both floors, encoded_image_string_tensor (demo)",
    "demo model, serving, 1 client: p50 4000x3000 / 640x480",
    "serving-mode proxy worker RSS after the load (largest)",
    "python -m proxy to first 200 on /healthz (median)",
    "serving-mode proxy workers with TensorFlow mapped",
]
# (measurement, variant as a regular expression, clients): every row the sections' tables must hold, each with
# requests and no error.
ROWS = [
    ("1. serving, 640x480, 1 client", r"direct Predict \(floor\)", 1),
    ("1. serving, 640x480, 1 client", "proxy, serving mode", 1),
    ("1. serving, 640x480, 8 clients", r"direct Predict \(floor\)", 8),
    ("1. serving, 640x480, 8 clients", "proxy, serving mode", 8),
    ("1. embedded, 640x480, 1 client", r"in-process TensorFlow \(floor\)", 1),
    ("1. embedded, 640x480, 1 client", "proxy, embedded mode", 1),
    ("2. input types, 640x480, 1 client", "image_tensor", 1),
    ("2. input types, 640x480, 1 client", "encoded_image_string_tensor", 1),
    ("3. batch, 8 x 640x480, 1 client", "one batch of 8", 1),
    ("3. batch, 8 x 640x480, 1 client", "8 single requests in a row", 1),
    ("4. Frigate, 320x320, 1 client", "Frigate's request", 1),
    ("5. front vs gthread, 640x480, 8 clients", "gunicorn -k gthread", 8),
    ("5. front vs gthread, 640x480, 8 clients", r"python -m proxy \(the front\)", 8),
    ("4000x3000 against 640x480, demo model, serving, 1 client", "640x480, demo model", 1),
    ("4000x3000 against 640x480, demo model, serving, 1 client", "4000x3000, demo model", 1),
    ("4000x3000 against 640x480, demo model, serving, 1 client", r"direct Predict \(floor\), 640x480", 1),
    ("4000x3000 against 640x480, demo model, serving, 1 client", r"direct Predict \(floor\), 4000x3000", 1),
    ("8. camera, 4000x3000 frame of small objects, serving, 1 client", "whole frame", 1),
    ("8. camera, 4000x3000 frame of small objects, serving, 1 client", "tile=640", 1),
    ("8. Blue Iris's pair, 640x480, serving, 1 camera", "frame cache off", 1),
    ("8. Blue Iris's pair, 640x480, serving, 1 camera", "frame cache on", 1),
    *[
        ("7. the proxy's own CPU, demo models, 640x480, 1 client", f"{side}, {input_type}", 1)
        for side in ("proxy", "bare Flask app", "bare gRPC client", "waiting Flask app")
        for input_type in ("image_tensor", "encoded_image_string_tensor")
    ],
    *[
        (f"6. slow clients, {mode}", variant, 4)
        for mode in ("serving", "embedded")
        for variant in ("4 ordinary clients, alone", r"4 ordinary clients, \d+ slow connections open")
    ],
]
HEADINGS = [
    "## Machine",
    "## Targets",
    "## How everything is measured",
    "## 1. The real detector against its floors",
    "## 2. `encoded_image_string_tensor` against `image_tensor`",
    "## 3. A batch against single requests",
    "## 4. Frigate's pattern",
    "## 5. The front against gunicorn's threaded worker",
    "## 6. Slow clients",
    "## 7. The proxy's own CPU beyond its floors",
    "## 8. Camera users: tiles and Blue Iris's pair",
    "## Large pictures, memory, start-up",
    "## Answers",
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
def test_quick_run_writes_every_section_every_target_and_the_chart(tmp_path: Path) -> None:
    """A quick run exits 0 in bounded time, prints every target, writes every section's rows (each with requests and
    no error), the per-request CPU and bytes, the slow connections held, the answers and the chart, and leaves no
    process behind."""
    out = tmp_path / "results"
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out)],
        cwd=REPO,
        env={**os.environ, **quiet_tf_env()},
        capture_output=True,
        text=True,
        timeout=TIME_LIMIT_S,
        check=False,
    )
    elapsed = time.monotonic() - began
    assert done.returncode == 0, done.stderr[-4000:]
    assert elapsed < TIME_LIMIT_S

    markdown = (out / "results.md").read_text(encoding="utf-8")
    assert "Quick run" in markdown
    for heading in HEADINGS:
        assert f"\n{heading}\n" in markdown, f"no section {heading!r}"
    for key in ("CPU", "cores", "Python", "code", "date"):
        assert re.search(rf"^\| {key} \| \S", markdown, re.MULTILINE), f"no {key} in the machine table"
    for target in TARGETS:
        row = re.search(rf"^\| {re.escape(target)} \| [^|]+ \| [≤≥] [^|]+ \| (PASS|MISS) \|$", markdown, re.MULTILINE)
        assert row, f"no target row {target!r} in results.md"
        assert "n/a" not in row.group(0), row.group(0)
        assert row.group(0) in done.stdout
    for measurement, variant, clients in ROWS:
        pattern = rf"^\| {re.escape(measurement)} \| {variant} \| {clients} \| \d+ \| (\d+) \| 0 \| [\d.,]+ \|"
        row = re.search(pattern, markdown, re.MULTILINE)
        assert row, f"no error-free row for {measurement} / {variant} in results.md"
        assert int(row.group(1)) >= 1
    for input_type in ("image_tensor", "encoded_image_string_tensor"):
        assert re.search(rf"^\| {input_type} \| [\d.]+ \| [\d.]+ \| [\d,]+ \|$", markdown, re.MULTILINE), input_type
    for input_type in ("image_tensor", "encoded_image_string_tensor"):  # section 7: every side measured
        assert re.search(
            rf"^\| {input_type} \| [\d.]+ \| [\d.]+ \| [\d.]+ \| -?[\d.]+ ms \| ", markdown, re.MULTILINE
        ), input_type
    found = dict(re.findall(r"^\| (whole frame|tile=640) \| `([^`]*)` \|$", markdown, re.MULTILINE))
    assert json.loads(found["whole frame"]) == {} and json.loads(found["tile=640"]) == {"Cat": 1, "Person": 1}, found
    hits = re.search(r"classifyobjects_frame_cache_total`\): (.*)\.$", markdown, re.MULTILINE)
    assert hits and "hit " in hits.group(1) and "miss " in hits.group(1), hits
    spread = re.search(r"the established connections each serving-mode worker holds .*?: ([\d /;]+) \(", markdown)
    assert spread and sum(int(n) for n in spread.group(1).split(";")[0].split("/")) == 8, spread
    for mode in ("serving", "embedded"):
        held = re.search(
            rf"^- {mode}: still held at the end of the last round: (\d+) of (\d+) ", markdown, re.MULTILINE
        )
        assert held, f"no slow connections line for {mode}"
    large = re.search(
        r"^p50 4000x3000 / 640x480 \(median over rounds\): the proxy ([\d.]+)x, its floor ([\d.]+)x;",
        markdown,
        re.MULTILINE,
    )
    assert large and float(large.group(2)) > 1, "no floor ratio for the large pictures"
    answers = re.findall(r"^\| (?:direct Predict|proxy)[^|]*\| `([^`]*)` \|$", markdown, re.MULTILINE)
    assert len(answers) == 4
    assert not any(answer.startswith("failed") for answer in answers), answers

    chart = (out / "results.png").read_bytes()
    assert chart.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(chart) > 20_000  # six panels, not an empty figure
    for size in ("640x480", "320x320", "4000x3000"):
        assert (out / f"image-{size}.jpg").read_bytes().startswith(b"\xff\xd8")

    work = re.search(r"work directory (\S+)", done.stderr)
    assert work, done.stderr[-2000:]
    assert processes_mentioning(work.group(1)) == []
