"""The converter's errors: each is one line for the user, and the CLI's exit status."""

from __future__ import annotations


class ConversionError(Exception):
    """Conversion failed for a reason the user can fix; ``str()`` is the one-line message."""

    exit_code = 1


class InputNotFound(ConversionError):
    """The input path does not exist."""


class NotAGraph(ConversionError):
    """The input is not a GraphDef (or not a SavedModel)."""


class MissingTensors(ConversionError):
    """The graph or signature lacks tensors the Object Detection API contract requires."""


class OutputNotWritable(ConversionError):
    """The output base directory cannot be created or written."""
