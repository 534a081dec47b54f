"""A small, deterministic Object Detection API-format detector of coloured shapes, built from real TF ops.

It is a stand-in for a model-zoo graph (which cannot be downloaded on every machine): the same input and output
contract as ``research/object_detection/exporter.py``, so the converter, the proxy and TF Serving treat it exactly
like a real detector. It is not a neural network: it finds pixels close to each class colour, on a 4x4 grid, and
scores each grid cell by how much of it that colour covers.
"""

from __future__ import annotations

from demo_model.graph import CLASSES, build_frozen_graph, detect, export_tf2_saved_model, label_map_text
from demo_model.scenes import Shape, draw_scene, random_scene

__all__ = [
    "CLASSES",
    "Shape",
    "build_frozen_graph",
    "detect",
    "draw_scene",
    "export_tf2_saved_model",
    "label_map_text",
    "random_scene",
]
