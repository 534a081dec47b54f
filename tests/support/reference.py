"""The zoo's exports run directly with TensorFlow, on what the proxy sends them: the answers to compare against.

What the proxy sends a model is decided by ``ImageInput`` (pixels as decoded, or the bytes as sent, or a lossless
PNG where it had to re-encode) and ``model_input``; their own rules are unit-tested. Here each export, as the user
had it (the frozen graph, or the exporter's SavedModel), runs in this process on those values, and the seed's rules
(score above the threshold, first ``num_detections`` rows, label map names) turn its outputs into answers.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from odapi.contract import ANSWER_OUTPUTS, TF1_PLACEHOLDERS
from odapi.labels import read_label_map
from proxy.backends import model_input
from proxy.images import ImageInput, ImageLimits
from proxy.settings import Settings
from tests.support.zoo import Zoo, ZooModel

VERBOSE_KEYS = ["class", "score", "x1", "y1", "x2", "y2"]


class Reference:
    """Runs any zoo model directly; loads each export once."""

    def __init__(self, zoo: Zoo) -> None:
        self._zoo = zoo
        self._runners: dict[str, Any] = {}

    def outputs(self, name: str, image: bytes, limits: ImageLimits | None = None) -> dict[str, np.ndarray]:
        """The export's raw detection outputs for ``image`` as the proxy prepares it."""
        model = self._zoo.models[name]
        prepared = ImageInput(image, limits or ImageLimits.from_settings(Settings()))
        value = model_input(prepared, model.input_type, None)
        return self._runner(model)(value)

    def verbose(self, name: str, image: bytes, threshold: float) -> list[dict[str, Any]]:
        """The seed's verbose answer for ``image``: detections above ``threshold``, best first."""
        outputs = self.outputs(name, image)
        names = read_label_map(self._zoo.models[name].export / "label_map.pbtxt")[1]
        count = int(np.asarray(outputs["num_detections"]).reshape(-1)[0])
        rows = zip(
            np.asarray(outputs["detection_classes"])[0][:count],
            np.asarray(outputs["detection_scores"])[0][:count],
            np.asarray(outputs["detection_boxes"])[0][:count],
            strict=True,
        )
        return [
            {"class": names.get(int(c), f"Class {int(c)}"), "score": float(s), "x1": float(b[1]),
             "y1": float(b[0]), "x2": float(b[3]), "y2": float(b[2])}
            for c, s, b in rows
            if s > threshold
        ]  # fmt: skip

    def counts(self, name: str, image: bytes, threshold: float) -> dict[str, int]:
        """The seed's counts for ``image``."""
        return dict(Counter(row["class"] for row in self.verbose(name, image, threshold)))

    def _runner(self, model: ZooModel) -> Any:
        if model.name not in self._runners:
            frozen = model.export / "frozen_inference_graph.pb"
            self._runners[model.name] = _frozen(frozen, model) if frozen.is_file() else _saved(model.export)
        return self._runners[model.name]


def _frozen(path: Path, model: ZooModel) -> Any:
    import tensorflow as tf

    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(path.read_bytes())
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(graph_def, name="")
    session = tf.compat.v1.Session(graph=graph)
    feed = f"{TF1_PLACEHOLDERS[model.input_type]}:0"

    def run(value: np.ndarray) -> dict[str, np.ndarray]:
        found = session.run([f"{name}:0" for name in ANSWER_OUTPUTS], {feed: value})
        return dict(zip(ANSWER_OUTPUTS, found, strict=True))

    return run


def _saved(export: Path) -> Any:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(export / "saved_model"))
    function = loaded.signatures["serving_default"]
    key = next(iter(function.structured_input_signature[1]))

    def run(value: np.ndarray) -> dict[str, np.ndarray]:
        found = function(**{key: tf.constant(value)})
        return {name: found[name].numpy() for name in ANSWER_OUTPUTS}

    run.owner = loaded  # type: ignore[attr-defined]  # keeps the SavedModel's variables alive
    return run


def assert_same_answer(actual: Any, expected: Any, *, tolerance: float = 1e-4) -> None:
    """Counts must be equal; verbose lists must name the same classes in the same order, floats within tolerance."""
    import pytest

    if isinstance(expected, dict):
        assert actual == expected
        return
    assert [d["class"] for d in actual] == [d["class"] for d in expected]
    for got, want in zip(actual, expected, strict=True):
        assert list(got) == VERBOSE_KEYS
        for key in VERBOSE_KEYS[1:]:
            assert got[key] == pytest.approx(want[key], abs=tolerance), key
