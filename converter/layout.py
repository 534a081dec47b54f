"""TensorFlow Serving's versioned model layout: ``BASE/<integer version>/saved_model.pb``."""

from __future__ import annotations

from pathlib import Path


def versions(base: Path) -> list[int]:
    """The integer version directories under ``base`` that hold a ``saved_model.pb``, ascending."""
    if not base.is_dir():
        return []
    found = []
    for child in base.iterdir():
        # TF Serving only considers all-digit directory names; anything else (our temp dirs) is invisible to it.
        if child.name.isdigit() and (child / "saved_model.pb").is_file():
            found.append(int(child.name))
    return sorted(found)


def latest_version(base: Path) -> tuple[int, Path] | None:
    """The newest version and its directory, or None when ``base`` holds no model."""
    found = versions(base)
    if not found:
        return None
    return found[-1], base / str(found[-1])
