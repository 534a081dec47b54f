"""The old way, for comparison only: the seed service's method, reproduced as it was, slow parts included.

For every request it opens the image with Pillow, converts it with
``np.array(image.getdata()).reshape((h, w, 3)).astype(np.uint8)`` (a Python tuple per pixel), opens a NEW
``tf.compat.v1.Session`` on the frozen graph imported at start-up, runs the scores, classes and boxes, and names
classes from a label map read with a regular expression. The benchmark serves it with gunicorn (one worker,
threads), like the proxy, so the comparison is about the method rather than the server:

    MODEL_DIR=static python -m gunicorn --worker-class gthread --threads 8 'bench.seed_service:create_app()'

``GET /healthz`` is the benchmark's addition, so it can poll for readiness as it does with the proxy.
"""

from __future__ import annotations

import os
import re
import warnings
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
from flask import Flask, Response, jsonify, request
from PIL import Image

# Pillow 13 deprecates getdata(); the seed's method is reproduced as written, so its warning is expected here.
warnings.filterwarnings("ignore", message=r".*getdata is deprecated", category=DeprecationWarning)

_ITEM = re.compile(r"item\s*\{(.*?)\}", re.DOTALL)
_ID = re.compile(r"\bid\s*:\s*(\d+)")
_DISPLAY_NAME = re.compile(r"\bdisplay_name\s*:\s*[\"'](.*?)[\"']")
_NAME = re.compile(r"\bname\s*:\s*[\"'](.*?)[\"']")
_OUTPUTS = ("detection_scores:0", "detection_classes:0", "detection_boxes:0")


def read_label_map(text: str) -> dict[int, str]:
    """Class id → title-cased name, found with regular expressions as the seed did (no text-format parser)."""
    names: dict[int, str] = {}
    for body in _ITEM.findall(text):
        found_id = _ID.search(body)
        found_name = _DISPLAY_NAME.search(body) or _NAME.search(body)
        if found_id and found_name:
            names[int(found_id.group(1))] = found_name.group(1).title()
    return names


class SeedService:
    """The seed service's method: the graph is imported once, every request gets its own Session."""

    def __init__(self, model_dir: Path) -> None:
        import tensorflow as tf

        self._tf = tf
        graph_def = tf.compat.v1.GraphDef()
        graph_def.ParseFromString((model_dir / "frozen_inference_graph.pb").read_bytes())
        self._graph = tf.Graph()
        with self._graph.as_default():
            tf.graph_util.import_graph_def(graph_def, name="")
        self._labels = read_label_map((model_dir / "label_map.pbtxt").read_text(encoding="utf-8"))

    def classify(self, image: Image.Image, threshold: float) -> dict[str, int]:
        """Count the detections scoring above ``threshold`` by class name, the seed's way."""
        (width, height) = image.size
        image_np = np.array(image.getdata()).reshape((height, width, 3)).astype(np.uint8)
        with self._tf.compat.v1.Session(graph=self._graph) as sess:
            scores, classes, _boxes = sess.run(list(_OUTPUTS), feed_dict={"image_tensor:0": image_np[np.newaxis]})
        counts: dict[str, int] = {}
        for score, class_id in zip(scores[0], classes[0], strict=True):
            if score > threshold:
                name = self._labels.get(int(class_id), f"Class {int(class_id)}")
                counts[name] = counts.get(name, 0) + 1
        return counts


def create_app(model_dir: str | None = None) -> Flask:
    """The old way's Flask app: ``POST /classify?threshold=`` answering counts, ``GET /healthz``."""
    service = SeedService(Path(model_dir or os.environ.get("MODEL_DIR", "static")))
    app = Flask(__name__)

    @app.post("/classify")
    def classify() -> Response:
        image = Image.open(BytesIO(request.get_data()))
        threshold = float(request.args.get("threshold", "0.75"))
        return jsonify(service.classify(image, threshold))

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify({"status": "ok"})

    return app
