"""Which input an Object Detection export takes, read from its graph: the input type, key, tensor and rank.

Every error names what was found, in one line, so a user can tell an unsupported export from a broken file.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from converter.errors import MissingTensors
from odapi.contract import (
    DT_STRING,
    REQUIRED_OUTPUTS,
    TF1_INPUT_KEY,
    TF1_PLACEHOLDERS,
    InputType,
    dtype_name,
    pixel_input_type,
    string_input_type,
)


@dataclass(frozen=True)
class ModelInput:
    """The one input of an Object Detection export."""

    input_type: InputType
    key: str  # the signature's input key
    tensor_name: str  # the graph tensor it feeds, e.g. "image_tensor:0"
    rank: int | None  # None: unknown rank


def frozen_graph_input(graph_def: Any, source: str, override: InputType | None = None) -> ModelInput:
    """The input of a TF1 frozen graph: the exporter's placeholder (``image_tensor``, ``encoded_image_string_tensor``
    or ``tf_example``), checked for its dtype. The signature key is the exporter's own, ``inputs``."""
    nodes = {node.name: node for node in graph_def.node}
    known = [(input_type, nodes[name]) for input_type, name in TF1_PLACEHOLDERS.items() if name in nodes]
    if not known:
        placeholders = [f"{node.name} ({dtype_name(node.attr['dtype'].type)})" for node in _placeholders(graph_def)]
        raise MissingTensors(
            f"{source} has no input of a known type (its placeholders: {', '.join(placeholders) or 'none'}); "
            "Object Detection exports take image_tensor, encoded_image_string_tensor or tf_example"
        )
    if len(known) > 1:
        raise MissingTensors(
            f"{source} has several inputs ({', '.join(node.name for _, node in known)}); an export takes one"
        )
    input_type, node = known[0]
    data_type = node.attr["dtype"].type
    wanted = 4 if input_type is InputType.IMAGE_TENSOR else DT_STRING
    if node.op not in ("Placeholder", "PlaceholderWithDefault") or data_type != wanted:
        raise MissingTensors(
            f"{node.name} in {source} is a {node.op} of {dtype_name(data_type)}; "
            f"expected a {dtype_name(wanted)} Placeholder"
        )
    shape = node.attr["shape"].shape
    rank = None if shape.unknown_rank or not node.attr["shape"].ListFields() else len(shape.dim)
    return ModelInput(_overridden(input_type, override, source), TF1_INPUT_KEY, f"{node.name}:0", rank)


def signature_input(signature: Any, ops: Iterable[str], source: str, override: InputType | None = None) -> ModelInput:
    """The input of a SavedModel signature: its dtype tells pixels from bytes; for bytes, the placeholder name
    (TF1 exporter) or a ParseExample op in the graph (TF2 exports) tells a tf.Example from an encoded image."""
    inputs = dict(signature.inputs)
    if len(inputs) != 1:
        found = ", ".join(f"{key} ({dtype_name(info.dtype)})" for key, info in sorted(inputs.items())) or "none"
        raise MissingTensors(f"{source} takes inputs {found}; an Object Detection export takes one image input")
    key, info = next(iter(inputs.items()))
    rank = None if info.tensor_shape.unknown_rank else len(info.tensor_shape.dim)
    if info.dtype == DT_STRING:
        placeholder = info.name.split(":")[0].rsplit("/", 1)[-1]
        by_name = {name: input_type for input_type, name in TF1_PLACEHOLDERS.items()}.get(placeholder)
        input_type = by_name if by_name is not None and by_name.is_encoded else string_input_type(ops)
    else:
        pixels = pixel_input_type(dtype_name(info.dtype))
        if pixels is None or rank not in (None, 4):
            shape = "?" if rank is None else str([dim.size for dim in info.tensor_shape.dim])
            raise MissingTensors(
                f"{source} takes {key} of {dtype_name(info.dtype)} {shape}; an Object Detection export takes "
                "uint8 or float32 pixels [batch, height, width, 3], or a string of image bytes"
            )
        input_type = pixels
    return ModelInput(_overridden(input_type, override, source), key, info.name, rank)


def check_outputs(outputs: Iterable[str], source: str) -> None:
    """Raise ``MissingTensors`` naming what is there when a required detection output is missing."""
    present = sorted(outputs)
    missing = [name for name in REQUIRED_OUTPUTS if name not in present]
    if missing:
        raise MissingTensors(
            f"{source} lacks outputs {', '.join(missing)} (it has: {', '.join(present[:12]) or 'none'}); "
            "is it an Object Detection API export?"
        )


def _placeholders(graph_def: Any) -> list[Any]:
    return [node for node in graph_def.node if node.op in ("Placeholder", "PlaceholderWithDefault")]


def _overridden(found: InputType, override: InputType | None, source: str) -> InputType:
    """``override`` when it fits the input's dtype (say, one string type for the other), else an error."""
    if override is None or override is found:
        return found
    if override.tensor_dtype != found.tensor_dtype:
        raise MissingTensors(
            f"--input-type {override} does not fit {source}, whose input is {found.tensor_dtype} ({found})"
        )
    return override
