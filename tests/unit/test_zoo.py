"""The zoo table, its addresses, which tar members are read, and the all-or-nothing move into the model directory."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from converter import zoo
from converter.default_model import COCO_LABEL_MAP
from converter.errors import FetchFailed
from converter.zoo import (
    DEFAULT_BASE_URL,
    MODELS,
    default_base_url,
    graph_member,
    is_safe_member,
    model_url,
    place_zoo_model,
    zoo_model,
)
from odapi.labels import read_label_map


def test_the_table_pins_each_tarball() -> None:
    """Every model names a dated .tar.gz whose top directory is its name, and pins a 64-digit SHA-256."""
    assert list(MODELS) == ["ssdlite_mobilenet_v2_coco", "ssd_mobilenet_v2_coco", "ssd_mobilenet_v1_coco"]
    for name, model in MODELS.items():
        assert model.name == name
        assert re.fullmatch(rf"{name}_20\d\d_\d\d_\d\d\.tar\.gz", model.tarball)
        assert model.top == model.tarball.removesuffix(".tar.gz")
        assert re.fullmatch(r"[0-9a-f]{64}", model.sha256)
    assert MODELS["ssdlite_mobilenet_v2_coco"].sha256.startswith("542445cc")


def test_model_url_joins_with_or_without_the_trailing_slash() -> None:
    """The tarball goes under the base address as a directory, for http and file URLs alike."""
    tarball = MODELS["ssd_mobilenet_v1_coco"].tarball
    expected = f"{DEFAULT_BASE_URL}{tarball}"
    assert model_url(DEFAULT_BASE_URL, tarball) == expected
    assert model_url(DEFAULT_BASE_URL.rstrip("/"), tarball) == expected
    assert model_url("http://mirror:8080/zoo/tf1", tarball) == f"http://mirror:8080/zoo/tf1/{tarball}"
    assert model_url("file:///srv/zoo/", tarball) == f"file:///srv/zoo/{tarball}"


def test_the_base_url_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """MODEL_ZOO_URL overrides the official address; unset or empty, the official one is used."""
    monkeypatch.delenv("MODEL_ZOO_URL", raising=False)
    assert default_base_url() == "http://download.tensorflow.org/models/object_detection/"
    monkeypatch.setenv("MODEL_ZOO_URL", "")
    assert default_base_url() == DEFAULT_BASE_URL
    monkeypatch.setenv("MODEL_ZOO_URL", "http://mirror/zoo/")
    assert default_base_url() == "http://mirror/zoo/"


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("ssdlite_mobilenet_v2_coco_2018_05_09/frozen_inference_graph.pb", True),
        ("./top/frozen_inference_graph.pb", True),
        ("top/saved_model/variables/variables.index", True),
        ("/etc/frozen_inference_graph.pb", False),
        ("../frozen_inference_graph.pb", False),
        ("top/../../frozen_inference_graph.pb", False),
        ("top\\..\\..\\frozen_inference_graph.pb", False),
        ("C:/top/frozen_inference_graph.pb", False),
        ("\\top\\frozen_inference_graph.pb", False),
        ("", False),
    ],
)
def test_member_paths_outside_the_archive_are_unsafe(name: str, safe: bool) -> None:
    """A member path that is absolute or climbs out with ``..`` is refused."""
    assert is_safe_member(name) is safe


def test_only_the_top_directorys_frozen_graph_is_the_graph_member() -> None:
    """The graph is ``<top>/frozen_inference_graph.pb``: not a deeper one, not a top-level one, not another file."""
    assert graph_member("ssd_mobilenet_v1_coco_2018_01_28/frozen_inference_graph.pb")
    assert graph_member("./top/frozen_inference_graph.pb")
    assert not graph_member("frozen_inference_graph.pb")
    assert not graph_member("top/saved_model/frozen_inference_graph.pb")
    assert not graph_member("top/frozen_inference_graph.pb.bak")
    assert not graph_member("/frozen_inference_graph.pb/x")


def test_an_unknown_name_lists_the_known_ones() -> None:
    """An unknown or empty name is one message naming every known model."""
    for name in ("nope", ""):
        with pytest.raises(FetchFailed) as raised:
            zoo_model(name)
        assert all(known in str(raised.value) for known in MODELS)
        assert raised.value.exit_code == 4
    assert zoo_model("ssd_mobilenet_v2_coco") is MODELS["ssd_mobilenet_v2_coco"]


def test_bad_settings_fail_before_anything_is_touched(tmp_path: Path) -> None:
    """A malformed --sha256 or a URL scheme urllib should not open is refused before any download or write."""
    with pytest.raises(FetchFailed, match="64 hexadecimal digits"):
        place_zoo_model("ssd_mobilenet_v1_coco", tmp_path / "model", sha256="abc")
    with pytest.raises(FetchFailed, match=r"http://, https:// or file://.*ftp://mirror/"):
        place_zoo_model("ssd_mobilenet_v1_coco", tmp_path / "model", base_url="ftp://mirror/")
    assert list(tmp_path.iterdir()) == []


def test_the_coco_label_map_is_the_real_one() -> None:
    """The label map fetch writes is COCO's: 80 classes, person first, toothbrush last."""
    _, names = read_label_map(COCO_LABEL_MAP)
    assert len(names) == 80
    assert names[1].lower() == "person"
    assert names[90].lower() == "toothbrush"


def test_a_failed_move_puts_the_directory_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When moving the staged files in fails half-way, the files it replaced are back and none of the new ones stay."""
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "frozen_inference_graph.pb").write_bytes(b"old graph")
    (model_dir / "notes.txt").write_bytes(b"notes")
    stage = tmp_path / ".model.fetch-x"
    stage.mkdir()
    for name in ("frozen_inference_graph.pb", "label_map.pbtxt"):
        (stage / name).write_bytes(b"new " + name.encode())
    real_replace = os.replace

    def replace(source: str | Path, target: str | Path) -> None:
        if Path(target) == model_dir / "label_map.pbtxt":
            raise OSError(28, "No space left on device")
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(FetchFailed, match=f"cannot write into {model_dir}: No space left on device$"):
        zoo._move_in(stage, model_dir, ["frozen_inference_graph.pb", "label_map.pbtxt"], obsolete=[])
    monkeypatch.undo()
    assert sorted(path.name for path in model_dir.iterdir()) == ["frozen_inference_graph.pb", "notes.txt"]
    assert (model_dir / "frozen_inference_graph.pb").read_bytes() == b"old graph"
    assert sorted(path.name for path in tmp_path.iterdir()) == [".model.fetch-x", "model"]  # no backup left


def test_a_failed_move_into_a_new_directory_removes_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A directory (and parents) the move created are removed again when it fails."""
    model_dir = tmp_path / "a" / "model"
    stage = tmp_path / ".stage"
    stage.mkdir()
    (stage / "frozen_inference_graph.pb").write_bytes(b"graph")

    def replace(source: str | Path, target: str | Path) -> None:
        raise OSError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(FetchFailed, match="Permission denied"):
        zoo._move_in(stage, model_dir, ["frozen_inference_graph.pb"], obsolete=[])
    monkeypatch.undo()
    assert sorted(path.name for path in tmp_path.iterdir()) == [".stage"]
