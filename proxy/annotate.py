"""Detections drawn onto the picture: boxes, labels and scores. Pure: image and rows in, image out."""

from __future__ import annotations

import colorsys
from collections.abc import Iterable

from PIL import Image, ImageDraw, ImageFont

from proxy.detections import Row


def class_colour(class_id: int) -> tuple[int, int, int]:
    """A stable, saturated colour per class id (golden-ratio hue steps keep neighbours apart)."""
    hue = (class_id * 0.618033988749895) % 1.0
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return round(red * 255), round(green * 255), round(blue * 255)


REGION_COLOUR = (255, 255, 255)


def annotate(
    image: Image.Image, rows: Iterable[Row], region: tuple[float, float, float, float] | None = None
) -> Image.Image:
    """A copy of the RGB ``image`` with each detection's box and ``Name 0.93`` drawn on it, and the region of interest
    (normalized ``x1, y1, x2, y2``) outlined in dashes of white and black, when there is one."""
    canvas = image.copy()
    draw = ImageDraw.Draw(canvas)
    width, height = canvas.size
    line = max(2, round(min(width, height) / 250))
    font = ImageFont.load_default(size=max(12, round(min(width, height) / 40)))
    if region is not None:
        _outline_region(draw, (region[0] * width, region[1] * height, region[2] * width, region[3] * height), line)
    for row in rows:
        rect = (row.xmin * width, row.ymin * height, row.xmax * width, row.ymax * height)
        colour = class_colour(row.class_id)
        draw.rectangle(rect, outline=colour, width=line)
        text = f"{row.name} {row.score:.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        label_height = bottom - top + 2 * line
        # The label sits above the box, or inside its top edge when the box touches the top of the picture.
        label_y = rect[1] - label_height if rect[1] >= label_height else rect[1]
        draw.rectangle((rect[0], label_y, rect[0] + right - left + 2 * line, label_y + label_height), fill=colour)
        draw.text((rect[0] + line, label_y + line - top), text, fill=(0, 0, 0), font=font)
    return canvas


def _outline_region(draw: ImageDraw.ImageDraw, rect: tuple[float, float, float, float], line: int) -> None:
    """A dashed outline, white over black, that shows on light and dark pictures alike and is no class's colour."""
    draw.rectangle(rect, outline=(0, 0, 0), width=line)
    left, top, right, bottom = rect
    dash = 6 * line
    for start in range(0, round(right - left), 2 * dash):
        x = left + start
        draw.line((x, top, min(x + dash, right), top), fill=REGION_COLOUR, width=line)
        draw.line((x, bottom, min(x + dash, right), bottom), fill=REGION_COLOUR, width=line)
    for start in range(0, round(bottom - top), 2 * dash):
        y = top + start
        draw.line((left, y, left, min(y + dash, bottom)), fill=REGION_COLOUR, width=line)
        draw.line((right, y, right, min(y + dash, bottom)), fill=REGION_COLOUR, width=line)
