"""What backends share: the value an image becomes for each input type, the call limit, label maps per answer."""

from __future__ import annotations

import io
import threading
import time
from typing import Any

import numpy as np
import pytest
from PIL import Image

from odapi.contract import InputType
from proxy.backends import CallLimit, LabelMaps, Prediction, model_input
from proxy.errors import BackendError, Overloaded
from proxy.images import ImageInput, ImageLimits
from proxy.labels import LabelMap
from proxy.settings import Settings


def image() -> ImageInput:
    """A small JPEG request image."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), (200, 10, 10)).save(buffer, format="JPEG")
    return ImageInput(buffer.getvalue(), ImageLimits.from_settings(Settings()))


def test_pixel_inputs_are_a_batch_of_one() -> None:
    """image_tensor takes uint8 [1, h, w, 3]; float_image_tensor the same values as float32."""
    prepared = image()
    uint8 = model_input(prepared, InputType.IMAGE_TENSOR, 4)
    floats = model_input(prepared, InputType.FLOAT_IMAGE_TENSOR, 4)
    assert (uint8.dtype, uint8.shape) == (np.uint8, (1, 6, 8, 3))
    assert floats.dtype == np.float32
    np.testing.assert_array_equal(floats, uint8.astype(np.float32))


def test_string_inputs_carry_the_bytes_or_an_example() -> None:
    """encoded_image_string_tensor takes the bytes, tf_example a tf.Example around them; rank 0 takes a scalar."""
    prepared = image()
    encoded = model_input(prepared, InputType.ENCODED_IMAGE_STRING_TENSOR, 1)
    assert encoded.shape == (1,) and encoded[0] == prepared.data
    example = model_input(prepared, InputType.TF_EXAMPLE, 1)
    assert prepared.data in example[0] and b"image/encoded" in example[0]
    assert model_input(prepared, InputType.TF_EXAMPLE, 0).shape == ()


def test_call_limit_waits_until_its_deadline_then_refuses() -> None:
    """Past MAX_BACKEND_CALLS a call waits for a slot; none freeing before the deadline is a 503."""
    limit = CallLimit(1)
    limit.acquire(time.monotonic() + 1)
    with pytest.raises(Overloaded, match="MAX_BACKEND_CALLS"):
        limit.acquire(time.monotonic() + 0.05)
    threading.Timer(0.05, limit.release).start()
    limit.acquire(time.monotonic() + 2)  # freed meanwhile
    limit.release()


def test_label_maps_parse_once_and_fall_back() -> None:
    """The same text gives the same parsed map; no text gives the fallback; a broken one is a 502."""
    maps = LabelMaps(LabelMap({1: "Fallback"}))
    text = 'item { id: 1 name: "person" }'
    assert maps.parse(text, "m") is maps.parse(text, "m")
    assert maps.parse(text, "m").name(1) == "Person"
    assert maps.parse(None, "m").name(1) == "Fallback" and maps.parse("", "m").name(1) == "Fallback"
    assert LabelMaps(None).parse(None, "m").name(1) == "Class 1"
    with pytest.raises(BackendError, match="label map is malformed"):
        maps.parse("item { id: nope }", "m")


def test_a_predict_call_that_cannot_start_gives_its_slot_back() -> None:
    """A Predict that raises as it starts (the channel is closed) frees its MAX_BACKEND_CALLS slot at once."""
    from odapi.contract import ANSWER_OUTPUTS
    from proxy.backends.serving import ModelSpec, ServingBackend, ServingConnection, _Signature

    calls = CallLimit(1)
    connection = ServingConnection("127.0.0.1:1")  # lazily connected: no socket is opened here
    connection.close()
    backend = ServingBackend(ModelSpec("m"), connection, calls=calls, labels=LabelMaps(None), request_timeout_s=1)
    signature = _Signature(1, "inputs", InputType.IMAGE_TENSOR, 4, ANSWER_OUTPUTS, None)
    with pytest.raises(ValueError, match="closed"):
        backend._send(signature, image(), time.monotonic() + 1, calls.request())
    calls.acquire(time.monotonic())  # Overloaded at once if the slot had leaked
    calls.release()


@pytest.mark.parametrize(
    "spec",
    [{}, {"version": 3}, {"version_label": "stable"}, {"signature_name": "detect"}],
    ids=["latest", "version", "label", "signature"],
)
@pytest.mark.parametrize(
    ("input_type", "rank"),
    [
        (InputType.IMAGE_TENSOR, 4),
        (InputType.FLOAT_IMAGE_TENSOR, 4),
        (InputType.ENCODED_IMAGE_STRING_TENSOR, 1),
        (InputType.TF_EXAMPLE, 1),
        (InputType.TF_EXAMPLE, 0),
    ],
)
def test_the_serialized_request_is_the_message_protobuf_writes(
    spec: dict[str, Any], input_type: InputType, rank: int
) -> None:
    """The PredictRequest the backend writes is, byte for byte, protobuf's serialization of the message built with
    its API: the model spec (version or label), the one input, the output filter."""
    from odapi.contract import ANSWER_OUTPUTS
    from proxy._proto.google.protobuf import wrappers_pb2
    from proxy._proto.tensorflow_serving.apis import model_pb2, predict_pb2
    from proxy.backends.serving import ModelSpec, ServingBackend, ServingConnection, _Signature
    from proxy.tensors import ndarray_to_tensor_proto

    connection = ServingConnection("127.0.0.1:1")  # lazily connected: no socket is opened here
    connection.close()
    model = ModelSpec("detector", **spec)
    backend = ServingBackend(model, connection, calls=CallLimit(1), labels=LabelMaps(None), request_timeout_s=1)
    signature = _Signature(2, "input_tensor", input_type, rank, ANSWER_OUTPUTS, None)
    prepared = image()
    expected = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(name="detector", signature_name=model.signature_name),
        output_filter=ANSWER_OUTPUTS,
    )
    if model.version is not None:
        expected.model_spec.version.CopyFrom(wrappers_pb2.Int64Value(value=model.version))
    if model.version_label:
        expected.model_spec.version_label = model.version_label
    expected.inputs["input_tensor"].CopyFrom(ndarray_to_tensor_proto(model_input(prepared, input_type, rank)))
    written = backend._request(signature, prepared, input_type)
    assert predict_pb2.PredictRequest.FromString(written) == expected
    assert written == expected.SerializeToString()


def test_predict_is_called_as_the_generated_stub_calls_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The serialized-request call goes to the very method the official stub's Predict calls, its answer read by
    the same deserializer; only the request's serializer is gone (the bytes are sent as they are)."""
    import grpc

    from proxy._proto.tensorflow_serving.apis import prediction_service_pb2_grpc
    from proxy.backends.serving import PREDICT_METHOD, ServingConnection

    class Recording:
        """A channel that keeps what each multicallable is made with."""

        def __init__(self) -> None:
            self.calls: list[tuple[str, dict[str, Any]]] = []

        def unary_unary(self, method: str, **options: Any) -> tuple[str, dict[str, Any]]:
            self.calls.append((method, options))
            return method, options

    channel = Recording()
    monkeypatch.setattr(grpc, "insecure_channel", lambda target, options=None: channel)
    connection = ServingConnection("127.0.0.1:1")
    stub_method, stub_options = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict
    method, options = connection.predict_serialized  # type: ignore[misc]
    assert method == stub_method == PREDICT_METHOD == "/tensorflow.serving.PredictionService/Predict"
    assert options["request_serializer"] is None and stub_options["request_serializer"] is not None
    assert options["response_deserializer"] == stub_options["response_deserializer"]
    assert options["_registered_method"] == stub_options["_registered_method"]


def test_errors_keep_headers_of_their_own() -> None:
    """Each error has its own headers: setting one error's never shows on another."""
    first, second = BackendError("a"), BackendError("b")
    first.headers["X-Test"] = "1"
    assert second.headers == {} and Overloaded("c").headers == {"Retry-After": "1"}


def test_a_request_has_at_most_its_share_of_the_calls() -> None:
    """One request's calls take at most per_request slots; another request still finds one of the process's."""
    limit = CallLimit(4, per_request=2)
    first, second = limit.request(), limit.request()
    first.acquire(time.monotonic() + 1)
    first.acquire(time.monotonic() + 1)
    with pytest.raises(Overloaded, match="this request's model calls"):
        first.acquire(time.monotonic() + 0.05)
    second.acquire(time.monotonic())  # at once: the first request left the process's other slots free
    threading.Timer(0.05, first.release).start()
    first.acquire(time.monotonic() + 2)  # its own call finished: its next one goes
    for calls in (first, first, second):
        calls.release()


def test_a_request_whose_calls_fit_its_share_takes_only_the_processs_slots() -> None:
    """A request of one call (or as many as its share) waits only for the process's slots, and still holds one;
    one of more calls than its share is held to its share as before."""
    limit = CallLimit(2, per_request=1)
    first, second, third = limit.request(1), limit.request(1), limit.request(1)
    first.acquire(time.monotonic() + 1)
    second.acquire(time.monotonic() + 1)
    with pytest.raises(Overloaded, match="MAX_BACKEND_CALLS"):
        third.acquire(time.monotonic() + 0.05)
    first.release()
    second.release()
    tiled = limit.request(2)
    tiled.acquire(time.monotonic() + 1)
    with pytest.raises(Overloaded, match="this request's model calls"):
        tiled.acquire(time.monotonic() + 0.05)  # a process slot is free, its own share is not
    tiled.release()


class _MetadataOnly:
    """A connection whose Predict answers the converter's metadata signature of each version, and records asks."""

    def __init__(self, label_maps: dict[int, str]) -> None:
        self.label_maps = label_maps
        self.asked: list[int] = []

    def predict_serialized(self, serialized: bytes, timeout: float) -> Any:
        from odapi.contract import METADATA_LABEL_MAP, METADATA_SIGNATURE
        from proxy._proto.tensorflow_serving.apis import predict_pb2
        from proxy.tensors import ndarray_to_tensor_proto

        request = predict_pb2.PredictRequest.FromString(serialized)  # as the server reads what gRPC sends
        assert request.model_spec.signature_name == METADATA_SIGNATURE
        version = request.model_spec.version.value
        self.asked.append(version)
        response = predict_pb2.PredictResponse()
        text = self.label_maps[version].encode()
        response.outputs[METADATA_LABEL_MAP].CopyFrom(ndarray_to_tensor_proto(np.array([text], dtype=object)))
        return response


def _answer(version: int, class_id: int) -> Any:
    """A Predict answer of ``version``: one detection of ``class_id``, without the label map output."""
    from proxy._proto.tensorflow_serving.apis import predict_pb2
    from proxy.tensors import ndarray_to_tensor_proto

    response = predict_pb2.PredictResponse()
    response.model_spec.version.value = version
    outputs = {
        "detection_boxes": np.array([[[0.1, 0.1, 0.5, 0.5]]], dtype=np.float32),
        "detection_scores": np.array([[0.9]], dtype=np.float32),
        "detection_classes": np.array([[class_id]], dtype=np.float32),
        "num_detections": np.array([1], dtype=np.float32),
    }
    for name, value in outputs.items():
        response.outputs[name].CopyFrom(ndarray_to_tensor_proto(value))
    return response


def test_an_answer_of_a_version_not_yet_learned_takes_that_versions_label_map() -> None:
    """The label map comes with the signature (not with every answer); an answer from another version than the one
    learned is named by that version's own map, asked of it, and the signature is learned again next time."""
    from odapi.contract import ANSWER_OUTPUTS
    from proxy.backends.serving import ModelSpec, ServingBackend, _Finished, _Signature

    connection = _MetadataOnly({2: 'item { id: 1 name: "v2 name" }'})
    backend = ServingBackend(
        ModelSpec("m"), connection, calls=CallLimit(1), labels=LabelMaps(None), request_timeout_s=1
    )
    learned = _Signature(1, "inputs", InputType.IMAGE_TENSOR, 4, ANSWER_OUTPUTS, 'item { id: 1 name: "v1 name" }')
    backend._signature = learned

    same = backend._receive(learned, _Finished(_answer(1, 1), None), [0.0, 0.0])
    assert isinstance(same, Prediction) and same.labels.name(1) == "V1 Name" and connection.asked == []
    backend._signature = learned
    other = backend._receive(learned, _Finished(_answer(2, 1), None), [0.0, 0.0])
    assert isinstance(other, Prediction) and other.version == 2
    assert other.labels.name(1) == "V2 Name" and connection.asked == [2]
    assert backend._signature is None  # learned again on the next request


def test_every_request_the_default_settings_send_fits_the_retry_buffer() -> None:
    """The channel's per-call retry buffer holds the largest Predict request the default settings send (a float
    tensor of a MAX_IMAGE_SIDE picture, or an encoded image of MAX_BODY_BYTES), so any of them is retried on another
    replica when the first one is UNAVAILABLE."""
    from proxy.backends.serving import RETRY_BUFFER_BYTES, channel_options

    settings = Settings()
    largest = max(settings.max_image_side**2 * 3 * 4, settings.max_body_bytes) + 2**20  # and the request's fields
    assert dict(channel_options())["grpc.per_rpc_retry_buffer_size"] == RETRY_BUFFER_BYTES >= largest
