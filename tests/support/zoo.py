"""The models the suite serves: the real detectors (the COCO default, the person one), and the demo detector in
every exporter's form.

Built once per session (about ten seconds with TensorFlow already imported) into a temporary directory, each
converted by the project's own converter into a TF Serving base path, and listed in one TF Serving model config, so
one stand-in and one proxy per mode serve them all (``MODELS``).

    detector                     the default: the COCO SSDLite detector (TF1 frozen graph, image_tensor, 80 classes)
    person                       the real SSDLite person detector (TF1 frozen graph, image_tensor), the fallback
    person-encoded               the person network behind an encoded_image_string_tensor input (TF1 exporter style)
    switch                       the demo detector, for the test that converts a new version into it while served
    crowd                        the demo detector answering up to 64 detections (more than Frigate's 20 rows)
    foreign-tf2-<string type>    TF2 exports copied into place as they are, not converted: no metadata, no label map
                                 in the version (the proxy gets it from MODELS), string inputs to tell apart
    tf1-frozen-<type>            the demo detector as a TF1 frozen graph, for the TF1 exporter's three input types
    tf1-saved-<type>             the demo detector as the TF1 exporter's SavedModel (input key "inputs")
    tf2-<type>                   the demo detector as a TF2 export (input_tensor, batch of one), all four types
"""

from __future__ import annotations

import fcntl
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from odapi.contract import InputType

DEFAULT = "detector"
PERSON = "person"
PERSON_ENCODED = "person-encoded"
SWITCH = "switch"
CROWD = "crowd"


@dataclass(frozen=True)
class ZooModel:
    """One model as a user has it (``export``, with its label map) and converted for serving (``base_path``)."""

    name: str
    export: Path
    base_path: Path
    input_type: InputType
    converted: bool = True  # False: copied into place as exported (a model converted elsewhere)

    @property
    def version_dir(self) -> Path:
        """Version 1, the one the suite converts."""
        return self.base_path / "1"


@dataclass(frozen=True)
class Zoo:
    """Every model of the session, by name, the default first."""

    root: Path
    models: dict[str, ZooModel]
    config_file: Path  # a TF Serving ModelServerConfig listing them all

    @property
    def names(self) -> list[str]:
        """Model names, the default first."""
        return list(self.models)

    def models_setting(self) -> str:
        """``MODELS`` for a proxy serving them all (each version carries its own label map)."""
        return ",".join(
            f"{model.name}:{'' if model.converted else model.export / 'label_map.pbtxt'}:{model.base_path}"
            for model in self.models.values()
        )

    def demo_exports(self) -> list[ZooModel]:
        """The demo detector's exports, one per exporter and input type."""
        return [model for model in self.models.values() if model.name.startswith(("tf1-", "tf2-"))]

    def foreign(self) -> list[ZooModel]:
        """The exports served as they are, not converted by this project."""
        return [model for model in self.models.values() if not model.converted]


def shared_zoo(root: Path, coco_graph: Path, person_graph: Path) -> Zoo:
    """The zoo under ``root``: built there by the first process that asks (an exclusive lock on ``root``'s lock file),
    read back by those that ask after it."""
    root.mkdir(parents=True, exist_ok=True)
    index = root / "zoo.json"
    with (root / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if index.is_file():
            return _read_zoo(root, json.loads(index.read_text(encoding="utf-8")))
        zoo = build_zoo(root, coco_graph, person_graph)
        entries = [
            {"name": m.name, "export": str(m.export), "base_path": str(m.base_path), "input_type": str(m.input_type),
             "converted": m.converted}
            for m in zoo.models.values()
        ]  # fmt: skip
        index.write_text(json.dumps({"models": entries, "config": str(zoo.config_file)}), encoding="utf-8")
        return zoo


def _read_zoo(root: Path, index: dict[str, Any]) -> Zoo:
    models = {
        entry["name"]: ZooModel(
            entry["name"], Path(entry["export"]), Path(entry["base_path"]), InputType(entry["input_type"]),
            converted=entry["converted"],
        )
        for entry in index["models"]
    }  # fmt: skip
    return Zoo(root, models, Path(index["config"]))


def build_zoo(root: Path, coco_graph: Path, person_graph: Path) -> Zoo:
    """Export, convert and list every model of the suite under ``root``."""
    from converter import convert
    from converter.default_model import COCO_LABEL_MAP
    from converter.person import LABEL_MAP_TEXT
    from demo_model.exports import frozen_detector, tf1_frozen_graph, write_all
    from demo_model.graph import detect, label_map_text

    exports = root / "exports"
    coco = exports / DEFAULT
    coco.mkdir(parents=True)
    (coco / "frozen_inference_graph.pb").write_bytes(coco_graph.read_bytes())
    (coco / "label_map.pbtxt").write_bytes(COCO_LABEL_MAP.read_bytes())
    person = exports / PERSON
    person.mkdir()
    (person / "frozen_inference_graph.pb").write_bytes(person_graph.read_bytes())
    (person / "label_map.pbtxt").write_text(LABEL_MAP_TEXT, encoding="utf-8")
    encoded = exports / PERSON_ENCODED
    encoded.mkdir()
    detector = frozen_detector(person_graph.read_bytes())
    (encoded / "frozen_inference_graph.pb").write_bytes(
        tf1_frozen_graph(InputType.ENCODED_IMAGE_STRING_TENSOR, detector)
    )
    (encoded / "label_map.pbtxt").write_text(LABEL_MAP_TEXT, encoding="utf-8")
    switch = exports / SWITCH
    switch.mkdir()
    (switch / "frozen_inference_graph.pb").write_bytes(tf1_frozen_graph(InputType.IMAGE_TENSOR))
    (switch / "label_map.pbtxt").write_text(label_map_text(), encoding="utf-8")
    crowd = exports / CROWD
    crowd.mkdir()
    (crowd / "frozen_inference_graph.pb").write_bytes(
        tf1_frozen_graph(InputType.IMAGE_TENSOR, lambda images: detect(images, max_detections=64))
    )
    (crowd / "label_map.pbtxt").write_text(label_map_text(), encoding="utf-8")
    directories = [coco, person, encoded, switch, crowd, *write_all(exports)]

    models: dict[str, ZooModel] = {}
    for directory in directories:
        base_path = root / "models" / directory.name
        result = convert(directory, base_path, warmup=True)
        models[directory.name] = ZooModel(directory.name, directory, base_path, result.input_type)
    for input_type in (InputType.TF_EXAMPLE, InputType.ENCODED_IMAGE_STRING_TENSOR):
        export = exports / f"tf2-{input_type}"
        name = f"foreign-tf2-{input_type}"
        base_path = root / "models" / name
        shutil.copytree(export / "saved_model", base_path / "1")
        models[name] = ZooModel(name, export, base_path, input_type, converted=False)
    config = root / "models.config"
    entries = "".join(
        f'  config {{ name: "{m.name}" base_path: "{m.base_path}" model_platform: "tensorflow" }}\n'
        for m in models.values()
    )
    config.write_text(f"model_config_list {{\n{entries}}}\n", encoding="utf-8")
    return Zoo(root, models, config)
