"""ClassifyObjects HTTP proxy: ``POST /classify`` in front of a TensorFlow Object Detection model."""

from __future__ import annotations

from proxy.app import create_app

__all__ = ["create_app"]
