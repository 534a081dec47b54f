"""proxy.tensors: TensorProto <-> numpy without TensorFlow, checked against TensorFlow's own conversions."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image
from tensorflow.core.framework import tensor_pb2 as tf_tensor_pb2
from tensorflow.core.framework import types_pb2 as tf_types_pb2

from proxy._proto.tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from proxy._proto.tensorflow_serving.apis import predict_pb2
from proxy.tensors import (
    DTYPE_TO_NUMPY,
    NUMPY_TO_DTYPE,
    TensorDecodeError,
    _varint,
    ndarray_to_tensor_proto,
    tensor_proto_to_ndarray,
    tensor_wire,
)

ROUND_TRIP_DTYPES = [
    np.float32,
    np.float16,
    np.float64,
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.uint8,
    np.uint16,
    np.uint32,
    np.uint64,
    np.bool_,
    np.complex64,
    np.complex128,
]


def _ours(official: tf_tensor_pb2.TensorProto) -> Any:
    """Carry an official TensorProto over the wire into the project's class, as a gRPC answer arrives."""
    return tensor_pb2.TensorProto.FromString(official.SerializeToString())


def _typed(dtype: int, shape: tuple[int, ...], **fields: Any) -> tf_tensor_pb2.TensorProto:
    """Build an official TensorProto in typed-field form, the way TF Serving's AsProtoField fills one."""
    proto = tf_tensor_pb2.TensorProto(dtype=dtype, **fields)
    for size in shape:
        proto.tensor_shape.dim.add(size=size)
    return proto


def _assert_same(actual: np.ndarray[Any, Any], expected: np.ndarray[Any, Any]) -> None:
    """Assert equal dtype, shape and bits (so NaNs and signed zeros count too)."""
    assert actual.dtype == expected.dtype
    assert actual.shape == expected.shape
    if expected.dtype == object:
        assert actual.tolist() == expected.tolist()
    else:
        assert actual.tobytes() == expected.tobytes()


@pytest.mark.parametrize("dtype", ROUND_TRIP_DTYPES, ids=lambda d: np.dtype(d).name)
def test_round_trip_through_tensor_content(dtype: type[np.generic]) -> None:
    """Encoding then decoding an array gives back the same dtype, shape and values."""
    array = (np.arange(24) % 7).astype(dtype).reshape(2, 3, 4)
    proto = ndarray_to_tensor_proto(array)
    assert proto.tensor_content == array.astype(np.dtype(dtype).newbyteorder("<")).tobytes()
    assert [d.size for d in proto.tensor_shape.dim] == [2, 3, 4]
    _assert_same(tensor_proto_to_ndarray(proto), array)


@pytest.mark.parametrize("dtype", ROUND_TRIP_DTYPES, ids=lambda d: np.dtype(d).name)
def test_encoding_matches_tensorflow(dtype: type[np.generic]) -> None:
    """The project's encoding of an array decodes with tf.make_ndarray to the same array."""
    array = (np.arange(12) % 5).astype(dtype).reshape(3, 4)
    wire = ndarray_to_tensor_proto(array).SerializeToString()
    official = tf_tensor_pb2.TensorProto.FromString(wire)
    assert official.dtype == tf.as_dtype(np.dtype(dtype)).as_datatype_enum
    _assert_same(tf.make_ndarray(official), array)


def test_big_endian_arrays_are_sent_little_endian() -> None:
    """A big-endian array is sent as little-endian tensor_content and decodes to the same values."""
    array = np.array([1, 256, -2], dtype=">i4")
    proto = ndarray_to_tensor_proto(array)
    assert proto.dtype == types_pb2.DT_INT32
    assert proto.tensor_content == np.array([1, 256, -2], dtype="<i4").tobytes()
    assert tensor_proto_to_ndarray(proto).tolist() == [1, 256, -2]


def test_scalars_round_trip_with_an_empty_shape() -> None:
    """A 0-d array encodes with no dims and decodes back to a 0-d array."""
    proto = ndarray_to_tensor_proto(np.float32(2.5))
    assert list(proto.tensor_shape.dim) == []
    decoded = tensor_proto_to_ndarray(proto)
    assert decoded.shape == ()
    assert decoded.dtype == np.float32
    assert decoded.item() == 2.5


def test_bytes_and_text_arrays_travel_as_string_val() -> None:
    """Bytes-object and str arrays go as DT_STRING string_val and decode to object arrays of bytes."""
    payload = np.array([b"\xff\xd8jpeg\x00", b""], dtype=object)
    proto = ndarray_to_tensor_proto(payload)
    assert proto.dtype == types_pb2.DT_STRING
    assert list(proto.string_val) == [b"\xff\xd8jpeg\x00", b""]
    _assert_same(tensor_proto_to_ndarray(proto), payload)
    text = ndarray_to_tensor_proto(np.array([["é", "b"]]))
    assert list(text.string_val) == ["é".encode(), b"b"]
    assert tensor_proto_to_ndarray(text).shape == (1, 2)


def test_decoded_arrays_are_writable_copies() -> None:
    """Decoding tensor_content returns a writable array that does not alias the message."""
    proto = ndarray_to_tensor_proto(np.zeros(3, dtype=np.float32))
    decoded = tensor_proto_to_ndarray(proto)
    decoded[0] = 1.0
    assert tensor_proto_to_ndarray(proto).tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize(
    "array",
    [
        np.arange(6, dtype=np.float32).reshape(2, 3) / 7,
        np.array([1.5, -2.0], dtype=np.float64),
        np.array([[1, 0], [255, 7]], dtype=np.uint8),
        np.array([-3, 4], dtype=np.int64),
        np.array([70000, 2**32 - 1], dtype=np.uint32),
        np.array([True, False, True]),
        np.array([1.5, -0.25, 65504], dtype=np.float16),
        np.array([1 + 2j, -3j], dtype=np.complex64),
        np.array([b"a", b"bb\x00"], dtype=object),
        np.arange(24, dtype=np.uint16).reshape(2, 3, 4),
    ],
    ids=lambda a: f"{a.dtype.name}{list(a.shape)}",
)
def test_decodes_tf_make_tensor_proto_like_tf_make_ndarray(array: np.ndarray[Any, Any]) -> None:
    """Whatever encoding tf.make_tensor_proto picks, decoding gives what tf.make_ndarray gives."""
    official = tf.make_tensor_proto(array)
    _assert_same(tensor_proto_to_ndarray(_ours(official)), tf.make_ndarray(official))


@pytest.mark.parametrize(
    ("official", "expected"),
    [
        (
            _typed(tf_types_pb2.DT_FLOAT, (1, 2, 4), float_val=[0.1, 0.2, 0.5, 0.6, 0, 0, 1, 1]),
            np.array([0.1, 0.2, 0.5, 0.6, 0, 0, 1, 1], dtype=np.float32).reshape(1, 2, 4),
        ),
        (_typed(tf_types_pb2.DT_DOUBLE, (2,), double_val=[1e300, -0.5]), np.array([1e300, -0.5])),
        (
            _typed(tf_types_pb2.DT_INT32, (3,), int_val=[-1, 0, 2**31 - 1]),
            np.array([-1, 0, 2**31 - 1], np.int32),
        ),
        (_typed(tf_types_pb2.DT_INT8, (2,), int_val=[-128, 127]), np.array([-128, 127], np.int8)),
        (_typed(tf_types_pb2.DT_INT16, (2,), int_val=[-300, 300]), np.array([-300, 300], np.int16)),
        (_typed(tf_types_pb2.DT_UINT8, (2,), int_val=[0, 255]), np.array([0, 255], np.uint8)),
        (_typed(tf_types_pb2.DT_UINT16, (1,), int_val=[65535]), np.array([65535], np.uint16)),
        (_typed(tf_types_pb2.DT_INT64, (1,), int64_val=[-(2**62)]), np.array([-(2**62)], np.int64)),
        (_typed(tf_types_pb2.DT_UINT32, (1,), uint32_val=[2**32 - 1]), np.array([2**32 - 1], np.uint32)),
        (_typed(tf_types_pb2.DT_UINT64, (1,), uint64_val=[2**64 - 1]), np.array([2**64 - 1], np.uint64)),
        (_typed(tf_types_pb2.DT_BOOL, (2,), bool_val=[True, False]), np.array([True, False])),
        (
            _typed(tf_types_pb2.DT_HALF, (2,), half_val=np.array([1.5, -2], np.float16).view(np.uint16).tolist()),
            np.array([1.5, -2], np.float16),
        ),
        (_typed(tf_types_pb2.DT_COMPLEX128, (1,), dcomplex_val=[3, -4]), np.array([3 - 4j], np.complex128)),
        (_typed(tf_types_pb2.DT_STRING, (2,), string_val=[b"x", b""]), np.array([b"x", b""], dtype=object)),
    ],
    ids=lambda v: tf_types_pb2.DataType.Name(v.dtype) if isinstance(v, tf_tensor_pb2.TensorProto) else "",
)
def test_decodes_typed_fields_as_tf_serving_sends_them(
    official: tf_tensor_pb2.TensorProto, expected: np.ndarray[Any, Any]
) -> None:
    """Outputs in typed-field form (TF Serving's default) decode to the array tf.make_ndarray gives."""
    decoded = tensor_proto_to_ndarray(_ours(official))
    _assert_same(decoded, expected)
    _assert_same(decoded, tf.make_ndarray(official))


def test_bfloat16_widens_to_float32() -> None:
    """bfloat16 tensors, in either encoding, decode to the float32 values they hold."""
    values = tf.constant([1.0, -2.5, 3.140625], dtype=tf.bfloat16)
    content = tf.make_tensor_proto(values.numpy())
    bits = np.frombuffer(content.tensor_content, dtype="<u2").tolist()
    typed = _typed(tf_types_pb2.DT_BFLOAT16, (3,), half_val=bits)
    expected = np.array([1.0, -2.5, 3.140625], dtype=np.float32)
    _assert_same(tensor_proto_to_ndarray(_ours(content)), expected)
    _assert_same(tensor_proto_to_ndarray(_ours(typed)), expected)


def test_fewer_typed_values_than_the_shape_repeat_the_last() -> None:
    """A typed field shorter than the shape is padded with its last value, as tf.make_ndarray pads it."""
    official = tf.make_tensor_proto(3.0, shape=[2, 3])
    assert list(official.float_val) == [3.0]
    _assert_same(tensor_proto_to_ndarray(_ours(official)), np.full((2, 3), 3.0, dtype=np.float32))
    partial = _typed(tf_types_pb2.DT_INT64, (5,), int64_val=[1, 2])
    _assert_same(tensor_proto_to_ndarray(_ours(partial)), np.array([1, 2, 2, 2, 2], dtype=np.int64))
    _assert_same(tensor_proto_to_ndarray(_ours(partial)), tf.make_ndarray(partial))
    strings = _typed(tf_types_pb2.DT_STRING, (3,), string_val=[b"a", b"b"])
    assert tensor_proto_to_ndarray(_ours(strings)).tolist() == [b"a", b"b", b"b"]


def test_no_typed_values_mean_zeros() -> None:
    """A tensor with a non-empty shape and no values at all decodes to zeros (empty bytes for strings)."""
    _assert_same(tensor_proto_to_ndarray(_ours(_typed(tf_types_pb2.DT_FLOAT, (2, 2)))), np.zeros((2, 2), np.float32))
    _assert_same(tensor_proto_to_ndarray(_ours(_typed(tf_types_pb2.DT_BOOL, (3,)))), np.zeros(3, bool))
    assert tensor_proto_to_ndarray(_ours(_typed(tf_types_pb2.DT_STRING, (2,)))).tolist() == [b"", b""]


def test_empty_tensors_decode_to_empty_arrays() -> None:
    """A shape with a zero dimension decodes to an empty array of that shape."""
    decoded = tensor_proto_to_ndarray(_ours(_typed(tf_types_pb2.DT_FLOAT, (1, 0, 4))))
    assert decoded.shape == (1, 0, 4)
    assert decoded.dtype == np.float32


@pytest.mark.parametrize(
    ("official", "message"),
    [
        (_typed(tf_types_pb2.DT_FLOAT, (2,), float_val=[1, 2, 3]), "has 3 values in float_val"),
        (_typed(tf_types_pb2.DT_FLOAT, (0,), float_val=[1]), "has 1 values in float_val"),
        (
            _typed(tf_types_pb2.DT_FLOAT, (3,), tensor_content=b"\x00" * 8),
            "needs 12 bytes of tensor_content, got 8",
        ),
        (
            _typed(tf_types_pb2.DT_STRING, (1,), tensor_content=b"x"),
            "DT_STRING tensors cannot use tensor_content",
        ),
        (_typed(tf_types_pb2.DT_COMPLEX64, (1,), scomplex_val=[1, 2, 3]), "not (real, imaginary) pairs"),
        (_typed(tf_types_pb2.DT_FLOAT, (-1, 4)), "unknown dimensions"),
        (
            tf_tensor_pb2.TensorProto(dtype=tf_types_pb2.DT_FLOAT, tensor_shape={"unknown_rank": True}),
            "unknown rank",
        ),
        (_typed(tf_types_pb2.DT_RESOURCE, (1,)), "unsupported tensor dtype DT_RESOURCE"),
        (_typed(tf_types_pb2.DT_QINT8, (1,), int_val=[1]), "unsupported tensor dtype DT_QINT8"),
        (
            _typed(tf_types_pb2.DT_FLOAT8_E5M2, (1,), float8_val=b"\x01"),
            "unsupported tensor dtype DT_FLOAT8_E5M2",
        ),
        (_typed(tf_types_pb2.DT_INVALID, (1,)), "unsupported tensor dtype DT_INVALID"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_undecodable_tensors_raise_tensor_decode_error(official: tf_tensor_pb2.TensorProto, message: str) -> None:
    """Wrong value counts, content sizes, unknown shapes and unsupported dtypes raise TensorDecodeError."""
    with pytest.raises(TensorDecodeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        tensor_proto_to_ndarray(_ours(official))


def test_unknown_data_type_numbers_are_reported_by_number() -> None:
    """A DataType number the enum does not know raises TensorDecodeError naming the number."""
    proto = tensor_pb2.TensorProto.FromString(b"\x08\xe7\x07")  # dtype = 999, an open-enum value
    with pytest.raises(TensorDecodeError, match="unsupported tensor dtype 999"):
        tensor_proto_to_ndarray(proto)


def test_tensor_decode_error_is_a_value_error() -> None:
    """TensorDecodeError can be caught as ValueError."""
    assert issubclass(TensorDecodeError, ValueError)


@pytest.mark.parametrize(
    "array",
    [
        np.array(["2020-01-01"], dtype="datetime64[D]"),
        np.array([1, "x"], dtype=object),
        np.zeros(2, np.longdouble),
    ],
    ids=["datetime64", "mixed-object", "longdouble"],
)
def test_unencodable_arrays_raise_type_error(array: np.ndarray[Any, Any]) -> None:
    """Arrays with no TensorFlow dtype are refused with TypeError."""
    with pytest.raises(TypeError):
        ndarray_to_tensor_proto(array)


def test_dtype_tables_agree_with_tensorflow() -> None:
    """Every DataType mapping names the numpy dtype TensorFlow itself uses for it (bfloat16 aside)."""
    for data_type, dtype in DTYPE_TO_NUMPY.items():
        if data_type == types_pb2.DT_BFLOAT16:
            continue
        assert np.dtype(tf.as_dtype(data_type).as_numpy_dtype) == dtype
    for dtype, data_type in NUMPY_TO_DTYPE.items():
        assert DTYPE_TO_NUMPY[data_type] == dtype


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(
        dtype=st.sampled_from([np.dtype(d) for d in ROUND_TRIP_DTYPES]),
        shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
    )
)
def test_any_array_round_trips_bit_exactly(array: np.ndarray[Any, Any]) -> None:
    """Any array of a supported dtype and shape survives encode, the wire, and decode bit for bit."""
    wire = ndarray_to_tensor_proto(array).SerializeToString()
    _assert_same(tensor_proto_to_ndarray(tensor_pb2.TensorProto.FromString(wire)), array)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(width=32, allow_nan=False), min_size=1, max_size=12),
    st.integers(min_value=0, max_value=8),
)
def test_padding_rule_matches_tf_make_ndarray(values: list[float], extra: int) -> None:
    """A float_val of any length up to the shape's size decodes exactly as tf.make_ndarray decodes it."""
    official = _typed(tf_types_pb2.DT_FLOAT, (len(values) + extra,), float_val=values)
    _assert_same(tensor_proto_to_ndarray(_ours(official)), tf.make_ndarray(official))


def _protobuf_built(array: np.ndarray[Any, Any]) -> Any:
    """The oracle: the TensorProto of ``array`` built field by field with protobuf's own message API."""
    proto = tensor_pb2.TensorProto()
    for size in array.shape:
        proto.tensor_shape.dim.add(size=size)
    if array.dtype.kind in "SUO":
        proto.dtype = types_pb2.DT_STRING
        proto.string_val.extend(v if isinstance(v, bytes) else str(v).encode() for v in array.reshape(-1).tolist())
        return proto
    native = array.dtype.newbyteorder("=")
    proto.dtype = NUMPY_TO_DTYPE[native]
    proto.tensor_content = np.ascontiguousarray(array, dtype=native.newbyteorder("<")).tobytes()
    return proto


def _joined(array: Any) -> bytes:
    return b"".join(tensor_wire(array))


@settings(max_examples=150, deadline=None)
@given(
    hnp.arrays(
        dtype=st.sampled_from([np.dtype(d) for d in ROUND_TRIP_DTYPES] + [np.dtype(">i4"), np.dtype(">f8")]),
        shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
    )
)
def test_the_wire_is_what_protobuf_writes_for_any_array(array: np.ndarray[Any, Any]) -> None:
    """tensor_wire's bytes are protobuf's serialization of the same TensorProto, byte for byte (scalars, empty
    dims, big-endian arrays included), and TensorFlow reads them back as the array."""
    assert _joined(array) == _protobuf_built(array).SerializeToString()
    _assert_same(
        tf.make_ndarray(tf_tensor_pb2.TensorProto.FromString(_joined(array))),
        array.astype(array.dtype.newbyteorder("=")),
    )


@settings(max_examples=80, deadline=None)
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=6), st.booleans())
def test_the_wire_of_strings_is_what_protobuf_writes(values: list[bytes], scalar: bool) -> None:
    """Bytes arrays (image bytes, tf.Examples, a rank-0 one; empty strings and lengths past one varint byte
    included) serialize as protobuf serializes their string_val."""
    array = np.empty(len(values), dtype=object)
    array[:] = values
    if scalar:
        array = array[:1].reshape(())
    assert _joined(array) == _protobuf_built(array).SerializeToString()


def test_the_wire_of_text_is_its_utf8() -> None:
    """A str array goes as the UTF-8 of each element, as protobuf writes it."""
    text = np.array([["é", "b"]])
    assert _joined(text) == _protobuf_built(text).SerializeToString()
    assert "é".encode() in _joined(text)


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 2**14, 2**21 - 1, 2**32, 2**63 - 1])
def test_varints_are_protobufs(value: int) -> None:
    """The varint of any size (a dim's size is an int64) is the one protobuf writes; a negative one is refused."""
    written = tensor_shape_pb2.TensorShapeProto.Dim(size=value).SerializeToString()
    assert _varint(value) == (written[1:] if value else b"\x00")
    with pytest.raises(ValueError, match="negative"):
        _varint(-1)


def test_a_pictures_pixels_are_sent_from_their_own_memory() -> None:
    """The tensor_content piece of pixels numpy wraps from Pillow's bytes is a view of that memory (no copy before
    the request's join); a view of part of them, or in another order, is laid out in C order as protobuf would."""
    picture = Image.new("RGB", (6, 4), (10, 20, 30))
    pixels = np.asarray(picture, dtype=np.uint8)[np.newaxis]
    content = tensor_wire(pixels)[-1]
    assert isinstance(content, memoryview) and np.shares_memory(np.asarray(content), pixels)
    assert bytes(content) == picture.tobytes()
    for view in (pixels[:, 1:], pixels[:, :, ::-1], pixels.transpose(0, 2, 1, 3)):
        assert _joined(view) == _protobuf_built(view).SerializeToString()
        _assert_same(tensor_proto_to_ndarray(ndarray_to_tensor_proto(view)), view)


def test_a_tensor_filled_into_a_request_is_the_one_encoded_alone() -> None:
    """``into``: the request's own input holds what encoding alone gives (nothing copied in afterwards)."""
    array = (np.arange(60) % 251).astype(np.uint8).reshape(1, 4, 5, 3)
    request = predict_pb2.PredictRequest()
    ndarray_to_tensor_proto(array, into=request.inputs["inputs"])
    assert request.inputs["inputs"] == ndarray_to_tensor_proto(array)


def test_tensor_content_wins_over_typed_values_as_in_tensorflow() -> None:
    """A tensor carrying both decodes from tensor_content, as tf.make_ndarray does, even when float_val fills it."""
    proto = _typed(tf_types_pb2.DT_FLOAT, (2,), float_val=[1, 2], tensor_content=np.array([3, 4], "<f4").tobytes())
    official = tf_tensor_pb2.TensorProto.FromString(proto.SerializeToString())
    assert tensor_proto_to_ndarray(proto).tolist() == tf.make_ndarray(official).tolist() == [3.0, 4.0]
