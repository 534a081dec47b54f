"""Turn a TF1 frozen Object Detection graph, or a SavedModel, into a new TF Serving model version."""

from __future__ import annotations

from converter.convert import Result, convert
from converter.errors import ConversionError

__all__ = ["ConversionError", "Result", "convert"]
