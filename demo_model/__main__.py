"""``python -m demo_model OUT_DIR``: write the demo detector, its label map and a sample picture."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from converter.default_model import DEMO_MARKER
from demo_model.scenes import Shape, draw_scene

GRAPH = "frozen_inference_graph.pb"
LABEL_MAP = "label_map.pbtxt"
SAMPLE = "demo.jpg"


# Two red shapes, one green, one blue: the README's example answers {"Red": 2, ...} for this picture.
SAMPLE_SHAPES = [
    Shape(1, (40, 30, 140, 100)),
    Shape(1, (360, 150, 460, 230), ellipse=True),
    Shape(2, (200, 280, 300, 350)),
    Shape(3, (500, 380, 600, 460)),
]


def main(argv: list[str] | None = None) -> int:
    """Write the demo model files into OUT_DIR unless it already holds a model (or --force)."""
    parser = argparse.ArgumentParser(prog="python -m demo_model", description=__doc__)
    parser.add_argument("out_dir", type=Path, help="directory to write frozen_inference_graph.pb and label_map.pbtxt")
    parser.add_argument("--force", action="store_true", help="overwrite a model already in OUT_DIR")
    args = parser.parse_args(argv)
    out: Path = args.out_dir
    if (out / GRAPH).exists() and not args.force:
        print(f"{out / GRAPH} exists; leaving it alone (use --force to overwrite)")
        return 0
    try:
        out.mkdir(parents=True, exist_ok=True)
        from demo_model.graph import build_frozen_graph, label_map_text

        (out / GRAPH).write_bytes(build_frozen_graph())
        (out / LABEL_MAP).write_text(label_map_text(), encoding="utf-8")
        draw_scene((640, 480), SAMPLE_SHAPES).save(out / SAMPLE, quality=95)
        # Tells `python -m converter default` (make run) this demo was asked for: it is served, not replaced.
        (out / DEMO_MARKER).write_text("written by python -m demo_model; make run serves it as the model here\n")
    except OSError as exc:
        print(f"demo_model: error: cannot write to {out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"wrote the demo detector to {out}: {GRAPH}, {LABEL_MAP}, {SAMPLE} (make run serves it from there)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
