"""The proxy's own TF Serving protos (proxy._proto) against the official tensorflow_serving ones: bytes and
descriptors. tests/integration/test_proto_wire.py puts them on a live gRPC channel."""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from google.protobuf import descriptor, descriptor_pb2, descriptor_pool, message
from tensorflow.core.framework import tensor_pb2 as tf_tensor_pb2
from tensorflow.core.framework import types_pb2 as tf_types_pb2
from tensorflow_serving.apis import get_model_metadata_pb2 as tf_get_model_metadata_pb2
from tensorflow_serving.apis import get_model_status_pb2 as tf_get_model_status_pb2
from tensorflow_serving.apis import model_pb2 as tf_model_pb2
from tensorflow_serving.apis import predict_pb2 as tf_predict_pb2

from proxy._proto import _pool
from proxy._proto.tensorflow.core.framework import tensor_pb2, types_pb2
from proxy._proto.tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    model_service_pb2,
    predict_pb2,
    prediction_service_pb2,
)

REPO = Path(__file__).resolve().parents[2]
OUR_PROTOS = sorted(
    p.relative_to(REPO / "proxy" / "_proto" / "protos").as_posix()
    for p in (REPO / "proxy" / "_proto" / "protos").rglob("*.proto")
)


@dataclass(frozen=True)
class Api:
    """One set of generated modules: the project's or the official ones."""

    model: ModuleType
    predict: ModuleType
    metadata: ModuleType
    status: ModuleType
    types: ModuleType


OURS = Api(
    model_pb2,
    predict_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    types_pb2,
)
OFFICIAL = Api(
    tf_model_pb2,
    tf_predict_pb2,
    tf_get_model_metadata_pb2,
    tf_get_model_status_pb2,
    tf_types_pb2,
)


def _official_file(module: str, proto_path: str) -> descriptor.FileDescriptor:
    """Return an official file descriptor from the default pool, importing its module first."""
    # tensorflow-serving-api 2.20 ships its service modules from an old protoc: under protobuf 7 they raise
    # AttributeError on `DESCRIPTOR.has_options = True`, after the descriptor itself is registered.
    with contextlib.suppress(AttributeError):
        importlib.import_module(module)
    return descriptor_pool.Default().FindFileByName(proto_path)


# ---------------------------------------------------------------------------------------------------------
# Messages built the same way with either set of classes.


def predict_request_content(api: Api) -> message.Message:
    """A PredictRequest whose image travels in tensor_content, as the proxy sends it."""
    request = api.predict.PredictRequest(output_filter=["detection_boxes", "num_detections"])
    request.model_spec.name = "detector"
    request.model_spec.signature_name = "serving_default"
    request.model_spec.version.value = 7
    image = request.inputs["inputs"]
    image.dtype = api.types.DT_UINT8
    for size in (1, 2, 2, 3):
        image.tensor_shape.dim.add(size=size)
    image.tensor_content = np.arange(12, dtype=np.uint8).tobytes()
    return request


def predict_request_typed(api: Api) -> message.Message:
    """A PredictRequest that sets every TensorProto field, each in its own input."""
    request = api.predict.PredictRequest()
    request.model_spec.name = "detector"
    request.model_spec.version_label = "stable"
    inputs = request.inputs
    inputs["float"].float_val.extend([0.5, -1.25])
    inputs["double"].double_val.extend([1e300])
    inputs["int"].int_val.extend([-3, 255])
    inputs["int64"].int64_val.extend([-(2**40)])
    inputs["uint32"].uint32_val.extend([2**32 - 1])
    inputs["uint64"].uint64_val.extend([2**64 - 1])
    inputs["bool"].bool_val.extend([True, False])
    inputs["half"].half_val.extend([0x3C00, 0xC000])
    inputs["string"].string_val.extend([b"\xff\xd8jpeg", b""])
    inputs["scomplex"].scomplex_val.extend([1.0, -2.0])
    inputs["dcomplex"].dcomplex_val.extend([3.0, 4.0])
    inputs["float8"].float8_val = b"\x01\x02"
    handle = inputs["resource"].resource_handle_val.add(device="/cpu:0", name="v", hash_code=9)
    handle.dtypes_and_shapes.add(dtype=api.types.DT_FLOAT).shape.dim.add(size=-1, name="batch")
    variant = inputs["variant"].variant_val.add(type_name="list", metadata=b"\x00")
    variant.tensors.add(dtype=api.types.DT_INT32, version_number=1).int_val.append(4)
    unknown = inputs["unknown_rank"]
    unknown.dtype = api.types.DT_BFLOAT16
    unknown.tensor_shape.unknown_rank = True
    return request


def predict_response(api: Api) -> message.Message:
    """A PredictResponse as TF Serving answers for a detection model: typed fields, model_spec filled in."""
    response = api.predict.PredictResponse()
    response.model_spec.name = "detector"
    response.model_spec.version.value = 7
    response.model_spec.signature_name = "serving_default"
    for key, shape, values in (
        ("detection_boxes", (1, 2, 4), [0.1, 0.2, 0.5, 0.6, 0.0, 0.0, 1.0, 1.0]),
        ("detection_scores", (1, 2), [0.9, 0.3]),
        ("detection_classes", (1, 2), [1.0, 3.0]),
        ("num_detections", (1,), [2.0]),
    ):
        tensor = response.outputs[key]
        tensor.dtype = api.types.DT_FLOAT
        for size in shape:
            tensor.tensor_shape.dim.add(size=size)
        tensor.float_val.extend(values)
    return response


def model_spec_version(api: Api) -> message.Message:
    """A ModelSpec pinned to a version number."""
    return api.model.ModelSpec(name="detector", version={"value": 12}, signature_name="serving_default")


def model_spec_label(api: Api) -> message.Message:
    """A ModelSpec pinned to a version label."""
    return api.model.ModelSpec(name="detector", version_label="canary")


def metadata_request(api: Api) -> message.Message:
    """The GetModelMetadata request the proxy sends at startup."""
    return api.metadata.GetModelMetadataRequest(model_spec={"name": "detector"}, metadata_field=["signature_def"])


def _signature_def_map(api: Api) -> message.Message:
    """A TF1 Object Detection export's signatures, plus a sparse input and a default to cover every field."""
    signatures = api.metadata.SignatureDefMap()
    serving = signatures.signature_def["serving_default"]
    serving.method_name = "tensorflow/serving/predict"
    image = serving.inputs["inputs"]
    image.name = "image_tensor:0"
    image.dtype = api.types.DT_UINT8
    for size in (-1, -1, -1, 3):
        image.tensor_shape.dim.add(size=size)
    for key in ("detection_boxes", "detection_scores", "detection_classes", "num_detections"):
        output = serving.outputs[key]
        output.name = f"{key}:0"
        output.dtype = api.types.DT_FLOAT
        output.tensor_shape.unknown_rank = True
    sparse = signatures.signature_def["sparse"]
    sparse.inputs["ids"].coo_sparse.values_tensor_name = "ids/values:0"
    sparse.inputs["ids"].coo_sparse.indices_tensor_name = "ids/indices:0"
    sparse.inputs["ids"].coo_sparse.dense_shape_tensor_name = "ids/shape:0"
    sparse.defaults["threshold"].dtype = api.types.DT_FLOAT
    sparse.defaults["threshold"].float_val.append(0.5)
    return signatures


def metadata_response(api: Api) -> message.Message:
    """A GetModelMetadata answer: model_spec and metadata["signature_def"], a packed SignatureDefMap."""
    response = api.metadata.GetModelMetadataResponse(model_spec={"name": "detector", "version": {"value": 7}})
    response.metadata["signature_def"].Pack(_signature_def_map(api), deterministic=True)
    return response


def status_request(api: Api) -> message.Message:
    """A GetModelStatus request, as a readiness probe sends it."""
    return api.status.GetModelStatusRequest(model_spec={"name": "detector", "version": {"value": 7}})


def status_response(api: Api) -> message.Message:
    """A GetModelStatus answer with one available version and one that failed to load."""
    response = api.status.GetModelStatusResponse()
    response.model_version_status.add(version=7, state=api.status.ModelVersionStatus.AVAILABLE).status.SetInParent()
    failed = response.model_version_status.add(version=6, state=api.status.ModelVersionStatus.END)
    failed.status.error_code = 9  # FAILED_PRECONDITION
    failed.status.error_message = "Could not find SavedModel .pb or .pbtxt"
    return response


BUILDERS: list[Callable[[Api], message.Message]] = [
    predict_request_content,
    predict_request_typed,
    predict_response,
    model_spec_version,
    model_spec_label,
    metadata_request,
    metadata_response,
    status_request,
    status_response,
]


@pytest.mark.parametrize("build", BUILDERS, ids=lambda b: b.__name__)
def test_project_bytes_parse_as_the_official_message(build: Callable[[Api], message.Message]) -> None:
    """A message serialized by the project's classes parses with the official ones into the same message."""
    ours, official = build(OURS), build(OFFICIAL)
    parsed = type(official).FromString(ours.SerializeToString())
    assert parsed == official
    assert ours.SerializeToString(deterministic=True) == official.SerializeToString(deterministic=True)


@pytest.mark.parametrize("build", BUILDERS, ids=lambda b: b.__name__)
def test_official_bytes_round_trip_through_project_classes(build: Callable[[Api], message.Message]) -> None:
    """Official bytes parse with the project's classes into the project-built message, byte for byte."""
    ours, official = build(OURS), build(OFFICIAL)
    wire = official.SerializeToString(deterministic=True)
    parsed = type(ours).FromString(wire)
    assert parsed == ours
    assert parsed.SerializeToString(deterministic=True) == wire


def test_model_spec_version_choice_survives_the_wire() -> None:
    """The version oneof arrives as the same member, version or version_label, in both directions."""
    for build, member in ((model_spec_version, "version"), (model_spec_label, "version_label")):
        ours = model_pb2.ModelSpec.FromString(build(OFFICIAL).SerializeToString())
        official = tf_model_pb2.ModelSpec.FromString(build(OURS).SerializeToString())
        assert ours.WhichOneof("version_choice") == official.WhichOneof("version_choice") == member


def test_signature_def_map_unpacks_from_an_official_metadata_response() -> None:
    """The Any in an official GetModelMetadataResponse unpacks into the project's SignatureDefMap."""
    response = get_model_metadata_pb2.GetModelMetadataResponse.FromString(
        metadata_response(OFFICIAL).SerializeToString()
    )
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signatures)
    serving = signatures.signature_def["serving_default"]
    assert serving.inputs["inputs"].name == "image_tensor:0"
    assert [d.size for d in serving.inputs["inputs"].tensor_shape.dim] == [-1, -1, -1, 3]
    assert serving.inputs["inputs"].dtype == types_pb2.DT_UINT8
    assert sorted(serving.outputs) == [
        "detection_boxes",
        "detection_classes",
        "detection_scores",
        "num_detections",
    ]
    assert response.model_spec.version.value == 7


def test_fields_the_project_leaves_out_pass_through_unchanged() -> None:
    """Official fields the project leaves out (PredictRequest.client_id, ...) survive a parse/serialize."""
    official = tf_predict_pb2.PredictRequest(client_id=b"abc", request_options={"max_cache_length": 5})
    official.model_spec.name = "detector"
    official.predict_streamed_options.return_single_response = True
    relayed = predict_pb2.PredictRequest.FromString(official.SerializeToString()).SerializeToString()
    assert tf_predict_pb2.PredictRequest.FromString(relayed) == official


# ---------------------------------------------------------------------------------------------------------
# Descriptors: the real contract.


def _field_contract(field: descriptor.FieldDescriptor) -> descriptor_pb2.FieldDescriptorProto:
    """Return a field's declaration (name, number, label, type, type name, options, JSON name) as a proto."""
    parent = descriptor_pb2.DescriptorProto()
    field.containing_type.CopyToProto(parent)
    proto = next(f for f in parent.field if f.number == field.number)
    # Some generators record the default JSON name explicitly and some do not; compare the effective one.
    proto.json_name = field.json_name
    return proto


def _reserved(msg: descriptor.Descriptor) -> set[int]:
    """Return the field numbers a message reserves."""
    proto = descriptor_pb2.DescriptorProto()
    msg.CopyToProto(proto)
    return {n for r in proto.reserved_range for n in range(r.start, r.end)}


def _compare_field(
    field: descriptor.FieldDescriptor, twin: descriptor.FieldDescriptor, seen: set[str]
) -> Iterator[str]:
    """Yield every way a project field departs from its official twin, recursing into its type."""
    mine, theirs = _field_contract(field), _field_contract(twin)
    if mine != theirs:
        yield f"{field.full_name}: declared {mine} but officially {theirs}"
    mine_oneof = field.containing_oneof.name if field.containing_oneof else None
    theirs_oneof = twin.containing_oneof.name if twin.containing_oneof else None
    if mine_oneof != theirs_oneof:
        yield f"{field.full_name}: in oneof {mine_oneof} but officially in {theirs_oneof}"
    if field.message_type is not None and twin.message_type is not None:
        yield from _compare_message(field.message_type, twin.message_type, seen)
    if field.enum_type is not None and twin.enum_type is not None:
        yield from _compare_enum(field.enum_type, twin.enum_type)


def _compare_message(ours: descriptor.Descriptor, official: descriptor.Descriptor, seen: set[str]) -> Iterator[str]:
    """Yield every way a project message's declaration departs from the official one, recursing into types."""
    if ours.full_name in seen:
        return
    seen.add(ours.full_name)
    if ours.full_name != official.full_name:
        yield f"{ours.full_name}: official type is {official.full_name}"
    for field in ours.fields:
        twin = official.fields_by_name.get(field.name)
        if twin is None:
            yield f"{field.full_name}: not an official field"
        else:
            yield from _compare_field(field, twin, seen)
    dropped = {f.number for f in official.fields} - {f.number for f in ours.fields} - _reserved(ours)
    if dropped:
        yield f"{ours.full_name}: official field numbers {sorted(dropped)} are neither kept nor reserved"
    for nested in ours.nested_types:
        twin_nested = official.nested_types_by_name.get(nested.name)
        if twin_nested is None:
            yield f"{nested.full_name}: not an official message"
        else:
            yield from _compare_message(nested, twin_nested, seen)
    for enum in ours.enum_types:
        yield from _compare_enum(enum, official.enum_types_by_name[enum.name])


def _compare_enum(ours: descriptor.EnumDescriptor, official: descriptor.EnumDescriptor) -> Iterator[str]:
    """Yield how a project enum departs from the official one, which it must copy value for value."""
    mine = {v.name: v.number for v in ours.values}
    theirs = {v.name: v.number for v in official.values}
    if ours.full_name != official.full_name:
        yield f"{ours.full_name}: official enum is {official.full_name}"
    if mine != theirs:
        yield f"{ours.full_name}: values {sorted(set(mine.items()) ^ set(theirs.items()))} differ"


def test_every_declared_message_matches_the_official_descriptor() -> None:
    """Every field the project declares has the official number, type, label, type name and options."""
    official_pool = descriptor_pool.Default()
    _official_file("tensorflow_serving.apis.prediction_service_pb2", "tensorflow_serving/apis/prediction_service.proto")
    _official_file("tensorflow_serving.apis.model_service_pb2", "tensorflow_serving/apis/model_service.proto")
    problems: list[str] = []
    seen: set[str] = set()
    checked = 0
    for path in OUR_PROTOS:
        ours = _pool.POOL.FindFileByName(path)
        assert ours.package == official_pool.FindFileByName(path).package, path
        for msg in ours.message_types_by_name.values():
            problems += _compare_message(msg, official_pool.FindMessageTypeByName(msg.full_name), seen)
            checked += 1
        for enum in ours.enum_types_by_name.values():
            problems += _compare_enum(enum, official_pool.FindEnumTypeByName(enum.full_name))
            checked += 1
    assert problems == []
    assert checked >= 17


def test_data_type_and_error_code_enums_are_complete() -> None:
    """DataType and tensorflow.error.Code carry every official name with its official number."""
    official = descriptor_pool.Default()
    for ours in (types_pb2.DataType.DESCRIPTOR, _pool.POOL.FindEnumTypeByName("tensorflow.error.Code")):
        theirs = official.FindEnumTypeByName(ours.full_name)
        assert {v.name: v.number for v in ours.values} == {v.name: v.number for v in theirs.values}


@pytest.mark.parametrize(
    ("ours", "module", "path"),
    [
        (
            prediction_service_pb2.DESCRIPTOR,
            "tensorflow_serving.apis.prediction_service_pb2",
            "tensorflow_serving/apis/prediction_service.proto",
        ),
        (
            model_service_pb2.DESCRIPTOR,
            "tensorflow_serving.apis.model_service_pb2",
            "tensorflow_serving/apis/model_service.proto",
        ),
    ],
    ids=["PredictionService", "ModelService"],
)
def test_grpc_methods_match_the_official_services(ours: descriptor.FileDescriptor, module: str, path: str) -> None:
    """Each project gRPC method has the official full name, request and response types and streaming flags."""
    official = _official_file(module, path)
    for service in ours.services_by_name.values():
        twin = official.services_by_name[service.name]
        assert service.full_name == twin.full_name
        for method in service.methods:
            other = twin.methods_by_name[method.name]
            assert (method.full_name, method.input_type.full_name, method.output_type.full_name) == (
                other.full_name,
                other.input_type.full_name,
                other.output_type.full_name,
            )
            assert (method.client_streaming, method.server_streaming) == (False, False)
            assert (other.client_streaming, other.server_streaming) == (False, False)
    assert sorted(m.full_name for s in ours.services_by_name.values() for m in s.methods) in (
        [
            "tensorflow.serving.PredictionService.GetModelMetadata",
            "tensorflow.serving.PredictionService.Predict",
        ],
        ["tensorflow.serving.ModelService.GetModelStatus"],
    )


# ---------------------------------------------------------------------------------------------------------
# Isolation.


def test_project_modules_live_in_a_private_pool() -> None:
    """The project's descriptors live in proxy._proto._pool.POOL, apart from the default pool."""
    assert predict_pb2.PredictRequest.DESCRIPTOR.file.pool is _pool.POOL
    assert predict_pb2.PredictRequest.DESCRIPTOR is not tf_predict_pb2.PredictRequest.DESCRIPTOR
    assert tensor_pb2.TensorProto.DESCRIPTOR.file.pool is _pool.POOL
    official = descriptor_pool.Default().FindMessageTypeByName("tensorflow.TensorProto")
    assert official is tf_tensor_pb2.TensorProto.DESCRIPTOR
    assert predict_pb2.PredictRequest.__module__ == "proxy._proto.tensorflow_serving.apis.predict_pb2"
