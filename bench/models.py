"""``python -m bench.models WORK``: the models the benchmark serves (the real detector and the demo one, each with
both input types), converted for serving.

Run as a subprocess by ``bench.stack.prepare_models`` (it imports TensorFlow; the load generator never does). As
the test suite's zoo builds them (``tests/support/zoo.py``), without importing it:

    WORK/exports/detector           the default COCO SSDLite detector: its TF1 frozen graph (image_tensor), as built
    WORK/exports/detector-encoded   the same network behind an encoded_image_string_tensor input (the TF1 exporter's)
    WORK/exports/demo               the demo detector (``demo_model``, a few TF ops: fast), image_tensor
    WORK/exports/demo-encoded       the demo detector behind an encoded_image_string_tensor input
    WORK/models/<name>/1            each converted by the project's converter (``converter.convert``, with warm-up)
    WORK/models.config              a TF Serving ModelServerConfig listing all four

The demo detector costs the model almost nothing, so the proxy's own overhead and the large pictures' decoding are
measured on it: on the COCO detector the model's time would hide them.

The result is cached under the converter's cache directory (``$CLASSIFYOBJECTS_CACHE``, else
``~/.cache/classifyobjects``) in ``bench-models/<key>``, the key a digest of everything the files depend on: the
COCO package's pinned SHA-256 and its builder's version, TensorFlow's version, and the sources of ``converter/``,
``demo_model/``, ``odapi/`` and this module. A cache hit imports no TensorFlow; a fresh build removes the other keys'
files. Where the cache cannot be written, WORK is used.

It prints one JSON line: the model names and base paths, the seconds the export and the conversion took, and
whether they came from the cache.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

DEFAULT = "detector"
ENCODED = "detector-encoded"
DEMO = "demo"
DEMO_ENCODED = "demo-encoded"


def build(work: Path, final: Path) -> dict[str, object]:
    """Write both exports, convert them, write the config into ``work``, naming paths as they will be once ``work``
    is moved to ``final``; returns what was written."""
    from converter import convert
    from converter.default_model import cache_dir, coco_default
    from demo_model.exports import frozen_detector, tf1_frozen_graph
    from demo_model.graph import label_map_text
    from odapi.contract import InputType

    began = time.perf_counter()
    coco = coco_default(cache_dir())
    graph = coco.graph.read_bytes()
    exports = work / "exports"
    detector = exports / DEFAULT
    detector.mkdir(parents=True, exist_ok=True)
    (detector / "frozen_inference_graph.pb").write_bytes(graph)
    (detector / "label_map.pbtxt").write_text(coco.label_map_text, encoding="utf-8")
    encoded = exports / ENCODED
    encoded.mkdir(parents=True, exist_ok=True)
    encoded_graph = tf1_frozen_graph(InputType.ENCODED_IMAGE_STRING_TENSOR, frozen_detector(graph))
    (encoded / "frozen_inference_graph.pb").write_bytes(encoded_graph)
    (encoded / "label_map.pbtxt").write_text(coco.label_map_text, encoding="utf-8")
    demos = []
    for name, input_type in ((DEMO, InputType.IMAGE_TENSOR), (DEMO_ENCODED, InputType.ENCODED_IMAGE_STRING_TENSOR)):
        demo = exports / name
        demo.mkdir(parents=True, exist_ok=True)
        (demo / "frozen_inference_graph.pb").write_bytes(tf1_frozen_graph(input_type))
        (demo / "label_map.pbtxt").write_text(label_map_text(), encoding="utf-8")
        demos.append(demo)
    exported = time.perf_counter()

    models: dict[str, str] = {}
    input_types: dict[str, str] = {}
    for directory in (detector, encoded, *demos):
        result = convert(directory, work / "models" / directory.name, warmup=True)
        models[directory.name] = str(final / "models" / directory.name)
        input_types[directory.name] = str(result.input_type)
    entries = "".join(
        f'  config {{ name: "{name}" base_path: "{base_path}" model_platform: "tensorflow" }}\n'
        for name, base_path in models.items()
    )
    (work / "models.config").write_text(f"model_config_list {{\n{entries}}}\n", encoding="utf-8")
    return {
        "models": models,
        "input_types": input_types,
        "config": str(final / "models.config"),
        "export_s": exported - began,
        "convert_s": time.perf_counter() - exported,
    }


RESULT = "bench-models.json"


def cache_key() -> str:
    """A digest of everything the exported and converted files depend on."""
    from converter.coco import BUILDER_VERSION, TARBALL_SHA256

    tensorflow = importlib.metadata.version("tensorflow")
    digest = hashlib.sha256(f"{TARBALL_SHA256} b{BUILDER_VERSION} tensorflow=={tensorflow}".encode())
    root = Path(__file__).resolve().parents[1]
    sources = [Path(__file__).resolve()]
    for package in ("converter", "demo_model", "odapi"):
        sources += sorted((root / package).glob("*.py"))
    for source in sources:
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()[:20]


def cached_build(fallback: Path) -> dict[str, object]:
    """The cached result, else a fresh build published into the cache (atomically); ``fallback`` without one."""
    from converter.default_model import cache_dir

    final = cache_dir() / "bench-models" / cache_key()
    if (final / RESULT).is_file():
        return {**json.loads((final / RESULT).read_text(encoding="utf-8")), "cached": True}
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=final.parent))
    except OSError:
        return {**build(fallback, fallback), "cached": False}
    try:
        result = build(staging, final)
        (staging / RESULT).write_text(json.dumps(result), encoding="utf-8")
        try:
            os.rename(staging, final)
        except OSError:
            if not (final / RESULT).is_file():  # not another run publishing the same files first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for stale in final.parent.iterdir():  # the models of older code: nothing uses them any more
        if stale != final and not stale.name.startswith("."):
            shutil.rmtree(stale, ignore_errors=True)
    return {**result, "cached": False}


def main(argv: list[str] | None = None) -> int:
    """Build (or find in the cache) and print the JSON line."""
    parser = argparse.ArgumentParser(prog="python -m bench.models", description=__doc__.split("\n\n")[0])
    parser.add_argument("work", type=Path, help="where to build when the cache cannot be written")
    parser.add_argument("--no-cache", action="store_true", help="build into WORK, ignoring the cache")
    args = parser.parse_args(argv)
    from odapi.tfenv import quiet_tensorflow

    quiet_tensorflow()
    result = {**build(args.work, args.work), "cached": False} if args.no_cache else cached_build(args.work)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
