"""Tiles for small objects in big frames, the way SAHI (Slicing Aided Hyper Inference) does it. Pure numpy, no I/O.

A 4000x3000 frame shrunk to the detector's 300x300 loses its small objects. The proxy also runs the detector on
overlapping square tiles of the frame (``tile_boxes``), maps each tile's detections back to the frame (``to_frame``),
and merges them with the whole frame's own detections (``merge``), so an object cut by a tile's edge comes out as one
box.

Why owned rather than imported: SAHI (``sahi`` on PyPI) needs OpenCV, matplotlib and shapely, far too much for the
thin proxy, and the part used here is small. The tests use SAHI itself as the oracle (``tests/unit/test_tiles.py``).

What is copied, checked against sahi 0.12.8:

- ``sahi.slicing.get_slice_bboxes`` with an explicit slice size: its loop and its arithmetic (``int(ratio * side)``
  overlap, the last tile of a row or column shifted back to end at the frame's edge).
- The default postprocess of ``sahi.predict.get_sliced_prediction``: ``GreedyNMMPostprocess(match_threshold=0.5,
  match_metric="IOS", class_agnostic=False)``, i.e. ``batched_greedy_nmm`` (the numpy backend's
  ``greedy_nmm_from_matrix``) choosing the groups, then ``_apply_merge`` with ``has_match`` and
  ``merge_object_prediction_pair`` (``sahi/postprocess/combine.py``, ``sahi/postprocess/utils.py``) merging them.
- ``get_sliced_prediction``'s rule that a frame which is one slice gets no extra whole-frame pass: here such a frame
  gets no tiles, and the caller runs only the whole frame.
"""

from __future__ import annotations

import numpy as np

# What SAHI's sliced prediction matches tiles' detections with: intersection over the smaller box, at least this much.
MATCH_THRESHOLD = 0.5


def tile_boxes(width: int, height: int, tile: int, overlap: float = 0.2) -> list[tuple[int, int, int, int]]:
    """The ``(x_min, y_min, x_max, y_max)`` pixel boxes of the tiles of a ``width`` x ``height`` frame.

    Exactly ``sahi.slicing.get_slice_bboxes(height, width, slice_height=tile, slice_width=tile,
    overlap_height_ratio=overlap, overlap_width_ratio=overlap)``: rows top to bottom, each left to right; tiles of
    side ``tile`` start ``tile - int(overlap * tile)`` pixels apart, and the last tile of a row (column) is shifted
    left (up) to end at the frame's edge, so it may overlap its neighbour by more. A frame shorter than ``tile`` on
    one side gets tiles as long as that side. A frame no larger than ``tile`` on both sides gets no tiles (``[]``),
    where SAHI would return the whole frame as its only slice: the caller then runs only the whole frame.
    """
    if tile < 1 or width < 1 or height < 1:
        raise ValueError(f"tile and frame sides must be at least 1 pixel, not tile={tile} for {width}x{height}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), not {overlap}")
    if width <= tile and height <= tile:
        return []
    step_back = int(overlap * tile)
    boxes: list[tuple[int, int, int, int]] = []
    # SAHI's loop as it is, down to y_min being moved by the first tile of the last row: the other tiles of that
    # row reuse the moved value, so a restructured loop would have to reproduce that coupling anyway.
    y_min = y_max = 0
    while y_max < height:
        x_min = x_max = 0
        y_max = y_min + tile
        while x_max < width:
            x_max = x_min + tile
            if y_max > height or x_max > width:
                x_max = min(width, x_max)
                y_max = min(height, y_max)
                x_min = max(0, x_max - tile)
                y_min = max(0, y_max - tile)
            boxes.append((x_min, y_min, x_max, y_max))
            x_min = x_max - step_back
        y_min = y_max - step_back
    return boxes


def to_frame(boxes: np.ndarray, tile: tuple[int, int, int, int], width: int, height: int) -> np.ndarray:
    """Normalized ``[ymin, xmin, ymax, xmax]`` boxes of the tile ``tile`` (pixels) → normalized boxes of the frame."""
    if width < 1 or height < 1:
        raise ValueError(f"frame sides must be at least 1 pixel, not {width}x{height}")
    x_min, y_min, x_max, y_max = tile
    scale = np.array([(y_max - y_min) / height, (x_max - x_min) / width] * 2)
    offset = np.array([y_min / height, x_min / width] * 2)
    framed: np.ndarray = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) * scale + offset
    return framed


def merge(
    boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, *, threshold: float = MATCH_THRESHOLD
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SAHI's greedy non-maximum merging (IoS, per class) of a tiled frame's detections, best score first.

    Boxes are normalized ``[ymin, xmin, ymax, xmax]`` in the whole frame. The rule, class by class:

    1. Order the class's detections by score, best first, in float32 (SAHI's ``tonumpy`` casts); equal scores go by
       ``xmin``, then ``ymin``, ``xmax``, ``ymax`` (smaller first), then input order.
    2. Walk that order: a detection not yet taken is kept, and takes every later not-yet-taken detection whose IoS
       (intersection over the smaller box's area, in float32, 0 for an empty box) with it is **at least**
       ``threshold``. Taken detections are never kept themselves.
    3. Merge each kept detection's takings in that order: one whose IoS with the kept box *as grown so far*
       (float64) is still at least ``threshold`` grows the box to cover both and lifts the score to the higher of the
       two; one that no longer matches is dropped, neither merged nor kept.
    4. A merged box keeps the kept detection's class (all are of one class).

    Returns float64 boxes and scores and the classes in ``classes``' dtype, sorted by score (stable: among equal
    scores, classes in ascending order, then the order they were kept in, as SAHI lists them).
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], not {threshold}")
    boxes64 = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores64 = np.asarray(scores, dtype=np.float64).reshape(-1)
    class_ids = np.asarray(classes).reshape(-1)
    if not len(boxes64) == len(scores64) == len(class_ids):
        raise ValueError(f"{len(boxes64)} boxes, {len(scores64)} scores and {len(class_ids)} classes do not match")
    merged_boxes: list[np.ndarray] = []
    merged_scores: list[float] = []
    merged_classes: list[np.ndarray] = []
    for class_id in np.unique(class_ids):
        members = np.flatnonzero(class_ids == class_id)
        for box, score in _merge_class(boxes64[members], scores64[members], threshold):
            merged_boxes.append(box)
            merged_scores.append(score)
            merged_classes.append(class_id)
    out_boxes = np.array(merged_boxes, dtype=np.float64).reshape(-1, 4)
    out_scores = np.array(merged_scores, dtype=np.float64)
    out_classes = np.array(merged_classes, dtype=class_ids.dtype)
    order = np.argsort(-out_scores, kind="stable")
    return out_boxes[order], out_scores[order], out_classes[order]


def _merge_class(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list[tuple[np.ndarray, float]]:
    """One class's merged boxes and scores, in the order their kept detections were chosen (steps 3 and 4)."""
    merged: list[tuple[np.ndarray, float]] = []
    for keep, taken in _groups(boxes, scores, threshold):
        box = boxes[keep].copy()
        score = float(scores[keep])
        for other in taken:
            # SAHI re-checks each taking against the box grown so far, not the original: a box that matched the
            # original can miss the grown one, and is then lost (it was taken, so it is not kept either).
            if _ios(box, boxes[other]) >= threshold:
                box[:2] = np.minimum(box[:2], boxes[other, :2])
                box[2:] = np.maximum(box[2:], boxes[other, 2:])
                score = max(score, float(scores[other]))
        merged.append((box, score))
    return merged


def _groups(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list[tuple[int, list[int]]]:
    """Which detections are kept and which each takes, in order (steps 1 and 2): SAHI's ``greedy_nmm_from_matrix``."""
    # float32 as SAHI's arrays are, so that near-ties in scores and near-threshold overlaps fall the same way.
    boxes32 = boxes.astype(np.float32)
    scores32 = scores.astype(np.float32)
    ios = _ios_matrix(boxes32)
    # np.lexsort's last key sorts first: -score, then xmin, ymin, xmax, ymax (SAHI's x1, y1, x2, y2), then index.
    order = np.lexsort((boxes32[:, 2], boxes32[:, 3], boxes32[:, 0], boxes32[:, 1], -scores32))
    taken = np.zeros(len(boxes), dtype=bool)
    groups: list[tuple[int, list[int]]] = []
    for position, keep in enumerate(order):
        if taken[keep]:
            continue
        later = order[position + 1 :]
        candidates = later[~taken[later]]
        takes = candidates[ios[keep, candidates] >= threshold]
        taken[takes] = True
        groups.append((int(keep), [int(index) for index in takes]))
    return groups


def _ios_matrix(boxes: np.ndarray) -> np.ndarray:
    """Pairwise intersection over the smaller area of ``[ymin, xmin, ymax, xmax]`` boxes, 0 where one is empty."""
    low = np.maximum(boxes[:, None, :2], boxes[None, :, :2])
    high = np.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    sides = np.maximum(0, high - low)
    inter = sides[..., 0] * sides[..., 1]
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    smaller = np.minimum(areas[:, None], areas[None, :])
    ratio = np.zeros(inter.shape, dtype=inter.dtype)
    np.divide(inter, smaller, out=ratio, where=smaller > 0)
    return ratio


def _ios(box: np.ndarray, other: np.ndarray) -> float:
    """Intersection over the smaller area of two ``[ymin, xmin, ymax, xmax]`` boxes, 0 when one is empty."""
    sides = np.maximum(0.0, np.minimum(box[2:], other[2:]) - np.maximum(box[:2], other[:2]))
    smaller = min((box[2] - box[0]) * (box[3] - box[1]), (other[2] - other[0]) * (other[3] - other[1]))
    # SAHI divides by zero here (nan, which matches nothing); 0 matches nothing too, since threshold > 0.
    return float(sides[0] * sides[1] / smaller) if smaller > 0 else 0.0
