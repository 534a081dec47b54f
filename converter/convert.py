"""Frozen OD API graphs and SavedModels → a new version in TensorFlow Serving's layout."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from converter.errors import InputNotFound, MissingTensors, NotAGraph, OutputNotWritable
from converter.layout import latest_version

INPUT_TENSOR = "image_tensor"
INPUT_KEY = "inputs"  # the key the OD API's own exporter gives the image in its SavedModel signature
REQUIRED_OUTPUTS = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")
OPTIONAL_OUTPUTS = (
    "detection_masks",
    "detection_keypoints",
    "detection_keypoint_scores",
    "detection_multiclass_scores",
    "detection_features",
    "detection_anchor_indices",
    "raw_detection_boxes",
    "raw_detection_scores",
)
SIGNATURE = "serving_default"
SERVE_TAG = "serve"
MANIFEST = Path("assets.extra") / "classifyobjects.json"
WARMUP = Path("assets.extra") / "tf_serving_warmup_requests"
WARMUP_SIDE = 320  # a typical phone-photo aspect is irrelevant here: warmup only has to trace and allocate


@dataclass(frozen=True)
class Result:
    """What a conversion did: the version directory, and whether it was written now or already up to date."""

    version_dir: Path
    version: int
    written: bool


def convert(input_path: Path, output_base: Path, *, if_changed: bool = False, warmup: bool = False) -> Result:
    """Convert ``input_path`` into ``output_base/<next version>/``; never overwrites an existing version.

    With ``if_changed``, nothing is written when the newest version was converted from identical input.
    """
    input_path = Path(input_path)
    output_base = Path(output_base)
    if not input_path.exists():
        raise InputNotFound(f"input not found: {input_path}")
    source = _resolve_saved_model_dir(input_path) if input_path.is_dir() else input_path
    fingerprint = _fingerprint(source)
    _ensure_writable(output_base)
    latest = latest_version(output_base)
    if if_changed and latest is not None and _manifest_fingerprint(latest[1]) == fingerprint:
        return Result(version_dir=latest[1], version=latest[0], written=False)

    with _staging_dir(output_base) as staging:
        if source.is_dir():
            input_key = _copy_saved_model(source, staging)
        else:
            input_key = _frozen_graph_to_saved_model(source, staging)
        manifest = {"source": str(input_path), "source_sha256": fingerprint, "input_key": input_key}
        (staging / MANIFEST).parent.mkdir(parents=True, exist_ok=True)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        if warmup:
            write_warmup_requests(staging / WARMUP, input_key)
        version, version_dir = _publish(staging, output_base)
    return Result(version_dir=version_dir, version=version, written=True)


def _resolve_saved_model_dir(path: Path) -> Path:
    """Accept a SavedModel dir, or a TF2 OD API export dir holding one in ``saved_model/``."""
    if (path / "saved_model.pb").is_file():
        return path
    if (path / "saved_model" / "saved_model.pb").is_file():
        return path / "saved_model"
    raise NotAGraph(f"not a SavedModel directory (no saved_model.pb): {path}")


def _fingerprint(path: Path) -> str:
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        with file.open("rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _manifest_fingerprint(version_dir: Path) -> str | None:
    try:
        data = json.loads((version_dir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = data.get("source_sha256") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def _ensure_writable(base: Path) -> None:
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputNotWritable(f"cannot create output directory {base}: {exc.strerror or exc}") from None
    if not base.is_dir() or not os.access(base, os.W_OK | os.X_OK):
        raise OutputNotWritable(f"output directory is not writable: {base}")


@contextmanager
def _staging_dir(base: Path) -> Iterator[Path]:
    """A private directory beside the versions; TF Serving ignores it because its name is not a number."""
    try:
        parent = Path(tempfile.mkdtemp(prefix=".converting-", dir=base))
    except OSError as exc:
        raise OutputNotWritable(f"cannot write to {base}: {exc.strerror or exc}") from None
    try:
        yield parent / "model"
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def _publish(staging: Path, base: Path) -> tuple[int, Path]:
    """Move the finished model into place under the next free version number, atomically."""
    while True:
        latest = latest_version(base)
        version = (latest[0] if latest else 0) + 1
        target = base / str(version)
        try:
            # rename() is atomic and refuses an existing non-empty directory, so a version is never overwritten
            # and TF Serving never sees a half-written one.
            staging.rename(target)
        except FileExistsError:
            continue
        except OSError as exc:
            if target.exists():
                continue
            raise OutputNotWritable(f"cannot write {target}: {exc.strerror or exc}") from None
        return version, target


def _frozen_graph_to_saved_model(graph_path: Path, export_dir: Path) -> str:
    """Write the frozen OD API graph as a SavedModel with the exporter's own signature; returns the input key."""
    import tensorflow as tf
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import meta_graph_pb2

    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(graph_path.read_bytes())
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise NotAGraph(f"not a TensorFlow GraphDef: {graph_path} ({exc})") from None
    except OSError as exc:
        raise InputNotFound(f"cannot read {graph_path}: {exc.strerror or exc}") from None
    nodes = {node.name: node for node in graph_def.node}
    if not nodes:
        raise NotAGraph(f"not a TensorFlow GraphDef (no nodes): {graph_path}")
    missing = [name for name in (INPUT_TENSOR, *REQUIRED_OUTPUTS) if name not in nodes]
    if missing:
        raise MissingTensors(
            f"{graph_path} lacks required tensors: {', '.join(missing)} "
            "(is it an Object Detection API export with input_type=image_tensor?)"
        )
    image_node = nodes[INPUT_TENSOR]
    if image_node.op != "Placeholder" or image_node.attr["dtype"].type != tf.uint8.as_datatype_enum:
        dtype = tf.dtypes.as_dtype(image_node.attr["dtype"].type).name if image_node.attr["dtype"].type else "?"
        raise MissingTensors(
            f"{INPUT_TENSOR} in {graph_path} is a {image_node.op} of {dtype}; expected a uint8 Placeholder"
        )

    graph = tf.Graph()
    with graph.as_default():
        try:
            tf.graph_util.import_graph_def(graph_def, name="")
        except (ValueError, tf.errors.OpError) as exc:
            raise NotAGraph(f"cannot import {graph_path}: {_first_line(str(exc))}") from None
        outputs = [name for name in (*REQUIRED_OUTPUTS, *OPTIONAL_OUTPUTS) if name in nodes]
        signature = meta_graph_pb2.SignatureDef(method_name=tf.saved_model.PREDICT_METHOD_NAME)
        signature.inputs[INPUT_KEY].CopyFrom(_tensor_info(graph.get_tensor_by_name(f"{INPUT_TENSOR}:0")))
        for name in outputs:
            signature.outputs[name].CopyFrom(_tensor_info(graph.get_tensor_by_name(f"{name}:0")))
        with tf.compat.v1.Session(graph=graph) as session:
            builder = tf.compat.v1.saved_model.Builder(str(export_dir))
            builder.add_meta_graph_and_variables(
                session,
                [tf.saved_model.SERVING],
                signature_def_map={SIGNATURE: signature},
                strip_default_attrs=True,
            )
            builder.save()
    return INPUT_KEY


def _tensor_info(tensor: Any) -> Any:
    """The SignatureDef entry for a graph tensor (what the deprecated ``build_tensor_info`` wrote)."""
    from tensorflow.core.protobuf import meta_graph_pb2

    return meta_graph_pb2.TensorInfo(
        name=tensor.name, dtype=tensor.dtype.as_datatype_enum, tensor_shape=tensor.shape.as_proto()
    )


def _copy_saved_model(source: Path, export_dir: Path) -> str:
    """Check the SavedModel honours the OD API contract, then copy it; returns its input key."""
    signature = read_signature(source)
    missing = [name for name in REQUIRED_OUTPUTS[:3] if name not in signature.outputs]
    if missing:
        raise MissingTensors(f"signature {SIGNATURE} of {source} lacks outputs: {', '.join(missing)}")
    if len(signature.inputs) != 1:
        raise MissingTensors(
            f"signature {SIGNATURE} of {source} has inputs {sorted(signature.inputs)}; expected one image tensor"
        )
    shutil.copytree(source, export_dir)
    input_key: str = next(iter(signature.inputs))
    return input_key


def read_signature(saved_model_dir: Path) -> Any:
    """The ``serving_default`` SignatureDef of the ``serve`` meta graph, read from ``saved_model.pb``."""
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    try:
        saved_model.ParseFromString((saved_model_dir / "saved_model.pb").read_bytes())
    except DecodeError as exc:
        raise NotAGraph(f"not a SavedModel: {saved_model_dir} ({exc})") from None
    for meta_graph in saved_model.meta_graphs:
        if SERVE_TAG in meta_graph.meta_info_def.tags:
            if SIGNATURE not in meta_graph.signature_def:
                names = ", ".join(sorted(meta_graph.signature_def)) or "none"
                raise MissingTensors(f"{saved_model_dir} has no signature {SIGNATURE} (it has: {names})")
            return meta_graph.signature_def[SIGNATURE]
    raise MissingTensors(f"{saved_model_dir} has no meta graph tagged {SERVE_TAG!r}")


def write_warmup_requests(path: Path, input_key: str) -> None:
    """Write TF Serving's warmup file: one Predict of a mid-grey image, run when the version loads."""
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    image = np.full((1, WARMUP_SIDE, WARMUP_SIDE, 3), 128, dtype=np.uint8)
    request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(signature_name=SIGNATURE))
    request.inputs[input_key].CopyFrom(tf.make_tensor_proto(image))
    log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(log.SerializeToString())


def _first_line(message: str) -> str:
    return message.strip().splitlines()[0] if message.strip() else "unknown error"
