"""Pictures for the demo detector: coloured shapes on a neutral background, reproducible from a seed."""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

from demo_model.graph import CLASSES

_BACKGROUND = (200, 200, 200)


@dataclass(frozen=True)
class Shape:
    """One shape: class id, its box in pixels ``(x0, y0, x1, y1)``, and whether it is drawn as an ellipse."""

    class_id: int
    box: tuple[int, int, int, int]
    ellipse: bool = False


def draw_scene(size: tuple[int, int], shapes: list[Shape]) -> Image.Image:
    """An RGB picture of ``size`` (width, height) with the shapes drawn in their class colours."""
    image = Image.new("RGB", size, _BACKGROUND)
    draw = ImageDraw.Draw(image)
    colours = {class_id: rgb for class_id, _, rgb in CLASSES}
    for shape in shapes:
        if shape.ellipse:
            draw.ellipse(shape.box, fill=colours[shape.class_id])
        else:
            draw.rectangle(shape.box, fill=colours[shape.class_id])
    return image


def random_scene(seed: int, size: tuple[int, int] = (640, 480), count: int = 6) -> tuple[Image.Image, list[Shape]]:
    """A picture with up to ``count`` shapes, each inside its own cell of the detector's 4x4 grid."""
    rng = random.Random(seed)
    width, height = size
    cells = rng.sample([(gx, gy) for gx in range(4) for gy in range(4)], k=min(count, 16))
    shapes = []
    for gx, gy in cells:
        cell_w, cell_h = width / 4, height / 4
        # Between a sixth and nine tenths of the cell's side: a spread of scores around every threshold.
        w = int(cell_w * rng.uniform(0.17, 0.9))
        h = int(cell_h * rng.uniform(0.17, 0.9))
        x0 = int(gx * cell_w + rng.uniform(1, cell_w - w - 1))
        y0 = int(gy * cell_h + rng.uniform(1, cell_h - h - 1))
        shapes.append(Shape(rng.choice(CLASSES)[0], (x0, y0, x0 + w, y0 + h), ellipse=rng.random() < 0.3))
    return draw_scene(size, shapes), shapes
