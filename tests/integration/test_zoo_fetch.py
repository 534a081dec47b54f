"""``python -m converter fetch NAME DIR``: a TF1 zoo model by name from a local mirror, checked and put in place.

The mirror is a local HTTP server holding tarballs shaped like the zoo's (top directory, frozen graph, pipeline
config), the graph being the demo detector; the CLI runs as a subprocess, since its exit codes, one-line messages
and untouched directories are the point.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from converter import default_model, person
from converter.default_model import COCO_LABEL_MAP, Placed, place_default
from converter.zoo import MARKER, MODELS

NAME = "ssdlite_mobilenet_v2_coco"
MODEL = MODELS[NAME]
PIPELINE_CONFIG = b"model { ssd { num_classes: 90 } }\n"


@dataclass(frozen=True)
class Mirror:
    """The local mirror: its address, the test tarball's graph and digest, and the paths it was asked for."""

    base_url: str
    root: Path
    graph: bytes
    digest: str
    requests: list[str]

    def url(self, folder: str = "good") -> str:
        """The address of one of the mirror's folders (``good``, ``nograph``), with its trailing slash."""
        return f"{self.base_url}{folder}/"


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        self.server.requests.append(self.path)  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:
        pass


def write_tarball(path: Path, members: dict[str, bytes]) -> str:
    """Write a gzipped tarball holding ``members`` (path -> bytes) under the zoo model's top directory; its SHA-256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as archive:
        top = tarfile.TarInfo(MODEL.top)
        top.type = tarfile.DIRTYPE
        archive.addfile(top)
        for name, data in members.items():
            info = tarfile.TarInfo(f"{MODEL.top}/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mirror]:
    """A local HTTP mirror: ``good/`` holds a zoo-shaped tarball, ``nograph/`` one without the frozen graph."""
    from demo_model.exports import tf1_frozen_graph
    from odapi.contract import InputType

    root = tmp_path_factory.mktemp("mirror")
    graph = tf1_frozen_graph(InputType.IMAGE_TENSOR)
    digest = write_tarball(
        root / "good" / MODEL.tarball, {"frozen_inference_graph.pb": graph, "pipeline.config": PIPELINE_CONFIG}
    )
    write_tarball(root / "nograph" / MODEL.tarball, {"pipeline.config": PIPELINE_CONFIG})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, directory=str(root)))
    server.requests = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/"
        yield Mirror(base, root, graph, digest, server.requests)  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def fetch(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m converter fetch`` in a fresh process, with no ``MODEL_ZOO_URL`` unless ``env`` sets one."""
    environment = {key: value for key, value in os.environ.items() if key != "MODEL_ZOO_URL"}
    return subprocess.run(
        [sys.executable, "-m", "converter", "fetch", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**environment, **(env or {})},
    )


def snapshot(directory: Path) -> dict[str, bytes] | None:
    """Every file under ``directory`` with its content (None when it does not exist), to prove it unchanged."""
    if not directory.exists():
        return None
    return {str(path.relative_to(directory)): path.read_bytes() for path in sorted(directory.rglob("*"))}


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    """The failure's one line on stderr."""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("converter: error: ")
    return lines[0]


def test_fetch_writes_the_graph_and_the_coco_label_map_ready_to_convert(mirror: Mirror, tmp_path: Path) -> None:
    """A fetch from the mirror writes the tarball's graph byte for byte and the COCO label map, which then convert."""
    model_dir = tmp_path / "model"
    done = fetch(NAME, model_dir, "--base-url", mirror.url(), "--sha256", mirror.digest)
    assert done.returncode == 0, done.stderr
    assert done.stderr == f"converter: {model_dir}: wrote {NAME}\n"
    assert (model_dir / "frozen_inference_graph.pb").read_bytes() == mirror.graph
    assert (model_dir / "label_map.pbtxt").read_bytes() == COCO_LABEL_MAP.read_bytes()
    assert sorted(path.name for path in model_dir.iterdir()) == [MARKER, "frozen_inference_graph.pb", "label_map.pbtxt"]
    assert not [path for path in tmp_path.iterdir() if path.name != "model"]  # no staging left beside it
    assert f"/good/{MODEL.tarball}" in mirror.requests

    converted = subprocess.run(
        [sys.executable, "-m", "converter", str(model_dir), str(tmp_path / "base")],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert converted.returncode == 0, converted.stderr
    assert converted.stdout.strip() == str(tmp_path / "base" / "1")
    assert (tmp_path / "base" / "1" / "saved_model.pb").is_file()
    assert "no label map" not in converted.stderr


def test_the_pinned_digest_refuses_the_test_tarball_and_leaves_dir_unchanged(mirror: Mirror, tmp_path: Path) -> None:
    """Without --sha256 the pinned digest refuses the mirror's tarball: exit 4, both digests named, DIR untouched."""
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "README.md").write_text("the user's own notes\n")
    before = snapshot(model_dir)
    done = fetch(NAME, model_dir, "--base-url", mirror.url())
    assert done.returncode == 4
    line = one_line(done)
    assert mirror.digest in line
    assert MODEL.sha256 in line
    assert snapshot(model_dir) == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model"]


def test_a_404_names_the_url_and_leaves_dir_unchanged(mirror: Mirror, tmp_path: Path) -> None:
    """A tarball the mirror does not have is one line naming its URL and the HTTP status; DIR is not created."""
    model_dir = tmp_path / "model"
    missing = MODELS["ssd_mobilenet_v1_coco"]
    done = fetch(missing.name, model_dir, "--base-url", mirror.url())
    assert done.returncode == 4
    line = one_line(done)
    assert f"{mirror.url()}{missing.tarball}" in line
    assert "404" in line
    assert snapshot(model_dir) is None
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_name_lists_the_known_ones(tmp_path: Path) -> None:
    """An unknown NAME is one line naming it and every known model; nothing is written."""
    done = fetch("yolo_v9000", tmp_path / "model")
    assert done.returncode == 4
    line = one_line(done)
    assert "'yolo_v9000'" in line
    assert all(name in line for name in MODELS)
    assert list(tmp_path.iterdir()) == []


def test_a_tarball_without_the_frozen_graph_is_one_line(mirror: Mirror, tmp_path: Path) -> None:
    """A tarball holding no <top>/frozen_inference_graph.pb is one line saying so; DIR is not created."""
    tarball = mirror.root / "nograph" / MODEL.tarball
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    done = fetch(NAME, tmp_path / "model", "--base-url", mirror.url("nograph"), "--sha256", digest)
    assert done.returncode == 4
    line = one_line(done)
    assert MODEL.tarball in line
    assert "frozen_inference_graph.pb" in line
    assert list(tmp_path.iterdir()) == []


def bad_tarball(path: Path, kind: str) -> None:
    """A tarball whose graph member escapes its directory or is a link, or a file that is no tarball at all."""
    path.parent.mkdir(parents=True)
    if kind == "not-a-tarball":
        path.write_bytes(b"<html>a captive portal</html>")
        return
    with tarfile.open(path, "w:gz") as archive:
        if kind == "escaping":
            info = tarfile.TarInfo("../frozen_inference_graph.pb")
            info.size = 5
            archive.addfile(info, io.BytesIO(b"graph"))
        else:
            link = tarfile.TarInfo(f"{MODEL.top}/frozen_inference_graph.pb")
            link.type = tarfile.SYMTYPE
            link.linkname = "/etc/passwd"
            archive.addfile(link)


@pytest.mark.parametrize(
    ("kind", "said"),
    [("escaping", "refusing member '../"), ("link", "refusing member"), ("not-a-tarball", "not a tar archive")],
)
def test_a_tarball_to_refuse_is_one_line(kind: str, said: str, tmp_path: Path) -> None:
    """A graph member that climbs out of the archive or is a link, or no tarball at all, is refused in one line."""
    tarball = tmp_path / "mirror" / MODEL.tarball
    bad_tarball(tarball, kind)
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    done = fetch(NAME, tmp_path / "model", "--base-url", tarball.parent.as_uri(), "--sha256", digest)
    assert done.returncode == 4
    assert said in one_line(done)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["mirror"]


def test_model_zoo_url_is_honoured_and_base_url_wins(mirror: Mirror, tmp_path: Path) -> None:
    """MODEL_ZOO_URL names the mirror when --base-url is not given; --base-url wins over it."""
    done = fetch(NAME, tmp_path / "a", "--sha256", mirror.digest, env={"MODEL_ZOO_URL": mirror.url()})
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "a" / "frozen_inference_graph.pb").read_bytes() == mirror.graph

    elsewhere = {"MODEL_ZOO_URL": mirror.url("nowhere")}
    done = fetch(NAME, tmp_path / "b", "--sha256", mirror.digest, "--base-url", mirror.url(), env=elsewhere)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "b" / "frozen_inference_graph.pb").read_bytes() == mirror.graph


def test_a_file_url_mirror_works(mirror: Mirror, tmp_path: Path) -> None:
    """A file:// base address is read through urllib like an http one."""
    done = fetch(NAME, tmp_path / "model", "--base-url", (mirror.root / "good").as_uri(), "--sha256", mirror.digest)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "model" / "frozen_inference_graph.pb").read_bytes() == mirror.graph


def test_a_dir_holding_a_model_is_refused_unless_forced(mirror: Mirror, tmp_path: Path) -> None:
    """A model of the user's own is left alone (exit 5, one line, nothing downloaded); --force replaces it."""
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "frozen_inference_graph.pb").write_bytes(b"the user's own graph")
    (model_dir / "label_map.pbtxt").write_text('item { id: 1 name: "cat" }\n')
    before = snapshot(model_dir)
    asked = len(mirror.requests)
    done = fetch(NAME, model_dir, "--base-url", mirror.url(), "--sha256", mirror.digest)
    assert done.returncode == 5
    assert "--force" in one_line(done)
    assert snapshot(model_dir) == before
    assert len(mirror.requests) == asked

    done = fetch(NAME, model_dir, "--base-url", mirror.url(), "--sha256", mirror.digest, "--force")
    assert done.returncode == 0, done.stderr
    assert done.stderr == f"converter: {model_dir}: replaced the model there with {NAME}\n"
    assert (model_dir / "frozen_inference_graph.pb").read_bytes() == mirror.graph
    assert (model_dir / "label_map.pbtxt").read_bytes() == COCO_LABEL_MAP.read_bytes()


def test_the_same_model_again_is_left_in_place_without_a_download(mirror: Mirror, tmp_path: Path) -> None:
    """Fetching the model DIR already got from fetch is a no-op; another zoo model there needs --force."""
    model_dir = tmp_path / "model"
    assert fetch(NAME, model_dir, "--base-url", mirror.url(), "--sha256", mirror.digest).returncode == 0
    before = snapshot(model_dir)
    asked = len(mirror.requests)
    done = fetch(NAME, model_dir, "--base-url", mirror.url(), "--sha256", mirror.digest)
    assert done.returncode == 0, done.stderr
    assert done.stderr == f"converter: {model_dir}: already holds {NAME}\n"
    assert snapshot(model_dir) == before
    assert len(mirror.requests) == asked

    done = fetch("ssd_mobilenet_v2_coco", model_dir, "--base-url", mirror.url())
    assert done.returncode == 5
    assert f"{NAME}, fetched earlier" in one_line(done)
    assert snapshot(model_dir) == before


def test_the_default_detector_make_run_placed_is_replaced(mirror: Mirror, tmp_path: Path) -> None:
    """The default detector (unchanged, by its marker) is replaced without --force, and make run then keeps ours."""
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    files = {
        "frozen_inference_graph.pb": b"the default graph",
        "label_map.pbtxt": person.LABEL_MAP_TEXT.encode(),
    }
    for name, data in files.items():
        (model_dir / name).write_bytes(data)
    digests = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    (model_dir / default_model.MARKER).write_text(json.dumps({"files": digests}))
    done = fetch(NAME, model_dir, "--base-url", mirror.url(), "--sha256", mirror.digest)
    assert done.returncode == 0, done.stderr
    assert done.stderr == f"converter: {model_dir}: replaced the default detector with {NAME}\n"
    assert (model_dir / "frozen_inference_graph.pb").read_bytes() == mirror.graph
    assert not (model_dir / default_model.MARKER).exists()
    assert place_default(model_dir).outcome is Placed.USER_MODEL  # make run's default step leaves the zoo model alone


def test_an_unwritable_dir_is_one_line(mirror: Mirror, tmp_path: Path) -> None:
    """A DIR that cannot be made (its parent is a file) or is a file is one line naming it; nothing changes."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory\n")
    for model_dir in (blocker / "model", blocker):
        done = fetch(NAME, model_dir, "--base-url", mirror.url(), "--sha256", mirror.digest)
        assert done.returncode == 4
        assert str(model_dir) in one_line(done)
    assert blocker.read_text() == "not a directory\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["file"]


def test_fetch_imports_no_tensorflow(mirror: Mirror, tmp_path: Path) -> None:
    """The whole fetch path, run as the CLI runs it, never imports TensorFlow."""
    code = (
        "import sys\nfrom converter.__main__ import main\n"
        f"rc = main(['fetch', {NAME!r}, {str(tmp_path / 'model')!r}, '--base-url', {mirror.url()!r}, "
        f"'--sha256', {mirror.digest!r}])\n"
        "print(rc, 'tensorflow' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.stdout == "0 False\n", done.stderr
    assert (tmp_path / "model" / "frozen_inference_graph.pb").read_bytes() == mirror.graph
