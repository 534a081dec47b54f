"""``python -m converter``: frozen graphs and SavedModels into TF Serving's versioned layout."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from converter import ConversionError, convert
from converter.layout import versions

BIN = Path(sys.executable).parent


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run the converter CLI in a fresh process."""
    return subprocess.run(
        [sys.executable, "-m", "converter", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def partial_graph(path: Path, names: list[str], *, image_dtype: str = "uint8") -> Path:
    """A GraphDef holding an ``image_tensor`` placeholder and identity nodes with the given names."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        image = tf.compat.v1.placeholder(tf.as_dtype(image_dtype), [None, None, None, 3], name="image_tensor")
        for name in names:
            tf.identity(tf.cast(image, tf.float32), name=name)
    path.write_bytes(graph.as_graph_def().SerializeToString())
    return path


def test_cli_writes_version_1_then_2_and_never_overwrites(demo_model_dir: Path, tmp_path: Path) -> None:
    """Each run writes the next integer version and prints it; earlier versions are left untouched."""
    base = tmp_path / "detector"
    first = run_cli(demo_model_dir / "frozen_inference_graph.pb", base)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == str(base / "1")
    sentinel = (base / "1" / "saved_model.pb").read_bytes()
    second = run_cli(demo_model_dir / "frozen_inference_graph.pb", base)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == str(base / "2")
    assert (base / "1" / "saved_model.pb").read_bytes() == sentinel
    assert versions(base) == [1, 2]
    assert sorted(p.name for p in base.iterdir()) == ["1", "2"]  # no staging directories left behind


def test_if_changed_skips_identical_input(demo_model_dir: Path, tmp_path: Path) -> None:
    """With --if-changed, identical input writes nothing; changed input writes the next version."""
    base = tmp_path / "detector"
    graph = tmp_path / "frozen_inference_graph.pb"
    graph.write_bytes((demo_model_dir / "frozen_inference_graph.pb").read_bytes())
    assert convert(graph, base, if_changed=True).version == 1
    again = run_cli(graph, base, "--if-changed")
    assert again.returncode == 0
    assert again.stdout.strip() == str(base / "1")
    assert "already converted" in again.stderr
    partial_graph(graph, ["detection_boxes", "detection_scores", "detection_classes", "num_detections"])
    changed = convert(graph, base, if_changed=True)
    assert (changed.version, changed.written) == (2, True)
    manifest = json.loads((base / "2" / "assets.extra" / "classifyobjects.json").read_text())
    assert manifest["input_key"] == "inputs"


def test_saved_model_cli_lists_the_od_api_signature(model_base: Path) -> None:
    """``saved_model_cli show --all`` shows serving_default with input ``inputs`` uint8 and the OD outputs."""
    shown = subprocess.run(
        [str(BIN / "saved_model_cli"), "show", "--all", "--dir", str(model_base / "1")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert "MetaGraphDef with tag-set: 'serve'" in shown
    assert "signature_def['serving_default']" in shown
    assert "inputs['inputs'] tensor_info:\n        dtype: DT_UINT8\n        shape: (-1, -1, -1, 3)" in shown
    for name in [
        "detection_boxes",
        "detection_scores",
        "detection_classes",
        "num_detections",
        "raw_detection_boxes",
    ]:
        assert f"outputs['{name}']" in shown
    assert "Method name is: tensorflow/serving/predict" in shown


def test_converted_model_runs_in_a_fresh_tensorflow_process(model_base: Path) -> None:
    """A new Python process loads the version with tf.saved_model.load and runs its signature on an image."""
    script = textwrap.dedent(
        f"""
        import numpy as np, tensorflow as tf
        model = tf.saved_model.load({str(model_base / "1")!r}, tags=["serve"])
        fn = model.signatures["serving_default"]
        image = np.zeros((1, 48, 64, 3), np.uint8)
        image[0, 4:20, 4:20] = (220, 40, 40)
        out = fn(inputs=tf.constant(image))
        print(sorted(out), out["detection_classes"].numpy()[0, 0], out["num_detections"].numpy()[0])
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    names, top_class, count = result.stdout.rsplit(" ", 2)
    assert "'detection_boxes'" in names and "'raw_detection_scores'" in names
    assert float(top_class) == 1.0  # red
    assert float(count) >= 1.0


def test_warmup_file_is_a_prediction_log(model_base: Path) -> None:
    """The warmup file TF Serving replays is a TFRecord of PredictionLog with an image under ``inputs``."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    records = list(tf.data.TFRecordDataset(str(model_base / "1" / "assets.extra" / "tf_serving_warmup_requests")))
    assert len(records) == 1
    log = prediction_log_pb2.PredictionLog.FromString(records[0].numpy())
    request = log.predict_log.request
    assert request.model_spec.signature_name == "serving_default"
    assert tf.make_ndarray(request.inputs["inputs"]).shape == (1, 320, 320, 3)


def test_tf2_saved_model_export_is_copied(tmp_path: Path) -> None:
    """A TF2 OD API export directory (SavedModel in ``saved_model/``) becomes a version keeping ``input_tensor``."""
    from demo_model import export_tf2_saved_model

    export = tmp_path / "exported"
    export_tf2_saved_model(export / "saved_model")
    (export / "pipeline.config").write_text("model {}\n")
    result = run_cli(export, tmp_path / "detector", "--warmup")
    assert result.returncode == 0, result.stderr
    version = Path(result.stdout.strip())
    manifest = json.loads((version / "assets.extra" / "classifyobjects.json").read_text())
    assert manifest["input_key"] == "input_tensor"
    assert (version / "assets.extra" / "tf_serving_warmup_requests").is_file()


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: d / "missing.pb", "input not found: "),
        (lambda d: _write(d / "notes.txt", b"this is not a graph\n"), "not a TensorFlow GraphDef"),
        (lambda d: _write(d / "empty.pb", b""), "not a TensorFlow GraphDef (no nodes)"),
        (
            lambda d: partial_graph(d / "partial.pb", ["detection_boxes", "detection_scores"]),
            "lacks required tensors: detection_classes, num_detections",
        ),
        (
            lambda d: partial_graph(
                d / "float.pb",
                ["detection_boxes", "detection_scores", "detection_classes", "num_detections"],
                image_dtype="float32",
            ),
            "image_tensor in ",
        ),
        (lambda d: _mkdir(d / "not_a_saved_model"), "not a SavedModel directory (no saved_model.pb)"),
    ],
    ids=["missing", "text-file", "empty-file", "missing-tensors", "float-input", "empty-dir"],
)
def test_input_errors_are_one_line_with_exit_1(tmp_path: Path, setup: object, message: str) -> None:
    """Bad input is one line on stderr, naming the problem, and exit status 1; nothing is written."""
    source = setup(tmp_path)  # type: ignore[operator]
    result = run_cli(source, tmp_path / "out")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("converter: error: ")
    assert message in lines[0]
    assert "Traceback" not in result.stderr
    assert versions(tmp_path / "out") == []


def test_unwritable_output_is_one_line(demo_model_dir: Path, tmp_path: Path) -> None:
    """An output base that cannot be created (a file is in the way) is one line and exit status 1."""
    blocker = _write(tmp_path / "a-file", b"")
    result = run_cli(demo_model_dir / "frozen_inference_graph.pb", blocker / "detector")
    assert result.returncode == 1
    assert result.stderr.strip().startswith("converter: error: cannot create output directory")
    assert len(result.stderr.strip().splitlines()) == 1


def test_usage_error_exits_2() -> None:
    """Missing arguments are a usage error with exit status 2."""
    result = run_cli()
    assert result.returncode == 2
    assert "usage: python -m converter" in result.stderr


def test_library_raises_conversion_error(tmp_path: Path) -> None:
    """As a library, ``convert`` raises ``ConversionError`` subclasses instead of exiting."""
    with pytest.raises(ConversionError, match="input not found"):
        convert(tmp_path / "nope.pb", tmp_path / "out")


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path
