"""TensorFlow Serving's versioned model layout, and what the converter records inside each version.

BASE/<integer version>/saved_model.pb            what TF Serving loads (it ignores non-numeric directories)
BASE/<version>/assets.extra/classifyobjects.json the manifest: source, its SHA-256, input type, label map hash
BASE/<version>/assets.extra/label_map.pbtxt      the label map this version's class ids belong to
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from odapi.contract import InputType

# The label map's file name, beside a user's model (MODEL_DIR) and inside each converted version.
LABEL_MAP_FILE = "label_map.pbtxt"
MANIFEST = Path("assets.extra") / "classifyobjects.json"
LABEL_MAP = Path("assets.extra") / LABEL_MAP_FILE
WARMUP = Path("assets.extra") / "tf_serving_warmup_requests"


def versions(base: Path) -> list[int]:
    """The integer version directories under ``base`` that hold a ``saved_model.pb``, ascending."""
    if not base.is_dir():
        return []
    found = []
    for child in base.iterdir():
        # TF Serving only considers all-digit directory names; anything else (staging directories) is invisible.
        if child.name.isdigit() and (child / "saved_model.pb").is_file():
            found.append(int(child.name))
    return sorted(found)


def latest_version(base: Path) -> tuple[int, Path] | None:
    """The newest version and its directory, or None when ``base`` holds no model."""
    found = versions(base)
    if not found:
        return None
    return found[-1], base / str(found[-1])


@dataclass(frozen=True)
class Manifest:
    """What the converter recorded about one version."""

    source: str
    source_sha256: str  # of the model input and its label map together: --if-changed compares it
    input_type: InputType
    input_key: str
    label_map_sha256: str | None = None

    def to_json(self) -> str:
        """The manifest as the JSON text written into the version."""
        return json.dumps(asdict(self), indent=2) + "\n"


def read_manifest(version_dir: Path) -> Manifest | None:
    """The version's manifest, or None when it has none or it cannot be read (a model converted elsewhere)."""
    try:
        data = json.loads((version_dir / MANIFEST).read_text(encoding="utf-8"))
        return Manifest(
            source=str(data["source"]),
            source_sha256=str(data["source_sha256"]),
            input_type=InputType(data["input_type"]),
            input_key=str(data["input_key"]),
            label_map_sha256=data.get("label_map_sha256"),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
