"""What Object Detection API exports look like from outside: input types, tensor names, signature keys.

Both exporters are covered (research/object_detection in tensorflow/models):

- ``image_tensor``: TF1 placeholder ``image_tensor`` uint8 [None, None, None, 3]; TF2 uint8 [1, None, None, 3].
- ``float_image_tensor`` (TF2 only): float32 [1, None, None, 3], values 0..255.
- ``encoded_image_string_tensor``: TF1 placeholder of that name, string [None]; TF2 string [1]. JPEG/PNG bytes.
- ``tf_example``: TF1 placeholder ``tf_example``, string [None] (older exporters: a scalar); TF2 string [1].
  A serialized ``tf.train.Example`` with the picture in ``image/encoded``.

The TF1 exporter's SavedModel names its input ``inputs``; TF2 exports name it ``input_tensor``. The two string types
look the same in a signature: only the graph (a ParseExample op) or the converter's metadata tells them apart.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Any

SIGNATURE_KEY = "serving_default"
SERVE_TAG = "serve"
PREDICT_METHOD = "tensorflow/serving/predict"
TF1_INPUT_KEY = "inputs"
TF2_INPUT_KEY = "input_tensor"

REQUIRED_OUTPUTS = ("detection_boxes", "detection_scores", "detection_classes")
COUNT_OUTPUT = "num_detections"
# What an answer reads: the required outputs and, when the model has it, the count of valid rows.
ANSWER_OUTPUTS = (*REQUIRED_OUTPUTS, COUNT_OUTPUT)
OPTIONAL_OUTPUTS = (
    "detection_masks",
    "detection_keypoints",
    "detection_keypoint_scores",
    "detection_multiclass_scores",
    "detection_features",
    "detection_anchor_indices",
    "raw_detection_boxes",
    "raw_detection_scores",
)

# The tf.train.Example feature holding the encoded picture, and its format, as the OD API's decoder reads them.
EXAMPLE_IMAGE_KEY = "image/encoded"
EXAMPLE_FORMAT_KEY = "image/format"

# What the converter adds to every version it writes, because TF Serving shows its clients nothing but signatures:
# - a signature that answers the input type and the label map (its one input, a string vector of empty strings,
#   only gives the outputs a batch dimension, which TF Serving's batching requires of every output);
# - an output of the serving signature that repeats the label map in every answer, so that the proxy names classes
#   with the label map of the very model that answered, whatever version or replica that was.
METADATA_SIGNATURE = "classifyobjects_metadata"
METADATA_REQUEST = "request"
METADATA_INPUT_TYPE = "input_type"
METADATA_LABEL_MAP = "label_map"
LABEL_MAP_OUTPUT = "classifyobjects_label_map"


class InputType(enum.StrEnum):
    """The input types the Object Detection API exporters write (their ``--input_type`` values)."""

    IMAGE_TENSOR = "image_tensor"
    FLOAT_IMAGE_TENSOR = "float_image_tensor"
    ENCODED_IMAGE_STRING_TENSOR = "encoded_image_string_tensor"
    TF_EXAMPLE = "tf_example"

    @property
    def is_encoded(self) -> bool:
        """True when the model takes compressed image bytes (a string tensor) rather than pixels."""
        return self in (InputType.ENCODED_IMAGE_STRING_TENSOR, InputType.TF_EXAMPLE)

    @property
    def tensor_dtype(self) -> str:
        """The input tensor's dtype name: ``uint8``, ``float32`` or ``string``."""
        return _PIXEL_DTYPES.get(self, "string")


# The dtype of each pixel input; the string inputs take "string".
_PIXEL_DTYPES = {InputType.IMAGE_TENSOR: "uint8", InputType.FLOAT_IMAGE_TENSOR: "float32"}

# TensorFlow's DataType numbers (tensorflow/core/framework/types.proto) → the dtype names used here and in messages.
DT_STRING = 7
DATA_TYPE_NAMES = {1: "float32", 2: "float64", 3: "int32", 4: "uint8", DT_STRING: "string", 9: "int64", 19: "float16"}


def dtype_name(data_type: int) -> str:
    """A TensorFlow DataType number as its dtype name (``uint8``), or the number when it is an unusual one."""
    return DATA_TYPE_NAMES.get(data_type, f"dtype {data_type}")


# The TF1 exporter's placeholder for each input type it writes (it writes no float input).
TF1_PLACEHOLDERS = {
    InputType.IMAGE_TENSOR: "image_tensor",
    InputType.ENCODED_IMAGE_STRING_TENSOR: "encoded_image_string_tensor",
    InputType.TF_EXAMPLE: "tf_example",
}

# Ops whose presence in a string-input graph means it parses tf.train.Example protos.
PARSE_EXAMPLE_OPS = frozenset({"ParseExample", "ParseExampleV2", "ParseSingleExample", "ParseSequenceExample"})


def graph_ops(graph_def: Any) -> set[str]:
    """Every op type in a ``GraphDef``, its function library included (TF2 exports keep their graphs there)."""
    ops = {node.op for node in graph_def.node}
    for function in graph_def.library.function:
        ops.update(node.op for node in function.node_def)
    return ops


def string_input_type(ops: Iterable[str]) -> InputType:
    """A string input's type, from the ops of the graph behind it: parsing tf.Example protos, or decoding images."""
    return InputType.TF_EXAMPLE if PARSE_EXAMPLE_OPS.intersection(ops) else InputType.ENCODED_IMAGE_STRING_TENSOR


def pixel_input_type(dtype: str) -> InputType | None:
    """The pixel input type for a signature input of ``dtype`` (``uint8``, ``float32``), or None."""
    return next((input_type for input_type, name in _PIXEL_DTYPES.items() if name == dtype), None)


def encode_example(image: bytes, image_format: str) -> bytes:
    """A serialized ``tf.train.Example`` holding ``image`` under ``image/encoded`` and its ``image/format``.

    Written with protobuf's wire format directly (Example → Features → map<string, Feature> → BytesList), so the
    proxy needs neither TensorFlow nor example.proto for it; the tests compare it with TensorFlow's own parsing.
    """
    features = _feature_entry(EXAMPLE_IMAGE_KEY, image) + _feature_entry(EXAMPLE_FORMAT_KEY, image_format.encode())
    return _field(1, features)  # Example.features


def _feature_entry(key: str, value: bytes) -> bytes:
    bytes_list = _field(1, value)  # BytesList.value
    feature = _field(1, bytes_list)  # Feature.bytes_list
    return _field(1, _field(1, key.encode()) + _field(2, feature))  # Features.feature map entry: key, value


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
