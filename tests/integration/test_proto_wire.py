"""The proxy's own TF Serving protos on a live gRPC channel against the official ones, and their isolation from
TensorFlow in fresh interpreters. The messages are the ones tests/unit/test_proto_contract.py compares byte by byte."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from tensorflow_serving.apis import model_service_pb2_grpc as tf_model_service_pb2_grpc
from tensorflow_serving.apis import prediction_service_pb2_grpc as tf_prediction_service_pb2_grpc

from proxy._proto.tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc
from tests.unit.test_proto_contract import (
    OFFICIAL,
    OURS,
    metadata_request,
    metadata_response,
    predict_request_content,
    predict_response,
    status_request,
    status_response,
)

REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------------------------------------
# Live gRPC in both directions: the stubs' method paths and the messages on a real channel.


class _OurPrediction(prediction_service_pb2_grpc.PredictionServiceServicer):
    def Predict(self, request: Any, context: grpc.ServicerContext) -> Any:
        assert request == predict_request_content(OURS)
        return predict_response(OURS)

    def GetModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:
        assert request == metadata_request(OURS)
        return metadata_response(OURS)


class _OurModels(model_service_pb2_grpc.ModelServiceServicer):
    def GetModelStatus(self, request: Any, context: grpc.ServicerContext) -> Any:
        assert request == status_request(OURS)
        return status_response(OURS)


class _OfficialPrediction(tf_prediction_service_pb2_grpc.PredictionServiceServicer):
    def Predict(self, request: Any, context: grpc.ServicerContext) -> Any:
        assert request == predict_request_content(OFFICIAL)
        return predict_response(OFFICIAL)

    def GetModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:
        assert request == metadata_request(OFFICIAL)
        return metadata_response(OFFICIAL)


class _OfficialModels(tf_model_service_pb2_grpc.ModelServiceServicer):
    def GetModelStatus(self, request: Any, context: grpc.ServicerContext) -> Any:
        assert request == status_request(OFFICIAL)
        return status_response(OFFICIAL)


def _serve(prediction: Any, models: Any, side: str) -> tuple[grpc.Server, int]:
    """Start a gRPC server on a free local port with one side's servicers registered."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    if side == "ours":
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(prediction, server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(models, server)
    else:
        tf_prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(prediction, server)
        tf_model_service_pb2_grpc.add_ModelServiceServicer_to_server(models, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


@pytest.fixture(params=["official-server", "project-server"])
def channel_pair(request: pytest.FixtureRequest) -> Iterator[tuple[grpc.Channel, str]]:
    """A ready channel to a live server of one side; yields it with the client side that must be used."""
    if request.param == "official-server":
        server, port = _serve(_OfficialPrediction(), _OfficialModels(), "official")
        client = "ours"
    else:
        server, port = _serve(_OurPrediction(), _OurModels(), "ours")
        client = "official"
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        grpc.channel_ready_future(channel).result(timeout=10)
        yield channel, client
    finally:
        channel.close()
        server.stop(grace=None).wait()


def test_stubs_talk_to_a_server_built_from_the_other_side(channel_pair: tuple[grpc.Channel, str]) -> None:
    """The project's stubs call an official-protos server, and official stubs call a project-protos server."""
    channel, client = channel_pair
    if client == "ours":
        api = OURS
        prediction = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        models = model_service_pb2_grpc.ModelServiceStub(channel)
    else:
        api = OFFICIAL
        prediction = tf_prediction_service_pb2_grpc.PredictionServiceStub(channel)
        models = tf_model_service_pb2_grpc.ModelServiceStub(channel)
    assert prediction.Predict(predict_request_content(api), timeout=10) == predict_response(api)
    assert prediction.GetModelMetadata(metadata_request(api), timeout=10) == metadata_response(api)
    assert models.GetModelStatus(status_request(api), timeout=10) == status_response(api)


def test_importing_project_modules_does_not_import_tensorflow() -> None:
    """A fresh interpreter importing every proxy._proto module and proxy.tensors loads no TensorFlow."""
    modules = sorted(
        "proxy._proto." + ".".join(p.relative_to(REPO / "proxy" / "_proto").with_suffix("").parts)
        for p in (REPO / "proxy" / "_proto").rglob("*_pb2*.py")
    )
    code = (
        "import importlib, sys\n"
        f"for name in {[*modules, 'proxy.tensors']!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tensorflow_serving')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert len(modules) >= 15


def test_official_modules_still_load_after_ours_under_pure_python_protobuf() -> None:
    """On pure-Python protobuf, importing the project's modules first leaves TensorFlow loadable."""
    code = (
        "from google.protobuf.internal import api_implementation\n"
        "from proxy._proto.tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2\n"
        "from tensorflow_serving.apis import get_model_metadata_pb2 as official\n"
        "assert official.SignatureDefMap.DESCRIPTOR.file.pool is not get_model_metadata_pb2.DESCRIPTOR.pool\n"
        "print(api_implementation.Type())\n"
    )
    env = {**os.environ, "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python", "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "python"


def test_the_process_launchers_import_no_tensorflow() -> None:
    """harness (the tests' and the benchmark's launchers) imports no TensorFlow: the stand-in runs in its process."""
    code = (
        "import sys, harness.processes, harness.tfserving\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tensorflow_serving')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )
    assert (done.returncode, done.stdout.strip()) == (0, "[]"), done.stderr
