"""Which model a directory holds: the one rule the Makefile, compose and Kubernetes all go by.

In order: ``frozen_inference_graph.pb`` (a TF1 export), ``saved_model/saved_model.pb`` (a TF2 export folder, or a
TF1 exporter's output), ``saved_model.pb`` (the directory is a SavedModel). The label map is ``label_map.pbtxt`` in
the same directory (for a ``saved_model/`` directory named directly, also the one above it).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

from odapi.layout import LABEL_MAP_FILE

FROZEN_GRAPH = "frozen_inference_graph.pb"
LABEL_MAP = LABEL_MAP_FILE


class ModelKind(enum.StrEnum):
    """How the model is stored."""

    FROZEN_GRAPH = "frozen graph"
    SAVED_MODEL = "SavedModel"


@dataclass(frozen=True)
class FoundModel:
    """A model found in a directory: what to convert, and the label map beside it (None when there is none)."""

    kind: ModelKind
    path: Path
    label_map: Path | None


def find_model(directory: Path) -> FoundModel | None:
    """The model in ``directory`` by the rule above, or None when it holds none."""
    label_map = directory / LABEL_MAP
    found_label_map = label_map if label_map.is_file() else None
    if (directory / FROZEN_GRAPH).is_file():
        return FoundModel(ModelKind.FROZEN_GRAPH, directory / FROZEN_GRAPH, found_label_map)
    if (directory / "saved_model" / "saved_model.pb").is_file():
        return FoundModel(ModelKind.SAVED_MODEL, directory / "saved_model", found_label_map)
    if (directory / "saved_model.pb").is_file():
        if found_label_map is None and directory.name == "saved_model" and (directory.parent / LABEL_MAP).is_file():
            found_label_map = directory.parent / LABEL_MAP  # a TF2 export's saved_model/ named directly
        return FoundModel(ModelKind.SAVED_MODEL, directory, found_label_map)
    return None


def describe_input(path: Path) -> FoundModel | None:
    """What a converter input is: a model directory (by the rule above), a frozen graph file, or None."""
    if path.is_dir():
        return find_model(path)
    if path.is_file():
        beside = path.parent / LABEL_MAP
        return FoundModel(ModelKind.FROZEN_GRAPH, path, beside if beside.is_file() else None)
    return None
