"""The converter's errors: each is one line for the user, and the CLI's exit status.

ConversionError          1  conversion failed for a reason the user can fix
├── InputNotFound        1  the input path does not exist
├── NotAGraph            1  the input is not a GraphDef, or not a SavedModel
├── MissingTensors       1  the graph or signature breaks the Object Detection API contract (named)
├── BadLabelMap          1  the label map is missing or malformed (file and line named)
├── OutputNotWritable    1  the output base directory cannot be created or written
├── NoModelFound         3  a model directory holds no model (``find``; conversion of a directory)
├── FetchFailed          4  the default detector (package registry) or a zoo model (``fetch``) could not be fetched
└── ModelDirOccupied     5  ``fetch`` would replace a model the directory holds, and was not told to (``--force``)
"""

from __future__ import annotations


class ConversionError(Exception):
    """Conversion failed for a reason the user can fix; ``str()`` is the one-line message."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        # TensorFlow's messages run over several lines; the user gets the first, which names the problem.
        lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
        super().__init__(lines[0] if lines else type(self).__name__)


class InputNotFound(ConversionError):
    """The input path does not exist."""


class NotAGraph(ConversionError):
    """The input is not a GraphDef (or not a SavedModel)."""


class MissingTensors(ConversionError):
    """The graph or signature lacks tensors the Object Detection API contract requires, or has unusable ones."""


class BadLabelMap(ConversionError):
    """The label map given or found beside the model is missing or malformed."""


class OutputNotWritable(ConversionError):
    """The output base directory cannot be created or written."""


class NoModelFound(ConversionError):
    """A model directory holds neither a frozen graph nor a SavedModel."""

    exit_code = 3


class FetchFailed(ConversionError):
    """A model (the default detector, a zoo model) could not be fetched or put in place, or failed its SHA-256."""

    exit_code = 4


class ModelDirOccupied(ConversionError):
    """The model directory already holds a model ``fetch`` would replace, and ``--force`` was not given."""

    exit_code = 5
