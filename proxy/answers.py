"""Every answer the API gives, built from the core's results by one walk over the detections (``Detections.rows``).

- ``/classify``: counts ``{"Dog": 2}``, the verbose list ``[{"class", "score", "x1", "y1", "x2", "y2"}]``, the
  annotated picture, a JSON batch of those, and ``{"error": ...}``.
- ``/v1/vision/*``: DeepStack's and CodeProject.AI's fields together, for success and for errors alike (an error
  still carries ``predictions: []``, which Node-RED's node reads unchecked), and CodeProject.AI's status answers.
"""

from __future__ import annotations

import importlib.metadata
import io
import socket
import time
from collections import Counter
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any

from PIL import Image

from proxy.annotate import annotate
from proxy.errors import ProxyError
from proxy.pipeline import Found

MODULE_ID = "ClassifyObjects"
MODULE_NAME = "ClassifyObjects (TensorFlow Object Detection)"


def counts(found: Found) -> dict[str, int]:
    """``{"Dog": 2}``: detections per class, classes in the order of their best score."""
    return dict(Counter(row.name for row in found.detections.rows(found.labels)))


def verbose(found: Found) -> list[dict[str, Any]]:
    """The seed's verbose answer: one ``{"class","score","x1","y1","x2","y2"}`` per detection, best first."""
    return [
        {"class": row.name, "score": row.score, "x1": row.xmin, "y1": row.ymin, "x2": row.xmax, "y2": row.ymax}
        for row in found.detections.rows(found.labels)
    ]


def error(message: str) -> dict[str, str]:
    """The API's error body."""
    return {"error": message}


def batch(results: list[Found | ProxyError], *, detailed: bool) -> list[Any]:
    """A JSON batch's answer: per image, what a single request would answer, or ``{"error": ...}``."""
    return [
        error(result.message) if isinstance(result, ProxyError) else (verbose(result) if detailed else counts(result))
        for result in results
    ]


def picture(found: Found, image_format: str) -> bytes:
    """The upright picture as sent, the detections drawn on it, as JPEG (quality 90) or PNG bytes."""
    if found.picture is None:
        raise ValueError("the picture was not kept: ask the pipeline with Options(picture=True)")
    return encode(annotate(found.picture, found.detections.rows(found.labels), found.region), image_format)


def encode(image: Image.Image, image_format: str) -> bytes:
    """An image as JPEG (quality 90) or PNG bytes."""
    buffer = io.BytesIO()
    if image_format == "PNG":
        image.save(buffer, format="PNG")
    else:
        image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


# -- DeepStack and CodeProject.AI ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class VisionCall:
    """What the DeepStack / CodeProject.AI answers report besides the detections."""

    command: str  # "detect" (default model), "custom" (a named model), "list-custom", "status"
    request_id: str
    received: float  # time.perf_counter() when the request had arrived
    inference_device: str  # "CPU", "GPU", or "TF Serving" (the proxy cannot see its device)


def vision(found: Found, call: VisionCall) -> dict[str, Any]:
    """DeepStack's answer and CodeProject.AI's fields: lower-case labels, pixel boxes of the picture as sent."""
    width, height = found.size
    predictions = [
        {
            "confidence": row.score,
            "label": row.name.lower(),
            "y_min": round(row.ymin * height),
            "x_min": round(row.xmin * width),
            "y_max": round(row.ymax * height),
            "x_max": round(row.xmax * width),
        }
        for row in found.detections.rows(found.labels)
    ]
    labels = [str(prediction["label"]) for prediction in predictions]
    message = "Found " + ", ".join(labels[:3]) + ("..." if len(labels) > 3 else "") if labels else "No objects found"
    process_s = found.decode_s + found.inference_s
    return {
        "success": True,
        "predictions": predictions,
        "count": len(predictions),
        "message": message,
        "duration": round(process_s, 6),
        "inferenceMs": round(found.inference_s * 1000),
        "processMs": round(process_s * 1000),
        "code": 200,
        **_envelope(call),
    }


def vision_error(status: int, message: str, call: VisionCall) -> dict[str, Any]:
    """An error with both families' fields and an empty ``predictions``, so no client trips over it."""
    return {
        "success": False,
        "error": message,
        "predictions": [],
        "count": 0,
        "message": message,
        "duration": 0,
        "inferenceMs": 0,
        "processMs": 0,
        "code": status,
        **_envelope(call),
    }


def model_list(names: list[str], call: VisionCall) -> dict[str, Any]:
    """CodeProject.AI's ``/v1/vision/custom/list`` answer: the served model names."""
    return {"success": True, "models": names, "message": "", "code": 200, **_envelope(call)}


def server_version(*, update_check: bool) -> dict[str, Any]:
    """CodeProject.AI's ``ping`` and ``updateavailable`` answers. This server never looks for updates: it names
    its own version as both the current and the latest one."""
    version = _version_info()
    body: dict[str, Any] = {
        "success": True,
        "code": 200,
        "hostname": _HOSTNAME,
        "message": version["version"],
        "version": version["info"],
    }
    if update_check:
        body.update(
            message="This is the current version",
            updateAvailable=False,
            current=version["info"],
            latest=version["info"],
        )
    return body


def _envelope(call: VisionCall) -> dict[str, Any]:
    return {
        "command": call.command,
        "moduleId": MODULE_ID,
        "moduleName": MODULE_NAME,
        "requestId": call.request_id,
        "inferenceDevice": call.inference_device,
        "executionProvider": call.inference_device,  # the older CodeProject.AI SDKs' name for it
        "canUseGPU": call.inference_device == "GPU",
        "processedBy": _HOSTNAME,
        "analysisRoundTripMs": round((time.perf_counter() - call.received) * 1000),
        "timestampUTC": formatdate(usegmt=True),  # RFC 1123, as CodeProject.AI writes it
    }


_HOSTNAME = socket.gethostname()


def _version_info() -> dict[str, Any]:
    try:
        text = importlib.metadata.version("classifyobjects")
    except importlib.metadata.PackageNotFoundError:
        text = "0.0.0"
    parts = [int(part) if part.isdigit() else 0 for part in text.split(".")[:3]] + [0, 0, 0]
    info = {
        "major": parts[0],
        "minor": parts[1],
        "patch": parts[2],
        "preRelease": "",
        "securityUpdate": False,
        "build": 0,
        "file": "",
        "releaseNotes": "",
    }
    return {"version": text, "info": info}
