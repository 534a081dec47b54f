"""Real models end to end, in both modes: the default person detector on real photographs, and every input type
the Object Detection API exporters write, each answering what the export itself answers on the same bytes."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image

from demo_model import random_scene
from harness.processes import HttpServer
from tests.support.reference import Reference, assert_same_answer
from tests.support.zoo import DEFAULT, PERSON, PERSON_ENCODED, SWITCH, Zoo


@pytest.fixture(scope="module")
def reference(zoo: Zoo) -> Reference:
    """The zoo's exports run directly in this process."""
    return Reference(zoo)


def classify(proxy: HttpServer, body: bytes, **params: Any) -> Any:
    """POST the image to /classify and return the JSON answer, asserting a 200."""
    answer = requests.post(f"{proxy.url}/classify", params=params, data=body, timeout=60)
    assert answer.status_code == 200, answer.text
    return answer.json()


def scene(seed: int, fmt: str) -> bytes:
    """A generated picture of coloured shapes, as JPEG or PNG bytes."""
    image, _ = random_scene(seed=seed, size=(480, 360))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("model", "photo", "threshold", "expected"),
    [
        (None, "cat", None, {"Cat": 1}),
        (None, "cameraman", None, {"Person": 1}),
        (None, "both", "0.5", {"Cat": 1, "Person": 1}),
        (PERSON, "person", None, {"Person": 1}),
        (PERSON, "cat", None, {}),
    ],
)
def test_real_detectors_name_what_is_in_photographs(
    any_proxy: HttpServer,
    photos: dict[str, bytes],
    model: str | None,
    photo: str,
    threshold: str | None,
    expected: dict[str, int],
) -> None:
    """With no model named, the COCO default names the cat, the cameraman, and both of the side-by-side picture;
    the person detector finds the portrait's person and nothing in the cat."""
    params = {key: value for key, value in (("model", model), ("threshold", threshold)) if value is not None}
    assert classify(any_proxy, photos[photo], **params) == expected


@pytest.mark.parametrize(
    ("model", "photo", "best"),
    [
        (DEFAULT, "cat", "Cat"),
        (DEFAULT, "both", "Cat"),
        (DEFAULT, "cameraman", "Person"),
        (PERSON, "person", "Person"),
        (PERSON_ENCODED, "cameraman", "Person"),
    ],
)
def test_real_detector_answers_what_the_graph_answers(
    any_proxy: HttpServer, reference: Reference, photos: dict[str, bytes], model: str, photo: str, best: str
) -> None:
    """Scores and boxes equal those of the frozen graph run directly on the proxy's own decoded pixels (or the
    bytes it sends), at every score above 0.01."""
    answer = classify(any_proxy, photos[photo], model=model, verbose="true", threshold=0.01)
    assert_same_answer(answer, reference.verbose(model, photos[photo], 0.01))
    assert answer and answer[0]["class"] == best and answer[0]["score"] > 0.75


def test_encoded_input_answers_for_the_upright_picture(any_proxy: HttpServer, photos: dict[str, bytes]) -> None:
    """A photo stored sideways with EXIF orientation 6 answers, through an encoded-input model, the upright one's
    person with the box turned back (TensorFlow ignores EXIF, so the proxy re-encodes it upright)."""
    upright = Image.open(io.BytesIO(photos["person"]))
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    upright.transpose(Image.Transpose.ROTATE_90).save(buffer, format="JPEG", quality=95, exif=exif)
    sideways = classify(any_proxy, buffer.getvalue(), model=PERSON_ENCODED, verbose="true")
    straight = classify(any_proxy, photos["person"], model=PERSON_ENCODED, verbose="true")
    assert [d["class"] for d in sideways] == [d["class"] for d in straight] == ["Person"]
    for key in ("x1", "y1", "x2", "y2"):
        assert sideways[0][key] == pytest.approx(straight[0][key], abs=0.03)


def test_every_exporter_input_type_answers_like_the_export(
    any_proxy: HttpServer, zoo: Zoo, reference: Reference
) -> None:
    """TF1 frozen graphs and SavedModels of the TF1 exporter's three input types and TF2 exports of all four answer,
    in this mode, what each export answers run directly on the same bytes (JPEG and PNG)."""
    for model in zoo.demo_exports():
        for seed, fmt in ((3, "PNG"), (5, "JPEG")):
            body = scene(seed, fmt)
            expected = reference.verbose(model.name, body, 0.5)
            assert len(expected) >= 2, model.name  # the scene is not trivially empty
            answer = classify(any_proxy, body, model=model.name, verbose="true", threshold=0.5)
            assert_same_answer(answer, expected)


def test_models_converted_elsewhere_are_told_apart(any_proxy: HttpServer, zoo: Zoo, reference: Reference) -> None:
    """TF2 exports served as they are (no converter metadata): an encoded-image input and a tf.Example input, alike in
    their signatures, are told apart (embedded: from the graph's ops; serving: the first image sent both ways) and
    answer what the export answers, with the label map MODELS names."""
    for model in zoo.foreign():
        for seed in (3, 4):
            body = scene(seed, "JPEG")
            expected = reference.verbose(model.name, body, 0.5)
            assert expected, model.name
            assert_same_answer(classify(any_proxy, body, model=model.name, verbose="true", threshold=0.5), expected)


def test_an_image_the_models_decoder_refuses_is_a_400(any_proxy: HttpServer, photos: dict[str, bytes]) -> None:
    """A truncated JPEG passes the proxy's header check and goes to an encoded-input model as sent; the model's own
    decoder refuses it, and that is the client's 400, not a 502."""
    answer = requests.post(
        f"{any_proxy.url}/classify", params={"model": PERSON_ENCODED}, data=photos["person"][:20000], timeout=30
    )
    assert answer.status_code == 400, answer.text
    assert "decoder cannot read this image" in answer.json()["error"]


def test_both_modes_answer_the_same(embedded_proxy: HttpServer, grpc_proxy: HttpServer, zoo: Zoo) -> None:
    """For every model, embedded and TF Serving modes give the same verbose answer (scores within 1e-4). Not the
    switch model: it is the image_tensor demo detector (compared here under its own name) that
    test_a_new_version_brings_its_own_label_map replaces while the proxies run, and that test compares both modes
    through the switch itself (seen once to have run first on a two-worker run: the modes then answered versions 1
    and 2, each with its own names)."""
    body = scene(11, "JPEG")
    for name in (name for name in zoo.names if name != SWITCH):
        embedded = classify(embedded_proxy, body, model=name, verbose="true", threshold=0.0)
        serving = classify(grpc_proxy, body, model=name, verbose="true", threshold=0.0)
        assert_same_answer(serving, embedded)


RENAMED = {"Red": "Crimson", "Green": "Emerald", "Blue": "Azure", "Yellow": "Amber"}


def test_a_new_version_brings_its_own_label_map(
    embedded_proxy: HttpServer, grpc_proxy: HttpServer, zoo: Zoo, tmp_path: Path
) -> None:
    """A version converted with other class ids and its own label map takes over in both modes, and no answer
    ever pairs one version's ids with the other's names (a red shape is Red, then Crimson: never Yellow or Amber)."""
    from converter import convert
    from demo_model.exports import tf1_frozen_graph
    from demo_model.graph import detect
    from odapi.contract import InputType

    def remapped(images: Any) -> dict[str, Any]:
        outputs = dict(detect(images))
        outputs["detection_classes"] = 5.0 - outputs["detection_classes"]  # red 1 → 4, green 2 → 3, ...
        return outputs

    source = tmp_path / "v2"
    source.mkdir()
    (source / "frozen_inference_graph.pb").write_bytes(tf1_frozen_graph(InputType.IMAGE_TENSOR, remapped))
    ids = {"Red": 4, "Green": 3, "Blue": 2, "Yellow": 1}
    (source / "label_map.pbtxt").write_text(
        "".join(f'item {{ id: {ids[old]} name: "{new.lower()}" }}\n' for old, new in RENAMED.items())
    )
    body = scene(21, "PNG")
    before = {name: classify(proxy, body, model=SWITCH) for name, proxy in (("e", embedded_proxy), ("s", grpc_proxy))}
    assert before["e"] == before["s"] and before["e"]
    after = {RENAMED[name]: count for name, count in before["e"].items()}
    assert convert(source, zoo.models[SWITCH].base_path).version == 2

    switched: set[str] = set()
    deadline = time.monotonic() + 40
    while switched != {"e", "s"}:
        assert time.monotonic() < deadline, f"not every mode switched: {switched}"
        for name, proxy in (("e", embedded_proxy), ("s", grpc_proxy)):
            answer = classify(proxy, body, model=SWITCH)
            assert answer in (before[name], after), answer
            if answer == after:
                switched.add(name)
        time.sleep(0.1)  # polling interval


def test_encoded_inputs_batch_only_pictures_of_one_size() -> None:
    """The exporters decode each string of an encoded-input batch and stack the pictures (tf.map_fn), so a batch
    TF Serving merges from pictures of different sizes fails as a whole, as the README says; one size runs."""
    import tensorflow as tf

    from demo_model.exports import tf1_frozen_graph
    from odapi.contract import InputType

    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(tf1_frozen_graph(InputType.ENCODED_IMAGE_STRING_TENSOR))

    def jpeg(size: tuple[int, int]) -> bytes:
        buffer = io.BytesIO()
        Image.new("RGB", size, (200, 10, 10)).save(buffer, format="JPEG")
        return buffer.getvalue()

    with tf.Graph().as_default() as graph:
        tf.compat.v1.import_graph_def(graph_def, name="")
        with tf.compat.v1.Session() as session:
            count = graph.get_tensor_by_name("num_detections:0")
            feed = "encoded_image_string_tensor:0"
            assert session.run(count, {feed: [jpeg((64, 48)), jpeg((64, 48))]}).shape == (2,)
            with pytest.raises(tf.errors.InvalidArgumentError, match="Incompatible shapes"):
                session.run(count, {feed: [jpeg((64, 48)), jpeg((80, 60))]})
