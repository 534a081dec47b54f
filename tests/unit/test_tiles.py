"""proxy/tiles.py against SAHI itself: the tiles of a frame, the merge of tiled detections, and the mapping back."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sahi.postprocess.backends import set_postprocess_backend
from sahi.postprocess.combine import GreedyNMMPostprocess
from sahi.prediction import ObjectPrediction
from sahi.slicing import get_slice_bboxes

from proxy.tiles import merge, tile_boxes, to_frame

Merged = tuple[np.ndarray, np.ndarray, np.ndarray]


def sahi_tiles(width: int, height: int, tile: int, overlap: float = 0.2) -> list[tuple[int, int, int, int]]:
    """SAHI's slices of the frame, as tuples."""
    slices = get_slice_bboxes(
        image_height=height,
        image_width=width,
        slice_height=tile,
        slice_width=tile,
        overlap_height_ratio=overlap,
        overlap_width_ratio=overlap,
    )
    return [(x_min, y_min, x_max, y_max) for x_min, y_min, x_max, y_max in slices]


def sahi_merge(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, width: int, height: int) -> Merged:
    """SAHI's default sliced-prediction postprocess of the same detections, back in proxy.tiles.merge's form."""
    set_postprocess_backend("numpy")  # what SAHI picks without numba or a GPU; pinned so that the oracle is fixed
    predictions = [
        ObjectPrediction(
            bbox=[xmin * width, ymin * height, xmax * width, ymax * height],
            category_id=int(class_id),
            category_name=f"class {int(class_id)}",
            score=float(score),
            full_shape=[height, width],
        )
        for (ymin, xmin, ymax, xmax), score, class_id in zip(
            np.asarray(boxes, dtype=np.float64).tolist(), scores, classes, strict=True
        )
    ]
    merged = GreedyNMMPostprocess(match_threshold=0.5, match_metric="IOS", class_agnostic=False)(predictions)
    out_boxes = np.array(
        [[p.bbox.miny / height, p.bbox.minx / width, p.bbox.maxy / height, p.bbox.maxx / width] for p in merged],
        dtype=np.float64,
    ).reshape(-1, 4)
    out_scores = np.array([p.score.value for p in merged], dtype=np.float64)
    out_classes = np.array([p.category.id for p in merged], dtype=np.int64)
    # SAHI lists classes in ascending order, each in the order its boxes were kept; merge sorts that list by score.
    order = np.argsort(-out_scores, kind="stable")
    return out_boxes[order], out_scores[order], out_classes[order]


def assert_same(ours: Merged, theirs: Merged) -> None:
    """The same detections: count, classes and scores exactly, boxes within 1e-6."""
    assert len(ours[0]) == len(theirs[0])
    np.testing.assert_array_equal(ours[2], theirs[2])
    np.testing.assert_array_equal(ours[1], theirs[1])
    np.testing.assert_allclose(ours[0], theirs[0], rtol=0, atol=1e-6)


def pixels(rows: list[tuple[float, float, float, float]], width: int, height: int) -> np.ndarray:
    """Pixel ``(x_min, y_min, x_max, y_max)`` boxes as normalized ``[ymin, xmin, ymax, xmax]`` rows."""
    return np.array([[y0 / height, x0 / width, y1 / height, x1 / width] for x0, y0, x1, y1 in rows], dtype=np.float64)


# --- tile_boxes -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("width", "height", "tile"),
    [
        (4000, 3000, 640),
        (1920, 1080, 640),
        (641, 640, 640),
        (640, 641, 640),
        (1280, 1280, 640),  # twice the tile is three tiles a side at a 512-pixel step, the last shifted back
        (2560, 1536, 512),  # a 410-pixel step: the last tile of a row ends at 2562, so it shifts back by 2
        (1152, 1152, 640),  # exactly two tiles a side at a 512-pixel step (640 + 512)
        (2176, 640, 640),  # exactly four tiles in one row (640 + 3 * 512)
        (300, 5000, 640),  # tall and narrower than the tile
        (5000, 300, 640),  # wide and lower than the tile
        (720, 12000, 300),  # very tall
        (12000, 720, 300),  # very wide
        (3000, 4000, 1024),
        (1001, 1001, 1000),
        (10, 10, 3),  # a tile so small that int(0.2 * 3) is no overlap at all
        (4096, 2160, 300),
    ],
)
def test_tile_boxes_match_sahi_table(width: int, height: int, tile: int) -> None:
    """For frames larger than the tile, tile_boxes gives SAHI's get_slice_bboxes slices, in its order."""
    assert tile_boxes(width, height, tile) == sahi_tiles(width, height, tile)


def test_tile_boxes_of_a_big_frame_cover_it_with_tiles_ending_at_its_edges() -> None:
    """A 4000x3000 frame at 640 gets 8 x 6 tiles of 640, 512 apart, the last row and column shifted to the edges."""
    boxes = tile_boxes(4000, 3000, 640)
    assert len(boxes) == 48
    assert boxes[:2] == [(0, 0, 640, 640), (512, 0, 1152, 640)]
    assert boxes[7] == (3360, 0, 4000, 640)
    assert boxes[-1] == (3360, 2360, 4000, 3000)
    assert {(x1 - x0, y1 - y0) for x0, y0, x1, y1 in boxes} == {(640, 640)}


@given(
    width=st.integers(1, 5000),
    height=st.integers(1, 5000),
    tile=st.integers(128, 1024),
    overlap=st.sampled_from([0.0, 0.1, 0.2, 0.25, 0.5, 0.75]),
)
@settings(max_examples=150, deadline=None)
def test_tile_boxes_match_sahi_sweep(width: int, height: int, tile: int, overlap: float) -> None:
    """For any frame larger than the tile and any overlap, tile_boxes gives SAHI's slices; otherwise none."""
    expected = [] if width <= tile and height <= tile else sahi_tiles(width, height, tile, overlap)
    assert tile_boxes(width, height, tile, overlap) == expected


@pytest.mark.parametrize(("width", "height", "tile"), [(640, 640, 640), (300, 300, 640), (640, 1, 640), (1, 1, 1)])
def test_tile_boxes_of_a_frame_no_larger_than_the_tile_are_none(width: int, height: int, tile: int) -> None:
    """A frame no larger than the tile on both sides gets no tiles, where SAHI's only slice is the frame itself."""
    assert tile_boxes(width, height, tile) == []
    assert sahi_tiles(width, height, tile) == [(0, 0, width, height)]


@pytest.mark.parametrize(("width", "height", "tile", "overlap"), [(0, 10, 5, 0.2), (10, 10, 0, 0.2), (20, 20, 5, 1.0)])
def test_tile_boxes_refuse_impossible_arguments(width: int, height: int, tile: int, overlap: float) -> None:
    """Empty frames, empty tiles and an overlap of a whole tile or more are refused rather than looped on."""
    with pytest.raises(ValueError, match="must be"):
        tile_boxes(width, height, tile, overlap)


# --- to_frame ---------------------------------------------------------------------------------------------------


def test_to_frame_maps_a_tiles_box_into_the_frame() -> None:
    """A box of the 640-tile at (512, 1024) of a 4000x3000 frame lands where the tile's pixels are in the frame."""
    tile_box = np.array([[0.25, 0.5, 0.75, 1.0]], dtype=np.float32)
    framed = to_frame(tile_box, (512, 1024, 1152, 1664), 4000, 3000)
    # ymin (1024 + 0.25 * 640) / 3000, xmin (512 + 0.5 * 640) / 4000, ymax (1024 + 480) / 3000, xmax 1152 / 4000.
    np.testing.assert_allclose(framed, [[1184 / 3000, 0.208, 1504 / 3000, 0.288]], rtol=0, atol=1e-12)


def test_to_frame_of_the_whole_frame_and_of_no_boxes() -> None:
    """The whole frame as the tile leaves boxes as they are, and no boxes map to a (0, 4) array."""
    boxes = np.array([[0.1, 0.2, 0.3, 0.4]])
    np.testing.assert_allclose(to_frame(boxes, (0, 0, 800, 600), 800, 600), boxes, rtol=0, atol=1e-15)
    assert to_frame(np.zeros((0, 4)), (10, 10, 20, 20), 100, 100).shape == (0, 4)


# --- merge, by hand ---------------------------------------------------------------------------------------------


def test_merge_joins_an_object_cut_by_a_tile_edge() -> None:
    """An object's halves seen by two neighbouring tiles become one box covering both, with the better score."""
    width = height = 1024
    left, right = tile_boxes(width, height, 512)[:2]  # (0, 0, 512, 512) and (410, 0, 922, 512)
    # The object spans x 400..600, y 100..200: the left tile sees x 400..512, the right one x 410..600.
    seen_left = to_frame(np.array([[100 / 512, 400 / 512, 200 / 512, 1.0]]), left, width, height)
    seen_right = to_frame(np.array([[100 / 512, 0.0, 200 / 512, 190 / 512]]), right, width, height)
    boxes = np.concatenate([seen_left, seen_right])
    scores, classes = np.array([0.6, 0.8]), np.array([3, 3])
    merged = merge(boxes, scores, classes)
    np.testing.assert_allclose(merged[0], pixels([(400, 100, 600, 200)], width, height), rtol=0, atol=1e-12)
    assert merged[1].tolist() == [0.8]
    assert merged[2].tolist() == [3]
    assert_same(merged, sahi_merge(boxes, scores, classes, width, height))


def test_merge_keeps_overlapping_boxes_of_different_classes_apart() -> None:
    """Two boxes of different classes stay two however much they overlap: the merge is per class."""
    boxes = pixels([(100, 100, 300, 300), (110, 110, 290, 290)], 1000, 1000)
    scores, classes = np.array([0.9, 0.7]), np.array([1, 2])
    merged = merge(boxes, scores, classes)
    np.testing.assert_allclose(merged[0], boxes, rtol=0, atol=0)
    assert merged[1].tolist() == [0.9, 0.7]
    assert merged[2].tolist() == [1, 2]
    assert_same(merged, sahi_merge(boxes, scores, classes, 1000, 1000))


def test_merge_drops_a_box_that_the_grown_box_no_longer_matches() -> None:
    """A box taken by the kept box but missing it once grown is lost, and one missing the kept box stays apart."""
    width = height = 1024
    boxes = pixels(
        [
            (0, 0, 100, 100),  # kept, 0.9
            (40, 0, 400, 100),  # IoS 0.6 with the kept box: merged first, growing it to x 0..400
            (0, 0, 100, 1000),  # IoS 1 with the kept box, but 0.25 with the grown one: taken, then dropped
            (300, 0, 420, 100),  # IoS 0 with the kept box, so not taken; 0.83 with the grown one does not matter
        ],
        width,
        height,
    )
    scores, classes = np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 1, 1, 1])
    merged = merge(boxes, scores, classes)
    expected = pixels([(0, 0, 400, 100), (300, 0, 420, 100)], width, height)
    np.testing.assert_allclose(merged[0], expected, rtol=0, atol=1e-12)
    assert merged[1].tolist() == [0.9, 0.6]
    assert_same(merged, sahi_merge(boxes, scores, classes, width, height))


def test_merge_order_of_takings_decides_which_survive() -> None:
    """Takings merge best score first: the tall box taken first grows the kept box so that the wide one is lost."""
    width = height = 1024
    boxes = pixels([(0, 0, 100, 100), (40, 0, 400, 100), (0, 0, 100, 1000)], width, height)
    scores, classes = np.array([0.9, 0.7, 0.8]), np.array([5, 5, 5])
    merged = merge(boxes, scores, classes)
    np.testing.assert_allclose(merged[0], pixels([(0, 0, 100, 1000)], width, height), rtol=0, atol=1e-12)
    assert merged[1].tolist() == [0.9]
    assert_same(merged, sahi_merge(boxes, scores, classes, width, height))


@pytest.mark.parametrize(("x_min", "count"), [(64, 1), (65, 2)])
def test_merge_threshold_is_at_least_one_half(x_min: int, count: int) -> None:
    """An IoS of exactly 0.5 merges (SAHI's >=), and one just below does not."""
    # Powers of two keep every coordinate and area exact in float32 and float64, so 0.5 is exactly 0.5.
    boxes = pixels([(0, 0, 128, 128), (x_min, 0, 320, 128)], 1024, 1024)
    scores, classes = np.array([0.9, 0.8]), np.array([1, 1])
    merged = merge(boxes, scores, classes)
    assert len(merged[0]) == count
    assert_same(merged, sahi_merge(boxes, scores, classes, 1024, 1024))


def test_merge_breaks_score_ties_by_the_smaller_xmin() -> None:
    """Among equal scores the box with the smaller xmin is kept first, whatever the input order."""
    width = height = 1000
    # P (x 0..100) and R (x 80..180) miss each other; Q (x 40..140) matches both. Kept first, Q would take both.
    boxes = pixels([(40, 0, 140, 100), (80, 0, 180, 100), (0, 0, 100, 100)], width, height)
    scores, classes = np.array([0.7, 0.7, 0.7]), np.array([1, 1, 1])
    merged = merge(boxes, scores, classes)
    np.testing.assert_allclose(merged[0], pixels([(0, 0, 140, 100), (80, 0, 180, 100)], width, height), atol=1e-12)
    assert_same(merged, sahi_merge(boxes, scores, classes, width, height))


def test_merge_ties_scores_that_float32_cannot_tell_apart() -> None:
    """Scores equal in float32 are a tie (SAHI sorts float32), yet the merged score is the higher float64 one."""
    width = height = 1000
    # Q is the best in float64 and would take P and R; tied in float32, P (smaller xmin) is kept and R stays apart.
    boxes = pixels([(40, 0, 140, 100), (80, 0, 180, 100), (0, 0, 100, 100)], width, height)
    scores, classes = np.array([0.7 + 1e-12, 0.7, 0.7]), np.array([1, 1, 1])
    merged = merge(boxes, scores, classes)
    np.testing.assert_allclose(merged[0], pixels([(0, 0, 140, 100), (80, 0, 180, 100)], width, height), atol=1e-12)
    assert merged[1].tolist() == [0.7 + 1e-12, 0.7]
    assert_same(merged, sahi_merge(boxes, scores, classes, width, height))


def test_merge_of_nothing_and_of_one() -> None:
    """No detections merge to none, and a single detection comes back unchanged."""
    empty = merge(np.zeros((0, 4), dtype=np.float32), np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64))
    assert [part.shape for part in empty] == [(0, 4), (0,), (0,)]
    one = merge(np.array([[0.1, 0.2, 0.3, 0.4]]), np.array([0.5]), np.array([7]))
    assert one[0].tolist() == [[0.1, 0.2, 0.3, 0.4]]
    assert one[1].tolist() == [0.5]
    assert one[2].tolist() == [7]


def test_merge_keeps_an_empty_box_apart() -> None:
    """A zero-area box matches nothing (IoS 0), so it survives on its own."""
    boxes = pixels([(10, 10, 50, 50), (20, 20, 20, 40)], 100, 100)
    scores, classes = np.array([0.9, 0.8]), np.array([1, 1])
    merged = merge(boxes, scores, classes)
    assert len(merged[0]) == 2
    assert_same(merged, sahi_merge(boxes, scores, classes, 100, 100))


def test_merge_refuses_mismatched_inputs_and_thresholds() -> None:
    """Arrays of different lengths, and thresholds outside (0, 1], are refused."""
    with pytest.raises(ValueError, match="do not match"):
        merge(np.zeros((2, 4)), np.zeros(1), np.zeros(2))
    with pytest.raises(ValueError, match="threshold"):
        merge(np.zeros((1, 4)), np.zeros(1), np.zeros(1), threshold=0.0)


# --- merge, randomized ------------------------------------------------------------------------------------------


def clustered(rng: np.random.Generator, width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random float32 detections (as a detector gives them) in clusters of jittered boxes, of several classes."""
    rows: list[list[float]] = []
    for _ in range(rng.integers(1, 9)):
        cy, cx = rng.uniform(0.05, 0.95, size=2)
        base_h, base_w = rng.uniform(8, 400, size=2) / (height, width)
        for _ in range(rng.integers(1, 7)):
            h, w = base_h * rng.uniform(0.3, 1.7), base_w * rng.uniform(0.3, 1.7)
            y, x = cy + rng.normal(0, base_h / 3), cx + rng.normal(0, base_w / 3)
            rows.append([y - h / 2, x - w / 2, y + h / 2, x + w / 2])
    boxes = np.clip(np.array(rows), 0.0, 1.0).astype(np.float32)
    scores = rng.uniform(0.3, 1.0, size=len(rows)).astype(np.float32)
    classes = rng.integers(1, 4, size=len(rows))
    return boxes, scores, classes


@pytest.mark.parametrize("seed", range(40))
def test_merge_matches_sahi_on_random_clusters(seed: int) -> None:
    """For random clusters of overlapping detections of three classes, merge gives SAHI's detections."""
    rng = np.random.default_rng(seed)
    width, height = [(4000, 3000), (1920, 1080), (3000, 4000), (1024, 1024)][seed % 4]
    boxes, scores, classes = clustered(rng, width, height)
    assert_same(merge(boxes, scores, classes), sahi_merge(boxes, scores, classes, width, height))


def tiled_detections(rng: np.random.Generator, width: int, height: int, tile: int) -> Merged:
    """What a detector would report for random objects over a frame's tiles and the whole frame, in the frame."""
    objects = []
    for _ in range(rng.integers(3, 15)):
        w, h = rng.uniform(20, 300), rng.uniform(20, 300)
        x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
        objects.append((x, y, x + w, y + h, int(rng.integers(1, 4))))
    boxes, scores, classes = [], [], []
    for x0, y0, x1, y1 in [(0, 0, width, height), *tile_boxes(width, height, tile)]:
        seen = []
        for ox0, oy0, ox1, oy1, class_id in objects:
            # The part of the object inside the view, jittered a little, if enough of it is there to be detected.
            vx0, vy0, vx1, vy1 = max(ox0, x0), max(oy0, y0), min(ox1, x1), min(oy1, y1)
            if vx1 - vx0 < 8 or vy1 - vy0 < 8 or rng.random() < 0.15:
                continue
            jitter = rng.normal(0, 2, size=4)
            vx0, vy0 = max(x0, vx0 + jitter[0]), max(y0, vy0 + jitter[1])
            vx1, vy1 = min(x1, vx1 + jitter[2]), min(y1, vy1 + jitter[3])
            tw, th = x1 - x0, y1 - y0
            seen.append([(vy0 - y0) / th, (vx0 - x0) / tw, (vy1 - y0) / th, (vx1 - x0) / tw])
            scores.append(rng.uniform(0.3, 1.0))
            classes.append(class_id)
        if seen:
            boxes.append(to_frame(np.array(seen, dtype=np.float32), (x0, y0, x1, y1), width, height))
    framed = np.clip(np.concatenate(boxes), 0.0, 1.0) if boxes else np.zeros((0, 4))
    return framed.astype(np.float32), np.array(scores, dtype=np.float32), np.array(classes, dtype=np.int64)


@pytest.mark.parametrize("seed", range(12))
def test_merge_matches_sahi_on_simulated_tiled_frames(seed: int) -> None:
    """For random objects seen cut by tiles and in the whole frame, merge gives SAHI's detections, fewer than in."""
    rng = np.random.default_rng(1000 + seed)
    width, height, tile = [(4000, 3000, 640), (1920, 1080, 640), (2000, 1500, 512)][seed % 3]
    boxes, scores, classes = tiled_detections(rng, width, height, tile)
    merged = merge(boxes, scores, classes)
    assert len(merged[0]) < len(boxes)
    assert_same(merged, sahi_merge(boxes, scores, classes, width, height))
