"""The demo detector's graph: TF ops only, usable in a TF1 graph (frozen) and in a TF2 ``tf.function``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# (id, name, RGB prototype). Ids start at 1: 0 is the background in the Object Detection API.
CLASSES: tuple[tuple[int, str, tuple[int, int, int]], ...] = (
    (1, "red", (220, 40, 40)),
    (2, "green", (40, 170, 60)),
    (3, "blue", (40, 80, 220)),
    (4, "yellow", (235, 215, 40)),
)
RESIZED = 128  # the detector looks at a 128x128 rescaled copy of the image, like SSD looks at 300x300
GRID = 4  # 4x4 cells of 32x32: at most one detection per class per cell
MAX_DETECTIONS = 20  # rows in every output, padded with zeros past num_detections, as the OD API pads
COLOUR_RADIUS = 60.0  # RGB distance under which a pixel counts as the class colour
SCORE_GAIN = 6.0  # score = 1 - exp(-gain * coverage): a shape covering half a cell scores 0.95, a tenth 0.45
MIN_SCORE = 0.01  # the post-processing score threshold: lower cells are not detections at all


def detect(images: Any, max_detections: int = MAX_DETECTIONS) -> dict[str, Any]:
    """OD API outputs for a uint8 ``[batch, h, w, 3]`` tensor: boxes, scores, classes, num_detections, raw_*;
    ``max_detections`` rows (the grid has 64 candidates, 16 cells of 4 classes)."""
    import tensorflow as tf

    cell = RESIZED // GRID
    num_classes = len(CLASSES)
    batch = tf.shape(images)[0]
    pixels = tf.image.resize(tf.cast(images, tf.float32), [RESIZED, RESIZED], method="bilinear")
    prototypes = tf.constant([list(rgb) for _, _, rgb in CLASSES], dtype=tf.float32, name="class_prototypes")
    distance = tf.reduce_sum(tf.square(pixels[:, :, :, tf.newaxis, :] - prototypes), axis=-1)  # [b, S, S, C]
    mask = tf.cast(distance < COLOUR_RADIUS**2, tf.float32)
    # [b, gy, cy, gx, cx, C] -> [b, gy, gx, cy, cx, C]
    cells = tf.transpose(tf.reshape(mask, [batch, GRID, cell, GRID, cell, num_classes]), [0, 1, 3, 2, 4, 5])
    coverage = tf.reduce_mean(cells, axis=[3, 4])  # [b, gy, gx, C]
    scores = 1.0 - tf.exp(-SCORE_GAIN * coverage)

    def extent(occupied: Any) -> tuple[Any, Any]:
        # occupied: [b, gy, gx, cell, C] — first and last occupied row (or column) inside each cell.
        first = tf.argmax(occupied, axis=3, output_type=tf.int32)
        last = cell - 1 - tf.argmax(tf.reverse(occupied, axis=[3]), axis=3, output_type=tf.int32)
        return tf.cast(first, tf.float32), tf.cast(last + 1, tf.float32)

    y0, y1 = extent(tf.reduce_max(cells, axis=4))
    x0, x1 = extent(tf.reduce_max(cells, axis=3))
    offset_y = tf.reshape(tf.range(GRID, dtype=tf.float32) * cell, [1, GRID, 1, 1])
    offset_x = tf.reshape(tf.range(GRID, dtype=tf.float32) * cell, [1, 1, GRID, 1])
    boxes = tf.stack([offset_y + y0, offset_x + x0, offset_y + y1, offset_x + x1], axis=-1) / float(RESIZED)

    candidates = GRID * GRID * num_classes
    flat_boxes = tf.reshape(boxes, [batch, candidates, 4])
    flat_scores = tf.reshape(scores, [batch, candidates])
    class_ids = tf.tile(tf.range(1, num_classes + 1, dtype=tf.float32), [GRID * GRID])
    top_scores, top_index = tf.math.top_k(flat_scores, k=max_detections, sorted=True)
    valid = top_scores > MIN_SCORE
    valid_f = tf.cast(valid, tf.float32)
    top_boxes = tf.gather(flat_boxes, top_index, batch_dims=1) * valid_f[:, :, tf.newaxis]
    top_classes = tf.where(valid, tf.gather(class_ids, top_index), tf.ones_like(top_scores))
    per_cell_scores = tf.reshape(scores, [batch, GRID * GRID, num_classes])
    per_cell_boxes = tf.reshape(
        tf.reduce_max(tf.reshape(boxes, [batch, GRID * GRID, num_classes, 4]), axis=2),
        [batch, GRID * GRID, 4],
    )
    return {
        "detection_boxes": tf.identity(top_boxes, name="detection_boxes"),
        "detection_scores": tf.identity(top_scores * valid_f, name="detection_scores"),
        "detection_classes": tf.identity(top_classes, name="detection_classes"),
        "num_detections": tf.identity(tf.reduce_sum(valid_f, axis=1), name="num_detections"),
        "raw_detection_boxes": tf.identity(per_cell_boxes, name="raw_detection_boxes"),
        "raw_detection_scores": tf.identity(per_cell_scores, name="raw_detection_scores"),
    }


def build_frozen_graph() -> bytes:
    """The serialized GraphDef of a TF1 OD API export: placeholder ``image_tensor`` and identity outputs."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        images = tf.compat.v1.placeholder(tf.uint8, shape=[None, None, None, 3], name="image_tensor")
        detect(images)
    serialized: bytes = graph.as_graph_def().SerializeToString(deterministic=True)
    return serialized


def label_map_text() -> str:
    """The demo's label map in the OD API's text format."""
    items = [
        f'item {{\n  id: {class_id}\n  name: "{name}"\n  display_name: "{name}"\n}}\n' for class_id, name, _ in CLASSES
    ]
    return "# Label map of the demo coloured-shape detector (demo_model).\n" + "".join(items)


def export_tf2_saved_model(directory: Path) -> Path:
    """Write the detector as a TF2 OD API export would: ``serving_default(input_tensor uint8 [1,h,w,3])``."""
    import tensorflow as tf

    class DemoDetector(tf.Module):  # type: ignore[misc]
        @tf.function(  # type: ignore[untyped-decorator]  # TensorFlow ships no type information
            input_signature=[tf.TensorSpec([1, None, None, 3], tf.uint8, name="input_tensor")]
        )
        def __call__(self, input_tensor: Any) -> dict[str, Any]:
            outputs = detect(input_tensor)
            # TF2 exports add per-class scores and anchor indices; every output is float32.
            outputs["detection_multiclass_scores"] = (
                tf.one_hot(tf.cast(outputs["detection_classes"], tf.int32) - 1, len(CLASSES))
                * outputs["detection_scores"][:, :, tf.newaxis]
            )
            outputs["detection_anchor_indices"] = tf.zeros_like(outputs["detection_scores"])
            return outputs

    module = DemoDetector()
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.__call__})
    return directory
