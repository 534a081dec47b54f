"""The TensorFlow Serving backend: ``PredictionService/Predict`` over gRPC, without importing TensorFlow.

One channel per process, created with the worker. Its service config asks for client-side ``round_robin`` over
every address the target resolves to (compose ``--scale``, a Kubernetes headless Service) and retries calls that
fail with UNAVAILABLE. The signature's input key, dtype and shape come from ``GetModelMetadata``, cached per model
version, so converted TF1 graphs (``inputs``) and TF2 exports (``input_tensor``, batch 1) need no configuration.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np

from proxy._proto.google.protobuf import wrappers_pb2
from proxy._proto.tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from proxy.backends import ModelStatus, VersionState
from proxy.detections import REQUIRED_OUTPUTS, Detections
from proxy.errors import BackendError, ProxyError
from proxy.settings import Settings
from proxy.status_codes import DEADLINE_EXCEEDED, UNAVAILABLE, error_for_code
from proxy.tensors import DTYPE_TO_NUMPY, TensorDecodeError, ndarray_to_tensor_proto, tensor_proto_to_ndarray

log = logging.getLogger(__name__)

WANTED_OUTPUTS = (*REQUIRED_OUTPUTS, "num_detections")
STATUS_TIMEOUT_S = 2.0
AVAILABLE = 30  # ModelVersionStatus.State.AVAILABLE


def channel_options(settings: Settings) -> list[tuple[str, Any]]:
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
        # The default backoff grows to 120 s; after TF Serving restarts, the proxy should be back within seconds.
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1000),
        ("grpc.primary_user_agent", "classifyobjects-proxy"),
    ]


@dataclass(frozen=True)
class _Signature:
    """What Predict needs to know about the serving signature, learned from GetModelMetadata."""

    version: int
    input_key: str
    dtype: np.dtype[Any]
    outputs: tuple[str, ...]


def open_channel(settings: Settings) -> grpc.Channel:
    """The process's one channel to TF Serving, shared by every model's backend."""
    assert settings.serving_address
    return grpc.insecure_channel(settings.serving_address, options=channel_options(settings))


class ServingBackend:
    """Calls one model in TF Serving; maps gRPC status codes as TF Serving's REST server does."""

    def __init__(self, settings: Settings, model_name: str, channel: grpc.Channel) -> None:
        assert settings.serving_address
        self._settings = settings
        self._model_name = model_name
        self._target = settings.serving_address
        self._channel = channel
        prediction = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._predict = prediction.Predict
        self._get_metadata = prediction.GetModelMetadata
        self._get_status = model_service_pb2_grpc.ModelServiceStub(self._channel).GetModelStatus
        self._signature: _Signature | None = None
        self._signature_lock = threading.Lock()

    # -- the Backend interface ---------------------------------------------------------------------------------

    def predict(self, image: np.ndarray) -> Detections:
        """Send one image to Predict (tensor_content encoding) and read the OD API outputs in either encoding."""
        deadline = time.monotonic() + self._settings.request_timeout_s
        signature = self._signature_for(deadline)
        request = predict_pb2.PredictRequest(model_spec=self._model_spec())
        batch = image[np.newaxis]
        if batch.dtype != signature.dtype:
            batch = batch.astype(signature.dtype)
        request.inputs[signature.input_key].CopyFrom(ndarray_to_tensor_proto(batch))
        # Ask only for what the answer uses: masks or feature maps can be far larger than the detections.
        request.output_filter.extend(signature.outputs)
        response = self._call(self._predict, request, deadline, "Predict")
        served = response.model_spec.version.value
        if served and served != signature.version:
            log.info("TF Serving now serves version %d of %s; refreshing its signature", served, self._model_name)
            self._signature = None
        try:
            outputs = {name: tensor_proto_to_ndarray(tensor) for name, tensor in response.outputs.items()}
        except TensorDecodeError as exc:
            raise BackendError(f"cannot read TF Serving's answer for model {self._model_name}: {exc}") from None
        return Detections.from_outputs(outputs)

    def status(self) -> ModelStatus:
        """Ready when GetModelStatus reports a version AVAILABLE; bounded by a short deadline."""
        request = get_model_status_pb2.GetModelStatusRequest(model_spec=self._model_spec(with_signature=False))
        try:
            response = self._get_status(request, timeout=min(STATUS_TIMEOUT_S, self._settings.request_timeout_s))
        except grpc.RpcError as exc:
            return ModelStatus(ready=False, detail=self._describe(exc, "GetModelStatus").message)
        available = [s.version for s in response.model_version_status if s.state == AVAILABLE]
        if not available:
            states = ", ".join(f"version {s.version}: state {s.state}" for s in response.model_version_status)
            return ModelStatus(ready=False, detail=f"model {self._model_name} has no AVAILABLE version ({states})")
        return ModelStatus(ready=True, version=max(available))

    def versions(self) -> list[VersionState]:
        """Every version TF Serving knows of, with its state (GetModelStatus without a version)."""
        request = get_model_status_pb2.GetModelStatusRequest(model_spec=model_pb2.ModelSpec(name=self._model_name))
        try:
            response = self._get_status(request, timeout=min(STATUS_TIMEOUT_S, self._settings.request_timeout_s))
        except grpc.RpcError as exc:
            raise self._describe(exc, "GetModelStatus") from None
        state_name = get_model_status_pb2.ModelVersionStatus.State.Name
        return [
            VersionState(int(s.version), state_name(s.state), s.status.error_message)
            for s in sorted(response.model_version_status, key=lambda s: s.version)
        ]

    def start(self) -> None:
        """Learn the signature in the background so the first request does not pay for it."""

        def prefetch() -> None:
            try:
                self._signature_for(time.monotonic() + self._settings.request_timeout_s)
            except ProxyError as exc:
                log.info("TF Serving not ready yet (%s); the proxy will retry per request", exc.message)

        threading.Thread(target=prefetch, name="serving-metadata", daemon=True).start()

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    # -- internals ---------------------------------------------------------------------------------------------

    def _model_spec(self, *, with_signature: bool = True) -> Any:
        spec = model_pb2.ModelSpec(name=self._model_name)
        if with_signature:
            spec.signature_name = self._settings.signature_name
        if self._settings.model_version is not None:
            spec.version.CopyFrom(wrappers_pb2.Int64Value(value=self._settings.model_version))
        elif self._settings.model_version_label:
            spec.version_label = self._settings.model_version_label
        return spec

    def _signature_for(self, deadline: float) -> _Signature:
        signature = self._signature
        if signature is not None:
            return signature
        with self._signature_lock:
            if self._signature is None:
                self._signature = self._fetch_signature(deadline)
            return self._signature

    def _fetch_signature(self, deadline: float) -> _Signature:
        request = get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=self._model_spec(with_signature=False), metadata_field=["signature_def"]
        )
        response = self._call(self._get_metadata, request, deadline, "GetModelMetadata")
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        if "signature_def" not in response.metadata or not response.metadata["signature_def"].Unpack(signature_map):
            raise BackendError(f"TF Serving sent no signature_def metadata for model {self._model_name}")
        name = self._settings.signature_name
        if name not in signature_map.signature_def:
            known = ", ".join(sorted(signature_map.signature_def)) or "none"
            raise BackendError(f'model {self._model_name} has no signature "{name}" (it has: {known})')
        signature_def = signature_map.signature_def[name]
        if len(signature_def.inputs) != 1:
            raise BackendError(
                f"signature {name} of model {self._model_name} takes inputs {sorted(signature_def.inputs)}; "
                "an image detector takes one image tensor"
            )
        input_key, info = next(iter(signature_def.inputs.items()))
        dtype = DTYPE_TO_NUMPY.get(info.dtype)
        if dtype is None or dtype.kind not in "uif":
            raise BackendError(
                f"signature {name} of model {self._model_name} takes {input_key} of a non-numeric type; "
                "this proxy sends decoded images (export with input_type=image_tensor)"
            )
        missing = [output for output in REQUIRED_OUTPUTS if output not in signature_def.outputs]
        if missing:
            raise BackendError(f"signature {name} of model {self._model_name} lacks outputs {', '.join(missing)}")
        outputs = tuple(output for output in WANTED_OUTPUTS if output in signature_def.outputs)
        version = response.model_spec.version.value
        log.info("model %s version %d: input %s (%s)", self._model_name, version, input_key, dtype)
        return _Signature(version=version, input_key=input_key, dtype=dtype, outputs=outputs)

    def _call(self, method: Any, request: Any, deadline: float, name: str) -> Any:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise error_for_code(DEADLINE_EXCEEDED, f"no time left for {name} within REQUEST_TIMEOUT_S")
        try:
            return method(request, timeout=remaining)
        except grpc.RpcError as exc:
            error = self._describe(exc, name)
            if isinstance(exc, grpc.Call) and exc.code() in (
                grpc.StatusCode.INVALID_ARGUMENT,
                grpc.StatusCode.FAILED_PRECONDITION,
                grpc.StatusCode.NOT_FOUND,
            ):
                # The model may have been replaced by one with another signature: learn it again next time.
                self._signature = None
            raise error from None

    def _describe(self, exc: grpc.RpcError, name: str) -> ProxyError:
        code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
        details = (exc.details() if isinstance(exc, grpc.Call) else "") or code.name
        if code.value[0] == UNAVAILABLE:
            message = f"TF Serving at {self._target} is unavailable: {details}"
        elif code is grpc.StatusCode.DEADLINE_EXCEEDED:
            message = (
                f"TF Serving did not answer {name} within {self._settings.request_timeout_s:g}s (REQUEST_TIMEOUT_S)"
            )
        else:
            message = f"TF Serving {name} for model {self._model_name}: {code.name}: {details}"
        return error_for_code(code.value[0], message)
