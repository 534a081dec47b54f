"""The TensorFlow Serving backend: ``PredictionService/Predict`` over gRPC, without importing TensorFlow.

One channel per process (``ServingConnection``), shared by every model's backend and closed by its owner. Its
service config asks for client-side ``round_robin`` over every address the target resolves to (compose
``--scale``, a Kubernetes headless Service) and retries calls that fail with UNAVAILABLE.

What a model takes is learned from ``GetModelMetadata`` and cached per version: the input key, its dtype (so
converted TF1 graphs, ``inputs``, and TF2 exports, ``input_tensor`` with a batch of one, need no configuration), and
for string inputs whether they are encoded images or tf.Example protos: the converter's metadata signature says
so; for a model converted elsewhere the first image is sent both ways, once. A version's label map is the one its
metadata signature carries (learned with the signature, once); an answer from a version other than the one learned
takes the label map of the version that answered, asked of it then. A model whose metadata has no label map but
whose answers carry one (``odapi.contract.LABEL_MAP_OUTPUT``) has it read from every answer.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import grpc
import numpy as np

from odapi.contract import (
    ANSWER_OUTPUTS,
    LABEL_MAP_OUTPUT,
    METADATA_INPUT_TYPE,
    METADATA_LABEL_MAP,
    METADATA_REQUEST,
    METADATA_SIGNATURE,
    REQUIRED_OUTPUTS,
    InputType,
    dtype_name,
    pixel_input_type,
)
from proxy._proto.google.protobuf import wrappers_pb2
from proxy._proto.tensorflow.core.framework import types_pb2
from proxy._proto.tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2,
    prediction_service_pb2_grpc,
)
from proxy.backends import CallLimit, LabelMaps, ModelStatus, Prediction, RequestCalls, VersionState, model_input
from proxy.detections import Detections
from proxy.errors import BackendError, InvalidImage, ProxyError
from proxy.images import ModelImage
from proxy.labels import LabelMap
from proxy.status_codes import DEADLINE_EXCEEDED, UNAVAILABLE, error_for_code
from proxy.tensors import (
    TensorDecodeError,
    length_delimited,
    ndarray_to_tensor_proto,
    tensor_proto_to_ndarray,
    tensor_wire,
)

log = logging.getLogger(__name__)

STATUS_TIMEOUT_S = 2.0
# The details gRPC gives a call whose own deadline passed; TF Serving's DEADLINE_EXCEEDED carries its own words.
_LOCAL_DEADLINE = "Deadline Exceeded"
RETRY_BUFFER_BYTES = 64 * 2**20  # the largest request a call is retried with (see channel_options)
AVAILABLE = 30  # ModelVersionStatus.State.AVAILABLE
_REFRESH_ON = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND)
_PREDICT = prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"].methods_by_name["Predict"]
#: The gRPC method Predict is called as: "/tensorflow.serving.PredictionService/Predict".
PREDICT_METHOD = f"/{_PREDICT.containing_service.full_name}/{_PREDICT.name}"
# PredictRequest's inputs field, and a map entry's key and value fields (predict.proto; protobuf's map encoding).
_INPUTS_FIELD = predict_pb2.PredictRequest.DESCRIPTOR.fields_by_name["inputs"]
_REQUEST_INPUTS = _INPUTS_FIELD.number
_ENTRY_KEY, _ENTRY_VALUE = (_INPUTS_FIELD.message_type.fields_by_name[name].number for name in ("key", "value"))


def channel_options() -> list[tuple[str, Any]]:
    """gRPC channel arguments: unlimited message sizes, round_robin, retries of UNAVAILABLE, fast reconnects."""
    service_config = {
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [
            {
                "name": [
                    {"service": "tensorflow.serving.PredictionService"},
                    {"service": "tensorflow.serving.ModelService"},
                ],
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "0.5s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ],
    }
    return [
        # The 4 MB default is the client's, not TF Serving's: a 4000x3000 RGB image is 36 MB as a tensor.
        ("grpc.max_send_message_length", -1),
        ("grpc.max_receive_message_length", -1),
        ("grpc.service_config", json.dumps(service_config)),
        ("grpc.enable_retries", 1),
        # A call is retried only while its request fits the per-call retry buffer (256 KiB by default): a 640x480
        # picture's tensor is 900 KB, and such calls failed with the replica that died under them. This holds what
        # the default settings send (a float tensor of MAX_IMAGE_SIDE 1024 is 12 MB; an encoded image at most
        # MAX_BODY_BYTES, 20 MiB); the buffer keeps a reference to the request gRPC already holds, not a copy.
        ("grpc.per_rpc_retry_buffer_size", RETRY_BUFFER_BYTES),
        # The default backoff grows to 120 s; after TF Serving restarts, the proxy should be back within seconds.
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1000),
        ("grpc.primary_user_agent", "classifyobjects-proxy"),
    ]


class ServingConnection:
    """The process's one channel to TF Serving and its stubs, shared by every model's backend."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.channel = grpc.insecure_channel(target, options=channel_options())
        prediction = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        # Predict takes its request serialized already (``ServingBackend._request`` writes it): gRPC sends the bytes.
        self.predict_serialized = self.channel.unary_unary(
            PREDICT_METHOD,
            request_serializer=None,
            response_deserializer=predict_pb2.PredictResponse.FromString,
            _registered_method=True,  # as the generated stub registers its methods
        )
        self.get_metadata = prediction.GetModelMetadata
        self.get_status = model_service_pb2_grpc.ModelServiceStub(self.channel).GetModelStatus

    def close(self) -> None:
        """Close the channel; calls still in flight end with CANCELLED."""
        self.channel.close()


@dataclass(frozen=True)
class _Signature:
    """What Predict needs to know about one version of the model, learned from GetModelMetadata."""

    version: int
    input_key: str
    input_type: InputType | None  # None: a string input not yet told apart (a model converted elsewhere)
    rank: int | None
    outputs: tuple[str, ...]
    labels_text: str | None

    @cached_property
    def output_filter_wire(self) -> bytes:
        """The serialized output_filter field of this signature's PredictRequests."""
        return bytes(predict_pb2.PredictRequest(output_filter=self.outputs).SerializeToString())


@dataclass(frozen=True)
class ModelSpec:
    """Which model, and which version of it, calls name (MODEL_VERSION / MODEL_VERSION_LABEL pin one)."""

    name: str
    signature_name: str = "serving_default"
    version: int | None = None
    version_label: str | None = None
    input_type: InputType | None = None  # INPUT_TYPE: overrides what the model says it takes


class ServingBackend:
    """Calls one model in TF Serving; gRPC status codes map to HTTP as TF Serving's REST server maps them."""

    def __init__(
        self,
        spec: ModelSpec,
        connection: ServingConnection,
        *,
        calls: CallLimit,
        labels: LabelMaps,
        request_timeout_s: float,
    ) -> None:
        self._spec = spec
        self._connection = connection
        self._calls = calls
        self._labels = labels
        self._timeout_s = request_timeout_s
        self._model_spec_wire = bytes(predict_pb2.PredictRequest(model_spec=self._model_spec()).SerializeToString())
        self._signature: _Signature | None = None
        self._signature_lock = threading.Lock()
        self._closed = threading.Event()

    # -- the Backend interface ---------------------------------------------------------------------------------

    def predict(self, images: Sequence[ModelImage], deadline: float) -> list[Prediction | ProxyError]:
        """Send every image to Predict (TF Serving may batch them), as many at once as the request's share of calls
        allows, then read the answers in order."""
        signature = self._signature_for(deadline)
        slots = self._calls.request(len(images))
        results: list[Prediction | ProxyError | None] = [None] * len(images)
        pending = list(range(len(images)))
        if signature.input_type is None and pending:
            first = pending.pop(0)
            signature, results[first] = self._tell_strings_apart(signature, images[first], deadline, slots)
        # A lone call blocks in this thread. A future would make gRPC start a thread to drive the channel for every
        # call when no other is in flight (grpc/_channel.py's channel spin): the profile's largest cost per request.
        alone = len(pending) == 1
        calls = [(index, self._send(signature, images[index], deadline, slots, blocking=alone)) for index in pending]
        for index, call in calls:
            results[index] = call if isinstance(call, ProxyError) else self._receive(signature, *call)
        return [result if result is not None else BackendError("no answer") for result in results]

    def labels(self) -> LabelMap | None:
        """The label map of the version learned last, if any."""
        signature = self._signature
        return self._labels.parse(signature.labels_text, self._spec.name) if signature is not None else None

    def status(self) -> ModelStatus:
        """Ready when GetModelStatus reports a version AVAILABLE; bounded by a short deadline."""
        request = get_model_status_pb2.GetModelStatusRequest(model_spec=self._model_spec(signature=None))
        try:
            response = self._connection.get_status(request, timeout=min(STATUS_TIMEOUT_S, self._timeout_s))
        except grpc.RpcError as exc:
            return ModelStatus(ready=False, detail=self._describe(exc, "GetModelStatus").message)
        available = [s.version for s in response.model_version_status if s.state == AVAILABLE]
        if not available:
            states = ", ".join(f"version {s.version}: state {s.state}" for s in response.model_version_status)
            return ModelStatus(ready=False, detail=f"model {self._spec.name} has no AVAILABLE version ({states})")
        return ModelStatus(ready=True, version=max(available))

    def versions(self) -> list[VersionState]:
        """Every version TF Serving knows of, with its state (GetModelStatus without a version)."""
        request = get_model_status_pb2.GetModelStatusRequest(model_spec=model_pb2.ModelSpec(name=self._spec.name))
        try:
            response = self._connection.get_status(request, timeout=min(STATUS_TIMEOUT_S, self._timeout_s))
        except grpc.RpcError as exc:
            raise self._describe(exc, "GetModelStatus") from None
        state_name = get_model_status_pb2.ModelVersionStatus.State.Name
        return [
            VersionState(int(s.version), state_name(s.state), s.status.error_message)
            for s in sorted(response.model_version_status, key=lambda s: s.version)
        ]

    def device(self) -> str:
        """TF Serving's device is not visible from here."""
        return "TF Serving"

    def start(self) -> None:
        """Learn the signature in a short-lived background thread, so the first request does not pay for it."""

        def prefetch() -> None:
            try:
                self._signature_for(time.monotonic() + self._timeout_s)
            except ProxyError as exc:
                if not self._closed.is_set():
                    log.info(
                        "model %s: TF Serving not ready yet (%s); retrying per request", self._spec.name, exc.message
                    )

        threading.Thread(target=prefetch, name=f"metadata-{self._spec.name}", daemon=True).start()

    def close(self) -> None:
        """Forget the learned signature; the channel belongs to the ``ServingConnection``."""
        self._closed.set()
        self._signature = None

    # -- Predict -----------------------------------------------------------------------------------------------

    def _request(self, signature: _Signature, image: ModelImage, input_type: InputType) -> bytes:
        """The serialized PredictRequest for ``image``: the model spec and the output filter as protobuf wrote them
        (once per backend, once per signature), the input tensor written around the picture's own memory
        (``tensor_wire``), all joined once - the one copy of the pixels before gRPC's own."""
        value = model_input(image, input_type, signature.rank)
        entry = [
            *length_delimited(_ENTRY_KEY, [signature.input_key.encode()]),
            *length_delimited(_ENTRY_VALUE, tensor_wire(value)),
        ]
        # The output filter asks only for what the answer uses: masks or feature maps can be far larger.
        return b"".join(
            [self._model_spec_wire, *length_delimited(_REQUEST_INPUTS, entry), signature.output_filter_wire]
        )

    def _send(
        self, signature: _Signature, image: ModelImage, deadline: float, slots: RequestCalls, *, blocking: bool = False
    ) -> tuple[Any, list[float]] | ProxyError:
        """Start one Predict once a slot is free; returns the call and its [start, end] times, or the error that
        stopped it. The request message is built after the slot is taken: at most a request's share of tensors are
        held at once, however many tiles it has."""
        assumed = signature.input_type or InputType.ENCODED_IMAGE_STRING_TENSOR
        try:
            slots.acquire(deadline)
        except ProxyError as exc:
            return exc
        try:
            request = self._request(signature, image, assumed)
        except BaseException as exc:
            slots.release()
            if isinstance(exc, ProxyError):
                return exc
            raise
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            slots.release()
            return error_for_code(DEADLINE_EXCEEDED, "no time left for Predict within REQUEST_TIMEOUT_S")
        timing = [time.perf_counter(), 0.0]
        if blocking:
            return self._call_now(request, remaining, timing, slots), timing
        try:
            call = self._connection.predict_serialized.future(request, timeout=remaining)
        except Exception:
            # The call never started (a closed channel raises here): its slot is not the done callback's to free.
            slots.release()
            raise

        def finished(_: Any) -> None:
            timing[1] = time.perf_counter()
            slots.release()

        call.add_done_callback(finished)
        return call, timing

    def _call_now(self, request: bytes, timeout: float, timing: list[float], slots: RequestCalls) -> _Finished:
        """Predict in this thread, the call's outcome kept as a finished future's."""
        try:
            return _Finished(self._connection.predict_serialized(request, timeout=timeout), None)
        except grpc.RpcError as exc:
            return _Finished(None, exc)
        finally:
            timing[1] = time.perf_counter()
            slots.release()

    def _receive(self, signature: _Signature, call: Any, timing: list[float]) -> Prediction | ProxyError:
        try:
            response = call.result()
        except grpc.RpcError as exc:
            return self._failed(exc, signature)
        served = response.model_spec.version.value or signature.version
        labels_text = signature.labels_text
        try:
            if served != signature.version:
                log.info("model %s: TF Serving now serves version %d; learning its signature", self._spec.name, served)
                self._signature = None
                if signature.labels_text is not None:
                    labels_text = self._labels_of(served)
            outputs = {
                name: tensor_proto_to_ndarray(tensor)
                for name, tensor in response.outputs.items()
                if name in ANSWER_OUTPUTS or name == LABEL_MAP_OUTPUT
            }
            detections = Detections.from_outputs(outputs)
            if LABEL_MAP_OUTPUT in outputs:
                labels_text = _first_string(outputs[LABEL_MAP_OUTPUT])
            labels = self._labels.parse(labels_text, f"model {self._spec.name}")
        except TensorDecodeError as exc:
            return BackendError(f"cannot read TF Serving's answer for model {self._spec.name}: {exc}")
        except ProxyError as exc:
            return exc
        return Prediction(detections, labels, served, max(0.0, (timing[1] or time.perf_counter()) - timing[0]))

    def _labels_of(self, version: int) -> str | None:
        """The label map ``version`` itself carries in its metadata, asked of that version: an answer of a version
        the signature was not learned from gets its own version's names, never another's. None when it has no
        metadata (a model converted elsewhere: the configured label map applies, as it will to its next answers)."""
        try:
            return self._metadata(version, time.monotonic() + min(STATUS_TIMEOUT_S, self._timeout_s)).get(
                METADATA_LABEL_MAP
            )
        except ProxyError:
            return None

    def _tell_strings_apart(
        self, signature: _Signature, image: ModelImage, deadline: float, slots: RequestCalls
    ) -> tuple[_Signature, Prediction | ProxyError]:
        """For a string input the converter did not describe: send the image as encoded bytes, then as a
        tf.Example; the form the model takes is remembered for this version."""
        answer: Prediction | ProxyError = BackendError("no answer")
        for candidate in (InputType.ENCODED_IMAGE_STRING_TENSOR, InputType.TF_EXAMPLE):
            tried = replace(signature, input_type=candidate)
            call = self._send(tried, image, deadline, slots, blocking=True)
            answer = call if isinstance(call, ProxyError) else self._receive(tried, *call)
            if isinstance(answer, Prediction):
                log.info("model %s version %d takes %s", self._spec.name, signature.version, candidate)
                with self._signature_lock:
                    if self._signature is not None and self._signature.version == signature.version:
                        self._signature = tried
                return tried, answer
            if not isinstance(answer, InvalidImage):
                return signature, answer
        return signature, answer

    # -- the signature -----------------------------------------------------------------------------------------

    def _signature_for(self, deadline: float) -> _Signature:
        signature = self._signature
        if signature is not None:
            return signature
        with self._signature_lock:
            if self._signature is None:
                self._signature = self._fetch_signature(deadline)
            return self._signature

    def _fetch_signature(self, deadline: float) -> _Signature:
        name, wanted = self._spec.name, self._spec.signature_name
        request = get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=self._model_spec(signature=None), metadata_field=["signature_def"]
        )
        response = self._call(self._connection.get_metadata, request, deadline, "GetModelMetadata")
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        if "signature_def" not in response.metadata or not response.metadata["signature_def"].Unpack(signature_map):
            raise BackendError(f"TF Serving sent no signature_def metadata for model {name}")
        if wanted not in signature_map.signature_def:
            known = ", ".join(sorted(signature_map.signature_def)) or "none"
            raise BackendError(f'model {name} has no signature "{wanted}" (it has: {known})')
        signature_def = signature_map.signature_def[wanted]
        version = response.model_spec.version.value
        if len(signature_def.inputs) != 1:
            found = ", ".join(f"{key} ({dtype_name(info.dtype)})" for key, info in sorted(signature_def.inputs.items()))
            raise BackendError(f"model {name} takes inputs {found or 'none'}; a detector takes one image input")
        input_key, info = next(iter(signature_def.inputs.items()))
        rank = None if info.tensor_shape.unknown_rank else len(info.tensor_shape.dim)
        missing = [output for output in REQUIRED_OUTPUTS if output not in signature_def.outputs]
        if missing:
            raise BackendError(f"model {name} version {version} lacks outputs {', '.join(missing)}")
        metadata: dict[str, str] = {}
        if METADATA_SIGNATURE in signature_map.signature_def:
            metadata = self._metadata(version, deadline)
        input_type = self._spec.input_type or _input_type(info.dtype, metadata.get(METADATA_INPUT_TYPE))
        if info.dtype != types_pb2.DT_STRING and (input_type is None or rank not in (None, 4)):
            raise BackendError(
                f"model {name} takes {input_key} of {dtype_name(info.dtype)}; a detector takes uint8 or float32 pixels "
                "[batch, height, width, 3], or a string of image bytes"
            )
        labels_text = metadata.get(METADATA_LABEL_MAP)
        # The label map rides on every answer only when the metadata does not carry it (it is a few KB to serialize
        # and read per call: the COCO map is 80 entries).
        wanted_outputs = ANSWER_OUTPUTS if labels_text is not None else (*ANSWER_OUTPUTS, LABEL_MAP_OUTPUT)
        outputs = tuple(o for o in wanted_outputs if o in signature_def.outputs)
        log.info("model %s version %d: input %s (%s)", name, version, input_key, input_type or "string, to be told")
        return _Signature(version, input_key, input_type, rank, outputs, labels_text)

    def _metadata(self, version: int, deadline: float) -> dict[str, str]:
        """The converter's metadata signature of ``version``: its input type and label map."""
        request = predict_pb2.PredictRequest(model_spec=self._model_spec(signature=METADATA_SIGNATURE))
        request.model_spec.version.CopyFrom(wrappers_pb2.Int64Value(value=version))  # clears a version label
        request.inputs[METADATA_REQUEST].CopyFrom(ndarray_to_tensor_proto(np.array([b""], dtype=object)))
        response = self._call(
            self._connection.predict_serialized, request.SerializeToString(), deadline, "Predict (metadata)"
        )
        try:
            return {
                key: _first_string(tensor_proto_to_ndarray(tensor)) or ""
                for key, tensor in response.outputs.items()
                if key in (METADATA_INPUT_TYPE, METADATA_LABEL_MAP)
            }
        except TensorDecodeError as exc:
            raise BackendError(f"cannot read model {self._spec.name}'s metadata: {exc}") from None

    # -- calls and errors --------------------------------------------------------------------------------------

    def _model_spec(self, *, signature: str | None = "") -> Any:
        spec = model_pb2.ModelSpec(name=self._spec.name)
        if signature is not None:
            spec.signature_name = signature or self._spec.signature_name
        if self._spec.version is not None:
            spec.version.CopyFrom(wrappers_pb2.Int64Value(value=self._spec.version))
        elif self._spec.version_label:
            spec.version_label = self._spec.version_label
        return spec

    def _call(self, method: Any, request: Any, deadline: float, name: str) -> Any:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise error_for_code(DEADLINE_EXCEEDED, f"no time left for {name} within REQUEST_TIMEOUT_S")
        try:
            return method(request, timeout=remaining)
        except grpc.RpcError as exc:
            raise self._failed(exc, None) from None

    def _failed(self, exc: grpc.RpcError, signature: _Signature | None) -> ProxyError:
        code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
        if code in _REFRESH_ON:
            # The model may have been replaced by one with another signature: learn it again next time.
            self._signature = None
        details = (exc.details() if isinstance(exc, grpc.Call) else "") or ""
        decoding = signature is not None and signature.input_type is not None and signature.input_type.is_encoded
        if code is grpc.StatusCode.INVALID_ARGUMENT and decoding and "signature" not in details:
            # The model decodes images itself: INVALID_ARGUMENT is its decoder refusing these bytes.
            return InvalidImage(f"the model's image decoder cannot read this image: {details}")
        return self._describe(exc, "Predict")

    def _describe(self, exc: grpc.RpcError, name: str) -> ProxyError:
        code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
        details = (exc.details() if isinstance(exc, grpc.Call) else "") or code.name
        if code.value[0] == UNAVAILABLE:
            message = f"TF Serving at {self._connection.target} is unavailable: {details}"
        elif code is grpc.StatusCode.DEADLINE_EXCEEDED and details in (_LOCAL_DEADLINE, code.name):
            message = f"TF Serving did not answer {name} within {self._timeout_s:g}s (REQUEST_TIMEOUT_S)"
        else:
            message = f"TF Serving {name} for model {self._spec.name}: {code.name}: {details}"
        return error_for_code(code.value[0], message)


@dataclass(frozen=True)
class _Finished:
    """A call made in the calling thread, read as a finished future is (``result()``)."""

    response: Any
    error: grpc.RpcError | None

    def result(self) -> Any:
        """The response, or the call's error raised."""
        if self.error is not None:
            raise self.error
        return self.response


def _input_type(data_type: int, described: str | None) -> InputType | None:
    """The input type from the signature's dtype and the converter's description (None: a string to tell)."""
    if data_type == types_pb2.DT_STRING:
        try:
            return InputType(described) if described else None
        except ValueError:
            return None
    return pixel_input_type(dtype_name(data_type))


def _first_string(value: np.ndarray | None) -> str | None:
    """The first element of a string tensor as text (the label map an answer carries), or None."""
    if value is None or value.size == 0:
        return None
    first = value.reshape(-1)[0]
    return first.decode("utf-8", errors="replace") if isinstance(first, bytes) else str(first)
