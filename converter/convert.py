"""Object Detection exports (TF1 frozen graphs, TF1 and TF2 SavedModels) → a new version in TF Serving's layout.

Each version carries what serving it needs beyond the graph: the label map its class ids belong to, the manifest
(``odapi.layout``), and a metadata signature (``odapi.contract.METADATA_SIGNATURE``) that shows TF Serving's
clients the input type and the label map, since TF Serving shows them nothing but signatures.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from converter.errors import BadLabelMap, InputNotFound, NoModelFound, NotAGraph, OutputNotWritable
from converter.find import FoundModel, ModelKind, describe_input, find_model
from converter.inputs import ModelInput, check_outputs, frozen_graph_input, signature_input
from odapi.contract import (
    COUNT_OUTPUT,
    LABEL_MAP_OUTPUT,
    METADATA_INPUT_TYPE,
    METADATA_LABEL_MAP,
    METADATA_REQUEST,
    METADATA_SIGNATURE,
    OPTIONAL_OUTPUTS,
    PREDICT_METHOD,
    REQUIRED_OUTPUTS,
    SERVE_TAG,
    SIGNATURE_KEY,
    InputType,
    encode_example,
    graph_ops,
)
from odapi.labels import LabelMapError, read_label_map
from odapi.layout import LABEL_MAP, MANIFEST, WARMUP, Manifest, latest_version, read_manifest

WARMUP_SIDE = 320  # warmup only has to trace and allocate; the picture's content does not matter
_METADATA_SCOPE = "classifyobjects_metadata"


@dataclass(frozen=True)
class Result:
    """What a conversion did: the version directory, whether it was written now, and what the model takes."""

    version_dir: Path
    version: int
    written: bool
    input_type: InputType
    label_map: Path | None


def convert(
    input_path: Path,
    output_base: Path,
    *,
    label_map: Path | None = None,
    input_type: InputType | None = None,
    if_changed: bool = False,
    warmup: bool = False,
    default: Path | None = None,
) -> Result:
    """Convert ``input_path`` (a frozen graph, a SavedModel, or a directory holding either) into
    ``output_base/<next version>/``; never overwrites an existing version.

    ``label_map``: the label map to carry (default: ``label_map.pbtxt`` beside the model). ``input_type``
    overrides what the graph says (one string type for the other). ``if_changed``: write nothing when the newest
    version came from identical input. ``default``: a model directory converted instead when ``input_path`` is a
    directory that holds no model.
    """
    found = _locate(Path(input_path), default)
    label_map = Path(label_map) if label_map is not None else found.label_map
    label_text = _read_label_map(label_map)
    fingerprint = _fingerprint(found.path, label_text, input_type)
    output_base = Path(output_base)
    _ensure_writable(output_base)
    latest = latest_version(output_base)
    if if_changed and latest is not None:
        manifest = read_manifest(latest[1])
        if manifest is not None and manifest.source_sha256 == fingerprint:
            return Result(latest[1], latest[0], False, manifest.input_type, label_map)

    with _staging_dir(output_base) as staging:
        if found.kind is ModelKind.FROZEN_GRAPH:
            model_input = _frozen_graph_to_saved_model(found.path, staging, label_text or "", input_type)
        else:
            model_input = _copy_saved_model(found.path, staging, label_text or "", input_type)
        if label_text is not None:
            (staging / LABEL_MAP).parent.mkdir(parents=True, exist_ok=True)
            (staging / LABEL_MAP).write_text(label_text, encoding="utf-8")
        manifest = Manifest(
            source=str(found.path),
            source_sha256=fingerprint,
            input_type=model_input.input_type,
            input_key=model_input.key,
            label_map_sha256=hashlib.sha256(label_text.encode()).hexdigest() if label_text is not None else None,
        )
        (staging / MANIFEST).parent.mkdir(parents=True, exist_ok=True)
        (staging / MANIFEST).write_text(manifest.to_json(), encoding="utf-8")
        if warmup:
            write_warmup_requests(staging / WARMUP, model_input)
        version, version_dir = _publish(staging, output_base)
    return Result(version_dir, version, True, model_input.input_type, label_map)


def _locate(input_path: Path, default: Path | None) -> FoundModel:
    if not input_path.exists():
        raise InputNotFound(f"input not found: {input_path}")
    found = describe_input(input_path)
    if found is None and default is not None:
        found = find_model(default)
        if found is None:
            raise NoModelFound(f"no model in {input_path}, nor in the default model directory {default}")
    if found is None:
        raise NoModelFound(
            f"no model in {input_path}: expected frozen_inference_graph.pb, saved_model/saved_model.pb "
            "or saved_model.pb"
        )
    return found


def _read_label_map(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        text, _ = read_label_map(path)
    except LabelMapError as exc:
        raise BadLabelMap(str(exc)) from None
    return text


def _fingerprint(model: Path, label_text: str | None, input_type: InputType | None) -> str:
    """SHA-256 of the model's files, its label map and any input-type override: what ``--if-changed`` compares."""
    digest = hashlib.sha256()
    files = sorted(p for p in model.rglob("*") if p.is_file()) if model.is_dir() else [model]
    for file in files:
        digest.update(str(file.relative_to(model) if model.is_dir() else file.name).encode())
        with file.open("rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                digest.update(chunk)
    digest.update(b"\0label_map\0" + (label_text or "").encode())
    digest.update(b"\0input_type\0" + (input_type or "").encode())
    return digest.hexdigest()


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


def _frozen_graph_to_saved_model(
    graph_path: Path, export_dir: Path, label_text: str, override: InputType | None
) -> ModelInput:
    """Write the frozen OD API graph as a SavedModel with the exporter's own signature, plus the metadata one."""
    import tensorflow as tf
    from google.protobuf.message import DecodeError

    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(graph_path.read_bytes())
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise NotAGraph(f"not a TensorFlow GraphDef: {graph_path} ({exc})") from None
    except OSError as exc:
        raise InputNotFound(f"cannot read {graph_path}: {exc.strerror or exc}") from None
    if not graph_def.node:
        raise NotAGraph(f"not a TensorFlow GraphDef (no nodes): {graph_path}")
    model_input = frozen_graph_input(graph_def, str(graph_path), override)
    nodes = {node.name for node in graph_def.node}
    check_outputs([name for name in (*REQUIRED_OUTPUTS, COUNT_OUTPUT) if name in nodes], str(graph_path))

    graph = tf.Graph()
    with graph.as_default():
        try:
            tf.graph_util.import_graph_def(graph_def, name="")
        except (ValueError, tf.errors.OpError) as exc:
            raise NotAGraph(f"cannot import {graph_path}: {exc}") from None
        signature = _signature_def()
        signature.inputs[model_input.key].CopyFrom(_tensor_info(graph.get_tensor_by_name(model_input.tensor_name)))
        for name in (*REQUIRED_OUTPUTS, COUNT_OUTPUT, *OPTIONAL_OUTPUTS):
            if name in nodes:
                signature.outputs[name].CopyFrom(_tensor_info(graph.get_tensor_by_name(f"{name}:0")))
        with tf.compat.v1.Session(graph=graph) as session:
            builder = tf.compat.v1.saved_model.Builder(str(export_dir))
            builder.add_meta_graph_and_variables(
                session,
                [tf.saved_model.SERVING],
                signature_def_map={SIGNATURE_KEY: signature},
                strip_default_attrs=True,
            )
            builder.save()
    _add_metadata(export_dir, model_input, label_text)
    return model_input


def _signature_def() -> Any:
    from tensorflow.core.protobuf import meta_graph_pb2

    return meta_graph_pb2.SignatureDef(method_name=PREDICT_METHOD)


def _tensor_info(tensor: Any) -> Any:
    """The SignatureDef entry for a graph tensor (what the deprecated ``build_tensor_info`` wrote)."""
    from tensorflow.core.protobuf import meta_graph_pb2

    return meta_graph_pb2.TensorInfo(
        name=tensor.name, dtype=tensor.dtype.as_datatype_enum, tensor_shape=tensor.shape.as_proto()
    )


def _copy_saved_model(source: Path, export_dir: Path, label_text: str, override: InputType | None) -> ModelInput:
    """Check the SavedModel honours the OD API contract, copy it, and add the metadata to the copy."""
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    try:
        saved_model.ParseFromString((source / "saved_model.pb").read_bytes())
    except DecodeError as exc:
        raise NotAGraph(f"not a SavedModel: {source} ({exc})") from None
    meta_graph = _serve_meta_graph(saved_model, source)
    if SIGNATURE_KEY not in meta_graph.signature_def:
        names = ", ".join(sorted(meta_graph.signature_def)) or "none"
        raise NotAGraph(f"{source} has no signature {SIGNATURE_KEY} (it has: {names})")
    signature = meta_graph.signature_def[SIGNATURE_KEY]
    where = f"signature {SIGNATURE_KEY} of {source}"
    model_input = signature_input(signature, graph_ops(meta_graph.graph_def), where, override)
    check_outputs(signature.outputs, where)

    shutil.copytree(source, export_dir)
    _add_metadata(export_dir, model_input, label_text)
    return model_input


def _serve_meta_graph(saved_model: Any, source: Path) -> Any:
    for meta_graph in saved_model.meta_graphs:
        if SERVE_TAG in meta_graph.meta_info_def.tags:
            return meta_graph
    raise NotAGraph(f"{source} has no meta graph tagged {SERVE_TAG!r}")


def _add_metadata(export_dir: Path, model_input: ModelInput, label_text: str) -> None:
    """Add the metadata signature and the per-answer label map output (``odapi.contract``) to a SavedModel.

    TF Serving runs the ``serve`` meta graph in a session, so a few nodes beside the model and signatures naming
    them are all it takes; TensorFlow's own loader keeps using a TF2 model's functions and ignores them. The nodes
    are built by TensorFlow in a scratch graph (so every op carries its proper attributes) and grafted on.
    """
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((export_dir / "saved_model.pb").read_bytes())
    meta_graph = _serve_meta_graph(saved_model, export_dir)
    taken = {node.name for node in meta_graph.graph_def.node}
    scope = _METADATA_SCOPE
    while any(name.startswith(scope + "/") for name in taken):
        scope += "_"
    dtype = tf.as_dtype(model_input.input_type.tensor_dtype)
    graph = tf.Graph()
    with graph.as_default(), tf.name_scope(scope):
        model_image = tf.compat.v1.placeholder(dtype, name="model_input")
        request = tf.compat.v1.placeholder(tf.string, shape=[None], name=METADATA_REQUEST)
        label_map = tf.constant(label_text, name="label_map_text")
        input_type = tf.constant(str(model_input.input_type), name="input_type_text")
        # StringJoin broadcasts the scalar over the request vector: one copy per request element.
        metadata = {
            METADATA_LABEL_MAP: tf.strings.join([label_map, request], name=METADATA_LABEL_MAP),
            METADATA_INPUT_TYPE: tf.strings.join([input_type, request], name=METADATA_INPUT_TYPE),
        }
        per_image = None
        if model_input.rank != 0:  # a scalar input has no batch to repeat the label map over
            batch = tf.shape(model_image, out_type=tf.int32)[:1]
            per_image = tf.fill(batch, label_map, name=LABEL_MAP_OUTPUT)
    grafted = graph.as_graph_def()
    placeholder = f"{scope}/model_input"
    model_node = model_input.tensor_name.split(":")[0]
    for node in grafted.node:
        if node.name == placeholder:
            continue
        node.input[:] = [
            model_node + name[len(placeholder) :] if name.startswith(placeholder) else name for name in node.input
        ]
        meta_graph.graph_def.node.append(node)

    signature = _signature_def()
    signature.inputs[METADATA_REQUEST].CopyFrom(_tensor_info(request))
    for key, tensor in metadata.items():
        signature.outputs[key].CopyFrom(_tensor_info(tensor))
    meta_graph.signature_def[METADATA_SIGNATURE].CopyFrom(signature)
    if per_image is not None:
        meta_graph.signature_def[SIGNATURE_KEY].outputs[LABEL_MAP_OUTPUT].CopyFrom(_tensor_info(per_image))
    (export_dir / "saved_model.pb").write_bytes(saved_model.SerializeToString(deterministic=True))
    # The fingerprint records a checksum of the original saved_model.pb; a stale one would misreport the model.
    (export_dir / "fingerprint.pb").unlink(missing_ok=True)


def warmup_input(model_input: ModelInput) -> Any:
    """A mid-grey picture in the form ``model_input`` takes, batch of one (or a scalar for a rank-0 input)."""
    import numpy as np
    from PIL import Image

    pixels = np.full((1, WARMUP_SIDE, WARMUP_SIDE, 3), 128, dtype=np.uint8)
    if model_input.input_type is InputType.IMAGE_TENSOR:
        return pixels
    if model_input.input_type is InputType.FLOAT_IMAGE_TENSOR:
        return pixels.astype(np.float32)
    buffer = io.BytesIO()
    Image.fromarray(pixels[0]).save(buffer, format="JPEG", quality=90)
    encoded = buffer.getvalue()
    if model_input.input_type is InputType.TF_EXAMPLE:
        encoded = encode_example(encoded, "jpeg")
    value = np.array([encoded], dtype=object)
    return value.reshape(()) if model_input.rank == 0 else value


def write_warmup_requests(path: Path, model_input: ModelInput) -> None:
    """Write TF Serving's warmup file: one Predict of a mid-grey picture, run when the version loads."""
    import tensorflow as tf
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(signature_name=SIGNATURE_KEY))
    request.inputs[model_input.key].CopyFrom(tf.make_tensor_proto(warmup_input(model_input)))
    log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(log.SerializeToString())
