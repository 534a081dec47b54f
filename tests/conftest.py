"""Shared fixtures: the demo model, its converted SavedModel, and a real proxy process serving it."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.processes import HttpServer, proxy_server, quiet_tf_env

for _key, _value in quiet_tf_env().items():
    os.environ.setdefault(_key, _value)

OUTPUT_DIR = Path(__file__).resolve().parents[1] / "test-output"


@pytest.fixture(scope="session")
def demo_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the demo detector's frozen graph, label map and sample picture."""
    from demo_model.__main__ import main

    directory = tmp_path_factory.mktemp("static")
    assert main([str(directory)]) == 0
    return directory


@pytest.fixture(scope="session")
def model_base(demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """TF Serving's base path holding version 1 of the converted demo detector."""
    from converter import convert

    base = tmp_path_factory.mktemp("models") / "detector"
    result = convert(demo_model_dir / "frozen_inference_graph.pb", base, warmup=True)
    assert result.version == 1
    return base


@pytest.fixture(scope="session")
def embedded_proxy(demo_model_dir: Path, model_base: Path) -> Iterator[HttpServer]:
    """``python -m proxy`` under gunicorn, running the converted demo model in-process."""
    server = proxy_server({"MODEL_DIR": str(demo_model_dir), "MODEL_BASE_PATH": str(model_base)})
    with server:
        yield server


@pytest.fixture(scope="session")
def serving(model_base: Path) -> Iterator[Any]:
    """A TF Serving stand-in (real gRPC, official messages) serving the converted demo model as ``detector``."""
    from tests.support.fake_tfserving import start_server

    with start_server(["--port", "0", "--model_name", "detector", "--model_base_path", str(model_base)]) as server:
        yield server


@pytest.fixture(scope="session")
def grpc_proxy(serving: Any, demo_model_dir: Path) -> Iterator[HttpServer]:
    """The proxy in serving mode, two gunicorn workers, pointed at the stand-in."""
    env = {"SERVING_ADDRESS": serving.address, "MODEL_DIR": str(demo_model_dir), "WEB_CONCURRENCY": "2"}
    with proxy_server(env) as server:
        yield server


@pytest.fixture(params=["embedded", "serving"])
def any_proxy(request: pytest.FixtureRequest) -> HttpServer:
    """The proxy in each mode: embedded TensorFlow, and TF Serving over gRPC."""
    fixture = "embedded_proxy" if request.param == "embedded" else "grpc_proxy"
    server: HttpServer = request.getfixturevalue(fixture)
    return server


API_KEY = "s3cret-key"


@pytest.fixture(scope="session")
def keyed_proxy(demo_model_dir: Path, model_base: Path) -> Iterator[HttpServer]:
    """The proxy with API_KEY set to ``API_KEY``."""
    env = {"MODEL_DIR": str(demo_model_dir), "MODEL_BASE_PATH": str(model_base), "API_KEY": API_KEY}
    with proxy_server(env) as server:
        yield server


@pytest.fixture(scope="session")
def run_frozen_graph(demo_model_dir: Path) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """Run the frozen graph directly with a TF1 session, as the seed service did: image → raw outputs."""
    import tensorflow as tf

    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString((demo_model_dir / "frozen_inference_graph.pb").read_bytes())
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(graph_def, name="")
    session = tf.compat.v1.Session(graph=graph)
    names = ["detection_boxes", "detection_scores", "detection_classes", "num_detections"]

    def run(image: np.ndarray) -> dict[str, np.ndarray]:
        values = session.run([f"{name}:0" for name in names], {"image_tensor:0": image[np.newaxis]})
        return dict(zip(names, values, strict=True))

    return run


@pytest.fixture(scope="session")
def output_dir() -> Path:
    """A directory for artefacts worth keeping after a run (screenshots, logs)."""
    OUTPUT_DIR.mkdir(exist_ok=True)
    return OUTPUT_DIR
