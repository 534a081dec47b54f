"""The fake TF Serving answers like TensorFlow Serving, over real gRPC with the official client stubs."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
)

from harness.tfserving import RunningServer, ServerStartError, start_server

OUTPUTS = {"detection_boxes", "detection_scores", "detection_classes", "num_detections", "pixel_sum"}
# Clients must raise gRPC's 4 MB default themselves; the server already accepts the maximum.
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]
State = get_model_status_pb2.ModelVersionStatus.State
CONFIG = """
model_config_list {
  config {
    name: "detector"
    base_path: "/models/detector"
    model_platform: "tensorflow"
    model_version_policy { all {} }
    version_labels { key: "stable" value: 1 }
    version_labels { key: "canary" value: 2 }
  }
  config { name: "latest_only" base_path: "/models/latest_only" model_platform: "tensorflow" }
  config { name: "polled" base_path: "/models/polled" model_platform: "tensorflow" }
  config { name: "fallback" base_path: "/models/fallback" model_platform: "tensorflow" }
  config { name: "probe" base_path: "/models/probe" model_platform: "tensorflow" }
}
"""


class Detector(tf.Module):
    """A detection-shaped model whose scores reveal the version: mean pixel / 255 * version / 10."""

    def __init__(self, version: int) -> None:
        super().__init__()
        self.version = tf.Variable(float(version))

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="inputs")])
    def serve(self, inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        """Detection outputs for a batch of uint8 images."""
        batch = tf.shape(inputs)[0]
        mean = tf.reduce_mean(tf.cast(inputs, tf.float32), axis=[1, 2, 3]) / 255.0
        scores = tf.stack([mean, mean / 2], axis=1) * self.version / 10.0
        return {
            "detection_boxes": tf.tile(tf.constant([[[0.1, 0.2, 0.5, 0.6]]]), [batch, 2, 1]),
            "detection_scores": scores,
            "detection_classes": tf.tile(tf.constant([[1.0, 2.0]]), [batch, 1]),
            "num_detections": tf.fill([batch], 2.0),
            "pixel_sum": tf.reduce_sum(tf.cast(inputs, tf.int64), axis=[1, 2, 3]),
        }


def image(value: int = 51, shape: tuple[int, ...] = (1, 4, 4, 3)) -> np.ndarray:
    """A uint8 batch filled with one value."""
    return np.full(shape, value, dtype=np.uint8)


def expected_scores(value: int, version: int) -> list[float]:
    """The Detector's scores for an image filled with `value`."""
    top = value / 255 * version / 10
    return [top, top / 2]


def predict_request(model: str = "detector", inputs: Any = None, **spec: Any) -> predict_pb2.PredictRequest:
    """A PredictRequest for `model` with one `inputs` image unless `inputs` says otherwise."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    for key, value in spec.items():
        if key == "version":
            request.model_spec.version.value = value
        else:
            setattr(request.model_spec, key, value)
    for key, value in ({"inputs": image()} if inputs is None else inputs).items():
        proto = value if isinstance(value, tensor_pb2.TensorProto) else tf.make_tensor_proto(value)
        request.inputs[key].CopyFrom(proto)
    return request


def uint8_proto(values: list[int], shape: tuple[int, ...] = (1, 2, 2, 3)) -> tensor_pb2.TensorProto:
    """A uint8 TensorProto carrying `values` in the typed int_val field."""
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_UINT8, int_val=values)
    for size in shape:
        proto.tensor_shape.dim.add(size=size)
    return proto


def overfill_input(request: predict_pb2.PredictRequest) -> None:
    """Give `inputs` 13 values for a 12-element shape, which Tensor::FromProto rejects."""
    request.inputs["inputs"].CopyFrom(uint8_proto(list(range(13))))


def save_detector(directory: Path, version: int, warmup: bool = False) -> None:
    """Export a Detector SavedModel, optionally with a one-record warmup file."""
    module = Detector(version)
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.serve})
    if warmup:
        log = prediction_log_pb2.PredictionLog()
        log.predict_log.request.CopyFrom(predict_request())
        (directory / "assets.extra").mkdir()
        with tf.io.TFRecordWriter(str(directory / "assets.extra" / "tf_serving_warmup_requests")) as writer:
            writer.write(log.SerializeToString())


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll `condition` until it holds, failing after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """Detector exports for versions 1 (with warmup) and 2."""
    root = tmp_path_factory.mktemp("exports")
    save_detector(root / "1", 1, warmup=True)
    save_detector(root / "2", 2)
    return {1: root / "1", 2: root / "2"}


@pytest.fixture(scope="module")
def models_root(exports: dict[int, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory standing in for the container's /models, with three models' version directories."""
    root = tmp_path_factory.mktemp("served")
    for model, versions in {
        "detector": [1, 2],
        "latest_only": [1, 2],
        "polled": [1],
        "fallback": [1],
    }.items():
        for version in versions:
            shutil.copytree(exports[version], root / "models" / model / str(version))
    _save_batching_probe(root / "models" / "probe" / "1")
    return root


@pytest.fixture(scope="module")
def server(models_root: Path) -> Iterator[RunningServer]:
    """The fake server on a free port, configured by a model config file whose /models prefix is remapped."""
    config = models_root / "models.config"
    config.write_text(CONFIG)
    args = [
        "--port=0",
        f"--model_config_file={config}",
        f"--base_path_prefix_map=/models={models_root}/models",
        "--allow_version_labels_for_unavailable_models=true",
        # As compose runs TF Serving: every run must then satisfy the batching session's rules.
        "--enable_batching",
    ]
    with start_server(args) as running:
        assert running.alive()
        yield running


@pytest.fixture(scope="module")
def channel(server: RunningServer) -> Iterator[grpc.Channel]:
    """A client channel to the module's server."""
    with grpc.insecure_channel(server.address, options=CHANNEL_OPTIONS) as opened:
        yield opened


@pytest.fixture(scope="module")
def prediction(channel: grpc.Channel) -> prediction_service_pb2_grpc.PredictionServiceStub:
    """The official PredictionService stub."""
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def models(channel: grpc.Channel) -> model_service_pb2_grpc.ModelServiceStub:
    """The official ModelService stub."""
    return model_service_pb2_grpc.ModelServiceStub(channel)


def status_request(model: str, version: int | None = None) -> get_model_status_pb2.GetModelStatusRequest:
    """A GetModelStatusRequest for all versions of `model`, or one."""
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = model
    if version is not None:
        request.model_spec.version.value = version
    return request


def metadata_request(model: str = "detector", **spec: Any) -> get_model_metadata_pb2.GetModelMetadataRequest:
    """A GetModelMetadataRequest for the signature_def field."""
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = model
    for key, value in spec.items():
        setattr(request.model_spec, key, value)
    return request


def versions_and_states(response: get_model_status_pb2.GetModelStatusResponse) -> list[tuple[int, int]]:
    """(version, state) pairs in response order."""
    return [(entry.version, entry.state) for entry in response.model_version_status]


def test_predict_encodes_outputs_in_typed_fields_with_empty_tensor_content(
    prediction: prediction_service_pb2_grpc.PredictionServiceStub,
) -> None:
    """Predict puts each output in its typed field (float_val, int64_val) with dtype and shape, no content."""
    response = prediction.Predict(predict_request(), timeout=10)

    assert set(response.outputs) == OUTPUTS
    for output in response.outputs.values():
        assert output.tensor_content == b""
    scores = response.outputs["detection_scores"]
    assert scores.dtype == types_pb2.DT_FLOAT
    assert [dim.size for dim in scores.tensor_shape.dim] == [1, 2]
    assert list(scores.float_val) == pytest.approx(expected_scores(51, version=2))
    boxes = response.outputs["detection_boxes"]
    assert [dim.size for dim in boxes.tensor_shape.dim] == [1, 2, 4]
    assert list(boxes.float_val) == pytest.approx([0.1, 0.2, 0.5, 0.6] * 2)
    assert list(response.outputs["num_detections"].float_val) == [2.0]
    pixel_sum = response.outputs["pixel_sum"]
    assert pixel_sum.dtype == types_pb2.DT_INT64
    assert list(pixel_sum.int64_val) == [51 * 4 * 4 * 3]
    assert tf.make_ndarray(scores).shape == (1, 2)


def test_predict_response_model_spec_names_model_served_version_and_default_signature(
    prediction: prediction_service_pb2_grpc.PredictionServiceStub,
) -> None:
    """An empty signature_name means serving_default, and the response's model_spec says what ran."""
    response = prediction.Predict(predict_request(), timeout=10)

    assert response.model_spec.name == "detector"
    assert response.model_spec.version.value == 2
    assert response.model_spec.signature_name == "serving_default"


def test_predict_decodes_typed_field_inputs_repeating_the_last_value(
    prediction: prediction_service_pb2_grpc.PredictionServiceStub,
) -> None:
    """An input sent in int_val with fewer values than its shape holds repeats the last value."""
    response = prediction.Predict(predict_request(inputs={"inputs": uint8_proto([10])}), timeout=10)

    assert list(response.outputs["pixel_sum"].int64_val) == [10 * 12]


@pytest.mark.parametrize(
    ("spec", "version"),
    [({}, 2), ({"version": 1}, 1), ({"version": 2}, 2), ({"version_label": "stable"}, 1)],
    ids=["latest", "version-1", "version-2", "label-stable"],
)
def test_predict_serves_the_version_the_model_spec_selects(
    prediction: prediction_service_pb2_grpc.PredictionServiceStub, spec: dict[str, Any], version: int
) -> None:
    """Latest, a version number and a version label each run that version's model."""
    response = prediction.Predict(predict_request(**spec), timeout=10)

    assert response.model_spec.version.value == version
    assert list(response.outputs["detection_scores"].float_val) == pytest.approx(expected_scores(51, version))


def test_predict_output_filter_returns_only_the_named_outputs(
    prediction: prediction_service_pb2_grpc.PredictionServiceStub,
) -> None:
    """A non-empty output_filter limits the response to those output aliases."""
    request = predict_request()
    request.output_filter.extend(["detection_scores", "num_detections"])

    response = prediction.Predict(request, timeout=10)

    assert set(response.outputs) == {"detection_scores", "num_detections"}


PREDICT_ERRORS = [
    ("unknown-model", {"model": "nope"}, "NOT_FOUND", "Servable not found for request: Latest(nope)"),
    ("unknown-version", {"version": 7}, "NOT_FOUND", "Servable not found for request: Specific(detector, 7)"),
    (
        "unknown-label",
        {"version_label": "nope"},
        "INVALID_ARGUMENT",
        "Unrecognized servable version label: nope",
    ),
    ("no-name", {"model": ""}, "INVALID_ARGUMENT", "ModelSpec has no name specified."),
    (
        "unknown-signature",
        {"signature_name": "nope"},
        "FAILED_PRECONDITION",
        'Serving signature key "nope" not found.',
    ),
    (
        "init-op-signature",
        {"signature_name": "__saved_model_init_op"},
        "INTERNAL",
        "Expected prediction signature method_name to be one of {tensorflow/serving/predict, "
        "tensorflow/serving/classify, tensorflow/serving/regress}. Was: ",
    ),
    (
        "extra-input",
        {"inputs": {"inputs": image(), "extra": image()}},
        "INVALID_ARGUMENT",
        "input size does not match signature: 2!=1 len({extra,inputs}) != len({inputs}). "
        "Sent extra: {extra}. Missing but required: {}.",
    ),
    (
        "missing-input",
        {"inputs": {}},
        "INVALID_ARGUMENT",
        "input size does not match signature: 0!=1 len({}) != len({inputs}). "
        "Sent extra: {}. Missing but required: {inputs}.",
    ),
    (
        "wrong-input-key",
        {"inputs": {"images": image()}},
        "INVALID_ARGUMENT",
        "Signature input alias: inputs(feed name: serving_default_inputs:0) not found in request and no "
        "default value provided. Inputs expected to be in the request {images}, or default input alias set: ",
    ),
    (
        "wrong-dtype",
        {"inputs": {"inputs": image().astype(np.float32)}},
        "INVALID_ARGUMENT",
        "Expects arg[0] to be uint8 but float is provided",
    ),
]


@pytest.mark.parametrize(
    ("spec", "code", "message"), [e[1:] for e in PREDICT_ERRORS], ids=[e[0] for e in PREDICT_ERRORS]
)
def test_predict_errors_carry_tf_servings_code_and_message(
    prediction: prediction_service_pb2_grpc.PredictionServiceStub,
    spec: dict[str, Any],
    code: str,
    message: str,
) -> None:
    """Each invalid Predict gets TF Serving's status code and exact message."""
    with pytest.raises(grpc.RpcError) as raised:
        prediction.Predict(predict_request(**spec), timeout=10)

    assert raised.value.code().name == code
    assert raised.value.details() == message


def test_predict_without_model_spec_is_invalid(
    prediction: prediction_service_pb2_grpc.PredictionServiceStub,
) -> None:
    """A PredictRequest without model_spec is INVALID_ARGUMENT "Missing ModelSpec"."""
    request = predict_pb2.PredictRequest()
    request.inputs["inputs"].CopyFrom(tf.make_tensor_proto(image()))

    with pytest.raises(grpc.RpcError) as raised:
        prediction.Predict(request, timeout=10)

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details() == "Missing ModelSpec"


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda r: r.output_filter.append("nope"),
            "output tensor alias not found in signature: nope Outputs expected to be in the set "
            "{detection_boxes,detection_classes,detection_scores,num_detections,pixel_sum}.",
        ),
        (
            lambda r: r.output_filter.extend(["detection_scores", "detection_scores"]),
            "duplicate output tensor alias: detection_scores",
        ),
        (overfill_input, "tensor parsing error: inputs"),
    ],
    ids=["unknown-output", "duplicate-output", "unparsable-tensor"],
)
def test_predict_rejects_bad_output_filters_and_tensors(
    prediction: prediction_service_pb2_grpc.PredictionServiceStub,
    build: Callable[[predict_pb2.PredictRequest], None],
    message: str,
) -> None:
    """Unknown or repeated output aliases and unparsable tensors are INVALID_ARGUMENT, TF Serving's text."""
    request = predict_request()
    build(request)

    with pytest.raises(grpc.RpcError) as raised:
        prediction.Predict(request, timeout=10)

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details() == message


def test_predict_shape_errors_come_from_the_tensorflow_runtime(
    prediction: prediction_service_pb2_grpc.PredictionServiceStub,
) -> None:
    """An image without a batch dimension fails inside the graph with INVALID_ARGUMENT, as in TF Serving."""
    with pytest.raises(grpc.RpcError) as raised:
        prediction.Predict(predict_request(inputs={"inputs": image(shape=(4, 4, 3))}), timeout=10)

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Invalid reduction dimension" in raised.value.details()


def test_predict_accepts_requests_over_grpcs_default_4mb_limit(
    prediction: prediction_service_pb2_grpc.PredictionServiceStub,
) -> None:
    """The server takes a 4.3 MB image once the client channel allows it."""
    big = image(value=255, shape=(1, 1200, 1200, 3))

    response = prediction.Predict(predict_request(inputs={"inputs": big}), timeout=30)

    assert list(response.outputs["pixel_sum"].int64_val) == [255 * big.size]


def test_predict_serves_concurrent_requests_correctly(
    prediction: prediction_service_pb2_grpc.PredictionServiceStub,
) -> None:
    """Sixteen concurrent Predicts each get the scores of their own image."""
    values = list(range(10, 170, 10))

    def call(value: int) -> list[float]:
        response = prediction.Predict(predict_request(inputs={"inputs": image(value)}), timeout=30)
        return list(response.outputs["detection_scores"].float_val)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(call, values))

    for value, scores in zip(values, results, strict=True):
        assert scores == pytest.approx(expected_scores(value, version=2))


def test_latest_policy_loads_only_the_newest_version(
    prediction: prediction_service_pb2_grpc.PredictionServiceStub,
    models: model_service_pb2_grpc.ModelServiceStub,
) -> None:
    """Under the default policy only the highest version loads; asking for an older one is NOT_FOUND."""
    status = models.GetModelStatus(status_request("latest_only"), timeout=10)

    assert versions_and_states(status) == [(2, State.AVAILABLE)]
    with pytest.raises(grpc.RpcError) as raised:
        prediction.Predict(predict_request("latest_only", version=1), timeout=10)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert raised.value.details() == "Servable not found for request: Specific(latest_only, 1)"


def test_metadata_packs_the_savedmodels_signature_defs(
    prediction: prediction_service_pb2_grpc.PredictionServiceStub, models_root: Path
) -> None:
    """GetModelMetadata packs the served version's own signature_defs into a SignatureDefMap."""
    response = prediction.GetModelMetadata(metadata_request(), timeout=10)

    assert response.model_spec.name == "detector"
    assert response.model_spec.version.value == 2
    assert response.model_spec.signature_name == ""
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signatures)
    saved_model = saved_model_pb2.SavedModel.FromString(
        (models_root / "models" / "detector" / "2" / "saved_model.pb").read_bytes()
    )
    assert dict(signatures.signature_def) == dict(saved_model.meta_graphs[0].signature_def)
    serving = signatures.signature_def["serving_default"]
    assert serving.inputs["inputs"].dtype == types_pb2.DT_UINT8
    assert [dim.size for dim in serving.inputs["inputs"].tensor_shape.dim] == [-1, -1, -1, 3]
    assert set(serving.outputs) == OUTPUTS


def test_metadata_follows_version_labels(
    prediction: prediction_service_pb2_grpc.PredictionServiceStub,
) -> None:
    """GetModelMetadata for a version label answers for the labelled version."""
    response = prediction.GetModelMetadata(metadata_request(version_label="stable"), timeout=10)

    assert response.model_spec.version.value == 1


@pytest.mark.parametrize(
    ("request_", "code", "message"),
    [
        (
            get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"]),
            "INVALID_ARGUMENT",
            "Missing ModelSpec",
        ),
        (
            get_model_metadata_pb2.GetModelMetadataRequest(model_spec={"name": "detector"}),
            "INVALID_ARGUMENT",
            "GetModelMetadataRequest must specify at least one metadata_field",
        ),
        (
            get_model_metadata_pb2.GetModelMetadataRequest(model_spec={"name": "detector"}, metadata_field=["nope"]),
            "INVALID_ARGUMENT",
            "Metadata field nope is not supported",
        ),
        (metadata_request("nope"), "NOT_FOUND", "Servable not found for request: Latest(nope)"),
    ],
    ids=["no-model-spec", "no-metadata-field", "unsupported-field", "unknown-model"],
)
def test_metadata_errors_carry_tf_servings_code_and_message(
    prediction: prediction_service_pb2_grpc.PredictionServiceStub,
    request_: get_model_metadata_pb2.GetModelMetadataRequest,
    code: str,
    message: str,
) -> None:
    """Each invalid GetModelMetadata gets TF Serving's status code and exact message."""
    with pytest.raises(grpc.RpcError) as raised:
        prediction.GetModelMetadata(request_, timeout=10)

    assert raised.value.code().name == code
    assert raised.value.details() == message


def test_status_lists_every_version_newest_first_with_ok_status(
    models: model_service_pb2_grpc.ModelServiceStub,
) -> None:
    """GetModelStatus lists each loaded version as AVAILABLE with an OK status, newest first."""
    response = models.GetModelStatus(status_request("detector"), timeout=10)

    assert versions_and_states(response) == [(2, State.AVAILABLE), (1, State.AVAILABLE)]
    for entry in response.model_version_status:
        assert entry.HasField("status")
        assert entry.status.error_code == 0
        assert entry.status.error_message == ""
    one = models.GetModelStatus(status_request("detector", version=1), timeout=10)
    assert versions_and_states(one) == [(1, State.AVAILABLE)]


@pytest.mark.parametrize(
    ("request_", "code", "message"),
    [
        (status_request("nope"), "NOT_FOUND", "Could not find any versions of model nope"),
        (status_request("detector", version=7), "NOT_FOUND", "Could not find version 7 of model detector"),
        (get_model_status_pb2.GetModelStatusRequest(), "INVALID_ARGUMENT", "Missing ModelSpec"),
    ],
    ids=["unknown-model", "unknown-version", "no-model-spec"],
)
def test_status_errors_carry_tf_servings_code_and_message(
    models: model_service_pb2_grpc.ModelServiceStub,
    request_: get_model_status_pb2.GetModelStatusRequest,
    code: str,
    message: str,
) -> None:
    """Each invalid GetModelStatus gets TF Serving's status code and exact message."""
    with pytest.raises(grpc.RpcError) as raised:
        models.GetModelStatus(request_, timeout=10)

    assert raised.value.code().name == code
    assert raised.value.details() == message


def test_classify_is_unimplemented(prediction: prediction_service_pb2_grpc.PredictionServiceStub) -> None:
    """RPCs the stand-in does not copy answer UNIMPLEMENTED rather than something made up."""
    with pytest.raises(grpc.RpcError) as raised:
        prediction.Classify(classification_pb2.ClassificationRequest(), timeout=10)

    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_new_version_directory_is_picked_up_by_polling(
    prediction: prediction_service_pb2_grpc.PredictionServiceStub,
    models: model_service_pb2_grpc.ModelServiceStub,
    models_root: Path,
    exports: dict[int, Path],
) -> None:
    """A version directory that appears later is loaded by a poll and served as latest; the old unloads."""
    base = models_root / "models" / "polled"
    # Copy under a non-numeric name, then rename, so the poll never sees a half-written version.
    shutil.copytree(exports[2], base / "incoming")
    (base / "incoming").rename(base / "3")

    def has_version_3() -> bool:
        status = models.GetModelStatus(status_request("polled"), timeout=10)
        return (3, State.AVAILABLE) in versions_and_states(status)

    wait_until(has_version_3)
    response = prediction.Predict(predict_request("polled"), timeout=10)
    assert response.model_spec.version.value == 3

    # The old version is unloaded only after the new one is available (availability-preserving policy).
    def polled_versions() -> list[tuple[int, int]]:
        return versions_and_states(models.GetModelStatus(status_request("polled"), timeout=10))

    wait_until(lambda: polled_versions() == [(3, State.AVAILABLE), (1, State.END)])


def test_a_version_that_fails_to_load_leaves_the_previous_one_serving(
    prediction: prediction_service_pb2_grpc.PredictionServiceStub,
    models: model_service_pb2_grpc.ModelServiceStub,
    models_root: Path,
) -> None:
    """A broken new version ends in END with its error while the older version keeps serving."""
    base = models_root / "models" / "fallback"
    (base / "incoming").mkdir()
    (base / "incoming" / "saved_model.pb").write_bytes(b"not a SavedModel")
    (base / "incoming").rename(base / "2")

    def broken_version() -> get_model_status_pb2.ModelVersionStatus | None:
        status = models.GetModelStatus(status_request("fallback"), timeout=10)
        entries = [e for e in status.model_version_status if e.version == 2 and e.state == State.END]
        return entries[0] if entries else None

    wait_until(lambda: broken_version() is not None)
    entry = broken_version()
    assert entry is not None
    assert entry.status.error_code != 0
    assert entry.status.error_message
    response = prediction.Predict(predict_request("fallback"), timeout=10)
    assert response.model_spec.version.value == 1


def test_warmup_records_are_replayed_when_a_version_loads(server: RunningServer) -> None:
    """A version's assets.extra/tf_serving_warmup_requests runs through Predict at load time."""
    assert "Successfully loaded servable version {name: detector version: 1} after 1 warmup records" in (
        server.log_text()
    )


def test_each_request_is_logged_on_one_line(
    server: RunningServer, prediction: prediction_service_pb2_grpc.PredictionServiceStub
) -> None:
    """Every answered request adds one stderr line naming method, model, version and status."""
    before = server.request_count("Predict", model="latest_only")

    for _ in range(3):
        prediction.Predict(predict_request("latest_only"), timeout=10)

    assert server.request_count("Predict", model="latest_only") == before + 3
    assert re.search(r"^fake_tfserving: method=Predict model=latest_only version=2 status=OK$", server.log_text(), re.M)


@pytest.fixture(scope="module")
def faulty_server(models_root: Path) -> Iterator[RunningServer]:
    """A server started with name/base-path flags that delays every Predict, then fails it."""
    args = [
        "--port",
        "0",
        "--model_name",
        "detector",
        "--model_base_path",
        str(models_root / "models" / "latest_only"),
        "--delay_ms",
        "500",
        "--fail_with",
        "UNAVAILABLE",
    ]
    with start_server(args) as running:
        yield running


def test_delay_lets_the_client_deadline_expire_without_harming_the_server(
    faulty_server: RunningServer,
) -> None:
    """A --delay_ms past the client's deadline gives the client DEADLINE_EXCEEDED; the server lives on."""
    with grpc.insecure_channel(faulty_server.address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            stub.Predict(predict_request(), timeout=0.1)
        status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(status_request("detector"), timeout=10)

    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert versions_and_states(status) == [(2, State.AVAILABLE)]
    assert faulty_server.alive()


def test_fail_with_answers_every_predict_with_that_status(faulty_server: RunningServer) -> None:
    """With --fail_with UNAVAILABLE every Predict fails with UNAVAILABLE while status still answers."""
    with grpc.insecure_channel(faulty_server.address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            stub.Predict(predict_request(), timeout=10)

    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert raised.value.details() == "injected failure (--fail_with UNAVAILABLE)"


def test_version_labels_fail_startup_without_the_allow_flag(models_root: Path, tmp_path: Path) -> None:
    """As in TF Serving, version_labels stop startup unless labels may name not-yet-loaded versions."""
    config = tmp_path / "labels.config"
    config.write_text(CONFIG)

    with pytest.raises(ServerStartError) as raised:
        start_server(
            [
                "--port=0",
                f"--model_config_file={config}",
                f"--base_path_prefix_map=/models={models_root}/models",
            ]
        )

    assert (
        "Failed to start server. Error: FAILED_PRECONDITION: Request to assign label to version 1 of model "
        "detector, which is not currently available for inference"
    ) in str(raised.value)


def test_sigterm_stops_the_server_gracefully(models_root: Path) -> None:
    """SIGTERM ends the server with exit code 0 after it stops serving."""
    running = start_server(
        ["--port=0", "--model_name=detector", f"--model_base_path={models_root / 'models' / 'latest_only'}"]
    )
    try:
        assert running.port > 0
        assert running.alive()

        code = running.stop()

        assert code == 0
        assert "Server stopped" in running.log_text()
    finally:
        running.close()


def _save_batching_probe(directory: Path) -> None:
    """A TF1 SavedModel with a zero-input signature, a scalar-output one, and a batch-shaped one."""
    graph = tf.Graph()
    with graph.as_default():
        request = tf.compat.v1.placeholder(tf.string, shape=[None], name="request")
        constant = tf.constant("label map text")
        signature = tf.compat.v1.saved_model.signature_def_utils.predict_signature_def
        no_inputs = meta_graph_pb2.SignatureDef(method_name="tensorflow/serving/predict")
        no_inputs.outputs["text"].CopyFrom(tf.compat.v1.saved_model.utils.build_tensor_info(constant))
        signatures = {
            "no_inputs": no_inputs,
            "scalar_output": signature(inputs={"request": request}, outputs={"text": constant}),
            "batched": signature(inputs={"request": request}, outputs={"text": tf.strings.join([constant, request])}),
        }
        with tf.compat.v1.Session(graph=graph) as session:
            builder = tf.compat.v1.saved_model.Builder(str(directory))
            builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map=signatures)
            builder.save()


def test_batching_applies_tf_servings_batch_rules(
    prediction: prediction_service_pb2_grpc.PredictionServiceStub,
) -> None:
    """With --enable_batching, a run without inputs or with a scalar output fails as TF Serving's batching session
    makes it fail, and a signature whose outputs share the inputs' batch runs."""
    expected = {
        "no_inputs": (grpc.StatusCode.INVALID_ARGUMENT, "Batching Run() must have at least one input tensor"),
        "scalar_output": (grpc.StatusCode.FAILED_PRECONDITION, "Batched output tensor has 0 dimensions"),
        "batched": (grpc.StatusCode.OK, ""),
    }
    for name, (code, message) in expected.items():
        request = predict_pb2.PredictRequest()
        request.model_spec.name, request.model_spec.signature_name = "probe", name
        if name != "no_inputs":
            request.inputs["request"].CopyFrom(tf.make_tensor_proto(np.array([b""], dtype=object)))
        try:
            prediction.Predict(request, timeout=20)
            got = (grpc.StatusCode.OK, "")
        except grpc.RpcError as error:
            got = (error.code(), error.details())
        assert got == (code, message), name
