"""``python -m converter INPUT OUTPUT_BASE``: write INPUT as the next version under OUTPUT_BASE."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from converter.errors import ConversionError


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m converter``."""
    parser = argparse.ArgumentParser(
        prog="python -m converter",
        description=(
            "Convert a TF1 Object Detection API frozen graph (frozen_inference_graph.pb) or a SavedModel directory "
            "into TensorFlow Serving's layout: OUTPUT_BASE/<next version>/saved_model.pb, tag 'serve', signature "
            "'serving_default'. Prints the version directory."
        ),
    )
    parser.add_argument("input", type=Path, help="frozen_inference_graph.pb, or a SavedModel directory")
    parser.add_argument("output_base", type=Path, help="the model's base path, e.g. models/detector")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the converter; errors are one line on stderr and a non-zero exit status."""
    args = build_parser().parse_args(argv)
    # TensorFlow's C++ start-up chatter would bury the one line this command prints.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # Conversion rewrites a graph; it never runs one, so it has no use for a GPU and its driver probing.
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    from converter.convert import convert

    try:
        result = convert(args.input, args.output_base, if_changed=args.if_changed, warmup=args.warmup)
    except ConversionError as exc:
        print(f"converter: error: {exc}", file=sys.stderr)
        return exc.exit_code
    if not result.written:
        print(
            f"converter: {result.version_dir} is already converted from this input; nothing to do",
            file=sys.stderr,
        )
    print(result.version_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
