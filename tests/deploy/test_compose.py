"""docker-compose.yml and its GPU override docker-compose.gpu.yml.

No Docker engine here: both files and their merge are validated against the Compose Specification schema, the
contracts between services are read from the files, and the commands they run (the converter's arguments, the
health checks) run for real against local stand-ins.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from tensorflow_serving.config import model_server_config_pb2

from odapi.layout import LABEL_MAP, versions
from proxy.settings import Settings
from tests.deploy.deployfiles import (
    COMPOSE_FILE,
    COMPOSE_GPU_FILE,
    DEFAULT_MODEL_DIR,
    REPO,
    SERVING_CONFIG,
    Manifests,
    StubServer,
    compose_merge,
    compose_mounts,
    dockerfile_stages,
    flags,
    model_status,
    parse_text,
    project_version,
    run_bash_check,
    tool,
)

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
SHELLS = {"sh", "/bin/sh", "bash", "/bin/bash", "-c"}


def _serving_check_script(compose: dict[str, Any]) -> str:
    test = compose["services"]["serving"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "bash", "-c"]
    script: str = test[3]
    return script


def _check_jsonschema(*paths: Path) -> None:
    result = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- the specification -----------------------------------------------------------------------------------


def test_compose_files_and_their_merge_match_the_compose_specification(
    compose: dict[str, Any], compose_gpu: dict[str, Any], tmp_path: Path
) -> None:
    """docker-compose.yml, the GPU override, and the two merged as `-f ... -f ...` merges them, all validate."""
    merged = tmp_path / "merged.yml"
    merged.write_text(yaml.safe_dump(compose_merge(compose, compose_gpu)), encoding="utf-8")
    _check_jsonschema(COMPOSE_FILE, COMPOSE_GPU_FILE, merged)
    assert "version" not in compose and "version" not in compose_gpu


# --- services --------------------------------------------------------------------------------------------


def test_serving_service_can_scale(compose: dict[str, Any]) -> None:
    """The serving service has no container_name and publishes no ports, so `--scale serving=3` works."""
    serving = compose["services"]["serving"]
    assert "container_name" not in serving
    assert "ports" not in serving


@pytest.mark.parametrize("service", ["proxy", "converter"])
def test_services_build_the_root_dockerfile_targets(compose: dict[str, Any], service: str) -> None:
    """The proxy and converter build the root Dockerfile's target of their name, tagged with the project version."""
    spec = compose["services"][service]
    assert spec["build"] == {"context": ".", "target": service}
    assert service in dockerfile_stages()
    assert spec["image"] == f"classify-objects/{service}:{project_version()}"


def test_serving_image_tag_is_pinned(compose: dict[str, Any], k8s: Manifests) -> None:
    """Compose and Kubernetes run the same pinned tensorflow/serving release, never `latest`."""
    image = compose["services"]["serving"]["image"]
    assert re.fullmatch(r"tensorflow/serving:\d+\.\d+\.\d+", image)
    assert {c["image"] for c in k8s.pod("serving")["containers"]} == {image}


def test_services_start_in_order(compose: dict[str, Any]) -> None:
    """serving waits for the converter to finish successfully and the proxy waits for a healthy serving."""
    services = compose["services"]
    assert services["serving"]["depends_on"] == {"converter": {"condition": "service_completed_successfully"}}
    assert services["proxy"]["depends_on"] == {"serving": {"condition": "service_healthy"}}
    assert services["converter"]["restart"] == "no"
    assert services["proxy"]["restart"] == "unless-stopped"


def test_serving_flags_are_known_and_point_at_mounted_config_files(compose: dict[str, Any]) -> None:
    """Every serving flag is a real TF Serving flag, and each *_file flag names a file of serving_config/."""
    serving = compose["services"]["serving"]
    found = flags(serving["command"])
    assert set(found) <= TF_SERVING_FLAGS, set(found) - TF_SERVING_FLAGS
    assert found["enable_batching"] == "true"
    assert (found["port"], found["rest_api_port"]) == ("8500", "8501")
    assert int(found["file_system_poll_wait_seconds"]) >= 1
    mounts = compose_mounts(serving)
    file_flags = {"model_config_file", "batching_parameters_file", "monitoring_config_file"}
    assert file_flags <= set(found)
    for name in file_flags:
        mount_dir, file_name = found[name].rsplit("/", 1)
        assert mounts[mount_dir] == ("./serving_config", True), f"--{name} is not in the read-only config mount"
        assert (SERVING_CONFIG / file_name).is_file(), f"--{name} names a missing file"


def test_serving_reads_models_where_the_converter_writes_them(compose: dict[str, Any]) -> None:
    """The converter writes the base path models.config serves, in the `models` volume serving mounts read-only."""
    config = parse_text(SERVING_CONFIG / "models.config", model_server_config_pb2.ModelServerConfig)
    base_path = config.model_config_list.config[0].base_path
    services = compose["services"]
    assert services["converter"]["command"][1] == base_path
    assert compose_mounts(services["serving"])["/models"] == ("models", True)
    assert compose_mounts(services["converter"])["/models"] == ("models", False)
    assert "models" in compose["volumes"]


def test_converter_runs_the_converter_without_a_shell(compose: dict[str, Any]) -> None:
    """The converter service passes the image's `python -m converter` entrypoint arguments, with no shell."""
    from converter.__main__ import build_parser

    converter = compose["services"]["converter"]
    assert "entrypoint" not in converter
    command = converter["command"]
    assert isinstance(command, list) and all(isinstance(arg, str) for arg in command)
    assert not SHELLS & set(command) and not any("$" in arg or "\n" in arg for arg in command)
    args = build_parser().parse_args(command)
    assert (args.input, args.output_base) == (Path("/input"), Path("/models/detector"))
    assert args.if_changed and args.warmup
    assert args.default == Path(DEFAULT_MODEL_DIR)
    assert args.label_map is None and args.input_type is None
    assert compose_mounts(converter)["/input"] == ("./static", True)


def test_converter_command_converts_the_default_model_once(
    compose: dict[str, Any], stand_in_default_model: Path, tmp_path: Path
) -> None:
    """Compose's converter arguments, run for real, convert the default model with its label map, then no-op."""
    # The container's paths, mapped onto this machine.
    places = {"/input": tmp_path / "input", "/models": tmp_path / "models", DEFAULT_MODEL_DIR: stand_in_default_model}
    places["/input"].mkdir()

    def local(arg: str) -> str:
        for container, here in sorted(places.items(), key=lambda item: -len(item[0])):
            if arg == container or arg.startswith(container + "/"):
                return str(here) + arg[len(container) :]
        return arg

    command = [sys.executable, "-m", "converter", *map(local, compose["services"]["converter"]["command"])]
    base = tmp_path / "models" / "detector"

    def run() -> str:
        result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    assert run() == str(base / "1")
    assert versions(base) == [1]
    assert (base / "1" / LABEL_MAP).read_text() == (stand_in_default_model / "label_map.pbtxt").read_text()
    assert run() == str(base / "1")
    assert versions(base) == [1]


@pytest.mark.parametrize("source", ["compose", "k8s"])
def test_proxy_needs_no_label_map_file(source: str, compose: dict[str, Any], k8s: Manifests) -> None:
    """The proxy's environment is valid settings naming no label map, and it mounts nothing but scratch space."""
    if source == "compose":
        proxy = compose["services"]["proxy"]
        env = {name: str(value) for name, value in proxy["environment"].items()}
        assert "volumes" not in proxy
    else:
        container = k8s.container("proxy", "proxy")
        env = {e["name"]: e["value"] for e in container["env"]}
        assert [m["mountPath"] for m in container["volumeMounts"]] == ["/tmp"]
        assert [v for v in k8s.pod("proxy")["volumes"] if "emptyDir" not in v] == []
    assert not {"LABEL_MAP", "MODEL_DIR", "MODELS"} & set(env)
    settings = Settings.from_env(env)
    assert not settings.embedded
    assert settings.label_map is None and settings.models == ()


def test_proxy_talks_to_every_serving_replica(compose: dict[str, Any]) -> None:
    """The proxy reaches TF Serving through dns:///serving:8500, the name that resolves to every replica."""
    env = compose["services"]["proxy"]["environment"]
    assert env["SERVING_ADDRESS"] == "dns:///serving:8500"
    assert env["MODEL_NAME"] == "detector"


def test_proxy_port_is_configurable_and_root_fs_read_only(compose: dict[str, Any]) -> None:
    """The proxy publishes ${PROXY_PORT:-8000} on container port 8000 and has a read-only root filesystem."""
    proxy = compose["services"]["proxy"]
    assert proxy["ports"] == ["${PROXY_PORT:-8000}:8000"]
    assert proxy["environment"]["PORT"] == "8000"
    assert proxy["read_only"] is True
    assert "/tmp" in proxy["tmpfs"]


def test_serving_healthcheck_requires_an_available_model(
    compose: dict[str, Any], stub_http: StubServer, unused_port: int
) -> None:
    """The serving healthcheck passes once /v1/models/detector says AVAILABLE; not while LOADING or down."""
    script = _serving_check_script(compose)
    available_port, paths = stub_http(200, model_status("AVAILABLE"))
    assert run_bash_check(script, available_port) == 0
    assert paths == ["/v1/models/detector"]
    loading_port, _ = stub_http(200, model_status("LOADING"))
    assert run_bash_check(script, loading_port) != 0
    missing_port, _ = stub_http(404, '{"error": "Could not find any versions of model detector"}')
    assert run_bash_check(script, missing_port) != 0
    assert run_bash_check(script, unused_port) != 0


# --- the GPU override ------------------------------------------------------------------------------------


def test_gpu_override_runs_the_gpu_build_of_the_same_release(
    compose: dict[str, Any], compose_gpu: dict[str, Any]
) -> None:
    """The GPU override changes only serving's image, to the -gpu tag of the base's release, and its devices."""
    assert set(compose_gpu) == {"services"}
    assert set(compose_gpu["services"]) == {"serving"}
    assert set(compose_gpu["services"]["serving"]) == {"image", "deploy"}
    merged = compose_merge(compose, compose_gpu)
    serving = merged["services"]["serving"]
    assert serving["image"] == compose["services"]["serving"]["image"] + "-gpu"
    # Everything else, the healthcheck and the flags included, is the base file's.
    unchanged = {k: v for k, v in compose["services"]["serving"].items() if k != "image"}
    assert {k: v for k, v in serving.items() if k not in {"image", "deploy"}} == unchanged
    assert {k: v for k, v in merged["services"].items() if k != "serving"} == {
        k: v for k, v in compose["services"].items() if k != "serving"
    }


def test_gpu_override_reserves_the_nvidia_gpus(compose_gpu: dict[str, Any]) -> None:
    """The GPU override reserves every NVIDIA GPU for serving through a `gpu` device reservation."""
    deploy = compose_gpu["services"]["serving"]["deploy"]
    assert deploy == {
        "resources": {"reservations": {"devices": [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]}}
    }
