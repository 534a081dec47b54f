"""The Object Detection API label map (``label_map.pbtxt``), parsed with protobuf's own text-format parser.

The message is ``object_detection.protos.StringIntLabelMap``. It is declared here, in a private descriptor pool,
so neither the Object Detection API nor TensorFlow is needed to read it. The converter checks a label map with this
parser before it writes it into a version; the proxy reads it back with the same one.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format


class LabelMapError(ValueError):
    """A label map that cannot be used; the message names the source and, where it can, the line."""


_F = descriptor_pb2.FieldDescriptorProto


def _build_label_map_class() -> Any:
    """Declare StringIntLabelMap with the field numbers of the OD API's string_int_label_map.proto."""
    fdp = descriptor_pb2.FileDescriptorProto(
        name="object_detection/protos/string_int_label_map.proto",
        package="object_detection.protos",
        syntax="proto2",
    )
    frequency = fdp.enum_type.add(name="LVISFrequency")
    for number, name in enumerate(["UNSPECIFIED", "FREQUENT", "COMMON", "RARE"]):
        frequency.value.add(name=name, number=number)
    item = fdp.message_type.add(name="StringIntLabelMapItem")
    keypoint = item.nested_type.add(name="KeypointMap")
    keypoint.field.add(name="id", number=1, type=_F.TYPE_INT32, label=_F.LABEL_OPTIONAL)
    keypoint.field.add(name="label", number=2, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    item.field.add(name="name", number=1, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    item.field.add(name="id", number=2, type=_F.TYPE_INT32, label=_F.LABEL_OPTIONAL)
    item.field.add(name="display_name", number=3, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    item.field.add(
        name="keypoints",
        number=4,
        type=_F.TYPE_MESSAGE,
        label=_F.LABEL_REPEATED,
        type_name=".object_detection.protos.StringIntLabelMapItem.KeypointMap",
    )
    item.field.add(name="ancestor_ids", number=5, type=_F.TYPE_INT32, label=_F.LABEL_REPEATED)
    item.field.add(name="descendant_ids", number=6, type=_F.TYPE_INT32, label=_F.LABEL_REPEATED)
    item.field.add(
        name="frequency",
        number=7,
        type=_F.TYPE_ENUM,
        label=_F.LABEL_OPTIONAL,
        type_name=".object_detection.protos.LVISFrequency",
    )
    item.field.add(name="instance_count", number=8, type=_F.TYPE_INT32, label=_F.LABEL_OPTIONAL)
    label_map = fdp.message_type.add(name="StringIntLabelMap")
    label_map.field.add(
        name="item",
        number=1,
        type=_F.TYPE_MESSAGE,
        label=_F.LABEL_REPEATED,
        type_name=".object_detection.protos.StringIntLabelMapItem",
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("object_detection.protos.StringIntLabelMap"))


StringIntLabelMap = _build_label_map_class()

_LINE = re.compile(r"^(\d+):(\d+)\s*:\s*(.*)$", re.DOTALL)


def parse_label_map(text: str, *, source: str = "label map") -> dict[int, str]:
    """Class id → display name (``display_name``, else ``name``, title-cased, as the seed showed them).

    Raises ``LabelMapError`` naming the source and line of the first problem.
    """
    message = StringIntLabelMap()
    try:
        text_format.Parse(text.replace("\r\n", "\n"), message)
    except text_format.ParseError as exc:
        raise LabelMapError(_describe_parse_error(source, exc)) from None
    names: dict[int, str] = {}
    for index, item in enumerate(message.item, start=1):
        where = f"{source}: item {index}"
        if not item.HasField("id"):
            raise LabelMapError(f"{where} has no id")
        label = item.display_name or item.name
        if item.id < 0:
            raise LabelMapError(f"{where} has a negative id {item.id}")
        if item.id == 0 and label.lower() != "background":
            raise LabelMapError(f"{where}: id 0 is reserved for the background class")
        if not label:
            raise LabelMapError(f"{where} (id {item.id}) has neither display_name nor name")
        if item.id in names:
            raise LabelMapError(f"{where} repeats id {item.id}")
        names[item.id] = label.title()
    if not names:
        raise LabelMapError(f"{source} has no items")
    return names


def read_label_map(path: Path) -> tuple[str, dict[int, str]]:
    """The file's text and its parsed names; ``LabelMapError`` when it is missing, unreadable or malformed."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LabelMapError(f"label map not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelMapError(f"cannot read label map {path}: {exc}") from None
    return text, parse_label_map(text, source=str(path))


def _describe_parse_error(source: str, exc: text_format.ParseError) -> str:
    line, column = exc.GetLine(), exc.GetColumn()
    detail = str(exc)
    match = _LINE.match(detail)
    if match:
        detail = match.group(3)
    if line is not None:
        return f"{source}: line {line}, column {column}: {detail}"
    return f"{source}: {detail}"
