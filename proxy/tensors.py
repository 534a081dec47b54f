"""TensorProto <-> numpy conversion without TensorFlow.

TF Serving answers with typed fields (`float_val`, `int_val`, ...) by default and clients usually send
`tensor_content`, so decoding reads both encodings, including the TensorProto rule that fewer typed values
than the shape holds means the last value repeats (and none at all means zeros).

Errors: `TensorDecodeError` (a ValueError) for a tensor this module cannot turn into an array; TypeError for
an array it cannot turn into a tensor.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt

from proxy._proto.tensorflow.core.framework import tensor_pb2, types_pb2


class TensorDecodeError(ValueError):
    """A TensorProto cannot be decoded: unsupported dtype, unknown shape, or values that do not fit it."""


#: TensorFlow DataType value -> the numpy dtype its elements decode to.
DTYPE_TO_NUMPY: Mapping[int, np.dtype[Any]] = MappingProxyType(
    {
        types_pb2.DT_FLOAT: np.dtype(np.float32),
        types_pb2.DT_DOUBLE: np.dtype(np.float64),
        types_pb2.DT_HALF: np.dtype(np.float16),
        # numpy has no bfloat16; widening to float32 is exact.
        types_pb2.DT_BFLOAT16: np.dtype(np.float32),
        types_pb2.DT_INT8: np.dtype(np.int8),
        types_pb2.DT_INT16: np.dtype(np.int16),
        types_pb2.DT_INT32: np.dtype(np.int32),
        types_pb2.DT_INT64: np.dtype(np.int64),
        types_pb2.DT_UINT8: np.dtype(np.uint8),
        types_pb2.DT_UINT16: np.dtype(np.uint16),
        types_pb2.DT_UINT32: np.dtype(np.uint32),
        types_pb2.DT_UINT64: np.dtype(np.uint64),
        types_pb2.DT_BOOL: np.dtype(np.bool_),
        types_pb2.DT_COMPLEX64: np.dtype(np.complex64),
        types_pb2.DT_COMPLEX128: np.dtype(np.complex128),
        types_pb2.DT_STRING: np.dtype(object),
    }
)

#: numpy dtype -> the TensorFlow DataType an array of it is sent as (bytes and str arrays go as DT_STRING).
NUMPY_TO_DTYPE: Mapping[np.dtype[Any], int] = MappingProxyType(
    {dtype: data_type for data_type, dtype in DTYPE_TO_NUMPY.items() if data_type != types_pb2.DT_BFLOAT16}
)

# DataType -> (typed TensorProto field, dtype of the values as that field stores them).
_TYPED_FIELDS: Mapping[int, tuple[str, np.dtype[Any]]] = MappingProxyType(
    {
        types_pb2.DT_FLOAT: ("float_val", np.dtype(np.float32)),
        types_pb2.DT_DOUBLE: ("double_val", np.dtype(np.float64)),
        # 16-bit floats travel as their bit patterns, one per int32.
        types_pb2.DT_HALF: ("half_val", np.dtype(np.int32)),
        types_pb2.DT_BFLOAT16: ("half_val", np.dtype(np.int32)),
        # Every integer type narrower than 32 bits shares int_val.
        types_pb2.DT_INT8: ("int_val", np.dtype(np.int32)),
        types_pb2.DT_INT16: ("int_val", np.dtype(np.int32)),
        types_pb2.DT_INT32: ("int_val", np.dtype(np.int32)),
        types_pb2.DT_UINT8: ("int_val", np.dtype(np.int32)),
        types_pb2.DT_UINT16: ("int_val", np.dtype(np.int32)),
        types_pb2.DT_INT64: ("int64_val", np.dtype(np.int64)),
        types_pb2.DT_UINT32: ("uint32_val", np.dtype(np.uint32)),
        types_pb2.DT_UINT64: ("uint64_val", np.dtype(np.uint64)),
        types_pb2.DT_BOOL: ("bool_val", np.dtype(np.bool_)),
        # Complex numbers travel as flattened (real, imaginary) pairs.
        types_pb2.DT_COMPLEX64: ("scomplex_val", np.dtype(np.float32)),
        types_pb2.DT_COMPLEX128: ("dcomplex_val", np.dtype(np.float64)),
        types_pb2.DT_STRING: ("string_val", np.dtype(object)),
    }
)


def dtype_name(data_type: int) -> str:
    """Return a DataType's enum name (e.g. "DT_FLOAT"), or its number if the enum has no such value."""
    try:
        return str(types_pb2.DataType.Name(data_type))
    except ValueError:
        return str(data_type)


def ndarray_to_tensor_proto(arr: npt.ArrayLike, into: tensor_pb2.TensorProto | None = None) -> tensor_pb2.TensorProto:
    """Encode an array as a TensorProto: tensor_content (little-endian, C order), or string_val for text.

    ``into``: an empty TensorProto to fill (a request's input), so a picture's tensor is not copied once more into
    its message.
    """
    array = np.asarray(arr)
    proto = tensor_pb2.TensorProto() if into is None else into
    for size in array.shape:
        proto.tensor_shape.dim.add(size=size)
    if array.dtype.kind in "SUO":
        proto.dtype = types_pb2.DT_STRING
        proto.string_val.extend(_as_bytes_list(array))
        return proto
    native = array.dtype.newbyteorder("=")
    data_type = NUMPY_TO_DTYPE.get(native)
    if data_type is None:
        raise TypeError(f"cannot encode a numpy {array.dtype} array as a TensorProto")
    proto.dtype = data_type
    content = _backing_bytes(array)
    if content is None:
        content = np.ascontiguousarray(array, dtype=native.newbyteorder("<")).tobytes()
    proto.tensor_content = content
    return proto


def _backing_bytes(array: np.ndarray[Any, np.dtype[Any]]) -> bytes | None:
    """The bytes object ``array`` is a whole view of, already in tensor_content's layout (C order, little-endian),
    or None. A picture's pixels are such a view (numpy wraps the bytes Pillow gives): they are then sent without
    another copy of the picture."""
    base: Any = array
    while isinstance(base, np.ndarray):
        base = base.base
    if not isinstance(base, bytes) or len(base) != array.nbytes or not array.flags.c_contiguous:
        return None
    order = array.dtype.byteorder
    little = order == "<" or (order == "=" and sys.byteorder == "little")
    if array.dtype.itemsize > 1 and not little:
        return None
    start = np.frombuffer(base, dtype=np.uint8).__array_interface__["data"][0]
    return base if array.__array_interface__["data"][0] == start else None


def _as_bytes_list(array: np.ndarray[Any, np.dtype[Any]]) -> list[bytes]:
    """Return a text/bytes array's elements as bytes in C order (str is encoded as UTF-8)."""
    # numpy's fixed-width "S" dtype drops trailing NUL bytes; binary payloads belong in object arrays.
    if array.dtype.kind == "U":
        array = np.char.encode(array, "utf-8")
    values = array.ravel().tolist()
    if array.dtype.kind == "O" and not all(isinstance(value, bytes) for value in values):
        raise TypeError("an object array is encoded as DT_STRING only when every element is bytes")
    return values


def tensor_shape(proto: tensor_pb2.TensorProto) -> tuple[int, ...]:
    """Return a TensorProto's shape, refusing unknown rank and unknown (-1) dimensions."""
    shape = proto.tensor_shape
    if shape.unknown_rank:
        raise TensorDecodeError("tensor has unknown rank")
    dims = tuple([dim.size for dim in shape.dim])
    if dims and min(dims) < 0:
        raise TensorDecodeError(f"tensor shape {list(dims)} has unknown dimensions")
    return dims


def tensor_proto_to_ndarray(proto: tensor_pb2.TensorProto) -> np.ndarray[Any, np.dtype[Any]]:
    """Decode a TensorProto (tensor_content or typed fields) into a new, writable numpy array."""
    data_type = int(proto.dtype)
    dtype = DTYPE_TO_NUMPY.get(data_type)
    if dtype is None:
        raise TensorDecodeError(f"unsupported tensor dtype {dtype_name(data_type)}")
    shape = tensor_shape(proto)
    count = math.prod(shape)
    if proto.tensor_content:
        return _from_content(bytes(proto.tensor_content), data_type, dtype, count).reshape(shape)
    return _from_typed_field(proto, data_type, dtype, count).reshape(shape)


def _from_content(content: bytes, data_type: int, dtype: np.dtype[Any], count: int) -> np.ndarray[Any, Any]:
    """Decode tensor_content, which holds exactly count little-endian elements."""
    if data_type == types_pb2.DT_STRING:
        raise TensorDecodeError("DT_STRING tensors cannot use tensor_content")
    wire = np.dtype(np.uint16) if data_type == types_pb2.DT_BFLOAT16 else dtype
    wire = wire.newbyteorder("<")
    if len(content) != count * wire.itemsize:
        raise TensorDecodeError(
            f"{dtype_name(data_type)} tensor of {count} elements needs {count * wire.itemsize} bytes "
            f"of tensor_content, got {len(content)}"
        )
    values = np.frombuffer(content, dtype=wire)
    if data_type == types_pb2.DT_BFLOAT16:
        return _bfloat16_bits_to_float32(values)
    return values.astype(dtype)  # a copy, so the result neither aliases the message nor is read-only


def _from_typed_field(
    proto: tensor_pb2.TensorProto, data_type: int, dtype: np.dtype[Any], count: int
) -> np.ndarray[Any, Any]:
    """Decode the typed value field for data_type, repeating the last value up to count."""
    field, stored = _TYPED_FIELDS[data_type]
    raw = getattr(proto, field)
    if stored.kind == "O":
        values = np.empty(len(raw), dtype=object)
        values[:] = list(raw)
    else:
        values = np.asarray(raw, dtype=stored)
    if data_type in (types_pb2.DT_COMPLEX64, types_pb2.DT_COMPLEX128):
        if values.size % 2:
            raise TensorDecodeError(f"{field} holds {values.size} numbers, not (real, imaginary) pairs")
        values = values.view(dtype)
    elif data_type == types_pb2.DT_HALF:
        values = values.astype(np.uint16).view(np.float16)
    elif data_type == types_pb2.DT_BFLOAT16:
        values = _bfloat16_bits_to_float32(values.astype(np.uint16))
    elif values.dtype != dtype:
        values = values.astype(dtype)
    return _fill(values, count, data_type, field)


def _fill(values: np.ndarray[Any, Any], count: int, data_type: int, field: str) -> np.ndarray[Any, Any]:
    """Apply the TensorProto rule: no values means zeros, fewer than count means the last one repeats."""
    if values.size == count:
        return values
    if values.size > count:
        raise TensorDecodeError(
            f"{dtype_name(data_type)} tensor of {count} elements has {values.size} values in {field}"
        )
    if values.size == 0:
        return np.full(count, b"" if values.dtype.kind == "O" else 0, dtype=values.dtype)
    return np.concatenate([values, np.full(count - values.size, values[-1], dtype=values.dtype)])


def _bfloat16_bits_to_float32(bits: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Widen bfloat16 bit patterns to float32, whose upper 16 bits they are."""
    return (bits.astype(np.uint32) << 16).view(np.float32)
