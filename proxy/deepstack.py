"""A DeepStack-compatible detection route, so Home Assistant, Blue Iris and other DeepStack/CodeProject.AI
clients work unchanged: ``POST /v1/vision/detection`` with the picture in the multipart field ``image``."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from proxy.params import parse_confidence
from proxy.pipeline import detect, image_bytes, services

deepstack = Blueprint("deepstack", __name__)

DEFAULT_MIN_CONFIDENCE = 0.45  # DeepStack's own default


@deepstack.post("/v1/vision/detection")
def detection() -> Response:
    """DeepStack's answer from the default model."""
    return _detect(None)


@deepstack.post("/v1/vision/custom/<name>")
def custom(name: str) -> Response:
    """DeepStack's custom-model route: the same answer from the model called ``name``."""
    return _detect(name)


def _detect(model_name: str | None) -> Response:
    """Lower-case labels, confidences and boxes in pixels of the picture as sent."""
    model = services().model(model_name)
    data = image_bytes()  # first: reading a form would consume a raw (non-multipart) body
    form = request.form if request.mimetype == "multipart/form-data" else {}
    min_confidence = parse_confidence(form.get("min_confidence"), DEFAULT_MIN_CONFIDENCE)
    image, detections = detect(data, model)
    width, height = image.size
    labels = model.labels
    kept = detections.above(min_confidence)
    predictions = [
        {
            "label": labels.name(int(class_id)).lower(),
            "confidence": score,
            "y_min": round(ymin * height),
            "x_min": round(xmin * width),
            "y_max": round(ymax * height),
            "x_max": round(xmax * width),
        }
        for (ymin, xmin, ymax, xmax), score, class_id in zip(
            kept.boxes.tolist(), kept.scores.tolist(), kept.classes.tolist(), strict=True
        )
    ]
    return jsonify({"success": True, "predictions": predictions})
