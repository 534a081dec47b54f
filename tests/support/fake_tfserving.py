"""A TensorFlow Serving stand-in for the test suite: TF Serving's gRPC API over real SavedModels.

The real model server cannot run here, so this process takes its place. It uses the official
`tensorflow_serving.apis` messages and service stubs, runs each SavedModel in a TensorFlow Session the way TF
Serving does (so dtype and op errors come from the TF runtime itself), and copies TF Serving's validation
order, status codes and messages (tensorflow_serving/servables/tensorflow/predict_util.cc,
get_model_metadata_impl.cc, model_servers/get_model_status_impl.cc, core/servable_handle.h).

    python -m tests.support.fake_tfserving --port 0 --model_name detector --model_base_path /tmp/detector
    python -m tests.support.fake_tfserving --port 0 --model_config_file serving_config/models.config \
        --base_path_prefix_map /models=/tmp/models --allow_version_labels_for_unavailable_models=true

When it serves, it prints exactly one line `READY port=<port>` to stdout. It logs one line per request to
stderr: `fake_tfserving: method=Predict model=detector version=2 status=OK`. SIGTERM and SIGINT stop it
gracefully.

Fixtures and the benchmark use `harness.tfserving.start_server(args)`, which runs this module as a subprocess and
returns a `RunningServer`; they never import this module (nor TensorFlow).

Differences from TF Serving: no REST port, no merging of requests into batches (``--enable_batching`` only
checks what its batching session demands of every run), no config-file reload, no Classify/Regress/
MultiInference (they answer UNIMPLEMENTED), and a failed version load is retried on every poll (at most
`_MAX_LOAD_RETRIES` times) instead of once a minute.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from google.protobuf.message import Message
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow.core.protobuf import config_pb2, meta_graph_pb2
from tensorflow.python.client import pywrap_tf_session
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
)
from tensorflow_serving.config import model_server_config_pb2

from harness.tfserving import LOG_PREFIX, READY_PREFIX

DEFAULT_SIGNATURE = "serving_default"
SERVE_TAG = "serve"
SIGNATURE_DEF_FIELD = "signature_def"
# VerifySignature in predict_util.cc accepts only these method names.
PREDICT_METHOD_NAMES = (
    "tensorflow/serving/predict",
    "tensorflow/serving/classify",
    "tensorflow/serving/regress",
)
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_WARMUP_RECORDS = 1000
# TF Serving's ToGRPCStatus cuts longer messages and appends "...TRUNCATED".
MAX_ERROR_MESSAGE = 1024
# TF Serving's gRPC server sets its own limits to the maximum; the 4 MB limit people hit is the client's.
MAX_MESSAGE_LENGTH = 2**31 - 1
_MAX_LOAD_RETRIES = 5

State = get_model_status_pb2.ModelVersionStatus.State


class ServingError(Exception):
    """A request failure carrying the gRPC status TF Serving would answer with."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


class ConfigError(Exception):
    """The command line or model config cannot be served; the process exits with this message."""


def _log(line: str) -> None:
    # One write per line keeps lines whole when handler threads log at the same time.
    sys.stderr.write(f"{LOG_PREFIX} {line}\n")
    sys.stderr.flush()


def _status_code(tf_error_code: int) -> grpc.StatusCode:
    """The gRPC status code for a TensorFlow error code (they share numbering)."""
    for code in grpc.StatusCode:
        if code.value[0] == tf_error_code:
            return code
    return grpc.StatusCode.UNKNOWN


def _servable_request(name: str, version: int | None) -> str:
    # ServableRequest::DebugString, which NOT_FOUND messages quote.
    return f"Latest({name})" if version is None else f"Specific({name}, {version})"


# ----------------------------------------------------------------------------------------------------------
# Tensors
# ----------------------------------------------------------------------------------------------------------

_PROTO_FIELD_BY_DTYPE: dict[int, str] = {
    types_pb2.DT_FLOAT: "float_val",
    types_pb2.DT_DOUBLE: "double_val",
    types_pb2.DT_INT32: "int_val",
    types_pb2.DT_INT16: "int_val",
    types_pb2.DT_INT8: "int_val",
    types_pb2.DT_UINT8: "int_val",
    types_pb2.DT_UINT16: "int_val",
    types_pb2.DT_INT64: "int64_val",
    types_pb2.DT_UINT32: "uint32_val",
    types_pb2.DT_UINT64: "uint64_val",
    types_pb2.DT_BOOL: "bool_val",
    types_pb2.DT_STRING: "string_val",
    types_pb2.DT_HALF: "half_val",
    types_pb2.DT_BFLOAT16: "half_val",
    types_pb2.DT_COMPLEX64: "scomplex_val",
    types_pb2.DT_COMPLEX128: "dcomplex_val",
}


def tensor_to_proto_field(array: np.ndarray) -> tensor_pb2.TensorProto:
    """Encode an array as Tensor::AsProtoField does: typed value fields, empty tensor_content."""
    dtype = tf.as_dtype(array.dtype)
    proto = tensor_pb2.TensorProto(dtype=dtype.as_datatype_enum)
    for size in array.shape:
        proto.tensor_shape.dim.add(size=size)
    field_name = _PROTO_FIELD_BY_DTYPE.get(dtype.as_datatype_enum)
    if field_name is None:
        raise ServingError(grpc.StatusCode.INTERNAL, f"cannot serialize output of type {dtype.name}")
    flat = array.ravel()
    values: list[Any]
    if field_name == "half_val":
        # Half and bfloat16 travel as their 16-bit patterns.
        values = flat.view(np.uint16).tolist()
    elif field_name in ("scomplex_val", "dcomplex_val"):
        values = np.stack([flat.real, flat.imag], axis=-1).ravel().tolist()
    else:
        values = flat.tolist()
    getattr(proto, field_name).extend(values)
    return proto


def _tensor_from_proto(alias: str, proto: tensor_pb2.TensorProto) -> np.ndarray:
    try:
        return np.asarray(tf.make_ndarray(proto))
    except Exception as error:  # any parse failure is Tensor::FromProto returning false
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"tensor parsing error: {alias}") from error


# ----------------------------------------------------------------------------------------------------------
# Servables
# ----------------------------------------------------------------------------------------------------------


class Servable:
    """One loaded model version: a TF Session over the SavedModel's `serve` MetaGraphDef."""

    def __init__(self, name: str, version: int, path: str) -> None:
        self.name = name
        self.version = version
        self.path = path
        self._graph = tf.Graph()
        self._session = tf.compat.v1.Session(graph=self._graph)
        self.meta_graph: meta_graph_pb2.MetaGraphDef = tf.compat.v1.saved_model.loader.load(
            self._session, [SERVE_TAG], path
        )
        # Resolve every signature tensor once, so request threads never touch the Graph.
        self._endpoints: dict[str, Any] = {}
        for signature in self.meta_graph.signature_def.values():
            for info in [*signature.inputs.values(), *signature.outputs.values()]:
                try:
                    tensor = self._graph.get_tensor_by_name(info.name)
                except (KeyError, ValueError):
                    # e.g. `__saved_model_init_op` names an operation; predict never reaches it.
                    continue
                self._endpoints[info.name] = tensor._as_tf_output()

    def _endpoint(self, name: str) -> Any:
        if name not in self._endpoints:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Tensor {name}, specified in either feed_devices or fetch_devices was not found in the Graph",
            )
        return self._endpoints[name]

    def run(
        self, feeds: Sequence[tuple[str, np.ndarray]], fetches: Sequence[str], timeout_ms: int | None
    ) -> list[np.ndarray]:
        """Run the session as TF Serving's Session::Run does; raises tf.errors.OpError on failure."""
        options = config_pb2.RunOptions()
        if timeout_ms is not None:
            options.timeout_in_ms = timeout_ms
        # Session.run would cast feeds to the placeholder dtype and check shapes in Python, hiding the
        # runtime's own errors ("Expects arg[0] to be uint8 but float is provided"); this is the call
        # beneath it, the same Session::Run TF Serving makes.
        buffer = pywrap_tf_session.TF_NewBufferFromString(options.SerializeToString())
        try:
            feed_dict = {self._endpoint(name): value for name, value in feeds}
            fetch_list = [self._endpoint(name) for name in fetches]
            return list(self._session._call_tf_sessionrun(buffer, feed_dict, fetch_list, [], None))
        except UnicodeDecodeError as error:
            # An op that quotes binary input in its error (ParseExample: "Could not parse example input, value:
            # '<the bytes>'") makes TensorFlow's Python binding fail to turn the message into text, losing its
            # status. TF Serving, in C++, answers it as the op raised it: INVALID_ARGUMENT for such input errors.
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT, f"an op refused the input and quoted it in binary ({error.reason})"
            ) from error
        finally:
            pywrap_tf_session.TF_DeleteBuffer(buffer)


def run_predict(
    servable: Servable, request: predict_pb2.PredictRequest, timeout_ms: int | None = None
) -> predict_pb2.PredictResponse:
    """Answer a PredictRequest with the checks, order and messages of TF Serving's predict_util.cc."""
    signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
    signature_defs = servable.meta_graph.signature_def
    if signature_name not in signature_defs:
        raise ServingError(grpc.StatusCode.FAILED_PRECONDITION, f'Serving signature key "{signature_name}" not found.')
    signature = signature_defs[signature_name]
    response = predict_pb2.PredictResponse()
    response.model_spec.name = request.model_spec.name
    response.model_spec.signature_name = signature_name
    response.model_spec.version.value = servable.version

    if signature.method_name not in PREDICT_METHOD_NAMES:
        raise ServingError(
            grpc.StatusCode.INTERNAL,
            "Expected prediction signature method_name to be one of {"
            + ", ".join(PREDICT_METHOD_NAMES)
            + f"}}. Was: {signature.method_name}",
        )
    _verify_inputs_size(signature, request)
    feeds = _input_values(signature, request)
    aliases = _output_aliases(signature, request)
    if BATCHING.enabled:
        _check_batchable_inputs(feeds)
    outputs = servable.run(feeds, [signature.outputs[alias].name for alias in aliases], timeout_ms)
    if BATCHING.enabled:
        _check_batchable_outputs(outputs, len(feeds[0][1]))
    for alias, value in zip(aliases, outputs, strict=True):
        response.outputs[alias].CopyFrom(tensor_to_proto_field(np.asarray(value)))
    return response


@dataclass
class _Batching:
    """--enable_batching: every Run goes through TF Serving's BatchingSession, whose rules the checks below copy
    (batching_util.h ComputeTensorBatchSize, batching_session.cc SplitOutputTensors). The stand-in runs each
    request alone, so it checks what a batch of one must satisfy; it merges no requests."""

    enabled: bool = False


BATCHING = _Batching()


def _check_batchable_inputs(feeds: Sequence[tuple[str, np.ndarray]]) -> None:
    if not feeds:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "Batching Run() must have at least one input tensor")
    sizes = set()
    for _, value in feeds:
        if np.ndim(value) == 0:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT, "Batching Run() input tensors must have at least one dimension"
            )
        sizes.add(np.shape(value)[0])
    if len(sizes) > 1:
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT, "Batching Run() input tensors must have equal 0th-dimension size"
        )


def _check_batchable_outputs(outputs: Sequence[np.ndarray], batch: int) -> None:
    for value in outputs:
        if np.ndim(value) == 0:
            raise ServingError(grpc.StatusCode.FAILED_PRECONDITION, "Batched output tensor has 0 dimensions")
        if np.shape(value)[0] != batch:
            raise ServingError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "Batched output tensor's 0th dimension does not equal the sum of the 0th dimension sizes of the "
                "input tensors",
            )


def _defaults(signature: meta_graph_pb2.SignatureDef) -> Mapping[str, tensor_pb2.TensorProto]:
    # `defaults` only exists in newer SignatureDef protos.
    return signature.defaults if "defaults" in signature.DESCRIPTOR.fields_by_name else {}


def _verify_inputs_size(signature: meta_graph_pb2.SignatureDef, request: predict_pb2.PredictRequest) -> None:
    sent, expected = len(request.inputs), len(signature.inputs)
    if sent > expected or (sent < expected and not _defaults(signature)):
        request_keys, signature_keys = sorted(request.inputs), sorted(signature.inputs)
        extra = sorted(set(request_keys) - set(signature_keys))
        missing = sorted(set(signature_keys) - set(request_keys))
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"input size does not match signature: {sent}!={expected} "
            f"len({{{','.join(request_keys)}}}) != len({{{','.join(signature_keys)}}}). "
            f"Sent extra: {{{','.join(extra)}}}. Missing but required: {{{','.join(missing)}}}.",
        )


def _input_values(
    signature: meta_graph_pb2.SignatureDef, request: predict_pb2.PredictRequest
) -> list[tuple[str, np.ndarray]]:
    defaults = _defaults(signature)
    feeds: list[tuple[str, np.ndarray]] = []
    used: set[str] = set()
    for alias in sorted(signature.inputs):
        feed_name = signature.inputs[alias].name
        if alias in request.inputs:
            proto = request.inputs[alias]
            used.add(alias)
        elif alias in defaults:
            proto = defaults[alias]
        else:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Signature input alias: {alias}(feed name: {feed_name}) not found in request and no default "
                "value provided. Inputs expected to be in the request "
                f"{{{','.join(sorted(request.inputs))}}}, "
                f"or default input alias set: {','.join(sorted(defaults))}",
            )
        feeds.append((feed_name, _tensor_from_proto(alias, proto)))
    if request.inputs and len(used) != len(request.inputs):
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"Inputs contains invalid name. Used request inputs: {','.join(sorted(used))}, "
            f"request input: {','.join(sorted(request.inputs))}",
        )
    return feeds


def _output_aliases(signature: meta_graph_pb2.SignatureDef, request: predict_pb2.PredictRequest) -> list[str]:
    seen: list[str] = []
    for alias in request.output_filter:
        if alias not in signature.outputs:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"output tensor alias not found in signature: {alias} Outputs expected to be in the set "
                f"{{{','.join(sorted(signature.outputs))}}}.",
            )
        if alias in seen:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"duplicate output tensor alias: {alias}")
        seen.append(alias)
    return seen or list(signature.outputs)


def _run_warmup(servable: Servable) -> int:
    """Replay `assets.extra/tf_serving_warmup_requests` as TF Serving does at load; returns the count."""
    path = os.path.join(servable.path, WARMUP_FILE)
    if not os.path.exists(path):
        return 0
    count = 0
    for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
        count += 1
        if count > MAX_WARMUP_RECORDS:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Number of warmup records exceeds the maximum ({MAX_WARMUP_RECORDS}) at {path}",
            )
        log = prediction_log_pb2.PredictionLog.FromString(record)
        if log.WhichOneof("log_type") != "predict_log":
            raise ServingError(
                grpc.StatusCode.UNIMPLEMENTED,
                f"fake_tfserving replays only predict_log warmup records, got {log.WhichOneof('log_type')}",
            )
        run_predict(servable, log.predict_log.request)
    return count


# ----------------------------------------------------------------------------------------------------------
# Model management: version policy, polling, labels, status
# ----------------------------------------------------------------------------------------------------------


@dataclass
class _VersionState:
    state: int
    servable: Servable | None = None
    error: ServingError | None = None
    failed_loads: int = 0


@dataclass
class _Model:
    config: model_server_config_pb2.ModelConfig
    versions: dict[int, _VersionState] = field(default_factory=dict)
    last_warning: str = ""

    @property
    def name(self) -> str:
        return str(self.config.name)

    def aspired(self, on_disk: Mapping[int, str]) -> set[int]:
        """The versions the model_version_policy wants loaded, as FileSystemStoragePathSource picks them."""
        policy = self.config.model_version_policy
        choice = policy.WhichOneof("policy_choice")
        if choice == "all":
            return set(on_disk)
        if choice == "specific":
            return set(policy.specific.versions) & set(on_disk)
        keep = max(policy.latest.num_versions, 1)
        return set(sorted(on_disk, reverse=True)[:keep])

    def available(self, version: int | None) -> Servable | None:
        """The servable for Specific(version), or the highest available one for Latest."""
        if version is None:
            ready = [v for v, s in self.versions.items() if s.state == State.AVAILABLE]
            version = max(ready, default=None)
            if version is None:
                return None
        state = self.versions.get(version)
        return state.servable if state and state.state == State.AVAILABLE else None

    def gave_up(self) -> bool:
        """True when nothing serves and every version tried has failed to load too many times."""
        states = list(self.versions.values())
        return bool(states) and not self.available(None) and all(s.failed_loads > _MAX_LOAD_RETRIES for s in states)


class ModelManager:
    """Loads, serves and unloads model versions from base paths, as TF Serving's ServerCore does."""

    def __init__(self, configs: Sequence[model_server_config_pb2.ModelConfig]) -> None:
        self._models = {config.name: _Model(config) for config in configs}
        self._labels = {config.name: dict(config.version_labels) for config in configs}
        self._lock = threading.Lock()

    @property
    def model_names(self) -> list[str]:
        """Names of all configured models."""
        return list(self._models)

    def poll(self) -> None:
        """Scan every base path once: load newly aspired versions, then unload versions no longer aspired."""
        for model in self._models.values():
            self._poll_model(model)

    def all_available(self) -> bool:
        """True when every model has at least one AVAILABLE version (TF Serving waits for this to serve)."""
        with self._lock:
            return all(model.available(None) for model in self._models.values())

    def failed_models(self) -> list[str]:
        """Models whose loads failed for good, described as TF Serving's startup error does."""
        with self._lock:
            return [
                f"{{{_servable_request(m.name, None)} due to error: {max(m.versions.items())[1].error}}}"
                for m in self._models.values()
                if m.gave_up()
            ]

    def resolve(self, spec: model_pb2.ModelSpec) -> Servable:
        """The servable a ModelSpec asks for, or the ServingError TF Serving's ServerCore gives."""
        if not spec.name:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "ModelSpec has no name specified.")
        version: int | None = None
        choice = spec.WhichOneof("version_choice")
        if choice == "version":
            version = spec.version.value
        elif choice == "version_label":
            labels = self._labels.get(spec.name, {})
            if spec.version_label not in labels:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"Unrecognized servable version label: {spec.version_label}",
                )
            version = labels[spec.version_label]
        with self._lock:
            model = self._models.get(spec.name)
            servable = model.available(version) if model else None
        if servable is None:
            raise ServingError(
                grpc.StatusCode.NOT_FOUND,
                f"Servable not found for request: {_servable_request(spec.name, version)}",
            )
        return servable

    def status(self, spec: model_pb2.ModelSpec) -> get_model_status_pb2.GetModelStatusResponse:
        """GetModelStatus as get_model_status_impl.cc answers it, newest version first."""
        with self._lock:
            model = self._models.get(spec.name)
            versions = dict(model.versions) if model else {}
        response = get_model_status_pb2.GetModelStatusResponse()
        if spec.HasField("version"):
            wanted = spec.version.value
            if wanted not in versions:
                raise ServingError(grpc.StatusCode.NOT_FOUND, f"Could not find version {wanted} of model {spec.name}")
            versions = {wanted: versions[wanted]}
        elif not versions:
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {spec.name}")
        for version in sorted(versions, reverse=True):
            state = versions[version]
            entry = response.model_version_status.add(version=version, state=state.state)
            # ToStatusProto always sets the field, so OK versions carry an empty `status {}`.
            entry.status.SetInParent()
            if state.error is not None:
                entry.status.error_code = state.error.code.value[0]
                entry.status.error_message = state.error.message
        return response

    def _warn_once(self, model: _Model, message: str) -> None:
        if model.last_warning != message:
            model.last_warning = message
            _log(message)

    def _poll_model(self, model: _Model) -> None:
        base_path = model.config.base_path
        if not os.path.isdir(base_path):
            self._warn_once(
                model,
                "FileSystemStoragePathSource encountered a filesystem access error: "
                f"Could not find base path {base_path} for servable {model.name}",
            )
            return
        on_disk = {
            int(entry.name): entry.path
            for entry in os.scandir(base_path)
            if entry.is_dir() and re.fullmatch(r"\d+", entry.name)
        }
        if not on_disk:
            self._warn_once(
                model,
                f"No versions of servable {model.name} found under base path {base_path}. "
                "Did you forget to name your leaf directory as a number (eg. '/1/')?",
            )
        aspired = model.aspired(on_disk)
        for version in sorted(aspired, reverse=True):
            with self._lock:
                known = model.versions.get(version)
            if known and (known.state == State.AVAILABLE or known.failed_loads > _MAX_LOAD_RETRIES):
                continue
            self._load(model, version, on_disk[version], known.failed_loads if known else 0)
        with self._lock:
            self._unload_unaspired(model, aspired)

    @staticmethod
    def _unload_unaspired(model: _Model, aspired: set[int]) -> None:
        # AvailabilityPreservingPolicy: while versions are aspired but none of them serves, keep the
        # newest unaspired version serving; otherwise unload every unaspired one.
        serving = sorted(v for v, s in model.versions.items() if s.state == State.AVAILABLE)
        unaspired = [v for v in serving if v not in aspired]
        if aspired and not set(serving) & aspired:
            unaspired = unaspired[:-1]
        for version in unaspired:
            model.versions[version] = _VersionState(State.END)
            _log(f"Unloaded servable version {{name: {model.name} version: {version}}}")

    def _load(self, model: _Model, version: int, path: str, failed_loads: int) -> None:
        with self._lock:
            model.versions[version] = _VersionState(State.LOADING, failed_loads=failed_loads)
        try:
            servable = Servable(model.name, version, path)
            records = _run_warmup(servable)
        except Exception as error:  # any load failure leaves the version in END with its error
            failure = error if isinstance(error, ServingError) else _as_serving_error(error)
            with self._lock:
                model.versions[version] = _VersionState(State.END, error=failure, failed_loads=failed_loads + 1)
            _log(f"Loading servable: {{name: {model.name} version: {version}}} failed: {failure}")
            return
        with self._lock:
            model.versions[version] = _VersionState(State.AVAILABLE, servable=servable)
        warmup = f" after {records} warmup records" if records else ""
        _log(f"Successfully loaded servable version {{name: {model.name} version: {version}}}{warmup}")


def _as_serving_error(error: Exception) -> ServingError:
    if isinstance(error, tf.errors.OpError):
        return ServingError(_status_code(error.error_code), error.message)
    return ServingError(grpc.StatusCode.UNKNOWN, f"{type(error).__name__}: {error}")


# ----------------------------------------------------------------------------------------------------------
# gRPC services
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FaultOptions:
    """Test-only fault injection for Predict."""

    delay_ms: int = 0
    fail_with: grpc.StatusCode | None = None


@dataclass
class _Trace:
    model: str = "-"
    version: int | None = None


class _Services(prediction_service_pb2_grpc.PredictionServiceServicer, model_service_pb2_grpc.ModelServiceServicer):
    """PredictionService and ModelService over one ModelManager; the rest answer UNIMPLEMENTED."""

    def __init__(self, manager: ModelManager, faults: FaultOptions) -> None:
        self._manager = manager
        self._faults = faults

    def _answer(
        self,
        method: str,
        context: grpc.ServicerContext,
        empty: Message,
        handle: Callable[[_Trace], Message],
    ) -> Message:
        trace = _Trace()
        try:
            response = handle(trace)
            code, message = grpc.StatusCode.OK, ""
        except ServingError as error:
            code, message = error.code, error.message
        except tf.errors.OpError as error:
            code, message = _status_code(error.error_code), error.message
        except Exception as error:  # a bug here must answer INTERNAL, not kill the worker
            traceback.print_exc()
            code, message = grpc.StatusCode.INTERNAL, f"{type(error).__name__}: {error}"
        if code != grpc.StatusCode.OK:
            if len(message) > MAX_ERROR_MESSAGE:
                message = message[:MAX_ERROR_MESSAGE] + "...TRUNCATED"
            context.set_code(code)
            context.set_details(message)
            response = empty
        version = "-" if trace.version is None else trace.version
        _log(f"method={method} model={trace.model} version={version} status={code.name}")
        return response

    def Predict(  # gRPC method names are CamelCase
        self, request: predict_pb2.PredictRequest, context: grpc.ServicerContext
    ) -> Message:
        """PredictionService/Predict."""

        def handle(trace: _Trace) -> Message:
            trace.model = request.model_spec.name or "-"
            self._inject_faults(context)
            if not request.HasField("model_spec"):
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")
            servable = self._manager.resolve(request.model_spec)
            trace.version = servable.version
            return run_predict(servable, request, _timeout_ms(context))

        return self._answer("Predict", context, predict_pb2.PredictResponse(), handle)

    def GetModelMetadata(  # gRPC method names are CamelCase
        self, request: get_model_metadata_pb2.GetModelMetadataRequest, context: grpc.ServicerContext
    ) -> Message:
        """PredictionService/GetModelMetadata, as get_model_metadata_impl.cc answers it."""

        def handle(trace: _Trace) -> Message:
            trace.model = request.model_spec.name or "-"
            if not request.HasField("model_spec"):
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")
            if not request.metadata_field:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "GetModelMetadataRequest must specify at least one metadata_field",
                )
            for name in request.metadata_field:
                if name != SIGNATURE_DEF_FIELD:
                    raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"Metadata field {name} is not supported")
            servable = self._manager.resolve(request.model_spec)
            trace.version = servable.version
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = servable.name
            response.model_spec.version.value = servable.version
            signatures = get_model_metadata_pb2.SignatureDefMap()
            for key, signature in servable.meta_graph.signature_def.items():
                signatures.signature_def[key].CopyFrom(signature)
            response.metadata[SIGNATURE_DEF_FIELD].Pack(signatures)
            return response

        return self._answer("GetModelMetadata", context, get_model_metadata_pb2.GetModelMetadataResponse(), handle)

    def GetModelStatus(  # gRPC method names are CamelCase
        self, request: get_model_status_pb2.GetModelStatusRequest, context: grpc.ServicerContext
    ) -> Message:
        """ModelService/GetModelStatus, as get_model_status_impl.cc answers it."""

        def handle(trace: _Trace) -> Message:
            trace.model = request.model_spec.name or "-"
            if not request.HasField("model_spec"):
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")
            if request.model_spec.HasField("version"):
                trace.version = request.model_spec.version.value
            return self._manager.status(request.model_spec)

        return self._answer("GetModelStatus", context, get_model_status_pb2.GetModelStatusResponse(), handle)

    def _inject_faults(self, context: grpc.ServicerContext) -> None:
        if self._faults.delay_ms:
            timeout_ms = _timeout_ms(context)
            started = time.monotonic()
            finished = threading.Event()
            # Wake early when the client cancels or its deadline passes, so workers are not held.
            if context.add_callback(finished.set):
                finished.wait(self._faults.delay_ms / 1000)
            if not context.is_active():
                waited_ms = (time.monotonic() - started) * 1000
                expired = timeout_ms is not None and waited_ms >= timeout_ms
                raise ServingError(
                    grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED,
                    "the call ended during --delay_ms",
                )
        if self._faults.fail_with is not None:
            raise ServingError(self._faults.fail_with, f"injected failure (--fail_with {self._faults.fail_with.name})")


def _timeout_ms(context: grpc.ServicerContext) -> int | None:
    # TF Serving turns the call's deadline into RunOptions.timeout_in_ms.
    remaining = context.time_remaining()
    if remaining is None or remaining > 10**8:
        return None
    return max(int(remaining * 1000), 1)


def build_server(
    manager: ModelManager, faults: FaultOptions, host: str, port: int, max_threads: int
) -> tuple[grpc.Server, int]:
    """A started gRPC server with both services; returns it and the bound port."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="fake_tfserving"),
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE_LENGTH),
            ("grpc.max_receive_message_length", MAX_MESSAGE_LENGTH),
            # Without this a second server on a taken port starts anyway and shares its traffic.
            ("grpc.so_reuseport", 0),
        ],
    )
    services = _Services(manager, faults)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(services, server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(services, server)
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as error:
        raise ConfigError(f"cannot listen on {host}:{port}: {error}") from error
    if bound == 0:
        raise ConfigError(f"cannot listen on {host}:{port}")
    server.start()
    return server, bound


# ----------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes"):
        return True
    if lowered in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _parse_status_code(text: str) -> grpc.StatusCode:
    for code in grpc.StatusCode:
        if text.upper() == code.name or text == str(code.value[0]):
            if code == grpc.StatusCode.OK:
                break
            return code
    raise argparse.ArgumentTypeError(f"expected a gRPC status code other than OK, e.g. UNAVAILABLE; got {text!r}")


def _parse_prefix(text: str) -> tuple[str, str]:
    source, separator, target = text.partition("=")
    if not separator or not source or not target:
        raise argparse.ArgumentTypeError(f"expected FROM=TO, got {text!r}")
    return source.rstrip("/"), target.rstrip("/")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (flag names follow tensorflow_model_server's where one exists)."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.fake_tfserving",
        description="TensorFlow Serving stand-in for tests: gRPC Predict/GetModelMetadata/GetModelStatus.",
    )
    parser.add_argument("--port", type=int, default=8500, help="gRPC port; 0 picks a free one (default 8500)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--model_name", action="append", default=[], help="model name; pairs with --model_base_path")
    parser.add_argument("--model_base_path", action="append", default=[], help="directory holding version dirs")
    parser.add_argument("--model_config_file", help="ModelServerConfig in protobuf text format")
    parser.add_argument(
        "--base_path_prefix_map",
        action="append",
        default=[],
        type=_parse_prefix,
        metavar="FROM=TO",
        help="rewrite base paths starting with FROM to start with TO (e.g. /models=/tmp/models)",
    )
    parser.add_argument(
        "--allow_version_labels_for_unavailable_models",
        type=_parse_bool,
        nargs="?",
        const=True,
        default=False,
        metavar="BOOL",
        help="as in TF Serving: without it, a config with version_labels fails at startup",
    )
    parser.add_argument(
        "--file_system_poll_wait_seconds",
        type=float,
        default=1.0,
        help="seconds between base path scans; 0 scans once, negative never after startup (default 1)",
    )
    parser.add_argument("--grpc_max_threads", type=int, default=8, help="request worker threads (default 8)")
    parser.add_argument("--delay_ms", type=int, default=0, help="test only: sleep this long before each Predict")
    parser.add_argument(
        "--fail_with", type=_parse_status_code, help="test only: answer every Predict with this gRPC status"
    )
    parser.add_argument("--grace_seconds", type=float, default=5.0, help="time in-flight calls get at shutdown")
    parser.add_argument(
        "--enable_batching",
        type=_parse_bool,
        nargs="?",
        const=True,
        default=False,
        metavar="BOOL",
        help="apply the checks TF Serving's batching session makes of every run (it merges no requests)",
    )
    options = parser.parse_args(argv)
    if len(options.model_name) != len(options.model_base_path):
        parser.error("--model_name and --model_base_path must be given in pairs")
    if bool(options.model_name) == bool(options.model_config_file):
        parser.error("give either --model_name/--model_base_path pairs or --model_config_file")
    return options


def _rewrite(path: str, prefixes: Sequence[tuple[str, str]]) -> str:
    for source, target in prefixes:
        if path == source or path.startswith(source + "/"):
            return target + path[len(source) :]
    return path


def model_configs(options: argparse.Namespace) -> list[model_server_config_pb2.ModelConfig]:
    """The ModelConfigs to serve, base paths rewritten; ConfigError where TF Serving would not start."""
    configs: list[model_server_config_pb2.ModelConfig] = []
    if options.model_config_file:
        try:
            text = Path(options.model_config_file).read_text()
            server_config = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
        except (OSError, text_format.ParseError) as error:
            raise ConfigError(f"cannot read --model_config_file: {error}") from error
        if server_config.WhichOneof("config") != "model_config_list":
            raise ConfigError("the model config file must hold a model_config_list")
        configs = list(server_config.model_config_list.config)
    else:
        for name, base_path in zip(options.model_name, options.model_base_path, strict=True):
            configs.append(
                model_server_config_pb2.ModelConfig(name=name, base_path=base_path, model_platform="tensorflow")
            )
    seen: set[str] = set()
    for config in configs:
        if config.name in seen:
            raise ConfigError(f"INVALID_ARGUMENT: Illegal to list model {config.name} multiple times in config list")
        seen.add(config.name)
        if config.model_platform not in ("", "tensorflow"):
            raise ConfigError(
                f"FAILED_PRECONDITION: PlatformConfigMap has no entry for platform {config.model_platform}"
            )
        config.base_path = os.path.abspath(_rewrite(config.base_path, options.base_path_prefix_map))
        if config.version_labels and not options.allow_version_labels_for_unavailable_models:
            # ServerCore assigns labels before any version has loaded, so this always fails at startup.
            version = min(config.version_labels.values())
            raise ConfigError(
                f"FAILED_PRECONDITION: Request to assign label to version {version} of model {config.name}, "
                "which is not currently available for inference"
            )
    return configs


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until SIGTERM or SIGINT; returns the exit code."""
    options = parse_args(argv)
    BATCHING.enabled = options.enable_batching
    tf.get_logger().setLevel("ERROR")
    stop = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        manager = ModelManager(model_configs(options))
    except ConfigError as error:
        _log(f"Failed to start server. Error: {error}")
        return 1

    # Like TF Serving, open the port only once every model has an available version.
    interval = options.file_system_poll_wait_seconds if options.file_system_poll_wait_seconds > 0 else 1.0
    manager.poll()
    while not manager.all_available():
        failed = manager.failed_models()
        if failed:
            described = "".join(f"{entry}, " for entry in failed)
            _log(
                "Failed to start server. Error: UNKNOWN: "
                f"{len(failed)} model(s) did not become available: {{{described}}}"
            )
            return 1
        if stop.wait(interval):
            return 0
        manager.poll()

    faults = FaultOptions(options.delay_ms, options.fail_with)
    try:
        server, port = build_server(manager, faults, options.host, options.port, options.grpc_max_threads)
    except ConfigError as error:
        _log(f"Failed to start server. Error: {error}")
        return 1
    _log(f"Running gRPC ModelServer at {options.host}:{port} for models {', '.join(manager.model_names)}")
    print(f"{READY_PREFIX}{port}", flush=True)

    if options.file_system_poll_wait_seconds > 0:
        threading.Thread(target=_poll_forever, args=(manager, stop, interval), daemon=True).start()
    # A short wait keeps the main thread responsive to the signal handlers.
    while not stop.wait(0.1):
        pass
    server.stop(options.grace_seconds).wait()
    _log("Server stopped")
    return 0


def _poll_forever(manager: ModelManager, stop: threading.Event, interval: float) -> None:
    while not stop.wait(interval):
        try:
            manager.poll()
        except Exception:  # a bad scan must not end polling; TF Serving logs and retries
            traceback.print_exc()


# ----------------------------------------------------------------------------------------------------------
# Fixture helper
# ----------------------------------------------------------------------------------------------------------

if __name__ == "__main__":
    exit_code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: unwinding TensorFlow takes most of a second and every fixture pays it.
    os._exit(exit_code)
