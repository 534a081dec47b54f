"""The TensorFlow-free contract package (odapi): input types, the tf.Example it writes, the version layout."""

from __future__ import annotations

from pathlib import Path

import pytest

from odapi.contract import InputType, encode_example, graph_ops, pixel_input_type, string_input_type
from odapi.layout import MANIFEST, Manifest, latest_version, read_manifest, versions
from odapi.tfenv import quiet_tensorflow


@pytest.mark.parametrize("image_format", ["jpeg", "png"])
def test_example_parses_as_tensorflows_own(image_format: str) -> None:
    """The hand-written tf.train.Example parses with TensorFlow into the same image/encoded and image/format."""
    import tensorflow as tf

    image = bytes(range(256)) * 40  # binary payload, NULs and high bytes included
    parsed = tf.train.Example.FromString(encode_example(image, image_format))
    features = parsed.features.feature
    assert features["image/encoded"].bytes_list.value == [image]
    assert features["image/format"].bytes_list.value == [image_format.encode()]
    single = tf.io.parse_single_example(
        encode_example(image, image_format), {"image/encoded": tf.io.FixedLenFeature((), tf.string)}
    )
    assert single["image/encoded"].numpy() == image


def test_input_types_know_their_tensor() -> None:
    """Pixel types are uint8 or float32; the two string types take encoded bytes."""
    assert [t.tensor_dtype for t in InputType] == ["uint8", "float32", "string", "string"]
    assert [t.is_encoded for t in InputType] == [False, False, True, True]
    assert pixel_input_type("uint8") is InputType.IMAGE_TENSOR
    assert pixel_input_type("float32") is InputType.FLOAT_IMAGE_TENSOR
    assert pixel_input_type("int32") is None


def test_string_inputs_are_told_apart_by_their_ops() -> None:
    """A string input whose graph parses tf.Example protos is tf_example; otherwise an encoded image."""
    assert string_input_type({"DecodeImage", "ParseExampleV2"}) is InputType.TF_EXAMPLE
    assert string_input_type({"DecodeImage", "Map"}) is InputType.ENCODED_IMAGE_STRING_TENSOR


def test_graph_ops_include_the_function_library() -> None:
    """Ops inside a graph's functions count (TF2 exports keep their graphs there)."""
    from tensorflow.core.framework import graph_pb2

    graph = graph_pb2.GraphDef()
    graph.node.add(name="x", op="Placeholder")
    graph.library.function.add().node_def.add(name="p", op="ParseExampleV2")
    assert graph_ops(graph) == {"Placeholder", "ParseExampleV2"}


def test_versions_are_numeric_directories_with_a_saved_model(tmp_path: Path) -> None:
    """Only all-digit directories holding saved_model.pb are versions; the newest is the highest."""
    for name in ("1", "3", "10", ".converting-x", "notes"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "saved_model.pb").write_bytes(b"")
    (tmp_path / "7").mkdir()  # no saved_model.pb: not a version yet
    assert versions(tmp_path) == [1, 3, 10]
    assert latest_version(tmp_path) == (10, tmp_path / "10")
    assert latest_version(tmp_path / "missing") is None


def test_manifest_round_trips_and_bad_ones_read_as_none(tmp_path: Path) -> None:
    """A written manifest reads back equal; a missing or malformed one reads as None (a model converted elsewhere)."""
    manifest = Manifest("static/x.pb", "ab" * 32, InputType.TF_EXAMPLE, "inputs", "cd" * 32)
    (tmp_path / MANIFEST).parent.mkdir()
    (tmp_path / MANIFEST).write_text(manifest.to_json())
    assert read_manifest(tmp_path) == manifest
    (tmp_path / MANIFEST).write_text('{"source": "x"}')
    assert read_manifest(tmp_path) is None
    assert read_manifest(tmp_path / "nowhere") is None


def test_tensorflow_is_quiet_without_a_gpu_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an NVIDIA device TensorFlow's C++ log is off; with one, errors show; a user's own level wins."""
    monkeypatch.setattr("odapi.tfenv.has_nvidia_device", lambda: False)
    env: dict[str, str] = {}
    quiet_tensorflow(env)
    assert env == {"TF_CPP_MIN_LOG_LEVEL": "3"}
    monkeypatch.setattr("odapi.tfenv.has_nvidia_device", lambda: True)
    env = {}
    quiet_tensorflow(env)
    assert env == {"TF_CPP_MIN_LOG_LEVEL": "2"}
    env = {"TF_CPP_MIN_LOG_LEVEL": "0"}
    quiet_tensorflow(env)
    assert env == {"TF_CPP_MIN_LOG_LEVEL": "0"}
    env = {}
    quiet_tensorflow(env, verbose=True)
    assert env == {"TF_CPP_MIN_LOG_LEVEL": "0"}
