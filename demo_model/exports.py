"""Detectors exported the way the Object Detection API exporters export them, for every input type they write.

A detector here is either the demo's ``detect`` function or a frozen TF1 detection graph (the real SSDLite one,
say) whose ``image_tensor`` is fed from the input the export takes. The wrappers follow the exporters:

- TF1 (``exporter.py``): placeholders ``image_tensor`` (uint8 [None, None, None, 3]), ``encoded_image_string_tensor``
  and ``tf_example`` (string [None]); strings are decoded per element with ``tf.map_fn``. As a frozen graph, or as
  the exporter's own SavedModel (signature ``serving_default``, input key ``inputs``).
- TF2 (``exporter_lib_v2.py``): a ``tf.Module`` whose ``serving_default`` takes ``input_tensor``: uint8 or float32
  [1, None, None, 3], or string [1].

    python -m demo_model.exports OUT_DIR     writes the demo detector in every form, one directory each
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from demo_model.graph import detect as demo_detect
from demo_model.graph import label_map_text
from odapi.contract import (
    EXAMPLE_FORMAT_KEY,
    EXAMPLE_IMAGE_KEY,
    SIGNATURE_KEY,
    TF1_INPUT_KEY,
    TF1_PLACEHOLDERS,
    TF2_INPUT_KEY,
    InputType,
)

TF1_TYPES = tuple(TF1_PLACEHOLDERS)
TF2_TYPES = tuple(InputType)
Detector = Callable[[Any], dict[str, Any]]


def decode_encoded_image(encoded: Any) -> Any:
    """One JPEG/PNG/GIF/BMP string → uint8 [h, w, 3], as the exporters' ``_decode_image`` does."""
    import tensorflow as tf

    image = tf.image.decode_image(encoded, channels=3, expand_animations=False)
    image.set_shape((None, None, 3))
    return image


def decode_tf_example(serialized: Any) -> Any:
    """One serialized tf.train.Example → uint8 [h, w, 3] from ``image/encoded``, as TfExampleDecoder reads it."""
    import tensorflow as tf

    features = tf.io.parse_single_example(
        serialized,
        {
            EXAMPLE_IMAGE_KEY: tf.io.FixedLenFeature((), tf.string, default_value=""),
            EXAMPLE_FORMAT_KEY: tf.io.FixedLenFeature((), tf.string, default_value="jpeg"),
        },
    )
    return decode_encoded_image(features[EXAMPLE_IMAGE_KEY])


def images_from(input_type: InputType, inputs: Any) -> Any:
    """The image batch a detector takes, from the batch the export's input receives."""
    import tensorflow as tf

    if input_type is InputType.IMAGE_TENSOR:
        return inputs
    if input_type is InputType.FLOAT_IMAGE_TENSOR:
        return inputs  # the detector casts to float itself; 0..255 values pass unchanged
    decode = decode_tf_example if input_type is InputType.TF_EXAMPLE else decode_encoded_image
    return tf.map_fn(decode, elems=inputs, fn_output_signature=tf.uint8, parallel_iterations=32)


def frozen_detector(graph_def_bytes: bytes) -> Detector:
    """A detector that runs a frozen TF1 detection graph, feeding its ``image_tensor``."""
    import tensorflow as tf

    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(graph_def_bytes)
    outputs = ["detection_boxes", "detection_scores", "detection_classes", "num_detections"]

    def run(images: Any) -> dict[str, Any]:
        found = tf.graph_util.import_graph_def(
            graph_def,
            input_map={"image_tensor:0": tf.cast(images, tf.uint8)},
            return_elements=[f"{name}:0" for name in outputs],
            name="detector",
        )
        return dict(zip(outputs, found, strict=True))

    return run


def tf1_frozen_graph(input_type: InputType, detector: Detector = demo_detect) -> bytes:
    """A TF1 exporter's frozen graph for ``input_type`` (not float: the TF1 exporter writes none)."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        placeholder = _tf1_placeholder(input_type)
        with tf.name_scope("detector"):  # the detector's own node names cannot take the output names
            outputs = detector(images_from(input_type, placeholder))
        for name, tensor in outputs.items():
            tf.identity(tensor, name=name)  # the exporter's output names, at the top of the graph
    serialized: bytes = graph.as_graph_def().SerializeToString(deterministic=True)
    return serialized


def tf1_saved_model(input_type: InputType, directory: Path, detector: Detector = demo_detect) -> Path:
    """The TF1 exporter's SavedModel for ``input_type``: signature ``serving_default``, input key ``inputs``."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        placeholder = _tf1_placeholder(input_type)
        outputs = detector(images_from(input_type, placeholder))
        signature = tf.compat.v1.saved_model.signature_def_utils.predict_signature_def(
            inputs={TF1_INPUT_KEY: placeholder}, outputs=outputs
        )
        with tf.compat.v1.Session(graph=graph) as session:
            builder = tf.compat.v1.saved_model.Builder(str(directory))
            builder.add_meta_graph_and_variables(
                session, [tf.saved_model.SERVING], signature_def_map={SIGNATURE_KEY: signature}
            )
            builder.save()
    return directory


def tf2_saved_model(input_type: InputType, directory: Path, detector: Detector = demo_detect) -> Path:
    """A TF2 export (``exporter_main_v2.py``) for ``input_type``: ``serving_default(input_tensor)``, batch of one."""
    import tensorflow as tf

    spec = {
        InputType.IMAGE_TENSOR: tf.TensorSpec([1, None, None, 3], tf.uint8, name=TF2_INPUT_KEY),
        InputType.FLOAT_IMAGE_TENSOR: tf.TensorSpec([1, None, None, 3], tf.float32, name=TF2_INPUT_KEY),
    }.get(input_type, tf.TensorSpec([1], tf.string, name=TF2_INPUT_KEY))

    class DetectionModule(tf.Module):  # type: ignore[misc]
        @tf.function(input_signature=[spec])  # type: ignore[untyped-decorator]  # TensorFlow ships no types
        def __call__(self, input_tensor: Any) -> dict[str, Any]:
            outputs = {
                name: tf.cast(value, tf.float32)
                for name, value in detector(images_from(input_type, input_tensor)).items()
            }
            # TF2 exports add these; every output is float32.
            outputs["detection_anchor_indices"] = tf.zeros_like(outputs["detection_scores"])
            return outputs

    module = DetectionModule()
    tf.saved_model.save(module, str(directory), signatures={SIGNATURE_KEY: module.__call__})
    return directory


def _tf1_placeholder(input_type: InputType) -> Any:
    import tensorflow as tf

    if input_type is InputType.IMAGE_TENSOR:
        return tf.compat.v1.placeholder(tf.uint8, shape=[None, None, None, 3], name=TF1_PLACEHOLDERS[input_type])
    if input_type not in TF1_PLACEHOLDERS:
        raise ValueError(f"the TF1 exporter writes no {input_type} input")
    return tf.compat.v1.placeholder(tf.string, shape=[None], name=TF1_PLACEHOLDERS[input_type])


def write_all(out: Path, detector: Detector = demo_detect, label_map: str | None = None) -> list[Path]:
    """Every export of ``detector``, one model directory each (with the label map), named ``tf1-frozen-<type>``,
    ``tf1-saved-<type>`` and ``tf2-<type>``."""
    label_map = label_map if label_map is not None else label_map_text()
    written = []
    for input_type in TF1_TYPES:
        frozen = out / f"tf1-frozen-{input_type}"
        frozen.mkdir(parents=True, exist_ok=True)
        (frozen / "frozen_inference_graph.pb").write_bytes(tf1_frozen_graph(input_type, detector))
        saved = out / f"tf1-saved-{input_type}"
        tf1_saved_model(input_type, saved / "saved_model", detector)
        written += [frozen, saved]
    for input_type in TF2_TYPES:
        export = out / f"tf2-{input_type}"
        tf2_saved_model(input_type, export / "saved_model", detector)
        written.append(export)
    for directory in written:
        (directory / "label_map.pbtxt").write_text(label_map, encoding="utf-8")
    return written


def main(argv: list[str] | None = None) -> int:
    """Write every export of the demo detector into OUT_DIR."""
    parser = argparse.ArgumentParser(prog="python -m demo_model.exports", description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args(argv)
    for directory in write_all(args.out_dir):
        print(directory)
    return 0


if __name__ == "__main__":
    sys.exit(main())
