"""Object Detection exports → TF Serving versions: the library (``convert``) behind ``python -m converter``."""

from __future__ import annotations

from converter.convert import Result, convert
from converter.errors import ConversionError

__all__ = ["ConversionError", "Result", "convert"]
