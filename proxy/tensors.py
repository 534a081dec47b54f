"""TensorProto <-> numpy conversion without TensorFlow.

TF Serving answers with typed fields (`float_val`, `int_val`, ...) by default and clients usually send
`tensor_content`, so decoding reads both encodings, including the TensorProto rule that fewer typed values
than the shape holds means the last value repeats (and none at all means zeros).

Errors: `TensorDecodeError` (a ValueError) for a tensor this module cannot turn into an array; TypeError for
an array it cannot turn into a tensor.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt

from proxy._proto.tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2


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

    ``into``: an empty TensorProto to fill (a message's field). The message is what ``tensor_wire`` writes, parsed.
    """
    proto = tensor_pb2.TensorProto() if into is None else into
    proto.MergeFromString(b"".join(tensor_wire(arr)))
    return proto


#: A piece of a serialized message: bytes, or a flat byte view of an array's memory (``len`` is its size in bytes).
Piece = bytes | memoryview


def tensor_wire(arr: npt.ArrayLike) -> list[Piece]:
    """The serialized TensorProto of an array, as pieces for one ``b"".join``: dtype, shape, then tensor_content
    (little-endian, C order) or string_val (bytes; str as UTF-8) - field for field what protobuf writes for that
    message.

    Why not protobuf: a message copies a picture's pixels in when they are assigned, and again when it is serialized;
    written here, the pixels are a view of the array's own memory (copied first only when they need reordering) and
    are copied once, by the join that makes the request (a 4000x3000 JPEG's 1000x750 pixels are 2.25 MB). The tests
    hold this to protobuf's own serialization and to TensorFlow's decoding.
    """
    array = np.asarray(arr)
    if array.dtype.kind in "SUO":
        header = _varint_field(_TENSOR_DTYPE, types_pb2.DT_STRING)
        values: list[Piece] = []
        for value in _as_bytes_list(array):
            values.extend(length_delimited(_TENSOR_STRING_VAL, [value]))
        return [*header, *_shape_wire(array.shape), *values]
    native = array.dtype.newbyteorder("=")
    data_type = NUMPY_TO_DTYPE.get(native)
    if data_type is None:
        raise TypeError(f"cannot encode a numpy {array.dtype} array as a TensorProto")
    header = _varint_field(_TENSOR_DTYPE, data_type)
    content = np.ascontiguousarray(array, dtype=native.newbyteorder("<"))  # no copy when it is already so
    flat: Any = content.reshape(-1).view(np.uint8)  # numpy's stubs do not say an array is a buffer
    values = length_delimited(_TENSOR_CONTENT, [memoryview(flat)]) if content.nbytes else []
    return [*header, *_shape_wire(array.shape), *values]


# The field numbers of TensorProto, TensorShapeProto and its Dim (tensor.proto, tensor_shape.proto).
_TENSOR_FIELDS = tensor_pb2.TensorProto.DESCRIPTOR.fields_by_name
_TENSOR_DTYPE, _TENSOR_SHAPE = _TENSOR_FIELDS["dtype"].number, _TENSOR_FIELDS["tensor_shape"].number
_TENSOR_CONTENT, _TENSOR_STRING_VAL = _TENSOR_FIELDS["tensor_content"].number, _TENSOR_FIELDS["string_val"].number
_SHAPE_DIM = tensor_shape_pb2.TensorShapeProto.DESCRIPTOR.fields_by_name["dim"].number
_DIM_SIZE = tensor_shape_pb2.TensorShapeProto.Dim.DESCRIPTOR.fields_by_name["size"].number
# Wire types (protobuf's encoding): a varint, or a length-delimited run of bytes.
_VARINT, _LEN = 0, 2


def _shape_wire(shape: tuple[int, ...]) -> list[Piece]:
    """tensor_shape: one dim per axis (a 0 size is a dim with no size field); nothing at all for a scalar."""
    if not shape:
        return []
    dims: list[Piece] = []
    for size in shape:
        dims.extend(length_delimited(_SHAPE_DIM, _varint_field(_DIM_SIZE, size) if size else []))
    return length_delimited(_TENSOR_SHAPE, dims)


def _varint_field(field: int, value: int) -> list[Piece]:
    return [_varint(field << 3 | _VARINT), _varint(value)]


def length_delimited(field: int, pieces: list[Piece]) -> list[Piece]:
    """``pieces`` (a serialized message, or bytes) as field number ``field`` of the message around them."""
    return [_varint(field << 3 | _LEN), _varint(sum(len(piece) for piece in pieces)), *pieces]


def _varint(value: int) -> bytes:
    """Protobuf's base-128 varint of a non-negative integer: seven bits a byte, low first, the top bit for more."""
    if value < 0:
        raise ValueError(f"a varint here is never negative, got {value}")
    if value < 0x80:
        return _SMALL_VARINTS[value]
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SMALL_VARINTS = tuple(bytes([value]) for value in range(0x80))


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
