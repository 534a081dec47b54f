"""ClassifyObjects HTTP proxy: ``POST /classify`` in front of a TensorFlow Object Detection model."""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    # Lazy: importing a submodule (the generated protos, settings) must not build the whole app, and gunicorn's
    # master must not import prometheus_client before it has chosen the metrics directory for the workers.
    if name == "create_app":
        from proxy.app import create_app

        return create_app
    raise AttributeError(f"module 'proxy' has no attribute {name!r}")
